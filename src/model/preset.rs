//! Real models' shapes with random weights, so `bench` needs no download: each model's own
//! `config.json`, kept in `configs/bench/`, and the model `bench` runs (a preset's or a
//! directory's).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::error::{Error, Result};
use crate::model::precision::{FrozenPrecision, Storage};
use crate::model::{CausalLm, ModelConfig};

/// `(name, the text of configs/bench/NAME.json)`.
macro_rules! preset {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../configs/bench/", $name, ".json")),
        )
    };
}

/// The preset shapes.
pub const PRESETS: [(&str, &str); 5] = [
    preset!("tiny"),
    preset!("smollm2-135m"),
    preset!("qwen2.5-0.5b"),
    preset!("llama-3.2-1b"),
    preset!("gemma3-270m"),
];

/// The config of a preset, or an error listing the presets.
pub fn preset_config(name: &str) -> Result<ModelConfig> {
    let (_, json) = PRESETS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        Error::Invalid(format!(
            "--preset: unknown preset `{name}`; presets: {}",
            PRESETS.map(|p| p.0).join(", ")
        ))
    })?;
    ModelConfig::from_json(json, Path::new(&format!("preset {name}")))
}

/// The model a benchmark runs: `model`'s weights, or else `preset`'s random weights (from
/// `seed`), its frozen matrices stored as `precision` says (a preset counts as a bf16
/// checkpoint, as the real models ship). Returns the model, that storage and the model's name.
pub fn bench_model(
    model: Option<&PathBuf>,
    preset: Option<&str>,
    seed: u64,
    device: &Device,
    precision: FrozenPrecision,
) -> Result<(CausalLm, Storage, String)> {
    match (model, preset) {
        (Some(dir), _) => {
            let (model, storage) = CausalLm::load_frozen(dir, device, precision)?;
            Ok((model, storage, dir.display().to_string()))
        }
        (None, Some(preset)) => {
            let storage = precision.resolve(device, Some(Storage::Dense(FloatDType::BF16)))?;
            let config = preset_config(preset)?;
            let model = CausalLm::random(config, seed, device, storage)?;
            Ok((model, storage, preset.to_string()))
        }
        (None, None) => Err(Error::Invalid("give --model DIR or --preset NAME".into())),
    }
}
