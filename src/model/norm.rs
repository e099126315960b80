//! RMSNorm as Hugging Face computes it: `w · x / sqrt(mean(x²) + eps)`.

use burn::module::Param;
use burn::prelude::*;

use crate::kernels::rms_norm;

/// Root-mean-square layer norm over the last dimension.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    pub eps: f64,
}

impl RmsNorm {
    /// Wraps a loaded `[dim]` scale.
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            eps,
        }
    }

    /// `[..., dim]` → `[..., dim]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.weight.val();
        if !weight.is_require_grad() {
            // Frozen (LoRA, inference): one fused op, one pass each way.
            return rms_norm(x, weight, self.eps);
        }
        // Trained (full fine-tuning): ordinary ops, which give the weight a gradient.
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x * (variance + self.eps).sqrt().recip();
        normed * weight.unsqueeze()
    }
}
