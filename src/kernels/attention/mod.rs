//! Memory-efficient attention: `softmax(q·kᵀ + mask)·v` as one differentiable op whose backward
//! keeps only `q`, `k` and `v`, not the `[rows, keys]` probabilities of plain attention, and
//! recomputes the probabilities a span of queries at a time (the recompute of FlashAttention-2's
//! backward, arXiv 2307.08691):
//!
//! - forward, per span: `p = softmax(q_s·k_sᵀ + mask_s)`, `o_s = p·v_s`;
//! - backward, per span: `p` again, `∂v_s += pᵀ·∂o_s`, `∂s = p ⊙ (∂p − rowsum(∂p ⊙ p))` with
//!   `∂p = ∂o_s·v_sᵀ`, `∂q_s = ∂s·k_s`, `∂k_s += ∂sᵀ·q_s`.
//!
//! A span is a run of query positions with the range of keys any of them sees
//! (`model::layout`): causal attention skips the upper triangle, packed rows skip the other
//! segments, sliding windows skip what lies behind them. So no pass holds more than
//! `[batch, heads, span, keys]` scores, and no product runs over keys masked for a whole span.
//! The mask is additive (every query must see a key) and shared by the `group` query heads of a
//! K/V head: GQA comes folded into the rows as `model::attention` lays it out (`[batch, kv_heads,
//! group·seq, d]`), so K/V are never repeated.
//!
//! Three implementations of the same op, checked against the whole matrix (values and the three
//! gradients within 1e-5) on their backends, picked by [`AttentionKernel`] (`auto`: the fused
//! kernel on flex, the tensor ops on wgpu until the WGSL kernels are measured on a GPU):
//! - flex: fused CPU kernels (`cpu.rs`): one task per span of each query head, `gemm` on strided
//!   operands, the mask, softmax and its gradient in place in a cache-sized scratch;
//! - wgpu: WGSL kernels (`wgsl.rs`, `shaders/attention_*.wgsl`) in FlashAttention-2's form: the
//!   forward never writes a score to memory (online softmax), the backward keeps each row's
//!   log-sum-exp and `rowsum(∂o ⊙ o)` and splits into a query kernel and a key kernel;
//! - everything else (ndarray; other dtypes, or heads over 256 on wgpu): the tensor ops below,
//!   span by span (`forward`, `gradients`), the softmax and its gradient through
//!   `activations.rs`. FlashAttention's log-sum-exp only saves the recompute's max and sum, which
//!   these passes over a span in cache do anyway, so nothing per row is kept here.

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
use super::autodiff;

mod cpu;
mod wgsl;

/// Query positions `queries.0..queries.1` and the keys `keys.0..keys.1` any of them may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub queries: (usize, usize),
    pub keys: (usize, usize),
}

/// Which implementation runs the op (the `attention_kernel` setting).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKernel {
    /// The fused kernel where it is measured faster: on the CPU (flex). On wgpu the tensor ops,
    /// until GPU figures say otherwise (on Mesa's software Vulkan the WGSL kernels made a step
    /// 2.2× slower).
    #[default]
    Auto,
    /// The backend's fused kernel wherever it has one (flex, wgpu).
    Fused,
    /// The tensor ops, span by span, on every backend.
    TensorOps,
}

impl AttentionKernel {
    /// Whether a backend with a fused kernel runs it (`by_default`: what `auto` means there).
    fn fused(self, by_default: bool) -> bool {
        match self {
            Self::Auto => by_default,
            Self::Fused => true,
            Self::TensorOps => false,
        }
    }
}

/// The operation (differentiable: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait BlockedAttentionOps: Backend {
    /// `q` `[batch, heads, group·seq, d]`, `k` and `v` `[batch, heads, keys, d]`, the additive
    /// `mask` `[1 or batch, seq, keys]` → `softmax(q·kᵀ + mask)·v` `[batch, heads, group·seq,
    /// d]`, a span of queries at a time.
    #[fusion(dtype = q, shape = q)]
    fn blocked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        spans: Vec<Span>,
        kernel: AttentionKernel,
    ) -> FloatTensor<Self>;
}

/// `softmax(q·kᵀ + mask)·v` for `q` `[batch, heads, group·seq, d]` (the `group` query heads of
/// each K/V head folded into the rows), `k`/`v` `[batch, heads, keys, d]` and an additive `mask`
/// `[1 or batch, seq, keys]` shared by the group, keeping only `q`, `k` and `v` for the backward,
/// which recomputes the probabilities span by span. The spans must cover the `seq` queries in
/// order, and each span's keys every key its queries see. `kernel` picks the implementation.
pub fn blocked_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<3>,
    spans: Vec<Span>,
    kernel: AttentionKernel,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as BlockedAttentionOps>::blocked_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        mask.into_dispatch(),
        spans,
        kernel,
    ))
}

/// How a pass is laid out: `[batch, heads, group, seq, d]` for queries, `keys` keys, `mask_rows`
/// mask rows.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    group: usize,
    seq: usize,
    d: usize,
    mask_rows: usize,
}

impl Dims {
    fn of<B: Backend>(q: &FloatTensor<B>, mask: &FloatTensor<B>) -> Self {
        let [batch, heads, rows, d] = q.shape().dims();
        let [mask_rows, seq, _] = mask.shape().dims();
        Self {
            batch,
            heads,
            group: rows / seq,
            seq,
            d,
            mask_rows,
        }
    }

    /// `[batch, heads, group, n, last]`: `n` positions of each query head of a group apart.
    fn by_head(&self, n: usize, last: usize) -> Shape {
        Shape::new([self.batch, self.heads, self.group, n, last])
    }

    /// `[batch, heads, group·n, last]`: the group's query heads folded into the rows.
    fn folded(&self, n: usize, last: usize) -> Shape {
        Shape::new([self.batch, self.heads, self.group * n, last])
    }
}

/// The queries (or their gradient) of `span` from `[batch, heads, group·seq, d]`:
/// `[batch, heads, group·n, d]`.
fn span_queries<B: Backend>(t: &FloatTensor<B>, dims: Dims, span: Span) -> FloatTensor<B> {
    let (start, end) = span.queries;
    let all = Slice::from(..);
    let t = B::float_reshape(t.clone(), dims.by_head(dims.seq, dims.d));
    let t = B::float_slice(t, &[all, all, all, Slice::from(start..end), all]);
    B::float_reshape(t, dims.folded(end - start, dims.d))
}

/// The keys (or values) of `span`: `[batch, heads, span keys, d]`.
fn span_keys<B: Backend>(t: &FloatTensor<B>, span: Span) -> FloatTensor<B> {
    let all = Slice::from(..);
    B::float_slice(
        t.clone(),
        &[all, all, Slice::from(span.keys.0..span.keys.1), all],
    )
}

/// The span's probabilities `softmax(q_s·k_sᵀ + mask_s)` `[batch, heads, group·n, span keys]`.
fn span_probs<B: LeanActivationOps>(
    q_s: FloatTensor<B>,
    k_s: &FloatTensor<B>,
    mask: &FloatTensor<B>,
    dims: Dims,
    span: Span,
) -> FloatTensor<B> {
    let (n, keys) = (span.queries.1 - span.queries.0, span.keys.1 - span.keys.0);
    let mask_s = B::float_slice(
        mask.clone(),
        &[
            Slice::from(..),
            Slice::from(span.queries.0..span.queries.1),
            Slice::from(span.keys.0..span.keys.1),
        ],
    );
    let mask_s = B::float_reshape(mask_s, Shape::new([dims.mask_rows, 1, 1, n, keys]));
    let scores = B::float_matmul(q_s, B::float_swap_dims(k_s.clone(), 2, 3));
    let scores = B::float_add(B::float_reshape(scores, dims.by_head(n, keys)), mask_s);
    B::softmax_last(B::float_reshape(scores, dims.folded(n, keys)))
}

/// Per-span `[batch, heads, group·n, d]` results put back in query order: `[batch, heads,
/// group·seq, d]`.
fn join_spans<B: Backend>(parts: Vec<FloatTensor<B>>, dims: Dims) -> FloatTensor<B> {
    let parts = parts
        .into_iter()
        .map(|part| {
            let n = part.shape()[2] / dims.group;
            B::float_reshape(part, dims.by_head(n, dims.d))
        })
        .collect();
    B::float_reshape(B::float_cat(parts, 3), dims.folded(dims.seq, dims.d))
}

/// The forward, span by span: `softmax(q_s·k_sᵀ + mask_s)·v_s` `[batch, heads, group·seq, d]`.
fn forward<B: LeanActivationOps>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: FloatTensor<B>,
    spans: &[Span],
) -> FloatTensor<B> {
    let dims = Dims::of::<B>(&q, &mask);
    let outs = spans
        .iter()
        .map(|&span| {
            let probs = span_probs::<B>(
                span_queries::<B>(&q, dims, span),
                &span_keys::<B>(&k, span),
                &mask,
                dims,
                span,
            );
            B::float_matmul(probs, span_keys::<B>(&v, span))
        })
        .collect();
    join_spans::<B>(outs, dims)
}

/// What the backward keeps: `q`, `k`, `v`, the mask and the spans.
type Kept<B> = (
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Vec<Span>,
);

/// Adds `part` `[batch, heads, span keys, d]` into the span's keys of `sum` `[batch, heads, keys,
/// d]`.
fn add_span_keys<B: Backend>(
    sum: FloatTensor<B>,
    part: FloatTensor<B>,
    span: Span,
) -> FloatTensor<B> {
    let all = Slice::from(..);
    let at = [all, all, Slice::from(span.keys.0..span.keys.1), all];
    let current = B::float_slice(sum.clone(), &at);
    B::float_slice_assign(sum, &at, B::float_add(current, part))
}

/// `(∂q, ∂k, ∂v)` from the kept state and the output gradient `grad` `[batch, heads, group·seq,
/// d]`.
fn gradients<B: LeanActivationOps + LeanActivationGradOps>(
    (q, k, v, mask, spans): Kept<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dims = Dims::of::<B>(&q, &mask);
    let device = k.device();
    let dtype = k.dtype().into();
    let mut dk = B::float_zeros(k.shape(), &device, dtype);
    let mut dv = B::float_zeros(v.shape(), &device, dtype);
    let mut dq = Vec::with_capacity(spans.len());
    for &span in &spans {
        let (q_s, k_s, v_s) = (
            span_queries::<B>(&q, dims, span),
            span_keys::<B>(&k, span),
            span_keys::<B>(&v, span),
        );
        // [batch, heads, group·n, span keys]
        let probs = span_probs::<B>(q_s.clone(), &k_s, &mask, dims, span);
        let grad_s = span_queries::<B>(&grad, dims, span);
        // [batch, heads, span keys, d]
        let dv_s = B::float_matmul(B::float_swap_dims(probs.clone(), 2, 3), grad_s.clone());
        dv = add_span_keys::<B>(dv, dv_s, span);
        // p ⊙ (∂p − rowsum(∂p ⊙ p)) [batch, heads, group·n, span keys]
        let dscores = B::softmax_last_grad(
            probs,
            B::float_matmul(grad_s, B::float_swap_dims(v_s, 2, 3)),
        );
        let dk_s = B::float_matmul(B::float_swap_dims(dscores.clone(), 2, 3), q_s);
        dk = add_span_keys::<B>(dk, dk_s, span);
        dq.push(B::float_matmul(dscores, k_s));
    }
    (join_spans::<B>(dq, dims), dk, dv)
}

/// Its backward, run on the inner backend.
#[backend_extension(Cube, Fusion, Flex, NdArray)]
pub trait BlockedAttentionGradOps: Backend {
    /// `(∂q, ∂k, ∂v)` of [`BlockedAttentionOps::blocked_attention`] given the output gradient
    /// `grad` `[batch, heads, group·seq, d]`.
    #[fusion(meta = |q, k, v, _mask, _spans, _kernel, _grad| (q.clone(), k.clone(), v.clone()))]
    fn blocked_attention_grads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        spans: Vec<Span>,
        kernel: AttentionKernel,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// ndarray: the tensor ops.
impl BlockedAttentionOps for NdArray {
    fn blocked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        spans: Vec<Span>,
        _kernel: AttentionKernel,
    ) -> FloatTensor<Self> {
        forward::<Self>(q, k, v, mask, &spans)
    }
}

impl BlockedAttentionGradOps for NdArray {
    fn blocked_attention_grads(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        spans: Vec<Span>,
        _kernel: AttentionKernel,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        gradients::<Self>((q, k, v, mask, spans), grad)
    }
}

/// A backend with fused kernels (`$kernel::{supports, forward, gradients}`, run by `auto` when
/// `$by_default`): the kernels where asked for and they take the operands, the tensor ops
/// otherwise.
macro_rules! impl_kernels {
    ($backend:ty, $kernel:ident, $by_default:expr) => {
        impl BlockedAttentionOps for $backend {
            fn blocked_attention(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                mask: FloatTensor<Self>,
                spans: Vec<Span>,
                kernel: AttentionKernel,
            ) -> FloatTensor<Self> {
                if kernel.fused($by_default) && $kernel::supports(&[&q, &k, &v], &mask) {
                    $kernel::forward(q, k, v, mask, &spans)
                } else {
                    forward::<Self>(q, k, v, mask, &spans)
                }
            }
        }

        impl BlockedAttentionGradOps for $backend {
            fn blocked_attention_grads(
                q: FloatTensor<Self>,
                k: FloatTensor<Self>,
                v: FloatTensor<Self>,
                mask: FloatTensor<Self>,
                spans: Vec<Span>,
                kernel: AttentionKernel,
                grad: FloatTensor<Self>,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                if kernel.fused($by_default) && $kernel::supports(&[&q, &k, &v, &grad], &mask) {
                    $kernel::gradients((q, k, v), mask, &spans, grad)
                } else {
                    gradients::<Self>((q, k, v, mask, spans), grad)
                }
            }
        }
    };
}

impl_kernels!(Flex, cpu, true);
impl_kernels!(CubeBackend, wgsl, false);

impl<B, C> BlockedAttentionOps for Autodiff<B, C>
where
    B: BlockedAttentionOps + BlockedAttentionGradOps,
    C: CheckpointStrategy,
{
    /// The backward keeps `q`, `k`, `v`, the mask, the spans and the kernel choice.
    fn blocked_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        spans: Vec<Span>,
        kernel: AttentionKernel,
    ) -> FloatTensor<Self> {
        let mask = mask.into_primitive();
        let untracked = (mask.clone(), spans.clone());
        autodiff::op::<B, C, _, 3>(
            [q, k, v],
            |[q, k, v]| {
                let out = B::blocked_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    spans.clone(),
                    kernel,
                );
                (out, ((q, k, v, mask, spans), kernel))
            },
            |[q, k, v]| B::blocked_attention(q, k, v, untracked.0, untracked.1, kernel),
            |((q, k, v, mask, spans), kernel), grad, [need_q, need_k, need_v]| {
                let (dq, dk, dv) = B::blocked_attention_grads(q, k, v, mask, spans, kernel, grad);
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
    use crate::model::layout::{PackedRows, contiguous_mask};
    use burn::tensor::Distribution;

    fn random(shape: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
            .detach()
            .require_grad()
    }

    /// `softmax(q·kᵀ + mask)·v` over the whole matrix, the mask shared by the group.
    fn whole_matrix(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, mask: Tensor<3>) -> Tensor<4> {
        let [batch, heads, rows, _] = q.dims();
        let [mask_rows, seq, keys] = mask.dims();
        let group = rows / seq;
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .reshape([batch, heads, group, seq, keys])
            + mask.reshape([mask_rows, 1, 1, seq, keys]);
        softmax_last(scores.reshape([batch, heads, rows, keys])).matmul(v)
    }

    /// Values and the gradients of `q`, `k` and `v` against the whole matrix, under a random
    /// output cotangent, through the backend's fused kernel and through the tensor ops (the same
    /// on ndarray), for the masks `(mask, spans of each length)`: 2 K/V heads with 3 query
    /// heads each. As in the model, `q`, `k`, `v` are transposed views of `[batch, seq, heads,
    /// d]` tensors and the output is transposed back, so the op sees strided inputs and a strided
    /// output gradient.
    fn check_masks(
        device: &Device,
        (batch, seq, keys, d): (usize, usize, usize, usize),
        masks: Vec<(Tensor<3>, Vec<Vec<Span>>)>,
    ) {
        let device = device.clone().autodiff();
        let (heads, group) = (2, 3);
        let q_leaf = random([batch, group * seq, heads, d], &device);
        let k_leaf = random([batch, keys, heads, d], &device);
        let v_leaf = random([batch, keys, heads, d], &device);
        // Fresh views for every backward (each consumes its graph).
        let views = || [&q_leaf, &k_leaf, &v_leaf].map(|t| t.clone().swap_dims(1, 2));
        let cot = Tensor::<4>::random(
            [batch, group * seq, heads, d],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let loss = |out: Tensor<4>| (out.swap_dims(1, 2) * cot.clone()).sum();
        for (mask, span_sets) in masks {
            let [q, k, v] = views();
            let plain = whole_matrix(q, k, v, mask.clone());
            let plain_grads = loss(plain.clone()).backward();
            for spans in span_sets {
                for kernel in [AttentionKernel::Fused, AttentionKernel::TensorOps] {
                    let [q, k, v] = views();
                    let out = blocked_attention(q, k, v, mask.clone(), spans.clone(), kernel);
                    let grads = loss(out.clone()).backward();
                    let e = max_rel_err(out.inner(), plain.clone().inner());
                    assert!(e <= 1e-5, "{kernel:?} {spans:?}: values {e}");
                    for (name, t) in [("q", &q_leaf), ("k", &k_leaf), ("v", &v_leaf)] {
                        let e = max_rel_err(t.grad(&grads).unwrap(), t.grad(&plain_grads).unwrap());
                        assert!(e <= 1e-5, "{kernel:?} {spans:?}: ∂{name} {e}");
                    }
                    // Without autodiff (decoding, evaluation) it is the same forward.
                    let [q, k, v] = views().map(|t| t.inner());
                    let out =
                        blocked_attention(q, k, v, mask.clone().inner(), spans.clone(), kernel);
                    assert!(max_rel_err(out, plain.clone().inner()) <= 1e-5);
                }
            }
        }
    }

    /// Queries after cached keys (as in decoding) with a sliding window of 5, one mask for both
    /// rows; two packed rows with their own masks (two sequences in one, a shared-prompt pair
    /// in the other, padding after both), each with spans of 1, 2, 5 positions and all at once;
    /// causal masks over 150 keys with a head dimension of 80; and 76,800 query rows.
    fn check_against_whole_matrix(device: &Device) {
        let span_lens = [1, 2, 5, 64];
        let (rows, keys) = (13, 17);
        let contiguous = |len| contiguous_mask(keys - rows, rows, Some(5), len);
        let mask = Tensor::from_data(TensorData::new(contiguous(1).0, [1, rows, keys]), device);
        let spans = span_lens.map(|len| contiguous(len).1).to_vec();
        check_masks(device, (2, rows, keys, 8), vec![(mask, spans)]);

        let len = 12;
        let mut packed = PackedRows::new(2, len);
        packed.place(0, 0, 4, (0, 0));
        packed.place(0, 4, 6, (0, 0));
        packed.place(1, 0, 3, (4, 3));
        let mask = Tensor::from_data(
            TensorData::new(packed.mask(None, 1).0, [2, len, len]),
            device,
        );
        let spans = span_lens.map(|n| packed.mask(None, n).1).to_vec();
        check_masks(device, (2, len, len, 8), vec![(mask, spans)]);

        // More keys than a WGSL workgroup takes at once (the online softmax over several chunks)
        // and a head dimension over one component per thread; and one decoding step.
        for (rows, keys) in [(70, 150), (1, 150)] {
            let causal = |len| contiguous_mask(keys - rows, rows, None, len);
            let mask = Tensor::from_data(TensorData::new(causal(1).0, [1, rows, keys]), device);
            let spans = [33, 256].map(|len| causal(len).1).to_vec();
            check_masks(device, (2, rows, keys, 80), vec![(mask, spans)]);
        }

        // 64 · 2 · 3 · 200 = 76,800 query rows: more WGSL workgroups than one grid axis holds.
        let (rows, keys) = (200, 200);
        let causal = |len| contiguous_mask(0, rows, None, len);
        let mask = Tensor::from_data(TensorData::new(causal(1).0, [1, rows, keys]), device);
        check_masks(
            device,
            (64, rows, keys, 8),
            vec![(mask, vec![causal(256).1])],
        );
    }

    crate::device::on_every_backend!(check_against_whole_matrix => blocked_attention_matches_whole_matrix_on_flex, blocked_attention_matches_whole_matrix_on_ndarray, blocked_attention_matches_whole_matrix_on_wgpu);
}
