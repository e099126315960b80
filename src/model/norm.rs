//! RMSNorm as Hugging Face computes it: `w · x / sqrt(mean(x²) + eps)`, or `(1 + w) · …` for
//! Gemma, whose checkpoints store the scale minus one (the weight stays as stored, so full
//! fine-tuning and saving see transformers' parameter).

use burn::module::Param;
use burn::prelude::*;

use crate::kernels::rms_norm;

/// Root-mean-square layer norm over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
    /// Added to the stored weight to form the scale (0, or 1 for Gemma).
    pub offset: f64,
}

impl RmsNorm {
    /// Wraps a loaded `[dim]` weight; the scale is `offset + weight`.
    pub fn new(weight: Tensor<1>, eps: f64, offset: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            eps,
            offset,
        }
    }

    /// `[..., dim]` → `[..., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let stored = self.weight.val();
        let trained = stored.is_require_grad();
        let weight = if self.offset == 0.0 {
            stored
        } else {
            stored + self.offset
        };
        if !trained {
            // Frozen (LoRA, inference): one fused op, one pass each way.
            return rms_norm(x, weight, self.eps);
        }
        // Trained (full fine-tuning): ordinary ops, which give the weight a gradient.
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x * (variance + self.eps).sqrt().recip();
        normed * weight.unsqueeze()
    }
}
