//! SwiGLU and the attention softmax as single differentiable operations that keep less for the
//! backward pass than their decomposed forms.
//!
//! Per decoder layer, the decomposed `silu(gate) · up` keeps five `[batch, seq, intermediate]`
//! tensors for the backward (gate, sigmoid(gate), silu(gate), up, the product's input); `swiglu`
//! keeps only `gate` and `up` and recomputes the sigmoid. The decomposed softmax keeps its
//! `exp(x − max)` *and* its output (`[batch, heads, seq, seq]` each); `softmax_last` keeps only
//! the output (which the following `probs · V` matmul keeps anyway) and uses
//! `∂x = y · (g − Σ g·y)`. On flex (f32) SwiGLU, the softmax and their gradients each run as one
//! multi-threaded pass (`kernels::cpu`); elsewhere they are plain tensor ops.

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the ops too.
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

use super::{autodiff, cpu};

/// The two operations (differentiable: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait LeanActivationOps: Backend {
    /// `silu(gate) · up`, both `[..., d]`.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Softmax over the last dimension.
    #[fusion(dtype = tensor, shape = tensor)]
    fn softmax_last(tensor: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// Their gradients, run by the backward pass on the inner backend.
#[backend_extension(Cube, Fusion, Flex, NdArray)]
pub trait LeanActivationGradOps: Backend {
    /// `∂/∂gate` of `swiglu` given the output gradient `grad`.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu_grad_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `∂/∂up` of `swiglu` given the output gradient `grad`.
    #[fusion(dtype = gate, shape = gate)]
    fn swiglu_grad_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `∂/∂x` of `softmax_last` from its output `y` and the output gradient `grad`.
    #[fusion(dtype = y, shape = y)]
    fn softmax_last_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `silu(gate) · up` (`[..., d]` each), keeping only `gate` and `up` for the backward.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as LeanActivationOps>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

/// Softmax over the last dimension, keeping only its output for the backward.
pub fn softmax_last<const D: usize>(tensor: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as LeanActivationOps>::softmax_last(
        tensor.into_dispatch(),
    ))
}

/// `silu(gate) · up` with the backend's element-wise ops.
fn swiglu_plain<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    let silu = B::float_mul(gate.clone(), B::sigmoid(gate));
    B::float_mul(silu, up)
}

/// `grad · up · silu'(gate)`, `silu'(x) = σ(x) + silu(x)·(1 − σ(x))`.
fn swiglu_grad_gate_plain<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let sig = B::sigmoid(gate.clone());
    let silu = B::float_mul(gate, sig.clone());
    let one_minus = B::float_add_scalar(B::float_neg(sig.clone()), 1.0.into());
    let dsilu = B::float_add(sig, B::float_mul(silu, one_minus));
    B::float_mul(B::float_mul(grad, up), dsilu)
}

/// `grad · silu(gate)`.
fn swiglu_grad_up_plain<B: Backend>(gate: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let silu = B::float_mul(gate.clone(), B::sigmoid(gate));
    B::float_mul(grad, silu)
}

/// The backend's softmax over the last dimension.
fn softmax_plain<B: Backend>(tensor: FloatTensor<B>) -> FloatTensor<B> {
    let last = tensor.shape().num_dims() - 1;
    B::softmax(tensor, last)
}

/// `y · (g − Σ_last g·y)`.
fn softmax_grad_plain<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), last);
    B::float_mul(y, B::float_sub(grad, dot))
}

macro_rules! impl_plain {
    ($backend:ty) => {
        impl LeanActivationOps for $backend {
            fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
                swiglu_plain::<Self>(gate, up)
            }

            fn softmax_last(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
                softmax_plain::<Self>(tensor)
            }
        }

        impl LeanActivationGradOps for $backend {
            fn swiglu_grad_gate(
                gate: FloatTensor<Self>,
                up: FloatTensor<Self>,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                swiglu_grad_gate_plain::<Self>(gate, up, grad)
            }

            fn swiglu_grad_up(
                gate: FloatTensor<Self>,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                swiglu_grad_up_plain::<Self>(gate, grad)
            }

            fn softmax_last_grad(
                y: FloatTensor<Self>,
                grad: FloatTensor<Self>,
            ) -> FloatTensor<Self> {
                softmax_grad_plain::<Self>(y, grad)
            }
        }
    };
}

impl_plain!(NdArray);
impl_plain!(CubeBackend);

/// Flex: the fused, threaded kernels of `cpu` for f32; plain ops for other dtypes.
impl LeanActivationOps for Flex {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&gate, &up]) {
            cpu::map2(&gate, &up, cpu::swiglu_chunk)
        } else {
            swiglu_plain::<Self>(gate, up)
        }
    }

    fn softmax_last(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&tensor]) {
            cpu::softmax(&tensor)
        } else {
            softmax_plain::<Self>(tensor)
        }
    }
}

impl LeanActivationGradOps for Flex {
    fn swiglu_grad_gate(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&gate, &up, &grad]) {
            cpu::map3(&gate, &up, &grad, cpu::swiglu_grad_gate_chunk)
        } else {
            swiglu_grad_gate_plain::<Self>(gate, up, grad)
        }
    }

    fn swiglu_grad_up(gate: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&gate, &grad]) {
            cpu::map2(&gate, &grad, cpu::swiglu_grad_up_chunk)
        } else {
            swiglu_grad_up_plain::<Self>(gate, grad)
        }
    }

    fn softmax_last_grad(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if cpu::all_f32_same_shape(&[&y, &grad]) {
            cpu::softmax_grad(&y, &grad)
        } else {
            softmax_grad_plain::<Self>(y, grad)
        }
    }
}

impl<B: LeanActivationOps + LeanActivationGradOps, C: CheckpointStrategy> LeanActivationOps
    for Autodiff<B, C>
{
    /// The backward keeps `(gate, up)`.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff::op::<B, C, _, 2>(
            [gate, up],
            |[g, u]| (B::swiglu(g.clone(), u.clone()), (g, u)),
            |[g, u]| B::swiglu(g, u),
            |(gate, up), grad, [need_gate, need_up]| {
                let d_up = need_up.then(|| B::swiglu_grad_up(gate.clone(), grad.clone()));
                [need_gate.then(|| B::swiglu_grad_gate(gate, up, grad)), d_up]
            },
        )
    }

    /// The backward keeps the output `y`.
    fn softmax_last(tensor: FloatTensor<Self>) -> FloatTensor<Self> {
        autodiff::op::<B, C, _, 1>(
            [tensor],
            |[x]| {
                let y = B::softmax_last(x);
                (y.clone(), y)
            },
            |[x]| B::softmax_last(x),
            |y, grad, _| [Some(B::softmax_last_grad(y, grad))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;
    use burn::tensor::activation::{silu, softmax};

    fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), device)
            .detach()
            .require_grad()
    }

    /// Both ops against their decomposed forms: values and every input gradient, under a random
    /// output cotangent.
    fn check_against_decomposed(device: &Device) {
        let device = device.clone().autodiff();
        let shape = [2, 5, 19];
        let (gate, up, scores) = (
            random(shape, &device),
            random(shape, &device),
            random(shape, &device),
        );
        let cot = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);

        let fused = swiglu(gate.clone(), up.clone());
        let plain = silu(gate.clone()) * up.clone();
        let g1 = (fused.clone() * cot.clone()).sum().backward();
        let g2 = (plain.clone() * cot.clone()).sum().backward();
        assert!(max_rel_err(fused.inner(), plain.inner()) <= 1e-6);
        let e = max_rel_err(gate.grad(&g1).unwrap(), gate.grad(&g2).unwrap());
        assert!(e <= 1e-5, "swiglu ∂gate: {e}");
        let e = max_rel_err(up.grad(&g1).unwrap(), up.grad(&g2).unwrap());
        assert!(e <= 1e-5, "swiglu ∂up: {e}");

        let fused = softmax_last(scores.clone());
        let plain = softmax(scores.clone(), 2);
        let g1 = (fused.clone() * cot.clone()).sum().backward();
        let g2 = (plain.clone() * cot).sum().backward();
        assert!(max_rel_err(fused.inner(), plain.inner()) <= 1e-6);
        let e = max_rel_err(scores.grad(&g1).unwrap(), scores.grad(&g2).unwrap());
        assert!(e <= 1e-5, "softmax ∂x: {e}");
    }

    crate::device::on_every_backend!(check_against_decomposed => lean_ops_match_decomposed_on_flex, lean_ops_match_decomposed_on_ndarray, lean_ops_match_decomposed_on_wgpu);
}
