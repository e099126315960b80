//! The row work of the fused LM-head log-prob op on flex, for f32: one threaded pass per row
//! (max, log-sum-exp, the pick and the logit gradient) with the vectorised exp of `kernels::cpu`;
//! the chunk products call `gemm` directly, or, for a bf16 head (`matmul_precision: bf16`), the
//! bf16 kernel of `projection`.

use burn::backend::TensorMetadata;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::rows::{PlainRows, RowOps};
use crate::kernels::cpu::{row_max_lse, row_neg_scaled_softmax, values};
use crate::kernels::projection::{Products, ProjectionOps, gemm};

/// The row work on flex as fused, threaded CPU kernels (`kernels::cpu`), for f32.
struct CpuRows;

/// Target ids as host integers.
fn host_targets(targets: IntTensor<Flex>) -> Vec<i64> {
    targets
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("integer targets")
}

impl RowOps<Flex> for CpuRows {
    fn reads_blocks(&self) -> bool {
        true
    }

    fn matmul(&self, a: FloatTensor<Flex>, b: FloatTensor<Flex>) -> FloatTensor<Flex> {
        if gemm::all_f32_matrices(&[&a, &b]) {
            gemm::matmul_add(&a, &b, None)
        } else if b.dtype() == DType::BF16 {
            // A bf16 head exists only with bf16 products (`model::precision`).
            Flex::frozen_matmul(a, b, Products::Bf16.code())
        } else {
            Flex::float_matmul(a, b)
        }
    }

    fn pick(&self, logits: FloatTensor<Flex>, targets: IntTensor<Flex>) -> FloatTensor<Flex> {
        let picked = rows_pick(&logits, &host_targets(targets));
        let rows = picked.len();
        FlexTensor::from_data(TensorData::new(picked, [rows]))
    }

    fn logit_grad(
        &self,
        logits: FloatTensor<Flex>,
        targets: IntTensor<Flex>,
        grad: FloatTensor<Flex>,
    ) -> FloatTensor<Flex> {
        let grad = grad
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 gradient");
        rows_pick_and_logit_grad(logits, &host_targets(targets), &grad).1
    }

    /// One pass per row for both, with the targets read back once.
    fn pick_and_unit_grad(
        &self,
        logits: FloatTensor<Flex>,
        targets: IntTensor<Flex>,
    ) -> (FloatTensor<Flex>, FloatTensor<Flex>) {
        let targets = host_targets(targets);
        let ones = vec![1.0; targets.len()];
        let (picked, d) = rows_pick_and_logit_grad(logits, &targets, &ones);
        let rows = picked.len();
        (FlexTensor::from_data(TensorData::new(picked, [rows])), d)
    }
}

pub(super) fn flex_row_ops(hidden: &FloatTensor<Flex>) -> &'static dyn RowOps<Flex> {
    if hidden.dtype() == DType::F32 {
        &CpuRows
    } else {
        &PlainRows
    }
}

/// `log softmax(row)[target]` for each row of `logits` `[rows, V]` (`targets` `[rows]`).
fn rows_pick(logits: &FlexTensor, targets: &[i64]) -> Vec<f32> {
    let width = logits.shape()[1];
    let v = values(logits);
    v.par_chunks(width)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let (max, lse) = row_max_lse(row);
            row[t as usize] - max - lse
        })
        .collect()
}

/// `g·(onehot(target) − softmax(row))` for each row of `logits` `[rows, V]`, written over the
/// logits themselves when nothing else holds them (a chunk's freshly computed logits), together
/// with each row's `log softmax(row)[target]`: one max and log-sum-exp per row serve both.
fn rows_pick_and_logit_grad(
    logits: FlexTensor,
    targets: &[i64],
    grad: &[f32],
) -> (Vec<f32>, FlexTensor) {
    let [rows, width] = [logits.shape()[0], logits.shape()[1]];
    let mut logits = if logits.is_contiguous() && logits.layout().start_offset() == 0 {
        logits
    } else {
        logits.to_contiguous()
    };
    // Copy-on-write: a copy only if the logits are shared.
    let data = &mut logits.storage_mut::<f32>()[..rows * width];
    let picked = data
        .par_chunks_mut(width)
        .zip(targets.par_iter().zip(grad.par_iter()))
        .map(|(row, (&t, &g))| {
            let (max, lse) = row_max_lse(row);
            let picked = row[t as usize] - max - lse;
            row_neg_scaled_softmax(row, max, lse, g);
            row[t as usize] += g;
            picked
        })
        .collect();
    (picked, logits)
}
