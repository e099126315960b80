//! `minordpo plot RUN_DIR…`: the training curves of several runs in one SVG (one color per run,
//! one panel per quantity), from their `metrics.jsonl`.

use std::path::PathBuf;

use crate::plot::{RunCurves, figure};

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run directories (each holds a metrics.jsonl), e.g. runs/default runs/dpo.
    #[arg(required = true, value_name = "RUN_DIR")]
    runs: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, default_value = "plot.svg")]
    output: PathBuf,
    /// The figure's title (default: the runs' names).
    #[arg(long)]
    title: Option<String>,
}

/// Writes the figure.
pub fn run(args: PlotArgs) -> anyhow::Result<()> {
    let mut runs = args
        .runs
        .iter()
        .map(|dir| RunCurves::load(dir))
        .collect::<crate::Result<Vec<_>>>()?;
    // Runs from different places with the same directory name are told apart by their paths.
    let names: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
    for (run, dir) in runs.iter_mut().zip(&args.runs) {
        if names.iter().filter(|n| **n == run.name).count() > 1 {
            run.name = dir.display().to_string();
        }
    }
    let names: Vec<&str> = runs.iter().map(|r| r.name.as_str()).collect();
    let title = args.title.unwrap_or_else(|| names.join(" vs "));
    crate::io::write_file(&args.output, figure(&title, &runs))?;
    println!("{} ({} runs)", args.output.display(), runs.len());
    Ok(())
}
