//! Training checkpoints: `checkpoint-N/` holds the result (a PEFT adapter, or the whole model in
//! full fine-tuning), the AdamW moments and the step, written atomically, so a killed run never
//! leaves a half-written checkpoint. The last step writes one too, so a finished run continues.
//! Resuming restores all three; the data order is a function of the seed and the step, so a
//! resumed run sees the same batches as an uninterrupted one.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{write_dir, write_file};
use crate::model::CausalLm;
use crate::model::checkpoint::decode_f32;
use crate::model::save::{EncodedTensor, encode, write_safetensors};
use crate::train::method::Method;
use crate::train::optim::AdamW;

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps completed.
    pub step: usize,
    /// The run's seed (a resumed run must keep it for the same data order).
    pub seed: u64,
}

/// Writes `output/checkpoint-STEP/` atomically: the result (`adapter/` or `model/`), the
/// optimizer and the state.
pub fn save(
    output: &Path,
    model: &CausalLm,
    method: &Method,
    base: &Path,
    optimizer: &AdamW,
    state: &CheckpointState,
) -> Result<PathBuf> {
    let dir = output.join(format!("checkpoint-{}", state.step));
    write_dir(&dir, |tmp| {
        let result = tmp.join(method.result_name());
        std::fs::create_dir_all(&result).map_err(|e| Error::io(&result, e))?;
        method.write_result(model, base, &result)?;
        let mut tensors: Vec<EncodedTensor> = Vec::new();
        for (key, (m, v)) in &optimizer.moments {
            for (suffix, t) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let dims = t.dims();
                let values: Vec<f32> = t
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec()
                    .expect("f32");
                tensors.push((
                    format!("{key}.{suffix}"),
                    encode(&values, safetensors::Dtype::F32),
                    dims.to_vec(),
                ));
            }
        }
        write_safetensors(
            &tmp.join("optimizer.safetensors"),
            &tensors,
            safetensors::Dtype::F32,
            &[("adamw_step", optimizer.step.to_string())],
        )?;
        let state = serde_json::to_string_pretty(state).expect("state");
        write_file(&tmp.join("state.json"), state)
    })?;
    Ok(dir)
}

/// The `checkpoint-N` directory with the largest N in `output`, if any.
pub fn latest(output: &Path) -> Option<PathBuf> {
    std::fs::read_dir(output)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().is_dir().then_some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// Restores the result and the optimizer from `dir` into `model`; returns the state, the method
/// as restored and the optimizer.
pub fn load(
    dir: &Path,
    model: &mut CausalLm,
    method: &Method,
    device: &Device,
) -> Result<(CheckpointState, Method, AdamW)> {
    let state_path = dir.join("state.json");
    let state: CheckpointState = crate::io::read_json(&state_path)?;
    let method = method.read_result(model, &dir.join(method.result_name()), device)?;
    let opt_path = dir.join("optimizer.safetensors");
    let bytes = std::fs::read(&opt_path).map_err(|e| Error::io(&opt_path, e))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::weights(&opt_path, format!("not a valid safetensors file: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::weights(&opt_path, format!("not a valid safetensors file: {e}")))?;
    let mut optimizer = AdamW {
        step: metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get("adamw_step"))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::weights(&opt_path, "missing `adamw_step` metadata"))?,
        ..Default::default()
    };
    let tensor = |name: &str| -> Result<Tensor<2>> {
        let view = st
            .tensor(name)
            .map_err(|_| Error::weights(&opt_path, format!("missing tensor `{name}`")))?;
        let values = decode_f32(view.data(), view.dtype())
            .ok_or_else(|| Error::weights(&opt_path, format!("tensor `{name}`: bad dtype")))?;
        let shape = [view.shape()[0], view.shape()[1]];
        Ok(Tensor::<2>::from_data(TensorData::new(values, shape), device).inner())
    };
    for name in st.names() {
        if let Some(key) = name.strip_suffix(".exp_avg") {
            let m = tensor(name)?;
            let v = tensor(&format!("{key}.exp_avg_sq"))?;
            optimizer.moments.insert(key.to_string(), (m, v));
        }
    }
    Ok((state, method, optimizer))
}
