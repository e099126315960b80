//! The projections under autodiff: only `x` (and LoRA's factors) are inputs; the frozen weight —
//! dense in any float dtype, or in blocks — is what the backward keeps, as stored, and widens again.
//! One generic forward/backward pair serves both kinds of weight ([`Frozen`]).

use std::fmt;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{AutodiffBackend, Backend};

use super::ProjectionOps;
use crate::kernels::autodiff;

/// A frozen weight as the autodiff ops keep it for the backward: the stored tensor or its blocks.
trait Frozen<B: ProjectionOps>: Clone + Send + fmt::Debug + 'static {
    /// `x · W` (the forward's product) plus `u · v`.
    fn matmul_add_product(
        &self,
        x: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B>;
    /// `x · W`.
    fn matmul(&self, x: FloatTensor<B>) -> FloatTensor<B>;
    /// `g · Wᵀ` (the backward's `∂x`) plus `u · v`.
    fn grad_matmul_add_product(
        &self,
        g: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B>;
    /// `g · Wᵀ`.
    fn grad_matmul(&self, g: FloatTensor<B>) -> FloatTensor<B>;
}

/// A dense `[d_in, d_out]` weight in any float dtype, and how its products multiply
/// ([`super::Products`] code).
#[derive(Debug, Clone)]
struct Dense<B: Backend> {
    weight: FloatTensor<B>,
    products: usize,
}

impl<B: ProjectionOps> Frozen<B> for Dense<B> {
    fn matmul_add_product(
        &self,
        x: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B> {
        B::matmul_add_product(x, self.weight.clone(), u, v, self.products)
    }
    fn matmul(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        B::frozen_matmul(x, self.weight.clone(), self.products)
    }
    fn grad_matmul_add_product(
        &self,
        g: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let weight = B::float_transpose(self.weight.clone());
        B::matmul_add_product(g, weight, u, v, self.products)
    }
    fn grad_matmul(&self, g: FloatTensor<B>) -> FloatTensor<B> {
        B::frozen_matmul(g, B::float_transpose(self.weight.clone()), self.products)
    }
}

/// A block-quantized `W` `[d_out, d_in]`: the forward's product is `x · Wᵀ`.
#[derive(Debug, Clone)]
struct Blocks<B: Backend> {
    words: IntTensor<B>,
    scales: FloatTensor<B>,
    format: usize,
}

impl<B: ProjectionOps> Frozen<B> for Blocks<B> {
    fn matmul_add_product(
        &self,
        x: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let (words, scales) = (self.words.clone(), self.scales.clone());
        B::block_matmul_add_product(x, words, scales, self.format, u, v)
    }
    fn matmul(&self, x: FloatTensor<B>) -> FloatTensor<B> {
        B::block_matmul(x, self.words.clone(), self.scales.clone(), self.format)
    }
    fn grad_matmul_add_product(
        &self,
        g: FloatTensor<B>,
        u: FloatTensor<B>,
        v: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let (words, scales) = (self.words.clone(), self.scales.clone());
        B::block_grad_matmul_add_product(g, words, scales, self.format, u, v)
    }
    fn grad_matmul(&self, g: FloatTensor<B>) -> FloatTensor<B> {
        B::block_grad_matmul(g, self.words.clone(), self.scales.clone(), self.format)
    }
}

/// Only `x` (and LoRA's factors) are inputs: the weight is frozen by contract, and the backward
/// keeps the *stored* weight.
impl<B: ProjectionOps, C: CheckpointStrategy> ProjectionOps for Autodiff<B, C> {
    fn frozen_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        let weight = weight.into_primitive();
        tracked_frozen::<B, C, _>(x, Dense { weight, products })
    }

    fn lora_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        products: usize,
    ) -> FloatTensor<Self> {
        let weight = weight.into_primitive();
        tracked_lora::<B, C, _>(x, a, b, Dense { weight, products })
    }

    fn dequantize_blocks(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        let weight = B::dequantize_blocks(words, scales.into_primitive(), format);
        <Self as AutodiffBackend>::from_inner(weight)
    }

    fn block_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
    ) -> FloatTensor<Self> {
        let scales = scales.into_primitive();
        tracked_frozen::<B, C, _>(
            x,
            Blocks {
                words,
                scales,
                format,
            },
        )
    }

    fn block_lora_matmul(
        x: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        format: usize,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let scales = scales.into_primitive();
        tracked_lora::<B, C, _>(
            x,
            a,
            b,
            Blocks {
                words,
                scales,
                format,
            },
        )
    }
}

/// `x · W` for a frozen `W`, differentiable in `x`.
fn tracked_frozen<B: ProjectionOps, C: CheckpointStrategy, W: Frozen<B>>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: W,
) -> FloatTensor<Autodiff<B, C>> {
    let kept = weight.clone();
    autodiff::op::<B, C, _, 1>(
        [x],
        move |[x]| (kept.matmul(x), kept),
        move |[x]| weight.matmul(x),
        // ∂x = g · Wᵀ: [rows, d_in]
        |weight: W, grad, _| [Some(weight.grad_matmul(grad))],
    )
}

/// What LoRA's backward keeps: `x` `[rows, d_in]`, the frozen weight, `a` `[d_in, r]`, `b`
/// `[r, d_out]` and `u = x · a` `[rows, r]` (the inputs, shared, not copied, and one small product).
#[derive(Debug, Clone)]
struct LoraState<B: Backend, W> {
    x: FloatTensor<B>,
    weight: W,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    u: FloatTensor<B>,
}

/// `x · W + (x · a) · b`, differentiable in `x`, `a` and `b`.
fn tracked_lora<B: ProjectionOps, C: CheckpointStrategy, W: Frozen<B>>(
    x: FloatTensor<Autodiff<B, C>>,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    weight: W,
) -> FloatTensor<Autodiff<B, C>> {
    let kept = weight.clone();
    autodiff::op::<B, C, _, 3>(
        [x, a, b],
        move |[x, a, b]| {
            let u = B::float_matmul(x.clone(), a.clone());
            let out = kept.matmul_add_product(x.clone(), u.clone(), b.clone());
            let state = LoraState {
                x,
                weight: kept,
                a,
                b,
                u,
            };
            (out, state)
        },
        move |[x, a, b]| {
            let u = B::float_matmul(x.clone(), a);
            weight.matmul_add_product(x, u, b)
        },
        lora_gradient::<B, W>,
    )
}

/// LoRA's backward from `g = ∂out` `[rows, d_out]`.
fn lora_gradient<B: ProjectionOps, W: Frozen<B>>(
    LoraState { x, weight, a, b, u }: LoraState<B, W>,
    grad: FloatTensor<B>,
    [need_x, need_a, need_b]: [bool; 3],
) -> [Option<FloatTensor<B>>; 3] {
    // ∂b = uᵀ · g: [r, d_out]
    let db = need_b.then(|| B::float_matmul(B::float_transpose(u), grad.clone()));
    if !need_x && !need_a {
        return [None, None, db];
    }
    // ∂u = g · bᵀ: [rows, r]
    let du = B::float_matmul(grad.clone(), B::float_transpose(b));
    // ∂a = xᵀ · ∂u: [d_in, r]
    let da = need_a.then(|| B::float_matmul(B::float_transpose(x), du.clone()));
    // ∂x = g · Wᵀ + ∂u · aᵀ: [rows, d_in]
    let dx = need_x.then(|| weight.grad_matmul_add_product(grad, du, B::float_transpose(a)));
    [dx, da, db]
}
