//! Custom operations: the fused, chunked LM head + log-prob (`log p(target)` per position without
//! ever holding the whole `[positions, vocab]` logits, forward or backward), with a WGSL kernel for
//! the row-wise part on wgpu and plain tensor operations on the CPU backends; and SwiGLU and the
//! attention softmax as single operations that keep less for the backward; and the matmul by a
//! frozen weight stored in half precision.

pub mod activations;
pub mod half_weight;
pub mod linear_logprobs;
mod wgsl;

pub use activations::{softmax_last, swiglu};
pub use half_weight::half_weight_matmul;
pub use linear_logprobs::linear_logprobs;
