//! Rotary position embedding ("rotate half", as transformers applies it) as one differentiable
//! operation: `y = x·cos + rotate_half(x)·sin`, with `rotate_half([x₁, x₂]) = [−x₂, x₁]`.
//!
//! Written as tensor ops it is seven per tensor and layer (two narrows, a negation, a
//! concatenation, two products and a sum), each a pass over `x` with a buffer of its own, and
//! most of what a decoding step spends outside the products. Flex runs it as one threaded pass that
//! reads `x` in whatever strides it comes (the model's `[batch, heads, seq, d]` is a transposed
//! view); other backends compose the ordinary ops (Fusion fuses them lazily on wgpu). The backward
//! is the same rotation with the sine table's halves swapped and negated (`∂x₁ = g₁·cos₁ + g₂·sin₂`,
//! `∂x₂ = g₂·cos₂ − g₁·sin₁`), so it needs no kernel of its own and keeps nothing but the tables.

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use burn::backend::TensorMetadata;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, Slice};
use rayon::prelude::*;

use super::autodiff;
use super::cpu::{multiversion, values};

/// The operation (differentiable in `x`: `Autodiff` routes to the impl below).
#[backend_extension(Autodiff, Cube, Fusion, Flex, NdArray)]
pub trait RopeOps: Backend {
    /// `x` `[batch, heads, seq, d]`, `cos` and `sin` `[1 or batch, 1, seq, d]` →
    /// `x·cos + rotate_half(x)·sin` `[batch, heads, seq, d]`.
    #[fusion(default)]
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        plain_rope::<Self>(x, cos, sin)
    }
}

/// The rotation as ordinary ops.
fn plain_rope<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    let (x1, x2) = halves::<B>(&x);
    let rotated = B::float_cat(vec![B::float_neg(x2), x1], 3);
    B::float_add(B::float_mul(x, cos), B::float_mul(rotated, sin))
}

/// The first and second halves of the last dimension of `t` `[.., .., .., d]`.
fn halves<B: Backend>(t: &FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let half = t.shape()[3] / 2;
    let all = Slice::from(..);
    let part = |range: Slice| B::float_slice(t.clone(), &[all, all, all, range]);
    (part(Slice::from(..half)), part(Slice::from(half..)))
}

/// Rotates `x` `[batch, heads, seq, d]` by the tables `cos`, `sin` `[1 or batch, 1, seq, d]`.
pub fn rope(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as RopeOps>::rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

impl RopeOps for NdArray {}
impl RopeOps for CubeBackend {}

multiversion! {
    /// One position's head vector: `out = x·cos + rotate_half(x)·sin`.
    fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
        let half = x.len() / 2;
        let (x1, x2) = x.split_at(half);
        let (out1, out2) = out.split_at_mut(half);
        let (c1, c2) = cos.split_at(half);
        let (s1, s2) = sin.split_at(half);
        for i in 0..half {
            out1[i] = x1[i] * c1[i] - x2[i] * s1[i];
            out2[i] = x2[i] * c2[i] + x1[i] * s2[i];
        }
    }
}

/// Below this many elements the rotation runs on the calling thread (a decoding step's few heads).
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// The rotation on flex for f32 with `x`'s last dimension contiguous: one pass, a task per
/// (batch, head).
fn cpu_rope(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> FlexTensor {
    let [batch, heads, seq, d] = x.shape().dims();
    let layout = x.layout();
    let strides: Vec<usize> = layout.strides().iter().map(|&s| s as usize).collect();
    let data: &[f32] = x.storage();
    let start = layout.start_offset();
    let (cos, sin) = (values(cos), values(sin));
    let table_rows = cos.len() / (seq * d);
    let mut out = vec![0.0f32; batch * heads * seq * d];
    let rotate = |(pair, out): (usize, &mut [f32])| {
        let (b, h) = (pair / heads, pair % heads);
        let table = if table_rows == 1 { 0 } else { b * seq * d };
        let base = start + b * strides[0] + h * strides[1];
        for (s, out) in out.chunks_exact_mut(d).enumerate() {
            let x = &data[base + s * strides[2]..][..d];
            let at = table + s * d;
            rope_row(x, &cos[at..at + d], &sin[at..at + d], out);
        }
    };
    if out.len() >= PARALLEL_ELEMENTS {
        out.par_chunks_mut(seq * d).enumerate().for_each(rotate);
    } else {
        out.chunks_mut(seq * d).enumerate().for_each(rotate);
    }
    FlexTensor::from_data(TensorData::new(out, x.shape()))
}

/// Whether the flex kernel takes these operands: f32, 4-D, `x` not empty, with non-negative
/// strides, a contiguous last dimension and an even `d`, tables `[1 or batch, 1, seq, d]`.
fn cpu_supports(x: &FlexTensor, cos: &FlexTensor, sin: &FlexTensor) -> bool {
    let layout = x.layout();
    let strides = layout.strides();
    [x, cos, sin]
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.shape().num_dims() == 4)
        && x.shape().num_elements() > 0
        && strides.iter().all(|&s| s >= 0)
        && strides[3] == 1
        && x.shape()[3].is_multiple_of(2)
        && [cos, sin].iter().all(|t| {
            let [rows, one, seq, d] = t.shape().dims();
            (rows == 1 || rows == x.shape()[0])
                && one == 1
                && [seq, d] == x.shape().dims::<4>()[2..]
        })
}

/// Flex: the fused pass for f32, ordinary ops otherwise.
impl RopeOps for Flex {
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if cpu_supports(&x, &cos, &sin) {
            cpu_rope(&x, &cos, &sin)
        } else {
            plain_rope::<Self>(x, cos, sin)
        }
    }
}

/// The table that turns the rotation into its backward: `[−sin₂, −sin₁]` (halves swapped and
/// negated; transformers' tables repeat one half, so this is `−sin` for them).
fn backward_sin<B: Backend>(sin: FloatTensor<B>) -> FloatTensor<B> {
    let (first, second) = halves::<B>(&sin);
    B::float_neg(B::float_cat(vec![second, first], 3))
}

impl<B: RopeOps, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    /// The backward keeps the tables (the rotation by `−sin`).
    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (cos, sin) = (cos.into_primitive(), sin.into_primitive());
        let untracked = (cos.clone(), sin.clone());
        autodiff::op::<B, C, _, 1>(
            [x],
            |[x]| (B::rope(x, cos.clone(), sin.clone()), (cos, sin)),
            |[x]| B::rope(x, untracked.0, untracked.1),
            |(cos, sin), grad, _| [Some(B::rope(grad, cos, backward_sin::<B>(sin)))],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;

    /// The rotation as transformers writes it.
    fn reference(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        x * cos + Tensor::cat(vec![x2.neg(), x1], 3) * sin
    }

    /// Values and `∂x` against the reference, for a transposed view of `[batch, seq, heads, d]`
    /// (as the model passes it) with tables per row and shared, including a decoding step's single
    /// position and a pass large enough to run on several threads.
    fn check_against_reference(device: &Device) {
        let device = device.clone().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        for (batch, seq, heads, d) in [(2, 5, 3, 8), (1, 1, 4, 64), (3, 40, 3, 128)] {
            for table_rows in [1, batch] {
                let x_leaf = Tensor::<4>::random([batch, seq, heads, d], normal, &device)
                    .detach()
                    .require_grad();
                let table = || {
                    let shape = [table_rows, 1, seq, d];
                    Tensor::<4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device)
                };
                let (cos, sin) = (table(), table());
                let cot = Tensor::<4>::random([batch, heads, seq, d], normal, &device);
                let x = || x_leaf.clone().swap_dims(1, 2);
                let expected = reference(x(), cos.clone(), sin.clone());
                let expected_grad = x_leaf
                    .grad(&(expected.clone() * cot.clone()).sum().backward())
                    .unwrap();
                let out = rope(x(), cos.clone(), sin.clone());
                let grad = x_leaf
                    .grad(&(out.clone() * cot.clone()).sum().backward())
                    .unwrap();
                let case = (batch, seq, heads, d, table_rows);
                assert!(
                    max_rel_err(out.inner(), expected.clone().inner()) <= 1e-6,
                    "{case:?}"
                );
                assert!(max_rel_err(grad, expected_grad) <= 1e-6, "{case:?}: ∂x");
                // Without autodiff (decoding) it is the same rotation.
                let out = rope(x().inner(), cos.inner(), sin.inner());
                assert!(
                    max_rel_err(out, expected.inner()) <= 1e-6,
                    "{case:?}: untracked"
                );
            }
        }
    }

    crate::device::on_every_backend!(check_against_reference => rope_matches_reference_on_flex, rope_matches_reference_on_ndarray, rope_matches_reference_on_wgpu);
}
