//! Precomputed reference log-probs: the reference model (adapters off) is fixed during training,
//! so its log-probs are computed once, before the first step, and cached in the output directory
//! under a key that covers the contents of the model's weight, config and tokenizer files, the
//! weights' storage precision and the exact token ids (so retraining the base in place, or any
//! change to the data, the tokenizer or `max_length`, invalidates it). Each training step then
//! skips the reference forward pass.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{TokenizedPair, make_batch};
use crate::dpo::eval::PairScoring;
use crate::dpo::metrics::host_values;
use crate::dpo::step::reference_logps;
use crate::error::{Error, Result};
use crate::io::hash::ContentHash;
use crate::io::write_file;
use crate::model::CausalLm;
use crate::model::precision;

/// The cache file in a run's output directory.
pub const FILE: &str = "reference_logps.json";

#[derive(Serialize, Deserialize)]
struct CacheFile {
    key: String,
    /// `(chosen, rejected)` per training pair, in pair order.
    logps: Vec<(f64, f64)>,
}

/// The tokenizer and template files whose contents decide the token ids and so are part of the key.
const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// A hash of everything that determines the reference log-probs: the contents of `config.json`,
/// every weight file and the tokenizer files, the weights' storage precision and the token ids.
fn cache_key(model_dir: &Path, weight_dtype: &str, pairs: &[TokenizedPair]) -> Result<String> {
    let mut hash = ContentHash::new();
    hash.bytes(weight_dtype.as_bytes());
    // A GGUF file holds the config, the tokenizer and the weights.
    let mut files: Vec<PathBuf> = if model_dir.is_file() {
        vec![model_dir.to_path_buf()]
    } else {
        model_files(model_dir)?
    };
    files.sort();
    for file in &files {
        hash.file(file)?;
    }
    for p in pairs {
        for part in [&p.prompt, &p.chosen, &p.rejected] {
            let ids: Vec<u8> = part.iter().flat_map(|id| id.to_le_bytes()).collect();
            hash.bytes(&ids);
        }
    }
    Ok(hash.hex())
}

/// The files of a model directory that decide its outputs.
fn model_files(model_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(std::fs::read_dir(model_dir)
        .map_err(|e| Error::io(model_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| {
                n == "config.json"
                    || n.ends_with(".safetensors")
                    || n.ends_with(".safetensors.index.json")
                    || TOKENIZER_FILES.contains(&n.as_str())
            })
        })
        .collect())
}

/// Reference `(chosen, rejected)` log-probs of every pair, from the cache in `output` when its key
/// (model, tokenizer and weight file contents, the frozen weights' storage dtype and product
/// precision, token ids)
/// matches, else computed (the model's inference view, adapters off) and written there.
pub fn load_or_compute(
    output: &Path,
    model_dir: &Path,
    model: &CausalLm,
    pairs: &[TokenizedPair],
    scoring: &PairScoring,
    device: &Device,
) -> Result<Vec<(f64, f64)>> {
    let key = cache_key(model_dir, &precision::numerics(model), pairs)?;
    let path = output.join(FILE);
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(cache) = serde_json::from_str::<CacheFile>(&text)
        && cache.key == key
        && cache.logps.len() == pairs.len()
    {
        eprintln!("reference log-probs: reusing {}", path.display());
        return Ok(cache.logps);
    }
    eprintln!("reference log-probs: computing for {} pairs", pairs.len());
    let device = device.clone().inner();
    let mut logps = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(scoring.batch_size.max(1)) {
        let refs: Vec<&TokenizedPair> = chunk.iter().collect();
        let batch = make_batch(&refs, scoring.pad_id, scoring.layout, &device);
        let rows = reference_logps(model, &batch, scoring.logprob_chunk);
        let (chosen, rejected) = batch.split_rows(rows);
        logps.extend(host_values(chosen).into_iter().zip(host_values(rejected)));
    }
    let text = serde_json::to_string(&CacheFile {
        key,
        logps: logps.clone(),
    })
    .expect("cache");
    write_file(&path, text)?;
    Ok(logps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_weights_contents_not_their_names_and_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let pair = TokenizedPair {
            line: 1,
            prompt: vec![1, 2],
            chosen: vec![3],
            rejected: vec![4],
        };
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
        write("config.json", b"{}");
        write("model.safetensors", b"weights-1");
        write("tokenizer.json", b"tok-1");
        let key = || cache_key(dir.path(), "f32", std::slice::from_ref(&pair)).unwrap();
        let first = key();
        assert_eq!(first, key());
        // Retrained in place: same file name, same size, other values.
        write("model.safetensors", b"weights-2");
        let retrained = key();
        assert_ne!(retrained, first);
        write("tokenizer.json", b"tok-2");
        assert_ne!(key(), retrained);
        let bf16 = cache_key(dir.path(), "bf16", std::slice::from_ref(&pair)).unwrap();
        assert_ne!(bf16, key());
        let other_ids = TokenizedPair {
            chosen: vec![5],
            ..pair.clone()
        };
        assert_ne!(cache_key(dir.path(), "f32", &[other_ids]).unwrap(), key());
    }
}
