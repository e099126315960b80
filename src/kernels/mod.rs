//! Custom operations: the fused, chunked LM head + log-prob (`log p(target)` per position without
//! ever holding the whole `[positions, vocab]` logits, forward or backward), with a WGSL kernel for
//! the row-wise part on wgpu and plain tensor operations on the CPU backends.

pub mod linear_logprobs;
mod wgsl;

pub use linear_logprobs::linear_logprobs;
