//! Grouped-query self-attention with Hugging Face RoPE, optional q/k/v/o biases, optional
//! per-head q/k RMSNorm (Qwen3), and a key/value cache for generation.
//!
//! GQA without copying K/V: the `g = heads / kv_heads` query heads that share one K/V head are
//! folded into the sequence axis (`[batch, kv_heads, g·seq, head_dim]`), so one batched matmul per
//! K/V head serves the whole group. The softmax and the product with V are
//! `kernels::blocked_attention` (the backward keeps no `[g·seq, keys]` probabilities, and no span
//! of queries meets keys it cannot see) unless the pass asks for the whole probability matrix
//! (`attention_block` 0). Positions and masks come from `model::layout`: one sequence per row, or
//! packed rows of several segments (prefix-shared pairs among them).

use std::ops::Range;

use burn::prelude::*;

use super::kv_cache::LayerCache;
use super::layout::{PackedRows, contiguous_mask};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::kernels::attention::{AttentionKernel, Span};
use crate::kernels::{blocked_attention, softmax_last};

/// What the layers of one kind share in one forward pass (see `model::layout`): the rotary
/// tables of its positions, `cos`/`sin` `[1 or batch, 1, seq, head_dim]`, the additive mask
/// `[1 or batch, seq, past + seq]` (0 where allowed, a large negative where not), the query spans
/// of the blocked attention, whether to use it (`blocked` false: the whole probability matrix
/// at once, kept for the backward) and which implementation runs it.
#[derive(Debug, Clone)]
pub struct Positions {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    pub mask: Tensor<3>,
    pub spans: Vec<Span>,
    pub blocked: bool,
    pub kernel: AttentionKernel,
}

/// The window of a layer kind (`None`: full attention), the attention block (query rows per
/// span, `group` query heads per K/V head counted in; 0 = plain attention) and the kernel choice.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub window: Option<usize>,
    pub group: usize,
    pub block: usize,
    pub kernel: AttentionKernel,
}

impl AttentionShape {
    /// Query positions per span: `block` rows hold `block / group` positions of every head.
    fn span_len(&self) -> usize {
        (self.block / self.group).max(1)
    }
}

impl Positions {
    /// The tables of `rope` for the new positions `new` of every row (those before `new.start`
    /// are cached) and their causal mask.
    pub fn new(rope: &Rope, new: Range<usize>, shape: AttentionShape, device: &Device) -> Self {
        let tables = rope.tables(new.start, new.len(), device);
        let mask = contiguous_mask(new.start, new.len(), shape.window, shape.span_len());
        Self::from_parts(tables, (mask, [1, new.len(), new.end]), shape, device)
    }

    /// The tables and masks of packed rows (each row with its own).
    pub fn packed(rope: &Rope, rows: &PackedRows, shape: AttentionShape, device: &Device) -> Self {
        let [batch, seq] = rows.dims();
        let tables = rope.tables_at(&rows.positions(), [batch, seq], device);
        let mask = rows.mask(shape.window, shape.span_len());
        Self::from_parts(tables, (mask, [batch, seq, seq]), shape, device)
    }

    /// The rotary tables, the mask's values and spans with its dims, and the attention shape.
    fn from_parts(
        (cos, sin): (Tensor<4>, Tensor<4>),
        ((mask, spans), dims): ((Vec<f32>, Vec<Span>), [usize; 3]),
        shape: AttentionShape,
        device: &Device,
    ) -> Self {
        Self {
            cos,
            sin,
            mask: Tensor::from_data(TensorData::new(mask, dims), device),
            spans,
            blocked: shape.block > 0,
            kernel: shape.kernel,
        }
    }
}

/// One attention layer.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// The scale of the scores (`1/√head_dim`, or Gemma's `query_pre_attn_scalar^-1/2`).
    pub scale: f64,
}

impl Attention {
    /// `x` `[batch, seq, hidden]` at positions `at`, extending the K/V cache `kv` when given →
    /// `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, at: &Positions, kv: Option<&mut LayerCache>) -> Tensor<3> {
        let [batch, seq, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let group = h / kvh;

        // [batch, seq, heads·hd] → [batch, seq, heads, hd]
        let q = self.q_proj.forward(x.clone()).reshape([batch, seq, h, hd]);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([batch, seq, kvh, hd]);
        let v = self.v_proj.forward(x).reshape([batch, seq, kvh, hd]);
        let (q, k) = match (&self.q_norm, &self.k_norm) {
            (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
            _ => (q, k),
        };
        // → [batch, heads, seq, hd]
        let (cos, sin) = (&at.cos, &at.sin);
        let q = Rope::apply(q.swap_dims(1, 2), cos, sin);
        let k = Rope::apply(k.swap_dims(1, 2), cos, sin);
        let v = v.swap_dims(1, 2);

        let (k, v) = match kv {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let total = k.dims()[2];

        // Fold each group's query heads into the sequence axis: [batch, kvh, g·seq, hd].
        // The scale goes on q [.., g·seq, hd] rather than on the scores [.., g·seq, total]: fewer
        // elements whenever total > hd, forward and backward.
        let q = q.reshape([batch, kvh, group * seq, hd]) * self.scale;
        // [batch, kvh, g·seq, hd]
        let out = if at.blocked {
            blocked_attention(q, k, v, at.mask.clone(), at.spans.clone(), at.kernel)
        } else {
            let [mask_rows, _, _] = at.mask.dims();
            // [batch, kvh, g, seq, total]
            let scores = q
                .matmul(k.swap_dims(2, 3))
                .reshape([batch, kvh, group, seq, total])
                + at.mask.clone().reshape([mask_rows, 1, 1, seq, total]);
            softmax_last(scores.reshape([batch, kvh, group * seq, total])).matmul(v)
        };
        let out = out
            .reshape([batch, h, seq, hd])
            .swap_dims(1, 2)
            .reshape([batch, seq, h * hd]);
        self.o_proj.forward(out)
    }
}
