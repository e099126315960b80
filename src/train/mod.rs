//! What every trainer shares, and the one training loop that DPO (`dpo`) and SFT (`sft`) both
//! run: they differ only in their [`Objective`] — how a micro-batch becomes a loss and which
//! metrics it reports.
//!
//! The loop: the step plan (seeded shuffle per epoch, accumulation), the warmup + decay schedule,
//! AdamW over the trained parameters with global-norm clipping on the device, metrics read back
//! once per logged step into `metrics.jsonl`, evaluation, checkpoints (the last step's too, so a
//! finished run continues with `--resume` and a larger `max_steps`), progress, and the result
//! (`adapter/` or `model/`) written atomically at the end.

pub mod checkpoint;
pub mod memory;
pub mod method;
pub mod optim;
pub mod plan;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod settings;
pub mod split;
pub mod start;
pub mod window;

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::model::CausalLm;
use memory::PeakMemory;
use method::Method;
use optim::{AdamW, AdamWParams, Grads, Trained, accumulate, clip, collect_grads, global_norm};
use plan::StepPlan;
use progress::Progress;
use settings::TrainingSettings;
use window::{StatRows, StepWindow};

/// A metrics line: TRL's names to values.
pub type MetricsLine = serde_json::Map<String, serde_json::Value>;

/// One micro-batch as an objective computed it.
pub struct MicroBatch {
    /// The micro-batch's summed loss divided by the step's units `[1]`, with its graph.
    pub loss: Tensor<1>,
    /// Statistics `[rows, n]`, detached; row 0 holds the loss terms (checked for finiteness).
    pub stats: Tensor<2>,
    /// Tokens in the forward pass (for `tokens_per_second`).
    pub tokens: usize,
}

/// What a trainer computes: the part of a run that differs between DPO and SFT.
pub trait Objective {
    /// Training examples.
    fn len(&self) -> usize;

    /// Whether there are no training examples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reorders each new epoch's shuffle (default: as shuffled).
    fn arrange(&self, _order: &mut [usize]) {}

    /// What a step's summed loss is divided by: its pairs (DPO) or completion tokens (SFT), so
    /// that accumulation equals one large batch.
    fn step_units(&self, micro_batches: &[Vec<usize>]) -> usize;

    /// The loss and statistics of the examples `examples` (indices into the training set).
    fn micro_batch(
        &mut self,
        model: &CausalLm,
        examples: &[usize],
        step_units: usize,
    ) -> MicroBatch;

    /// The objective's metrics over the statistics read since the last line.
    fn metrics(&self, stats: &StatRows) -> MetricsLine;

    /// Whether there is an evaluation set.
    fn has_eval(&self) -> bool;

    /// Evaluation metrics (`eval_…`) of the current model.
    fn evaluate(&mut self, model: &CausalLm) -> MetricsLine;

    /// What the progress bar shows of a metrics line: `(label, metric, decimals)` (tokens per
    /// second follow).
    fn progress(&self) -> &'static [(&'static str, &'static str, usize)];
}

/// A measure of the model besides its objective's own evaluation — the built-in task's greedy
/// accuracy on validation questions — taken before the first step and at every evaluation.
pub trait Probe {
    /// Metrics (`eval_…`) of `model` (on the training device; score its inference view) after
    /// `step` steps.
    fn measure(&mut self, model: &CausalLm, step: usize) -> Result<MetricsLine>;
}

/// The progress text of a metrics line: each of `shown` (`label value`), then tokens per second.
fn progress_text(line: &MetricsLine, shown: &[(&str, &str, usize)]) -> String {
    let get = |k: &str| line.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    let mut parts: Vec<String> = shown
        .iter()
        .map(|(label, key, decimals)| format!("{label} {:.*}", decimals, get(key)))
        .collect();
    parts.push(format!("{:.0} tok/s", get("tokens_per_second")));
    if let Some(bytes) = line.get("peak_memory_bytes").and_then(|v| v.as_f64()) {
        parts.push(format!("{:.2} GB", bytes / 1e9));
    }
    parts.join("  ")
}

/// Where a run continues from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The latest `checkpoint-N/` in the output directory.
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

impl Resume {
    /// The run's resume point from the `--resume [DIR]` flag.
    pub fn from_flag(flag: Option<Option<PathBuf>>) -> Option<Self> {
        flag.map(|dir| dir.map_or(Self::Latest, Self::From))
    }

    /// The checkpoint directory this names for a run writing to `output`, checked to be one
    /// (trainers call this before loading anything, so a wrong path fails at once).
    pub fn resolve(&self, output: &Path) -> Result<PathBuf> {
        let dir = match self {
            Self::From(dir) => dir.clone(),
            Self::Latest => checkpoint::latest(output).ok_or_else(|| {
                Error::Invalid(format!(
                    "--resume: no checkpoint-N directory in {}",
                    output.display()
                ))
            })?,
        };
        if !dir.join("state.json").is_file() {
            return Err(Error::Invalid(format!(
                "--resume: {} is not a checkpoint (no state.json)",
                dir.display()
            )));
        }
        Ok(dir)
    }
}

/// The device a run trains on (with autodiff), announced on stderr.
pub fn training_device(settings: &TrainingSettings) -> Result<Device> {
    let selected = crate::device::select(settings.device)?;
    eprintln!("device: {}", selected.description);
    Ok(selected.device.autodiff())
}

/// A run to start: its settings, the resolved config (written to `config.ron`), the model
/// directory it starts from, what it trains (the model already prepared for it) and the
/// checkpoint it continues from ([`Resume::resolve`]).
pub struct Run<'a, 'p> {
    pub settings: &'a TrainingSettings,
    pub config_ron: String,
    pub base: &'a Path,
    pub method: Method,
    pub resume: Option<PathBuf>,
    /// Measured before the first step and with every evaluation.
    pub probe: Option<&'p mut dyn Probe>,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub output: PathBuf,
    /// `OUTPUT/adapter` or `OUTPUT/model`.
    pub result: PathBuf,
    pub last_log: MetricsLine,
}

impl std::fmt::Display for TrainSummary {
    /// `N steps, peak memory 1.92 GB; result in OUTPUT/adapter, metrics in
    /// OUTPUT/metrics.jsonl` (the peak where the last metrics line has one).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metrics = self.output.join("metrics.jsonl");
        let (result, metrics) = (self.result.display(), metrics.display());
        write!(f, "{} steps", self.steps)?;
        if let Some(bytes) = self
            .last_log
            .get("peak_memory_bytes")
            .and_then(|v| v.as_f64())
        {
            write!(f, ", peak memory {:.2} GB", bytes / 1e9)?;
        }
        write!(f, "; result in {result}, metrics in {metrics}")
    }
}

/// Restores the checkpoint the run continues from, or starts fresh; returns the method, the
/// optimizer and the first step to run (at most `total`).
fn start(
    run: &Run,
    total: usize,
    model: &mut CausalLm,
    device: &Device,
) -> Result<(Method, AdamW, usize)> {
    let Some(dir) = &run.resume else {
        return Ok((run.method.clone(), AdamW::default(), 0));
    };
    let (state, method, optimizer) = checkpoint::load(dir, model, &run.method, device)?;
    if state.step > total {
        return Err(Error::Invalid(format!(
            "{}: the checkpoint is at step {}, past this run's {total} steps; raise max_steps to \
             continue it",
            dir.display(),
            state.step
        )));
    }
    if state.seed != run.settings.seed {
        return Err(Error::Invalid(format!(
            "{}: checkpoint was made with seed {}, the config says {}; keep the seed to resume",
            dir.display(),
            state.seed,
            run.settings.seed
        )));
    }
    eprintln!("resuming from {} (step {})", dir.display(), state.step);
    Ok((method, optimizer, state.step))
}

/// What a step does after its update.
struct Cadence {
    log: bool,
    eval: bool,
    save: bool,
}

impl Cadence {
    fn at(done: usize, total: usize, s: &TrainingSettings, has_eval: bool) -> Self {
        let every = |n: usize| n > 0 && done.is_multiple_of(n);
        let last = done == total;
        let eval = has_eval && (every(s.eval_steps) || last);
        Self {
            log: every(s.logging_steps.max(1)) || last || eval,
            eval,
            save: every(s.save_steps) || last,
        }
    }
}

/// How a step updates the model.
pub struct Update<'a> {
    pub trained: Trained,
    pub lr: f64,
    /// Global gradient-norm limit (0 = no clipping).
    pub max_grad_norm: f64,
    pub adam: &'a AdamWParams,
}

/// One optimizer step over `micro_batches` (example indices): each micro-batch's forward and
/// backward, gradient accumulation, global-norm clipping on the device and the AdamW update. The
/// statistics and the gradient norm go to `window`, unread. `bench` times exactly this.
pub fn optimizer_step(
    model: &mut CausalLm,
    objective: &mut impl Objective,
    micro_batches: &[Vec<usize>],
    optimizer: &mut AdamW,
    update: &Update,
    window: &mut StepWindow,
) {
    let units = objective.step_units(micro_batches);
    let mut grads = Grads::new();
    for examples in micro_batches {
        let batch = objective.micro_batch(model, examples, units);
        window.add_batch(batch.stats, batch.tokens);
        let backward = batch.loss.backward();
        accumulate(&mut grads, collect_grads(model, update.trained, &backward));
    }
    if let Some(norm) = global_norm(&grads) {
        clip(&mut grads, &norm, update.max_grad_norm);
        window.add_norm(norm);
    }
    optimizer.step(model, update.trained, &grads, update.lr, update.adam);
}

/// Runs the training loop of `objective` on `model` (on an autodiff device).
pub fn train(
    mut run: Run,
    model: &mut CausalLm,
    objective: &mut impl Objective,
    device: &Device,
) -> Result<TrainSummary> {
    let s = run.settings;
    let mut plan = StepPlan::new(objective.len(), s.run_length());
    let total = plan.total_steps;
    let (method, mut optimizer, start_step) = start(&run, total, model, device)?;
    let trained = method.trained();
    let output = s.output.clone();
    let mut log = run_dir::prepare(&output, &run.config_ron, start_step)?;
    let last_checkpoint = || {
        checkpoint::latest(&output).map_or("no checkpoint was written".to_string(), |p| {
            format!("the last good checkpoint is {}", p.display())
        })
    };
    let progress = Progress::new(total, start_step);
    let mut window = StepWindow::new(start_step + 1);
    let mut last_log = MetricsLine::new();
    let mut memory = PeakMemory::new(device);
    if let (Some(probe), 0) = (run.probe.as_deref_mut(), start_step) {
        let mut line = probe.measure(model, 0)?;
        line.insert("step".into(), 0.into());
        log.append(&line)?;
    }
    let has_eval = objective.has_eval() || run.probe.is_some();
    for step in start_step..total {
        let lr = schedule::learning_rate(s.learning_rate, step, total, plan.warmup, s.lr_scheduler);
        let micro_batches = plan.micro_batches(step, |order| objective.arrange(order));
        let update = Update {
            trained,
            lr,
            max_grad_norm: s.max_grad_norm,
            adam: &s.adam,
        };
        optimizer_step(
            model,
            objective,
            &micro_batches,
            &mut optimizer,
            &update,
            &mut window,
        );

        let done = step + 1;
        let cadence = Cadence::at(done, total, s, has_eval);
        if cadence.log || cadence.save {
            window
                .read(done)
                .map_err(|e| Error::Invalid(format!("{e}; {}", last_checkpoint())))?;
        }
        if cadence.log {
            let (stats, totals) = window.take();
            let mut line = objective.metrics(&stats);
            line.insert("grad_norm".into(), totals.grad_norm.into());
            line.insert("tokens_per_second".into(), totals.tokens_per_second.into());
            line.insert("step".into(), done.into());
            line.insert(
                "epoch".into(),
                (done as f64 / plan.steps_per_epoch as f64).into(),
            );
            line.insert("learning_rate".into(), lr.into());
            if cadence.eval {
                if objective.has_eval() {
                    line.extend(objective.evaluate(model));
                }
                if let Some(probe) = run.probe.as_deref_mut() {
                    line.extend(probe.measure(model, done)?);
                }
            }
            // Last, so the peak includes this step's evaluation.
            memory.observe();
            if let Some(bytes) = memory.bytes() {
                line.insert("peak_memory_bytes".into(), bytes.into());
            }
            log.append(&line)?;
            progress.message(done, progress_text(&line, objective.progress()));
            last_log = line;
        }
        if cadence.save {
            let state = checkpoint::CheckpointState {
                step: done,
                seed: s.seed,
            };
            checkpoint::save(&output, model, &method, run.base, &optimizer, &state)?;
        }
        progress.inc();
    }
    progress.finish();
    let result = output.join(method.result_name());
    crate::io::write_dir(&result, |dir| method.write_result(model, run.base, dir))?;
    // The figure is a convenience: a failure to draw it costs the run nothing.
    if let Err(e) = crate::plot::write_run_curves(&output) {
        eprintln!("warning: {}: curves.svg not written: {e}", output.display());
    }
    Ok(TrainSummary {
        steps: total,
        output,
        result,
        last_log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_and_summary_show_the_chosen_metrics_throughput_and_memory() {
        let line: MetricsLine = serde_json::from_str(
            r#"{"loss": 0.693147, "rewards/accuracies": 0.5, "tokens_per_second": 1234.4}"#,
        )
        .unwrap();
        let shown = [
            ("loss", "loss", 4),
            ("acc", "rewards/accuracies", 2),
            ("gap", "gap", 1),
        ];
        let text = progress_text(&line, &shown);
        assert_eq!(text, "loss 0.6931  acc 0.50  gap NaN  1234 tok/s");

        let mut line = line;
        line.insert("peak_memory_bytes".into(), 1_916_000_000u64.into());
        let text = progress_text(&line, &shown[..1]);
        assert_eq!(text, "loss 0.6931  1234 tok/s  1.92 GB");
        let summary = TrainSummary {
            steps: 40,
            output: PathBuf::from("out"),
            result: Path::new("out").join("adapter"),
            last_log: line,
        };
        let metrics = Path::new("out").join("metrics.jsonl");
        assert_eq!(
            summary.to_string(),
            format!(
                "40 steps, peak memory 1.92 GB; result in {}, metrics in {}",
                summary.result.display(),
                metrics.display()
            )
        );
    }

    #[test]
    fn the_last_step_logs_evaluates_and_saves() {
        let s = TrainingSettings {
            logging_steps: 4,
            eval_steps: 0,
            save_steps: 0,
            ..crate::dpo::config::TrainConfig::default().training()
        };
        let at = |done| {
            let c = Cadence::at(done, 10, &s, true);
            (c.log, c.eval, c.save)
        };
        assert_eq!(at(4), (true, false, false));
        assert_eq!(at(5), (false, false, false));
        assert_eq!(at(10), (true, true, true));
        let c = Cadence::at(10, 10, &s, false);
        assert!(c.log && !c.eval && c.save);
    }
}
