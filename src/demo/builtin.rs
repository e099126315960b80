//! `train` on the built-in task (`builtin_task: true`, what `configs/default.ron` sets): an empty
//! `model`/`data` becomes the demo's base model and on-policy pairs (built and cached when
//! missing), and after training the adapter is scored and the next steps are printed.

use std::path::Path;

use super::{DemoConfig, eval_problems, prepare, solve};
use crate::config::TrainConfig;
use crate::device;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Fills in `model`/`data` from the demo named by `builtin_task_config` (default: the embedded
/// `configs/demo.ron`), building what is missing; returns that demo config.
pub fn fill_in(config: &mut TrainConfig) -> Result<DemoConfig> {
    let demo = match &config.builtin_task_config {
        Some(path) => crate::config::read_ron(path)?,
        None => DemoConfig::embedded(),
    };
    if config.model.as_os_str().is_empty() || config.data.as_os_str().is_empty() {
        let prepared = prepare(&demo, config.device)?;
        if config.model.as_os_str().is_empty() {
            config.model = prepared.base;
        }
        if config.data.as_os_str().is_empty() {
            config.data = prepared.pairs;
        }
    }
    Ok(demo)
}

/// Greedy test accuracy before and after the adapter in `output/adapter`, where everything is,
/// and what to try next.
pub fn closing_summary(config: &TrainConfig, demo: &DemoConfig, output: &Path) -> Result<String> {
    let device = device::select(config.device)?.device;
    let tokenizer = Tokenizer::load(&config.model)?;
    let problems = eval_problems(demo);
    let adapter = output.join("adapter");
    let score = |adapter: Option<&Path>| -> Result<f64> {
        let model = solve::load(&config.model, adapter, &device)?;
        solve::accuracy(
            &model,
            &tokenizer,
            &problems,
            demo.max_answer_tokens,
            &device,
        )
    };
    let (before, after) = (score(None)?, score(Some(&adapter))?);
    let example = problems.first().map_or("", |p| p.question.as_str());
    Ok(format!(
        "greedy accuracy on {} test questions: {:.1}% (base) → {:.1}% (base + adapter)\n\
         outputs: {} (adapter, metrics.jsonl, config.ron); base model: {}; pairs: {}\n\
         try next:\n  \
         cargo run --release -- generate --model {} --adapter {} --chat \"{example}\"\n  \
         cargo run --release -- demo      # DPO vs MinorDPO side by side, report.md + plots\n  \
         cargo run --release -- train --learning-rate 3e-3 --loss sigmoid --output runs/dpo-high-lr",
        problems.len(),
        100.0 * before,
        100.0 * after,
        output.display(),
        config.model.display(),
        config.data.display(),
        config.model.display(),
        adapter.display(),
    ))
}
