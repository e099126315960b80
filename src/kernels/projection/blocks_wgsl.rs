//! Block-quantized weights on CubeCL's wgpu runtime: `shaders/dequantize_blocks.wgsl` widens the
//! weight to f32 in one pass (a thread per word of quantized values), and CubeCL's own autotuned
//! matmul takes it from there. The f32 weight lives only for that one product (forward, and again
//! in the backward), so the model stays quantized in memory between them.

use burn::backend::TensorMetadata;
use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::IntTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, SourceKernel, into_contiguous};
use burn::cubecl::{CubeCount, CubeDim, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType, IntDType};

use super::blocks::{BLOCK, BlockFormat};
use crate::kernels::wgsl::{WgslKernel, u32_bytes};

/// Threads per workgroup.
const WORKGROUP: u32 = 256;
/// Workgroups along one grid axis at most (WebGPU's limit).
const MAX_GROUPS: u32 = 65_535;

/// `W` `[d_out, d_in]` in f32 from its `words` and `scales`.
pub(super) fn dequantize(
    words: IntTensor<CubeBackend>,
    scales: CubeTensor,
    format: BlockFormat,
) -> CubeTensor {
    let words = into_contiguous(CubeBackend::int_cast(words, IntDType::U32));
    let scales = into_contiguous(CubeBackend::float_cast(scales, FloatDType::F32));
    let [d_out, blocks] = [scales.shape()[0], scales.shape()[1]];
    let values = d_out * blocks * BLOCK;
    let out = CubeTensor::new_contiguous(
        scales.client.clone(),
        scales.device.clone(),
        Shape::new([d_out, blocks * BLOCK]),
        scales.client.empty(values * 4),
        DType::F32,
    );
    let count = (d_out * blocks * format.words_per_block()) as u32;
    if count == 0 {
        return out;
    }
    let info = scales
        .client
        .create_from_slice(&u32_bytes(&[count, format.code() as u32]));
    let kernel = WgslKernel::new(
        "dequantize_blocks",
        "",
        include_str!("../../../shaders/dequantize_blocks.wgsl"),
    )
    .with("workgroup_size", WORKGROUP);
    let groups = count.div_ceil(WORKGROUP);
    let (x, y) = (groups.min(MAX_GROUPS), groups.div_ceil(MAX_GROUPS));
    scales.client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WORKGROUP))),
        CubeCount::Static(x, y, 1),
        KernelArguments::new().with_buffers(vec![
            words.handle.clone().binding(),
            scales.handle.clone().binding(),
            out.handle.clone().binding(),
            info.binding(),
        ]),
    );
    out
}
