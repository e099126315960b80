//! A dense projection holding Hugging Face weights in Burn's `[in, out]` layout.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;

/// `y = x · W + b`, `W` `[d_in, d_out]` (the transpose of PyTorch's `[out, in]`).
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
}

impl Linear {
    /// Wraps loaded tensors; they are frozen (no gradient) until an adapter says otherwise.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
        }
    }

    /// `[..., d_in]` → `[..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.val(), self.bias.as_ref().map(Param::val))
    }
}
