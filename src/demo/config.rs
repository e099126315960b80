//! The demo's settings (`configs/demo.ron`, embedded in the binary): the task, the tokenizer, the
//! tiny model and its SFT, the on-policy pairs, and the preference runs to compare.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::dpo::loss::LossKind;
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
    /// Greedy test accuracy is measured at this many evenly spaced points (plus the start).
    pub accuracy_points: usize,
}

/// One preference run of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    pub loss: LossKind,
    pub learning_rate: f64,
}

/// Everything the demo does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Where every step's outputs go (steps already there with the same settings are reused).
    pub output: PathBuf,
    pub seed: u64,
    pub train_questions: usize,
    pub test_questions: usize,
    /// Test questions used for greedy accuracy (≤ test_questions).
    pub eval_questions: usize,
    /// Longest answer generated when scoring and sampling (worked answers are 40–70 tokens).
    pub max_answer_tokens: usize,
    pub vocab_size: usize,
    pub model: LlamaShape,
    pub base: BaseTraining,
    pub pairs: PairSampling,
    pub preference: PreferenceTraining,
    pub runs: Vec<RunSpec>,
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
        if self.train_questions + self.test_questions > max {
            return bad(
                "train_questions",
                &format!("train + test questions must be at most {max}"),
            );
        }
        if self.train_questions == 0 {
            return bad("train_questions", "must be ≥ 1");
        }
        if self.eval_questions == 0 || self.eval_questions > self.test_questions {
            return bad("eval_questions", "must be between 1 and test_questions");
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
        if p.accuracy_points == 0 || p.max_steps < p.accuracy_points {
            return bad(
                "preference.accuracy_points",
                "must be between 1 and preference.max_steps",
            );
        }
        if !(p.eval_split > 0.0 && p.eval_split < 1.0) {
            return bad(
                "preference.eval_split",
                "must be in (0, 1): the report tracks held-out pairs",
            );
        }
        if self.runs.is_empty() {
            return bad("runs", "list at least one run");
        }
        let mut names: Vec<String> = self.runs.iter().map(super::run_name).collect();
        names.sort();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return bad("runs", &format!("`{}` is listed twice", pair[0]));
        }
        Ok(())
    }

    /// The embedded `configs/demo.ron`.
    pub fn embedded() -> Self {
        crate::io::parse_ron(EMBEDDED, "configs/demo.ron").expect("the embedded demo config parses")
    }
}
