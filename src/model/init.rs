//! Models from random weights: a Llama shape (the demo's tiny model, or a real model's shape for
//! benchmarks) written as a Hugging Face directory — `config.json`, `generation_config.json`,
//! `model.safetensors` — initialised as transformers does (normal(0, 0.02) weights, unit norms).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::save::{EncodedTensor, encode, write_safetensors};
use crate::error::{Error, Result};
use crate::io::Rng;

/// The shape of a Llama-architecture model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaShape {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Longest sequence the model is meant for.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

fn default_positions() -> usize {
    512
}
fn default_theta() -> f64 {
    10_000.0
}

impl LlamaShape {
    /// `config.json` for this shape with `vocab_size` tokens and the given special ids.
    pub fn hf_config(&self, vocab_size: usize, eos: u32, pad: u32) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.hidden_size / self.num_attention_heads,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "tie_word_embeddings": self.tie_word_embeddings,
            "vocab_size": vocab_size,
            "bos_token_id": null,
            "eos_token_id": eos,
            "pad_token_id": pad,
            "torch_dtype": "float32",
        })
    }
}

/// `n` samples of normal(0, std) (Box–Muller on the seeded generator).
fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
        let u2 = rng.next_f64();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// Random weights by name: unit norm scales, biases 0, everything else uniform with std 0.02
/// (cheaper than normal draws for billion-parameter benchmark models, and the same scale).
pub struct RandomWeights {
    rng: Rng,
    /// The stored norm weight that gives a unit scale (1, or 0 for Gemma's `1 + w`).
    unit_norm: f32,
}

impl RandomWeights {
    /// Weights from `seed`, for norms applied as `norm_weight_offset + w`.
    pub fn new(seed: u64, norm_weight_offset: f64) -> Self {
        Self {
            rng: Rng::new(seed),
            unit_norm: (1.0 - norm_weight_offset) as f32,
        }
    }
}

impl super::checkpoint::WeightSource for RandomWeights {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n = shape.iter().product();
        Ok(if name.ends_with("norm.weight") {
            vec![self.unit_norm; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let half_width = 0.02 * 3f64.sqrt();
            (0..n)
                .map(|_| ((2.0 * self.rng.next_f64() - 1.0) * half_width) as f32)
                .collect()
        })
    }

    fn take_transposed(&mut self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        self.take(name, &[rows, cols])
    }

    fn ignore(&mut self, _name: &str) {}
}

/// Writes a randomly initialised model of `shape` into `dir` (weights as `dtype`).
pub fn write_random_model(
    dir: &Path,
    shape: &LlamaShape,
    vocab_size: usize,
    (eos, pad): (u32, u32),
    seed: u64,
    dtype: safetensors::Dtype,
) -> Result<()> {
    if shape.num_attention_heads == 0
        || !shape.hidden_size.is_multiple_of(shape.num_attention_heads)
    {
        return Err(Error::Invalid(format!(
            "model shape: hidden_size {} is not a multiple of num_attention_heads {}",
            shape.hidden_size, shape.num_attention_heads
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut rng = Rng::new(seed);
    let (h, i) = (shape.hidden_size, shape.intermediate_size);
    let hd = h / shape.num_attention_heads;
    let (q, kv) = (
        shape.num_attention_heads * hd,
        shape.num_key_value_heads * hd,
    );
    let mut tensors: Vec<EncodedTensor> = Vec::new();
    let mut weight = |name: String, shape: Vec<usize>| {
        let values = normal(&mut rng, shape.iter().product(), 0.02);
        tensors.push((name, encode(&values, dtype), shape));
    };
    weight("model.embed_tokens.weight".into(), vec![vocab_size, h]);
    for l in 0..shape.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (name, out, inp) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            weight(format!("{p}.{name}.weight"), vec![out, inp]);
        }
    }
    if !shape.tie_word_embeddings {
        weight("lm_head.weight".into(), vec![vocab_size, h]);
    }
    let ones = encode(&vec![1.0; h], dtype);
    for l in 0..shape.num_hidden_layers {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            tensors.push((
                format!("model.layers.{l}.{norm}.weight"),
                ones.clone(),
                vec![h],
            ));
        }
    }
    tensors.push(("model.norm.weight".into(), ones, vec![h]));
    write_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        dtype,
        &[("format", "pt".into())],
    )?;
    let write_json = |name: &str, value: serde_json::Value| {
        let text = serde_json::to_string_pretty(&value).expect("json");
        crate::io::write_file(&dir.join(name), text)
    };
    write_json("config.json", shape.hf_config(vocab_size, eos, pad))?;
    write_json(
        "generation_config.json",
        serde_json::json!({"eos_token_id": eos, "pad_token_id": pad, "do_sample": false}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CausalLm;
    use burn::prelude::*;

    #[test]
    fn random_models_load_with_the_declared_shape() {
        let shape = LlamaShape {
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 64,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
        };
        let dir = tempfile::tempdir().unwrap();
        write_random_model(dir.path(), &shape, 50, (1, 2), 7, safetensors::Dtype::F32).unwrap();
        let model = CausalLm::load(dir.path(), &Device::flex()).unwrap();
        assert_eq!(model.config.vocab_size, 50);
        assert!(model.lm_head.is_none());
        let embed: Vec<f32> = model
            .embed_tokens
            .dense()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let mean = embed.iter().sum::<f32>() / embed.len() as f32;
        let std =
            (embed.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / embed.len() as f32).sqrt();
        assert!(
            mean.abs() < 0.003 && (std - 0.02).abs() < 0.002,
            "{mean} {std}"
        );
        let logits = model.forward(Tensor::from_ints([[3, 4, 5]], &Device::flex()), None);
        assert_eq!(logits.dims(), [1, 3, 50]);
    }
}
