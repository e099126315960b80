//! The decoder-only language model (embeddings → blocks → norm → LM head), built from a Hugging
//! Face directory. One code path serves every backend: the `Device` decides where it runs.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use super::attention::{Attention, AttentionShape, Positions};
use super::block::{Block, FeedForwardNorms, LayerAt};
use super::checkpoint::{Checkpoint, WeightSource};
use super::config::{LayerKind, ModelConfig};
use super::embedding::EmbeddingTable;
use super::kv_cache::KvCache;
use super::layout::PackedRows;
use super::linear::{Linear, Weight};
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::precision::{FrozenPrecision, Storage, float_dtype};
use super::quantized::BlockWeight;
use super::rope::Rope;
use crate::error::Result;
use crate::kernels::attention::AttentionKernel;
use crate::kernels::checkpoint::checkpointed;
use crate::kernels::projection::blocks::BLOCK;
use crate::kernels::projection::{BlockOperand, Products, block_matmul, frozen_matmul};

/// A Llama-family causal LM.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// `[vocab, hidden]`
    pub embed_tokens: EmbeddingTable,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub rope: Rope,
    /// The RoPE of sliding-window layers when it differs (Gemma 3).
    #[module(skip)]
    pub local_rope: Option<Rope>,
    #[module(skip)]
    pub config: ModelConfig,
    /// Query rows per block of memory-efficient attention ([`DEFAULT_ATTENTION_BLOCK`]; 0 keeps
    /// the whole probability matrix for the backward, as plain attention does).
    #[module(skip)]
    pub attention_block: usize,
    /// Which implementation runs the blocked attention (`auto`: the fused kernel on the CPU).
    #[module(skip)]
    pub attention_kernel: AttentionKernel,
    /// Recompute each decoder layer in the backward instead of keeping its activations
    /// (`kernels::checkpointed`): training keeps one input per layer.
    #[module(skip)]
    pub gradient_checkpointing: bool,
    /// How the frozen products multiply (`model::precision::set_matmul_precision` sets it with
    /// each projection's): the LM head follows it.
    #[module(skip)]
    pub products: Products,
}

/// Query rows per attention block unless a run sets another: at the SmolLM2 shape a block's
/// scores are a few megabytes, while the whole matrix kept for the backward is hundreds.
pub const DEFAULT_ATTENTION_BLOCK: usize = 256;

impl CausalLm {
    /// Loads `DIR/config.json` and its safetensors weights onto `device` (in f32), or a `.gguf`
    /// file's model (dequantized).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Ok(Self::load_frozen(dir, device, FrozenPrecision::F32)?.0)
    }

    /// Loads a model whose frozen decoder projections are stored as `precision` says (resolved
    /// against the checkpoint's own storage precision), each converted as it is read: the whole
    /// model never exists in f32 on the device. Returns the model and the projections' storage.
    pub fn load_frozen(
        dir: &Path,
        device: &Device,
        precision: FrozenPrecision,
    ) -> Result<(Self, Storage)> {
        if crate::gguf::is_gguf(dir) {
            let gguf = crate::gguf::GgufFile::open(dir)?;
            let config = crate::gguf::config::model_config(&gguf)?;
            let frozen = precision.resolve(device, crate::gguf::weights::storage(&gguf))?;
            let mut weights = crate::gguf::weights::GgufWeights::new(&gguf, &config);
            let model = Self::from_checkpoint(config.clone(), &mut weights, device, frozen)?;
            weights.finish()?;
            return Ok((model, frozen));
        }
        let config = ModelConfig::from_dir(dir)?;
        let mut ckpt = Checkpoint::open(dir)?;
        let stored = ckpt.storage_dtype().and_then(float_dtype);
        let frozen = precision.resolve(device, stored.map(Storage::Dense))?;
        let model = Self::from_checkpoint(config, &mut ckpt, device, frozen)?;
        ckpt.finish()?;
        Ok((model, frozen))
    }

    /// [`Self::load_frozen`] for decoding: a tied embedding table of a half-precision model is
    /// stored in that precision too (the head is each decoding step's largest product, and
    /// `frozen_matmul` reads it in place). Training does so only with bf16 products
    /// (`precision::set_matmul_precision`); otherwise the fused log-prob op reads the head in f32.
    pub fn load_for_decoding(
        dir: &Path,
        device: &Device,
        precision: FrozenPrecision,
    ) -> Result<(Self, Storage)> {
        let (mut model, storage) = Self::load_frozen(dir, device, precision)?;
        model.narrow_for_decoding(storage);
        Ok((model, storage))
    }

    /// Stores the embedding table (a tied head with it) in the projections' `storage` when that
    /// is half precision, as [`Self::load_for_decoding`] does after loading.
    pub fn narrow_for_decoding(&mut self, storage: Storage) {
        if let Storage::Dense(half @ (FloatDType::BF16 | FloatDType::F16)) = storage {
            self.embed_tokens.narrow(half);
        }
    }

    /// A model of `config` with random weights (uniform, std 0.02; unit norm scales, zero biases) and
    /// its projections stored in `frozen`: a real model's shape without its download, for
    /// benchmarks.
    pub fn random(
        config: ModelConfig,
        seed: u64,
        device: &Device,
        frozen: Storage,
    ) -> Result<Self> {
        let mut weights = super::init::RandomWeights::new(seed, config.norm_weight_offset);
        Self::from_checkpoint(config, &mut weights, device, frozen)
    }

    /// The model of `config` with the weights of `ckpt`, in fresh memory
    /// ([`crate::io::large_blocks::with_fresh_blocks`]).
    fn from_checkpoint(
        config: ModelConfig,
        ckpt: &mut dyn WeightSource,
        device: &Device,
        frozen: Storage,
    ) -> Result<Self> {
        crate::io::large_blocks::with_fresh_blocks(|| {
            Self::read_checkpoint(config, ckpt, device, frozen)
        })
    }

    fn read_checkpoint(
        config: ModelConfig,
        ckpt: &mut dyn WeightSource,
        device: &Device,
        frozen: Storage,
    ) -> Result<Self> {
        let c = &config;
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);
        let norms = NormShape {
            eps: c.rms_norm_eps,
            offset: c.norm_weight_offset,
        };

        let embed_tokens = load_embeddings(ckpt, [c.vocab_size, h], frozen, device)?;

        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut norm = |name: &str, len| norms.load(ckpt, &format!("{p}.{name}"), len, device);
            let (q_norm, k_norm) = if c.qk_norm {
                let q = norm("self_attn.q_norm", hd)?;
                (Some(q), Some(norm("self_attn.k_norm", hd)?))
            } else {
                (None, None)
            };
            let input_layernorm = norm("input_layernorm", h)?;
            let post_attention_layernorm = norm("post_attention_layernorm", h)?;
            let feedforward_norms = if c.sandwich_norms {
                Some(FeedForwardNorms {
                    pre_feedforward_layernorm: norm("pre_feedforward_layernorm", h)?,
                    post_feedforward_layernorm: norm("post_feedforward_layernorm", h)?,
                })
            } else {
                None
            };
            let mut linear = |name: &str, d_in, d_out, bias| {
                let shape = LinearShape { d_in, d_out, bias };
                load_linear(ckpt, &format!("{p}.{name}"), shape, frozen, device)
            };
            let self_attn = Attention {
                q_proj: linear("self_attn.q_proj", h, q_out, c.qkv_bias)?,
                k_proj: linear("self_attn.k_proj", h, kv_out, c.qkv_bias)?,
                v_proj: linear("self_attn.v_proj", h, kv_out, c.qkv_bias)?,
                o_proj: linear("self_attn.o_proj", q_out, h, c.o_bias)?,
                q_norm,
                k_norm,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_key_value_heads,
                head_dim: hd,
                scale: c.attention_scale,
            };
            let (ff, bias) = (c.intermediate_size, c.mlp_bias);
            let mlp = Mlp {
                gate_proj: linear("mlp.gate_proj", h, ff, bias)?,
                up_proj: linear("mlp.up_proj", h, ff, bias)?,
                down_proj: linear("mlp.down_proj", ff, h, bias)?,
                activation: c.activation,
            };
            layers.push(Block {
                input_layernorm,
                self_attn,
                post_attention_layernorm,
                feedforward_norms,
                mlp,
            });
        }
        let norm = norms.load(ckpt, "model.norm", h, device)?;
        let lm_head = if c.tie_word_embeddings {
            // Some tied checkpoints still store a copy of the head; transformers ignores it.
            ckpt.ignore("lm_head.weight");
            None
        } else {
            // A dense head stays f32 (the fused log-prob op reads it whole per chunk); in blocks
            // the op reads it tile by tile.
            let shape = LinearShape {
                d_in: h,
                d_out: c.vocab_size,
                bias: false,
            };
            let head = match frozen {
                Storage::Blocks(_) => frozen,
                Storage::Dense(_) => Storage::Dense(FloatDType::F32),
            };
            Some(load_linear(ckpt, "lm_head", shape, head, device)?)
        };
        let rope = Rope::new(hd, c.rope_theta, &c.rope_scaling);
        let local_rope = c
            .local_rope
            .as_ref()
            .map(|r| Rope::new(hd, r.theta, &r.scaling));
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            local_rope,
            config,
            attention_block: DEFAULT_ATTENTION_BLOCK,
            attention_kernel: AttentionKernel::Auto,
            gradient_checkpointing: false,
            products: Products::F32,
        })
    }

    /// Final hidden states `[batch, seq, hidden]` for `tokens` `[batch, seq]`, continuing `cache`
    /// when given (positions start at `cache.len`).
    pub fn forward_hidden(
        &self,
        tokens: Tensor<2, Int>,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let device = tokens.device();
        let [_, seq] = tokens.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        if let Some(cache) = cache.as_deref_mut() {
            cache.ensure_layers(self.layers.len());
        }
        let new = past..past + seq;
        let positions = |rope: &Rope, shape| Positions::new(rope, new.clone(), shape, &device);
        let hidden = self.decode_layers(tokens, positions, cache.as_deref_mut());
        if let Some(cache) = cache {
            cache.len += seq;
        }
        hidden
    }

    /// Final hidden states `[rows, len, hidden]` for `tokens` `[rows, len]` laid out as `packed`
    /// says (several segments per row, each from position 0; prefix-shared pairs).
    pub fn forward_packed(&self, tokens: Tensor<2, Int>, packed: &PackedRows) -> Tensor<3> {
        let device = tokens.device();
        let positions = |rope: &Rope, shape| Positions::packed(rope, packed, shape, &device);
        self.decode_layers(tokens, positions, None)
    }

    /// Embeddings → decoder layers → final norm, each layer kind's rotary tables and mask built
    /// once by `positions`.
    fn decode_layers(
        &self,
        tokens: Tensor<2, Int>,
        positions: impl Fn(&Rope, AttentionShape) -> Positions,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        let group = self.config.num_attention_heads / self.config.num_key_value_heads;
        let mut by_kind: Vec<(LayerKind, Positions)> = Vec::new();
        let mut x = self.embed_tokens.lookup(tokens);
        if let Some(scale) = self.config.embed_scale {
            x = x * scale;
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let kind = self.config.layer_kinds[i];
            let at = match by_kind.iter().position(|(k, _)| *k == kind) {
                Some(found) => found,
                None => {
                    let (rope, window) = match kind {
                        LayerKind::Full => (&self.rope, None),
                        LayerKind::Sliding { window } => {
                            (self.local_rope.as_ref().unwrap_or(&self.rope), Some(window))
                        }
                    };
                    let shape = AttentionShape {
                        window,
                        group,
                        block: self.attention_block,
                        kernel: self.attention_kernel,
                    };
                    by_kind.push((kind, positions(rope, shape)));
                    by_kind.len() - 1
                }
            };
            let at = &by_kind[at].1;
            x = match cache.as_deref_mut() {
                Some(c) => layer.forward(x, at, Some(&mut c.layers[i])),
                None if self.gradient_checkpointing => {
                    let piece = LayerAt {
                        layer: layer.clone(),
                        at: at.clone(),
                    };
                    checkpointed(x, piece)
                }
                None => layer.forward(x, at, None),
            };
        }
        self.norm.forward(x)
    }

    /// Projects hidden states `[..., hidden]` to logits `[..., vocab]`.
    pub fn lm_head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        let table = match (&self.lm_head, &self.embed_tokens) {
            (Some(head), _) => return head.forward(hidden),
            (None, EmbeddingTable::Dense(table)) if table.val().is_require_grad() => {
                return burn::tensor::module::linear(hidden, table.val().transpose(), None);
            }
            (None, table) => table,
        };
        let mut dims = hidden.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let hidden = hidden.reshape([rows, dims[D - 1]]);
        // [rows, vocab]: the frozen table read in place (its transpose is a strided view).
        let logits = match table {
            EmbeddingTable::Dense(table) => {
                frozen_matmul(hidden, table.val().transpose(), self.products)
            }
            EmbeddingTable::Blocks(table) => block_matmul(hidden, &table.operand()),
        };
        dims[D - 1] = logits.dims()[1];
        logits.reshape(dims)
    }

    /// The LM head as the fused log-prob op reads it (the tied embeddings, or the untied head's
    /// weight), or `None` when the head has a bias or an adapter and must run as a layer.
    pub fn lm_head_weight(&self) -> Option<HeadWeight> {
        match &self.lm_head {
            None => Some(match &self.embed_tokens {
                // bf16 products read a bf16 table as it is; anything else reads f32.
                EmbeddingTable::Dense(table) => HeadWeight::Dense(match self.products {
                    Products::Bf16 if table.val().dtype() == DType::BF16 => table.val().transpose(),
                    _ => table.val().cast(FloatDType::F32).transpose(),
                }),
                EmbeddingTable::Blocks(table) => HeadWeight::Blocks(table.operand()),
            }),
            Some(head) if head.bias.is_none() && head.lora.is_none() => Some(match &head.weight {
                Weight::Dense(w) => HeadWeight::Dense(w.val()),
                Weight::Blocks(w) => HeadWeight::Blocks(w.operand()),
            }),
            Some(_) => None,
        }
    }

    /// Logits `[batch, seq, vocab]` for `tokens` `[batch, seq]`.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.lm_head(self.forward_hidden(tokens, cache))
    }
}

/// The LM head's weight as a matrix: dense `[hidden, vocab]`, or `E` `[vocab, hidden]` in blocks.
/// (Built once per log-prob call and consumed at once, so the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub enum HeadWeight {
    Dense(Tensor<2>),
    Blocks(BlockOperand),
}

/// `model.embed_tokens.weight` `[vocab, hidden]`: in blocks when the frozen storage is and
/// `hidden` is a whole number of them, else f32.
fn load_embeddings(
    ckpt: &mut dyn WeightSource,
    [vocab, h]: [usize; 2],
    frozen: Storage,
    device: &Device,
) -> Result<EmbeddingTable> {
    let name = "model.embed_tokens.weight";
    if let Some(table) = take_blocks(ckpt, name, [vocab, h], frozen, device)? {
        return Ok(EmbeddingTable::Blocks(table));
    }
    let values = ckpt.take(name, &[vocab, h])?;
    let table = Tensor::from_data(TensorData::new(values, [vocab, h]), device);
    Ok(EmbeddingTable::Dense(
        Param::from_tensor(table).set_require_grad(false),
    ))
}

/// The matrix `name` (PyTorch `[rows, cols]`) in blocks when `frozen` asks for them and each row
/// is a whole number of blocks; `None` otherwise (the caller reads it dense).
fn take_blocks(
    ckpt: &mut dyn WeightSource,
    name: &str,
    shape: [usize; 2],
    frozen: Storage,
    device: &Device,
) -> Result<Option<BlockWeight>> {
    match frozen {
        Storage::Blocks(format) if shape[1].is_multiple_of(BLOCK) => {
            let blocks = ckpt.take_blocks(name, shape, format)?;
            Ok(Some(BlockWeight::from_ggml(&blocks, format, shape, device)))
        }
        _ => Ok(None),
    }
}

/// The shape of a projection to load.
struct LinearShape {
    d_in: usize,
    d_out: usize,
    bias: bool,
}

/// `PREFIX.weight` (PyTorch `[d_out, d_in]`; stored as `frozen`: transposed when dense) and, with
/// a bias, `PREFIX.bias` (f32). A projection whose `d_in` is not a whole number of blocks stays
/// dense in f32.
fn load_linear(
    ckpt: &mut dyn WeightSource,
    prefix: &str,
    shape: LinearShape,
    frozen: Storage,
    device: &Device,
) -> Result<Linear> {
    let LinearShape { d_in, d_out, bias } = shape;
    let name = format!("{prefix}.weight");
    let weight = match take_blocks(ckpt, &name, [d_out, d_in], frozen, device)? {
        Some(blocks) => Weight::Blocks(blocks),
        None => {
            let dtype = match frozen {
                Storage::Dense(dtype) => dtype,
                Storage::Blocks(_) => FloatDType::F32,
            };
            let w = ckpt.take_transposed(&name, d_out, d_in)?;
            let w = Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                (device, DType::from(dtype)),
            );
            Weight::Dense(Param::from_tensor(w).set_require_grad(false))
        }
    };
    let b = if bias {
        let v = ckpt.take(&format!("{prefix}.bias"), &[d_out])?;
        Some(Tensor::from_data(TensorData::new(v, [d_out]), device))
    } else {
        None
    };
    Ok(Linear::with_weight(weight, b))
}

/// How the model's RMSNorms are read: their epsilon and the offset added to each stored weight.
struct NormShape {
    eps: f64,
    offset: f64,
}

impl NormShape {
    /// The RMSNorm whose weight is `PREFIX.weight` `[len]`.
    fn load(
        &self,
        ckpt: &mut dyn WeightSource,
        prefix: &str,
        len: usize,
        device: &Device,
    ) -> Result<RmsNorm> {
        let v = ckpt.take(&format!("{prefix}.weight"), &[len])?;
        let weight = Tensor::from_data(TensorData::new(v, [len]), device);
        Ok(RmsNorm::new(weight, self.eps, self.offset))
    }
}
