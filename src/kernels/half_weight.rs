//! `x · W` for a frozen weight stored in half precision (bf16 or f16) while activations stay f32,
//! as one differentiable operation.
//!
//! Casting the weight with ordinary tensor ops would make the matmul keep the f32 copy alive for
//! the backward (it needs `W` to form `∂x = g · Wᵀ`), so a model stored in half precision would hold
//! an f32 copy of every weight until the backward ran: no saving at all. This op keeps the *half*
//! weight as its backward state and casts it again, transiently, in each pass; only one weight's
//! f32 copy exists at a time. The weight gets no gradient (it is frozen).

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::Flex;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

/// The operation (differentiable in `x`: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait HalfWeightOps: Backend {
    /// `x` `[rows, d_in]` · `weight` `[d_in, d_out]` (any float dtype) → `[rows, d_out]` in `x`'s
    /// dtype.
    #[fusion(dtype = x, shape = Shape::new([x[0], weight[1]]))]
    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `x` `[..., d_in]` · a frozen `weight` `[d_in, d_out]` stored in another float dtype →
/// `[..., d_out]` in `x`'s dtype, keeping only the stored weight for the backward.
pub fn half_weight_matmul<const D: usize>(x: Tensor<D>, weight: Tensor<2>) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let d_out = weight.dims()[1];
    let flat = x.reshape([rows, d_in]);
    let out = Tensor::<2>::from_dispatch(<Dispatch as HalfWeightOps>::half_weight_matmul(
        flat.into_dispatch(),
        weight.into_dispatch(),
    ));
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    out.reshape(out_dims)
}

/// `weight` cast to the dtype of `like` (a no-op when they already match).
fn cast_like<B: Backend>(weight: FloatTensor<B>, like: &FloatTensor<B>) -> FloatTensor<B> {
    let target = FloatDType::from(like.dtype());
    B::float_cast(weight, target)
}

fn forward<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    let weight = cast_like::<B>(weight, &x);
    B::float_matmul(x, weight)
}

macro_rules! impl_inner {
    ($backend:ty) => {
        impl HalfWeightOps for $backend {
            fn half_weight_matmul(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                forward::<Self>(x, weight)
            }
        }
    };
}

impl_inner!(NdArray);
impl_inner!(CubeBackend);

/// Flex: bf16 weights are widened by the parallel kernel of `kernels::cpu`.
impl HalfWeightOps for Flex {
    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let weight = if weight.dtype() == DType::BF16 && x.dtype() == DType::F32 {
            super::cpu::bf16_to_f32(&weight)
        } else {
            weight
        };
        forward::<Self>(x, weight)
    }
}

impl<B: HalfWeightOps, C: CheckpointStrategy> HalfWeightOps for Autodiff<B, C> {
    fn half_weight_matmul(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct HalfWeightMatmul;

        impl<B: HalfWeightOps> Backward<B, 1> for HalfWeightMatmul {
            /// The stored (half-precision) weight `[d_in, d_out]`.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node); // [rows, d_out]
                let [node] = ops.parents;
                if let Some(node) = node {
                    // ∂x = g · Wᵀ, the same op on the transposed weight: [rows, d_in]
                    let dx = B::half_weight_matmul(grad, B::float_transpose(ops.state));
                    grads.register::<B>(node.id, dx);
                }
            }
        }

        // Only `x` is a parent: the weight is frozen by contract.
        let weight = weight.into_primitive();
        match HalfWeightMatmul
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::half_weight_matmul(x.into_primitive(), weight.clone());
                prep.finish(weight, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::half_weight_matmul(x.into_primitive(), weight))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Against `x · W.cast(f32)` with ordinary ops: the same values and the same `∂x`.
    fn check(device: &Device, dtype: FloatDType) {
        let device = device.clone().autodiff();
        let x = Tensor::<3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &device)
            .detach()
            .require_grad();
        let weight = Tensor::<2>::random([8, 5], Distribution::Normal(0.0, 1.0), &device)
            .detach()
            .cast(dtype);
        assert_eq!(weight.dtype(), dtype.into());
        let cot = Tensor::<3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let fused = half_weight_matmul(x.clone(), weight.clone());
        assert_eq!(fused.dtype(), x.dtype());
        let plain = x.clone().matmul(weight.cast(FloatDType::F32).unsqueeze());
        let g1 = (fused.clone() * cot.clone()).sum().backward();
        let g2 = (plain.clone() * cot).sum().backward();
        let close = |a: Tensor<3>, b: Tensor<3>| {
            let err: f32 = (a - b).abs().max().into_scalar();
            assert!(err <= 1e-5, "max error {err}");
        };
        close(fused.inner(), plain.inner());
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
    }

    #[test]
    fn bf16_weight_matmul_matches_cast_then_matmul_on_flex() {
        check(&Device::flex(), FloatDType::BF16);
    }

    #[test]
    fn f16_weight_matmul_matches_cast_then_matmul_on_wgpu() {
        match crate::device::wgpu_or_skip() {
            Some(device) if device.supports_dtype(FloatDType::F16) => {
                check(&device, FloatDType::F16)
            }
            Some(_) => eprintln!("skipping the wgpu check: the adapter has no f16 support"),
            None => {}
        }
    }
}
