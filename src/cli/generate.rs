//! `minordpo generate`: text from a model (and adapter), streamed to stdout.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use crate::device::{self, DeviceChoice};
use crate::generate::sampling::Sampling;
use crate::generate::{GenerateRequest, GenerationDefaults, generate, stop_ids};
use crate::model::CausalLm;
use crate::model::lora;
use crate::model::precision::{self, FrozenPrecision, MatmulPrecision};
use crate::tokenizer::{Message, Tokenizer};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "chat"])))]
pub struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json, …) or GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory to apply on top of the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Raw prompt text, tokenized with the tokenizer's special tokens (e.g. BOS), no template.
    #[arg(long)]
    prompt: Option<String>,
    /// A user message, wrapped in the model's chat template with an assistant turn opened.
    #[arg(long)]
    chat: Option<String>,
    /// A system message placed before `--chat` (needs `--chat`).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate (fewer if EOS comes first).
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy. Default: generation_config.json's when it samples,
    /// else greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1 = off).
    #[arg(long)]
    top_p: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long)]
    top_k: Option<usize>,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Storage of the base weights, as `train`'s `frozen_precision`: auto (a bf16 checkpoint stays
    /// bf16, a Q8_0/Q4_0 GGUF stays in its blocks: lossless, and half the bytes a decoding step
    /// reads), f32, bf16, f16, q8, q4.
    #[arg(long, value_enum, default_value_t = FrozenPrecision::Auto)]
    frozen_precision: FrozenPrecision,
    /// How the frozen projections multiply, as `train`'s `matmul_precision`: auto (bf16 on CPUs
    /// with AVX512-BF16 for bf16 weights; it speeds up the prompt's prefill, while decoding steps
    /// of a few rows multiply in f32 either way), f32, bf16.
    #[arg(long, value_enum, default_value_t = MatmulPrecision::Auto)]
    matmul_precision: MatmulPrecision,
    /// Also print the prompt and generated token ids on stderr (for parity checks).
    #[arg(long)]
    show_token_ids: bool,
}

/// Generates.
pub fn run(choice: DeviceChoice, args: GenerateArgs) -> anyhow::Result<()> {
    let model_dir = crate::hub::model_dir(&args.model)?;
    let selected = device::select(choice)?;
    eprintln!("device: {}", selected.description);
    let started = Instant::now();
    let tokenizer = Tokenizer::load(&model_dir)?;
    let (mut model, storage) =
        CausalLm::load_for_decoding(&model_dir, &selected.device, args.frozen_precision)?;
    if let Some(adapter) = &args.adapter {
        lora::load_peft(&mut model, adapter, &selected.device)?;
    }
    precision::set_matmul_precision(&mut model, args.matmul_precision, &selected.device)?;
    let defaults = GenerationDefaults::load(&model_dir)?;
    eprintln!(
        "model: {} ({} layers, {:.1}M parameters, weights in {}) loaded in {:.1}s",
        model.config.architecture.hf_name(),
        model.config.num_hidden_layers,
        model.config.num_parameters() as f64 / 1e6,
        storage.name(),
        started.elapsed().as_secs_f64()
    );

    let prompt_ids = match (&args.prompt, &args.chat) {
        (Some(prompt), _) => tokenizer.encode(prompt, true)?,
        (None, Some(chat)) => {
            let mut messages = Vec::new();
            if let Some(system) = &args.system {
                messages.push(Message::new("system", system));
            }
            messages.push(Message::new("user", chat));
            let text = tokenizer.apply_chat_template(&messages, true)?;
            tokenizer.encode(&text, false)?
        }
        (None, None) => unreachable!("clap requires --prompt or --chat"),
    };

    let base = defaults.sampling();
    let sampling = Sampling {
        temperature: args.temperature.unwrap_or(base.temperature),
        top_p: args.top_p.unwrap_or(base.top_p),
        top_k: args.top_k.unwrap_or(base.top_k),
    };
    if sampling.temperature < 0.0 || !(0.0..=1.0).contains(&sampling.top_p) || sampling.top_p == 0.0
    {
        anyhow::bail!("--temperature must be ≥ 0 and --top-p in (0, 1]");
    }
    let request = GenerateRequest {
        prompt_ids,
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        stop_ids: stop_ids(&defaults, &model, &tokenizer),
    };

    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let ids = generate(&model, &tokenizer, &request, &selected.device, |piece| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    if stdout.is_terminal() {
        let _ = writeln!(stdout);
    }
    let secs = started.elapsed().as_secs_f64();
    if args.show_token_ids {
        eprintln!("prompt ids: {:?}", request.prompt_ids);
        eprintln!("generated ids: {ids:?}");
    }
    eprintln!(
        "{} prompt + {} new tokens in {:.2}s ({:.1} tokens/s)",
        request.prompt_ids.len(),
        ids.len(),
        secs,
        ids.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}
