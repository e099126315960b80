//! Walks over the model's parameters with their Hugging Face names: the decoder projections
//! (read-only or mutable), the LoRA factors, and every weight (full fine-tuning). The optimizer,
//! the checkpoints and the PEFT files all key parameters by these names.

use burn::module::Param;
use burn::prelude::*;

use super::block::Block;
use super::causal_lm::CausalLm;
use super::embedding::EmbeddingTable;
use super::linear::{Linear, Weight};
use super::norm::RmsNorm;

/// A trainable parameter of either rank.
pub enum ParamMut<'a> {
    /// A weight matrix or embedding table.
    Matrix(&'a mut Param<Tensor<2>>),
    /// A norm scale or a bias.
    Vector(&'a mut Param<Tensor<1>>),
}

/// The seven projections of decoder block `$layer` with their names inside the block, borrowed
/// with `$($borrow)*` (`&` or `&mut`).
macro_rules! block_projections {
    ($layer:expr, $($borrow:tt)+) => {
        [
            ("self_attn.q_proj", $($borrow)+ $layer.self_attn.q_proj),
            ("self_attn.k_proj", $($borrow)+ $layer.self_attn.k_proj),
            ("self_attn.v_proj", $($borrow)+ $layer.self_attn.v_proj),
            ("self_attn.o_proj", $($borrow)+ $layer.self_attn.o_proj),
            ("mlp.gate_proj", $($borrow)+ $layer.mlp.gate_proj),
            ("mlp.up_proj", $($borrow)+ $layer.mlp.up_proj),
            ("mlp.down_proj", $($borrow)+ $layer.mlp.down_proj),
        ]
    };
}

/// The RMSNorms of decoder block `$layer` that it has, with their names inside the block,
/// borrowed with `$($borrow)*` (`&` or `&mut`).
macro_rules! block_norms {
    ($layer:expr, $($borrow:tt)+) => {{
        let (pre_ff, post_ff) = match $($borrow)+ $layer.feedforward_norms {
            Some(n) => (
                Some($($borrow)+ n.pre_feedforward_layernorm),
                Some($($borrow)+ n.post_feedforward_layernorm),
            ),
            None => (None, None),
        };
        [
            ("input_layernorm", Some($($borrow)+ $layer.input_layernorm)),
            ("post_attention_layernorm", Some($($borrow)+ $layer.post_attention_layernorm)),
            ("pre_feedforward_layernorm", pre_ff),
            ("post_feedforward_layernorm", post_ff),
            ("self_attn.q_norm", ($($borrow)+ $layer.self_attn.q_norm).into_iter().next()),
            ("self_attn.k_norm", ($($borrow)+ $layer.self_attn.k_norm).into_iter().next()),
        ]
        .into_iter()
        .filter_map(|(name, norm)| norm.map(|norm| (name, norm)))
    }};
}

/// A projection's weight and bias. A weight in blocks is never trained (full fine-tuning loads f32).
fn push_linear<'a>(out: &mut Vec<(String, ParamMut<'a>)>, name: &str, linear: &'a mut Linear) {
    if let Weight::Dense(weight) = &mut linear.weight {
        out.push((format!("{name}.weight"), ParamMut::Matrix(weight)));
    }
    if let Some(bias) = linear.bias.as_mut() {
        out.push((format!("{name}.bias"), ParamMut::Vector(bias)));
    }
}

impl Block {
    /// Whether any of the layer's adapters applies dropout while training.
    pub fn has_adapter_dropout(&self) -> bool {
        block_projections!(self, &).iter().any(|(_, linear)| {
            linear
                .lora
                .as_ref()
                .is_some_and(|l| l.dropout > 0.0 && l.enabled)
        })
    }
}

impl CausalLm {
    /// Every projection inside the decoder layers with its Hugging Face module path
    /// (`model.layers.N.self_attn.q_proj`, …), in checkpoint order. The LM head is not included.
    pub fn projections(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, linear) in block_projections!(layer, &) {
                out.push((format!("model.layers.{i}.{name}"), linear));
            }
        }
        out
    }

    /// [`Self::projections`], mutable.
    pub fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::with_capacity(self.layers.len() * 7);
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, linear) in block_projections!(layer, &mut) {
                out.push((format!("model.layers.{i}.{name}"), linear));
            }
        }
        out
    }

    /// The LoRA factors `A` `[d_in, r]` and `B` `[r, d_out]` of every adapter, named
    /// `<module path>.lora_A` / `.lora_B`.
    pub fn lora_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let mut out = Vec::new();
        for (path, linear) in self.projections_mut() {
            if let Some(lora) = linear.lora.as_mut() {
                out.push((format!("{path}.lora_A"), ParamMut::Matrix(&mut lora.a)));
                out.push((format!("{path}.lora_B"), ParamMut::Matrix(&mut lora.b)));
            }
        }
        out
    }

    /// Every weight of the model (embeddings, norms, projections, biases, an untied head) under
    /// its checkpoint name, for full fine-tuning.
    pub fn all_params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let mut out = Vec::new();
        // Embeddings in blocks are never trained (full fine-tuning loads f32).
        if let EmbeddingTable::Dense(table) = &mut self.embed_tokens {
            out.push((
                "model.embed_tokens.weight".to_string(),
                ParamMut::Matrix(table),
            ));
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, norm) in block_norms!(layer, &mut) {
                out.push((
                    format!("{p}.{name}.weight"),
                    ParamMut::Vector(&mut norm.weight),
                ));
            }
            for (name, linear) in block_projections!(layer, &mut) {
                push_linear(&mut out, &format!("{p}.{name}"), linear);
            }
        }
        out.push((
            "model.norm.weight".into(),
            ParamMut::Vector(&mut self.norm.weight),
        ));
        if let Some(head) = self.lm_head.as_mut() {
            push_linear(&mut out, "lm_head", head);
        }
        out
    }

    /// Every RMSNorm with its Hugging Face module path (`model.layers.N.input_layernorm`, …,
    /// `model.norm`).
    pub fn norms(&self) -> Vec<(String, &RmsNorm)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, norm) in block_norms!(layer, &) {
                out.push((format!("model.layers.{i}.{name}"), norm));
            }
        }
        out.push(("model.norm".into(), &self.norm));
        out
    }

    /// An autodiff-free view of the model (shared weights, no graph, no dropout): what
    /// evaluation, the reference pass and generation run on.
    pub fn inference(&self) -> Self {
        self.valid()
    }

    /// The reference model: the inference view with every adapter off.
    pub fn reference(&self) -> Self {
        let mut reference = self.valid();
        super::lora::set_enabled(&mut reference, false);
        reference
    }
}
