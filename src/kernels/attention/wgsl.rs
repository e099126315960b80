//! The attention spans on CubeCL's wgpu runtime as fused WGSL kernels (f32, head dim ≤ 256):
//! `shaders/attention_forward.wgsl`, and the backward as `shaders/attention_backward_queries.wgsl`
//! then `shaders/attention_backward_keys.wgsl`, sharing the bindings, layout accessors and
//! reductions of `shaders/attention_common.wgsl`. FlashAttention-2's split (arXiv 2307.08691): the
//! forward never writes a score to memory; the query backward keeps each row's log-sum-exp and
//! `D = rowsum(∂o ⊙ o)` (`[rows, 2]`, the only extra buffer) for the key backward, which owns its
//! key's `∂k`, `∂v` and needs no atomics. Each kernel visits only the keys (or queries) the spans
//! let it see.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::{CubeBackend, CubeTensor, SourceKernel, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::DType;

use super::{Dims, Span};
use crate::kernels::wgsl::{WgslKernel, u32_bytes};

/// Threads per workgroup (one row per workgroup).
const WORKGROUP: u32 = 64;
/// Head dimension components per thread: heads of up to `WORKGROUP · PER_THREAD` = 256.
const PER_THREAD: u32 = 4;
/// Workgroups along one grid axis at most.
const MAX_GRID: usize = 65_535;

const COMMON: &str = include_str!("../../../shaders/attention_common.wgsl");

/// The three kernels: (name, source after `COMMON`).
const FORWARD: (&str, &str) = (
    "attention_forward",
    include_str!("../../../shaders/attention_forward.wgsl"),
);
const BACKWARD_QUERIES: (&str, &str) = (
    "attention_backward_queries",
    include_str!("../../../shaders/attention_backward_queries.wgsl"),
);
const BACKWARD_KEYS: (&str, &str) = (
    "attention_backward_keys",
    include_str!("../../../shaders/attention_backward_keys.wgsl"),
);

/// One of the three kernels with its sizes filled in.
fn kernel((name, source): (&'static str, &'static str)) -> WgslKernel {
    WgslKernel::new(name, COMMON, source)
        .with("workgroup_size", WORKGROUP)
        .with("per_thread", PER_THREAD)
        .with("max_dim", WORKGROUP * PER_THREAD)
}

/// Whether the kernels take these operands (f32 throughout; `tensors[0]`, the queries, with a
/// head dimension of at most 256).
pub fn supports(tensors: &[&CubeTensor], mask: &CubeTensor) -> bool {
    tensors.iter().chain([&mask]).all(|t| t.dtype == DType::F32)
        && tensors[0].shape()[3] <= (WORKGROUP * PER_THREAD) as usize
}

/// Per query position, its span's keys `[start, end)`; then per key, the envelope of the query
/// positions whose spans see it (`[0, 0)` for none). The mask still decides each pair.
fn ranges(spans: &[Span], seq: usize, keys: usize) -> Vec<u32> {
    let mut out = vec![0u32; 2 * (seq + keys)];
    let mut seen: Vec<Option<(usize, usize)>> = vec![None; keys];
    for span in spans {
        for pos in span.queries.0..span.queries.1 {
            out[2 * pos] = span.keys.0 as u32;
            out[2 * pos + 1] = span.keys.1 as u32;
        }
        for slot in &mut seen[span.keys.0..span.keys.1] {
            let (start, end) = slot.unwrap_or(span.queries);
            *slot = Some((start.min(span.queries.0), end.max(span.queries.1)));
        }
    }
    for (j, slot) in seen.into_iter().enumerate() {
        let (start, end) = slot.unwrap_or((0, 0));
        out[2 * (seq + j)] = start as u32;
        out[2 * (seq + j) + 1] = end as u32;
    }
    out
}

/// What every kernel reads: contiguous q, k, v and mask, the span ranges and the layout.
struct Launch {
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    ranges: CubeTensor,
    dims: Dims,
    keys: usize,
}

impl Launch {
    fn new(q: CubeTensor, k: CubeTensor, v: CubeTensor, mask: CubeTensor, spans: &[Span]) -> Self {
        let dims = Dims::of::<CubeBackend>(&q, &mask);
        let keys = k.shape()[2];
        let ranges = ranges(spans, dims.seq, keys);
        let ranges = CubeTensor::new_contiguous(
            q.client.clone(),
            q.device.clone(),
            Shape::new([ranges.len()]),
            q.client.create_from_slice(u32_bytes(&ranges).as_slice()),
            DType::U32,
        );
        Self {
            q: into_contiguous(q),
            k: into_contiguous(k),
            v: into_contiguous(v),
            mask: into_contiguous(mask),
            ranges,
            dims,
            keys,
        }
    }

    /// Query rows `[batch·heads·group·seq]`.
    fn query_rows(&self) -> usize {
        self.dims.batch * self.dims.heads * self.dims.group * self.dims.seq
    }

    /// An uninitialised f32 tensor of `shape` on the same device.
    fn empty(&self, shape: Shape) -> CubeTensor {
        let bytes = shape.num_elements() * 4;
        CubeTensor::new_contiguous(
            self.q.client.clone(),
            self.q.device.clone(),
            shape,
            self.q.client.empty(bytes),
            DType::F32,
        )
    }

    /// Runs `kernel` with one workgroup per row of `rows`, binding the common inputs and then
    /// `extra`.
    fn run(&self, kernel: WgslKernel, rows: usize, extra: &[&CubeTensor]) {
        let d = self.dims;
        let info: Vec<u32> = [
            d.batch,
            d.heads,
            d.group,
            d.seq,
            self.keys,
            d.d,
            d.mask_rows,
            rows,
        ]
        .iter()
        .map(|&x| x as u32)
        .collect();
        let info = self.q.client.create_from_slice(u32_bytes(&info).as_slice());
        let mut buffers: Vec<_> = [&self.q, &self.k, &self.v, &self.mask, &self.ranges]
            .iter()
            .map(|t| t.handle.clone().binding())
            .collect();
        buffers.push(info.binding());
        buffers.extend(extra.iter().map(|t| t.handle.clone().binding()));
        let (x, y) = (rows.clamp(1, MAX_GRID), rows.div_ceil(MAX_GRID).max(1));
        self.q.client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WORKGROUP))),
            CubeCount::Static(x as u32, y as u32, 1),
            KernelArguments::new().with_buffers(buffers),
        );
    }
}

/// `softmax(q·kᵀ + mask)·v` `[batch, heads, group·seq, d]`.
pub fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    spans: &[Span],
) -> CubeTensor {
    let shape = q.shape();
    let launch = Launch::new(q, k, v, mask, spans);
    let out = launch.empty(shape);
    launch.run(kernel(FORWARD), launch.query_rows(), &[&out]);
    out
}

/// `(∂q, ∂k, ∂v)` given the output gradient `grad` `[batch, heads, group·seq, d]`.
pub fn gradients(
    (q, k, v): (CubeTensor, CubeTensor, CubeTensor),
    mask: CubeTensor,
    spans: &[Span],
    grad: CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (q_shape, kv_shape) = (q.shape(), k.shape());
    let launch = Launch::new(q, k, v, mask, spans);
    let grad = into_contiguous(grad);
    let rows = launch.query_rows();
    let dq = launch.empty(q_shape);
    let stats = launch.empty(Shape::new([rows, 2]));
    launch.run(kernel(BACKWARD_QUERIES), rows, &[&grad, &dq, &stats]);
    let (dk, dv) = (launch.empty(kv_shape.clone()), launch.empty(kv_shape));
    let key_rows = launch.dims.batch * launch.dims.heads * launch.keys;
    launch.run(kernel(BACKWARD_KEYS), key_rows, &[&grad, &stats, &dk, &dv]);
    (dq, dk, dv)
}
