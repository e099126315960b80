//! `minordpo merge`: fold an adapter into the base weights, writing a Hugging Face directory or,
//! for an output ending in `.gguf`, one GGUF file for llama.cpp, Ollama and LM Studio.

use std::path::PathBuf;

use crate::device::{self, DeviceChoice};
use crate::gguf::write::GgufWeightType;
use crate::model::lora;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// The base model: a Hugging Face model directory, a Hub id, or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// PEFT LoRA adapter directory to fold in.
    #[arg(long)]
    adapter: PathBuf,
    /// What to write: a directory (weights in the base checkpoint's dtype, config and tokenizer
    /// files) or, ending in `.gguf`, one GGUF file.
    #[arg(long)]
    output: PathBuf,
    /// The type of a GGUF output's 2-D weights (norms and biases stay F32).
    #[arg(long, value_enum)]
    gguf_type: Option<GgufWeightType>,
}

/// Merges on the CPU (exact f32 arithmetic, then the output's dtype).
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let selected = device::select(DeviceChoice::Cpu)?;
    let model = crate::hub::model_dir(&args.model)?;
    let to_gguf = args
        .output
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if to_gguf {
        let wtype = args.gguf_type.unwrap_or(GgufWeightType::F16);
        lora::merge_to_gguf(&model, &args.adapter, &args.output, wtype, &selected.device)?;
    } else {
        if args.gguf_type.is_some() {
            anyhow::bail!(
                "--gguf-type applies to a GGUF output; give --output a name ending in .gguf"
            );
        }
        lora::merge_to_dir(&model, &args.adapter, &args.output, &selected.device)?;
    }
    eprintln!("merged model written to {}", args.output.display());
    Ok(())
}
