//! A projection holding Hugging Face weights in Burn's `[in, out]` layout (f32, or a frozen weight
//! stored in half precision or in blocks), with an optional LoRA adapter that can be switched off
//! (the reference model is the same weights, adapter off).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;
use burn::tensor::{Distribution, FloatDType};

use super::quantized::BlockWeight;
use crate::kernels::projection::{Products, block_lora_matmul, block_matmul};
use crate::kernels::{frozen_matmul, lora_matmul};

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

/// A projection's weight.
#[derive(Module, Debug)]
pub enum Weight {
    /// `[d_in, d_out]` (the transpose of PyTorch's `[out, in]`): f32, or frozen in half precision.
    Dense(Param<Tensor<2>>),
    /// Frozen in blocks, `[d_out, d_in]` (`model/quantized.rs`).
    Blocks(BlockWeight),
}

/// Stores a frozen dense matrix in `dtype`; a trained one stays as it is.
pub(crate) fn narrow_frozen(param: &mut Param<Tensor<2>>, dtype: FloatDType) {
    if !param.val().is_require_grad() {
        let narrowed = crate::io::large_blocks::with_fresh_blocks(|| param.val().cast(dtype));
        *param = Param::from_tensor(narrowed).set_require_grad(false);
    }
}

impl Weight {
    /// Stores a frozen dense weight in `dtype` ([`narrow_frozen`]); blocks stay as they are.
    pub fn narrow(&mut self, dtype: FloatDType) {
        if let Self::Dense(w) = self {
            narrow_frozen(w, dtype);
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense(w) => w.val().dims(),
            Self::Blocks(w) => w.dims(),
        }
    }

    /// The weight as a `[d_in, d_out]` tensor in its stored float dtype (blocks: in f32).
    pub fn dense(&self) -> Tensor<2> {
        match self {
            Self::Dense(w) => w.val(),
            Self::Blocks(w) => w.dequantize().transpose(),
        }
    }

    /// Bytes held on the device.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Self::Dense(w) => w.val().shape().num_elements() * w.val().dtype().size(),
            Self::Blocks(w) => w.stored_bytes(),
        }
    }
}

/// `y = x · W + b`, `W` `[d_in, d_out]`, plus LoRA.
#[derive(Module, Debug)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Param<Tensor<1>>>,
    pub lora: Option<LoraAdapter>,
    /// How the frozen dense weight multiplies (`model::precision::MatmulPrecision`).
    #[module(skip)]
    pub products: Products,
}

impl Linear {
    /// Wraps loaded tensors; they are frozen (no gradient).
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        let weight = Weight::Dense(Param::from_tensor(weight).set_require_grad(false));
        Self::with_weight(weight, bias)
    }

    /// A frozen projection of `weight` (dense or in blocks) and an optional bias.
    pub fn with_weight(weight: Weight, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight,
            bias: bias.map(|b| Param::from_tensor(b).set_require_grad(false)),
            lora: None,
            products: Products::F32,
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        self.weight.dims()
    }

    /// `[..., d_in]` → `[..., d_out]`.
    ///
    /// The leading dims are folded into rows first, so every product is one 2-D matmul: Burn
    /// would otherwise keep `[batch, seq, d_in]` as a batched product whenever `seq` fills its row
    /// tiles, and flex then packs the weight once per sequence and runs each sequence's product
    /// on one thread.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let mut dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let y = self.forward_rows(x.reshape([rows, d_in]));
        dims[D - 1] = y.dims()[1];
        y.reshape(dims)
    }

    /// `[rows, d_in]` → `[rows, d_out]`.
    fn forward_rows(&self, x: Tensor<2>) -> Tensor<2> {
        let lora = self.lora.as_ref().filter(|lora| lora.enabled);
        // Dropout feeds the adapter another input than the base projection.
        let dropout = lora.is_some_and(|lora| lora.dropout > 0.0 && x.is_autodiff());
        let y = match &self.weight {
            Weight::Dense(weight) if weight.val().is_require_grad() => {
                // A trained weight (full fine-tuning): ordinary ops, which give it a gradient.
                let base = linear(x.clone(), weight.val(), self.bias.as_ref().map(Param::val));
                return match lora {
                    Some(lora) => base + lora.update(x),
                    None => base,
                };
            }
            // One op: `x·W + (x·A)·(s·B)`, the frozen weight in whatever precision it is stored.
            Weight::Dense(weight) => {
                let (w, products) = (weight.val(), self.products);
                match lora {
                    Some(lora) if dropout => frozen_matmul(x.clone(), w, products) + lora.update(x),
                    Some(lora) => lora_matmul(x, w, lora.a.val(), lora.scaled_b(), products),
                    None => frozen_matmul(x, w, products),
                }
            }
            Weight::Blocks(weight) => {
                let weight = weight.operand();
                match lora {
                    Some(lora) if dropout => block_matmul(x.clone(), &weight) + lora.update(x),
                    Some(lora) => block_lora_matmul(x, &weight, lora.a.val(), lora.scaled_b()),
                    None => block_matmul(x, &weight),
                }
            }
        };
        match &self.bias {
            Some(bias) => y + bias.val().unsqueeze(),
            None => y,
        }
    }
}

impl LoraAdapter {
    /// `B` `[r, d_out]` times the scale: scaling the small factor instead of the `[rows, d_out]`
    /// update saves a pass over the activations, forward and backward.
    fn scaled_b(&self) -> Tensor<2> {
        self.b.val() * self.scale
    }

    /// The update alone, `s · (dropout(x) · A) · B` `[rows, d_out]` (dropout only while training).
    fn update(&self, x: Tensor<2>) -> Tensor<2> {
        let x = if self.dropout > 0.0 && x.is_autodiff() {
            let keep = Tensor::<2>::random(
                x.shape(),
                Distribution::Bernoulli(1.0 - self.dropout),
                &x.device(),
            );
            x * keep / (1.0 - self.dropout)
        } else {
            x
        };
        linear(linear(x, self.a.val(), None), self.scaled_b(), None)
    }
}
