//! The `sft` configuration: the shared training fields (`train::settings`) plus what to train
//! and the data, as one RON struct whose fields are also command-line flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::train::settings::{require_path, training_config};

/// What `sft` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SftMethod {
    /// Every weight (writes a whole model in `OUTPUT/model/`).
    Full,
    /// LoRA adapters on a frozen model (writes `OUTPUT/adapter/`).
    Lora,
}

training_config! {
    /// Everything a supervised fine-tuning run needs. Unknown fields in a RON file are errors.
    SftConfig, SftOverrides, SFT_FIELDS;
    defaults {
        output: "runs/sft",
        learning_rate: 2e-4,
        batch_size: 8,
        warmup_ratio: 0.03,
        logging_steps: 10,
    }
    /// Hugging Face model directory to start from, a GGUF file, or a Hub id `ORG/NAME[@REVISION]`.
    model: PathBuf = PathBuf::new(),
    /// Training rows: `prompt`/`completion` or `messages` (.jsonl, .jsonl.gz, .json, .parquet, or
    /// a Hub dataset split `ORG/NAME[:SPLIT]`).
    data: PathBuf = PathBuf::new(),
    /// full (every weight) or lora.
    method: SftMethod = SftMethod::Lora,
}

impl SftConfig {
    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> Result<()> {
        require_path("model", &self.model, "set a model directory (--model DIR)")?;
        require_path("data", &self.data, "set a data file (--data FILE)")?;
        self.training().validate(self.method == SftMethod::Lora)
    }
}
