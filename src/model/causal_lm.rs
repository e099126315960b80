//! The decoder-only language model (embeddings → blocks → norm → LM head), built from a Hugging
//! Face directory. One code path serves every backend: the `Device` decides where it runs.

use std::path::Path;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;
use burn::tensor::{DType, FloatDType};

use super::attention::{Attention, LayerCache, Positions};
use super::block::Block;
use super::checkpoint::{Checkpoint, WeightSource};
use super::config::ModelConfig;
use super::linear::Linear;
use super::mlp::Mlp;
use super::norm::RmsNorm;
use super::precision::{FrozenPrecision, float_dtype};
use super::rope::Rope;
use crate::error::Result;

/// Per-layer key/value caches plus the number of positions already processed.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    pub layers: Vec<LayerCache>,
    pub len: usize,
}

/// A Llama-family causal LM.
#[derive(Module, Debug)]
pub struct CausalLm {
    /// `[vocab, hidden]`
    pub embed_tokens: Param<Tensor<2>>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when the head is tied to `embed_tokens`.
    pub lm_head: Option<Linear>,
    #[module(skip)]
    pub rope: Rope,
    #[module(skip)]
    pub config: ModelConfig,
}

impl CausalLm {
    /// Loads `DIR/config.json` and its safetensors weights onto `device` (in f32).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Ok(Self::load_frozen(dir, device, FrozenPrecision::F32)?.0)
    }

    /// Loads a model whose frozen decoder projections are stored as `precision` says (resolved
    /// against the checkpoint's own storage precision), each converted as it is read: the whole
    /// model never exists in f32 on the device. Returns the model and the projections' dtype.
    pub fn load_frozen(
        dir: &Path,
        device: &Device,
        precision: FrozenPrecision,
    ) -> Result<(Self, FloatDType)> {
        let config = ModelConfig::from_dir(dir)?;
        let mut ckpt = Checkpoint::open(dir)?;
        let stored = ckpt.storage_dtype().and_then(float_dtype);
        let frozen = precision.resolve(device, stored)?;
        let model = Self::from_checkpoint(config, &mut ckpt, device, frozen)?;
        ckpt.finish()?;
        Ok((model, frozen))
    }

    /// A model of `config` with random weights (uniform, std 0.02; unit norms, zero biases) and
    /// its projections stored in `frozen`: a real model's shape without its download, for
    /// benchmarks.
    pub fn random(
        config: ModelConfig,
        seed: u64,
        device: &Device,
        frozen: FloatDType,
    ) -> Result<Self> {
        let mut weights = super::init::RandomWeights::new(seed);
        Self::from_checkpoint(config, &mut weights, device, frozen)
    }

    fn from_checkpoint(
        config: ModelConfig,
        ckpt: &mut dyn WeightSource,
        device: &Device,
        frozen: FloatDType,
    ) -> Result<Self> {
        let c = &config;
        let (h, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.num_key_value_heads * hd);

        let embed = ckpt.take("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let embed_tokens = Param::from_tensor(Tensor::from_data(
            TensorData::new(embed, [c.vocab_size, h]),
            device,
        ))
        .set_require_grad(false);

        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let (q_norm, k_norm) = if c.qk_norm {
                (
                    Some(load_norm(
                        ckpt,
                        &format!("{p}.self_attn.q_norm"),
                        hd,
                        eps,
                        device,
                    )?),
                    Some(load_norm(
                        ckpt,
                        &format!("{p}.self_attn.k_norm"),
                        hd,
                        eps,
                        device,
                    )?),
                )
            } else {
                (None, None)
            };
            let mut attn = |name: &str, d_in, d_out, bias| {
                let shape = LinearShape { d_in, d_out, bias };
                load_linear(
                    ckpt,
                    &format!("{p}.self_attn.{name}"),
                    shape,
                    frozen,
                    device,
                )
            };
            let self_attn = Attention {
                q_proj: attn("q_proj", h, q_out, c.qkv_bias)?,
                k_proj: attn("k_proj", h, kv_out, c.qkv_bias)?,
                v_proj: attn("v_proj", h, kv_out, c.qkv_bias)?,
                o_proj: attn("o_proj", q_out, h, c.o_bias)?,
                q_norm,
                k_norm,
                num_heads: c.num_attention_heads,
                num_kv_heads: c.num_key_value_heads,
                head_dim: hd,
            };
            let mut mlp = |name: &str, d_in, d_out| {
                let shape = LinearShape {
                    d_in,
                    d_out,
                    bias: c.mlp_bias,
                };
                load_linear(ckpt, &format!("{p}.mlp.{name}"), shape, frozen, device)
            };
            let mlp = Mlp {
                gate_proj: mlp("gate_proj", h, c.intermediate_size)?,
                up_proj: mlp("up_proj", h, c.intermediate_size)?,
                down_proj: mlp("down_proj", c.intermediate_size, h)?,
            };
            layers.push(Block {
                input_layernorm: load_norm(ckpt, &format!("{p}.input_layernorm"), h, eps, device)?,
                self_attn,
                post_attention_layernorm: load_norm(
                    ckpt,
                    &format!("{p}.post_attention_layernorm"),
                    h,
                    eps,
                    device,
                )?,
                mlp,
            });
        }
        let norm = load_norm(ckpt, "model.norm", h, eps, device)?;
        let lm_head = if c.tie_word_embeddings {
            // Some tied checkpoints still store a copy of the head; transformers ignores it.
            ckpt.ignore("lm_head.weight");
            None
        } else {
            // The head stays f32: the fused log-prob op reads it whole per chunk.
            let shape = LinearShape {
                d_in: h,
                d_out: c.vocab_size,
                bias: false,
            };
            Some(load_linear(
                ckpt,
                "lm_head",
                shape,
                FloatDType::F32,
                device,
            )?)
        };
        let rope = Rope::new(hd, c.rope_theta, &c.rope_scaling);
        Ok(Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            config,
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
        let group = self.config.num_attention_heads / self.config.num_key_value_heads;
        let positions = Positions::new(&self.rope, past, seq, group, &device);

        let mut x = embedding(self.embed_tokens.val(), tokens);
        if let Some(cache) = cache.as_deref_mut()
            && cache.layers.len() != self.layers.len()
        {
            cache.layers = vec![LayerCache::default(); self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, &positions, layer_cache);
        }
        if let Some(cache) = cache {
            cache.len += seq;
        }
        self.norm.forward(x)
    }

    /// Projects hidden states `[..., hidden]` to logits `[..., vocab]`.
    pub fn lm_head<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => burn::tensor::module::linear(hidden, self.embed_tokens.val().transpose(), None),
        }
    }

    /// The LM head as a plain `[hidden, vocab]` matrix (the tied embeddings transposed), or `None`
    /// when the head has a bias or an adapter and must run as a layer.
    pub fn lm_head_weight(&self) -> Option<Tensor<2>> {
        match &self.lm_head {
            None => Some(self.embed_tokens.val().transpose()),
            Some(head) if head.bias.is_none() && head.lora.is_none() => Some(head.weight.val()),
            Some(_) => None,
        }
    }

    /// Logits `[batch, seq, vocab]` for `tokens` `[batch, seq]`.
    pub fn forward(&self, tokens: Tensor<2, Int>, cache: Option<&mut KvCache>) -> Tensor<3> {
        self.lm_head(self.forward_hidden(tokens, cache))
    }
}

/// The shape of a projection to load.
struct LinearShape {
    d_in: usize,
    d_out: usize,
    bias: bool,
}

/// `PREFIX.weight` (PyTorch `[d_out, d_in]`, transposed; stored as `frozen`) and, with a bias,
/// `PREFIX.bias` (f32).
fn load_linear(
    ckpt: &mut dyn WeightSource,
    prefix: &str,
    shape: LinearShape,
    frozen: FloatDType,
    device: &Device,
) -> Result<Linear> {
    let LinearShape { d_in, d_out, bias } = shape;
    let w = ckpt.take_transposed(&format!("{prefix}.weight"), d_out, d_in)?;
    let w = Tensor::from_data(
        TensorData::new(w, [d_in, d_out]),
        (device, DType::from(frozen)),
    );
    let b = if bias {
        let v = ckpt.take(&format!("{prefix}.bias"), &[d_out])?;
        Some(Tensor::from_data(TensorData::new(v, [d_out]), device))
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// An RMSNorm whose scale is `PREFIX.weight` `[len]`.
fn load_norm(
    ckpt: &mut dyn WeightSource,
    prefix: &str,
    len: usize,
    eps: f64,
    device: &Device,
) -> Result<RmsNorm> {
    let v = ckpt.take(&format!("{prefix}.weight"), &[len])?;
    Ok(RmsNorm::new(
        Tensor::from_data(TensorData::new(v, [len]), device),
        eps,
    ))
}
