//! `minordpo bench`: timed training steps (or, with `--decode N`, greedy decoding), one JSON line.

use std::path::PathBuf;

use crate::device::DeviceChoice;
use crate::dpo::TrainConfig;
use crate::dpo::bench::{BenchSettings, bench};
use crate::generate::bench::{DecodeBenchSettings, bench_decoding};
use crate::kernels::attention::AttentionKernel;
use crate::model::precision::{FrozenPrecision, MatmulPrecision};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["model", "preset"])))]
pub struct BenchArgs {
    /// Hugging Face model directory or GGUF file to benchmark.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Random weights with a real model's shape (no download): tiny, smollm2-135m,
    /// qwen2.5-0.5b, llama-3.2-1b, gemma3-270m.
    #[arg(long)]
    preset: Option<String>,
    /// Time greedy decoding instead of training, as `generate` and the batched sampler run it:
    /// N new tokens for each of --batch-size prompts of --prompt-len random tokens (default 32),
    /// decoded together; --steps timed runs, the prompt's prefill included.
    #[arg(long, value_name = "N", conflicts_with_all = TRAINING_ONLY)]
    decode: Option<usize>,
    /// Pairs per step (each pair is two sequences); with --decode, prompts decoded together.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Tokens per sequence (prompt and completion).
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Prompt tokens per sequence (default: half of --seq-len; with --decode, 32).
    #[arg(long)]
    prompt_len: Option<usize>,
    /// Timed steps (with --decode, timed runs).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed steps first (autotuning, allocation).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Positions per fused LM-head chunk (0 = the plain path: whole logits).
    #[arg(long, default_value_t = TrainConfig::default().logprob_chunk)]
    logprob_chunk: usize,
    /// Query rows per block of memory-efficient attention (0 = plain attention: the whole
    /// probability matrix kept for the backward).
    #[arg(long, default_value_t = TrainConfig::default().attention_block)]
    attention_block: usize,
    /// What runs the blocked attention: auto (the fused kernel on the CPU, the tensor ops on
    /// wgpu), fused (the backend's fused kernel) or tensor-ops.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().attention_kernel)]
    attention_kernel: AttentionKernel,
    /// Each pair as one sequence `[prompt | chosen | rejected]`, its prompt computed once (false:
    /// two padded rows per pair).
    #[arg(long, default_value_t = TrainConfig::default().share_prompt, action = clap::ArgAction::Set)]
    share_prompt: bool,
    /// Pack the sequences into rows of at most this many tokens (0: one row per sequence).
    #[arg(long, default_value_t = TrainConfig::default().max_tokens_per_batch)]
    max_tokens_per_batch: usize,
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Run the reference forward every step instead of precomputing it once.
    #[arg(long)]
    live_reference: bool,
    /// LoRA rank (adapters on every projection).
    #[arg(long, default_value_t = TrainConfig::default().lora_r)]
    lora_r: usize,
    /// Storage of the frozen weights: auto (a preset counts as a bf16 checkpoint), f32, bf16, f16,
    /// q8 or q4 (llama.cpp's Q8_0 / Q4_0 blocks).
    #[arg(long, value_enum, default_value_t = TrainConfig::default().frozen_precision)]
    frozen_precision: FrozenPrecision,
    /// How the frozen projections multiply: auto (bf16 on CPUs with AVX512-BF16 when the weights
    /// are bf16), f32 or bf16.
    #[arg(long, value_enum, default_value_t = TrainConfig::default().matmul_precision)]
    matmul_precision: MatmulPrecision,
}

/// The flags that only training steps use.
const TRAINING_ONLY: [&str; 9] = [
    "seq_len",
    "logprob_chunk",
    "attention_block",
    "attention_kernel",
    "share_prompt",
    "max_tokens_per_batch",
    "gradient_checkpointing",
    "live_reference",
    "lora_r",
];

/// Runs the benchmark and prints its JSON line.
pub fn run(choice: DeviceChoice, args: BenchArgs) -> anyhow::Result<()> {
    let model = args
        .model
        .as_deref()
        .map(crate::hub::model_dir)
        .transpose()?;
    if let Some(new_tokens) = args.decode {
        let report = bench_decoding(&DecodeBenchSettings {
            model,
            preset: args.preset,
            device: choice,
            rows: args.batch_size,
            prompt_len: args.prompt_len.unwrap_or(32),
            new_tokens,
            steps: args.steps,
            warmup: args.warmup,
            frozen_precision: args.frozen_precision,
            matmul_precision: args.matmul_precision,
            seed: 0,
        })?;
        println!("{report}");
        return Ok(());
    }
    let report = bench(&BenchSettings {
        model,
        preset: args.preset,
        device: choice,
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        prompt_len: args.prompt_len,
        steps: args.steps,
        warmup: args.warmup,
        logprob_chunk: args.logprob_chunk,
        attention_block: args.attention_block,
        attention_kernel: args.attention_kernel,
        layout: crate::data::PairLayout {
            share_prompt: args.share_prompt,
            max_tokens_per_batch: args.max_tokens_per_batch,
        },
        gradient_checkpointing: args.gradient_checkpointing,
        precompute_reference: !args.live_reference,
        frozen_precision: args.frozen_precision,
        matmul_precision: args.matmul_precision,
        lora_r: args.lora_r,
        seed: 0,
    })?;
    println!("{report}");
    Ok(())
}
