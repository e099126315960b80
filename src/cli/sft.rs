//! `minordpo sft`: supervised fine-tuning from a RON config and flags.

use std::path::PathBuf;

use crate::device::DeviceChoice;
use crate::sft::{SftConfig, SftOverrides};
use crate::train::Resume;

#[derive(clap::Args)]
pub struct SftArgs {
    /// RON config file; command-line flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from the latest checkpoint-N/ in the output directory, or from the one given.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    resume: Option<Option<PathBuf>>,
    #[command(flatten)]
    overrides: SftOverrides,
}

/// Runs the job.
pub fn run(choice: DeviceChoice, args: SftArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => crate::io::read_ron(path)?,
        None => SftConfig::default(),
    };
    if choice != DeviceChoice::Auto {
        config.device = choice;
    }
    args.overrides.apply(&mut config);
    config.model = crate::hub::model_dir(&config.model)?;
    eprintln!("config:\n{}", crate::io::to_ron(&config));
    let summary = crate::sft::sft(&config, Resume::from_flag(args.resume))?;
    eprintln!("done: {summary}");
    Ok(())
}
