//! `log softmax(h · W)[target]` for every row of `h`, `chunk` rows at a time, as one differentiable
//! operation (Liger's fused linear cross-entropy / Cut Cross-Entropy, in spirit).
//!
//! Neither pass ever holds more than `[chunk, vocab]` logits:
//! - With a frozen weight (LoRA, the usual case) the gradient of each row's output is a single
//!   direction, `∂ log p / ∂h = (onehot − softmax) · Wᵀ` `[H]`, scaled by the row's output gradient.
//!   The forward computes it from the chunk's logits while it has them and keeps only that
//!   `[rows, H]`; the backward is a row-wise scaling, with no second pass over the vocabulary.
//! - With a trained weight the forward keeps only the `[rows]` result; the backward recomputes each
//!   chunk's logits and turns them into `g·(onehot − softmax)` before multiplying back by `Wᵀ` (and
//!   by `hᵀ` for the weight).
//!
//! - With the head in blocks (`frozen_precision: q8 | q4`: tied embeddings `E` `[V, H]`, logits
//!   `h · Eᵀ`), each chunk's two products widen the head tile by tile on flex; other backends
//!   widen it once per call.
//!
//! The chunking, the matmuls and the autodiff plumbing are shared (`rows`); the row-wise softmax
//! work runs in the WGSL kernels of `shaders/logprobs*.wgsl` on wgpu (`wgsl_rows`), in fused CPU
//! kernels on flex (`cpu_rows`, whose chunk products call `gemm` directly), and as plain tensor ops
//! on ndarray (`rows::PlainRows`).

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::Flex;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;

mod cpu_rows;
mod rows;
mod wgsl_rows;

use super::autodiff;
use super::projection::BlockOperand;
use rows::{Head, Operands, PlainRows, forward, forward_with_direction, gradients};

/// The fused LM-head log-prob operation (differentiable: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait LinearLogprobOps: Backend {
    /// `hidden` `[rows, H]`, `weight` `[H, V]`, `targets` `[rows]` → `log p(target)` `[rows]`.
    #[fusion(dtype = hidden, shape = Shape::new([hidden[0]]))]
    fn linear_logprobs(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;

    /// The same with the head a frozen, block-quantized `E` `[V, H]` (logits `hidden · Eᵀ`; see
    /// `projection::blocks`), widened tile by tile inside each chunk's products on flex.
    #[fusion(dtype = hidden, shape = Shape::new([hidden[0]]))]
    fn linear_logprobs_blocks(
        hidden: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;
}

/// Its backward work, run on the inner backend.
#[backend_extension(Cube, Fusion, Flex, NdArray)]
pub trait LinearLogprobGradOps: Backend {
    /// The forward's `log p(target)` `[rows]` together with its gradient direction
    /// `(onehot − softmax) · Wᵀ` `[rows, H]` (for a frozen weight: the backward is then
    /// `grad ⊙ direction`).
    #[fusion(meta = |hidden, _weight, _targets, _chunk| (
        TensorSpec::new(Shape::new([hidden.shape[0]]), hidden.dtype),
        hidden.clone(),
    ))]
    fn linear_logprobs_with_direction(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`Self::linear_logprobs_with_direction`] for a block-quantized head `E` `[V, H]`.
    #[fusion(meta = |hidden, _words, _scales, _format, _targets, _chunk| (
        TensorSpec::new(Shape::new([hidden.shape[0]]), hidden.dtype),
        hidden.clone(),
    ))]
    fn linear_logprobs_blocks_with_direction(
        hidden: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `(∂/∂hidden [rows, H], ∂/∂weight [H, V])` given the output gradient `grad` `[rows]` (for a
    /// trained weight).
    #[fusion(meta = |hidden, weight, _targets, _grad, _chunk| (hidden.clone(), weight.clone()))]
    fn linear_logprobs_gradients(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Log-probs of `targets` under `softmax(hidden · weight)`, computed `chunk` rows at a time
/// (`hidden` `[rows, H]`, `weight` `[H, V]`, `targets` `[rows]`) → `[rows]`.
pub fn linear_logprobs(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as LinearLogprobOps>::linear_logprobs(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        targets.into_dispatch(),
        chunk.max(1),
    ))
}

/// [`linear_logprobs`] with the head a frozen, block-quantized `E` `[V, H]` (logits
/// `hidden · Eᵀ`): `hidden` `[rows, H]`, `targets` `[rows]` → `[rows]`.
pub fn linear_logprobs_blocks(
    hidden: Tensor<2>,
    head: &BlockOperand,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as LinearLogprobOps>::linear_logprobs_blocks(
        hidden.into_dispatch(),
        head.words.clone().into_dispatch(),
        head.scales.clone().into_dispatch(),
        head.format.code(),
        targets.into_dispatch(),
        chunk.max(1),
    ))
}

/// Implements both traits for `$backend`, with `$rows(&hidden)` choosing the row work.
macro_rules! impl_ops {
    ($backend:ty, $rows:expr) => {
        impl LinearLogprobOps for $backend {
            fn linear_logprobs(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> FloatTensor<Self> {
                let rows = $rows(&hidden);
                let weight = Head::Dense(weight);
                forward::<Self>(rows, Operands::new(hidden, weight, targets, chunk))
            }

            fn linear_logprobs_blocks(
                hidden: FloatTensor<Self>,
                words: IntTensor<Self>,
                scales: FloatTensor<Self>,
                format: usize,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> FloatTensor<Self> {
                let rows = $rows(&hidden);
                let head = Head::Blocks {
                    words,
                    scales,
                    format,
                };
                forward::<Self>(rows, Operands::new(hidden, head, targets, chunk))
            }
        }

        impl LinearLogprobGradOps for $backend {
            fn linear_logprobs_with_direction(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let rows = $rows(&hidden);
                let weight = Head::Dense(weight);
                forward_with_direction::<Self>(rows, Operands::new(hidden, weight, targets, chunk))
            }

            fn linear_logprobs_blocks_with_direction(
                hidden: FloatTensor<Self>,
                words: IntTensor<Self>,
                scales: FloatTensor<Self>,
                format: usize,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let rows = $rows(&hidden);
                let head = Head::Blocks {
                    words,
                    scales,
                    format,
                };
                forward_with_direction::<Self>(rows, Operands::new(hidden, head, targets, chunk))
            }

            fn linear_logprobs_gradients(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                grad: FloatTensor<Self>,
                chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                let rows = $rows(&hidden);
                let weight = Head::Dense(weight);
                gradients::<Self>(rows, Operands::new(hidden, weight, targets, chunk), grad)
            }
        }
    };
}

impl_ops!(Flex, cpu_rows::flex_row_ops);
impl_ops!(NdArray, |_: &FloatTensor<NdArray>| &PlainRows);
impl_ops!(CubeBackend, wgsl_rows::row_ops);

impl<B: LinearLogprobOps + LinearLogprobGradOps, C: CheckpointStrategy> LinearLogprobOps
    for Autodiff<B, C>
{
    fn linear_logprobs(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let untracked_targets = targets.clone();
        let untracked = move |hidden: FloatTensor<B>, weight: FloatTensor<B>| {
            B::linear_logprobs(hidden, weight, untracked_targets, chunk)
        };
        if weight.is_tracked() {
            // The backward recomputes each chunk's logits from the inputs.
            return autodiff::op::<B, C, _, 2>(
                [hidden, weight],
                move |[hidden, weight]| {
                    let (h, w, t) = (hidden.clone(), weight.clone(), targets.clone());
                    let out = B::linear_logprobs(h, w, t, chunk);
                    (out, (hidden, weight, targets, chunk))
                },
                move |[hidden, weight]| untracked(hidden, weight),
                |(hidden, weight, targets, chunk), grad, _| {
                    let (dh, dw) =
                        B::linear_logprobs_gradients(hidden, weight, targets, grad, chunk);
                    [Some(dh), Some(dw)]
                },
            );
        }
        // A frozen weight: the backward keeps only the forward's gradient direction `[rows, H]`.
        let weight = weight.into_primitive();
        let kept = weight.clone();
        autodiff::op::<B, C, _, 1>(
            [hidden],
            move |[hidden]| B::linear_logprobs_with_direction(hidden, kept, targets, chunk),
            move |[hidden]| untracked(hidden, weight),
            scale_direction::<B>,
        )
    }

    fn linear_logprobs_blocks(
        hidden: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        // Always frozen: the backward keeps only the forward's gradient direction `[rows, H]`.
        let scales = scales.into_primitive();
        let (w, s, t) = (words.clone(), scales.clone(), targets.clone());
        autodiff::op::<B, C, _, 1>(
            [hidden],
            move |[hidden]| {
                B::linear_logprobs_blocks_with_direction(hidden, w, s, format, t, chunk)
            },
            move |[hidden]| {
                B::linear_logprobs_blocks(hidden, words, scales, format, targets, chunk)
            },
            scale_direction::<B>,
        )
    }
}

/// The backward of a frozen head: each row's gradient direction `[rows, H]` times the row's output
/// gradient `[rows]`.
fn scale_direction<B: Backend>(
    direction: FloatTensor<B>,
    grad: FloatTensor<B>,
    _: [bool; 1],
) -> [Option<FloatTensor<B>>; 1] {
    let rows = grad.shape()[0];
    let grad = B::float_reshape(grad, Shape::new([rows, 1]));
    [Some(B::float_mul(direction, grad))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;
    use burn::tensor::activation::log_softmax;

    /// The fused op against `log_softmax(h·W)[target]`: values and gradients, for a trained weight
    /// (both gradients, recomputed in the backward) and a frozen one (the forward's direction).
    pub(crate) fn check_against_plain(device: &Device) {
        check(device, true);
        check(device, false);
        check_blocks(device);
    }

    /// A block-quantized head `E` `[V, H]` against the plain path on `E` dequantized exactly
    /// (ggml's values): the same log-probs and `∂hidden` (chunks of 5, 5, 3).
    fn check_blocks(device: &Device) {
        use crate::gguf::types::{GgmlType, quantize_q4_0};
        use crate::kernels::projection::BlockFormat;
        let device = device.clone().autodiff();
        let (rows, h, v) = (13, 64, 37);
        let values: Vec<f32> = (0..v * h)
            .map(|i| ((i * 613 % 997) as f32 / 400.0) - 1.2)
            .collect();
        let bytes = quantize_q4_0(&values);
        let (words, scales) = BlockFormat::Q4_0.split_ggml(&bytes);
        let head = BlockOperand {
            words: Tensor::from_data(
                TensorData::new(words, [v, h / 32 * 4]),
                (&device, burn::tensor::DType::U32),
            ),
            scales: Tensor::from_data(TensorData::new(scales, [v, h / 32]), &device),
            format: BlockFormat::Q4_0,
        };
        let exact = Tensor::<2>::from_data(
            TensorData::new(GgmlType::Q4_0.dequantize(&bytes), [v, h]),
            &device,
        );
        let hidden = Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.0), &device);
        let targets: Vec<i64> = (0..rows as i64).map(|i| (i * 7) % v as i64).collect();
        let targets = Tensor::<1, Int>::from_ints(targets.as_slice(), &device);
        let coeffs = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let hd = hidden.clone().detach().require_grad();
            let out = if fused {
                linear_logprobs_blocks(hd.clone(), &head, targets.clone(), 5)
            } else {
                log_softmax(hd.clone().matmul(exact.clone().transpose()), 1)
                    .gather(1, targets.clone().unsqueeze_dim::<2>(1))
                    .reshape([rows])
            };
            let grads = (out.clone() * coeffs.clone()).sum().backward();
            (out.inner(), hd.grad(&grads).unwrap())
        };
        let ((out_f, dh_f), (out_p, dh_p)) = (run(true), run(false));
        let e = max_rel_err(out_f, out_p);
        assert!(e <= 1e-5, "block head values: {e}");
        let e = max_rel_err(dh_f, dh_p);
        assert!(e <= 1e-5, "block head ∂hidden: {e}");
    }

    fn check(device: &Device, train_weight: bool) {
        let device = device.clone().autodiff();
        let (rows, h, v) = (13, 8, 37);
        let hidden = Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<2>::random([h, v], Distribution::Normal(0.0, 1.0), &device);
        let targets = Tensor::<1, Int>::from_ints(
            (0..rows as i64)
                .map(|i| (i * 7) % v as i64)
                .collect::<Vec<_>>()
                .as_slice(),
            &device,
        );
        let coeffs = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let hd = hidden.clone().detach().require_grad();
            let wt = match train_weight {
                true => weight.clone().detach().require_grad(),
                false => weight.clone().detach(),
            };
            let out = if fused {
                linear_logprobs(hd.clone(), wt.clone(), targets.clone(), 5) // chunks of 5, 5, 3
            } else {
                log_softmax(hd.clone().matmul(wt.clone()), 1)
                    .gather(1, targets.clone().unsqueeze_dim::<2>(1))
                    .reshape([rows])
            };
            let grads = (out.clone() * coeffs.clone()).sum().backward();
            (out.inner(), hd.grad(&grads).unwrap(), wt.grad(&grads))
        };
        let (out_f, dh_f, dw_f) = run(true);
        let (out_p, dh_p, dw_p) = run(false);
        let e = max_rel_err(out_f, out_p);
        assert!(e <= 1e-5, "values: {e}");
        let e = max_rel_err(dh_f, dh_p);
        assert!(e <= 1e-5, "∂hidden: {e}");
        match (dw_f, dw_p) {
            (Some(dw_f), Some(dw_p)) if train_weight => {
                let e = max_rel_err(dw_f, dw_p);
                assert!(e <= 1e-5, "∂weight: {e}");
            }
            (None, None) if !train_weight => {}
            _ => panic!("∂weight exists only for a trained weight"),
        }
    }

    crate::device::on_every_backend!(check_against_plain => fused_matches_plain_on_flex, fused_matches_plain_on_ndarray, fused_matches_plain_on_wgpu);

    /// A frozen bf16 head (`matmul_precision: bf16`) on flex: each chunk's logits multiply the
    /// hidden rows rounded to bf16, and the gradient direction multiplies `onehot − softmax`
    /// rounded to bf16, both by the stored table; the rest stays f32. Against that reference
    /// within 1e-5 (an f32 product would be ~1e-3 away).
    #[test]
    fn a_bf16_head_multiplies_in_bf16_on_flex() {
        use burn::tensor::FloatDType;
        if !crate::kernels::projection::cpu_has_bf16_products() {
            eprintln!("skipping: this CPU has no AVX512-BF16");
            return;
        }
        let device = Device::flex().autodiff();
        let (rows, h, v) = (15, 40, 37); // chunks of 5: more rows than decoding's few-row path
        let round = |t: Tensor<2>| t.cast(FloatDType::BF16).cast(FloatDType::F32);
        let hidden = Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.0), &device);
        let table = Tensor::<2>::random([v, h], Distribution::Normal(0.0, 1.0), &device)
            .cast(FloatDType::BF16); // E [V, H]
        let ids: Vec<i64> = (0..rows as i64).map(|i| (i * 7) % v as i64).collect();
        let targets = Tensor::<1, Int>::from_ints(ids.as_slice(), &device);
        let coeffs = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), &device);
        let hd = hidden.clone().detach().require_grad();
        let out = linear_logprobs(hd.clone(), table.clone().transpose(), targets.clone(), 5);
        let grads = (out.clone() * coeffs.clone()).sum().backward();

        let (hidden, coeffs) = (hidden.inner(), coeffs.inner());
        let (e, targets) = (table.inner().cast(FloatDType::F32), targets.inner());
        let f32_logits = hidden.clone().matmul(e.clone().transpose());
        let f32_want = log_softmax(f32_logits, 1).gather(1, targets.clone().unsqueeze_dim::<2>(1));
        let logits = round(hidden).matmul(e.clone().transpose()); // [rows, V]
        let logp = log_softmax(logits, 1);
        let want = logp
            .clone()
            .gather(1, targets.clone().unsqueeze_dim::<2>(1));
        let onehot = Tensor::<2>::zeros([rows, v], &logp.device()).scatter(
            1,
            targets.unsqueeze_dim::<2>(1),
            Tensor::ones([rows, 1], &logp.device()),
            burn::tensor::IndexingUpdateOp::Add,
        );
        let direction = round(onehot - logp.exp()).matmul(e); // [rows, H]
        let want_dh = direction * coeffs.unsqueeze_dim::<2>(1);
        let out = out.inner().reshape([rows, 1]);
        let err = max_rel_err(out.clone(), want);
        assert!(err <= 1e-5, "values: {err}");
        let gap = max_rel_err(out, f32_want);
        assert!(gap > 1e-4, "an f32 head would pass too: {gap}");
        let err = max_rel_err(hd.grad(&grads).unwrap(), want_dh);
        assert!(err <= 1e-5, "∂hidden: {err}");
    }
}
