//! `minordpo bench`: full LoRA-DPO training steps — the training loop's own optimizer step
//! (`train::optimizer_step` over `DpoObjective`: policy forward + backward, the reference forward
//! unless precomputed, clipping, AdamW) on synthetic tokens, on a real model or on random weights
//! with a real model's shape (no download), reported as one JSON line: tokens/s, median step
//! time, peak memory and achieved GFLOP/s (formula in docs/performance.md).

use std::path::PathBuf;
use std::time::Instant;

use crate::data::{PairLayout, TokenizedPair, bucketed_len, make_batch};
use crate::device::{self, DeviceChoice};
use crate::dpo::DpoObjective;
use crate::dpo::config::TrainConfig;
use crate::dpo::eval::PairScoring;
use crate::dpo::loss::LossKind;
use crate::dpo::metrics::host_values;
use crate::dpo::step::reference_logps;
use crate::error::{Error, Result};
use crate::io::Rng;
use crate::kernels::attention::AttentionKernel;
use crate::model::ModelConfig;
use crate::model::lora::{self, LoraSettings};
use crate::model::precision::{self, FrozenPrecision, MatmulPrecision};
use crate::model::preset;
use crate::train::memory::PeakMemory;
use crate::train::optim::{AdamW, Trained};
use crate::train::window::StepWindow;
use crate::train::{Update, optimizer_step};

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// A Hugging Face model directory, or else…
    pub model: Option<PathBuf>,
    /// …a preset shape with random weights.
    pub preset: Option<String>,
    pub device: DeviceChoice,
    /// Pairs per step (each pair is two sequences).
    pub batch_size: usize,
    /// Tokens per sequence: `prompt_len` of prompt, the rest completion.
    pub seq_len: usize,
    /// Prompt tokens per sequence (`None`: half of `seq_len`).
    pub prompt_len: Option<usize>,
    /// Timed steps (after `warmup` untimed ones).
    pub steps: usize,
    pub warmup: usize,
    /// Positions per log-prob chunk (0 = the plain path, whole logits at once).
    pub logprob_chunk: usize,
    /// Query rows per attention block (0 = plain attention, the whole probabilities kept).
    pub attention_block: usize,
    /// What runs the blocked attention.
    pub attention_kernel: AttentionKernel,
    /// How the pairs are laid out in rows (shared prompts, packing).
    pub layout: PairLayout,
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// Reference log-probs precomputed once (true) or a reference forward every step.
    pub precompute_reference: bool,
    /// Storage of the frozen weights (presets count as bf16 checkpoints, as the real models ship).
    pub frozen_precision: FrozenPrecision,
    /// How the frozen projections multiply.
    pub matmul_precision: MatmulPrecision,
    pub lora_r: usize,
    pub seed: u64,
}

/// Floating-point operations of one training step (see docs/performance.md): the frozen model's
/// forward `F` (matmuls `2·N·tokens`, attention `4·L·T²·d` per sequence, the LM head over label
/// positions), its backward to the activations (`≈ F`, no weight gradients), plus `F` again for a
/// live reference pass.
pub fn step_flops(
    config: &ModelConfig,
    sequences: usize,
    seq_len: usize,
    label_positions: usize,
    live_reference: bool,
) -> f64 {
    let c = config;
    let (h, hd) = (c.hidden_size as f64, c.head_dim as f64);
    let q = c.num_attention_heads as f64 * hd;
    let kv = c.num_key_value_heads as f64 * hd;
    let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * c.intermediate_size as f64;
    let tokens = (sequences * seq_len) as f64;
    let matmuls = 2.0 * per_layer * c.num_hidden_layers as f64 * tokens;
    let attention =
        4.0 * c.num_hidden_layers as f64 * q * (seq_len as f64).powi(2) * sequences as f64;
    let head = 2.0 * h * c.vocab_size as f64 * (sequences * label_positions) as f64;
    let forward = matmuls + attention + head;
    forward * if live_reference { 3.0 } else { 2.0 }
}

/// The median of `values` (sorted in place; NaN when empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Runs the benchmark and returns its JSON report.
pub fn bench(s: &BenchSettings) -> Result<serde_json::Value> {
    if s.batch_size == 0 || s.seq_len < 4 || s.steps == 0 || s.lora_r == 0 {
        return Err(Error::Invalid(
            "--batch-size ≥ 1, --seq-len ≥ 4, --steps ≥ 1 and --lora-r ≥ 1 are needed".into(),
        ));
    }
    let prompt_len = s.prompt_len.unwrap_or(s.seq_len / 2);
    if prompt_len == 0 || prompt_len + 2 > s.seq_len {
        return Err(Error::Invalid(format!(
            "--prompt-len {prompt_len}: must be ≥ 1 and leave at least 2 completion tokens of --seq-len {}",
            s.seq_len
        )));
    }
    let selected = device::select(s.device)?;
    eprintln!("device: {}", selected.description);
    let device = selected.device.clone().autodiff();
    let mut memory = PeakMemory::new(&selected.device);
    let started = Instant::now();
    let (mut model, frozen_dtype, name) = preset::bench_model(
        s.model.as_ref(),
        s.preset.as_deref(),
        s.seed,
        &device,
        s.frozen_precision,
    )?;
    model.config.check_sequence_length(s.seq_len)?;
    model.attention_block = s.attention_block;
    model.attention_kernel = s.attention_kernel;
    model.gradient_checkpointing = s.gradient_checkpointing;
    let products = precision::set_matmul_precision(&mut model, s.matmul_precision, &device)?;
    let load_seconds = started.elapsed().as_secs_f64();
    let settings = LoraSettings::on_every_projection(s.lora_r, 2.0 * s.lora_r as f64, 0.0);
    lora::attach(&mut model, &settings, s.seed, &device);
    let vocab = model.config.vocab_size as u64;
    let mut rng = Rng::new(s.seed);
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let pairs: Vec<TokenizedPair> = (0..s.batch_size)
        .map(|i| TokenizedPair {
            line: i + 1,
            prompt: tokens(prompt_len),
            chosen: tokens(s.seq_len - prompt_len),
            rejected: tokens(s.seq_len - prompt_len),
        })
        .collect();
    let refs: Vec<&TokenizedPair> = pairs.iter().collect();
    let batch = make_batch(&refs, 0, s.layout, &device);
    // On a GPU the rows are padded to a length bucket: count what actually runs.
    let [rows, row_len] = batch.tokens.dims();
    let seq_len = bucketed_len(s.seq_len, &device);
    model.config.check_sequence_length(seq_len)?;
    let config = TrainConfig {
        loss: LossKind::MinorDpo,
        logprob_chunk: s.logprob_chunk,
        ..TrainConfig::default()
    };
    let scoring = PairScoring {
        params: config.loss_params(),
        batch_size: s.batch_size,
        pad_id: 0,
        logprob_chunk: s.logprob_chunk,
        layout: s.layout,
    };
    let reference = s.precompute_reference.then(|| {
        let (chosen, rejected) = batch.split_rows(reference_logps(&model, &batch, s.logprob_chunk));
        host_values(chosen)
            .into_iter()
            .zip(host_values(rejected))
            .collect()
    });
    // The training loop's objective and optimizer step, on one micro-batch of every pair.
    let mut objective = DpoObjective {
        pairs,
        eval_pairs: Vec::new(),
        reference,
        scoring,
        group_by_length: false,
        device: device.clone(),
    };
    let micro_batches = vec![(0..s.batch_size).collect::<Vec<usize>>()];
    let training = config.training();
    let update = Update {
        trained: Trained::Adapters,
        lr: 1e-4,
        max_grad_norm: training.max_grad_norm,
        adam: &training.adam,
    };
    let mut optimizer = AdamW::default();
    let mut window = StepWindow::new(1);
    let mut times = Vec::with_capacity(s.steps);
    for step in 0..s.warmup + s.steps {
        let t0 = Instant::now();
        optimizer_step(
            &mut model,
            &mut objective,
            &micro_batches,
            &mut optimizer,
            &update,
            &mut window,
        );
        // Wait for the update too, so no work spills into the next step's time.
        window.read(step + 1).map_err(Error::Invalid)?;
        window.take();
        if step >= s.warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
        memory.observe();
        eprintln!(
            "step {}/{}: {:.0} ms",
            step + 1,
            s.warmup + s.steps,
            1e3 * t0.elapsed().as_secs_f64()
        );
    }
    let step_s = median(&mut times.clone());
    let sequences = 2 * s.batch_size;
    let step_tokens = sequences * s.seq_len;
    let label_positions = s.seq_len - prompt_len;
    let flops = step_flops(
        &model.config,
        sequences,
        seq_len,
        label_positions,
        !s.precompute_reference,
    );
    let trainable: usize = model
        .projections()
        .iter()
        .filter_map(|(_, l)| l.lora.as_ref())
        .map(|l| {
            l.a.val().dims().iter().product::<usize>() + l.b.val().dims().iter().product::<usize>()
        })
        .sum();
    Ok(serde_json::json!({
        "model": name,
        "device": selected.description,
        "batch_size": s.batch_size,
        "seq_len": s.seq_len,
        "prompt_len": prompt_len,
        "steps": s.steps,
        "logprob_chunk": s.logprob_chunk,
        "attention_block": s.attention_block,
        "attention_kernel": s.attention_kernel,
        "gradient_checkpointing": s.gradient_checkpointing,
        "share_prompt": s.layout.share_prompt,
        "max_tokens_per_batch": s.layout.max_tokens_per_batch,
        "rows": rows,
        "row_len": row_len,
        "precompute_reference": s.precompute_reference,
        "frozen_precision": frozen_dtype.name(),
        "matmul_precision": products.name(),
        "frozen_weight_bytes": precision::frozen_weight_bytes(&model),
        "projection_weight_bytes": precision::projection_weight_bytes(&model),
        "tokens_per_second": step_tokens as f64 / step_s,
        "step_ms_median": 1e3 * step_s,
        "step_ms": times.iter().map(|t| 1e3 * t).collect::<Vec<_>>(),
        "peak_memory_bytes": memory.bytes(),
        "peak_memory_kind": memory.kind(),
        "parameters": model.config.num_parameters(),
        "trainable_parameters": trainable,
        "gflops_per_step": flops / 1e9,
        "gflops_per_second": flops / 1e9 / step_s,
        "load_seconds": load_seconds,
    }))
}
