//! Fused element-wise and row-wise kernels for the CPU backend (flex, f32): SwiGLU and its two
//! gradients, the softmax and its gradient (also the row work of the attention spans), RMSNorm and
//! its gradient, the log-prob rows of the fused LM head, and widening bf16 weights to f32.
//!
//! Flex runs each element-wise op as its own single-threaded pass with libm's scalar `expf` (a
//! profile of a training step put 9% of the time in `expf` alone). These kernels do each job in one
//! pass, split across threads with rayon, with a branch-free polynomial `exp` the compiler
//! vectorises; on x86-64 each kernel is compiled for AVX-512 and for AVX2 + FMA as well and picked at
//! run time, so the portable build still uses the wide units.

use burn::backend::TensorMetadata;
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorData};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const TASK: usize = 1 << 15;

/// `eˣ` within 4e-7 relative (a few ulp) for |x| ≤ 87: `2ᵏ · p(r)` with `x = k·ln2 + r`, |r| ≤ ln2/2, and a degree-7
/// Taylor polynomial. Below −87 it is exactly 0 (masked attention scores must not leave
/// denormals, which slow every later multiply down by orders of magnitude); above 88 it is clamped,
/// so it never overflows; NaN stays NaN. Branch-free, so loops over it vectorise.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let underflow = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let n = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let y = p * f32::from_bits(((n + 127) << 23) as u32);
    if underflow { 0.0 } else { y }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

/// Lanes of the reductions below: independent accumulators, so the loops vectorise without
/// reassociating (which the compiler may not do for floats).
const LANES: usize = 16;

/// `Σ f(a_i, b_i)` with `LANES` accumulators.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum::<f32>()
}

/// The largest element, with `LANES` accumulators.
#[inline(always)]
fn lane_max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(x[i]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// Defines `pub fn $name(args)` that runs `$body` compiled for AVX-512, else AVX2 + FMA, else the
/// build's baseline, whichever the CPU has (`#[inline(always)]` helpers inline into each version).
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

pub(crate) use multiversion;

multiversion! {
    /// `out = silu(gate) · up`.
    fn swiglu_chunk(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

multiversion! {
    /// `out = grad · up · silu'(gate)`, `silu'(x) = σ(x)·(1 + x·(1 − σ(x)))`.
    fn swiglu_grad_gate_chunk(gate: &[f32], up: &[f32], grad: &[f32], out: &mut [f32]) {
        for (((o, &g), &u), &d) in out.iter_mut().zip(gate).zip(up).zip(grad) {
            let s = sigmoid(g);
            *o = d * u * s * (1.0 + g * (1.0 - s));
        }
    }
}

multiversion! {
    /// `out = grad · silu(gate)`.
    fn swiglu_grad_up_chunk(gate: &[f32], grad: &[f32], out: &mut [f32]) {
        for ((o, &g), &d) in out.iter_mut().zip(gate).zip(grad) {
            *o = d * g * sigmoid(g);
        }
    }
}

multiversion! {
    /// Softmax backward over rows of `width`, in place: `g ← y · (g − Σ g·y)`.
    fn softmax_grad_rows(y: &[f32], grad: &mut [f32], width: usize) {
        for (g, y) in grad.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
            let dot = lane_sum(y, g, |a, b| a * b);
            for (g, &y) in g.iter_mut().zip(y) {
                *g = y * (*g - dot);
            }
        }
    }
}

multiversion! {
    /// Softmax over rows of `width`, in place.
    fn softmax_rows(rows: &mut [f32], width: usize) {
        for row in rows.chunks_exact_mut(width) {
            let max = lane_max(row);
            for x in row.iter_mut() {
                *x = fast_exp(*x - max);
            }
            let inv = 1.0 / lane_sum(row, row, |e, _| e);
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

multiversion! {
    /// bf16 bit patterns widened to f32 (exact: bf16 is the top half of an f32).
    fn bf16_bits_to_f32(halves: &[half::bf16], out: &mut [f32]) {
        for (o, &h) in out.iter_mut().zip(halves) {
            *o = f32::from_bits(u32::from(h.to_bits()) << 16);
        }
    }
}

multiversion! {
    /// `(max, log Σ exp(x − max))` of a row.
    fn row_max_lse(row: &[f32]) -> (f32, f32) {
        let max = lane_max(row);
        (max, lane_sum(row, row, |x, _| fast_exp(x - max)).ln())
    }
}

multiversion! {
    /// Overwrites a row of logits with `−g · softmax(row)` given its `max` and shifted `lse`.
    fn row_neg_scaled_softmax(row: &mut [f32], max: f32, lse: f32, g: f32) {
        let shift = max + lse;
        for x in row.iter_mut() {
            *x = -g * fast_exp(*x - shift);
        }
    }
}

/// The f32 contents of a flex tensor (copied only when it is not contiguous).
pub(crate) fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap().to_vec()),
    }
}

/// Whether every tensor is f32 with the same shape (the kernels' precondition).
pub fn all_f32_same_shape(tensors: &[&FlexTensor]) -> bool {
    let shape = tensors[0].shape();
    tensors
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.shape() == shape)
}

fn tensor(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.shape()))
}

/// An element-wise kernel over two inputs, in parallel chunks.
pub fn map2(a: &FlexTensor, b: &FlexTensor, f: fn(&[f32], &[f32], &mut [f32])) -> FlexTensor {
    let (x, y) = (values(a), values(b));
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(TASK)
        .zip(x.par_chunks(TASK).zip(y.par_chunks(TASK)))
        .for_each(|(o, (x, y))| f(x, y, o));
    tensor(out, a)
}

/// An element-wise kernel of three inputs: `f(a, b, c, out)`.
type Kernel3 = fn(&[f32], &[f32], &[f32], &mut [f32]);

/// An element-wise kernel over three inputs, in parallel chunks.
pub fn map3(a: &FlexTensor, b: &FlexTensor, c: &FlexTensor, f: Kernel3) -> FlexTensor {
    let (x, y, z) = (values(a), values(b), values(c));
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(TASK)
        .zip(
            x.par_chunks(TASK)
                .zip(y.par_chunks(TASK).zip(z.par_chunks(TASK))),
        )
        .for_each(|(o, (x, (y, z)))| f(x, y, z, o));
    tensor(out, a)
}

/// Elements per parallel task for row kernels: about `TASK`, in whole rows of `width`.
fn whole_rows(width: usize) -> usize {
    (TASK / width.max(1)).max(1) * width
}

/// Softmax over the last dimension.
pub fn softmax(x: &FlexTensor) -> FlexTensor {
    let width = *x.shape().last().expect("at least one dimension");
    let mut out = values(x).into_owned();
    out.par_chunks_mut(whole_rows(width))
        .for_each(|rows| softmax_rows(rows, width));
    tensor(out, x)
}

multiversion! {
    /// Rows `[n, d]` of `x` normalised: `out = x · r · w`, `r = 1 / sqrt(mean(x²) + eps)`.
    fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let r = 1.0 / (lane_sum(xr, xr, |a, b| a * b) / d as f32 + eps).sqrt();
            for ((o, &xi), &wi) in or.iter_mut().zip(xr).zip(w) {
                *o = xi * r * wi;
            }
        }
    }
}

multiversion! {
    /// `∂x = r · (g·w − x · r² · mean(g·w·x))` row by row, `r = 1 / sqrt(mean(x²) + eps)`.
    fn rms_norm_grad_rows(x: &[f32], w: &[f32], g: &[f32], eps: f32, out: &mut [f32]) {
        let d = w.len();
        for ((xr, gr), or) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(out.chunks_exact_mut(d)) {
            let r = 1.0 / (lane_sum(xr, xr, |a, b| a * b) / d as f32 + eps).sqrt();
            for ((o, &gi), &wi) in or.iter_mut().zip(gr).zip(w) {
                *o = gi * wi;
            }
            let c = r * r * r * lane_sum(or, xr, |a, b| a * b) / d as f32;
            for (o, &xi) in or.iter_mut().zip(xr) {
                *o = r * *o - c * xi;
            }
        }
    }
}

/// RMSNorm over the last dimension of `x` with the weight `w` `[d]`.
pub fn rms_norm(x: &FlexTensor, w: &FlexTensor, eps: f32) -> FlexTensor {
    let (xv, wv) = (values(x), values(w));
    let mut out = vec![0.0f32; xv.len()];
    let rows_per_task = whole_rows(wv.len());
    out.par_chunks_mut(rows_per_task)
        .zip(xv.par_chunks(rows_per_task))
        .for_each(|(o, x)| rms_norm_rows(x, &wv, eps, o));
    tensor(out, x)
}

/// RMSNorm's `∂x` given the output gradient `g` (same shape as `x`).
pub fn rms_norm_grad(x: &FlexTensor, w: &FlexTensor, g: &FlexTensor, eps: f32) -> FlexTensor {
    let (xv, wv, gv) = (values(x), values(w), values(g));
    let mut out = vec![0.0f32; xv.len()];
    let rows_per_task = whole_rows(wv.len());
    out.par_chunks_mut(rows_per_task)
        .zip(
            xv.par_chunks(rows_per_task)
                .zip(gv.par_chunks(rows_per_task)),
        )
        .for_each(|(o, (x, g))| rms_norm_grad_rows(x, &wv, g, eps, o));
    tensor(out, x)
}

/// A bf16 tensor widened to f32, in parallel (flex's own cast converts element by element).
///
/// A transposed view of a whole matrix (the frozen weight in the backward, `Wᵀ`) is widened in its
/// stored order and transposed back as a view, not copied into the transposed layout first.
pub fn bf16_to_f32(t: &FlexTensor) -> FlexTensor {
    if let Some(halves) = t.as_slice::<half::bf16>() {
        return widen_bf16(halves, t.shape());
    }
    let layout = t.layout();
    let shape = t.shape();
    let stored: &[half::bf16] = t.storage();
    if shape.num_dims() == 2
        && layout.start_offset() == 0
        && layout.strides() == [1, shape[0] as isize]
        && stored.len() == shape.num_elements()
    {
        let matrix = widen_bf16(stored, Shape::new([shape[1], shape[0]]));
        return <Flex as FloatTensorOps<Flex>>::float_transpose(matrix);
    }
    let contiguous = t.to_contiguous();
    widen_bf16(
        contiguous
            .as_slice::<half::bf16>()
            .expect("contiguous bf16"),
        shape,
    )
}

fn widen_bf16(halves: &[half::bf16], shape: Shape) -> FlexTensor {
    let mut out = vec![0.0f32; halves.len()];
    out.par_chunks_mut(TASK)
        .zip(halves.par_chunks(TASK))
        .for_each(|(o, b)| bf16_bits_to_f32(b, o));
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// Softmax backward over the last dimension of `y` (the softmax output) and `grad`.
pub fn softmax_grad(y: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let width = *y.shape().last().expect("at least one dimension");
    let yv = values(y);
    let mut out = values(grad).into_owned();
    let rows_per_task = whole_rows(width);
    out.par_chunks_mut(rows_per_task)
        .zip(yv.par_chunks(rows_per_task))
        .for_each(|(g, y)| softmax_grad_rows(y, g, width));
    tensor(out, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std_to_a_few_ulp() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (fast_exp(x), x.exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.0137;
        }
        assert!(worst <= 4e-7, "relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(f32::NAN).is_nan());
        assert_eq!(fast_exp(-1e30), 0.0);
        assert!(fast_exp(1e30).is_finite());
    }

    #[test]
    fn multiversioned_kernels_agree_with_scalar_formulas() {
        let gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 37.0).collect();
        let up: Vec<f32> = (0..1000).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let mut out = vec![0.0; 1000];
        swiglu_chunk(&gate, &up, &mut out);
        for i in 0..1000 {
            let s = 1.0 / (1.0 + (-gate[i]).exp());
            assert!((out[i] - gate[i] * s * up[i]).abs() <= 1e-5 * (1.0 + out[i].abs()));
        }
    }

    /// Contiguous, transposed and sliced bf16 views widen to the same values as flex's own cast.
    #[test]
    fn bf16_widening_keeps_every_layout() {
        use burn::tensor::{FloatDType, Slice};
        let values: Vec<f32> = (0..35).map(|i| i as f32 * 0.25 - 4.0).collect();
        let cast = |t: FlexTensor, dtype| <Flex as FloatTensorOps<Flex>>::float_cast(t, dtype);
        let halves = cast(
            FlexTensor::from_data(TensorData::new(values, [5, 7])),
            FloatDType::BF16,
        );
        let transposed = <Flex as FloatTensorOps<Flex>>::float_transpose(halves.clone());
        let rows = <Flex as FloatTensorOps<Flex>>::float_slice(
            halves.clone(),
            &[Slice::from(1..4), Slice::from(..)],
        );
        for view in [halves, transposed, rows] {
            let widened = bf16_to_f32(&view);
            assert_eq!(widened.shape(), view.shape());
            let expected = cast(view.to_contiguous(), FloatDType::F32).into_data();
            assert_eq!(widened.to_contiguous().into_data(), expected);
        }
    }
}
