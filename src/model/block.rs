//! One pre-norm decoder layer: `h = x + attn(norm(x)); out = h + mlp(norm(h))`, or Gemma 3's
//! sandwich `h = x + norm(attn(norm(x))); out = h + norm(mlp(norm(h)))`; and the layer at its
//! positions as activation checkpointing runs it again ([`LayerAt`]).

use burn::prelude::*;

use super::attention::{Attention, Positions};
use super::kv_cache::LayerCache;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use crate::kernels::checkpoint::Recompute;

/// A transformer block of the Llama family (Gemma 3 with its feed-forward norms).
#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    /// Llama: the norm of the feed-forward input. Gemma 3: the norm of the attention output.
    pub post_attention_layernorm: RmsNorm,
    /// Gemma 3 only: the norms of the feed-forward input and output.
    pub feedforward_norms: Option<FeedForwardNorms>,
    pub mlp: Mlp,
}

/// Gemma 3's norms around the feed-forward sublayer.
#[derive(Module, Debug)]
pub struct FeedForwardNorms {
    pub pre_feedforward_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
}

impl Block {
    /// `[batch, seq, hidden]` at positions `at` (with the layer's K/V cache `kv`) →
    /// `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>, at: &Positions, kv: Option<&mut LayerCache>) -> Tensor<3> {
        let normed = self.input_layernorm.forward(x.clone());
        let attn = self.self_attn.forward(normed, at, kv);
        match &self.feedforward_norms {
            None => {
                let h = x + attn;
                let mlp_in = self.post_attention_layernorm.forward(h.clone());
                h + self.mlp.forward(mlp_in)
            }
            Some(norms) => {
                let h = x + self.post_attention_layernorm.forward(attn);
                let mlp_in = norms.pre_feedforward_layernorm.forward(h.clone());
                let mlp = self.mlp.forward(mlp_in);
                h + norms.post_feedforward_layernorm.forward(mlp)
            }
        }
    }
}

/// A decoder layer and the positions of one pass: what `kernels::checkpointed` keeps to run the
/// layer again in the backward.
#[derive(Clone, Debug)]
pub struct LayerAt {
    pub layer: Block,
    pub at: Positions,
}

impl Recompute for LayerAt {
    type Module = Block;

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.layer.forward(x, &self.at, None)
    }

    fn module(&self) -> &Block {
        &self.layer
    }

    fn with_module(&self, layer: Block) -> Self {
        Self {
            layer,
            at: self.at.clone(),
        }
    }

    fn draws_random(&self) -> bool {
        self.layer.has_adapter_dropout()
    }
}
