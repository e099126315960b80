//! RMSNorm as Hugging Face computes it: `w · x / sqrt(mean(x²) + eps)`.

use burn::module::Param;
use burn::prelude::*;

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
        let variance = x.clone().square().mean_dim(D - 1);
        let normed = x * (variance + self.eps).sqrt().recip();
        normed * self.weight.val().unsqueeze()
    }
}
