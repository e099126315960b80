//! `minordpo demo`: the teaching experiment, ending in report.md and SVG plots.

use std::path::PathBuf;

use crate::demo::DemoConfig;
use crate::device::DeviceChoice;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Demo config (RON); default: the embedded configs/demo.ron.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory (overrides the config's `output`).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// Runs the demo.
pub fn run(choice: DeviceChoice, args: DemoArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => crate::io::read_ron(path)?,
        None => DemoConfig::embedded(),
    };
    if let Some(output) = args.output {
        config.output = output;
    }
    let (report, table) = crate::demo::run_demo(&config, choice)?;
    println!("{table}");
    println!("report: {} (plots beside it)", report.display());
    Ok(())
}
