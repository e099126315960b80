//! Custom operations:
//! - the fused, chunked LM head + log-prob (`log p(target)` per position without ever holding the
//!   whole `[positions, vocab]` logits, forward or backward), with WGSL kernels for the row-wise
//!   part on wgpu and fused CPU kernels on flex;
//! - SwiGLU, the attention softmax and RMSNorm as single operations that keep less for the
//!   backward;
//! - the projections: the matmul by a frozen weight (f32 or stored in half precision) and the LoRA
//!   projection as one op, through `gemm` directly on flex.
//!
//! Other backends (ndarray, and whatever lacks a kernel) run the same operations as plain tensor
//! ops.

pub mod activations;
mod cpu;
mod cpu_matmul;
pub mod linear_logprobs;
pub mod projection;
pub mod rms_norm;
mod wgsl;

pub use activations::{softmax_last, swiglu};
pub use linear_logprobs::linear_logprobs;
pub use projection::{frozen_matmul, lora_matmul};
pub use rms_norm::rms_norm;
