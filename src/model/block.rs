//! One pre-norm decoder layer: `h = x + attn(norm(x)); out = h + mlp(norm(h))`.

use burn::prelude::*;

use super::attention::{Attention, LayerCache, Positions};
use super::mlp::Mlp;
use super::norm::RmsNorm;

/// A transformer block of the Llama family.
#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

impl Block {
    /// `[batch, seq, hidden]` at positions `at` (with the layer's K/V cache `kv`) →
    /// `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, at: &Positions, kv: Option<&mut LayerCache>) -> Tensor<3> {
        let normed = self.input_layernorm.forward(x.clone());
        let attn = self.self_attn.forward(normed, at, kv);
        let h = x + attn;
        let mlp = self
            .mlp
            .forward(self.post_attention_layernorm.forward(h.clone()));
        h + mlp
    }
}
