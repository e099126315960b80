//! The `minordpo` command line: `devices`, `generate`, `eval`, `merge`, `train` (preference
//! tuning; with no arguments, the built-in task), `sft` and `demo`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use minordpo::config::{TrainConfig, TrainOverrides};
use minordpo::data::read_pairs;
use minordpo::demo::DemoConfig;
use minordpo::device::{self, DeviceChoice};
use minordpo::eval::evaluate;
use minordpo::generate::{GenerateRequest, GenerationDefaults, generate, stop_ids};
use minordpo::lora;
use minordpo::loss::{LossKind, LossParams};
use minordpo::model::CausalLm;
use minordpo::sampling::Sampling;
use minordpo::tokenizer::{Message, Tokenizer};

/// Preference-tune Hugging Face causal LMs with DPO and MinorDPO, on any GPU or the CPU.
#[derive(Parser)]
#[command(name = "minordpo", version, about, long_about = None)]
struct Cli {
    /// Where to run: `auto` picks a real GPU through wgpu when there is one and the CPU
    /// otherwise; `wgpu` accepts any adapter (software ones too); `cpu` (= `flex`) and
    /// `ndarray` are Burn's CPU backends.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    device: DeviceChoice,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu finds (name, type, graphics API) and what `auto` would pick.
    Devices,
    /// Generate text from a Hugging Face model directory, streaming it to stdout.
    Generate(GenerateArgs),
    /// Evaluate a policy (base + adapter) against the base model on preference pairs.
    Eval(EvalArgs),
    /// Fold a LoRA adapter into the base weights and write a Hugging Face model directory.
    Merge(MergeArgs),
    /// Preference-tune a LoRA adapter with DPO, MinorDPO, DPOP, IPO or hinge loss. With no
    /// arguments: MinorDPO on the built-in arithmetic task (configs/default.ron), nothing to
    /// download.
    Train(Box<TrainArgs>),
    /// Supervised fine-tuning (completion-only loss): every weight or LoRA adapters.
    Sft(Box<SftArgs>),
    /// The teaching demo: a tiny model learns arithmetic from scratch, then DPO and MinorDPO are
    /// compared on its own answers at a low and a high learning rate; writes report.md and plots.
    Demo(DemoArgs),
    /// Time full LoRA-DPO training steps on synthetic tokens; prints one JSON line (tokens/s,
    /// median step time, peak memory, GFLOP/s).
    Bench(BenchArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["model", "preset"])))]
struct BenchArgs {
    /// Hugging Face model directory to benchmark.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Random weights with a real model's shape (no download): tiny, smollm2-135m,
    /// qwen2.5-0.5b, llama-3.2-1b.
    #[arg(long)]
    preset: Option<String>,
    /// Pairs per step (each pair is two sequences).
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Tokens per sequence (half prompt, half completion).
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Untimed steps first (autotuning, allocation).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Positions per fused LM-head chunk (0 = the plain path: whole logits).
    #[arg(long, default_value_t = 256)]
    logprob_chunk: usize,
    /// Run the reference forward every step instead of precomputing it once.
    #[arg(long)]
    live_reference: bool,
    /// LoRA rank (adapters on every projection).
    #[arg(long, default_value_t = 16)]
    lora_r: usize,
    /// Storage of the frozen weights: auto (a preset counts as a bf16 checkpoint), f32, bf16, f16.
    #[arg(long, value_enum, default_value = "auto")]
    frozen_precision: minordpo::precision::FrozenPrecision,
}

#[derive(clap::Args)]
struct SftArgs {
    /// RON config file; command-line flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: minordpo::sft::SftOverrides,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Demo config (RON); default: the embedded configs/demo.ron.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory (overrides the config's `output`).
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// Hugging Face model directory of the base model.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory to fold in.
    #[arg(long)]
    adapter: PathBuf,
    /// Directory to write (weights in the base checkpoint's dtype, config and tokenizer files).
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// RON config file (see configs/); command-line flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from the latest checkpoint-N/ in the output directory, or from the one given.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    resume: Option<Option<PathBuf>>,
    #[command(flatten)]
    overrides: TrainOverrides,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Hugging Face model directory of the base (reference) model.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory; the policy is base + adapter (without it, policy = reference).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Preference file: .jsonl, .jsonl.gz or .json (standard or conversational rows).
    #[arg(long)]
    data: PathBuf,
    /// Loss to report.
    #[arg(long, value_enum, default_value = "minor_dpo")]
    loss: LossKind,
    /// β, the strength of the implicit KL constraint.
    #[arg(long, default_value_t = 0.1)]
    beta: f64,
    /// cDPO label smoothing ε (sigmoid loss only).
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// DPOP's λ.
    #[arg(long, default_value_t = 50.0)]
    dpop_lambda: f64,
    /// RPO: weight of the chosen NLL added to the loss.
    #[arg(long, default_value_t = 0.0)]
    sft_weight: f64,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Longest prompt+completion in tokens (longer ones are cut at the end).
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// Write the summary metrics here as JSON.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write one JSON line per kept row, in file order, with the four log-probs and the loss.
    #[arg(long)]
    per_example: Option<PathBuf>,
    /// Storage of the base weights, as `train`'s `frozen_precision`: auto, f32, bf16, f16.
    #[arg(long, value_enum, default_value = "auto")]
    frozen_precision: minordpo::precision::FrozenPrecision,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "chat"])))]
struct GenerateArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json, …).
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
    /// Also print the prompt and generated token ids on stderr (for parity checks).
    #[arg(long)]
    show_token_ids: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => run_devices(),
        Command::Generate(args) => run_generate(cli.device, args),
        Command::Eval(args) => run_eval(cli.device, args),
        Command::Merge(args) => {
            let selected = device::select(DeviceChoice::Cpu);
            selected.map_err(anyhow::Error::from).and_then(|d| {
                lora::merge_to_dir(&args.model, &args.adapter, &args.output, &d.device)?;
                eprintln!("merged model written to {}", args.output.display());
                Ok(())
            })
        }
        Command::Train(args) => run_train(cli.device, *args),
        Command::Sft(args) => run_sft(cli.device, *args),
        Command::Demo(args) => run_demo(cli.device, args),
        Command::Bench(args) => minordpo::bench::bench(&minordpo::bench::BenchSettings {
            model: args.model,
            preset: args.preset,
            device: cli.device,
            batch_size: args.batch_size,
            seq_len: args.seq_len,
            steps: args.steps,
            warmup: args.warmup,
            logprob_chunk: args.logprob_chunk,
            precompute_reference: !args.live_reference,
            frozen_precision: args.frozen_precision,
            lora_r: args.lora_r,
            seed: 0,
        })
        .map(|report| println!("{report}"))
        .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_devices() -> anyhow::Result<()> {
    let adapters = device::list_adapters();
    if adapters.is_empty() {
        println!("no wgpu adapter found (no Vulkan, Metal or DX12 driver)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!(
            "[{i}] {}  type: {}  api: {:?}  driver: {}",
            a.name,
            a.kind(),
            a.backend,
            if a.driver.is_empty() { "?" } else { &a.driver }
        );
    }
    match device::auto_gpu(&adapters) {
        Some(gpu) => println!(
            "auto: wgpu on {} ({}, {:?})",
            gpu.name,
            gpu.kind(),
            gpu.backend
        ),
        None => println!("auto: cpu (flex backend) — no hardware GPU adapter"),
    }
    Ok(())
}

fn run_generate(choice: DeviceChoice, args: GenerateArgs) -> anyhow::Result<()> {
    let selected = device::select(choice)?;
    eprintln!("device: {}", selected.description);
    let started = Instant::now();
    let tokenizer = Tokenizer::load(&args.model)?;
    let mut model = CausalLm::load(&args.model, &selected.device)?;
    if let Some(adapter) = &args.adapter {
        lora::load_peft(&mut model, adapter, &selected.device)?;
    }
    let defaults = GenerationDefaults::load(&args.model)?;
    eprintln!(
        "model: {} ({} layers, {:.1}M parameters) loaded in {:.1}s",
        model.config.architecture.hf_name(),
        model.config.num_hidden_layers,
        model.config.num_parameters() as f64 / 1e6,
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

fn run_eval(choice: DeviceChoice, args: EvalArgs) -> anyhow::Result<()> {
    let selected = device::select(choice)?;
    eprintln!("device: {}", selected.description);
    let tokenizer = Tokenizer::load(&args.model)?;
    let pairs = read_pairs(&args.data, &tokenizer, args.max_length)?;
    let mut model = CausalLm::load(&args.model, &selected.device)?;
    model.logprob_chunk = TrainConfig::default().logprob_chunk;
    let frozen_dtype = args.frozen_precision.resolve(
        &selected.device,
        minordpo::precision::checkpoint_dtype(&args.model),
    )?;
    minordpo::precision::store_frozen_weights(&mut model, frozen_dtype);
    if let Some(adapter) = &args.adapter {
        lora::load_peft(&mut model, adapter, &selected.device)?;
    }
    let params = LossParams {
        kind: args.loss,
        beta: args.beta,
        label_smoothing: args.label_smoothing,
        dpop_lambda: args.dpop_lambda,
        sft_weight: args.sft_weight,
    };
    let stats = evaluate(
        &mut model,
        &pairs,
        &params,
        args.batch_size,
        minordpo::train::pad_id(&tokenizer),
        &selected.device,
    );
    let mut summary: serde_json::Map<String, serde_json::Value> = stats
        .summary()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    summary.insert("num_examples".into(), serde_json::json!(stats.len()));
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.per_example {
        let mut lines = String::new();
        for (i, pair) in pairs.iter().enumerate() {
            let row = serde_json::json!({
                "line": pair.line,
                "policy_chosen_logps": stats.policy_chosen[i],
                "policy_rejected_logps": stats.policy_rejected[i],
                "reference_chosen_logps": stats.reference_chosen[i],
                "reference_rejected_logps": stats.reference_rejected[i],
                "loss": stats.loss[i],
            });
            lines.push_str(&format!("{row}\n"));
        }
        std::fs::write(path, lines).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn run_train(choice: DeviceChoice, args: TrainArgs) -> anyhow::Result<()> {
    let bare = args.overrides.model.is_none() && args.overrides.data.is_none();
    let mut config = match &args.config {
        Some(path) => TrainConfig::from_ron_file(path)?,
        None if bare => {
            eprintln!(
                "no --config, --model or --data: running configs/default.ron (the built-in task)"
            );
            TrainConfig::embedded_default()
        }
        None => TrainConfig::default(),
    };
    // The global --device flag counts as an override only when given explicitly.
    if choice != DeviceChoice::Auto {
        config.device = choice;
    }
    args.overrides.apply(&mut config);
    let demo = if config.builtin_task {
        Some(minordpo::demo::builtin::fill_in(&mut config)?)
    } else {
        None
    };
    eprintln!("config:\n{}", config.to_ron());
    let resume = args.resume.map(|dir| match dir {
        Some(dir) => minordpo::train::Resume::From(dir),
        None => minordpo::train::Resume::Latest,
    });
    let summary = minordpo::train::train(&config, resume)?;
    let adapter = summary.output.join("adapter");
    eprintln!(
        "done: {} steps; adapter in {}, metrics in {}",
        summary.steps,
        adapter.display(),
        summary.output.join("metrics.jsonl").display()
    );
    if let Some(demo) = &demo {
        let summary = minordpo::demo::builtin::closing_summary(&config, demo, &summary.output)?;
        println!("{summary}");
    }
    Ok(())
}

fn run_sft(choice: DeviceChoice, args: SftArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => minordpo::config::read_ron(path)?,
        None => minordpo::sft::SftConfig::default(),
    };
    if choice != DeviceChoice::Auto {
        config.device = choice;
    }
    args.overrides.apply(&mut config);
    eprintln!("config:\n{}", minordpo::config::to_ron(&config));
    let summary = minordpo::sft::sft(&config)?;
    eprintln!(
        "done: {} steps; result in {}, metrics in {}",
        summary.steps,
        summary.result.display(),
        config.output.join("metrics.jsonl").display()
    );
    Ok(())
}

fn run_demo(choice: DeviceChoice, args: DemoArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => minordpo::config::read_ron(path)?,
        None => DemoConfig::embedded(),
    };
    if let Some(output) = args.output {
        config.output = output;
    }
    let (report, table) = minordpo::demo::run_demo(&config, choice)?;
    println!("{table}");
    println!("report: {} (plots beside it)", report.display());
    Ok(())
}
