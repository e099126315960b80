//! Reads Hugging Face safetensors checkpoints (single file or sharded with
//! `model.safetensors.index.json`) through memory maps, one tensor at a time, converting f32, f16
//! and bf16 to f32. Peak host memory is the f32 model plus one tensor, not two copies of the model.
//!
//! Every tensor taken is recorded, so [`Checkpoint::finish`] can report tensors the model did not
//! expect; asking for a missing tensor or a wrong shape is an error naming it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

use super::quantized::BlockWeight;
use crate::error::{Error, Result};
use crate::kernels::projection::BlockFormat;

struct ShardFile {
    path: PathBuf,
    map: Mmap,
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// An open checkpoint: tensor names → (shard, layout).
pub struct Checkpoint {
    shards: Vec<ShardFile>,
    location: BTreeMap<String, usize>,
    taken: HashSet<String>,
    dir: PathBuf,
}

impl Checkpoint {
    /// Opens `DIR/model.safetensors`, or the shards listed in `DIR/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let shard_paths: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            let json: serde_json::Value = crate::io::read_json(&index)?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::weights(&index, "field `weight_map` missing or not an object")
                })?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            files.sort();
            files.dedup();
            files.into_iter().map(|f| dir.join(f)).collect()
        } else {
            return Err(Error::weights(
                &single,
                "not found (nor model.safetensors.index.json); only safetensors checkpoints are supported",
            ));
        };

        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut location = BTreeMap::new();
        for path in shard_paths {
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the file is opened read-only and not modified while mapped.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&map)
                .map_err(|e| Error::weights(&path, format!("not a valid safetensors file: {e}")))?;
            let tensors: HashMap<String, TensorInfo> = metadata
                .tensors()
                .into_iter()
                .map(|(name, info)| (name, info.clone()))
                .collect();
            for name in tensors.keys() {
                location.insert(name.clone(), shards.len());
            }
            shards.push(ShardFile {
                path,
                map,
                data_start: 8 + header_len,
                tensors,
            });
        }
        Ok(Self {
            shards,
            location,
            taken: HashSet::new(),
            dir: dir.to_path_buf(),
        })
    }

    /// The dtype of the first floating-point tensor (the checkpoint's storage precision).
    pub fn storage_dtype(&self) -> Option<Dtype> {
        self.shards
            .iter()
            .flat_map(|s| s.tensors.values())
            .map(|t| t.dtype)
            .find(|d| matches!(d, Dtype::F32 | Dtype::F16 | Dtype::BF16))
    }

    /// Reads `name` as f32 after checking it has `shape`.
    fn take_checked(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (path, info, bytes) = self.raw(name)?;
        if info.shape != shape {
            return Err(Error::weights(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?} from config.json",
                    info.shape
                ),
            ));
        }
        let values = decode_f32(bytes, info.dtype).ok_or_else(|| {
            Error::weights(
                path,
                format!(
                    "tensor `{name}` has unsupported dtype {:?}; supported: F32, F16, BF16",
                    info.dtype
                ),
            )
        })?;
        self.taken.insert(name.to_string());
        Ok(values)
    }

    /// Fails if the checkpoint holds tensors the model never asked for.
    pub fn finish(self) -> Result<()> {
        let unexpected: Vec<&String> = self
            .location
            .keys()
            .filter(|name| !self.taken.contains(*name) && !name.ends_with("rotary_emb.inv_freq"))
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unexpected.iter().take(5).map(|s| s.as_str()).collect();
        Err(Error::weights(
            &self.dir,
            format!(
                "{} unexpected tensor(s) in the checkpoint: {}{}",
                unexpected.len(),
                shown.join(", "),
                if unexpected.len() > 5 { ", …" } else { "" }
            ),
        ))
    }

    fn raw(&self, name: &str) -> Result<(&Path, &TensorInfo, &[u8])> {
        let Some(&shard) = self.location.get(name) else {
            return Err(Error::weights(
                &self.dir,
                format!("missing tensor `{name}` in the checkpoint"),
            ));
        };
        let shard = &self.shards[shard];
        let info = &shard.tensors[name];
        let (start, end) = info.data_offsets;
        let bytes = shard
            .map
            .get(shard.data_start + start..shard.data_start + end)
            .ok_or_else(|| {
                Error::weights(
                    &shard.path,
                    format!("tensor `{name}` lies outside the file"),
                )
            })?;
        Ok((&shard.path, info, bytes))
    }
}

/// Little-endian f32/f16/bf16 bytes → f32 values; `None` for other dtypes.
pub fn decode_f32(bytes: &[u8], dtype: Dtype) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::F16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        Dtype::BF16 => Some(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        ),
        _ => None,
    }
}

/// Row-major `[rows, cols]` → `[cols, rows]`, in cache-friendly tiles.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// Where the model's weights come from: a checkpoint on disk, or random values (benchmarks).
pub trait WeightSource {
    /// `name` as f32 values of `shape` (PyTorch layout).
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// A 2-D PyTorch weight `[rows, cols]` returned transposed, `[cols, rows]`.
    fn take_transposed(&mut self, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let values = self.take(name, &[rows, cols])?;
        Ok(transpose(&values, rows, cols))
    }

    /// A 2-D PyTorch weight `[rows, cols]` as ggml blocks of `format` (`cols` a multiple of 32):
    /// quantized here as llama.cpp quantizes, unless the source already holds such blocks.
    fn take_blocks(
        &mut self,
        name: &str,
        shape: [usize; 2],
        format: BlockFormat,
    ) -> Result<Vec<u8>> {
        let values = self.take(name, &shape)?;
        Ok(BlockWeight::quantize_ggml(&values, format))
    }

    /// Marks `name` as deliberately unused (e.g. an `lm_head` tied to the embeddings).
    fn ignore(&mut self, name: &str);
}

impl WeightSource for Checkpoint {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.take_checked(name, shape)
    }

    fn ignore(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_small() {
        let t = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        assert_eq!(t, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn half_precision_decodes() {
        let one_f16 = half::f16::from_f32(1.5).to_le_bytes();
        let one_bf16 = half::bf16::from_f32(-2.0).to_le_bytes();
        assert_eq!(decode_f32(&one_f16, Dtype::F16), Some(vec![1.5]));
        assert_eq!(decode_f32(&one_bf16, Dtype::BF16), Some(vec![-2.0]));
        assert_eq!(decode_f32(&[0u8; 8], Dtype::I64), None);
    }
}
