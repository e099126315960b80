//! The demo's settings (`configs/demo.ron`, embedded in the binary): the task, the tokenizer, the
//! tiny model and its SFT, the on-policy pairs, and the sweep of preference runs to compare.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sweep::Sweep;
use crate::model::init::LlamaShape;

/// The committed demo config, compiled in so the demo and `train`'s default need no files.
pub const EMBEDDED: &str = include_str!("../../configs/demo.ron");

/// Supervised training of the base model from random weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseTraining {
    pub learning_rate: f64,
    pub batch_size: usize,
    pub max_steps: usize,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    /// AdamW β2 (0.98 suits short from-scratch runs better than 0.999).
    pub adam_beta2: f64,
}

/// On-policy preference pairs from the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSampling {
    /// Training questions to sample answers for.
    pub questions: usize,
    /// Answers sampled per question.
    pub samples: usize,
    pub temperature: f32,
    /// When none of a question's samples is right, pair the reference worked answer (as chosen)
    /// with a wrong one; else the question gives no pair.
    pub reference_chosen: bool,
}

/// Settings shared by every preference run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceTraining {
    pub beta: f64,
    pub batch_size: usize,
    pub max_steps: usize,
    pub lora_r: usize,
    pub lora_alpha: f64,
    /// Fraction of the pairs held out to track log-probs on.
    pub eval_split: f64,
    /// Held-out log-probs and greedy validation accuracy (`eval_accuracy`) every this many steps
    /// (and at the end).
    pub eval_steps: usize,
}

/// How many questions each split holds; no calculation is in two of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Questions {
    /// For the base model's SFT and for sampling preference pairs.
    pub train: usize,
    /// For choosing settings: `eval_accuracy` during training, the sweep's selection.
    pub validation: usize,
    /// Only for the reported numbers.
    pub test: usize,
}

/// Everything the demo does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Where every step's outputs go (steps already there with the same settings are reused).
    pub output: PathBuf,
    pub seed: u64,
    pub questions: Questions,
    /// Longest answer generated when scoring and sampling (worked answers are 40–70 tokens).
    pub max_answer_tokens: usize,
    pub vocab_size: usize,
    pub model: LlamaShape,
    pub base: BaseTraining,
    pub pairs: PairSampling,
    pub preference: PreferenceTraining,
    /// The preference runs: losses × learning rates × seeds.
    pub sweep: Sweep,
}

impl DemoConfig {
    /// Checks the settings before anything is built, naming the field at fault.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field: &str, message: &str| {
            Err(crate::Error::Invalid(format!(
                "demo config field `{field}`: {message}"
            )))
        };
        let max = crate::demo::task::MAX_QUESTIONS;
        let q = self.questions;
        if q.train + q.validation + q.test > max {
            return bad(
                "questions",
                &format!("train + validation + test must be at most {max}"),
            );
        }
        if q.train == 0 || q.validation == 0 || q.test == 0 {
            return bad("questions", "train, validation and test must each be ≥ 1");
        }
        if self.max_answer_tokens == 0 {
            return bad("max_answer_tokens", "must be ≥ 1");
        }
        // 256 byte tokens + 5 special tokens, and room for merges
        if self.vocab_size < 300 {
            return bad(
                "vocab_size",
                "must be ≥ 300 (256 bytes + special tokens + merges)",
            );
        }
        if self.base.batch_size == 0 || self.base.max_steps == 0 {
            return bad("base", "batch_size and max_steps must be ≥ 1");
        }
        if self.pairs.questions == 0 || self.pairs.samples == 0 || self.pairs.temperature <= 0.0 {
            return bad(
                "pairs",
                "questions and samples must be ≥ 1 and temperature > 0",
            );
        }
        let p = &self.preference;
        if p.batch_size == 0 || p.lora_r == 0 || p.beta <= 0.0 {
            return bad(
                "preference",
                "batch_size and lora_r must be ≥ 1 and beta > 0",
            );
        }
        if p.eval_steps == 0 || p.eval_steps > p.max_steps {
            return bad(
                "preference.eval_steps",
                "must be between 1 and preference.max_steps",
            );
        }
        if !(p.eval_split > 0.0 && p.eval_split < 1.0) {
            return bad(
                "preference.eval_split",
                "must be in (0, 1): the report tracks held-out pairs",
            );
        }
        self.sweep.validate()
    }

    /// The embedded `configs/demo.ron`.
    pub fn embedded() -> Self {
        crate::io::parse_ron(EMBEDDED, "configs/demo.ron").expect("the embedded demo config parses")
    }
}
