//! LoRA adapters on the decoder's projections, PEFT-compatible: PEFT's initialisation, its file
//! layout (`adapter_config.json` + `adapter_model.safetensors` with
//! `base_model.model.<module>.lora_A.weight` `[r, in]` / `lora_B.weight` `[out, r]`), loading
//! adapters PEFT saved, and merging an adapter into the base weights.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use super::CausalLm;
use super::checkpoint::{decode_f32, transpose};
use super::linear::{LoraAdapter, Weight};
use super::precision::Storage;
use super::save::{EncodedTensor, encode, write_safetensors};
use crate::error::{Error, Result};
use crate::io::{Rng, write_dir, write_file};

/// The projections LoRA targets by default: every attention and MLP projection.
pub const DEFAULT_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// LoRA hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Short module names (`q_proj`, …).
    pub targets: Vec<String>,
    /// rsLoRA scaling `α/√r` instead of `α/r`.
    pub use_rslora: bool,
}

impl LoraSettings {
    /// Adapters of rank `r` on every projection (`DEFAULT_TARGETS`), without rsLoRA.
    pub fn on_every_projection(r: usize, alpha: f64, dropout: f64) -> Self {
        let targets = DEFAULT_TARGETS.map(str::to_owned).to_vec();
        Self {
            r,
            alpha,
            dropout,
            targets,
            use_rslora: false,
        }
    }

    /// Settings from config fields: `targets` is comma-separated (`q_proj,v_proj`); no rsLoRA.
    pub fn from_fields(r: usize, alpha: f64, dropout: f64, targets: &str) -> Self {
        Self {
            r,
            alpha,
            dropout,
            targets: targets
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            use_rslora: false,
        }
    }

    /// The adapter scale.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    fn targets(&self, module_path: &str) -> bool {
        let short = module_path.rsplit('.').next().unwrap_or(module_path);
        self.targets.iter().any(|t| t == short)
    }
}

/// `adapter_config.json` as PEFT writes and reads it (fields we do not use are kept as written).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeftConfig {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: serde_json::Value,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub inference_mode: bool,
}

fn default_bias() -> String {
    "none".into()
}

/// Adds fresh adapters (A Kaiming-uniform as PEFT, B = 0) to every targeted projection.
/// Adapter parameters are trainable; everything else stays frozen.
pub fn attach(model: &mut CausalLm, settings: &LoraSettings, seed: u64, device: &Device) {
    let mut rng = Rng::new(seed);
    for (path, linear) in model.projections_mut() {
        if !settings.targets(&path) {
            continue;
        }
        let [d_in, d_out] = linear.dims();
        // kaiming_uniform_(a=√5): bound = √(6 / ((1 + a²)·fan_in)) = 1/√fan_in.
        let bound = 1.0 / (d_in as f64).sqrt();
        let a: Vec<f32> = (0..d_in * settings.r)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
            .collect();
        let a = Tensor::from_data(TensorData::new(a, [d_in, settings.r]), device);
        let b = Tensor::zeros([settings.r, d_out], device);
        linear.lora = Some(adapter(a, b, settings));
    }
}

fn adapter(a: Tensor<2>, b: Tensor<2>, settings: &LoraSettings) -> LoraAdapter {
    LoraAdapter {
        a: Param::from_tensor(a),
        b: Param::from_tensor(b),
        scale: settings.scale(),
        dropout: settings.dropout,
        enabled: true,
    }
}

/// Switches every adapter on (policy) or off (reference).
pub fn set_enabled(model: &mut CausalLm, enabled: bool) {
    for (_, linear) in model.projections_mut() {
        if let Some(lora) = linear.lora.as_mut() {
            lora.enabled = enabled;
        }
    }
}

/// Whether any adapter of `model` is on: without one the model is its own reference.
pub fn any_enabled(model: &CausalLm) -> bool {
    model
        .projections()
        .iter()
        .any(|(_, l)| l.lora.as_ref().is_some_and(|lora| lora.enabled))
}

/// An error naming the `lora_targets` config field when the model carries no adapter (the
/// targets matched no projection).
pub fn require_adapters(model: &CausalLm, targets: &str) -> Result<()> {
    if model.projections().iter().any(|(_, l)| l.lora.is_some()) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "config field `lora_targets`: `{targets}` matches no projection of the model"
    )))
}

fn to_host(t: Tensor<2>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// Writes the adapter directory `dir` (`adapter_model.safetensors` and `adapter_config.json` in
/// PEFT's layout) atomically.
pub fn save_peft(
    model: &CausalLm,
    settings: &LoraSettings,
    base_model: &str,
    dir: &Path,
) -> Result<()> {
    write_dir(dir, |tmp| {
        write_peft_files(model, settings, base_model, tmp)
    })
}

/// Writes PEFT's two adapter files into the existing directory `dir` (for a caller that builds
/// a larger directory atomically, such as a checkpoint).
pub fn write_peft_files(
    model: &CausalLm,
    settings: &LoraSettings,
    base_model: &str,
    dir: &Path,
) -> Result<()> {
    let mut tensors: Vec<EncodedTensor> = Vec::new();
    for (path, linear) in model.projections() {
        let Some(lora) = &linear.lora else { continue };
        let [d_in, r] = lora.a.val().dims();
        let d_out = lora.b.val().dims()[1];
        // PEFT: A [r, in], B [out, r] — ours are the transposes.
        let a = transpose(&to_host(lora.a.val()), d_in, r);
        let b = transpose(&to_host(lora.b.val()), r, d_out);
        let bytes = |v: Vec<f32>| encode(&v, safetensors::Dtype::F32);
        tensors.push((
            format!("base_model.model.{path}.lora_A.weight"),
            bytes(a),
            vec![r, d_in],
        ));
        tensors.push((
            format!("base_model.model.{path}.lora_B.weight"),
            bytes(b),
            vec![d_out, r],
        ));
    }
    let weights = dir.join("adapter_model.safetensors");
    write_safetensors(
        &weights,
        &tensors,
        safetensors::Dtype::F32,
        &[("format", "pt".into())],
    )?;

    let config = PeftConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        r: settings.r,
        lora_alpha: settings.alpha,
        lora_dropout: settings.dropout,
        target_modules: serde_json::json!(settings.targets),
        bias: "none".into(),
        use_rslora: settings.use_rslora,
        fan_in_fan_out: false,
        base_model_name_or_path: Some(base_model.to_string()),
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
        modules_to_save: None,
        use_dora: false,
        inference_mode: true,
    };
    let text = serde_json::to_string_pretty(&config).expect("serialisable config");
    write_file(&dir.join("adapter_config.json"), text)
}

/// Reads a PEFT adapter directory and attaches it (trainable) to `model`.
pub fn load_peft(model: &mut CausalLm, dir: &Path, device: &Device) -> Result<LoraSettings> {
    let config_path = dir.join("adapter_config.json");
    let config: PeftConfig = crate::io::read_json(&config_path)?;
    let bad = |field: &str, message: String| Error::Config {
        path: config_path.clone(),
        field: field.into(),
        message,
    };
    if config.peft_type != "LORA" {
        return Err(bad(
            "peft_type",
            format!("`{}`; only LORA is supported", config.peft_type),
        ));
    }
    let unsupported = [
        (
            "rank_pattern",
            !config.rank_pattern.is_empty(),
            "per-module ranks",
        ),
        (
            "alpha_pattern",
            !config.alpha_pattern.is_empty(),
            "per-module alphas",
        ),
        ("use_dora", config.use_dora, "DoRA"),
        (
            "fan_in_fan_out",
            config.fan_in_fan_out,
            "fan_in_fan_out weights",
        ),
        ("bias", config.bias != "none", "LoRA biases"),
    ];
    if let Some((field, _, what)) = unsupported.iter().find(|(_, set, _)| *set) {
        return Err(bad(field, format!("{what}: not supported by minordpo")));
    }
    let weights = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&weights).map_err(|e| Error::io(&weights, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::weights(&weights, format!("not a valid safetensors file: {e}")))?;
    let mut names: std::collections::BTreeSet<String> =
        st.names().into_iter().map(str::to_owned).collect();
    // `targets` is filled below from the modules that carry tensors.
    let settings = LoraSettings {
        r: config.r,
        alpha: config.lora_alpha,
        dropout: config.lora_dropout,
        targets: Vec::new(),
        use_rslora: config.use_rslora,
    };
    let read = |name: &str, shape: [usize; 2]| -> Result<Vec<f32>> {
        let view = st
            .tensor(name)
            .map_err(|_| Error::weights(&weights, format!("missing tensor `{name}`")))?;
        if view.shape() != shape {
            return Err(Error::weights(
                &weights,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    view.shape()
                ),
            ));
        }
        decode_f32(view.data(), view.dtype()).ok_or_else(|| {
            Error::weights(
                &weights,
                format!("tensor `{name}`: unsupported dtype {:?}", view.dtype()),
            )
        })
    };
    let mut attached: Vec<String> = Vec::new();
    for (path, linear) in model.projections_mut() {
        let a_name = format!("base_model.model.{path}.lora_A.weight");
        let b_name = format!("base_model.model.{path}.lora_B.weight");
        if !names.contains(&a_name) {
            continue;
        }
        let [d_in, d_out] = linear.dims();
        let r = config.r;
        let a = transpose(&read(&a_name, [r, d_in])?, r, d_in);
        let b = transpose(&read(&b_name, [d_out, r])?, d_out, r);
        names.remove(&a_name);
        names.remove(&b_name);
        linear.lora = Some(adapter(
            Tensor::from_data(TensorData::new(a, [d_in, r]), device),
            Tensor::from_data(TensorData::new(b, [r, d_out]), device),
            &settings,
        ));
        attached.push(path.rsplit('.').next().unwrap_or(&path).to_string());
    }
    if let Some(extra) = names.iter().next() {
        return Err(Error::weights(
            &weights,
            format!("tensor `{extra}` does not match any projection of the model"),
        ));
    }
    if attached.is_empty() {
        return Err(Error::weights(&weights, "no LoRA tensors found"));
    }
    // The modules that really carry adapters (PEFT may store `target_modules` as a regex).
    attached.sort();
    attached.dedup();
    Ok(LoraSettings {
        targets: attached,
        ..settings
    })
}

/// Folds every adapter into its base weight (`W ← W + s·A·B`) and removes the adapters.
pub fn merge(model: &mut CausalLm) {
    for (_, linear) in model.projections_mut() {
        if let Some(lora) = linear.lora.take() {
            let delta = lora.a.val().matmul(lora.b.val()) * lora.scale;
            let merged = linear.weight.dense().cast(FloatDType::from(delta.dtype())) + delta;
            let merged = Param::from_tensor(merged.detach()).set_require_grad(false);
            linear.weight = Weight::Dense(merged);
        }
    }
}

/// The base model (a directory or a GGUF file) with `adapter` folded in, on `device`.
fn merged(model_path: &Path, adapter: &Path, device: &Device) -> Result<CausalLm> {
    let mut model = CausalLm::load(model_path, device)?;
    load_peft(&mut model, adapter, device)?;
    merge(&mut model);
    Ok(model)
}

/// Folds `adapter` into the weights of the model at `model_path` and writes a complete Hugging Face
/// directory to `output`: `model.safetensors` in the source checkpoint's dtype (a quantized GGUF's
/// in f32), plus the config, generation config and tokenizer files (a GGUF's, from its metadata).
pub fn merge_to_dir(
    model_path: &Path,
    adapter: &Path,
    output: &Path,
    device: &Device,
) -> Result<()> {
    let dtype = if crate::gguf::is_gguf(model_path) {
        let gguf = crate::gguf::GgufFile::open(model_path)?;
        match crate::gguf::weights::storage(&gguf) {
            Some(Storage::Dense(FloatDType::F16)) => safetensors::Dtype::F16,
            Some(Storage::Dense(FloatDType::BF16)) => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        }
    } else {
        crate::model::checkpoint::Checkpoint::open(model_path)?
            .storage_dtype()
            .unwrap_or(safetensors::Dtype::F32)
    };
    let model = merged(model_path, adapter, device)?;
    super::save::save_model_dir(&model, model_path, output, dtype)
}

/// Folds `adapter` into the model at `model_path` and writes one GGUF file `output` with its 2-D
/// weights in `wtype` and the base's tokenizer (see `gguf::write`).
pub fn merge_to_gguf(
    model_path: &Path,
    adapter: &Path,
    output: &Path,
    wtype: crate::gguf::write::GgufWeightType,
    device: &Device,
) -> Result<()> {
    use crate::gguf::write::{TokenizerSource, write_gguf};
    let model = merged(model_path, adapter, device)?;
    if crate::gguf::is_gguf(model_path) {
        let gguf = crate::gguf::GgufFile::open(model_path)?;
        write_gguf(&model, &TokenizerSource::Gguf(&gguf), output, wtype)
    } else {
        write_gguf(&model, &TokenizerSource::Dir(model_path), output, wtype)
    }
}
