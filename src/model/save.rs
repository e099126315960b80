//! Writes a causal LM back out as a Hugging Face checkpoint (`model.safetensors` with transformers'
//! tensor names and `[out, in]` layouts), in f32, f16 or bf16 — used by `merge`.

use std::path::Path;

use burn::prelude::*;
use safetensors::Dtype;

use super::CausalLm;
use super::checkpoint::transpose;
use super::linear::Linear;
use crate::error::{Error, Result};

pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// f32 values as little-endian bytes of `dtype` (F32, F16 or BF16).
pub fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes every weight of `model` to `path` as `dtype` (F32, F16 or BF16).
pub fn save_safetensors(model: &CausalLm, path: &Path, dtype: Dtype) -> Result<()> {
    let mut tensors: Vec<EncodedTensor> = Vec::new();
    let mut push = |name: String, values: Vec<f32>, shape: Vec<usize>| {
        tensors.push((name, encode(&values, dtype), shape));
    };
    let push_linear =
        |push: &mut dyn FnMut(String, Vec<f32>, Vec<usize>), name: &str, l: &Linear| {
            let [d_in, d_out] = l.dims();
            push(
                format!("{name}.weight"),
                transpose(&host(l.weight.dense()), d_in, d_out),
                vec![d_out, d_in],
            );
            if let Some(b) = &l.bias {
                push(format!("{name}.bias"), host(b.val()), vec![d_out]);
            }
        };
    let embed = model.embed_tokens.dense();
    let dims = embed.dims();
    push(
        "model.embed_tokens.weight".into(),
        host(embed),
        dims.to_vec(),
    );
    // Norm weights as stored (Gemma's `(1 + w)` offset is applied in the forward only).
    for (name, norm) in model.norms() {
        let w = norm.weight.val();
        let d = w.dims();
        push(format!("{name}.weight"), host(w), d.to_vec());
    }
    for (name, l) in model.projections() {
        push_linear(&mut push, &name, l);
    }
    if let Some(head) = &model.lm_head {
        push_linear(&mut push, "lm_head", head);
    }
    write_safetensors(path, &tensors, dtype, &[("format", "pt".into())])
}

/// One tensor to write: name, raw little-endian bytes, shape.
pub type EncodedTensor = (String, Vec<u8>, Vec<usize>);

/// Writes `tensors` (all of `dtype`) and string `metadata` to a safetensors file at `path`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[EncodedTensor],
    dtype: Dtype,
    metadata: &[(&str, String)],
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, data, shape)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), data)
                .expect("byte length matches shape and dtype");
            (name.clone(), view)
        })
        .collect();
    let metadata = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| Error::weights(path, format!("cannot write: {e}")))
}

/// Copies the config, generation config and tokenizer files of a model directory (those present)
/// into `to`; for a GGUF file, writes the `config.json`, `tokenizer.json` and
/// `tokenizer_config.json` its metadata describes.
pub fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    if crate::gguf::is_gguf(from) {
        let gguf = crate::gguf::GgufFile::open(from)?;
        let (tokenizer, tokenizer_config) = crate::gguf::tokenizer::tokenizer_files(&gguf)?;
        let config = crate::gguf::config::config_json(&gguf)?;
        for (name, json) in [
            ("config.json", config),
            ("tokenizer.json", tokenizer),
            ("tokenizer_config.json", tokenizer_config),
        ] {
            let text = serde_json::to_string_pretty(&json).expect("JSON values serialize");
            crate::io::write_file(&to.join(name), text)?;
        }
        return Ok(());
    }
    for name in super::MODEL_FILES {
        let src = from.join(name);
        if src.is_file() {
            std::fs::copy(&src, to.join(name)).map_err(|e| Error::io(&src, e))?;
        }
    }
    Ok(())
}

/// Writes `model` as a complete Hugging Face directory `dir`, atomically: `model.safetensors` in
/// `dtype` plus the config, generation config and tokenizer files of `source`.
pub fn save_model_dir(model: &CausalLm, source: &Path, dir: &Path, dtype: Dtype) -> Result<()> {
    crate::io::write_dir(dir, |tmp| {
        save_safetensors(model, &tmp.join("model.safetensors"), dtype)?;
        copy_model_files(source, tmp)
    })
}
