//! Grouped-query self-attention with Hugging Face RoPE, optional q/k/v/o biases, optional
//! per-head q/k RMSNorm (Qwen3), and a key/value cache for generation.
//!
//! GQA without copying K/V: the `g = heads / kv_heads` query heads that share one K/V head are
//! folded into the sequence axis (`[batch, kv_heads, g·seq, head_dim]`), so one batched matmul per
//! K/V head serves the whole group. The softmax and the product with V are
//! `kernels::blocked_attention` (the backward keeps no `[g·seq, keys]` probabilities) unless the
//! pass asks for the whole probability matrix (`attention_block` 0).

use std::ops::Range;

use burn::prelude::*;

use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::kernels::{blocked_attention, softmax_last};

/// Keys and values seen so far by one layer, each `[batch, kv_heads, past, head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    pub kv: Option<(Tensor<4>, Tensor<4>)>,
}

/// What the layers of one kind share in one forward pass: the rotary tables of its positions,
/// `cos`/`sin` `[1, 1, seq, head_dim]`, the additive causal mask `[g·seq, past + seq]` (0
/// where allowed, a large negative where not) and the query rows per attention block (0: the
/// whole probability matrix at once, kept for the backward).
pub struct Positions {
    pub cos: Tensor<4>,
    pub sin: Tensor<4>,
    pub mask: Tensor<2>,
    pub attention_block: usize,
}

impl Positions {
    /// The tables of `rope` for the new positions `new` (those before `new.start` are cached) and
    /// their causal mask with `group` query heads per K/V head, limited to the last `window`
    /// positions when given; attention in blocks of `attention_block` query rows.
    pub fn new(
        rope: &Rope,
        new: Range<usize>,
        (group, window): (usize, Option<usize>),
        attention_block: usize,
        device: &Device,
    ) -> Self {
        let (cos, sin) = rope.tables(new.start, new.len(), device);
        let mask = causal_mask(new, group, window, device);
        Self {
            cos,
            sin,
            mask,
            attention_block,
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
            Some(cache) => {
                let (k, v) = match cache.kv.take() {
                    Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
                    None => (k, v),
                };
                cache.kv = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let total = k.dims()[2];

        // Fold each group's query heads into the sequence axis: [batch, kvh, g·seq, hd].
        // The scale goes on q [.., g·seq, hd] rather than on the scores [.., g·seq, total]: fewer
        // elements whenever total > hd, forward and backward.
        let q = q.reshape([batch, kvh, group * seq, hd]) * self.scale;
        // [batch, kvh, g·seq, hd]
        let out = match at.attention_block {
            0 => {
                // [batch, kvh, g·seq, total]
                let scores = q.matmul(k.swap_dims(2, 3))
                    + at.mask.clone().reshape([1, 1, group * seq, total]);
                softmax_last(scores).matmul(v)
            }
            block => blocked_attention(q, k, v, at.mask.clone(), block),
        };
        let out = out
            .reshape([batch, h, seq, hd])
            .swap_dims(1, 2)
            .reshape([batch, seq, h * hd]);
        self.o_proj.forward(out)
    }
}

/// Additive causal mask `[group·seq, past + seq]` for the `seq` new queries `past..past + seq`
/// after `past` cached keys: query `i` (at position `past + i`) sees key `j` when `j ≤ past + i`
/// and, with a window, `past + i − j < window`.
fn causal_mask(
    new: Range<usize>,
    group: usize,
    window: Option<usize>,
    device: &Device,
) -> Tensor<2> {
    const MASKED: f32 = -1e30;
    let (past, seq) = (new.start, new.len());
    let total = past + seq;
    let window = window.unwrap_or(usize::MAX);
    let mut rows = Vec::with_capacity(group * seq * total);
    for _ in 0..group {
        for i in 0..seq {
            let visible = |j: usize| j <= past + i && past + i - j < window;
            rows.extend((0..total).map(|j| if visible(j) { 0.0 } else { MASKED }));
        }
    }
    Tensor::from_data(TensorData::new(rows, [group * seq, total]), device)
}
