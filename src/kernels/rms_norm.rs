//! RMSNorm with a frozen weight as one differentiable operation: one pass forward and one pass
//! backward over `[rows, d]`, where the decomposed graph (square, mean, add, sqrt, reciprocal and
//! two products, each kept for the backward) takes about a dozen passes and their buffers.
//!
//! The backward is `∂x = r · (g·w − x · r² · mean(g·w·x))` with `r = 1 / sqrt(mean(x²) + eps)`,
//! recomputing `r` from `x` (a row reduction) rather than keeping it. Flex runs both passes as the
//! fused kernels of `kernels::cpu`; other backends compose ordinary ops (Fusion fuses them lazily on
//! wgpu). A trained weight (full fine-tuning) takes the ordinary ops instead (`model::norm`).

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::Flex;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::DType;

use super::{autodiff, cpu};

/// The operation (differentiable in `x`: `Autodiff` routes to the impl below) and its gradient.
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait RmsNormOps: Backend {
    /// `x` `[rows, d]`, `weight` `[d]` → `x · weight / sqrt(mean(x²) + eps)` `[rows, d]`.
    #[fusion(default)]
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        plain_rms_norm::<Self>(x, weight, eps)
    }

    /// `∂/∂x` `[rows, d]` given the output gradient `grad` `[rows, d]`.
    #[fusion(default)]
    fn rms_norm_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        plain_rms_norm_grad::<Self>(x, weight, grad, eps)
    }
}

/// The gradient as ordinary ops.
fn plain_rms_norm_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let d = weight.shape()[0];
    let r = inverse_rms::<B>(x.clone(), eps); // [rows, 1]
    let gw = B::float_mul(grad, B::float_reshape(weight, Shape::new([1, d])));
    let mean = B::float_mean_dim(B::float_mul(gw.clone(), x.clone()), 1); // [rows, 1]
    let r3 = B::float_mul(B::float_mul(r.clone(), r.clone()), r.clone());
    let correction = B::float_mul(x, B::float_mul(r3, mean));
    B::float_sub(B::float_mul(gw, r), correction)
}

/// The forward as ordinary ops.
fn plain_rms_norm<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let r = inverse_rms::<B>(x.clone(), eps); // [rows, 1]
    let d = weight.shape()[0];
    let weight = B::float_reshape(weight, Shape::new([1, d]));
    B::float_mul(B::float_mul(x, r), weight)
}

/// `1 / sqrt(mean(x²) + eps)` per row: `[rows, 1]`.
fn inverse_rms<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let variance = B::float_mean_dim(B::float_mul(x.clone(), x), 1);
    B::float_recip(B::float_sqrt(B::float_add_scalar(variance, eps.into())))
}

/// RMSNorm over the last dimension of `x` `[..., d]` with a frozen `weight` `[d]`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let out = Tensor::<2>::from_dispatch(<Dispatch as RmsNormOps>::rms_norm(
        x.reshape([rows, d]).into_dispatch(),
        weight.into_dispatch(),
        eps,
    ));
    out.reshape(dims)
}

impl RmsNormOps for NdArray {}
impl RmsNormOps for CubeBackend {}

/// Flex: the fused kernels of `kernels::cpu` for f32, ordinary ops otherwise.
impl RmsNormOps for Flex {
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&x]) && weight.dtype() == DType::F32 {
            cpu::rms_norm(&x, &weight, eps as f32)
        } else {
            plain_rms_norm::<Self>(x, weight, eps)
        }
    }

    fn rms_norm_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&x, &grad]) && weight.dtype() == DType::F32 {
            cpu::rms_norm_grad(&x, &weight, &grad, eps as f32)
        } else {
            plain_rms_norm_grad::<Self>(x, weight, grad, eps)
        }
    }
}

impl<B: RmsNormOps, C: CheckpointStrategy> RmsNormOps for Autodiff<B, C> {
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        // Only `x` is an input: the weight is frozen by contract. The backward keeps `x`, the
        // weight `[d]` and `eps`.
        let weight = weight.into_primitive();
        let kept = weight.clone();
        autodiff::op::<B, C, _, 1>(
            [x],
            move |[x]| (B::rms_norm(x.clone(), kept.clone(), eps), (x, kept, eps)),
            move |[x]| B::rms_norm(x, weight, eps),
            |(x, weight, eps), grad, _| [Some(B::rms_norm_grad(x, weight, grad, eps))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;

    /// Against the decomposed formula: values and `∂x` within 1e-5 relative.
    fn check(device: &Device) {
        let device = device.clone().autodiff();
        let (rows, d, eps) = (9, 37, 1e-5);
        let x = Tensor::<3>::random([3, rows / 3, d], Distribution::Normal(0.0, 2.0), &device)
            .detach()
            .require_grad();
        let weight = Tensor::<1>::random([d], Distribution::Normal(1.0, 0.3), &device).detach();
        let cot = Tensor::<3>::random([3, rows / 3, d], Distribution::Normal(0.0, 1.0), &device);
        let fused = rms_norm(x.clone(), weight.clone(), eps);
        let variance = x.clone().square().mean_dim(2);
        let plain = x.clone() * (variance + eps).sqrt().recip() * weight.unsqueeze();
        let g1 = (fused.clone() * cot.clone()).sum().backward();
        let g2 = (plain.clone() * cot).sum().backward();
        let e = max_rel_err(fused.inner(), plain.inner());
        assert!(e <= 1e-5, "values: {e}");
        let e = max_rel_err(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        assert!(e <= 1e-5, "∂x: {e}");
    }

    crate::device::on_every_backend!(check => rms_norm_matches_plain_ops_on_flex, rms_norm_matches_plain_ops_on_ndarray, rms_norm_matches_plain_ops_on_wgpu);
}
