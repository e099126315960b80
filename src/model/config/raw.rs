//! `config.json` as written. Fields a file may leave out are `Option`s or carry transformers'
//! defaults; the architecture-dependent defaults (Gemma's differ) are applied in `config::from_json`.

use serde::Deserialize;
use serde_json::Value;

/// The raw JSON.
#[derive(Deserialize)]
pub(super) struct RawConfig {
    pub architectures: Option<Vec<String>>,
    pub model_type: Option<String>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rope_parameters: Option<Value>,
    /// Gemma 3's older name for the sliding layers' RoPE base.
    pub rope_local_base_freq: Option<f64>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    pub hidden_act: Option<String>,
    /// Gemma's name for `hidden_act`.
    pub hidden_activation: Option<String>,
    pub sliding_window: Option<usize>,
    pub use_sliding_window: Option<bool>,
    /// Gemma 3: `sliding_attention` or `full_attention` per layer.
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3's older form of `layer_types`: every N-th layer is full.
    pub sliding_window_pattern: Option<usize>,
    /// Gemma: attention scores are scaled by `query_pre_attn_scalar^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub use_bidirectional_attention: Option<bool>,
    pub eos_token_id: Option<Value>,
    pub bos_token_id: Option<Value>,
    pub torch_dtype: Option<String>,
    pub dtype: Option<String>,
}

fn default_eps() -> f64 {
    1e-6
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
