//! The decoder's hyper-parameters, read from a Hugging Face `config.json`.
//!
//! One struct covers every supported architecture (Llama, Qwen2, Qwen3, Mistral, Gemma 3); the
//! fields that differ between them (biases, q/k norms, head size, activation, norm layout,
//! embedding and attention scales, sliding-window layers, per-layer-type RoPE) are resolved here
//! so the model code never branches on the architecture name.

mod raw;
mod rope;

use std::path::Path;

use crate::error::{Error, Result};
use raw::RawConfig;
pub(crate) use raw::token_ids;
pub use rope::{RopeScaling, RopeSettings, SUPPORTED_ROPE_SCALING};

/// The `architectures` values this crate can run, as Hugging Face spells them.
pub const SUPPORTED_ARCHITECTURES: [&str; 5] = [
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Gemma3ForCausalLM",
];

/// Model families that change the layer layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama 2/3.x, TinyLlama, SmolLM: optional `attention_bias` and `mlp_bias`.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v projections always carry a bias.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k, no q/k/v bias by default.
    Qwen3,
    /// Mistral: Llama layout; sliding-window attention is only accepted when the window
    /// covers every sequence we run.
    Mistral,
    /// Gemma 3 (text): scaled embeddings, `(1 + w)` norms, four norms per block, q/k norms,
    /// GeGLU, sliding-window and full layers with their own RoPE.
    Gemma3,
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Mistral => "MistralForCausalLM",
            Self::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "LlamaForCausalLM" | "llama" => Self::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Self::Qwen2,
            "Qwen3ForCausalLM" | "qwen3" => Self::Qwen3,
            "MistralForCausalLM" | "mistral" => Self::Mistral,
            "Gemma3ForCausalLM" | "gemma3_text" => Self::Gemma3,
            _ => return None,
        })
    }
}

/// The feed-forward activation of the gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) · up` (SwiGLU).
    Silu,
    /// `gelu_tanh(gate) · up` (GeGLU with transformers' `gelu_pytorch_tanh`).
    GeluTanh,
}

/// How one decoder layer attends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Every earlier position.
    Full,
    /// The last `window` positions, itself included (query `i` sees keys `j` with
    /// `i − window < j ≤ i`, as transformers masks it).
    Sliding { window: usize },
}

/// Everything the decoder needs to know about its shape.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// The RoPE of full-attention layers (of every layer unless `local_rope` is set).
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    /// The RoPE of sliding-window layers when it differs (Gemma 3).
    pub local_rope: Option<RopeSettings>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on gate/up/down projections.
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen3, Gemma 3).
    pub qk_norm: bool,
    pub activation: Activation,
    /// RMSNorm scales are stored as `w` and applied as `offset + w` (Gemma: 1, else 0).
    pub norm_weight_offset: f64,
    /// Embeddings are multiplied by this (Gemma: √hidden).
    pub embed_scale: Option<f64>,
    /// Each sublayer's output is normed before its residual add, and the feed-forward input by a
    /// separate norm (Gemma 3's four norms per block).
    pub sandwich_norms: bool,
    /// Attention scores are `q · k · attention_scale` (1/√head_dim, or Gemma's
    /// `query_pre_attn_scalar^-1/2`).
    pub attention_scale: f64,
    /// How each layer attends.
    pub layer_kinds: Vec<LayerKind>,
    /// A declared sliding window this crate does not mask (Mistral, Qwen): sequences must fit in
    /// it.
    pub sliding_window: Option<usize>,
    /// `eos_token_id` from `config.json` (may list several).
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// `torch_dtype` / `dtype` as written, e.g. `"bfloat16"`.
    pub torch_dtype: Option<String>,
}

/// Gemma 3's `layer_types`: explicit, else every `sliding_window_pattern`-th layer full (6 by
/// default), the others sliding.
fn gemma_layer_kinds(raw: &RawConfig) -> std::result::Result<Vec<LayerKind>, String> {
    let window = raw.sliding_window.unwrap_or(4096);
    let sliding = LayerKind::Sliding { window };
    let kinds: Vec<LayerKind> = match &raw.layer_types {
        Some(types) => types
            .iter()
            .map(|t| match t.as_str() {
                "sliding_attention" => Ok(sliding),
                "full_attention" => Ok(LayerKind::Full),
                other => Err(format!(
                    "unsupported layer type `{other}`; supported: sliding_attention, full_attention"
                )),
            })
            .collect::<std::result::Result<_, _>>()?,
        None => {
            let pattern = raw.sliding_window_pattern.unwrap_or(6).max(1);
            let full = |i: usize| (i + 1).is_multiple_of(pattern);
            let kind = |i| if full(i) { LayerKind::Full } else { sliding };
            (0..raw.num_hidden_layers).map(kind).collect()
        }
    };
    if kinds.len() != raw.num_hidden_layers {
        return Err(format!(
            "{} entries for {} layers",
            kinds.len(),
            raw.num_hidden_layers
        ));
    }
    Ok(kinds)
}

impl ModelConfig {
    /// Reads and validates `DIR/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&text, &path)
    }

    /// Parses a `config.json` text; `path` only names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| Error::json(path, e))?;
        let bad = |field: &str, message: String| Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };

        let arch_name = match (&raw.architectures, &raw.model_type) {
            (Some(list), _) if !list.is_empty() => list[0].clone(),
            (_, Some(model_type)) => model_type.clone(),
            _ => return Err(bad("architectures", "missing (and no `model_type`)".into())),
        };
        let Some(architecture) = Architecture::from_name(&arch_name) else {
            return Err(bad(
                "architectures",
                format!(
                    "unsupported architecture `{arch_name}`; supported: {}",
                    SUPPORTED_ARCHITECTURES.join(", ")
                ),
            ));
        };
        let gemma = architecture == Architecture::Gemma3;
        let default_act = if gemma { "gelu_pytorch_tanh" } else { "silu" };
        let act_field = if gemma {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let act = raw
            .hidden_activation
            .as_deref()
            .or(raw.hidden_act.as_deref());
        let activation = match act.unwrap_or(default_act) {
            "silu" => Activation::Silu,
            "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => {
                return Err(bad(
                    act_field,
                    format!("unsupported activation `{other}`; supported: silu, gelu_pytorch_tanh"),
                ));
            }
        };
        for (field, value) in [
            ("final_logit_softcapping", raw.final_logit_softcapping),
            ("attn_logit_softcapping", raw.attn_logit_softcapping),
        ] {
            if let Some(cap) = value {
                return Err(bad(
                    field,
                    format!("{cap}: logit soft-capping is not supported"),
                ));
            }
        }
        if raw.use_bidirectional_attention == Some(true) {
            return Err(bad(
                "use_bidirectional_attention",
                "bidirectional (embedding) models are not supported".into(),
            ));
        }
        if raw.num_attention_heads == 0 || raw.hidden_size == 0 || raw.num_hidden_layers == 0 {
            return Err(bad(
                "num_attention_heads",
                "hidden_size, num_hidden_layers and num_attention_heads must be positive".into(),
            ));
        }
        let num_key_value_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if num_key_value_heads == 0 || !raw.num_attention_heads.is_multiple_of(num_key_value_heads)
        {
            return Err(bad(
                "num_key_value_heads",
                format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {}",
                    raw.num_attention_heads
                ),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if gemma => 256,
            None if raw.hidden_size.is_multiple_of(raw.num_attention_heads) => {
                raw.hidden_size / raw.num_attention_heads
            }
            None => {
                return Err(bad(
                    "head_dim",
                    "missing, and hidden_size is not a multiple of num_attention_heads".into(),
                ));
            }
        };
        if !head_dim.is_multiple_of(2) {
            return Err(bad("head_dim", format!("{head_dim} must be even for RoPE")));
        }

        let rope_defaults = if gemma {
            (1_000_000.0, Some(10_000.0))
        } else {
            (10_000.0, None)
        };
        let (rope, local_rope) =
            rope::resolve(&raw, rope_defaults).map_err(|m| bad("rope_scaling", m))?;

        let (qkv_bias, qk_norm) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Qwen3 | Architecture::Gemma3 => (raw.attention_bias, true),
            Architecture::Llama | Architecture::Mistral => (raw.attention_bias, false),
        };
        let o_bias = match architecture {
            Architecture::Qwen2 => false,
            _ => raw.attention_bias,
        };
        // Gemma 3 masks its sliding layers; Qwen2/3 only declare a window they use when
        // `use_sliding_window` is true, Mistral whenever one is set (checked, not masked).
        let layer_kinds = if gemma {
            gemma_layer_kinds(&raw).map_err(|m| bad("layer_types", m))?
        } else {
            vec![LayerKind::Full; raw.num_hidden_layers]
        };
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 | Architecture::Qwen3 if raw.use_sliding_window == Some(true) => {
                raw.sliding_window
            }
            _ => None,
        };
        // transformers' class defaults: only Gemma ties by default.
        let tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(gemma);
        let attention_scale = match raw.query_pre_attn_scalar {
            Some(scalar) if gemma => scalar.powf(-0.5),
            None if gemma => 256f64.powf(-0.5),
            _ => (head_dim as f64).powf(-0.5),
        };

        Ok(Self {
            architecture,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps,
            rope_theta: rope.theta,
            rope_scaling: rope.scaling,
            local_rope,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias,
            qk_norm,
            activation,
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
            embed_scale: gemma.then(|| (raw.hidden_size as f64).sqrt()),
            sandwich_norms: gemma,
            attention_scale,
            layer_kinds,
            sliding_window,
            eos_token_ids: token_ids(&raw.eos_token_id),
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            torch_dtype: raw.torch_dtype.or(raw.dtype),
        })
    }

    /// Fails when a sequence of `len` tokens would need a sliding window this crate does not mask.
    pub fn check_sequence_length(&self, len: usize) -> Result<()> {
        match self.sliding_window {
            Some(window) if len > window => Err(Error::Unsupported(format!(
                "sequence of {len} tokens exceeds the model's sliding_window of {window}; \
                 sliding-window attention is not supported"
            ))),
            _ => Ok(()),
        }
    }

    /// Parameter count of the decoder (embeddings counted once when tied).
    pub fn num_parameters(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let attn = h * q + 2 * h * kv + q * h;
        let attn_bias =
            if self.qkv_bias { q + 2 * kv } else { 0 } + if self.o_bias { h } else { 0 };
        let block_norms = if self.sandwich_norms { 4 } else { 2 };
        let norms = block_norms * h + if self.qk_norm { 2 * self.head_dim } else { 0 };
        let mlp_bias = 2 * self.intermediate_size + h;
        let mlp = 3 * h * self.intermediate_size + if self.mlp_bias { mlp_bias } else { 0 };
        let layer = attn + attn_bias + norms + mlp;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + self.num_hidden_layers * layer
    }
}

#[cfg(test)]
mod tests;
