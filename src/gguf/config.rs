//! A GGUF file's model metadata as the `config.json` transformers' GGUF loader would build from it
//! (`{arch}.block_count` → `num_hidden_layers`, …), so the one validating parser
//! (`ModelConfig::from_json`) serves GGUF and Hugging Face models alike, and `merge` can write the
//! same `config.json` into a Hugging Face directory.
//!
//! Supported `general.architecture` values: `llama`, `qwen2`, `qwen3`, `gemma3`. What a GGUF does not
//! say comes from transformers' class defaults (Gemma 3's RoPE of local layers, its query scale and
//! layer pattern), as it does for transformers.

use serde_json::{Map, Value as Json, json};

use super::file::GgufFile;
use super::write::llama3_rope_factors;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::model::config::RopeScaling;

/// `general.architecture` values this crate loads, with the Hugging Face class each becomes.
pub const SUPPORTED: [(&str, &str, &str); 4] = [
    ("llama", "LlamaForCausalLM", "llama"),
    ("qwen2", "Qwen2ForCausalLM", "qwen2"),
    ("qwen3", "Qwen3ForCausalLM", "qwen3"),
    ("gemma3", "Gemma3ForCausalLM", "gemma3_text"),
];

/// The supported architectures, for error messages.
pub fn supported_names() -> String {
    let names: Vec<&str> = SUPPORTED.iter().map(|(a, _, _)| *a).collect();
    names.join(", ")
}

/// `(GGUF key suffix, config.json field)`, the keys every supported architecture shares.
const SHARED_KEYS: [(&str, &str); 8] = [
    ("context_length", "max_position_embeddings"),
    ("block_count", "num_hidden_layers"),
    ("feed_forward_length", "intermediate_size"),
    ("embedding_length", "hidden_size"),
    ("rope.freq_base", "rope_theta"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
];

/// The `config.json` of the model in `gguf`.
pub fn config_json(gguf: &GgufFile) -> Result<Json> {
    let arch = gguf.architecture()?;
    let Some(&(_, class, model_type)) = SUPPORTED.iter().find(|(a, _, _)| *a == arch) else {
        return Err(Error::weights(
            &gguf.path,
            format!(
                "unsupported architecture `{arch}` (metadata key `general.architecture`); \
                 supported: {}",
                supported_names()
            ),
        ));
    };
    let mut config = Map::new();
    config.insert("architectures".into(), json!([class]));
    config.insert("model_type".into(), json!(model_type));

    let number = |key: &str| -> Result<Option<Json>> {
        let full = format!("{arch}.{key}");
        let Some(value) = gguf.metadata.get(&full) else {
            return Ok(None);
        };
        if let Some(v) = value.as_u64() {
            return Ok(Some(json!(v)));
        }
        match value.as_f64() {
            Some(v) => Ok(Some(json!(f32_exact(v)))),
            None => Err(Error::weights(
                &gguf.path,
                format!("metadata key `{full}` is {value:?}, not a number"),
            )),
        }
    };
    let mut extra: Vec<(&str, &str)> = SHARED_KEYS.to_vec();
    // transformers reads `rope.dimension_count` as the head size of llama (RoPE covers the whole
    // head) and `attention.key_length` only for Gemma 3; llama.cpp writes `key_length` for every
    // architecture whose head size is not hidden / heads (Qwen3), and so it wins here.
    if arch == "llama" {
        extra.push(("rope.dimension_count", "head_dim"));
    }
    extra.push(("attention.key_length", "head_dim"));
    if arch == "gemma3" {
        extra.push(("attention.sliding_window", "sliding_window"));
    }
    extra.push(("vocab_size", "vocab_size"));
    for (key, field) in extra {
        if let Some(v) = number(key)? {
            config.insert(field.into(), v);
        }
    }
    for required in [
        "block_count",
        "embedding_length",
        "feed_forward_length",
        "attention.head_count",
    ] {
        gguf.get(&format!("{arch}.{required}"))?;
    }
    if !config.contains_key("vocab_size") {
        let tokens = gguf.get("tokenizer.ggml.tokens")?;
        let n = tokens.as_array().map_or(0, <[_]>::len);
        config.insert("vocab_size".into(), json!(n));
    }
    if let Some(scaling) = rope_scaling(gguf, arch)? {
        config.insert("rope_scaling".into(), scaling);
    }
    if gguf.tensors.contains_key(ROPE_FREQS) {
        let json = Json::Object(config.clone());
        let head_dim = ModelConfig::from_json(&json.to_string(), &gguf.path)?.head_dim;
        let theta = config
            .get("rope_theta")
            .and_then(Json::as_f64)
            .unwrap_or(10_000.0);
        let scaling = llama3_scaling(gguf, head_dim, theta)?;
        config.insert("rope_scaling".into(), scaling);
    }
    // llama.cpp drops the output head when it is tied to the embeddings.
    let tied = !gguf.tensors.contains_key("output.weight");
    config.insert("tie_word_embeddings".into(), json!(tied));
    // Qwen2 and Qwen3 carry biases on q/k/v as tensors, not as a flag.
    if arch == "llama" || arch == "qwen3" {
        let bias = gguf.tensors.contains_key("blk.0.attn_q.bias");
        config.insert("attention_bias".into(), json!(bias));
    }
    if arch == "llama" {
        let mlp_bias = gguf.tensors.contains_key("blk.0.ffn_up.bias");
        config.insert("mlp_bias".into(), json!(mlp_bias));
    }
    let id = |key: &str| gguf.metadata.get(key).and_then(|v| v.as_u64());
    if let Some(bos) = id("tokenizer.ggml.bos_token_id") {
        config.insert("bos_token_id".into(), json!(bos));
    }
    // Generation stops at EOS and, as in llama.cpp, at an end-of-turn token the file names.
    let stops: Vec<u64> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .into_iter()
        .filter_map(id)
        .collect();
    let eos = match stops.as_slice() {
        [] => None,
        [eos] => Some(json!(eos)),
        _ => Some(json!(stops)),
    };
    if let Some(eos) = eos {
        config.insert("eos_token_id".into(), eos);
    }
    config.insert("torch_dtype".into(), json!("float32"));
    Ok(Json::Object(config))
}

/// The tensor in which llama.cpp stores Llama 3's RoPE scaling: a divisor per rotary pair.
pub const ROPE_FREQS: &str = "rope_freqs.weight";

/// The Llama 3 `rope_scaling` whose divisors are `rope_freqs.weight`: `factor` is the largest, and
/// the other three are the first of Llama 3.x's own (1, 4, 8192) and nearby powers of two that
/// reproduce every divisor. transformers' GGUF loader ignores the tensor (and so runs Llama 3.1+
/// GGUFs without their scaling); llama.cpp applies it, and so does minordpo.
fn llama3_scaling(gguf: &GgufFile, head_dim: usize, theta: f64) -> Result<Json> {
    let info = gguf.info(ROPE_FREQS)?;
    let stored = info.ggml_type.dequantize(gguf.bytes(ROPE_FREQS)?);
    let factor = stored.iter().copied().fold(1.0f32, f32::max) as f64;
    // Released models' values first: a small head can fit several, all with the same divisors.
    for (low, high) in [(1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (2.0, 4.0)] {
        let originals = [
            8192u32, 4096, 16384, 32768, 65536, 131072, 2048, 1024, 512, 256, 128, 64,
        ];
        for original in originals.map(f64::from) {
            let scaling = RopeScaling::Llama3 {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: original,
            };
            let Some(want) = llama3_rope_factors(head_dim, theta, &scaling) else {
                continue;
            };
            let close = |(a, b): (&f32, &f32)| (a - b).abs() <= 1e-4 * a.abs().max(1.0);
            if want.len() == stored.len() && want.iter().zip(&stored).all(close) {
                return Ok(json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                    "high_freq_factor": high, "original_max_position_embeddings": original,
                }));
            }
        }
    }
    Err(Error::weights(
        &gguf.path,
        format!(
            "tensor `{ROPE_FREQS}` holds RoPE frequency factors that are not Llama 3's scaling; \
             only that scaling is supported"
        ),
    ))
}

/// `{arch}.rope.scaling.*` as a `rope_scaling` object (`linear` only; `none` is no scaling).
fn rope_scaling(gguf: &GgufFile, arch: &str) -> Result<Option<Json>> {
    let key = format!("{arch}.rope.scaling.type");
    let Some(kind) = gguf.metadata.get(&key) else {
        return Ok(None);
    };
    match kind.as_str() {
        Some("none") => Ok(None),
        Some("linear") => {
            let factor = gguf.get(&format!("{arch}.rope.scaling.factor"))?;
            let factor = factor.as_f64().unwrap_or(1.0);
            Ok(Some(
                json!({"rope_type": "linear", "factor": f32_exact(factor)}),
            ))
        }
        _ => Err(Error::weights(
            &gguf.path,
            format!("metadata key `{key}` is {kind:?}; supported RoPE scaling: none, linear"),
        )),
    }
}

/// An f32 metadata value as the shortest f64 that prints back to the same f32 (`1e-5`, not
/// `9.999999747378752e-6`), as Python's json writes the value transformers reads.
fn f32_exact(v: f64) -> f64 {
    let f = v as f32;
    if f as f64 != v {
        return v;
    }
    format!("{f}").parse().unwrap_or(v)
}

/// The validated model configuration of `gguf`.
pub fn model_config(gguf: &GgufFile) -> Result<ModelConfig> {
    let json = config_json(gguf)?;
    ModelConfig::from_json(&json.to_string(), &gguf.path)
}
