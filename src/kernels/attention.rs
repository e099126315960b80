//! Memory-efficient attention: `softmax(q·kᵀ + mask)·v` as one differentiable op whose backward
//! keeps only `q`, `k` and `v`, not the `[rows, keys]` probabilities of plain attention, and
//! recomputes the probabilities a block of query rows at a time (the recompute of
//! FlashAttention-2's backward, arXiv 2307.08691):
//!
//! - forward, per block of rows: `p = softmax(q_b·kᵀ + mask_b)`, `o_b = p·v`;
//! - backward, per block: `p` again, `∂v += pᵀ·∂o_b`, `∂s = p ⊙ (∂p − rowsum(∂p ⊙ p))` with
//!   `∂p = ∂o_b·vᵀ`, `∂q_b = ∂s·k`, `∂k += ∂sᵀ·q_b`.
//!
//! So no pass holds more than `[batch, heads, block, keys]` scores. FlashAttention keeps each
//! row's log-sum-exp to skip the softmax's max and sum in the recompute; here the softmax and its
//! gradient are the lean ops of `activations.rs` (one fused, threaded pass each on flex), so the
//! recompute is one pass over a block that is in cache, and nothing per row is kept at all. The
//! mask is additive (causal, sliding-window or any pattern; every row must see a key), and GQA
//! comes folded into the rows as `model::attention` lays it out, so K/V are never repeated. The
//! blocks are tensor ops on every backend (flex, ndarray, wgpu); a fused kernel that never writes
//! a block's scores to memory is not written yet.

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::Flex;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::Slice;

use super::activations::{LeanActivationGradOps, LeanActivationOps};
use super::{autodiff, chunk_ranges};

/// The operation (differentiable: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait BlockedAttentionOps: Backend {
    /// `q` `[batch, heads, rows, d]`, `k` and `v` `[batch, heads, keys, d]`, the additive `mask`
    /// `[rows, keys]` → `softmax(q·kᵀ + mask)·v` `[batch, heads, rows, d]`, `block` query rows at
    /// a time.
    #[fusion(dtype = q, shape = q)]
    fn blocked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        block: usize,
    ) -> FloatTensor<Self>;
}

/// `softmax(q·kᵀ + mask)·v` for `q` `[batch, heads, rows, d]`, `k`/`v` `[batch, heads, keys, d]`
/// and an additive `mask` `[rows, keys]`, keeping only `q`, `k` and `v` for the backward, which
/// recomputes the probabilities `block` rows at a time.
pub fn blocked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<2>,
    block: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as BlockedAttentionOps>::blocked_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask.into_dispatch(),
        block,
    ))
}

/// Rows `start..end` (the third axis) of a `[batch, heads, rows, _]` tensor.
fn rows<B: Backend>(t: &FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    let all = Slice::from(..);
    B::float_slice(t.clone(), &[all, all, Slice::from(start..end), all])
}

/// The scores of rows `start..end`: `q_b·kᵀ + mask_b` `[batch, heads, rows, keys]`, with `kt`
/// `[batch, heads, d, keys]`.
fn block_scores<B: Backend>(
    q: &FloatTensor<B>,
    kt: &FloatTensor<B>,
    mask: &FloatTensor<B>,
    (start, end): (usize, usize),
) -> FloatTensor<B> {
    let keys = mask.shape()[1];
    let mask = B::float_slice(mask.clone(), &[Slice::from(start..end), Slice::from(..)]);
    let mask = B::float_reshape(mask, Shape::new([1, 1, end - start, keys]));
    B::float_add(B::float_matmul(rows::<B>(q, start, end), kt.clone()), mask)
}

/// The forward, block by block: `softmax(q_b·kᵀ + mask_b)·v` `[batch, heads, rows, d]`.
fn forward<B: LeanActivationOps>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: FloatTensor<B>,
    block: usize,
) -> FloatTensor<B> {
    let kt = B::float_swap_dims(k, 2, 3);
    let outs = chunk_ranges(q.shape()[2], block)
        .map(|range| {
            let probs = B::softmax_last(block_scores::<B>(&q, &kt, &mask, range));
            B::float_matmul(probs, v.clone())
        })
        .collect();
    B::float_cat(outs, 2)
}

/// What the backward keeps: `q`, `k`, `v`, the mask and the block.
type Kept<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    usize,
);

/// `(∂q, ∂k, ∂v)` from the kept state and the output gradient `grad` `[batch, heads, rows, d]`.
fn gradients<B: LeanActivationOps + LeanActivationGradOps>(
    (q, k, v, mask, block): Kept<B>,
    grad: FloatTensor<B>,
) -> [FloatTensor<B>; 3] {
    let kt = B::float_swap_dims(k.clone(), 2, 3);
    let vt = B::float_swap_dims(v, 2, 3);
    let (mut dk, mut dv): (Option<FloatTensor<B>>, Option<FloatTensor<B>>) = (None, None);
    let mut dq = Vec::new();
    let accumulate = |sum: &mut Option<FloatTensor<B>>, part: FloatTensor<B>| {
        *sum = Some(match sum.take() {
            Some(sum) => B::float_add(sum, part),
            None => part,
        });
    };
    for range @ (start, end) in chunk_ranges(q.shape()[2], block) {
        // [batch, heads, block, keys]
        let probs = B::softmax_last(block_scores::<B>(&q, &kt, &mask, range));
        let grad_b = rows::<B>(&grad, start, end);
        // [batch, heads, keys, d]
        accumulate(
            &mut dv,
            B::float_matmul(B::float_swap_dims(probs.clone(), 2, 3), grad_b.clone()),
        );
        // p ⊙ (∂p − rowsum(∂p ⊙ p)) [batch, heads, block, keys]
        let dscores = B::softmax_last_grad(probs, B::float_matmul(grad_b, vt.clone()));
        accumulate(
            &mut dk,
            B::float_matmul(
                B::float_swap_dims(dscores.clone(), 2, 3),
                rows::<B>(&q, start, end),
            ),
        );
        dq.push(B::float_matmul(dscores, k.clone()));
    }
    let (dk, dv) = (dk.expect("at least one row"), dv.expect("at least one row"));
    [B::float_cat(dq, 2), dk, dv]
}

macro_rules! impl_blocks {
    ($backend:ty) => {
        impl BlockedAttentionOps for $backend {
            fn blocked_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                mask: FloatTensor<Self>,
                block: usize,
            ) -> FloatTensor<Self> {
                forward::<Self>(q, k, v, mask, block)
            }
        }
    };
}

impl_blocks!(NdArray);
impl_blocks!(CubeBackend);
impl_blocks!(Flex);

impl<B, C> BlockedAttentionOps for Autodiff<B, C>
where
    B: BlockedAttentionOps + LeanActivationOps + LeanActivationGradOps,
    C: CheckpointStrategy,
{
    /// The backward keeps `q`, `k`, `v` and the mask.
    fn blocked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        block: usize,
    ) -> FloatTensor<Self> {
        let mask = mask.into_primitive();
        let untracked_mask = mask.clone();
        autodiff::op::<B, C, _, 3>(
            [q, k, v],
            |[q, k, v]| {
                let out = forward::<B>(q.clone(), k.clone(), v.clone(), mask.clone(), block);
                (out, (q, k, v, mask, block))
            },
            |[q, k, v]| forward::<B>(q, k, v, untracked_mask, block),
            |kept, grad, [need_q, need_k, need_v]| {
                let [dq, dk, dv] = gradients::<B>(kept, grad);
                [
                    need_q.then_some(dq),
                    need_k.then_some(dk),
                    need_v.then_some(dv),
                ]
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{max_rel_err, softmax_last};
    use burn::tensor::Distribution;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
            .detach()
            .require_grad()
    }

    /// A causal mask over `keys` keys for `rows` queries, the last `rows` positions, with a
    /// sliding window of 5 (each row still sees its own key).
    fn windowed_causal_mask(rows: usize, keys: usize, device: &Device) -> Tensor<2> {
        let past = keys - rows;
        let values: Vec<f32> = (0..rows)
            .flat_map(|i| {
                (0..keys).map(move |j| {
                    let at = past + i;
                    if j <= at && at - j < 5 { 0.0 } else { -1e30 }
                })
            })
            .collect();
        Tensor::from_data(TensorData::new(values, [rows, keys]), device)
    }

    /// Values and the gradients of `q`, `k` and `v` against `softmax_last(q·kᵀ + mask)·v`, under
    /// a random output cotangent, for blocks that divide the rows, blocks that do not, and one
    /// block for all rows; queries after cached keys (rows < keys) as in decoding; and the
    /// untracked forward on the backend itself. As in the model, `q`, `k`, `v` are transposed
    /// views of `[batch, seq, heads, d]` tensors and the output is transposed back, so the op sees
    /// strided inputs and a strided output gradient.
    fn check_against_whole_matrix(device: &Device) {
        let device = device.clone().autodiff();
        let (batch, heads, rows, keys, d) = (2, 3, 13, 17, 8);
        let q_leaf = random([batch, rows, heads, d], &device);
        let k_leaf = random([batch, keys, heads, d], &device);
        let v_leaf = random([batch, keys, heads, d], &device);
        // Fresh views for every backward (each consumes its graph).
        let views = || [&q_leaf, &k_leaf, &v_leaf].map(|t| t.clone().swap_dims(1, 2));
        let mask = windowed_causal_mask(rows, keys, &device);
        let cot = Tensor::<4>::random(
            [batch, rows, heads, d],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let loss = |out: Tensor<4>| (out.swap_dims(1, 2) * cot.clone()).sum();

        let [q, k, v] = views();
        let scores = q.matmul(k.swap_dims(2, 3)) + mask.clone().reshape([1, 1, rows, keys]);
        let plain = softmax_last(scores).matmul(v);
        let plain_grads = loss(plain.clone()).backward();
        for block in [1, 2, 3, 4, 5, 13, 64] {
            let [q, k, v] = views();
            let out = blocked_attention(q, k, v, mask.clone(), block);
            let grads = loss(out.clone()).backward();
            let e = max_rel_err(out.inner(), plain.clone().inner());
            assert!(e <= 1e-5, "block {block}: values {e}");
            for (name, t) in [("q", &q_leaf), ("k", &k_leaf), ("v", &v_leaf)] {
                let e = max_rel_err(t.grad(&grads).unwrap(), t.grad(&plain_grads).unwrap());
                assert!(e <= 1e-5, "block {block}: ∂{name} {e}");
            }
        }

        // Without autodiff (decoding, evaluation) it is the same forward.
        let [q, k, v] = views().map(|t| t.inner());
        let out = blocked_attention(q, k, v, mask.inner(), 5);
        assert!(max_rel_err(out, plain.inner()) <= 1e-5);
    }

    crate::device::on_every_backend!(check_against_whole_matrix => blocked_attention_matches_whole_matrix_on_flex, blocked_attention_matches_whole_matrix_on_ndarray, blocked_attention_matches_whole_matrix_on_wgpu);
}
