//! `train` on the built-in task (`model`/`data: "builtin:arithmetic"`, what `configs/default.ron`
//! sets): the `train` command swaps them for the demo's base model and on-policy pairs (built and
//! cached when missing) before training, and after it scores the adapter and prints the next
//! steps. Training itself never sees the demo.

use std::path::Path;

use super::{DemoConfig, eval_problems, prepare, solve};
use crate::device;
use crate::dpo::config::TrainConfig;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The prefix of a `model` / `data` value that names the built-in task.
pub const PREFIX: &str = "builtin:";

/// The demo config the `builtin:…` value of config field `field` names: `builtin:arithmetic` the
/// embedded `configs/demo.ron`, `builtin:FILE.ron` that file; `None` for any other value.
fn named_demo(field: &str, value: &Path) -> Option<Result<DemoConfig>> {
    let rest = value.to_str()?.strip_prefix(PREFIX)?;
    Some(if rest == "arithmetic" {
        Ok(DemoConfig::embedded())
    } else if rest.ends_with(".ron") {
        crate::io::read_ron(Path::new(rest))
    } else {
        Err(Error::Invalid(format!(
            "config field `{field}`: `{PREFIX}{rest}` names no built-in task; use \
             `{PREFIX}arithmetic` or `{PREFIX}DEMO_CONFIG.ron`"
        )))
    })
}

/// Replaces a `builtin:…` `model` or `data` with the demo's base model or on-policy pairs
/// (built and cached when missing); returns the demo config, or `None` when neither names the
/// built-in task.
pub fn fill_in(config: &mut TrainConfig) -> Result<Option<DemoConfig>> {
    let model = named_demo("model", &config.model).transpose()?;
    let data = named_demo("data", &config.data).transpose()?;
    let Some(demo) = model.clone().or_else(|| data.clone()) else {
        return Ok(None);
    };
    let prepared = prepare(&demo, config.device)?;
    if model.is_some() {
        config.model = prepared.base;
    }
    if data.is_some() {
        config.data = prepared.pairs;
    }
    Ok(Some(demo))
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
