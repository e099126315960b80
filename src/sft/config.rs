//! The `sft` configuration: a RON file whose fields are also command-line flags (one field list
//! for both, as `train`'s), with its validation.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{LrScheduler, config_struct};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::lora::LoraSettings;

/// What `sft` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SftMethod {
    /// Every weight (writes a whole model in `OUTPUT/model/`).
    Full,
    /// LoRA adapters on a frozen model (writes `OUTPUT/adapter/`).
    Lora,
}

config_struct! {
    /// Everything a supervised fine-tuning run needs. Unknown fields in a RON file are errors.
    SftConfig, SftOverrides, SFT_FIELDS;
    global {
        /// Where to run: auto, wgpu, cpu, flex, ndarray.
        device: DeviceChoice = DeviceChoice::Auto,
    }
    /// Hugging Face model directory to start from.
    model: PathBuf = PathBuf::new(),
    /// Training rows: `prompt`/`completion` or `messages` (.jsonl, .jsonl.gz, .json).
    data: PathBuf = PathBuf::new(),
    /// Optional separate evaluation file.
    eval_data: Option<PathBuf> = None,
    /// Fraction of `data` held out for evaluation when no `eval_data` is given.
    eval_split: f64 = 0.0,
    /// Output directory: model/ or adapter/, metrics.jsonl, config.ron.
    output: PathBuf = PathBuf::from("runs/sft"),
    /// full (every weight) or lora.
    method: SftMethod = SftMethod::Lora,
    /// Peak learning rate of AdamW.
    learning_rate: f64 = 2e-4,
    /// AdamW β1.
    adam_beta1: f64 = 0.9,
    /// AdamW β2.
    adam_beta2: f64 = 0.999,
    /// AdamW ε.
    adam_epsilon: f64 = 1e-8,
    /// Decoupled weight decay.
    weight_decay: f64 = 0.0,
    /// Sequences per micro-batch.
    batch_size: usize = 8,
    /// Micro-batches per optimizer step.
    gradient_accumulation_steps: usize = 1,
    /// Clip the global gradient norm to this (0 = off).
    max_grad_norm: f64 = 1.0,
    /// Warmup steps (overrides `warmup_ratio` when > 0).
    warmup_steps: usize = 0,
    /// Warmup as a fraction of all steps.
    warmup_ratio: f64 = 0.03,
    /// Schedule after warmup: cosine, linear or constant.
    lr_scheduler: LrScheduler = LrScheduler::Cosine,
    /// Passes over the data (ignored when `max_steps` > 0).
    num_epochs: usize = 1,
    /// Optimizer steps to run (0 = from `num_epochs`).
    max_steps: usize = 0,
    /// LoRA rank (method lora).
    lora_r: usize = 16,
    /// LoRA α.
    lora_alpha: f64 = 32.0,
    /// Dropout on the LoRA input while training.
    lora_dropout: f64 = 0.0,
    /// Projections that get adapters (comma-separated).
    lora_targets: String = crate::lora::DEFAULT_TARGETS.join(","),
    /// Longest prompt + completion in tokens (longer ones are cut at the end).
    max_length: usize = 1024,
    /// Seed for init, data order and the eval split.
    seed: u64 = 42,
    /// Write `checkpoint-N/` every N steps (0 = none).
    save_steps: usize = 0,
    /// Evaluate every N steps (0 = only at the end).
    eval_steps: usize = 0,
    /// Log a metrics line every N steps.
    logging_steps: usize = 10,
}

impl SftConfig {
    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: &str| {
            Err(Error::Invalid(format!("config field `{field}`: {message}")))
        };
        if self.model.as_os_str().is_empty() {
            return bad("model", "set a model directory (--model DIR)");
        }
        if self.data.as_os_str().is_empty() {
            return bad("data", "set a data file (--data FILE)");
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return bad("learning_rate", "must be > 0");
        }
        if self.batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return bad(
                "batch_size",
                "batch_size and gradient_accumulation_steps must be ≥ 1",
            );
        }
        if !(0.0..1.0).contains(&self.eval_split) {
            return bad("eval_split", "must be in [0, 1)");
        }
        if self.method == SftMethod::Lora && self.lora_r == 0 {
            return bad("lora_r", "must be ≥ 1");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout", "must be in [0, 1)");
        }
        Ok(())
    }

    /// The LoRA settings of `method: lora`.
    pub(crate) fn lora_settings(&self) -> LoraSettings {
        LoraSettings::from_fields(
            self.lora_r,
            self.lora_alpha,
            self.lora_dropout,
            &self.lora_targets,
        )
    }
}
