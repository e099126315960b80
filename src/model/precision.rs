//! The storage precision of the frozen base weights during LoRA training and evaluation: by default
//! a half-precision checkpoint keeps its own precision where the device has it (bf16 on the CPU;
//! f16 on GPUs with `SHADER_F16`, as WGSL has no bf16), or f32 throughout.
//!
//! Only storage changes: activations, LoRA parameters, gradients and optimizer state stay f32, and
//! each matmul widens its weight to f32 on the fly (`kernels::projection`). The precision is
//! applied while the checkpoint is read (`CausalLm::load_frozen`), one tensor at a time. The
//! embeddings (and the LM head tied to them) stay f32: the fused log-prob op reads the whole head
//! per chunk.

use burn::prelude::*;
use burn::tensor::FloatDType;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::CausalLm;

/// How the frozen decoder weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FrozenPrecision {
    /// The checkpoint's own half precision when the device has it (lossless: a bf16 checkpoint
    /// stays bf16), f16 for a bf16 checkpoint on a device with only f16; f32 checkpoints stay f32.
    Auto,
    /// f32 everywhere (the parity-tested path).
    F32,
    /// bfloat16 (the range of f32, 8 bits of mantissa).
    Bf16,
    /// IEEE half (11 bits of mantissa, values up to 65 504).
    F16,
}

impl FrozenPrecision {
    /// The storage dtype on `device` for a checkpoint stored in `checkpoint` (`None`: unknown,
    /// treated as f32). An explicit half choice the device lacks is an error.
    pub fn resolve(self, device: &Device, checkpoint: Option<FloatDType>) -> Result<FloatDType> {
        let pick = |dtype: FloatDType, name: &str| {
            if device.supports_dtype(dtype) {
                Ok(dtype)
            } else {
                Err(Error::Invalid(format!(
                    "frozen_precision: {name} is not supported on this device; use auto or f32"
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
            Self::F32 => Ok(FloatDType::F32),
            Self::Bf16 => pick(FloatDType::BF16, "bf16"),
            Self::F16 => pick(FloatDType::F16, "f16"),
            Self::Auto => Ok(match checkpoint {
                Some(FloatDType::BF16) => first_supported(&[FloatDType::BF16, FloatDType::F16]),
                Some(FloatDType::F16) => first_supported(&[FloatDType::F16, FloatDType::BF16]),
                _ => FloatDType::F32,
            }),
        }
    }
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

/// The dtype the decoder projections' weights are stored in (f32 for a model without layers).
pub fn stored_dtype(model: &CausalLm) -> FloatDType {
    model.layers.first().map_or(FloatDType::F32, |layer| {
        FloatDType::from(layer.self_attn.q_proj.weight.val().dtype())
    })
}

/// Bytes of the decoder projections' weights as stored.
pub fn projection_weight_bytes(model: &CausalLm) -> usize {
    model
        .projections()
        .into_iter()
        .map(|(_, l)| l.weight.val().shape().num_elements() * l.weight.val().dtype().size())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_the_checkpoint_precision_and_explicit_choices_are_checked() {
        let device = Device::flex();
        let auto = |ckpt| FrozenPrecision::Auto.resolve(&device, ckpt).unwrap();
        assert_eq!(auto(Some(FloatDType::BF16)), FloatDType::BF16);
        assert_eq!(auto(Some(FloatDType::F32)), FloatDType::F32);
        assert_eq!(auto(None), FloatDType::F32);
        let bf16 = FrozenPrecision::Bf16.resolve(&device, Some(FloatDType::F32));
        assert_eq!(bf16.unwrap(), FloatDType::BF16);
        let f32 = FrozenPrecision::F32.resolve(&device, Some(FloatDType::BF16));
        assert_eq!(f32.unwrap(), FloatDType::F32);
        assert_eq!(dtype_name(FloatDType::BF16), "bf16");
    }
}
