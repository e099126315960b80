//! The tensors of a GGUF file under transformers' names, dequantized to f32 and laid out as
//! transformers' GGUF loader lays them out: llama.cpp's names mapped back
//! (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`), the Q/K row permutation of
//! the `llama` architecture undone, and Gemma's `+1` on norm weights taken off.
//!
//! `rope_freqs.weight` (Llama 3's RoPE scaling) is read into the config by `gguf::config`. The
//! same mapping, run the other way, is what the GGUF writer uses (`gguf::write`). Q8_0 and Q4_0
//! projections can also be taken as they are, as blocks (`frozen_precision: q8 | q4`).

use std::collections::HashSet;

use burn::tensor::FloatDType;

use super::file::GgufFile;
use super::types::GgmlType;
use crate::error::{Error, Result};
use crate::kernels::projection::BlockFormat;
use crate::model::ModelConfig;
use crate::model::checkpoint::WeightSource;
use crate::model::config::Architecture;
use crate::model::precision::Storage;
use crate::model::quantized::BlockWeight;

/// `(transformers' suffix inside a layer, llama.cpp's)` for every architecture but Gemma 3's norms.
const LAYER_NAMES: [(&str, &str); 11] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];

/// Gemma 3's four norms per block.
const GEMMA_NORMS: [(&str, &str); 4] = [
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "post_attention_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
];

/// llama.cpp's name of transformers' tensor `name` (`None`: not a tensor GGUF stores).
pub fn gguf_name(name: &str, architecture: Architecture) -> Option<String> {
    match name {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let gemma = architecture == Architecture::Gemma3;
    let table: &[(&str, &str)] = if gemma && module.ends_with("layernorm") {
        &GEMMA_NORMS
    } else {
        &LAYER_NAMES
    };
    let (_, short) = table.iter().find(|(hf, _)| *hf == module)?;
    Some(format!("blk.{layer}.{short}.{kind}"))
}

/// What loading changes on a tensor, by its llama.cpp name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Stored as transformers stores it.
    Plain,
    /// llama.cpp interleaved the rotary halves of each of `heads` heads (`llama` q and k).
    Permuted { heads: usize },
    /// Gemma norms: llama.cpp stores `1 + w`.
    PlusOne,
}

/// How llama.cpp changed tensor `gguf_name` of a model of `config`.
pub fn layout(gguf_name: &str, config: &ModelConfig) -> Layout {
    let gemma = config.architecture == Architecture::Gemma3;
    let llama = matches!(
        config.architecture,
        Architecture::Llama | Architecture::Mistral
    );
    if gemma && gguf_name.ends_with("norm.weight") {
        Layout::PlusOne
    } else if llama && gguf_name.contains(".attn_q.") {
        Layout::Permuted {
            heads: config.num_attention_heads,
        }
    } else if llama && gguf_name.contains(".attn_k.") {
        Layout::Permuted {
            heads: config.num_key_value_heads,
        }
    } else {
        Layout::Plain
    }
}

/// Rows `[heads, half, 2, cols]` → `[heads, 2, half, cols]` (`inverse`: the other way), the
/// row order llama.cpp's converter gives q and k so its RoPE can rotate adjacent pairs (`cols`
/// elements per row: values, or the bytes of a row of blocks).
pub fn permute_rows<T: Copy + Default>(
    values: &[T],
    heads: usize,
    cols: usize,
    inverse: bool,
) -> Vec<T> {
    let rows = values.len() / cols;
    let half = rows / heads / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for a in 0..2 {
            for j in 0..half {
                let transformers_row = h * 2 * half + a * half + j;
                let llama_cpp_row = h * 2 * half + j * 2 + a;
                let (to, from) = if inverse {
                    (llama_cpp_row, transformers_row)
                } else {
                    (transformers_row, llama_cpp_row)
                };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// The storage precision of a GGUF's projections when every one is F16, BF16, Q8_0 or Q4_0 (the
/// same for all; other quantized types dequantize to f32).
pub fn storage(gguf: &GgufFile) -> Option<Storage> {
    let mut types = gguf
        .tensors
        .iter()
        .filter(|(name, info)| name.starts_with("blk.") && info.dims.len() == 2)
        .map(|(_, info)| info.ggml_type);
    let first = types.next()?;
    let all_same = types.all(|t| t == first);
    match first {
        GgmlType::F16 if all_same => Some(Storage::Dense(FloatDType::F16)),
        GgmlType::Bf16 if all_same => Some(Storage::Dense(FloatDType::BF16)),
        GgmlType::Q8_0 if all_same => Some(Storage::Blocks(BlockFormat::Q8_0)),
        GgmlType::Q4_0 if all_same => Some(Storage::Blocks(BlockFormat::Q4_0)),
        _ => None,
    }
}

/// A GGUF file as a [`WeightSource`].
pub struct GgufWeights<'a> {
    gguf: &'a GgufFile,
    config: &'a ModelConfig,
    taken: HashSet<String>,
}

impl<'a> GgufWeights<'a> {
    pub fn new(gguf: &'a GgufFile, config: &'a ModelConfig) -> Self {
        Self {
            gguf,
            config,
            taken: HashSet::new(),
        }
    }

    /// Fails if the file holds tensors the model never asked for.
    pub fn finish(self) -> Result<()> {
        let unexpected: Vec<&str> = self
            .gguf
            .order
            .iter()
            .filter(|n| !self.taken.contains(*n) && n.as_str() != super::config::ROPE_FREQS)
            .map(String::as_str)
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        Err(Error::weights(
            &self.gguf.path,
            format!(
                "{} unexpected tensor(s) in the GGUF file: {}{}",
                unexpected.len(),
                unexpected[..unexpected.len().min(5)].join(", "),
                if unexpected.len() > 5 { ", …" } else { "" }
            ),
        ))
    }
}

impl WeightSource for GgufWeights<'_> {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let short = gguf_name(name, self.config.architecture).ok_or_else(|| {
            Error::weights(&self.gguf.path, format!("no GGUF name for tensor `{name}`"))
        })?;
        let info = self.gguf.info(&short)?;
        if info.torch_shape() != shape {
            return Err(Error::weights(
                &self.gguf.path,
                format!(
                    "tensor `{short}` has ggml dims {:?} (PyTorch shape {:?}), expected {shape:?} \
                     from the metadata",
                    info.dims,
                    info.torch_shape()
                ),
            ));
        }
        let values = info.ggml_type.dequantize(self.gguf.bytes(&short)?);
        self.taken.insert(short.clone());
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        Ok(match layout(&short, self.config) {
            Layout::Plain => values,
            Layout::PlusOne => values.into_iter().map(|v| v - 1.0).collect(),
            Layout::Permuted { heads } => permute_rows(&values, heads, cols, false),
        })
    }

    /// A tensor already in `format`'s blocks is used as it is (its rows permuted back where
    /// llama.cpp permuted them: blocks run along rows, so whole rows of blocks move).
    fn take_blocks(
        &mut self,
        name: &str,
        shape: [usize; 2],
        format: BlockFormat,
    ) -> Result<Vec<u8>> {
        let short = gguf_name(name, self.config.architecture).filter(|short| {
            let info = self.gguf.tensors.get(short);
            info.is_some_and(|i| i.ggml_type == format_type(format) && i.torch_shape() == shape)
        });
        let Some(short) = short else {
            let values = self.take(name, &shape)?;
            return Ok(BlockWeight::quantize_ggml(&values, format));
        };
        let bytes = self.gguf.bytes(&short)?;
        let row_bytes = bytes.len() / shape[0];
        let blocks = match layout(&short, self.config) {
            Layout::Permuted { heads } => permute_rows(bytes, heads, row_bytes, false),
            Layout::Plain | Layout::PlusOne => bytes.to_vec(),
        };
        self.taken.insert(short);
        Ok(blocks)
    }

    fn ignore(&mut self, name: &str) {
        if let Some(short) = gguf_name(name, self.config.architecture) {
            self.taken.insert(short);
        }
    }
}

/// The ggml type of a block format.
fn format_type(format: BlockFormat) -> GgmlType {
    match format {
        BlockFormat::Q8_0 => GgmlType::Q8_0,
        BlockFormat::Q4_0 => GgmlType::Q4_0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_of_the_norm_tables() {
        let llama = Architecture::Llama;
        let gemma = Architecture::Gemma3;
        let name = |n: &str, a| gguf_name(n, a).unwrap();
        assert_eq!(
            name("model.layers.3.self_attn.q_proj.weight", llama),
            "blk.3.attn_q.weight"
        );
        assert_eq!(
            name("model.layers.0.post_attention_layernorm.weight", llama),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            name("model.layers.0.post_attention_layernorm.weight", gemma),
            "blk.0.post_attention_norm.weight"
        );
        assert_eq!(
            name("model.layers.1.pre_feedforward_layernorm.weight", gemma),
            "blk.1.ffn_norm.weight"
        );
        assert_eq!(name("lm_head.weight", llama), "output.weight");
        assert_eq!(gguf_name("model.layers.0.self_attn.rotary.x", llama), None);
    }

    #[test]
    fn the_row_permutation_interleaves_each_heads_halves_and_inverts() {
        // One head of 4 rows (half = 2), 1 column: transformers [r0 r1 | r2 r3] is stored by
        // llama.cpp as [r0 r2 r1 r3].
        let llama_cpp = [0.0, 2.0, 1.0, 3.0];
        let transformers = permute_rows(&llama_cpp, 1, 1, false);
        assert_eq!(transformers, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(permute_rows(&transformers, 1, 1, true), llama_cpp.to_vec());
        // Two heads, two columns: each head permuted on its own, rows move whole.
        let v: Vec<f32> = (0..16).map(|i| i as f32).collect();
        let there = permute_rows(&v, 2, 2, true);
        assert_eq!(permute_rows(&there, 2, 2, false), v);
        assert_eq!(&there[0..4], &[0.0, 1.0, 4.0, 5.0]);
    }
}
