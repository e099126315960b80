//! A dense projection holding Hugging Face weights in Burn's `[in, out]` layout (f32, or a frozen
//! weight stored in half precision), with an optional LoRA adapter that can be switched off (the
//! reference model is the same weights, adapter off).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::linear;

use crate::kernels::half_weight_matmul;

/// A low-rank update `s · (x · A) · B` on top of a frozen projection.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// `[d_in, r]` (PEFT's `lora_A.weight` `[r, d_in]`, transposed).
    pub a: Param<Tensor<2>>,
    /// `[r, d_out]` (PEFT's `lora_B.weight` `[d_out, r]`, transposed).
    pub b: Param<Tensor<2>>,
    /// `α / r` (or `α / √r` with rsLoRA).
    pub scale: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Off = the base projection alone.
    pub enabled: bool,
}

/// `y = x · W + b`, `W` `[d_in, d_out]` (the transpose of PyTorch's `[out, in]`), plus LoRA.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// Wraps loaded tensors; they are frozen (no gradient).
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
            lora: None,
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.val().dims()
    }

    /// `[..., d_in]` → `[..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let weight = self.weight.val();
        let base = if weight.dtype() == x.dtype() {
            linear(x.clone(), weight, self.bias.as_ref().map(Param::val))
        } else {
            // A frozen weight stored in half precision (`precision::store_frozen_weights`).
            let y = half_weight_matmul(x.clone(), weight);
            match &self.bias {
                Some(bias) => y + bias.val().unsqueeze(),
                None => y,
            }
        };
        match &self.lora {
            Some(lora) if lora.enabled => {
                let x = if lora.dropout > 0.0 && x.is_autodiff() {
                    let keep = Tensor::<D>::random(
                        x.shape(),
                        Distribution::Bernoulli(1.0 - lora.dropout),
                        &x.device(),
                    );
                    x * keep / (1.0 - lora.dropout)
                } else {
                    x
                };
                // The scale goes on B ([r, d_out]), not on the [rows, d_out] update: one pass
                // fewer over the activations, forward and backward.
                let scaled_b = lora.b.val() * lora.scale;
                base + linear(linear(x, lora.a.val(), None), scaled_b, None)
            }
            _ => base,
        }
    }
}
