//! The fused log-prob operation on CubeCL's wgpu runtime: each chunk's logits come from CubeCL's
//! own (autotuned) matmul, and the row-wise work — the log-sum-exp and target pick of the forward,
//! `g·(onehot − softmax)` of the backward, written in place — runs in the hand-written WGSL kernels
//! `shaders/logprobs_{forward,backward}.wgsl` (sharing the bindings and the row reduction of
//! `shaders/logprobs_rows.wgsl`), one pass over each row instead of the five separate kernels (max,
//! subtract, exp, sum, log) of the decomposed path.

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::tensor::IntTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, SourceKernel, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, IntDType};

use super::rows::{PlainRows, RowOps};
use crate::kernels::wgsl::{WgslKernel, u32_bytes};

/// Threads per row.
const WORKGROUP: u32 = 256;
/// Rows per launch at most (one workgroup per row, along one grid axis).
const MAX_ROWS: usize = 65_535;

/// The bindings and the row reduction both kernels use (prepended to each).
const ROWS: &str = include_str!("../../../shaders/logprobs_rows.wgsl");

/// The two row kernels: (name, source after `ROWS`).
const FORWARD: (&str, &str) = (
    "logprobs_forward",
    include_str!("../../../shaders/logprobs_forward.wgsl"),
);
const BACKWARD: (&str, &str) = (
    "logprobs_backward",
    include_str!("../../../shaders/logprobs_backward.wgsl"),
);

/// `targets` as contiguous i32 (what the kernels read).
fn i32_targets(targets: IntTensor<CubeBackend>) -> IntTensor<CubeBackend> {
    fn cast<B: Backend>(t: IntTensor<B>) -> IntTensor<B> {
        B::int_cast(t, IntDType::I32)
    }
    into_contiguous(cast::<CubeBackend>(targets))
}

/// Runs `kernel` over the `[rows, vocab]` contiguous `logits`, one workgroup per row.
fn launch(
    (name, source): (&'static str, &'static str),
    logits: &CubeTensor,
    targets: &CubeTensor,
    values: &CubeTensor,
) {
    let [rows, vocab] = [logits.shape()[0], logits.shape()[1]];
    let info = logits
        .client
        .create_from_slice(&u32_bytes(&[rows as u32, vocab as u32]));
    let kernel = WgslKernel::new(name, ROWS, source)
        .with("workgroup_size", WORKGROUP)
        .with("elem", "f32");
    let cube_dim = CubeDim::new_1d(WORKGROUP);
    logits.client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        CubeCount::Static(rows as u32, 1, 1),
        KernelArguments::new().with_buffers(vec![
            logits.handle.clone().binding(),
            targets.handle.clone().binding(),
            values.handle.clone().binding(),
            info.binding(),
        ]),
    );
}

/// The row work in the WGSL kernels (f32 only).
struct WgslRows;

impl RowOps<CubeBackend> for WgslRows {
    fn prepare_targets(&self, targets: IntTensor<CubeBackend>) -> IntTensor<CubeBackend> {
        i32_targets(targets)
    }

    fn max_rows(&self) -> usize {
        MAX_ROWS
    }

    fn pick(&self, logits: CubeTensor, targets: IntTensor<CubeBackend>) -> CubeTensor {
        let logits = into_contiguous(logits);
        let rows = logits.shape()[0];
        let out = CubeTensor::new_contiguous(
            logits.client.clone(),
            logits.device.clone(),
            Shape::new([rows]),
            logits.client.empty(rows * 4),
            DType::F32,
        );
        launch(FORWARD, &logits, &into_contiguous(targets), &out);
        out
    }

    /// Written in place over the chunk's logits buffer (which is not used again).
    fn logit_grad(
        &self,
        logits: CubeTensor,
        targets: IntTensor<CubeBackend>,
        grad: CubeTensor,
    ) -> CubeTensor {
        let logits = into_contiguous(logits);
        launch(
            BACKWARD,
            &logits,
            &into_contiguous(targets),
            &into_contiguous(grad),
        );
        logits
    }
}

/// The kernels for f32 tensors; the plain operations for anything else.
pub(crate) fn row_ops(hidden: &CubeTensor) -> &'static dyn RowOps<CubeBackend> {
    if hidden.dtype == DType::F32 {
        &WgslRows
    } else {
        &PlainRows
    }
}
