//! Products with a few rows — a decoding step, one row per sequence — on flex, reading the weight
//! once, in place and in its stored precision (f32, bf16 or f16).
//!
//! With one row, `x · W` is a matrix-vector product: every weight is read once and used once, so
//! the time is the weight's bytes over the memory bandwidth. `gemm`'s blocked product (built for
//! many rows) packs panels of the weight first, and a half-precision weight would be widened to a
//! whole f32 copy before it: both read or write the weight more than once. Here each thread owns a
//! range of output columns and streams the weight's rows (or, for a transposed view such as the
//! tied LM head `Eᵀ`, the columns' contiguous rows) through registers, widening as it reads.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use half::{bf16, f16};
use rayon::prelude::*;

use super::gemm;
use crate::kernels::cpu::multiversion;

/// The most rows that take this path (beyond it the weight is reused enough for `gemm`).
pub const MAX_ROWS: usize = 4;

/// Columns of a row-major weight per tile: long contiguous runs for the prefetcher, and
/// `MAX_ROWS` accumulators of this width (32 KB) stay in L1/L2.
const COLUMNS_PER_TILE: usize = 2048;

/// Output columns per task of a transposed or block weight (one dot product of `k` each).
const COLUMNS_PER_TASK: usize = 64;

/// A stored weight element widened to f32, and the two inner loops over such weights, compiled
/// for the CPU's widest vectors (`kernels::cpu::multiversion`).
pub(super) trait Widen: Copy + Send + Sync + 'static {
    fn widen(self) -> f32;
    /// `Σ x[i]·w[i]`.
    fn dot(x: &[f32], w: &[Self]) -> f32;
    /// `acc[i] += a·w[i]`.
    fn add_scaled(a: f32, w: &[Self], acc: &mut [f32]);
}

/// Implements [`Widen`] for `$t` with `$widen`, its loops multiversioned as `$dot` and `$add`.
macro_rules! widen {
    ($t:ty, $dot:ident, $add:ident, |$v:ident| $widen:expr) => {
        multiversion! {
            fn $dot(x: &[f32], w: &[$t]) -> f32 {
                dot_widened(x, w)
            }
        }
        multiversion! {
            fn $add(a: f32, w: &[$t], acc: &mut [f32]) {
                for (o, &v) in acc.iter_mut().zip(w) {
                    *o += a * v.widen();
                }
            }
        }
        impl Widen for $t {
            #[inline(always)]
            fn widen(self) -> f32 {
                let $v = self;
                $widen
            }
            fn dot(x: &[f32], w: &[Self]) -> f32 {
                $dot(x, w)
            }
            fn add_scaled(a: f32, w: &[Self], acc: &mut [f32]) {
                $add(a, w, acc)
            }
        }
    };
}

widen!(f32, dot_f32, add_scaled_f32, |v| v);
// Exact, and a shift the compiler vectorises (half's `to_f32` branches on NaN).
widen!(bf16, dot_bf16, add_scaled_bf16, |v| f32::from_bits(
    u32::from(v.to_bits()) << 16
));
widen!(f16, dot_f16, add_scaled_f16, |v| v.to_f32());

/// `x · weight` `[m, n]` (plus `u · v` when given), for `x` `[m ≤ MAX_ROWS, k]` in f32 and a 2-D
/// f32/bf16/f16 `weight` `[k, n]` stored row-major or as the transposed view of a row-major
/// `[n, k]`. `None` when the operands are not of that kind (the caller takes the general path).
pub fn product(
    x: &FlexTensor,
    weight: &FlexTensor,
    plus: Option<(&FlexTensor, &FlexTensor)>,
) -> Option<FlexTensor> {
    let shape = x.shape();
    if x.dtype() != DType::F32 || shape.num_dims() != 2 || !(1..=MAX_ROWS).contains(&shape[0]) {
        return None;
    }
    if let Some((u, v)) = plus
        && !gemm::all_f32_matrices(&[u, v])
    {
        return None;
    }
    let x = x.to_contiguous();
    let xs: &[f32] = x.as_slice()?;
    let mut out = match weight.dtype() {
        DType::F32 => by_layout(xs, shape[0], weight, weight.storage::<f32>())?,
        DType::BF16 => by_layout(xs, shape[0], weight, weight.storage::<bf16>())?,
        DType::F16 => by_layout(xs, shape[0], weight, weight.storage::<f16>())?,
        _ => return None,
    };
    let (m, n) = (shape[0], out.len() / shape[0]);
    if let Some((u, v)) = plus {
        let (u, v) = (gemm::operand(u), gemm::operand(v));
        assert!(
            u.rows == m && v.cols == n && u.cols == v.rows,
            "few-row product: shapes differ"
        );
        // SAFETY: `out` holds `m·n` initialised values, rows `n` apart.
        unsafe { gemm::product_into(out.as_mut_ptr(), n, &u, &v, true) };
    }
    Some(FlexTensor::from_data(TensorData::new(out, [m, n])))
}

/// Dispatches on the weight's layout (its elements `stored`): row-major `[k, n]`, or the transpose
/// of row-major `[n, k]`.
fn by_layout<T: Widen>(x: &[f32], m: usize, weight: &FlexTensor, stored: &[T]) -> Option<Vec<f32>> {
    let layout = weight.layout();
    let shape = layout.shape();
    if shape.num_dims() != 2 {
        return None;
    }
    let (k, n) = (shape[0], shape[1]);
    if x.len() != m * k {
        return None;
    }
    let start = layout.start_offset();
    let end = start.checked_add(k.checked_mul(n)?)?;
    let w = stored.get(start..end)?;
    // A dimension of size 1 has no step to check; the other must still be contiguous.
    let steps = |row: isize, col: isize| {
        let strides = layout.strides();
        (k <= 1 || strides[0] == row) && (n <= 1 || strides[1] == col)
    };
    if steps(n as isize, 1) {
        Some(rows_times_matrix(x, m, w, k, n))
    } else if steps(1, k as isize) {
        Some(rows_dot_rows(x, m, w, k, n))
    } else {
        None
    }
}

/// `x` `[m, k]` times a row-major `w` `[k, n]`, in tiles of rows × columns of `w`: each task
/// streams its tile's row segments (contiguous, `COLUMNS_PER_TILE` wide) once and accumulates its
/// partial sums of `m` rows; the partials of a column range are then added in row-tile order.
fn rows_times_matrix<T: Widen>(x: &[f32], m: usize, w: &[T], k: usize, n: usize) -> Vec<f32> {
    let column_tiles = n.div_ceil(COLUMNS_PER_TILE);
    // Enough row tiles to give every thread several tasks.
    let wanted = (4 * rayon::current_num_threads()).div_ceil(column_tiles);
    let rows_per_tile = k.div_ceil(wanted.clamp(1, k.max(1))).max(1);
    let row_tiles = k.div_ceil(rows_per_tile);
    // [row_tiles · column_tiles] partial sums, each [m, width].
    let partials: Vec<Vec<f32>> = (0..row_tiles * column_tiles)
        .into_par_iter()
        .map(|task| {
            let (row_tile, column_tile) = (task / column_tiles, task % column_tiles);
            let k0 = row_tile * rows_per_tile;
            let k1 = (k0 + rows_per_tile).min(k);
            let c0 = column_tile * COLUMNS_PER_TILE;
            let width = COLUMNS_PER_TILE.min(n - c0);
            let mut acc = vec![0.0f32; m * width];
            for kk in k0..k1 {
                let row = &w[kk * n + c0..kk * n + c0 + width];
                for (r, acc) in acc.chunks_exact_mut(width).enumerate() {
                    T::add_scaled(x[r * k + kk], row, acc);
                }
            }
            acc
        })
        .collect();
    let mut out = vec![0.0f32; m * n];
    for (task, acc) in partials.iter().enumerate() {
        let c0 = (task % column_tiles) * COLUMNS_PER_TILE;
        let width = acc.len() / m;
        for (r, acc) in acc.chunks_exact(width).enumerate() {
            let out = &mut out[r * n + c0..r * n + c0 + width];
            for (o, &a) in out.iter_mut().zip(acc) {
                *o += a;
            }
        }
    }
    out
}

/// `x` `[m, k]` times `wᵀ` for a row-major `w` `[n, k]`: output column `j` is the dot product of
/// each row of `x` with row `j` of `w`.
fn rows_dot_rows<T: Widen>(x: &[f32], m: usize, w: &[T], k: usize, n: usize) -> Vec<f32> {
    by_output_columns(m, n, |columns, out| {
        for (j, out) in columns.zip(out.chunks_exact_mut(m)) {
            let row = &w[j * k..(j + 1) * k];
            for (r, o) in out.iter_mut().enumerate() {
                *o = T::dot(&x[r * k..(r + 1) * k], row);
            }
        }
    })
}

/// `[m, n]` from tasks that each fill a run of output columns: `fill(j0..j1, out)` writes column
/// `j`'s `m` values at `out[(j − j0)·m..]` (`[j1 − j0, m]`, transposed into place here).
pub(super) fn by_output_columns(
    m: usize,
    n: usize,
    fill: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut by_column = vec![0.0f32; n * m]; // [n, m]
    by_column
        .par_chunks_mut(COLUMNS_PER_TASK * m)
        .enumerate()
        .for_each(|(task, out)| {
            let j0 = task * COLUMNS_PER_TASK;
            fill(j0..j0 + out.len() / m, out);
        });
    if m == 1 {
        return by_column;
    }
    let mut out = vec![0.0f32; m * n];
    for (j, column) in by_column.chunks_exact(m).enumerate() {
        for (r, &v) in column.iter().enumerate() {
            out[r * n + j] = v;
        }
    }
    out
}

/// `Σ x[i]·w[i]` in 16 interleaved partial sums (independent lanes the compiler vectorises).
#[inline(always)]
fn dot_widened<T: Widen>(x: &[f32], w: &[T]) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0.0f32; LANES];
    let (xc, wc) = (x.chunks_exact(LANES), w.chunks_exact(LANES));
    let (xr, wr) = (xc.remainder(), wc.remainder());
    for (xs, ws) in xc.zip(wc) {
        for i in 0..LANES {
            sums[i] += xs[i] * ws[i].widen();
        }
    }
    let tail: f32 = xr.iter().zip(wr).map(|(&a, &b)| a * b.widen()).sum();
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::Flex;
    use burn::backend::ops::FloatTensorOps;

    use super::*;

    fn matrix<T: burn::tensor::Element>(rows: usize, cols: usize, seed: f32) -> FlexTensor {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 2.0).round() / 4.0)
            .collect();
        FlexTensor::from_data(TensorData::new(values, [rows, cols]).convert::<T>())
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.clone()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n)
            .map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum())
            .collect()
    }

    /// Quarter-integer entries: every partial sum is exact, so any summation order agrees.
    fn check<T: burn::tensor::Element>() {
        let (k, n) = (70, 2100); // two column tiles, the second partial, and several row tiles
        for m in 1..=MAX_ROWS {
            let x = matrix::<f32>(m, k, 0.1);
            let row_major = matrix::<T>(k, n, 0.2);
            let transposed = Flex::float_transpose(matrix::<T>(n, k, 0.3));
            for w in [row_major, transposed] {
                let expected = naive(&values(&x), &values(&w.to_contiguous()), m, k, n);
                let got = product(&x, &w, None).expect("few-row product applies");
                assert_eq!(values(&got), expected, "m = {m}");
                let (u, v) = (matrix::<f32>(m, 3, 0.4), matrix::<f32>(3, n, 0.5));
                let lora = naive(&values(&u), &values(&v), m, 3, n);
                let got = product(&x, &w, Some((&u, &v))).unwrap();
                let sum: Vec<f32> = expected.iter().zip(&lora).map(|(a, b)| a + b).collect();
                assert_eq!(values(&got), sum, "m = {m}, with u·v");
            }
        }
    }

    #[test]
    fn products_equal_the_naive_product_in_every_stored_precision() {
        check::<f32>();
        check::<bf16>();
        check::<f16>();
    }

    #[test]
    fn more_rows_or_other_layouts_take_the_general_path() {
        let w = matrix::<f32>(8, 8, 0.0);
        assert!(product(&matrix::<f32>(MAX_ROWS + 1, 8, 0.0), &w, None).is_none());
        let strided = Flex::float_slice(
            matrix::<f32>(8, 16, 0.0),
            &[
                burn::tensor::Slice::from(0..8),
                burn::tensor::Slice::from(0..8),
            ],
        );
        assert!(product(&matrix::<f32>(1, 8, 0.0), &strided, None).is_none());
    }

    /// A weight one column wide (or one row deep) is read contiguously only when it is: a column
    /// cut from a wider matrix, or a row of a transposed view, takes the general path.
    #[test]
    fn single_column_and_single_row_weights_follow_their_strides() {
        let slice = |t: FlexTensor, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
            Flex::float_slice(
                t,
                &[
                    burn::tensor::Slice::from(rows),
                    burn::tensor::Slice::from(cols),
                ],
            )
        };
        let (x, k) = (matrix::<f32>(2, 8, 0.1), 8);
        let column = matrix::<f32>(k, 1, 0.2);
        let expected = naive(&values(&x), &values(&column), 2, k, 1);
        assert_eq!(values(&product(&x, &column, None).unwrap()), expected);
        let cut_column = slice(matrix::<f32>(k, 16, 0.3), 0..k, 3..4);
        assert!(product(&x, &cut_column, None).is_none());
        let one = matrix::<f32>(2, 1, 0.4);
        let row_of_view = slice(Flex::float_transpose(matrix::<f32>(6, 5, 0.5)), 2..3, 0..6);
        assert!(product(&one, &row_of_view, None).is_none());
        let row = matrix::<f32>(1, 6, 0.6);
        let expected = naive(&values(&one), &values(&row), 2, 1, 6);
        assert_eq!(values(&product(&one, &row, None).unwrap()), expected);
    }
}
