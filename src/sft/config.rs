//! The `sft` configuration: the shared training fields (`train::settings`) plus what to train
//! and the data, as one RON struct whose fields are also command-line flags.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::precision::{FrozenPrecision, MatmulPrecision};
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
    /// With `method: lora`, storage of the frozen base weights, as in `train`: `auto` keeps a
    /// checkpoint in its own precision (bf16/f16, a GGUF's Q8_0/Q4_0 blocks), `f32`, `bf16`,
    /// `f16`, `q8` or `q4`. `method: full` trains every weight in f32 (`auto` or `f32` only).
    frozen_precision: FrozenPrecision = FrozenPrecision::Auto,
    /// How the frozen projections multiply, as in `train`: `auto` (bf16 where it is native and
    /// the frozen weights are bf16: the CPU on x86-64 with AVX512-BF16; f32 otherwise), `f32`, or
    /// `bf16` (an error where it cannot run).
    matmul_precision: MatmulPrecision = MatmulPrecision::Auto,
}

impl SftConfig {
    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> Result<()> {
        require_path("model", &self.model, "set a model directory (--model DIR)")?;
        require_path("data", &self.data, "set a data file (--data FILE)")?;
        let frozen = matches!(
            self.frozen_precision,
            FrozenPrecision::Auto | FrozenPrecision::F32
        );
        if self.method == SftMethod::Full && !frozen {
            return Err(Error::Invalid(
                "config field `frozen_precision`: method full trains every weight in f32; use \
                 auto or f32, or method lora"
                    .into(),
            ));
        }
        self.training().validate(self.method == SftMethod::Lora)
    }
}
