//! Writes a model as one GGUF file that llama.cpp (and so Ollama and LM Studio) and transformers'
//! GGUF loader read: GGUF v3, llama.cpp's metadata keys and tensor names, its Q/K row order for
//! `llama` and Gemma's `1 + w` norms, 32-byte alignment, 2-D weights in F16 or Q8_0 (a row whose
//! length is not a multiple of 32 falls back to F16, as llama.cpp does), norms and biases in F32.
//!
//! The tokenizer metadata comes from the base model (`write_tokenizer.rs`).

use std::io::Write;
use std::path::Path;

use super::file::{DEFAULT_ALIGNMENT, MAGIC, Value};
use super::types::{GgmlType, encode_f16, quantize_q4_0, quantize_q8_0};
use super::weights::{Layout, gguf_name, layout, permute_rows};
pub use super::write_tokenizer::TokenizerSource;
use super::write_tokenizer::tokenizer_metadata;
use crate::error::{Error, Result};
use crate::model::config::{Architecture, LayerKind, RopeScaling};
use crate::model::save::host;
use crate::model::{CausalLm, ModelConfig};

/// The type of the 2-D weights of a written GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GgufWeightType {
    /// IEEE half (lossless for an f16 model, 2 bytes a weight).
    F16,
    /// 8-bit blocks of 32 with an f16 scale (8.5 bits a weight).
    #[value(name = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with an f16 scale (4.5 bits a weight; a base that `frozen_precision:
    /// q4` keeps as it is).
    #[value(name = "q4_0")]
    Q4_0,
}

impl GgufWeightType {
    fn ggml(self) -> GgmlType {
        match self {
            Self::F16 => GgmlType::F16,
            Self::Q8_0 => GgmlType::Q8_0,
            Self::Q4_0 => GgmlType::Q4_0,
        }
    }

    /// `general.file_type`: llama.cpp's `LLAMA_FTYPE_MOSTLY_F16` / `_Q8_0` / `_Q4_0`.
    fn file_type(self) -> u32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7,
            Self::Q4_0 => 2,
        }
    }
}

/// llama.cpp's architecture name of `config`.
fn arch_name(config: &ModelConfig) -> &'static str {
    match config.architecture {
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma3 => "gemma3",
    }
}

/// Gemma 3 in GGUF has no layer pattern: llama.cpp (and transformers' GGUF loader) make every
/// sixth layer full and the others sliding, so a model laid out otherwise cannot be written.
fn check_gemma_layers(config: &ModelConfig) -> Result<()> {
    let fits = config.layer_kinds.iter().enumerate().all(|(i, kind)| {
        let full = (i + 1).is_multiple_of(6);
        full == (*kind == LayerKind::Full)
    });
    if config.architecture != Architecture::Gemma3 || fits {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "this Gemma 3 model's layer types ({:?}) are not GGUF's fixed pattern (every sixth layer \
         full attention, the others sliding); llama.cpp would run it wrongly",
        config.layer_kinds
    )))
}

/// The architecture keys llama.cpp reads for `config`.
fn model_metadata(config: &ModelConfig, wtype: GgufWeightType) -> Result<Vec<(String, Value)>> {
    check_gemma_layers(config)?;
    let arch = arch_name(config);
    let c = config;
    let u = |v: usize| Value::U32(v as u32);
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.file_type".into(), Value::U32(wtype.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        (
            "general.alignment".into(),
            Value::U32(DEFAULT_ALIGNMENT as u32),
        ),
    ];
    let mut key = |k: &str, v: Value| kv.push((format!("{arch}.{k}"), v));
    key("context_length", u(c.max_position_embeddings));
    key("embedding_length", u(c.hidden_size));
    key("block_count", u(c.num_hidden_layers));
    key("feed_forward_length", u(c.intermediate_size));
    key("attention.head_count", u(c.num_attention_heads));
    key("attention.head_count_kv", u(c.num_key_value_heads));
    key(
        "attention.layer_norm_rms_epsilon",
        Value::F32(c.rms_norm_eps as f32),
    );
    key("rope.freq_base", Value::F32(c.rope_theta as f32));
    key("attention.key_length", u(c.head_dim));
    key("attention.value_length", u(c.head_dim));
    key("vocab_size", u(c.vocab_size));
    if arch == "llama" {
        key("rope.dimension_count", u(c.head_dim));
    }
    if let Some(window) = c.layer_kinds.iter().find_map(|k| match k {
        LayerKind::Sliding { window } => Some(*window),
        LayerKind::Full => None,
    }) {
        key("attention.sliding_window", u(window));
    }
    if let RopeScaling::Linear { factor } = c.rope_scaling {
        key("rope.scaling.type", Value::String("linear".into()));
        key("rope.scaling.factor", Value::F32(factor as f32));
    }
    Ok(kv)
}

/// llama.cpp's `rope_freqs.weight` for Llama 3 RoPE scaling: one frequency divisor per rotary
/// pair (`convert_hf_to_gguf.py`'s formula).
pub fn llama3_rope_factors(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Option<Vec<f32>> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings: old,
    } = *scaling
    else {
        return None;
    };
    let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
    let factors = (0..head_dim / 2).map(|i| {
        let exponent = (2 * i) as f32 / head_dim as f32;
        let freq = 1.0 / (theta as f32).powf(exponent);
        let wavelen = 2.0 * std::f64::consts::PI / freq as f64;
        let f = if wavelen < high_wavelen {
            1.0
        } else if wavelen > low_wavelen {
            factor
        } else {
            let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
            1.0 / ((1.0 - smooth) / factor + smooth)
        };
        f as f32
    });
    Some(factors.collect())
}

/// One tensor to write: llama.cpp name, ggml dims, type and values (f32, in llama.cpp's layout).
struct OutTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    values: Vec<f32>,
}

/// Every tensor of `model` in llama.cpp's names, layouts and types.
fn tensors(model: &CausalLm, wtype: GgufWeightType) -> Result<Vec<OutTensor>> {
    let config = &model.config;
    let mut out = Vec::new();
    let mut push = |hf: &str, values: Vec<f32>, torch_shape: &[usize]| -> Result<()> {
        let name = gguf_name(hf, config.architecture)
            .ok_or_else(|| Error::Invalid(format!("no GGUF name for tensor `{hf}`")))?;
        let cols = *torch_shape.last().expect("a shape");
        let values = match layout(&name, config) {
            Layout::Plain => values,
            Layout::PlusOne => values.into_iter().map(|v| v + 1.0).collect(),
            Layout::Permuted { heads } => permute_rows(&values, heads, cols, true),
        };
        let ggml_type = match torch_shape.len() {
            1 => GgmlType::F32,
            _ if wtype != GgufWeightType::F16 && !cols.is_multiple_of(32) => GgmlType::F16,
            _ => wtype.ggml(),
        };
        out.push(OutTensor {
            name,
            dims: torch_shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type,
            values,
        });
        Ok(())
    };
    let embed = model.embed_tokens.dense();
    let dims = embed.dims();
    push("model.embed_tokens.weight", host(embed), &dims)?;
    for (name, norm) in model.norms() {
        let w = norm.weight.val();
        let len = w.dims()[0];
        push(&format!("{name}.weight"), host(w), &[len])?;
    }
    let mut linears = model.projections();
    if let Some(head) = &model.lm_head {
        linears.push(("lm_head".into(), head));
    }
    for (name, linear) in linears {
        let [d_in, d_out] = linear.dims();
        let w = crate::model::checkpoint::transpose(&host(linear.weight.dense()), d_in, d_out);
        push(&format!("{name}.weight"), w, &[d_out, d_in])?;
        if let Some(b) = &linear.bias {
            push(&format!("{name}.bias"), host(b.val()), &[d_out])?;
        }
    }
    if let Some(factors) =
        llama3_rope_factors(config.head_dim, config.rope_theta, &config.rope_scaling)
    {
        let len = factors.len() as u64;
        out.push(OutTensor {
            name: "rope_freqs.weight".into(),
            dims: vec![len],
            ggml_type: GgmlType::F32,
            values: factors,
        });
    }
    Ok(out)
}

fn encode(t: &OutTensor) -> Vec<u8> {
    match t.ggml_type {
        GgmlType::F16 => encode_f16(&t.values),
        GgmlType::Q8_0 => quantize_q8_0(&t.values),
        GgmlType::Q4_0 => quantize_q4_0(&t.values),
        _ => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn write_string(w: &mut dyn Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn write_value(w: &mut dyn Write, v: &Value) -> std::io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&[*x]),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[*x as u8]),
        Value::String(s) => write_string(w, s),
        Value::Array(items) => {
            // An empty array is written as an array of strings, as the `gguf` package does.
            let inner = items.first().map_or(8, type_id);
            w.write_all(&inner.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|item| write_value(w, item))
        }
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

fn padding(len: u64) -> usize {
    (len.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT - len) as usize
}

/// Writes `model` to `path` as a GGUF with its 2-D weights in `wtype` and the tokenizer of
/// `tokenizer`, atomically. Tensors are encoded one at a time.
pub fn write_gguf(
    model: &CausalLm,
    tokenizer: &TokenizerSource,
    path: &Path,
    wtype: GgufWeightType,
) -> Result<()> {
    let mut metadata = model_metadata(&model.config, wtype)?;
    metadata.extend(tokenizer_metadata(tokenizer)?);
    let tensors = tensors(model, wtype)?;
    crate::io::atomic::write_file_with(path, |w| {
        w.write_all(&MAGIC.to_le_bytes())?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(metadata.len() as u64).to_le_bytes())?;
        let mut header_len = 24u64;
        let mut counting = CountingWriter { inner: w, count: 0 };
        for (key, value) in &metadata {
            write_string(&mut counting, key)?;
            counting.write_all(&type_id(value).to_le_bytes())?;
            write_value(&mut counting, value)?;
        }
        let mut offset = 0u64;
        for t in &tensors {
            write_string(&mut counting, &t.name)?;
            counting.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                counting.write_all(&d.to_le_bytes())?;
            }
            counting.write_all(&t.ggml_type.id().to_le_bytes())?;
            counting.write_all(&offset.to_le_bytes())?;
            let len = t
                .ggml_type
                .bytes_for(t.dims.iter().product())
                .expect("whole blocks");
            offset += len + padding(len) as u64;
        }
        header_len += counting.count;
        let w = counting.inner;
        w.write_all(&vec![0u8; padding(header_len)])?;
        for t in &tensors {
            let bytes = encode(t);
            w.write_all(&bytes)?;
            w.write_all(&vec![0u8; padding(bytes.len() as u64)])?;
        }
        Ok(())
    })
}

/// Counts the bytes written through it (the header's length decides the data's padding).
struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
