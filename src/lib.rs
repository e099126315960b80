//! minordpo: preference tuning (DPO, MinorDPO) of Hugging Face causal LMs on Burn, portable across
//! wgpu GPUs (Vulkan, Metal, DX12) and the CPU.
//!
//! The folders follow the stages of a run (docs/architecture.md is the map): `io` (atomic writes,
//! RON, hashes, rng) · `tokenizer` · `data` (reading and batching rows) · `model` (layers,
//! weights, LoRA/PEFT, precision) · `hub` (Hub model ids and the cache) · `kernels` (custom ops) ·
//! `generate` · `train` (the loop every
//! trainer shares) · `dpo` and `sft` (their objectives) · `demo` (the teaching pipeline) · `cli`.
//!
//! The library is usable without the CLI: load a model with [`model::CausalLm::load`], a tokenizer
//! with [`tokenizer::Tokenizer::load`], pick a device with [`device::select`], and generate with
//! [`generate::generate`].

pub mod cli;
pub mod data;
pub mod demo;
pub mod device;
pub mod dpo;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod hub;
pub mod io;
pub mod kernels;
pub mod model;
pub mod plot;
pub mod sft;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};

/// The library's own tests run on the binary's allocator.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: io::ProcessAllocator = io::ProcessAllocator;
