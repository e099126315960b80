//! `minordpo eval`: a policy (base + adapter) against its reference on preference pairs.

use std::path::PathBuf;

use crate::data::read_pairs;
use crate::device::{self, DeviceChoice};
use crate::dpo::TrainConfig;
use crate::dpo::eval::{PairScoring, evaluate};
use crate::dpo::loss::{LossKind, LossParams};
use crate::model::CausalLm;
use crate::model::lora;
use crate::model::precision::{self, FrozenPrecision, MatmulPrecision};
use crate::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Hugging Face model directory or GGUF file of the base (reference) model.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory; the policy is base + adapter (without it, policy = reference).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Preference file: .jsonl, .jsonl.gz or .json (standard or conversational rows).
    #[arg(long)]
    data: PathBuf,
    /// Loss to report.
    #[arg(long, value_enum, default_value_t = defaults().loss)]
    loss: LossKind,
    /// β, the strength of the implicit KL constraint.
    #[arg(long, default_value_t = defaults().beta)]
    beta: f64,
    /// cDPO label smoothing ε (sigmoid loss only).
    #[arg(long, default_value_t = defaults().label_smoothing)]
    label_smoothing: f64,
    /// DPOP's λ.
    #[arg(long, default_value_t = defaults().dpop_lambda)]
    dpop_lambda: f64,
    /// RPO: weight of the chosen NLL added to the loss.
    #[arg(long, default_value_t = defaults().sft_weight)]
    sft_weight: f64,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = defaults().batch_size)]
    batch_size: usize,
    /// Longest prompt+completion in tokens (longer ones are cut at the end).
    #[arg(long, default_value_t = defaults().max_length)]
    max_length: usize,
    /// Write the summary metrics here as JSON.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write one JSON line per kept row, in file order, with the four log-probs and the loss.
    #[arg(long)]
    per_example: Option<PathBuf>,
    /// Storage of the base weights, as `train`'s `frozen_precision`: auto, f32, bf16, f16, q8, q4.
    #[arg(long, value_enum, default_value_t = defaults().frozen_precision)]
    frozen_precision: FrozenPrecision,
    /// How the frozen projections multiply, as `train`'s `matmul_precision`: auto, f32, bf16.
    #[arg(long, value_enum, default_value_t = defaults().matmul_precision)]
    matmul_precision: MatmulPrecision,
}

/// `train`'s defaults, which `eval`'s flags share.
fn defaults() -> TrainConfig {
    TrainConfig::default()
}

/// Evaluates.
pub fn run(choice: DeviceChoice, args: EvalArgs) -> anyhow::Result<()> {
    let selected = device::select(choice)?;
    eprintln!("device: {}", selected.description);
    let model_dir = crate::hub::model_dir(&args.model)?;
    let tokenizer = Tokenizer::load(&model_dir)?;
    let pairs = read_pairs(&args.data, &tokenizer, args.max_length)?;
    let device = &selected.device;
    let (mut model, _) = CausalLm::load_frozen(&model_dir, device, args.frozen_precision)?;
    precision::set_matmul_precision(&mut model, args.matmul_precision, device)?;
    if let Some(adapter) = &args.adapter {
        lora::load_peft(&mut model, adapter, device)?;
    }
    let settings = PairScoring {
        params: LossParams {
            kind: args.loss,
            beta: args.beta,
            label_smoothing: args.label_smoothing,
            dpop_lambda: args.dpop_lambda,
            sft_weight: args.sft_weight,
        },
        batch_size: args.batch_size,
        pad_id: tokenizer.pad_id(),
        logprob_chunk: defaults().logprob_chunk,
        layout: defaults().pair_layout(),
    };
    let stats = evaluate(&model, &pairs, &settings, device);
    let mut summary: serde_json::Map<String, serde_json::Value> = stats
        .summary()
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    summary.insert("num_examples".into(), serde_json::json!(stats.len()));
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(path) = &args.output {
        crate::io::write_file(path, format!("{text}\n"))?;
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
        crate::io::write_file(path, lines)?;
    }
    Ok(())
}
