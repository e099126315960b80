//! Custom operations:
//! - the fused, chunked LM head + log-prob (`log p(target)` per position without ever holding the
//!   whole `[positions, vocab]` logits, forward or backward), with WGSL kernels for the row-wise
//!   part on wgpu and fused CPU kernels on flex;
//! - SwiGLU and the attention softmax as single operations that keep less for the backward;
//! - the matmul by a frozen weight stored in half precision.
//!
//! Other backends (ndarray, and whatever lacks a kernel) run the same operations as plain tensor
//! ops.

pub mod activations;
mod cpu;
pub mod half_weight;
pub mod linear_logprobs;
mod wgsl;

pub use activations::{softmax_last, swiglu};
pub use half_weight::half_weight_matmul;
pub use linear_logprobs::linear_logprobs;
