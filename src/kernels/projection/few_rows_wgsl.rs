//! Decoding's products on wgpu: `x · W` for 1–4 rows of `x` by a frozen weight in f16 (how `auto`
//! stores a bf16 or f16 checkpoint on GPUs, which have no bf16), read in place as stored.
//!
//! The general path casts the weight to f32 and multiplies with CubeCL's matmul: for one row,
//! every product then reads the f16 weight, writes an f32 copy of it and reads that copy again,
//! five times the bytes of the weight itself, and holds the copy (113 MB for SmolLM2's tied head)
//! while it runs. A decoding step is bound by those bytes. Here each weight word (two values) is
//! read once and widened in registers (`unpack2x16float`):
//! - a row-major weight `[k, n]` (`shaders/few_rows_matrix.wgsl`): each thread owns two output
//!   columns and a range of the weight's rows; the ranges' partial sums are then added
//!   (`shaders/few_rows_sum.wgsl`);
//! - the transpose of a row-major `[n, k]` (the tied LM head `Eᵀ`, `shaders/few_rows_dot.wgsl`):
//!   one workgroup per output column reduces a dot product over the contiguous row.
//!
//! Only inference takes this path (no autodiff; training's products have many rows). Shapes it
//! cannot read as words (an odd dimension, a weight not at the start of a word) take the general
//! path.

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{CubeBackend, CubeTensor, SourceKernel, into_contiguous};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::cubecl::{CubeCount, CubeDim, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::device;
use crate::kernels::wgsl::{WgslKernel, u32_bytes};

/// The most rows of `x` that take this path (as on the CPU, `few_rows.rs`).
pub const MAX_ROWS: usize = 4;
/// Threads per workgroup of every kernel here.
const WORKGROUP: u32 = 64;
/// Weight rows per workgroup of the row-major kernel (its row ranges).
const ROWS_PER_RANGE: usize = 128;
/// Workgroups per launch along one grid axis.
const MAX_GROUPS: usize = 65_535;

/// The operation (inference only: no gradient).
#[backend_extension(Cube, Fusion)]
pub trait FewRowsOps: Backend {
    /// `x` `[rows ≤ 4, k]` (f32) · `weight` `[k, n]` (f16) → `[rows, n]` f32.
    #[fusion(dtype = x, shape = Shape::new([x[0], weight[1]]))]
    fn few_rows_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `x · weight` through this path when it applies (wgpu, no autodiff, 1–4 rows of f32, an f16
/// weight); `None` otherwise.
pub fn product(x: &Tensor<2>, weight: &Tensor<2>) -> Option<Tensor<2>> {
    let rows = x.dims()[0];
    let applies = device::is_cube(&x.device())
        && !x.is_autodiff()
        && !weight.is_autodiff()
        && (1..=MAX_ROWS).contains(&rows)
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F16;
    applies.then(|| {
        Tensor::from_dispatch(<Dispatch as FewRowsOps>::few_rows_matmul(
            x.clone().into_dispatch(),
            weight.clone().into_dispatch(),
        ))
    })
}

impl FewRowsOps for CubeBackend {
    fn few_rows_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = into_contiguous(x);
        let (m, k) = (x.shape()[0], x.shape()[1]);
        let n = weight.shape()[1];
        let strides = weight.meta.strides();
        let (row_step, column_step) = (strides[0], strides[1]);
        // The weight's first element must start a word.
        let word_aligned = weight.handle.offset_start.unwrap_or(0).is_multiple_of(4);
        let row_major = column_step == 1 && row_step == n && n.is_multiple_of(2);
        let transposed = row_step == 1 && column_step == k && k.is_multiple_of(2);
        let readable = weight.dtype == DType::F16 && word_aligned && m <= MAX_ROWS;
        if !(readable && (row_major || transposed)) {
            return CubeBackend::float_matmul(x, CubeBackend::float_cast(weight, FloatDType::F32));
        }
        let out = empty_f32(&x, m * n, Shape::new([m, n]));
        if row_major {
            times_matrix(&x, &weight, &out, [m, k, n]);
        } else {
            dot_rows(&x, &weight, &out, [m, k, n]);
        }
        out
    }
}

/// An f32 tensor of `len` values, unwritten, on `like`'s device.
fn empty_f32(like: &CubeTensor, len: usize, shape: Shape) -> CubeTensor {
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        like.client.empty(len.max(1) * 4),
        DType::F32,
    )
}

/// One of this file's kernels.
fn kernel(name: &'static str, source: &'static str) -> WgslKernel {
    WgslKernel::new(name, "", source).with("workgroup_size", WORKGROUP)
}

/// `out` `[m, n]` = `x` · a row-major `weight` `[k, n]`, by row ranges, then their sum.
fn times_matrix(x: &CubeTensor, weight: &CubeTensor, out: &CubeTensor, [m, k, n]: [usize; 3]) {
    let client = &x.client;
    let ranges = k.div_ceil(ROWS_PER_RANGE).clamp(1, MAX_GROUPS);
    let per_range = k.div_ceil(ranges);
    let partial = if ranges == 1 {
        out.clone()
    } else {
        empty_f32(x, ranges * m * n, Shape::new([ranges, m, n]))
    };
    let info = client.create_from_slice(&u32_bytes(&[m, k, n, per_range].map(|v| v as u32)));
    let source = include_str!("../../../shaders/few_rows_matrix.wgsl");
    client.launch(
        Box::new(SourceKernel::new(
            kernel("few_rows_matrix", source),
            CubeDim::new_1d(WORKGROUP),
        )),
        CubeCount::Static(
            (n / 2).div_ceil(WORKGROUP as usize) as u32,
            ranges as u32,
            1,
        ),
        KernelArguments::new().with_buffers(vec![
            x.handle.clone().binding(),
            weight.handle.clone().binding(),
            partial.handle.clone().binding(),
            info.binding(),
        ]),
    );
    if ranges > 1 {
        let len = m * n;
        let info = client.create_from_slice(&u32_bytes(&[len as u32, ranges as u32]));
        let source = include_str!("../../../shaders/few_rows_sum.wgsl");
        client.launch(
            Box::new(SourceKernel::new(
                kernel("few_rows_sum", source),
                CubeDim::new_1d(WORKGROUP),
            )),
            CubeCount::Static(len.div_ceil(WORKGROUP as usize) as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                partial.handle.clone().binding(),
                out.handle.clone().binding(),
                info.binding(),
            ]),
        );
    }
}

/// `out` `[m, n]` = `x` · `Eᵀ` for the transposed view `weight` of a row-major `E` `[n, k]`.
fn dot_rows(x: &CubeTensor, weight: &CubeTensor, out: &CubeTensor, [m, k, n]: [usize; 3]) {
    let client = &x.client;
    let source = include_str!("../../../shaders/few_rows_dot.wgsl");
    for (first, end) in crate::kernels::chunk_ranges(n, MAX_GROUPS) {
        let info = client.create_from_slice(&u32_bytes(&[m, k, n, first].map(|v| v as u32)));
        client.launch(
            Box::new(SourceKernel::new(
                kernel("few_rows_dot", source),
                CubeDim::new_1d(WORKGROUP),
            )),
            CubeCount::Static((end - first) as u32, 1, 1),
            KernelArguments::new().with_buffers(vec![
                x.handle.clone().binding(),
                weight.handle.clone().binding(),
                out.handle.clone().binding(),
                info.binding(),
            ]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Rng;
    use crate::kernels::max_rel_err;

    fn uniform(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
            .collect()
    }

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_into_vec().unwrap()
    }

    /// `x` `[m, k]` by a weight stored in f16 (row-major `[k, n]`, or the transpose of a
    /// row-major `[n, k]`), against the product of the same rounded values in f64 on the host.
    fn check(device: &Device, [m, k, n]: [usize; 3], transposed: bool) {
        let mut rng = Rng::new((m * 7 + k * 13 + n) as u64);
        let x_values = uniform(&mut rng, m * k);
        let x = Tensor::<2>::from_data(TensorData::new(x_values.clone(), [m, k]), device);
        let stored_shape = if transposed { [n, k] } else { [k, n] };
        let stored = Tensor::<2>::from_data(
            TensorData::new(uniform(&mut rng, k * n), stored_shape),
            device,
        )
        .cast(FloatDType::F16);
        let rounded = host(stored.clone().cast(FloatDType::F32));
        let weight = if transposed {
            stored.transpose()
        } else {
            stored
        };
        let mut want = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                let w = |kk: usize| {
                    f64::from(rounded[if transposed { j * k + kk } else { kk * n + j }])
                };
                let sum: f64 = (0..k)
                    .map(|kk| f64::from(x_values[r * k + kk]) * w(kk))
                    .sum();
                want[r * n + j] = sum as f32;
            }
        }
        let want = Tensor::<2>::from_data(TensorData::new(want, [m, n]), device);
        let got = product(&x, &weight).expect("the path applies");
        let err = max_rel_err(got, want);
        let what = format!("[{m}, {k}] · [{k}, {n}], transposed {transposed}");
        assert!(err < 1e-5, "{what}: relative error {err}");
    }

    /// Both layouts, 1, 3 and 4 rows, dimensions that fill a partial workgroup or row range, odd
    /// ones (the general path) and more columns than one launch holds.
    #[test]
    fn few_row_products_match_the_host_on_wgpu() {
        let Some(device) = crate::device::wgpu_or_skip() else {
            return;
        };
        for m in [1, 3, 4] {
            for [k, n] in [[576, 576], [1000, 1538], [64, 7], [130, 2]] {
                check(&device, [m, k, n], false);
            }
            for [k, n] in [[576, 3000], [66, 70_000], [9, 10]] {
                check(&device, [m, k, n], true);
            }
        }
    }

    /// The projections' public ops take this path when it applies, LoRA's term added: the same
    /// values as the general path's f32 products.
    #[test]
    fn the_projection_ops_with_and_without_lora_agree_with_the_general_path_on_wgpu() {
        let Some(device) = crate::device::wgpu_or_skip() else {
            return;
        };
        let mut rng = Rng::new(5);
        let mut tensor = |shape: [usize; 2]| {
            let values = uniform(&mut rng, shape[0] * shape[1]);
            Tensor::<2>::from_data(TensorData::new(values, shape), &device)
        };
        let (x, weight, a, b) = (
            tensor([2, 96]),
            tensor([96, 130]),
            tensor([96, 8]),
            tensor([8, 130]),
        );
        let half = weight.cast(FloatDType::F16);
        let widened = half.clone().cast(FloatDType::F32);
        let f32 = super::super::Products::F32;
        let frozen = super::super::frozen_matmul(x.clone(), half.clone(), f32);
        assert!(max_rel_err(frozen, x.clone().matmul(widened.clone())) < 1e-5);
        let lora = super::super::lora_matmul(x.clone(), half, a.clone(), b.clone(), f32);
        let want = x.clone().matmul(widened) + x.matmul(a).matmul(b);
        assert!(max_rel_err(lora, want) < 1e-5);
    }

    /// Many rows, f32 weights, autodiff tensors and the CPU take the general path.
    #[test]
    fn the_path_applies_to_inference_on_wgpu_alone() {
        let flex = Device::flex();
        let x = Tensor::<2>::ones([1, 8], &flex);
        let half = Tensor::<2>::ones([8, 4], &flex).cast(FloatDType::F16);
        assert!(product(&x, &half).is_none());
        let Some(device) = crate::device::wgpu_or_skip() else {
            return;
        };
        let x = Tensor::<2>::ones([1, 8], &device);
        let half = Tensor::<2>::ones([8, 4], &device).cast(FloatDType::F16);
        assert!(product(&x, &half).is_some());
        assert!(product(&Tensor::ones([5, 8], &device), &half).is_none());
        assert!(product(&x, &Tensor::ones([8, 4], &device)).is_none());
        let autodiff = device.clone().autodiff();
        let tracked = Tensor::<2>::ones([1, 8], &autodiff);
        let tracked_half = Tensor::<2>::ones([8, 4], &autodiff).cast(FloatDType::F16);
        assert!(product(&tracked, &tracked_half).is_none());
    }
}
