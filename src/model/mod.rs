//! The Hugging Face-compatible decoder: config parsing, weights, layers and the causal LM.

pub mod attention;
pub mod block;
pub mod causal_lm;
pub mod checkpoint;
pub mod config;
pub mod embedding;
pub mod init;
pub mod kv_cache;
pub mod layout;
pub mod linear;
pub mod logprobs;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod params;
pub mod precision;
pub mod preset;
pub mod quantized;
pub mod rope;
pub mod save;

pub use causal_lm::CausalLm;
pub use config::{Architecture, ModelConfig};
pub use kv_cache::KvCache;

/// The files of a model directory besides its weights: what a Hub download fetches and what a
/// written model copies from its source (each when present).
pub const MODEL_FILES: [&str; 6] = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];
