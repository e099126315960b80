//! The attention spans on flex as one fused, threaded CPU kernel per pass (f32).
//!
//! The tensor-op version (`super::forward`, `super::gradients`) runs each span as a dozen flex ops:
//! slices, reshapes, a batched product, the mask added through a broadcast, the softmax, a second
//! product, and a concatenation of the spans at the end (the backward also adds each span's `∂k`,
//! `∂v` into copies of the whole sums). Here the unit of work is one span of one query head of one
//! `(batch, K/V head)` pair: a rayon task with two scratch buffers `[span queries, span keys]`
//! that stay in cache, `gemm` on the strided q/k/v as they come (no copies), and each result
//! written once into its place:
//!
//! - forward: `s = q_s·k_sᵀ`, `s += mask_s`, `p = softmax(s)` in place, `o_s = p·v_s` straight into
//!   the output rows;
//! - backward: `p` again, `∂v_s = pᵀ·∂o_s`, `∂p = ∂o_s·v_sᵀ`, `∂s = p ⊙ (∂p − rowsum(∂p ⊙ p))` in
//!   place, `∂q_s = ∂s·k_s` into its rows, `∂k_s = ∂sᵀ·q_s`. Query rows belong to one unit each; the
//!   units' `∂k_s`, `∂v_s` are partial sums over their span's keys, added up per pair afterwards
//!   (a pass over `[group · spans, span keys, d]`, small next to the products), so no task waits
//!   on another's keys.
//!
//! The products run on the task's thread (`gemm` without threads of its own): the units, several
//! per thread even for one packed row, are the parallelism.

use burn::backend::TensorMetadata;
use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::{Dims, Span};
use crate::kernels::cpu::{multiversion, softmax_grad_rows, softmax_rows, values};
use crate::kernels::projection::gemm::{Operand, product_on};

/// A 4-D f32 tensor as the kernel reads it: the storage it views, and where element
/// `(b, h, r, c)` lies in it (`offset + b·s₀ + h·s₁ + r·s₂ + c·s₃`).
struct View<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 4],
}

impl<'a> View<'a> {
    /// `None` unless `t` is 4-D f32 with non-negative strides.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        if t.dtype() != DType::F32 || layout.shape().num_dims() != 4 {
            return None;
        }
        let mut strides = [0; 4];
        for (s, &stride) in strides.iter_mut().zip(layout.strides()) {
            *s = usize::try_from(stride).ok()?;
        }
        Some(Self {
            data: t.storage(),
            offset: layout.start_offset(),
            strides,
        })
    }

    /// Rows `rows.0..rows.1` of head `(b, h)` as a `[rows, cols]` matrix.
    fn rows(&self, (b, h): (usize, usize), rows: (usize, usize), cols: usize) -> Operand<'a> {
        let [s0, s1, s2, s3] = self.strides;
        let start = self.offset + b * s0 + h * s1 + rows.0 * s2;
        Operand::strided(self.data, start, [rows.1 - rows.0, cols], [s2, s3])
    }

    /// The same rows transposed: `[cols, rows]`.
    fn rows_t(&self, (b, h): (usize, usize), rows: (usize, usize), cols: usize) -> Operand<'a> {
        let [s0, s1, s2, s3] = self.strides;
        let start = self.offset + b * s0 + h * s1 + rows.0 * s2;
        Operand::strided(self.data, start, [cols, rows.1 - rows.0], [s3, s2])
    }
}

/// Adds the mask rows (`mask_stride` apart) to the score rows of `width`.
fn add_mask_rows(scores: &mut [f32], width: usize, mask: &[f32], mask_stride: usize) {
    for (i, row) in scores.chunks_exact_mut(width).enumerate() {
        add_into(row, &mask[i * mask_stride..][..width]);
    }
}

/// What both passes read: q, k, v, the mask and its layout.
struct Inputs<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    mask: &'a [f32],
    dims: Dims,
    keys: usize,
}

impl Inputs<'_> {
    /// The rows of query head `g` of the group for the span's queries.
    fn query_rows(&self, g: usize, span: Span) -> (usize, usize) {
        let start = g * self.dims.seq;
        (start + span.queries.0, start + span.queries.1)
    }

    /// `p = softmax(q_s·k_sᵀ + mask_s)` for query head `g` of `(b, h)`, into `scores` (resized
    /// to `[span queries, span keys]`).
    fn probs(&self, at: (usize, usize), g: usize, span: Span, scores: &mut Vec<f32>) {
        let (n, width) = (span.queries.1 - span.queries.0, span.keys.1 - span.keys.0);
        scores.resize(n * width, 0.0);
        let d = self.dims.d;
        let q_s = self.q.rows(at, self.query_rows(g, span), d);
        let k_t = self.k.rows_t(at, span.keys, d);
        // SAFETY: `scores` holds `n` rows of `width`.
        unsafe { product_on(scores.as_mut_ptr(), width, &q_s, &k_t, false, false) };
        let mask_row = if self.dims.mask_rows == 1 { 0 } else { at.0 };
        let mask =
            &self.mask[(mask_row * self.dims.seq + span.queries.0) * self.keys + span.keys.0..];
        add_mask_rows(scores, width, mask, self.keys);
        softmax_rows(scores, width);
    }
}

/// Whether the kernel takes these operands (f32 4-D tensors with non-negative strides: q, k, v
/// and the output gradient; an f32 mask); otherwise the tensor-op version runs.
pub fn supports(tensors: &[&FlexTensor], mask: &FlexTensor) -> bool {
    tensors.iter().all(|t| View::of(t).is_some()) && mask.dtype() == DType::F32
}

impl<'a> Inputs<'a> {
    /// Views of `q`, `k`, `v` (checked by [`supports`]) and the mask's values.
    fn new(
        (q, k, v): (&'a FlexTensor, &'a FlexTensor, &'a FlexTensor),
        mask: &'a [f32],
        dims: Dims,
    ) -> Self {
        let view = |t| View::of(t).expect("checked by `supports`");
        Self {
            q: view(q),
            k: view(k),
            v: view(v),
            mask,
            dims,
            keys: k.shape()[2],
        }
    }
}

/// One span of one query head of one `(batch, K/V head)` pair: the unit of work of both passes.
#[derive(Clone, Copy)]
struct Unit {
    at: (usize, usize),
    g: usize,
    span: Span,
}

impl Unit {
    fn queries(&self) -> usize {
        self.span.queries.1 - self.span.queries.0
    }

    fn keys(&self) -> usize {
        self.span.keys.1 - self.span.keys.0
    }
}

/// Every unit, in the order its query rows lie in a `[batch, heads, group·seq, d]` tensor (the
/// spans cover the queries in order).
fn units(dims: Dims, spans: &[Span]) -> Vec<Unit> {
    let mut units = Vec::with_capacity(dims.batch * dims.heads * dims.group * spans.len());
    for b in 0..dims.batch {
        for h in 0..dims.heads {
            for g in 0..dims.group {
                units.extend(spans.iter().map(|&span| Unit {
                    at: (b, h),
                    g,
                    span,
                }));
            }
        }
    }
    units
}

/// `buf` cut into consecutive pieces of `lens` elements.
fn split(mut buf: &mut [f32], lens: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    lens.map(|len| {
        let (piece, rest) = std::mem::take(&mut buf).split_at_mut(len);
        buf = rest;
        piece
    })
    .collect()
}

/// `[n, width]` row-major scratch as a matrix, or transposed (`[width, n]`).
fn matrix(m: &[f32], [n, width]: [usize; 2], transposed: bool) -> Operand<'_> {
    if transposed {
        Operand::strided(m, 0, [width, n], [1, width])
    } else {
        Operand::strided(m, 0, [n, width], [width, 1])
    }
}

/// `softmax(q·kᵀ + mask)·v` `[batch, heads, group·seq, d]`, one task per span of each query head.
pub fn forward(
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    mask: FlexTensor,
    spans: &[Span],
) -> FlexTensor {
    let dims = Dims::of::<Flex>(&q, &mask);
    let mask_values = values(&mask);
    let inputs = Inputs::new((&q, &k, &v), &mask_values, dims);
    let d = dims.d;
    let units = units(dims, spans);
    let mut out = vec![0.0f32; q.shape().num_elements()];
    let pieces = split(&mut out, units.iter().map(|u| u.queries() * d));
    pieces
        .into_par_iter()
        .zip(&units)
        .for_each_init(Vec::new, |scores, (rows, unit)| {
            inputs.probs(unit.at, unit.g, unit.span, scores);
            let p = matrix(scores, [unit.queries(), unit.keys()], false);
            let v_s = inputs.v.rows(unit.at, unit.span.keys, d);
            // SAFETY: `rows` holds the unit's query rows, `d` apart.
            unsafe { product_on(rows.as_mut_ptr(), d, &p, &v_s, false, false) };
        });
    FlexTensor::from_data(TensorData::new(out, q.shape()))
}

/// `(∂q, ∂k, ∂v)` given the output gradient `grad` `[batch, heads, group·seq, d]`. Each unit
/// writes its query rows of `∂q` and its own partial `∂k`, `∂v` over its span's keys; the
/// partials are then summed per `(batch, K/V head)` pair.
pub fn gradients(
    (q, k, v): (FlexTensor, FlexTensor, FlexTensor),
    mask: FlexTensor,
    spans: &[Span],
    grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dims = Dims::of::<Flex>(&q, &mask);
    let mask_values = values(&mask);
    let inputs = Inputs::new((&q, &k, &v), &mask_values, dims);
    let grad = View::of(&grad).expect("checked by `supports`");
    let (keys, d) = (inputs.keys, dims.d);
    let units = units(dims, spans);
    let mut dq = vec![0.0f32; q.shape().num_elements()];
    let partial_len: usize = units.iter().map(|u| u.keys() * d).sum();
    let (mut dk_parts, mut dv_parts) = (vec![0.0f32; partial_len], vec![0.0f32; partial_len]);
    let dq_pieces = split(&mut dq, units.iter().map(|u| u.queries() * d));
    let dk_pieces = split(&mut dk_parts, units.iter().map(|u| u.keys() * d));
    let dv_pieces = split(&mut dv_parts, units.iter().map(|u| u.keys() * d));
    dq_pieces
        .into_par_iter()
        .zip(dk_pieces.into_par_iter().zip(dv_pieces))
        .zip(&units)
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, ds), ((dq, (dk, dv)), unit)| {
                let (at, shape) = (unit.at, [unit.queries(), unit.keys()]);
                let rows = inputs.query_rows(unit.g, unit.span);
                inputs.probs(at, unit.g, unit.span, p);
                let (q_s, k_s) = (
                    inputs.q.rows(at, rows, d),
                    inputs.k.rows(at, unit.span.keys, d),
                );
                let grad_s = grad.rows(at, rows, d);
                ds.resize(p.len(), 0.0);
                let v_t = inputs.v.rows_t(at, unit.span.keys, d);
                // SAFETY: every destination holds the rows it is given (`dq`: the unit's query
                // rows; `dk`, `dv`: its span's key rows; `ds`: `[queries, keys]`).
                unsafe {
                    // ∂v_s = pᵀ·∂o_s
                    product_on(
                        dv.as_mut_ptr(),
                        d,
                        &matrix(p, shape, true),
                        &grad_s,
                        false,
                        false,
                    );
                    // ∂p = ∂o_s·v_sᵀ, then ∂s = p ⊙ (∂p − rowsum(∂p ⊙ p)) in place
                    product_on(ds.as_mut_ptr(), shape[1], &grad_s, &v_t, false, false);
                }
                softmax_grad_rows(p, ds, shape[1]);
                // SAFETY: as above.
                unsafe {
                    // ∂q_s = ∂s·k_s, ∂k_s = ∂sᵀ·q_s
                    product_on(
                        dq.as_mut_ptr(),
                        d,
                        &matrix(ds, shape, false),
                        &k_s,
                        false,
                        false,
                    );
                    product_on(
                        dk.as_mut_ptr(),
                        d,
                        &matrix(ds, shape, true),
                        &q_s,
                        false,
                        false,
                    );
                }
            },
        );
    // Each pair's units, and where each unit's partial starts.
    let per_pair = (dims.group * spans.len()).max(1);
    let offsets: Vec<usize> = units
        .iter()
        .scan(0, |at, u| {
            let start = *at;
            *at += u.keys() * d;
            Some(start)
        })
        .collect();
    let sum = |parts: &[f32]| {
        let mut total = vec![0.0f32; dims.batch * dims.heads * keys * d];
        total
            .par_chunks_mut(keys * d)
            .zip(units.par_chunks(per_pair).zip(offsets.par_chunks(per_pair)))
            .for_each(|(total, (units, offsets))| {
                for (unit, &at) in units.iter().zip(offsets) {
                    let part = &parts[at..at + unit.keys() * d];
                    add_into(&mut total[unit.span.keys.0 * d..][..part.len()], part);
                }
            });
        total
    };
    let tensor =
        |values, like: &FlexTensor| FlexTensor::from_data(TensorData::new(values, like.shape()));
    let (dk, dv) = (sum(&dk_parts), sum(&dv_parts));
    (tensor(dq, &q), tensor(dk, &k), tensor(dv, &v))
}

multiversion! {
    /// `total += part`.
    fn add_into(total: &mut [f32], part: &[f32]) {
        for (t, &p) in total.iter_mut().zip(part) {
            *t += p;
        }
    }
}
