//! `log softmax(h · W)[target]` for every row of `h`, `chunk` rows at a time, as one differentiable
//! operation (Liger's fused linear cross-entropy / Cut Cross-Entropy, in spirit).
//!
//! Neither pass ever holds more than `[chunk, vocab]` logits:
//! - With a frozen weight (LoRA, the usual case) the gradient of each row's output is a single
//!   direction, `∂ log p / ∂h = (onehot − softmax) · Wᵀ` `[H]`, scaled by the row's output gradient.
//!   The forward computes it from the chunk's logits while it has them and keeps only that
//!   `[rows, H]`; the backward is a row-wise scaling, with no second pass over the vocabulary.
//! - With a trained weight the forward keeps only the `[rows]` result; the backward recomputes each
//!   chunk's logits and turns them into `g·(onehot − softmax)` before multiplying back by `Wᵀ` (and
//!   by `hᵀ` for the weight).
//!
//! The chunking, the matmuls and the autodiff plumbing are shared (`rows`); the row-wise softmax
//! work runs in the WGSL kernels of `shaders/logprobs*.wgsl` on wgpu (`wgsl_rows`), in fused CPU
//! kernels on flex (`cpu_rows`, whose chunk products call `gemm` directly), and as plain tensor ops
//! on ndarray (`rows::PlainRows`).

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::Flex;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;

mod cpu_rows;
mod rows;
mod wgsl_rows;

use rows::{PlainRows, forward, forward_with_direction, grad_hidden, grad_weight};

/// The fused LM-head log-prob operation (differentiable: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait LinearLogprobOps: Backend {
    /// `hidden` `[rows, H]`, `weight` `[H, V]`, `targets` `[rows]` → `log p(target)` `[rows]`.
    #[fusion(dtype = hidden, shape = Shape::new([hidden[0]]))]
    fn linear_logprobs(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;
}

/// Its gradients, run by the backward pass on the inner backend.
#[backend_extension(Cube, Fusion, Flex, NdArray)]
pub trait LinearLogprobGradOps: Backend {
    /// `∂/∂hidden` `[rows, H]` given the output gradient `grad` `[rows]`.
    #[fusion(dtype = hidden, shape = hidden)]
    fn linear_logprobs_grad_hidden(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;

    /// The forward's `log p(target)` `[rows]` together with its gradient direction
    /// `(onehot − softmax) · Wᵀ` `[rows, H]` (for a frozen weight: the backward is then
    /// `grad ⊙ direction`).
    #[fusion(meta = |hidden, _weight, _targets, _chunk| (
        TensorSpec::new(Shape::new([hidden.shape[0]]), hidden.dtype),
        hidden.clone(),
    ))]
    fn linear_logprobs_with_direction(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `∂/∂weight` `[H, V]` given the output gradient (only when the weight is trained).
    #[fusion(dtype = weight, shape = weight)]
    fn linear_logprobs_grad_weight(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        grad: FloatTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self>;
}

/// Log-probs of `targets` under `softmax(hidden · weight)`, computed `chunk` rows at a time
/// (`hidden` `[rows, H]`, `weight` `[H, V]`, `targets` `[rows]`) → `[rows]`.
pub fn linear_logprobs(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as LinearLogprobOps>::linear_logprobs(
        hidden.into_dispatch(),
        weight.into_dispatch(),
        targets.into_dispatch(),
        chunk.max(1),
    ))
}

/// Implements both traits for `$backend`, with `$rows(&hidden)` choosing the row work.
macro_rules! impl_ops {
    ($backend:ty, $rows:expr) => {
        impl LinearLogprobOps for $backend {
            fn linear_logprobs(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> FloatTensor<Self> {
                forward::<Self>($rows(&hidden), hidden, weight, targets, chunk)
            }
        }

        impl LinearLogprobGradOps for $backend {
            fn linear_logprobs_grad_hidden(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                grad: FloatTensor<Self>,
                chunk: usize,
            ) -> FloatTensor<Self> {
                grad_hidden::<Self>($rows(&hidden), hidden, weight, targets, grad, chunk)
            }

            fn linear_logprobs_with_direction(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                chunk: usize,
            ) -> (FloatTensor<Self>, FloatTensor<Self>) {
                forward_with_direction::<Self>($rows(&hidden), hidden, weight, targets, chunk)
            }

            fn linear_logprobs_grad_weight(
                hidden: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                targets: IntTensor<Self>,
                grad: FloatTensor<Self>,
                chunk: usize,
            ) -> FloatTensor<Self> {
                grad_weight::<Self>($rows(&hidden), hidden, weight, targets, grad, chunk)
            }
        }
    };
}

impl_ops!(Flex, cpu_rows::flex_row_ops);
impl_ops!(NdArray, |_: &FloatTensor<NdArray>| &PlainRows);
impl_ops!(CubeBackend, wgsl_rows::row_ops);

impl<B: LinearLogprobOps + LinearLogprobGradOps, C: CheckpointStrategy> LinearLogprobOps
    for Autodiff<B, C>
{
    fn linear_logprobs(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct Fused;

        impl<B: LinearLogprobOps + LinearLogprobGradOps> Backward<B, 2> for Fused {
            /// The inputs themselves (the weight is shared, not copied) and the chunk size.
            type State = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (hidden, weight, targets, chunk) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                let [hidden_node, weight_node] = ops.parents;
                if let Some(node) = weight_node {
                    let dw = B::linear_logprobs_grad_weight(
                        hidden.clone(),
                        weight.clone(),
                        targets.clone(),
                        grad.clone(),
                        chunk,
                    );
                    grads.register::<B>(node.id, dw);
                }
                if let Some(node) = hidden_node {
                    let dh = B::linear_logprobs_grad_hidden(hidden, weight, targets, grad, chunk);
                    grads.register::<B>(node.id, dh);
                }
            }
        }

        #[derive(Debug)]
        struct FrozenWeight;

        impl<B: LinearLogprobOps + LinearLogprobGradOps> Backward<B, 1> for FrozenWeight {
            /// The gradient direction `(onehot − softmax) · Wᵀ` `[rows, H]`.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node); // [rows]
                let [node] = ops.parents;
                if let Some(node) = node {
                    let rows = grad.shape()[0];
                    let grad = B::float_reshape(grad, Shape::new([rows, 1]));
                    grads.register::<B>(node.id, B::float_mul(ops.state, grad));
                }
            }
        }

        if !weight.is_tracked() {
            return match FrozenWeight
                .prepare::<C>([hidden.node()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let (out, direction) = B::linear_logprobs_with_direction(
                        hidden.into_primitive(),
                        weight.into_primitive(),
                        targets,
                        chunk,
                    );
                    prep.finish(direction, out)
                }
                OpsKind::UnTracked(prep) => prep.finish(B::linear_logprobs(
                    hidden.into_primitive(),
                    weight.into_primitive(),
                    targets,
                    chunk,
                )),
            };
        }

        match Fused
            .prepare::<C>([hidden.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (h, w) = (hidden.into_primitive(), weight.into_primitive());
                let out = B::linear_logprobs(h.clone(), w.clone(), targets.clone(), chunk);
                prep.finish((h, w, targets, chunk), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::linear_logprobs(
                hidden.into_primitive(),
                weight.into_primitive(),
                targets,
                chunk,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::log_softmax;

    fn max_rel_err(a: Tensor<2>, b: Tensor<2>) -> f32 {
        let scale: f32 = b.clone().abs().max().into_scalar();
        let err: f32 = (a - b).abs().max().into_scalar();
        err / scale.max(1e-6)
    }

    /// The fused op against `log_softmax(h·W)[target]`: values and gradients, for a trained weight
    /// (both gradients, recomputed in the backward) and a frozen one (the forward's direction).
    pub(crate) fn check_against_plain(device: &Device) {
        check(device, true);
        check(device, false);
    }

    fn check(device: &Device, train_weight: bool) {
        let device = device.clone().autodiff();
        let (rows, h, v) = (13, 8, 37);
        let hidden = Tensor::<2>::random([rows, h], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<2>::random([h, v], Distribution::Normal(0.0, 1.0), &device);
        let targets = Tensor::<1, Int>::from_ints(
            (0..rows as i64)
                .map(|i| (i * 7) % v as i64)
                .collect::<Vec<_>>()
                .as_slice(),
            &device,
        );
        let coeffs = Tensor::<1>::random([rows], Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let hd = hidden.clone().detach().require_grad();
            let wt = match train_weight {
                true => weight.clone().detach().require_grad(),
                false => weight.clone().detach(),
            };
            let out = if fused {
                linear_logprobs(hd.clone(), wt.clone(), targets.clone(), 5) // chunks of 5, 5, 3
            } else {
                log_softmax(hd.clone().matmul(wt.clone()), 1)
                    .gather(1, targets.clone().unsqueeze_dim::<2>(1))
                    .reshape([rows])
            };
            let grads = (out.clone() * coeffs.clone()).sum().backward();
            (out.inner(), hd.grad(&grads).unwrap(), wt.grad(&grads))
        };
        let (out_f, dh_f, dw_f) = run(true);
        let (out_p, dh_p, dw_p) = run(false);
        let e = max_rel_err(out_f.unsqueeze_dim(0), out_p.unsqueeze_dim(0));
        assert!(e <= 1e-5, "values: {e}");
        let e = max_rel_err(dh_f, dh_p);
        assert!(e <= 1e-5, "∂hidden: {e}");
        match (dw_f, dw_p) {
            (Some(dw_f), Some(dw_p)) if train_weight => {
                let e = max_rel_err(dw_f, dw_p);
                assert!(e <= 1e-5, "∂weight: {e}");
            }
            (None, None) if !train_weight => {}
            _ => panic!("∂weight exists only for a trained weight"),
        }
    }

    crate::device::on_every_backend!(check_against_plain => fused_matches_plain_on_flex, fused_matches_plain_on_ndarray, fused_matches_plain_on_wgpu);
}
