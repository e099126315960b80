//! The demo's settings (`configs/demo.ron`, embedded in the binary): the task, the tokenizer, the
//! tiny model and its SFT, the on-policy pairs, and the preference runs to compare.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::loss::LossKind;
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
    /// The embedded `configs/demo.ron`.
    pub fn embedded() -> Self {
        crate::config::parse_ron(EMBEDDED, "configs/demo.ron")
            .expect("the embedded demo config parses")
    }
}
