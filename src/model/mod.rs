//! The Hugging Face-compatible decoder: config parsing, weights, layers and the causal LM.

pub mod attention;
pub mod block;
pub mod causal_lm;
pub mod checkpoint;
pub mod config;
pub mod init;
pub mod linear;
pub mod logprobs;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod params;
pub mod precision;
pub mod rope;
pub mod save;

pub use causal_lm::{CausalLm, KvCache};
pub use config::{Architecture, ModelConfig};
