//! `train` on the built-in task (`model`/`data: "builtin:arithmetic"`, what `configs/default.ron`
//! sets): the `train` command swaps them for the demo's base model and on-policy pairs (built and
//! cached when missing), trains with greedy validation accuracy as `eval_accuracy`, and after it
//! scores the adapter on the test questions and prints the next steps. Training itself never sees
//! the demo.

use std::path::Path;

use super::stats::{accuracy_text, paired_change};
use super::{DemoConfig, Prepared, accuracy_probe, prepare, solve, splits};
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

/// The built-in task a `train` run uses.
pub struct Builtin {
    pub demo: DemoConfig,
    pub prepared: Prepared,
}

/// Replaces a `builtin:…` `model` or `data` with the demo's base model or on-policy pairs
/// (built and cached when missing); returns the task, or `None` when neither names it.
pub fn fill_in(config: &mut TrainConfig) -> Result<Option<Builtin>> {
    let model = named_demo("model", &config.model).transpose()?;
    let data = named_demo("data", &config.data).transpose()?;
    let Some(demo) = model.clone().or_else(|| data.clone()) else {
        return Ok(None);
    };
    let prepared = prepare(&demo, config.device)?;
    if model.is_some() {
        config.model = prepared.base.clone();
    }
    if data.is_some() {
        config.data = prepared.pairs.clone();
    }
    Ok(Some(Builtin { demo, prepared }))
}

impl Builtin {
    /// Trains `config` with greedy validation accuracy as its probe (when the model is the
    /// task's base model: another model's validation accuracy is its own business).
    pub fn train(
        &self,
        config: &TrainConfig,
        resume: Option<crate::train::Resume>,
    ) -> Result<crate::train::TrainSummary> {
        if config.model != self.prepared.base {
            return crate::dpo::train(config, resume, None);
        }
        let device = device::select(config.device)?.device;
        let mut probe = accuracy_probe(&self.demo, &self.prepared, &device)?;
        crate::dpo::train(config, resume, Some(&mut probe))
    }

    /// Greedy test accuracy before and after the adapter in `output/adapter` with their
    /// intervals, where everything is, and what to try next.
    pub fn closing_summary(&self, config: &TrainConfig, output: &Path) -> Result<String> {
        let device = device::select(config.device)?.device;
        let tokenizer = Tokenizer::load(&config.model)?;
        let test = splits(&self.demo).test;
        let adapter = output.join("adapter");
        let grade = |adapter: Option<&Path>| -> Result<Vec<bool>> {
            let model = solve::load(&config.model, adapter, &device)?;
            let max = self.demo.max_answer_tokens;
            solve::graded(&model, &tokenizer, &test, max, &device)
        };
        let before = if config.model == self.prepared.base {
            self.prepared.base_test.clone()
        } else {
            grade(None)?
        };
        let after = grade(Some(&adapter))?;
        let change = paired_change(&before, &after);
        let example = test.first().map_or("", |p| p.question.as_str());
        Ok(format!(
            "greedy accuracy on {} test questions: {} (base) → {} (base + adapter)\n\
             change: {:+.1} points, 95% CI {:+.1} to {:+.1} (paired: the same questions before and after)\n\
             outputs: {} (adapter, metrics.jsonl, curves.svg, config.ron); base model: {}; pairs: {}\n\
             try next:\n  \
             cargo run --release -- generate --model {} --adapter {} --chat \"{example}\"\n  \
             cargo run --release -- demo      # DPO vs MinorDPO across learning rates and seeds, report.md + figures\n  \
             cargo run --release -- train --loss sigmoid --output runs/dpo   # plain DPO, same settings\n  \
             cargo run --release -- plot {} runs/dpo",
            test.len(),
            accuracy_text(&before),
            accuracy_text(&after),
            100.0 * change.value,
            100.0 * change.low(),
            100.0 * change.high(),
            output.display(),
            config.model.display(),
            config.data.display(),
            config.model.display(),
            adapter.display(),
            output.display(),
        ))
    }
}
