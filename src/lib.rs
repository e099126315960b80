//! minordpo: preference tuning (DPO, MinorDPO) of Hugging Face causal LMs on Burn, portable across
//! wgpu GPUs (Vulkan, Metal, DX12) and the CPU.
//!
//! The library is usable without the CLI: load a model with [`model::CausalLm::load`], a tokenizer
//! with [`tokenizer::Tokenizer::load`], pick a device with [`device::select`], and generate with
//! [`generate::generate`].

pub mod batch_generate;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod demo;
pub mod device;
pub mod error;
pub mod eval;
pub mod generate;
pub mod kernels;
pub mod logprobs;
pub mod lora;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod plot;
pub mod precision;
pub mod reference_cache;
pub mod sampling;
pub mod sft;
pub mod steps;
pub mod task;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
