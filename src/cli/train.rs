//! `minordpo train`: preference tuning from a RON config and flags; with no arguments the
//! built-in task (configs/default.ron).

use std::path::PathBuf;

use crate::demo::builtin;
use crate::device::DeviceChoice;
use crate::dpo::{TrainConfig, TrainOverrides};
use crate::train::Resume;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// RON config file (see configs/); command-line flags override its fields.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue from the latest checkpoint-N/ in the output directory, or from the one given.
    #[arg(long, num_args = 0..=1, value_name = "DIR")]
    resume: Option<Option<PathBuf>>,
    #[command(flatten)]
    overrides: TrainOverrides,
}

/// Runs the job.
pub fn run(choice: DeviceChoice, args: TrainArgs) -> anyhow::Result<()> {
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
    let task = builtin::fill_in(&mut config)?;
    config.model = crate::hub::model_dir(&config.model)?;
    eprintln!("config:\n{}", config.to_ron());
    let resume = Resume::from_flag(args.resume);
    let Some(task) = task else {
        let summary = crate::dpo::train(&config, resume, None)?;
        eprintln!("done: {summary}");
        return Ok(());
    };
    let summary = task.train(&config, resume)?;
    eprintln!("done: {summary}");
    println!("{}", task.closing_summary(&config, &summary.output)?);
    Ok(())
}
