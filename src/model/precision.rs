//! The storage precision of the frozen base weights during LoRA training and evaluation: by default
//! a checkpoint keeps its own precision where the device has it (bf16 on the CPU; f16 on GPUs with
//! `SHADER_F16`, as WGSL has no bf16; a GGUF's Q8_0 or Q4_0 blocks as they are), or f32
//! throughout, or llama.cpp's 8- or 4-bit blocks (`q8`, `q4`).
//!
//! Only storage changes: activations, LoRA parameters, gradients and optimizer state stay f32, and
//! each matmul widens its weight to f32 on the fly (`kernels::projection`). The precision is
//! applied while the checkpoint is read (`CausalLm::load_frozen`), one tensor at a time. In half
//! precision the embeddings (and the LM head tied to them) stay f32, as the fused log-prob op reads
//! a dense head whole per chunk; in blocks they are blocks too, which that op reads tile by tile.
//!
//! How the frozen products multiply is the second setting, `matmul_precision`
//! ([`MatmulPrecision`], [`set_matmul_precision`]): on CPUs with AVX512-BF16 a bf16 model's
//! projections and LM head multiply in bf16 with f32 sums (the head's table then stored in bf16).

use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernels::projection::{BlockFormat, Products, cpu_has_bf16_products};
use crate::model::CausalLm;
use crate::model::linear::Weight;

/// How the frozen decoder weights are stored (the `frozen_precision` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FrozenPrecision {
    /// The checkpoint's own precision when the device has it (lossless: a bf16 checkpoint stays
    /// bf16, a GGUF of Q8_0 or Q4_0 blocks stays in them), f16 for a bf16 checkpoint on a device
    /// with only f16; everything else f32.
    Auto,
    /// f32 everywhere (the parity-tested path).
    F32,
    /// bfloat16 (the range of f32, 8 bits of mantissa).
    Bf16,
    /// IEEE half (11 bits of mantissa, values up to 65 504).
    F16,
    /// llama.cpp's Q8_0: 8-bit values, one scale per 32 (9 bits per weight).
    Q8,
    /// llama.cpp's Q4_0: 4-bit values, one scale per 32 (5 bits per weight).
    Q4,
}

/// How a model's frozen projections are stored, once resolved for a device and checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// A float tensor of this dtype.
    Dense(FloatDType),
    /// Blocks of this format.
    Blocks(BlockFormat),
}

impl Storage {
    /// A short name for reports and cache keys (`f32`, `bf16`, `f16`, `q8_0`, `q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Dense(dtype) => dtype_name(dtype),
            Self::Blocks(BlockFormat::Q8_0) => "q8_0",
            Self::Blocks(BlockFormat::Q4_0) => "q4_0",
        }
    }
}

impl FrozenPrecision {
    /// The storage on `device` for a checkpoint stored as `checkpoint` (`None`: unknown or mixed,
    /// treated as f32). An explicit half choice the device lacks is an error.
    pub fn resolve(self, device: &Device, checkpoint: Option<Storage>) -> Result<Storage> {
        let pick = |dtype: FloatDType, name: &str| {
            if device.supports_dtype(dtype) {
                Ok(Storage::Dense(dtype))
            } else {
                Err(Error::Invalid(format!(
                    "frozen_precision: {name} is not supported on this device; use auto, f32, q8 \
                     or q4"
                )))
            }
        };
        let first_supported = |order: &[FloatDType]| {
            order
                .iter()
                .copied()
                .find(|&d| device.supports_dtype(d))
                .unwrap_or(FloatDType::F32)
        };
        match self {
            Self::F32 => Ok(Storage::Dense(FloatDType::F32)),
            Self::Bf16 => pick(FloatDType::BF16, "bf16"),
            Self::F16 => pick(FloatDType::F16, "f16"),
            Self::Q8 => Ok(Storage::Blocks(BlockFormat::Q8_0)),
            Self::Q4 => Ok(Storage::Blocks(BlockFormat::Q4_0)),
            Self::Auto => Ok(match checkpoint {
                Some(Storage::Dense(FloatDType::BF16)) => {
                    Storage::Dense(first_supported(&[FloatDType::BF16, FloatDType::F16]))
                }
                Some(Storage::Dense(FloatDType::F16)) => {
                    Storage::Dense(first_supported(&[FloatDType::F16, FloatDType::BF16]))
                }
                Some(blocks @ Storage::Blocks(_)) => blocks,
                _ => Storage::Dense(FloatDType::F32),
            }),
        }
    }
}

/// How the frozen projections multiply (the `matmul_precision` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MatmulPrecision {
    /// bf16 where it is native and the weights already are bf16 (the CPU device, x86-64 with
    /// AVX512-BF16, bf16 frozen weights); f32 otherwise.
    Auto,
    /// The weights widened to f32 and the activations kept f32 (the parity-tested path).
    F32,
    /// Activations rounded to bf16 in the frozen projections, forward and backward, sums in f32
    /// (PyTorch's bf16 matmuls); needs bf16 frozen weights, the CPU device and AVX512-BF16.
    Bf16,
}

impl MatmulPrecision {
    /// The products for weights stored as `storage` on `device`. An explicit `bf16` that cannot
    /// run is an error that says why.
    pub fn resolve(self, device: &Device, storage: Storage) -> Result<Products> {
        let native = cpu_has_bf16_products();
        let cpu = crate::device::is_flex(device);
        let bf16_weights = storage == Storage::Dense(FloatDType::BF16);
        match self {
            Self::F32 => Ok(Products::F32),
            Self::Auto if native && cpu && bf16_weights => Ok(Products::Bf16),
            Self::Auto => Ok(Products::F32),
            Self::Bf16 => {
                let why = if !cpu {
                    "it runs on the CPU device only (--device cpu)".to_string()
                } else if !native {
                    "this CPU lacks AVX512-BF16 (x86-64 from Intel Cooper Lake or Sapphire Rapids, \
                     or AMD Zen 4, on)"
                        .to_string()
                } else if !bf16_weights {
                    format!(
                        "it multiplies bf16 weights, and these are stored as {} (set \
                         frozen_precision to bf16, or auto with a bf16 checkpoint)",
                        storage.name()
                    )
                } else {
                    return Ok(Products::Bf16);
                };
                Err(Error::Invalid(format!(
                    "matmul_precision: bf16 is not available: {why}; use auto or f32"
                )))
            }
        }
    }
}

/// Resolves `setting` for `model` on `device` and applies it to every projection and the LM head;
/// returns what it resolved to. With bf16 products a dense frozen head (the tied embeddings or an
/// untied head) is stored in bf16 too, which the fused log-prob op then multiplies in bf16 (for
/// a bf16 checkpoint, its own values: nothing is rounded that was not already).
pub fn set_matmul_precision(
    model: &mut CausalLm,
    setting: MatmulPrecision,
    device: &Device,
) -> Result<Products> {
    let products = setting.resolve(device, stored(model))?;
    model.products = products;
    for (_, linear) in model.projections_mut() {
        linear.products = products;
    }
    if products == Products::Bf16 {
        model.embed_tokens.narrow(FloatDType::BF16);
        if let Some(head) = model.lm_head.as_mut() {
            head.products = products;
            head.weight.narrow(FloatDType::BF16);
        }
    }
    Ok(products)
}

/// The float dtype of a safetensors storage dtype (`None` for non-float types).
pub fn float_dtype(dtype: safetensors::Dtype) -> Option<FloatDType> {
    use safetensors::Dtype;
    match dtype {
        Dtype::BF16 => Some(FloatDType::BF16),
        Dtype::F16 => Some(FloatDType::F16),
        Dtype::F32 | Dtype::F64 => Some(FloatDType::F32),
        _ => None,
    }
}

/// A short name for reports and cache keys (`f32`, `bf16`, `f16`).
pub fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::BF16 => "bf16",
        FloatDType::F16 => "f16",
        FloatDType::F64 => "f64",
        _ => "f32",
    }
}

/// What `train` and `sft` report about a LoRA run's base: how its frozen weights are stored and
/// how they multiply (`bf16, multiplied in bf16`).
pub fn frozen_summary(model: &CausalLm, products: Products) -> String {
    format!(
        "{}, multiplied in {}",
        stored(model).name(),
        products.name()
    )
}

/// How the decoder projections' weights are stored (f32 for a model without layers).
pub fn stored(model: &CausalLm) -> Storage {
    model
        .layers
        .first()
        .map_or(Storage::Dense(FloatDType::F32), |layer| {
            match &layer.self_attn.q_proj.weight {
                Weight::Dense(w) => Storage::Dense(FloatDType::from(w.val().dtype())),
                Weight::Blocks(w) => Storage::Blocks(w.format),
            }
        })
}

/// The frozen weights' storage and, when their products run in bf16, that too (`bf16` or
/// `bf16 (bf16 products, bf16 head)`): what the reference log-probs depend on, for the cache key.
pub fn numerics(model: &CausalLm) -> String {
    let storage = stored(model).name();
    match model.products {
        Products::F32 => storage.to_string(),
        Products::Bf16 => format!("{storage} (bf16 products, bf16 head)"),
    }
}

/// Bytes of every frozen matrix as stored: the projections, the embeddings and an untied head
/// (norm weights and biases, a few kilobytes, left out).
pub fn frozen_weight_bytes(model: &CausalLm) -> usize {
    let head = model
        .lm_head
        .as_ref()
        .map_or(0, |h| h.weight.stored_bytes());
    projection_weight_bytes(model) + model.embed_tokens.stored_bytes() + head
}

/// Bytes of the decoder projections' weights as stored.
pub fn projection_weight_bytes(model: &CausalLm) -> usize {
    model
        .projections()
        .into_iter()
        .map(|(_, l)| l.weight.stored_bytes())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_checkpoint_precision_and_explicit_choices_are_checked() {
        let device = Device::flex();
        let dense = |dtype| Some(Storage::Dense(dtype));
        let q4 = Storage::Blocks(BlockFormat::Q4_0);
        let auto = |ckpt| FrozenPrecision::Auto.resolve(&device, ckpt).unwrap();
        assert_eq!(
            auto(dense(FloatDType::BF16)),
            Storage::Dense(FloatDType::BF16)
        );
        assert_eq!(
            auto(dense(FloatDType::F32)),
            Storage::Dense(FloatDType::F32)
        );
        assert_eq!(auto(None), Storage::Dense(FloatDType::F32));
        assert_eq!(auto(Some(q4)), q4);
        let bf16 = FrozenPrecision::Bf16.resolve(&device, dense(FloatDType::F32));
        assert_eq!(bf16.unwrap(), Storage::Dense(FloatDType::BF16));
        let f32 = FrozenPrecision::F32.resolve(&device, Some(q4));
        assert_eq!(f32.unwrap(), Storage::Dense(FloatDType::F32));
        let q8 = FrozenPrecision::Q8
            .resolve(&device, dense(FloatDType::BF16))
            .unwrap();
        assert_eq!(q8.name(), "q8_0");
        assert_eq!(Storage::Dense(FloatDType::BF16).name(), "bf16");
    }

    #[test]
    #[allow(deprecated)] // ndarray stays selectable
    fn matmul_precision_resolves_to_bf16_only_where_it_can_run() {
        let (cpu, ndarray) = (Device::flex(), Device::ndarray());
        let bf16 = Storage::Dense(FloatDType::BF16);
        let f32 = Storage::Dense(FloatDType::F32);
        let native = cpu_has_bf16_products();
        let resolve = |p: MatmulPrecision, d: &Device, s| p.resolve(d, s);
        let auto = resolve(MatmulPrecision::Auto, &cpu, bf16).unwrap();
        assert_eq!(auto == Products::Bf16, native);
        for storage in [f32, Storage::Blocks(BlockFormat::Q8_0)] {
            assert_eq!(
                resolve(MatmulPrecision::Auto, &cpu, storage).unwrap(),
                Products::F32
            );
        }
        assert_eq!(
            resolve(MatmulPrecision::Auto, &ndarray, bf16).unwrap(),
            Products::F32
        );
        assert_eq!(
            resolve(MatmulPrecision::F32, &cpu, bf16).unwrap(),
            Products::F32
        );
        let err = |d: &Device, s| {
            resolve(MatmulPrecision::Bf16, d, s)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&ndarray, bf16).contains("runs on the CPU device only"));
        if native {
            assert_eq!(
                resolve(MatmulPrecision::Bf16, &cpu, bf16).unwrap(),
                Products::Bf16
            );
            let e = err(&cpu, f32);
            assert!(e.contains("these are stored as f32"), "{e}");
        } else {
            assert!(err(&cpu, bf16).contains("lacks AVX512-BF16"));
        }
    }
}
