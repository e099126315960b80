//! Products by a bf16 weight in bf16 on x86 CPUs with AVX512-BF16 (`matmul_precision: bf16`): the
//! activations are rounded to bf16 (to nearest, ties to even), the weight is read as stored, and
//! every sum is kept in f32 — the precision of PyTorch's bf16 matmuls on such CPUs (oneDNN), with
//! f32 outputs.
//!
//! `vdpbf16ps` multiplies two pairs of bf16 values per f32 lane and adds both products to the lane:
//! twice the multiply-adds of an f32 FMA of the same width, and half the bytes per operand. It
//! wants both operands as pairs along the inner dimension `k`, so
//! - `x` `[m, k]` row-major already is one (two neighbouring bf16 of a row are one u32), once
//!   rounded: one pass over `x`, a few percent of the product's time;
//! - the weight `[k, n]` is packed per panel of [`NR`] columns and [`KC_PAIRS`] pairs into
//!   `[pairs][NR]` u32, each the pair `(w[2p][j], w[2p+1][j])`: from the transposed view of a
//!   row-major `[n, k]` (the forward `x · Wᵀ`) a column's pairs are one contiguous run, and 16 ×
//!   16 blocks of those runs are transposed in registers; from a row-major `[k, n]` (the backward
//!   `g · W`) two rows are interleaved.
//!
//! A task owns a panel: it packs the panel (24 KB, in L1) one `k` block at a time and runs the
//! micro-kernel over all rows: [`MR`] rows × [`NR`] columns of f32 sums in 24 of the 32 vector
//! registers, a broadcast pair of `x` against three packed vectors per step. An odd `k` is padded
//! with a zero pair half. A LoRA projection's `u · v` (`x·A` by `s·B`, or `∂u` by `Aᵀ` in the
//! backward) is added in f32 to the sums of the first block before they are stored, so the
//! output is written once. The intrinsics live in `x86.rs`. On other CPUs (and architectures)
//! [`available`] is false and the caller widens the weight to f32 instead; the module is compiled
//! for x86-64 only.

use std::borrow::Cow;

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use half::bf16;

use super::gemm;

/// Rows per micro-tile.
const MR: usize = 8;
/// Columns per micro-tile and per packed panel: three vectors of 16 f32 lanes.
const NR: usize = 48;
/// Pairs of `k` per packed block: `KC_PAIRS · NR` u32 = 24 KB, within a 32 KB L1.
const KC_PAIRS: usize = 128;

/// The multiply-adds one packed weight value counts for when deciding whether a product is worth
/// rayon's threads: every product packs the whole weight, which with a few rows (a batched
/// decoding step) is most of its time. Counting multiply-adds alone left every SmolLM2 projection
/// of a 5–7-row step on one thread; of 16, 32 and 64, 64 was best or within the noise at every
/// row count (`bench --decode`, 2-core AVX-512 host, docs/performance.md "Decoding").
const PACKING_MACS: usize = 64;

/// Whether this CPU runs the kernel (x86-64 with AVX-512 F, BW and BF16).
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

/// `x · weight` `[m, n]` (plus `u · v` in f32 when given) for `x` `[m, k]` in f32 and a 2-D bf16
/// `weight` `[k, n]` (any non-negative strides), `x` rounded to bf16 and the sums in f32. `None`
/// when the operands are not of that kind or the CPU lacks the instructions (the caller takes the
/// f32 path).
pub fn product(
    x: &FlexTensor,
    weight: &FlexTensor,
    plus: Option<(&FlexTensor, &FlexTensor)>,
) -> Option<FlexTensor> {
    if x.dtype() != DType::F32 || x.shape().num_dims() != 2 || !available() {
        return None;
    }
    let weight = Bf16Matrix::of(weight)?;
    let (m, k) = (x.shape()[0], x.shape()[1]);
    if weight.rows != k || plus.is_some_and(|(u, v)| !gemm::all_f32_matrices(&[u, v])) {
        return None;
    }
    let n = weight.cols;
    let low_rank = plus.map(|(u, v)| LowRank::of(u, v, m, n));
    let pairs = round_to_pairs(&crate::kernels::cpu::values(x), m, k);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `out` has room for `m·n` elements, and the product writes each of them.
    unsafe {
        multiply(out.as_mut_ptr(), n, &pairs, m, &weight, low_rank.as_ref());
        out.set_len(m * n);
    }
    Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
}

/// LoRA's `u · v` `[m, n]` (`u` `[m, r]`, `v` `[r, n]`, f32), which the micro-kernel adds to its
/// sums before it stores them: no second pass over the output. Both are thin; strided ones are
/// copied.
struct LowRank<'a> {
    u: Cow<'a, [f32]>,
    v: Cow<'a, [f32]>,
    r: usize,
    n: usize,
}

impl<'a> LowRank<'a> {
    /// Panics unless `u` is `[m, r]` and `v` `[r, n]` (both f32, checked by the caller).
    fn of(u: &'a FlexTensor, v: &'a FlexTensor, m: usize, n: usize) -> Self {
        let (u_shape, v_shape) = (u.shape(), v.shape());
        assert!(
            u_shape[0] == m && v_shape[1] == n && u_shape[1] == v_shape[0],
            "bf16 product: shapes differ"
        );
        let values = crate::kernels::cpu::values;
        Self {
            u: values(u),
            v: values(v),
            r: u_shape[1],
            n,
        }
    }

    /// Columns `j0 .. j0 + cols` of `v` as `[r][NR]`, the columns past `cols` zero.
    fn pack(&self, j0: usize, cols: usize) -> Vec<f32> {
        let mut packed = vec![0.0; self.r * NR];
        for (j, row) in packed.chunks_exact_mut(NR).enumerate() {
            row[..cols].copy_from_slice(&self.v[j * self.n + j0..][..cols]);
        }
        packed
    }
}

/// A 2-D bf16 matrix read through its strides: element `(i, j)` is
/// `data[offset + i·row_stride + j·col_stride]`.
struct Bf16Matrix<'a> {
    data: &'a [bf16],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Bf16Matrix<'a> {
    /// `None` unless `t` is a 2-D bf16 tensor with non-negative strides.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        if t.dtype() != DType::BF16 || layout.shape().num_dims() != 2 {
            return None;
        }
        let strides = layout.strides();
        Some(Self {
            data: t.storage(),
            offset: layout.start_offset(),
            rows: layout.shape()[0],
            cols: layout.shape()[1],
            row_stride: usize::try_from(strides[0]).ok()?,
            col_stride: usize::try_from(strides[1]).ok()?,
        })
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        u32::from(self.data[self.offset + i * self.row_stride + j * self.col_stride].to_bits())
    }

    /// Packs pairs `p0 .. p0 + pairs` of columns `j0 .. j0 + cols` into `out` `[pairs][NR]`, the
    /// columns past `cols` zero.
    fn pack(&self, p0: usize, pairs: usize, j0: usize, cols: usize, out: &mut [u32]) {
        if cols < NR {
            out[..pairs * NR].fill(0);
        }
        let k = self.rows;
        // The pair (2p, 2p + 1), its second half zero past an odd `k`.
        let pair = |p: usize, j: usize| {
            let kk = 2 * p;
            self.at(kk, j)
                | if kk + 1 < k {
                    self.at(kk + 1, j) << 16
                } else {
                    0
                }
        };
        if self.row_stride == 1 {
            // A pair is two neighbours of a stored row (the transposed view of `[n, k]`): each
            // column's pairs are one contiguous run, read once with its bounds checked once.
            let whole = pairs.min((k / 2).saturating_sub(p0)); // pairs with both halves in `k`
            let start = self.offset + j0 * self.col_stride + 2 * p0;
            let (done_cols, done_pairs) = if available() {
                // SAFETY: the CPU has the instructions.
                unsafe {
                    x86::transpose_runs(self.data, (start, self.col_stride), (cols, whole), out)
                }
            } else {
                (0, 0)
            };
            for j in 0..cols {
                let start = start + j * self.col_stride;
                let run = &self.data[start..start + 2 * whole];
                let done = if j < done_cols { done_pairs } else { 0 };
                for (p, two) in run.chunks_exact(2).enumerate().skip(done) {
                    out[p * NR + j] =
                        u32::from(two[0].to_bits()) | u32::from(two[1].to_bits()) << 16;
                }
                for p in whole..pairs {
                    out[p * NR + j] = pair(p0 + p, j0 + j);
                }
            }
            return;
        }
        for p in 0..pairs {
            let kk = 2 * (p0 + p);
            let dst = &mut out[p * NR..p * NR + cols];
            if self.col_stride == 1 && kk + 1 < k {
                // Two stored rows, interleaved.
                let start = self.offset + kk * self.row_stride + j0;
                let first = &self.data[start..start + cols];
                let second = &self.data[start + self.row_stride..start + self.row_stride + cols];
                interleave(first, second, dst);
            } else {
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = pair(p0 + p, j0 + j);
                }
            }
        }
    }
}

/// `x` `[m, k]` row-major f32 → `[m, ⌈k/2⌉]` pairs of bf16 (rounded to nearest, ties to even; an
/// odd row's last pair padded with zero).
fn round_to_pairs(x: &[f32], m: usize, k: usize) -> Vec<u32> {
    use rayon::prelude::*;
    let width = k.div_ceil(2);
    let mut out = vec![0u32; m * width];
    if width > 0 {
        out.par_chunks_mut(width)
            .zip(x.par_chunks(k))
            .for_each(|(row, src)| round_row(src, row));
    }
    out
}

fn round_row(src: &[f32], row: &mut [u32]) {
    let done = if available() {
        // SAFETY: the CPU has the instructions.
        unsafe { x86::round_row(src, row) }
    } else {
        0
    };
    let bits = |x: f32| u32::from(bf16::from_f32(x).to_bits());
    for (p, pair) in row.iter_mut().enumerate().skip(done) {
        *pair = bits(src[2 * p]) | src.get(2 * p + 1).map_or(0, |&x| bits(x) << 16);
    }
}

fn interleave(first: &[bf16], second: &[bf16], dst: &mut [u32]) {
    let done = if available() {
        // SAFETY: the CPU has the instructions.
        unsafe { x86::interleave(first, second, dst) }
    } else {
        0
    };
    for j in done..dst.len() {
        dst[j] = u32::from(first[j].to_bits()) | u32::from(second[j].to_bits()) << 16;
    }
}

/// A raw output pointer shared by the panel tasks, each writing its own columns.
#[derive(Clone, Copy)]
struct Output(*mut f32);
// SAFETY: tasks write disjoint columns of the output.
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

/// `dst[m, n] = x · weight (+ u · v)` for `x` as pairs `[m, ⌈k/2⌉]` (see [`round_to_pairs`]);
/// rows of `dst` are `ldc` apart. On rayon's threads when the product is large.
///
/// # Safety
/// `dst` must be valid for writes of `weight.cols` elements at each of `m` rows `ldc` apart, and
/// the CPU must have the instructions ([`available`]).
unsafe fn multiply(
    dst: *mut f32,
    ldc: usize,
    x: &[u32],
    m: usize,
    weight: &Bf16Matrix,
    low_rank: Option<&LowRank>,
) {
    use rayon::prelude::*;
    let (k, n) = (weight.rows, weight.cols);
    let width = k.div_ceil(2);
    let dst = Output(dst);
    let panel = |index: usize| {
        let (j0, out) = (index * NR, dst);
        let cols = (n - j0).min(NR);
        let mut packed = vec![0u32; KC_PAIRS * NR];
        let low_rank = low_rank.map(|low_rank| (low_rank, low_rank.pack(j0, cols)));
        // At least one block, which writes the sums (zero for an empty `k`) and LoRA's term.
        for p0 in (0..width.max(1)).step_by(KC_PAIRS) {
            let pairs = (width - p0).min(KC_PAIRS);
            weight.pack(p0, pairs, j0, cols, &mut packed);
            let first = p0 == 0;
            for i in (0..m).step_by(MR) {
                let tile = x86::Tile {
                    x: x[i * width + p0..].as_ptr(),
                    x_stride: width,
                    rows: (m - i).min(MR),
                    packed: packed.as_ptr(),
                    pairs,
                    // SAFETY: row `i`, column `j0` is within the output the caller vouched for.
                    dst: unsafe { out.0.add(i * ldc + j0) },
                    ldc,
                    cols,
                    overwrite: first,
                    low_rank: low_rank.as_ref().filter(|_| first).map(|(low_rank, v)| {
                        x86::LowRankTile {
                            u: low_rank.u[i * low_rank.r..].as_ptr(),
                            u_stride: low_rank.r,
                            v: v.as_ptr(),
                            r: low_rank.r,
                        }
                    }),
                };
                // SAFETY: the tile reads `rows` rows of `pairs` pairs of `x`, `pairs · NR`
                // packed values and `rows × r` of `u` against `r · NR` of `v`, and writes
                // `rows × cols` of the output; the CPU check is the caller's.
                unsafe { tile.run() };
            }
        }
    };
    let panels = n.div_ceil(NR);
    let work = m
        .saturating_add(PACKING_MACS)
        .saturating_mul(n)
        .saturating_mul(k);
    if work >= gemm::PARALLEL_MACS {
        (0..panels).into_par_iter().for_each(panel);
    } else {
        (0..panels).for_each(panel);
    }
}

mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::Flex;
    use burn::backend::ops::FloatTensorOps;
    use burn::tensor::Shape;

    fn skip() -> bool {
        let missing = !available();
        if missing {
            eprintln!("skipping: this CPU has no AVX512-BF16");
        }
        missing
    }

    fn f32_matrix(values: Vec<f32>, rows: usize, cols: usize) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, [rows, cols]))
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.clone().into_data().try_to_vec::<f32>().unwrap()
    }

    /// A pseudo-random value in [-2, 2) from an index.
    fn noise(i: usize, seed: u64) -> f32 {
        let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 40) as f32 / (1u64 << 22) as f32 - 2.0
    }

    /// `x · w` in f64 over the given f32 values.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        (0..m * n)
            .map(|i| {
                (0..k)
                    .map(|j| f64::from(x[i / n * k + j]) * f64::from(w[j * n + i % n]))
                    .sum()
            })
            .collect()
    }

    /// `w` `[k, n]` as the values of a row-major `[n, k]`.
    fn transposed(w: &[f32], k: usize, n: usize) -> Vec<f32> {
        (0..n * k).map(|i| w[i % k * n + i / k]).collect()
    }

    /// The weight `[k, n]` as bf16 in both layouts the projections use: row-major (the
    /// backward's `W`) and the transposed view of a row-major `[n, k]` (the forward's `Wᵀ`).
    fn both_layouts(w: &[f32], k: usize, n: usize) -> [FlexTensor; 2] {
        let row_major = f32_matrix(w.to_vec(), k, n);
        let view = Flex::float_transpose(f32_matrix(transposed(w, k, n), n, k));
        [row_major, view].map(|t| Flex::float_cast(t, burn::tensor::FloatDType::BF16))
    }

    /// `values` `[rows, cols]` in bf16, cut from the middle of a larger matrix: a view with an
    /// offset and a row stride wider than its columns.
    fn cut(values: &[f32], rows: usize, cols: usize) -> FlexTensor {
        let (pad_rows, pad_cols) = (rows + 3, cols + 5);
        let padded = (0..pad_rows * pad_cols)
            .map(|i| {
                let (r, c) = (i / pad_cols, i % pad_cols);
                let inside = (1..=rows).contains(&r) && (2..cols + 2).contains(&c);
                if inside {
                    values[(r - 1) * cols + c - 2]
                } else {
                    f32::NAN
                }
            })
            .collect();
        let slices = [
            burn::tensor::Slice::from(1..rows + 1),
            burn::tensor::Slice::from(2..cols + 2),
        ];
        let padded = Flex::float_cast(
            f32_matrix(padded, pad_rows, pad_cols),
            burn::tensor::FloatDType::BF16,
        );
        let view = Flex::float_slice(padded, &slices);
        assert!(view.layout().start_offset() > 0, "a slice is a view");
        view
    }

    /// Quarter-integer entries are exact in bf16 and their sums exact in f32, so the kernel must
    /// reproduce the exact product, with and without LoRA's `u · v` (rank `r`), over the shapes
    /// whose edges take separate code: row tiles of every height 1–8, the last panel 1, 4, 8,
    /// 16, 20, 32, 40 or 48 columns wide (partial and whole vectors, scalar packing tails), `k`
    /// of 1, odd, one block exactly, one pair past it, or three blocks, large enough for the
    /// parallel path; weights in both layouts, whole or cut out of larger matrices (offsets,
    /// wide strides; NaN around them, so a read outside the view shows).
    #[test]
    fn exact_operands_give_the_exact_product() {
        if skip() {
            return;
        }
        let quarter = |i: usize, seed: u64| (noise(i, seed) * 4.0).round() / 4.0;
        let shapes = [
            (1, 1, 1, 2),
            (2, 31, 16, 2),
            (3, 33, 20, 2),
            (4, 2 * KC_PAIRS, 32, 2),
            (5, 2 * KC_PAIRS + 1, 40, 2),
            (6, 2 * KC_PAIRS, 64, 2),
            (7, 2 * KC_PAIRS + 1, 68, 2),
            (9, 2 * KC_PAIRS + 2, 88, 2),
            (10, 2 * KC_PAIRS + 3, 80, 2),
            (13, 2 * 2 * KC_PAIRS + 45, NR * 2 + 4, 3),
            (15, 45, NR, 2),
            (64, 1024, 200, 2),
        ];
        for (m, k, n, r) in shapes {
            let x: Vec<f32> = (0..m * k).map(|i| quarter(i, 1)).collect();
            let w: Vec<f32> = (0..k * n).map(|i| quarter(i, 2)).collect();
            let u: Vec<f32> = (0..m * r).map(|i| quarter(i, 3)).collect();
            let v: Vec<f32> = (0..r * n).map(|i| quarter(i, 4)).collect();
            let expected = reference(&x, &w, m, k, n);
            let extra = reference(&u, &v, m, r, n);
            let with_extra: Vec<f64> = expected.iter().zip(&extra).map(|(a, b)| a + b).collect();
            let [row_major, view] = both_layouts(&w, k, n);
            let weights = [
                ("row-major", row_major),
                ("transposed view", view),
                ("cut row-major", cut(&w, k, n)),
                (
                    "cut transposed view",
                    Flex::float_transpose(cut(&transposed(&w, k, n), n, k)),
                ),
            ];
            let (xt, ut, vt) = (
                f32_matrix(x, m, k),
                f32_matrix(u, m, r),
                f32_matrix(v, r, n),
            );
            for (name, weight) in &weights {
                let got = values(&product(&xt, weight, None).unwrap());
                let got: Vec<f64> = got.into_iter().map(f64::from).collect();
                assert_eq!(got, expected, "{m}×{k}×{n}, {name}");
                let got = values(&product(&xt, weight, Some((&ut, &vt))).unwrap());
                let got: Vec<f64> = got.into_iter().map(f64::from).collect();
                assert_eq!(got, with_extra, "{m}×{k}×{n}, {name}, with u·v");
            }
        }
    }

    /// Inexact activations are rounded to nearest bf16, ties to even, as `half` rounds them: the
    /// product equals the f64 product of the rounded values within f32 summation error.
    #[test]
    fn activations_are_rounded_to_nearest_even() {
        if skip() {
            return;
        }
        let (m, k, n) = (21, 333, 50);
        let mut x: Vec<f32> = (0..m * k).map(|i| noise(i, 5)).collect();
        // Ties: halfway between two bf16 neighbours, below and above an even mantissa.
        x[0] = f32::from_bits(0x3f80_8000);
        x[1] = f32::from_bits(0x3f81_8000);
        let w: Vec<f32> = (0..k * n)
            .map(|i| bf16::from_f32(noise(i, 6)).to_f32())
            .collect();
        let rounded: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
        assert_eq!(rounded[0], 1.0);
        assert_eq!(rounded[1], f32::from_bits(0x3f82_0000));
        let expected = reference(&rounded, &w, m, k, n);
        let xt = f32_matrix(x, m, k);
        for weight in both_layouts(&w, k, n) {
            let got = values(&product(&xt, &weight, None).unwrap());
            for (g, e) in got.iter().zip(&expected) {
                let scale = 1e-5 * (k as f64).sqrt() * 4.0;
                assert!((f64::from(*g) - e).abs() <= scale, "{g} vs {e}");
            }
        }
    }

    /// An empty inner dimension writes zeros, or LoRA's term alone; operands of the wrong kind
    /// are declined.
    #[test]
    fn empty_and_declined_operands() {
        if skip() {
            return;
        }
        let x = f32_matrix(vec![], 3, 0);
        let w = Flex::float_cast(f32_matrix(vec![], 0, 5), burn::tensor::FloatDType::BF16);
        assert_eq!(values(&product(&x, &w, None).unwrap()), vec![0.0; 15]);
        let (u, v) = (
            f32_matrix(vec![1.0, 2.0, 3.0], 3, 1),
            f32_matrix(vec![0.5; 5], 1, 5),
        );
        let low_rank: Vec<f32> = [0.5, 1.0, 1.5].iter().flat_map(|&e| [e; 5]).collect();
        assert_eq!(values(&product(&x, &w, Some((&u, &v))).unwrap()), low_rank);
        let f32_weight = f32_matrix(vec![1.0; 10], 2, 5);
        let x = f32_matrix(vec![1.0; 6], 3, 2);
        assert!(product(&x, &f32_weight, None).is_none());
        let three_d =
            FlexTensor::from_data(TensorData::new(vec![1.0f32; 6], Shape::new([1, 3, 2])));
        let w = Flex::float_cast(f32_weight, burn::tensor::FloatDType::BF16);
        assert!(product(&three_d, &w, None).is_none());
    }
}
