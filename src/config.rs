//! The training configuration: one RON-serialisable struct with documented defaults, and the
//! CLI flags that override it, both generated from one field list so they cannot drift apart.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::loss::LossKind;
use crate::precision::FrozenPrecision;

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Half a cosine from the peak to zero.
    Cosine,
    /// Straight line from the peak to zero.
    Linear,
    /// The peak throughout.
    Constant,
}

/// Generates a config struct (serde defaults, unknown fields rejected), its clap overrides and a
/// `FIELDS` list from one field list, so the RON file, the flags and the docs cannot drift apart.
/// Fields in `global { }` have no per-command flag (the global `--device` sets them).
macro_rules! config_struct {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident, $overrides:ident, $fields_const:ident;
        global { $( $(#[doc = $gdoc:literal])* $gfield:ident : $gty:ty = $gdefault:expr ),* $(,)? }
        $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr ),* $(,)?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $( $(#[doc = $gdoc])* pub $gfield: $gty, )*
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $gfield: $gdefault, )* $( $field: $default, )* }
            }
        }

        /// Command-line overrides: every config field under its kebab-case name.
        #[derive(Debug, Clone, Default, clap::Args)]
        pub struct $overrides {
            $( $(#[doc = $doc])* #[arg(long)] pub $field: Option<$ty>, )*
        }

        impl $overrides {
            /// Applies every flag that was given.
            pub fn apply(&self, config: &mut $name) {
                $( if let Some(v) = &self.$field { config.$field = v.clone(); } )*
            }
        }

        /// Every field name with its documentation, in declaration order (for docs and tests).
        pub const $fields_const: &[(&str, &str)] = &[
            $( (stringify!($gfield), concat!($($gdoc, "\n"),*)) ),*,
            $( (stringify!($field), concat!($($doc, "\n"),*)) ),*
        ];
    };
}

pub(crate) use config_struct;

/// Reads a RON config file into `T`; errors name the file, line and column.
pub fn read_ron<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_ron(&text, &path.display().to_string())
}

/// Parses RON `text` (named `origin` in errors) into `T`.
pub fn parse_ron<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    ron::from_str(text).map_err(|e| {
        Error::Invalid(format!(
            "{origin}:{}:{}: {}",
            e.position.line, e.position.col, e.code
        ))
    })
}

/// Writes `value` as pretty RON.
pub fn to_ron<T: Serialize>(value: &T) -> String {
    ron::ser::to_string_pretty(value, ron::ser::PrettyConfig::default()).expect("config serialises")
}

config_struct! {
    /// Everything a preference-training run needs. Unknown fields in a RON file are errors.
    TrainConfig, TrainOverrides, FIELDS;
    // Set from the command line by the global `--device` flag.
    global {
        /// Where to run: auto, wgpu, cpu, flex, ndarray.
        device: DeviceChoice = DeviceChoice::Auto,
    }
    /// Train on the built-in arithmetic task: an empty `model` / `data` becomes the demo's base
    /// model / on-policy pairs, built with configs/demo.ron's settings (and cached) when missing.
    builtin_task: bool = false,
    /// The demo config whose base model and pairs `builtin_task` uses (default: the embedded
    /// configs/demo.ron).
    builtin_task_config: Option<PathBuf> = None,
    /// Hugging Face model directory (config.json, safetensors, tokenizer files).
    model: PathBuf = PathBuf::new(),
    /// Preference data: .jsonl, .jsonl.gz or .json.
    data: PathBuf = PathBuf::new(),
    /// Optional separate evaluation file.
    eval_data: Option<PathBuf> = None,
    /// Fraction of `data` held out for evaluation (with `seed`) when no `eval_data` is given.
    eval_split: f64 = 0.0,
    /// Output directory: adapter/, metrics.jsonl, config.ron.
    output: PathBuf = PathBuf::from("runs/minordpo"),
    /// Start from an existing PEFT adapter instead of a fresh one.
    adapter: Option<PathBuf> = None,
    /// Loss: sigmoid (DPO), minor_dpo, dpop, ipo, hinge.
    loss: LossKind = LossKind::MinorDpo,
    /// β: strength of the implicit KL constraint to the reference.
    beta: f64 = 0.1,
    /// cDPO label smoothing ε (sigmoid only).
    label_smoothing: f64 = 0.0,
    /// DPOP's λ.
    dpop_lambda: f64 = 50.0,
    /// RPO: weight of the chosen completion's mean NLL added to the loss.
    sft_weight: f64 = 0.0,
    /// Peak learning rate of AdamW.
    learning_rate: f64 = 5e-5,
    /// AdamW β1.
    adam_beta1: f64 = 0.9,
    /// AdamW β2.
    adam_beta2: f64 = 0.999,
    /// AdamW ε.
    adam_epsilon: f64 = 1e-8,
    /// Decoupled weight decay on the LoRA parameters.
    weight_decay: f64 = 0.0,
    /// Pairs per micro-batch (each pair is two sequences in one forward pass).
    batch_size: usize = 4,
    /// Micro-batches per optimizer step.
    gradient_accumulation_steps: usize = 1,
    /// Clip the global gradient norm to this (0 = off).
    max_grad_norm: f64 = 1.0,
    /// Warmup steps (overrides `warmup_ratio` when > 0).
    warmup_steps: usize = 0,
    /// Warmup as a fraction of all steps.
    warmup_ratio: f64 = 0.1,
    /// Schedule after warmup: cosine, linear or constant.
    lr_scheduler: LrScheduler = LrScheduler::Cosine,
    /// Passes over the training data (ignored when `max_steps` > 0).
    num_epochs: usize = 1,
    /// Optimizer steps to run (0 = from `num_epochs`).
    max_steps: usize = 0,
    /// LoRA rank.
    lora_r: usize = 16,
    /// LoRA α (the update is scaled by α/r).
    lora_alpha: f64 = 32.0,
    /// Dropout on the LoRA input while training.
    lora_dropout: f64 = 0.0,
    /// Projections that get adapters (comma-separated on the command line).
    lora_targets: String = crate::lora::DEFAULT_TARGETS.join(","),
    /// Compute the reference log-probs once before training (cached in the output directory)
    /// instead of a reference forward pass every step.
    precompute_reference: bool = true,
    /// Group pairs of similar length into the same batches (within shuffled windows of 50
    /// batches, as transformers' `group_by_length`) to cut padding.
    group_by_length: bool = false,
    /// Longest prompt + completion in tokens (longer ones are cut at the end).
    max_length: usize = 1024,
    /// Positions per fused LM-head + log-prob chunk: the whole `[rows, positions, vocab]` logits
    /// are never held, forward or backward (0 = the plain path).
    logprob_chunk: usize = 256,
    /// Storage of the frozen base weights: `auto` keeps a half-precision checkpoint in its own
    /// precision (lossless; f16 for bf16 on GPUs without bf16), `f32`, `bf16` or `f16`. Activations,
    /// adapters and optimizer state are f32 either way.
    frozen_precision: FrozenPrecision = FrozenPrecision::Auto,
    /// Seed for adapter init, data order and the eval split.
    seed: u64 = 42,
    /// Write `checkpoint-N/` (adapter, optimizer, step) every N steps (0 = none).
    save_steps: usize = 0,
    /// Evaluate every N steps (0 = only at the end).
    eval_steps: usize = 0,
    /// Log a metrics line every N steps (the mean over those steps; read from the device only
    /// then).
    logging_steps: usize = 1,
}

impl TrainConfig {
    /// Reads a RON file; errors name the file, line and column.
    pub fn from_ron_file(path: &Path) -> Result<Self> {
        read_ron(path)
    }

    /// The committed `configs/default.ron` (MinorDPO on the built-in task), compiled in.
    pub fn embedded_default() -> Self {
        parse_ron(
            include_str!("../configs/default.ron"),
            "configs/default.ron",
        )
        .expect("the embedded default config parses")
    }

    /// The resolved config as RON.
    pub fn to_ron(&self) -> String {
        to_ron(self)
    }

    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: &str| {
            Err(Error::Invalid(format!("config field `{field}`: {message}")))
        };
        if self.model.as_os_str().is_empty() {
            return bad("model", "set a model directory (--model DIR)");
        }
        if self.data.as_os_str().is_empty() {
            return bad("data", "set a preference file (--data FILE)");
        }
        if self.beta.is_nan() || self.beta <= 0.0 {
            return bad("beta", "must be > 0");
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
        if self.lora_r == 0 {
            return bad("lora_r", "must be ≥ 1");
        }
        if !(0.0..1.0).contains(&self.eval_split) {
            return bad("eval_split", "must be in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return bad("lora_dropout", "must be in [0, 1)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ron_round_trip_and_unknown_fields() {
        let config = TrainConfig {
            beta: 0.2,
            ..Default::default()
        };
        let back: TrainConfig = ron::from_str(&config.to_ron()).unwrap();
        assert_eq!(back, config);
        let partial: TrainConfig = ron::from_str("(beta: 0.3, loss: sigmoid)").unwrap();
        assert_eq!(partial.beta, 0.3);
        assert_eq!(partial.loss, LossKind::Sigmoid);
        assert_eq!(partial.learning_rate, 5e-5);
        assert!(ron::from_str::<TrainConfig>("(betta: 0.3)").is_err());
    }

    #[test]
    fn overrides_win_and_fields_are_documented() {
        let mut config = TrainConfig::default();
        let overrides = TrainOverrides {
            beta: Some(0.5),
            max_steps: Some(7),
            ..Default::default()
        };
        overrides.apply(&mut config);
        assert_eq!((config.beta, config.max_steps), (0.5, 7));
        assert!(FIELDS.iter().all(|(_, doc)| !doc.trim().is_empty()));
    }
}
