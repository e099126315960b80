//! The decoder's hyper-parameters, read from a Hugging Face `config.json`.
//!
//! One struct covers every supported architecture (Llama, Qwen2, Qwen3, Mistral); the fields that
//! differ between them (q/k/v biases, per-head q/k norms, explicit `head_dim`) are resolved here so
//! the model code never branches on the architecture name.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The `architectures` values this crate can run, as Hugging Face spells them.
pub const SUPPORTED_ARCHITECTURES: [&str; 4] = [
    "LlamaForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
];

/// The supported `rope_scaling` types (`null`/`default` means no scaling).
pub const SUPPORTED_ROPE_SCALING: [&str; 3] = ["default", "linear", "llama3"];

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
}

impl Architecture {
    /// The Hugging Face class name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
            Self::Qwen3 => "Qwen3ForCausalLM",
            Self::Mistral => "MistralForCausalLM",
        }
    }
}

/// RoPE frequency scaling (`rope_scaling` in `config.json`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Position interpolation: frequencies divided by `factor`.
    Linear { factor: f64 },
    /// Llama 3.1's piecewise scaling of low frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: f64,
    },
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
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on q, k and v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on gate/up/down projections.
    pub mlp_bias: bool,
    /// Per-head RMSNorm on queries and keys (Qwen3).
    pub qk_norm: bool,
    /// Sliding attention window, if the checkpoint declares one and uses it.
    pub sliding_window: Option<usize>,
    /// `eos_token_id` from `config.json` (may list several).
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// `torch_dtype` / `dtype` as written, e.g. `"bfloat16"`.
    pub torch_dtype: Option<String>,
}

/// The raw JSON, with the defaults transformers applies.
#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    rope_scaling: Option<Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<Value>,
    bos_token_id: Option<Value>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    rope_parameters: Option<Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}

/// Token ids that may be a single integer, a list, or null.
pub(crate) fn token_ids(value: &Option<Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
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
        let architecture = match arch_name.as_str() {
            "LlamaForCausalLM" | "llama" => Architecture::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Architecture::Qwen2,
            "Qwen3ForCausalLM" | "qwen3" => Architecture::Qwen3,
            "MistralForCausalLM" | "mistral" => Architecture::Mistral,
            other => {
                return Err(bad(
                    "architectures",
                    format!(
                        "unsupported architecture `{other}`; supported: {}",
                        SUPPORTED_ARCHITECTURES.join(", ")
                    ),
                ));
            }
        };
        if let Some(act) = raw.hidden_act.as_deref()
            && act != "silu"
        {
            return Err(bad(
                "hidden_act",
                format!("unsupported activation `{act}`; supported: silu"),
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

        // Newer transformers may move `rope_theta`/`rope_scaling` into `rope_parameters`.
        let mut rope_theta = raw.rope_theta;
        let mut scaling_value = raw.rope_scaling.clone();
        if let Some(Value::Object(params)) = &raw.rope_parameters {
            if let Some(theta) = params.get("rope_theta").and_then(Value::as_f64) {
                rope_theta = theta;
            }
            if scaling_value.is_none() {
                scaling_value = Some(Value::Object(params.clone()));
            }
        }
        let rope_scaling = parse_rope_scaling(scaling_value.as_ref(), raw.max_position_embeddings)
            .map_err(|m| bad("rope_scaling", m))?;

        let (qkv_bias, qk_norm) = match architecture {
            Architecture::Qwen2 => (true, false),
            Architecture::Qwen3 => (raw.attention_bias, true),
            Architecture::Llama | Architecture::Mistral => (raw.attention_bias, false),
        };
        let o_bias = match architecture {
            Architecture::Qwen2 => false,
            _ => raw.attention_bias,
        };
        // Qwen2/3 only use the window when `use_sliding_window` is true; Mistral whenever set.
        let sliding_window = match architecture {
            Architecture::Mistral => raw.sliding_window,
            Architecture::Qwen2 | Architecture::Qwen3 if raw.use_sliding_window == Some(true) => {
                raw.sliding_window
            }
            _ => None,
        };
        let tie_word_embeddings = raw.tie_word_embeddings.unwrap_or(match architecture {
            // transformers' class defaults
            Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 => false,
            Architecture::Qwen3 => false,
        });

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
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings,
            tie_word_embeddings,
            qkv_bias,
            o_bias,
            mlp_bias: raw.mlp_bias,
            qk_norm,
            sliding_window,
            eos_token_ids: token_ids(&raw.eos_token_id),
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            torch_dtype: raw.torch_dtype.or(raw.dtype),
        })
    }

    /// Fails when a sequence of `len` tokens would need sliding-window attention.
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
        let norms = 2 * h + if self.qk_norm { 2 * self.head_dim } else { 0 };
        let mlp = 3 * h * self.intermediate_size
            + if self.mlp_bias {
                2 * self.intermediate_size + h
            } else {
                0
            };
        let layer = attn + attn_bias + norms + mlp;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + h + self.num_hidden_layers * layer
    }
}

fn parse_rope_scaling(
    value: Option<&Value>,
    max_position_embeddings: usize,
) -> std::result::Result<RopeScaling, String> {
    let Some(Value::Object(map)) = value else {
        return match value {
            None | Some(Value::Null) => Ok(RopeScaling::None),
            Some(other) => Err(format!("expected an object or null, found {other}")),
        };
    };
    let kind = map
        .get("rope_type")
        .or_else(|| map.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |key: &str| -> std::result::Result<f64, String> {
        map.get(key)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("`{kind}` scaling needs a numeric `{key}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: map
                .get("original_max_position_embeddings")
                .and_then(Value::as_f64)
                .unwrap_or(max_position_embeddings as f64),
        }),
        other => Err(format!(
            "unsupported rope_scaling type `{other}`; supported: {}",
            SUPPORTED_ROPE_SCALING.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(json, Path::new("config.json"))
    }

    const BASE: &str = r#""vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2"#;

    #[test]
    fn unsupported_architecture_names_found_and_supported() {
        let err = parse(&format!(
            r#"{{"architectures": ["GPT2LMHeadModel"], {BASE}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("GPT2LMHeadModel"), "{err}");
        assert!(err.contains("LlamaForCausalLM"), "{err}");
        assert!(err.contains("config.json"), "{err}");
    }

    #[test]
    fn unsupported_rope_scaling_is_an_error() {
        let err = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "rope_scaling": {{"rope_type": "yarn", "factor": 4.0}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("yarn") && err.contains("llama3"), "{err}");
        assert!(err.contains("rope_scaling"), "{err}");
    }

    #[test]
    fn qwen_defaults_and_llama3_scaling() {
        let q2 = parse(&format!(
            r#"{{"architectures": ["Qwen2ForCausalLM"], {BASE}}}"#
        ))
        .unwrap();
        assert!(q2.qkv_bias && !q2.o_bias && !q2.qk_norm);
        assert_eq!(q2.head_dim, 16);
        let q3 = parse(&format!(
            r#"{{"architectures": ["Qwen3ForCausalLM"], {BASE}, "head_dim": 32}}"#
        ))
        .unwrap();
        assert!(q3.qk_norm && !q3.qkv_bias);
        assert_eq!(q3.head_dim, 32);
        let l = parse(&format!(
            r#"{{"architectures": ["LlamaForCausalLM"], {BASE}, "eos_token_id": [1, 2],
            "rope_scaling": {{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}}}"#
        ))
        .unwrap();
        assert_eq!(l.eos_token_ids, vec![1, 2]);
        assert!(matches!(l.rope_scaling, RopeScaling::Llama3 { factor, .. } if factor == 8.0));
    }

    #[test]
    fn mistral_window_checked_against_length() {
        let m = parse(&format!(
            r#"{{"architectures": ["MistralForCausalLM"], {BASE}, "sliding_window": 16}}"#
        ))
        .unwrap();
        assert!(m.check_sequence_length(16).is_ok());
        assert!(m.check_sequence_length(17).is_err());
    }
}
