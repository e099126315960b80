//! The index of each row's largest value, `[rows, n]` → `[rows]`: greedy decoding's next token
//! and the token accuracy of the metrics, both over a whole vocabulary.
//!
//! On wgpu it runs as the hand-written kernel `shaders/argmax_rows.wgsl` (one workgroup per row),
//! not as Burn's `argmax`. CubeCL 0.11's reduction (cubek-reduce 0.3.1), which Burn's `argmax`,
//! `max_dim` and `sum_dim` use there, gives wrong answers on Mesa's software Vulkan for rows of
//! today's vocabularies (in the routine its autotuner picks there, `unit_vectorized_parallel_reduce`;
//! the plane and cube routines fail to launch on that adapter): `argmax` of `[64, 128256]` random values is wrong in 32 of the 64 rows,
//! of `[64, 151936]` in 48, of `[1, 262144]` (Gemma 3's vocabulary) in its one row, while
//! `[64, 49152]` (SmolLM2's) is right. Upstream reports similar driver-dependent failures of its
//! plane reduction on NVIDIA under Vulkan (tracel-ai/cubek#422). A kernel of ours is checked on
//! every row length the models use (`tests` below). Ties go to the lowest index and NaN counts as
//! the largest value, as in `torch.argmax`. Elsewhere (flex, ndarray) Burn's `argmax` is right and
//! is used as it is.

use burn::backend::TensorMetadata;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, SourceKernel, into_contiguous};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::cubecl::{CubeCount, CubeDim, server::KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use super::wgsl::{WgslKernel, u32_bytes};
use crate::device;

/// Threads per row.
const WORKGROUP: u32 = 256;
/// Rows per launch at most (one workgroup per row, along one grid axis).
const MAX_ROWS: usize = 65_535;

/// The operation (no gradient: an index).
#[backend_extension(Cube, Fusion)]
pub trait RowArgmaxOps: Backend {
    /// The index of the largest value of each row of `values` `[rows, n]` (`n ≥ 1`), as i32.
    #[fusion(dtype = DType::I32, shape = rows_of(values))]
    fn argmax_rows(values: FloatTensor<Self>) -> IntTensor<Self>;
}

/// `[rows]` from `[rows, n]`.
fn rows_of(shape: &Shape) -> Shape {
    Shape::new([shape[0]])
}

/// The index of the largest value of each row of `values` `[rows, n]`, `[rows]` (without
/// autodiff; the lowest index on ties).
pub fn argmax_rows(values: Tensor<2>) -> Tensor<1, Int> {
    let [rows, n] = values.dims();
    let values = values.without_autodiff();
    if device::is_cube(&values.device()) && n > 0 {
        Tensor::from_dispatch(<Dispatch as RowArgmaxOps>::argmax_rows(
            values.into_dispatch(),
        ))
    } else {
        values.argmax(1).reshape([rows])
    }
}

impl RowArgmaxOps for CubeBackend {
    fn argmax_rows(values: FloatTensor<Self>) -> IntTensor<Self> {
        let values = into_contiguous(CubeBackend::float_cast(values, FloatDType::F32));
        let [rows, n] = [values.shape()[0], values.shape()[1]];
        let ids = CubeTensor::new_contiguous(
            values.client.clone(),
            values.device.clone(),
            Shape::new([rows]),
            values.client.empty(rows.max(1) * 4),
            DType::I32,
        );
        let kernel = || {
            WgslKernel::new(
                "argmax_rows",
                "",
                include_str!("../../shaders/argmax_rows.wgsl"),
            )
            .with("workgroup_size", WORKGROUP)
        };
        for (first, end) in super::chunk_ranges(rows, MAX_ROWS) {
            let info = values
                .client
                .create_from_slice(&u32_bytes(&[first as u32, n as u32]));
            values.client.launch(
                Box::new(SourceKernel::new(kernel(), CubeDim::new_1d(WORKGROUP))),
                CubeCount::Static((end - first) as u32, 1, 1),
                KernelArguments::new().with_buffers(vec![
                    values.handle.clone().binding(),
                    ids.handle.clone().binding(),
                    info.binding(),
                ]),
            );
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[rows, n]` pseudo-random values in `[0, 1)`, with the rows' largest values planted near
    /// their ends (where a reduction that stops early misses them) and a tie in row 0.
    fn values(rows: usize, n: usize) -> Vec<f32> {
        let mut values: Vec<f32> = (0..rows * n)
            .map(|i| (i as u64 * 2_654_435_761 % 1_000_003) as f32 / 1_000_003.0)
            .collect();
        for r in 0..rows {
            values[r * n + n - 1 - r % n] = 2.0 + r as f32;
        }
        values[n / 3] = 2.0;
        values
    }

    /// The index `torch.argmax` gives, on the host.
    fn host_argmax(row: &[f32]) -> i64 {
        i64::from(crate::generate::sampling::argmax(row))
    }

    fn ids(tensor: Tensor<1, Int>) -> Vec<i64> {
        tensor.into_data().convert::<i64>().try_into_vec().unwrap()
    }

    fn check(device: &Device, rows: usize, n: usize) {
        let values = values(rows, n);
        let want: Vec<i64> = values.chunks(n).map(host_argmax).collect();
        let tensor = Tensor::<2>::from_data(TensorData::new(values, [rows, n]), device);
        assert_eq!(ids(argmax_rows(tensor)), want, "[{rows}, {n}]");
    }

    /// Every vocabulary size of the supported models (SmolLM2, Llama 3, Qwen2/3, Gemma 3), with
    /// one row (decoding), a few (batched decoding) and many (token accuracy).
    fn every_vocabulary(device: &Device) {
        for n in [1, 7, 256, 49_152, 128_256, 151_936, 262_144] {
            for rows in [1, 3, 64] {
                check(device, rows, n);
            }
        }
    }

    /// Ties go to the lowest index, NaN wins, and a row of equal values (all −∞ too) gives 0.
    fn ties_nan_and_flat_rows(device: &Device) {
        let inf = f32::INFINITY;
        let rows = [
            vec![1.0, 3.0, 3.0, 0.0, 3.0],
            vec![1.0, 2.0, f32::NAN, 5.0, f32::NAN],
            vec![-inf; 5],
            vec![0.5; 5],
        ];
        let want: Vec<i64> = rows.iter().map(|r| host_argmax(r)).collect();
        assert_eq!(want, [1, 2, 0, 0]);
        let tensor = Tensor::<2>::from_data(TensorData::new(rows.concat(), [4, 5]), device);
        assert_eq!(ids(argmax_rows(tensor)), want);
    }

    fn check_all(device: &Device) {
        every_vocabulary(device);
        ties_nan_and_flat_rows(device);
    }

    crate::device::on_every_backend!(check_all => rows_argmax_matches_the_host_on_flex, rows_argmax_matches_the_host_on_ndarray, rows_argmax_matches_the_host_on_wgpu);
}
