//! Custom operations, one folder or file per op:
//! - `attention/`: memory-efficient attention (the backward keeps `q`, `k`, `v`, not the
//!   probabilities, and recomputes them a span of query rows at a time): fused CPU kernels on flex
//!   (`cpu.rs`), FlashAttention-2-style WGSL kernels on wgpu (`wgsl.rs`), tensor ops elsewhere;
//! - `logprobs/`: the fused, chunked LM head + log-prob (`log p(target)` per position without ever
//!   holding the whole `[positions, vocab]` logits, forward or backward): a shared chunked driver
//!   (`rows`), WGSL kernels for the row-wise part on wgpu (`wgsl_rows`, sources in `shaders/`) and
//!   fused CPU kernels on flex (`cpu_rows`);
//! - `projection/`: the matmul by a frozen weight (f32, stored in half precision, or in llama.cpp's
//!   Q8_0/Q4_0 blocks) and the LoRA projection as one op, through `gemm` directly on flex
//!   (`projection/gemm.rs`; blocks widened a tile at a time, `projection/blocks_cpu.rs`) and with a
//!   WGSL kernel widening blocks on wgpu;
//! - `activations.rs`: SwiGLU and the attention softmax, `rms_norm.rs`: RMSNorm with a frozen
//!   weight, as single operations that keep less for the backward; `rope.rs`: the rotary embedding
//!   as one pass (seven ops before);
//! - `argmax.rs`: each row's largest value's index (greedy decoding, token accuracy), a WGSL kernel
//!   on wgpu, where CubeCL's reduction gets vocabulary-long rows wrong;
//! - `checkpoint.rs`: activation checkpointing (a decoder layer run again in the backward from
//!   its kept input, through a nested backward on a graph of its own);
//! - `self_check.rs`: `minordpo devices --check`, the vocabulary-wide kernels on a device against
//!   the host;
//! - `cpu.rs`: the vectorised, multi-threaded CPU loops those ops share on flex;
//! - `autodiff.rs`: the backward plumbing every op shares (one `Backward` for all of them);
//! - `wgsl.rs`: what the hand-written WGSL kernels share (their source template and u32
//!   arguments).
//!
//! Other backends (ndarray, and whatever lacks a kernel) run the same operations as plain tensor
//! ops.

pub mod activations;
pub mod argmax;
pub mod attention;
mod autodiff;
pub mod checkpoint;
mod cpu;
pub mod logprobs;
pub mod projection;
pub mod rms_norm;
pub mod rope;
pub mod self_check;
mod wgsl;

pub use activations::{softmax_last, swiglu};
pub use argmax::argmax_rows;
pub use attention::blocked_attention;
pub use logprobs::linear_logprobs;
pub use projection::{frozen_matmul, lora_matmul};
pub use rms_norm::rms_norm;
pub use rope::rope;

/// The `(start, end)` ranges of `rows` rows taken `chunk` at a time (at least one per chunk): the
/// chunks of the log-prob op and the query blocks of attention.
pub(crate) fn chunk_ranges(rows: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..rows)
        .step_by(chunk)
        .map(move |start| (start, (start + chunk).min(rows)))
}

/// The largest elementwise difference between `actual` and `expected`, relative to the largest
/// magnitude in `expected`: the kernel tests' measure against plain tensor ops.
#[cfg(test)]
pub(crate) fn max_rel_err<const D: usize>(
    actual: burn::prelude::Tensor<D>,
    expected: burn::prelude::Tensor<D>,
) -> f32 {
    // On the host: Burn's full reductions on wgpu can miss the far part of a tensor with long rows
    // (`argmax.rs`), which would hide an error there.
    assert_eq!(actual.dims(), expected.dims());
    let host = |t: burn::prelude::Tensor<D>| -> Vec<f64> {
        t.into_data().convert::<f64>().try_into_vec().unwrap()
    };
    let (actual, expected) = (host(actual), host(expected));
    // A NaN on either side makes the error NaN, which fails every tolerance.
    let scale = expected
        .iter()
        .map(|e| e.abs())
        .fold(0.0, self_check::worse);
    self_check::max_relative_error(&actual, &expected, scale.max(1e-6)) as f32
}
