//! Precomputed reference log-probs: the reference model (adapters off) is fixed during training,
//! so its log-probs are computed once, before the first step, and cached in the output directory
//! under a key that covers the model's files, the weights' storage precision and the exact token ids (so any change to the data,
//! the tokenizer or `max_length` invalidates it). Each training step then skips the reference
//! forward pass.

use std::path::Path;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{TokenizedPair, make_batch};
use crate::error::{Error, Result};
use crate::eval::{reference_logps, split_pairs};
use crate::metrics::host_values;
use crate::model::CausalLm;
use crate::precision;

const FILE: &str = "reference_logps.json";

#[derive(Serialize, Deserialize)]
struct CacheFile {
    key: String,
    /// `(chosen, rejected)` per training pair, in pair order.
    logps: Vec<(f64, f64)>,
}

/// FNV-1a over everything that determines the reference log-probs.
fn cache_key(model_dir: &Path, weight_dtype: &str, pairs: &[TokenizedPair]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(weight_dtype.as_bytes());
    if let Ok(config) = std::fs::read(model_dir.join("config.json")) {
        feed(&config);
    }
    if let Ok(entries) = std::fs::read_dir(model_dir) {
        let mut files: Vec<(String, u64)> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            .map(|e| {
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                (e.file_name().to_string_lossy().into_owned(), len)
            })
            .collect();
        files.sort();
        for (name, len) in files {
            feed(name.as_bytes());
            feed(&len.to_le_bytes());
        }
    }
    for p in pairs {
        for part in [&p.prompt, &p.chosen, &p.rejected] {
            feed(&(part.len() as u64).to_le_bytes());
            for id in part.iter() {
                feed(&id.to_le_bytes());
            }
        }
    }
    format!("{h:016x}")
}

/// Reference `(chosen, rejected)` log-probs of every pair, from the cache in `output` when its key
/// (model files, the frozen weights' storage dtype, token ids) matches, else
/// computed (adapters off) and written there.
pub fn load_or_compute(
    output: &Path,
    model_dir: &Path,
    model: &mut CausalLm,
    pairs: &[TokenizedPair],
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> Result<Vec<(f64, f64)>> {
    let weight_dtype = precision::dtype_name(precision::stored_dtype(model));
    let key = cache_key(model_dir, weight_dtype, pairs);
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
    let mut logps = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&TokenizedPair> = chunk.iter().collect();
        let batch = make_batch(&refs, pad_id, device);
        let (chosen, rejected) = split_pairs(reference_logps(model, &batch), batch.pairs);
        logps.extend(host_values(chosen).into_iter().zip(host_values(rejected)));
    }
    let tmp = output.join(format!("{FILE}.partial"));
    let text = serde_json::to_string(&CacheFile {
        key,
        logps: logps.clone(),
    })
    .expect("cache");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(logps)
}
