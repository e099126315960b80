//! `minordpo merge`: fold an adapter into the base weights.

use std::path::PathBuf;

use crate::device::{self, DeviceChoice};
use crate::model::lora;

#[derive(clap::Args)]
pub struct MergeArgs {
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

/// Merges on the CPU (exact f32 arithmetic, then the base checkpoint's dtype).
pub fn run(args: MergeArgs) -> anyhow::Result<()> {
    let selected = device::select(DeviceChoice::Cpu)?;
    let model = crate::hub::model_dir(&args.model)?;
    lora::merge_to_dir(&model, &args.adapter, &args.output, &selected.device)?;
    eprintln!("merged model written to {}", args.output.display());
    Ok(())
}
