//! The settings every trainer shares, declared once: optimizer, schedule, run length, LoRA,
//! logging and output. `training_config!` builds a command's config from them plus its own
//! fields — one RON struct (serde defaults, unknown fields rejected), its command-line flags and a
//! documented field list, so the file, the flags and docs/configuration.md cannot drift apart —
//! and gives every such config a [`TrainingSettings`] view, which the training loop reads.

use std::path::PathBuf;

use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::model::lora::LoraSettings;
use crate::train::optim::AdamWParams;
use crate::train::plan::RunLength;
use crate::train::schedule::LrScheduler;

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
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A command's config: `config_struct!` over the command's own fields followed by the shared
/// training fields (whose defaults the command picks in `defaults { }`), plus
/// `training()`, the shared fields as [`TrainingSettings`].
macro_rules! training_config {
    (
        $(#[doc = $sdoc:literal])*
        $name:ident, $overrides:ident, $fields_const:ident;
        defaults {
            output: $output:expr,
            learning_rate: $lr:expr,
            batch_size: $batch:expr,
            warmup_ratio: $warmup_ratio:expr,
            logging_steps: $logging:expr $(,)?
        }
        $($own:tt)*
    ) => {
        $crate::train::settings::config_struct! {
            $(#[doc = $sdoc])*
            $name, $overrides, $fields_const;
            // Set from the command line by the global `--device` flag.
            global {
                /// Where to run: auto, wgpu, cpu, flex, ndarray.
                device: $crate::device::DeviceChoice = $crate::device::DeviceChoice::Auto,
            }
            $($own)*
            /// Optional separate evaluation file (or Hub dataset split, as `data`).
            eval_data: Option<std::path::PathBuf> = None,
            /// Fraction of `data` held out for evaluation (with `seed`) when no `eval_data` is given.
            eval_split: f64 = 0.0,
            /// Output directory: the result (adapter/ or model/), checkpoint-N/, metrics.jsonl,
            /// config.ron.
            output: std::path::PathBuf = std::path::PathBuf::from($output),
            /// Peak learning rate of AdamW.
            learning_rate: f64 = $lr,
            /// AdamW β1.
            adam_beta1: f64 = 0.9,
            /// AdamW β2.
            adam_beta2: f64 = 0.999,
            /// AdamW ε.
            adam_epsilon: f64 = 1e-8,
            /// Decoupled weight decay on the trained parameters.
            weight_decay: f64 = 0.0,
            /// Examples per micro-batch (`train`: pairs, each two sequences in one forward pass;
            /// `sft`: sequences).
            batch_size: usize = $batch,
            /// Micro-batches per optimizer step.
            gradient_accumulation_steps: usize = 1,
            /// Clip the global gradient norm to this (0 = off).
            max_grad_norm: f64 = 1.0,
            /// Warmup steps (overrides `warmup_ratio` when > 0).
            warmup_steps: usize = 0,
            /// Warmup as a fraction of all steps.
            warmup_ratio: f64 = $warmup_ratio,
            /// Schedule after warmup: cosine, linear or constant.
            lr_scheduler: $crate::train::schedule::LrScheduler =
                $crate::train::schedule::LrScheduler::Cosine,
            /// Passes over the training data (ignored when `max_steps` > 0).
            num_epochs: usize = 1,
            /// Optimizer steps to run (0 = from `num_epochs`). A finished run continues with
            /// `--resume` and a larger `max_steps`.
            max_steps: usize = 0,
            /// LoRA rank.
            lora_r: usize = 16,
            /// LoRA α (the update is scaled by α/r).
            lora_alpha: f64 = 32.0,
            /// Dropout on the LoRA input in training steps (never in evaluation).
            lora_dropout: f64 = 0.0,
            /// Projections that get adapters (comma-separated on the command line).
            lora_targets: String = $crate::model::lora::DEFAULT_TARGETS.join(","),
            /// Longest prompt + completion in tokens (longer ones are cut at the end).
            max_length: usize = 1024,
            /// Recompute each decoder layer in the backward from its input instead of keeping
            /// its activations (one more forward per step, far less memory).
            gradient_checkpointing: bool = false,
            /// Seed for adapter init, data order and the eval split.
            seed: u64 = 42,
            /// Write `checkpoint-N/` (result, optimizer, step) every N steps (0 = only the
            /// final one).
            save_steps: usize = 0,
            /// Evaluate every N steps (0 = only at the end).
            eval_steps: usize = 0,
            /// Log a metrics line every N steps (the mean over those steps; read from the device
            /// only then).
            logging_steps: usize = $logging,
        }

        impl $name {
            /// Validates the config and reads what its run starts from (every command's own
            /// fields include `model` and `data`): see [`Start::new`](crate::train::start::Start::new).
            pub fn start<T>(
                &self,
                resume: Option<$crate::train::Resume>,
                what: &str,
                read: $crate::train::start::ReadRows<T>,
            ) -> $crate::error::Result<($crate::train::start::Start, $crate::train::start::Rows<T>)> {
                self.validate()?;
                let eval_data = self.eval_data.as_deref();
                let settings = self.training();
                $crate::train::start::Start::new(settings, &self.model, &self.data, eval_data, resume, what, read)
            }

            /// The shared training fields.
            pub fn training(&self) -> $crate::train::settings::TrainingSettings {
                $crate::train::settings::TrainingSettings {
                    device: self.device,
                    output: self.output.clone(),
                    eval_split: self.eval_split,
                    learning_rate: self.learning_rate,
                    adam: $crate::train::optim::AdamWParams {
                        beta1: self.adam_beta1,
                        beta2: self.adam_beta2,
                        epsilon: self.adam_epsilon,
                        weight_decay: self.weight_decay,
                    },
                    batch_size: self.batch_size,
                    gradient_accumulation_steps: self.gradient_accumulation_steps,
                    max_grad_norm: self.max_grad_norm,
                    warmup_steps: self.warmup_steps,
                    warmup_ratio: self.warmup_ratio,
                    lr_scheduler: self.lr_scheduler,
                    num_epochs: self.num_epochs,
                    max_steps: self.max_steps,
                    lora_r: self.lora_r,
                    lora_alpha: self.lora_alpha,
                    lora_dropout: self.lora_dropout,
                    lora_targets: self.lora_targets.clone(),
                    max_length: self.max_length,
                    gradient_checkpointing: self.gradient_checkpointing,
                    seed: self.seed,
                    save_steps: self.save_steps,
                    eval_steps: self.eval_steps,
                    logging_steps: self.logging_steps,
                }
            }
        }
    };
}

pub(crate) use {config_struct, training_config};

/// The names of the shared fields, in the order every training config declares them (after its
/// own).
pub const SHARED_FIELDS: [&str; 26] = [
    "eval_data",
    "eval_split",
    "output",
    "learning_rate",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "weight_decay",
    "batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "warmup_steps",
    "warmup_ratio",
    "lr_scheduler",
    "num_epochs",
    "max_steps",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "max_length",
    "gradient_checkpointing",
    "seed",
    "save_steps",
    "eval_steps",
    "logging_steps",
];

/// The fields every trainer shares, as the training loop reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingSettings {
    pub device: DeviceChoice,
    pub output: PathBuf,
    pub eval_split: f64,
    pub learning_rate: f64,
    pub adam: AdamWParams,
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub max_grad_norm: f64,
    pub warmup_steps: usize,
    pub warmup_ratio: f64,
    pub lr_scheduler: LrScheduler,
    pub num_epochs: usize,
    pub max_steps: usize,
    pub lora_r: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    pub lora_targets: String,
    pub max_length: usize,
    pub gradient_checkpointing: bool,
    pub seed: u64,
    pub save_steps: usize,
    pub eval_steps: usize,
    pub logging_steps: usize,
}

/// An error naming the config field `field` when the path `value` is empty (`hint` says how to
/// set it).
pub fn require_path(field: &str, value: &std::path::Path, hint: &str) -> Result<()> {
    if value.as_os_str().is_empty() {
        return Err(Error::Invalid(format!("config field `{field}`: {hint}")));
    }
    Ok(())
}

impl TrainingSettings {
    /// Checks the shared values that would make a run meaningless; `lora` says whether adapters
    /// are trained (then `lora_r` must be ≥ 1).
    pub fn validate(&self, lora: bool) -> Result<()> {
        let bad = |field: &str, message: &str| {
            Err(Error::Invalid(format!("config field `{field}`: {message}")))
        };
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return bad("learning_rate", "must be > 0");
        }
        if self.batch_size == 0 || self.gradient_accumulation_steps == 0 {
            return bad(
                "batch_size",
                "batch_size and gradient_accumulation_steps must be ≥ 1",
            );
        }
        if lora && self.lora_r == 0 {
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

    /// The LoRA settings of fresh adapters.
    pub fn lora(&self) -> LoraSettings {
        LoraSettings::from_fields(
            self.lora_r,
            self.lora_alpha,
            self.lora_dropout,
            &self.lora_targets,
        )
    }

    /// What decides the run's length.
    pub fn run_length(&self) -> RunLength {
        RunLength {
            batch_size: self.batch_size,
            gradient_accumulation_steps: self.gradient_accumulation_steps,
            max_steps: self.max_steps,
            num_epochs: self.num_epochs,
            warmup_steps: self.warmup_steps,
            warmup_ratio: self.warmup_ratio,
            seed: self.seed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_configs_end_with_the_same_shared_fields() {
        let tail = |fields: &[(&'static str, &'static str)]| {
            fields[fields.len() - SHARED_FIELDS.len()..].to_vec()
        };
        let train = tail(crate::dpo::FIELDS);
        let sft = tail(crate::sft::SFT_FIELDS);
        assert_eq!(train, sft, "one declaration: the same names and docs");
        let names: Vec<&str> = train.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, SHARED_FIELDS);
    }
}
