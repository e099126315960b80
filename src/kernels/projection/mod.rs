//! The decoder's projections as single operations: `x · W` by a frozen weight (stored in f32, or in
//! half precision while activations stay f32), and the LoRA projection `x · W + (x · A) · B`.
//!
//! - **Half-precision weights.** Casting the weight with ordinary tensor ops would make the matmul
//!   keep the f32 copy alive for the backward (it needs `W` to form `∂x = g · Wᵀ`), so a model
//!   stored in half precision would hold an f32 copy of every weight until the backward ran. These
//!   ops keep the *stored* weight as their backward state and widen it transiently in each pass.
//! - **LoRA as one op.** Its backward forms `∂x = g · Wᵀ + (g · Bᵀ) · Aᵀ` as one product
//!   accumulated into another, where the decomposed graph would add two `[rows, d_in]` gradients.
//!   The frozen weight never gets a gradient.
//! - **Flex** runs both products through `gemm` into one unzeroed buffer (`gemm`).
//!   Other backends compose ordinary ops (Fusion fuses them lazily on wgpu).

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::Flex;
use burn::backend::ndarray::NdArray;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::kernels::autodiff;

pub(crate) mod gemm;

/// The operations (differentiable in everything but the frozen weight: `Autodiff` routes to the
/// impl below). Row-major 2-D operands; the weight may be stored in any float dtype.
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait ProjectionOps: Backend {
    /// `x` `[rows, d_in]` · `weight` `[d_in, d_out]` → `[rows, d_out]` in `x`'s dtype.
    #[fusion(default)]
    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight = cast_like::<Self>(weight, &x);
        Self::float_matmul(x, weight)
    }

    /// `x · weight + u · v`, with `u` `[rows, r]` and `v` `[r, d_out]` in `x`'s dtype.
    #[fusion(default)]
    fn matmul_add_product(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let base = Self::frozen_matmul(x, weight);
        Self::float_add(base, Self::float_matmul(u, v))
    }

    /// LoRA: `x · weight + (x · a) · b`, with `a` `[d_in, r]` and `b` `[r, d_out]` (carrying
    /// LoRA's scale).
    #[fusion(default)]
    fn lora_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let u = Self::float_matmul(x.clone(), a);
        Self::matmul_add_product(x, weight, u, b)
    }
}

/// `x` `[rows, d_in]` · a frozen `weight` `[d_in, d_out]` in any float dtype → `[rows, d_out]` in
/// `x`'s dtype, keeping only the stored weight for the backward.
pub fn frozen_matmul(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::frozen_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// `x · weight + (x · a) · b` for a frozen `weight` (any float dtype) and trainable `a`
/// `[d_in, r]`, `b` `[r, d_out]`: gradients for `x`, `a` and `b`.
pub fn lora_matmul(x: Tensor<2>, weight: Tensor<2>, a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as ProjectionOps>::lora_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
        a.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// `weight` cast to the dtype of `like` (a no-op when they already match).
fn cast_like<B: Backend>(weight: FloatTensor<B>, like: &FloatTensor<B>) -> FloatTensor<B> {
    B::float_cast(weight, FloatDType::from(like.dtype()))
}

impl ProjectionOps for NdArray {}
impl ProjectionOps for CubeBackend {}

/// Flex: f32 products go straight to `gemm`; bf16 weights are widened by the parallel kernel of
/// `kernels::cpu`.
impl ProjectionOps for Flex {
    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight = widen_like(weight, &x);
        if gemm::all_f32_matrices(&[&x, &weight]) {
            gemm::matmul_add(&x, &weight, None)
        } else {
            Self::float_matmul(x, weight)
        }
    }

    fn matmul_add_product(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        u: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let weight = widen_like(weight, &x);
        if gemm::all_f32_matrices(&[&x, &weight, &u, &v]) {
            gemm::matmul_add(&x, &weight, Some((&u, &v)))
        } else {
            Self::float_add(Self::float_matmul(x, weight), Self::float_matmul(u, v))
        }
    }
}

/// A flex weight in `x`'s dtype: bf16 → f32 by the parallel kernel, anything else by flex's cast.
fn widen_like(weight: FloatTensor<Flex>, x: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    if weight.dtype() == DType::BF16 && x.dtype() == DType::F32 {
        crate::kernels::cpu::bf16_to_f32(&weight)
    } else {
        cast_like::<Flex>(weight, x)
    }
}

/// Only `x` (and LoRA's factors) are inputs: the weight is frozen by contract, and the backward
/// keeps the *stored* weight.
impl<B: ProjectionOps, C: CheckpointStrategy> ProjectionOps for Autodiff<B, C> {
    fn frozen_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight = weight.into_primitive();
        let kept = weight.clone();
        autodiff::op::<B, C, _, 1>(
            [x],
            move |[x]| (B::frozen_matmul(x, kept.clone()), kept),
            move |[x]| B::frozen_matmul(x, weight),
            // ∂x = g · Wᵀ, the same op on the transposed weight: [rows, d_in]
            |weight, grad, _| [Some(B::frozen_matmul(grad, B::float_transpose(weight)))],
        )
    }

    /// The backward keeps `x` `[rows, d_in]`, the weight, `a` `[d_in, r]`, `b` `[r, d_out]` and
    /// `u = x · a` `[rows, r]`: the inputs (shared, not copied) and one small product.
    fn lora_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let weight = weight.into_primitive();
        let kept = weight.clone();
        autodiff::op::<B, C, _, 3>(
            [x, a, b],
            move |[x, a, b]| {
                let u = B::float_matmul(x.clone(), a.clone());
                let out = B::matmul_add_product(x.clone(), kept.clone(), u.clone(), b.clone());
                (out, [x, kept, a, b, u])
            },
            move |[x, a, b]| B::lora_matmul(x, weight, a, b),
            lora_gradient::<B>,
        )
    }
}

/// LoRA's backward from `g = ∂out` `[rows, d_out]`.
fn lora_gradient<B: ProjectionOps>(
    [x, weight, a, b, u]: [FloatTensor<B>; 5],
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
    let dx = need_x.then(|| {
        B::matmul_add_product(grad, B::float_transpose(weight), du, B::float_transpose(a))
    });
    [dx, da, db]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;

    fn normal(shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::<2>::random(shape, Distribution::Normal(0.0, 1.0), device).detach()
    }

    fn close(a: Tensor<2>, b: Tensor<2>) {
        let e = max_rel_err(a, b);
        assert!(e <= 1e-5, "max relative error {e}");
    }

    /// Both ops (or only the LoRA one, which runs the frozen product inside it) against ordinary
    /// ops on the weight cast to f32: the same values and the same gradients for `x`, `a` and `b`.
    fn check(device: &Device, dtype: FloatDType, frozen_too: bool) {
        let device = device.clone().autodiff();
        let (rows, d_in, d_out, r) = (7, 8, 5, 3);
        let x = normal([rows, d_in], &device).require_grad();
        let a = normal([d_in, r], &device).require_grad();
        let b = normal([r, d_out], &device).require_grad();
        let weight = normal([d_in, d_out], &device).cast(dtype);
        assert_eq!(weight.dtype(), dtype.into());
        let wide = weight.clone().cast(FloatDType::F32);
        let cot = normal([rows, d_out], &device);

        if frozen_too {
            let fused = frozen_matmul(x.clone(), weight.clone());
            assert_eq!(fused.dtype(), x.dtype());
            let plain = x.clone().matmul(wide.clone());
            let (g1, g2) = (
                (fused.clone() * cot.clone()).sum().backward(),
                (plain.clone() * cot.clone()).sum().backward(),
            );
            close(fused.inner(), plain.inner());
            close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        }

        let fused = lora_matmul(x.clone(), weight, a.clone(), b.clone());
        let plain = x.clone().matmul(wide) + x.clone().matmul(a.clone()).matmul(b.clone());
        let (g1, g2) = (
            (fused.clone() * cot.clone()).sum().backward(),
            (plain.clone() * cot).sum().backward(),
        );
        close(fused.inner(), plain.inner());
        for t in [&x, &a, &b] {
            close(t.grad(&g1).unwrap(), t.grad(&g2).unwrap());
        }
    }

    #[test]
    fn projections_match_plain_ops_on_flex() {
        check(&Device::flex(), FloatDType::F32, true);
        check(&Device::flex(), FloatDType::BF16, true);
    }

    #[test]
    fn projections_match_plain_ops_on_ndarray() {
        check(&Device::ndarray(), FloatDType::F32, true);
    }

    /// Without gradients (the reference pass) the ops take the inner backend's path directly.
    #[test]
    fn untracked_lora_matmul_matches_tracked_on_flex() {
        let device = Device::flex();
        let (x, w, a, b) = (
            normal([4, 6], &device),
            normal([6, 5], &device),
            normal([6, 2], &device),
            normal([2, 5], &device),
        );
        let plain = x.clone().matmul(w.clone()) + x.clone().matmul(a.clone()).matmul(b.clone());
        close(lora_matmul(x, w, a, b), plain);
    }

    /// On wgpu each new shape and dtype compiles (and autotunes) kernels, slowly on the software
    /// Vulkan of CI, so the f16 weight goes through the LoRA op only.
    #[test]
    fn projections_match_plain_ops_on_wgpu() {
        if let Some(device) = crate::device::wgpu_or_skip() {
            check(&device, FloatDType::F32, true);
            if device.supports_dtype(FloatDType::F16) {
                check(&device, FloatDType::F16, false);
            } else {
                eprintln!("skipping the f16 check on wgpu: the adapter has no f16 support");
            }
        }
    }
}
