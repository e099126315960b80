//! `minordpo bench --decode N`: greedy decoding timed as `generate` and the batched sampler run it
//! ([`generate_batch`]: no autodiff, a KV cache written in place, the token picked on the device),
//! on a real model or a preset's random weights (no download). `rows` prompts of `prompt_len`
//! random tokens decode together, `N` new tokens each: no stop token, so every run decodes exactly
//! `N`. One JSON line: new tokens per second over the whole call, prompt prefill included (as the
//! decoding figures of docs/performance.md), milliseconds per decoding step, peak memory.

use std::path::PathBuf;
use std::time::Instant;

use crate::device::{self, DeviceChoice};
use crate::dpo::bench::median;
use crate::error::{Error, Result};
use crate::generate::batch::{BatchRequest, generate_batch};
use crate::generate::sampling::Sampling;
use crate::io::Rng;
use crate::model::precision::{self, FrozenPrecision, MatmulPrecision};
use crate::model::preset;
use crate::train::memory::PeakMemory;

/// What to decode.
#[derive(Debug, Clone)]
pub struct DecodeBenchSettings {
    /// A Hugging Face model directory, or else…
    pub model: Option<PathBuf>,
    /// …a preset shape with random weights.
    pub preset: Option<String>,
    pub device: DeviceChoice,
    /// Prompts decoded together.
    pub rows: usize,
    pub prompt_len: usize,
    /// New tokens per prompt.
    pub new_tokens: usize,
    /// Timed runs (after `warmup` untimed ones).
    pub steps: usize,
    pub warmup: usize,
    /// Storage of the frozen weights (as `generate --frozen-precision`).
    pub frozen_precision: FrozenPrecision,
    pub matmul_precision: MatmulPrecision,
    pub seed: u64,
}

/// Runs the benchmark: its report as JSON.
pub fn bench_decoding(s: &DecodeBenchSettings) -> Result<serde_json::Value> {
    if s.rows == 0 || s.prompt_len == 0 || s.new_tokens == 0 || s.steps == 0 {
        return Err(Error::Invalid(
            "--decode ≥ 1, --batch-size ≥ 1, --prompt-len ≥ 1 and --steps ≥ 1 are needed".into(),
        ));
    }
    let selected = device::select(s.device)?;
    eprintln!("device: {}", selected.description);
    let device = selected.device.clone();
    let mut memory = PeakMemory::new(&device);
    let started = Instant::now();
    let (mut model, storage, name) = preset::bench_model(
        s.model.as_ref(),
        s.preset.as_deref(),
        s.seed,
        &device,
        s.frozen_precision,
    )?;
    model.narrow_for_decoding(storage);
    model
        .config
        .check_sequence_length(s.prompt_len + s.new_tokens)?;
    let products = precision::set_matmul_precision(&mut model, s.matmul_precision, &device)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let vocab = model.config.vocab_size as u64;
    let mut rng = Rng::new(s.seed);
    let prompts: Vec<Vec<u32>> = (0..s.rows)
        .map(|_| {
            (0..s.prompt_len)
                .map(|_| (rng.next_u64() % vocab) as u32)
                .collect()
        })
        .collect();
    let request = BatchRequest {
        max_new_tokens: s.new_tokens,
        sampling: Sampling::GREEDY,
        seed: s.seed,
        stop_ids: Vec::new(),
        max_batch: s.rows,
    };
    let mut times = Vec::with_capacity(s.steps);
    for run in 0..s.warmup + s.steps {
        let t0 = Instant::now();
        let out = generate_batch(&model, &prompts, &request, &device)?;
        let seconds = t0.elapsed().as_secs_f64();
        if let Some(short) = out.iter().find(|ids| ids.len() != s.new_tokens) {
            return Err(Error::Invalid(format!(
                "decoding stopped after {} of {} tokens",
                short.len(),
                s.new_tokens
            )));
        }
        if run >= s.warmup {
            times.push(seconds);
        }
        memory.observe();
        eprintln!(
            "run {}/{}: {:.0} ms",
            run + 1,
            s.warmup + s.steps,
            1e3 * seconds
        );
    }
    let run_s = median(&mut times.clone());
    Ok(serde_json::json!({
        "mode": "decode",
        "model": name,
        "device": selected.description,
        "batch_size": s.rows,
        "prompt_len": s.prompt_len,
        "new_tokens": s.new_tokens,
        "steps": s.steps,
        "frozen_precision": storage.name(),
        "matmul_precision": products.name(),
        "frozen_weight_bytes": precision::frozen_weight_bytes(&model),
        "tokens_per_second": (s.rows * s.new_tokens) as f64 / run_s,
        "step_ms_median": 1e3 * run_s / s.new_tokens as f64,
        "run_ms": times.iter().map(|t| 1e3 * t).collect::<Vec<_>>(),
        "peak_memory_bytes": memory.bytes(),
        "peak_memory_kind": memory.kind(),
        "parameters": model.config.num_parameters(),
        "load_seconds": load_seconds,
    }))
}
