//! The fused log-prob operation on CubeCL's wgpu runtime: each chunk's logits come from CubeCL's
//! own (autotuned) matmul, and the row-wise work — the log-sum-exp and target pick of the forward,
//! `g·(onehot − softmax)` of the backward, written in place — runs in the hand-written WGSL kernels
//! `shaders/logprobs_{forward,backward}.wgsl` (sharing the row reduction of
//! `shaders/logprobs_rows.wgsl`), one pass over each row instead of the five separate kernels (max,
//! subtract, exp, sum, log) of the decomposed path.

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::cubecl::{CubeCount, CubeDim, prelude::KernelId, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, IntDType, Slice};

use super::linear_logprobs::{
    chunk_ranges, forward_plain, grad_hidden_plain, grad_weight_plain, row_slice,
};

/// Threads per row.
const WORKGROUP: u32 = 256;
/// Rows per launch at most (one workgroup per row, along one grid axis).
const MAX_ROWS: usize = 65_535;

/// The row reduction both kernels use.
const ROWS: &str = include_str!("../../shaders/logprobs_rows.wgsl");

/// One of the two row kernels.
struct RowKernel {
    source: &'static str,
    name: &'static str,
}

const FORWARD: RowKernel = RowKernel {
    source: include_str!("../../shaders/logprobs_forward.wgsl"),
    name: "logprobs_forward",
};
const BACKWARD: RowKernel = RowKernel {
    source: include_str!("../../shaders/logprobs_backward.wgsl"),
    name: "logprobs_backward",
};

impl KernelSource for RowKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(format!("{ROWS}\n{}", self.source))
            .register("workgroup_size", WORKGROUP.to_string())
            .register("elem", "f32")
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.name)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn matmul<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(a, b)
}

fn cat<B: Backend>(parts: Vec<FloatTensor<B>>) -> FloatTensor<B> {
    B::float_cat(parts, 0)
}

fn transpose<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    B::float_transpose(t)
}

fn add<B: Backend>(a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
    B::float_add(a, b)
}

/// `targets` as contiguous i32 (what the kernels read).
fn i32_targets(targets: IntTensor<CubeBackend>) -> IntTensor<CubeBackend> {
    fn cast<B: Backend>(t: IntTensor<B>) -> IntTensor<B> {
        B::int_cast(t, IntDType::I32)
    }
    into_contiguous(cast::<CubeBackend>(targets))
}

fn target_slice(
    targets: &IntTensor<CubeBackend>,
    start: usize,
    end: usize,
) -> IntTensor<CubeBackend> {
    fn slice<B: Backend>(t: IntTensor<B>, start: usize, end: usize) -> IntTensor<B> {
        B::int_slice(t, &[Slice::from(start..end)])
    }
    into_contiguous(slice::<CubeBackend>(targets.clone(), start, end))
}

/// Runs `kernel` over the `[rows, vocab]` contiguous `logits`, one workgroup per row.
fn launch(kernel: RowKernel, logits: &CubeTensor, targets: &CubeTensor, third: &CubeTensor) {
    let [rows, vocab] = [logits.shape()[0], logits.shape()[1]];
    let info: Vec<u8> = [rows as u32, vocab as u32]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let info = logits.client.create_from_slice(&info);
    let cube_dim = CubeDim::new_1d(WORKGROUP);
    logits.client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        CubeCount::Static(rows as u32, 1, 1),
        KernelArguments::new().with_buffers(vec![
            logits.handle.clone().binding(),
            targets.handle.clone().binding(),
            third.handle.clone().binding(),
            info.binding(),
        ]),
    );
}

/// The kernels handle f32; anything else takes the plain path.
fn supported(hidden: &CubeTensor) -> bool {
    hidden.dtype == DType::F32
}

/// `d = g·(onehot − softmax)` `[c, V]` of rows `start..end`, in the recomputed logits' buffer.
fn logit_grads(
    hidden: &CubeTensor,
    weight: &CubeTensor,
    targets: &CubeTensor,
    grad: &CubeTensor,
    (start, end): (usize, usize),
) -> CubeTensor {
    let logits = into_contiguous(matmul::<CubeBackend>(
        row_slice::<CubeBackend>(hidden, start, end),
        weight.clone(),
    ));
    fn slice<B: Backend>(t: FloatTensor<B>, s: usize, e: usize) -> FloatTensor<B> {
        B::float_slice(t, &[Slice::from(s..e)])
    }
    let g = into_contiguous(slice::<CubeBackend>(grad.clone(), start, end));
    launch(BACKWARD, &logits, &target_slice(targets, start, end), &g);
    logits
}

/// Forward on wgpu.
pub fn forward(
    hidden: CubeTensor,
    weight: CubeTensor,
    targets: IntTensor<CubeBackend>,
    chunk: usize,
) -> CubeTensor {
    if !supported(&hidden) {
        return forward_plain::<CubeBackend>(hidden, weight, targets, chunk);
    }
    let targets = i32_targets(targets);
    let parts = chunk_ranges(hidden.shape()[0], chunk.min(MAX_ROWS))
        .map(|(start, end)| {
            let logits = into_contiguous(matmul::<CubeBackend>(
                row_slice::<CubeBackend>(&hidden, start, end),
                weight.clone(),
            ));
            let out = CubeTensor::new_contiguous(
                logits.client.clone(),
                logits.device.clone(),
                Shape::new([end - start]),
                logits.client.empty((end - start) * 4),
                DType::F32,
            );
            launch(FORWARD, &logits, &target_slice(&targets, start, end), &out);
            out
        })
        .collect();
    cat::<CubeBackend>(parts)
}

/// `∂/∂hidden` on wgpu.
pub fn grad_hidden(
    hidden: CubeTensor,
    weight: CubeTensor,
    targets: IntTensor<CubeBackend>,
    grad: CubeTensor,
    chunk: usize,
) -> CubeTensor {
    if !supported(&hidden) {
        return grad_hidden_plain::<CubeBackend>(hidden, weight, targets, grad, chunk);
    }
    let targets = i32_targets(targets);
    let weight_t = transpose::<CubeBackend>(weight.clone());
    let parts = chunk_ranges(hidden.shape()[0], chunk.min(MAX_ROWS))
        .map(|range| {
            matmul::<CubeBackend>(
                logit_grads(&hidden, &weight, &targets, &grad, range),
                weight_t.clone(),
            )
        })
        .collect();
    cat::<CubeBackend>(parts)
}

/// `∂/∂weight` on wgpu.
pub fn grad_weight(
    hidden: CubeTensor,
    weight: CubeTensor,
    targets: IntTensor<CubeBackend>,
    grad: CubeTensor,
    chunk: usize,
) -> CubeTensor {
    if !supported(&hidden) {
        return grad_weight_plain::<CubeBackend>(hidden, weight, targets, grad, chunk);
    }
    let targets = i32_targets(targets);
    chunk_ranges(hidden.shape()[0], chunk.min(MAX_ROWS))
        .map(|(start, end)| {
            let d = logit_grads(&hidden, &weight, &targets, &grad, (start, end));
            matmul::<CubeBackend>(
                transpose::<CubeBackend>(row_slice::<CubeBackend>(&hidden, start, end)),
                d,
            )
        })
        .reduce(add::<CubeBackend>)
        .expect("at least one row")
}
