//! Matrix products on flex that call `gemm` directly and write into a fresh, unzeroed output.
//!
//! Flex's own matmul allocates its output with `FlexTensor::empty`, which zeroes a byte vector and
//! then copies it into a 16-byte-aligned allocation: two passes over every output, with their page
//! faults, before the product starts (11% of a SmolLM2 training step in the profile). Here the
//! output is an f32 vector that `gemm` fills directly, and a second product can be accumulated
//! into it (`x·W + u·v`, a LoRA projection) without an extra buffer or an element-wise add.

use std::marker::PhantomData;

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};

/// Below this many multiply-adds a product runs on one thread (flex's own threshold).
pub(crate) const PARALLEL_MACS: usize = 192 * 192 * 192;

/// A 2-D f32 matrix as `gemm` reads it: its first element and its (row, column) strides.
pub(crate) struct Operand<'a> {
    ptr: *const f32,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    row_stride: isize,
    col_stride: isize,
    _borrow: PhantomData<&'a [f32]>,
}

impl<'a> Operand<'a> {
    /// The `[rows, cols]` matrix of `data` whose element `(i, j)` is
    /// `data[offset + i·row_stride + j·col_stride]`; panics unless every element is in bounds.
    pub(crate) fn strided(
        data: &'a [f32],
        offset: usize,
        [rows, cols]: [usize; 2],
        [row_stride, col_stride]: [usize; 2],
    ) -> Self {
        if rows > 0 && cols > 0 {
            let last = offset + (rows - 1) * row_stride + (cols - 1) * col_stride;
            assert!(last < data.len(), "matrix out of bounds");
        }
        Self {
            ptr: data[offset.min(data.len())..].as_ptr(),
            rows,
            cols,
            row_stride: row_stride as isize,
            col_stride: col_stride as isize,
            _borrow: PhantomData,
        }
    }

    /// `None` unless `t` is a 2-D f32 tensor.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        let layout = t.layout();
        if t.dtype() != DType::F32 || layout.shape().num_dims() != 2 {
            return None;
        }
        let data: &[f32] = t.storage();
        let strides = layout.strides();
        Some(Self {
            // In bounds: the layout addresses elements of `data` from its start offset.
            ptr: data[layout.start_offset()..].as_ptr(),
            rows: layout.shape()[0],
            cols: layout.shape()[1],
            row_stride: strides[0],
            col_stride: strides[1],
            _borrow: PhantomData,
        })
    }
}

/// Whether every tensor is a 2-D f32 matrix (the precondition of [`matmul_add`]).
pub fn all_f32_matrices(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| Operand::of(t).is_some())
}

/// `lhs · rhs` `[m, n]`, plus `u · v` when given: one output buffer, written once by the first
/// product and accumulated into by the second. All operands are 2-D f32 matrices (any strides);
/// panics otherwise (check with [`all_f32_matrices`]).
pub fn matmul_add(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    plus: Option<(&FlexTensor, &FlexTensor)>,
) -> FlexTensor {
    let (a, b) = (operand(lhs), operand(rhs));
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    let (m, n) = (a.rows, b.cols);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: `out` has room for `m·n` elements; the first product writes every one of them
    // (`read_dst = false` never reads the uninitialised memory), then `set_len` exposes them.
    unsafe {
        product_into(out.as_mut_ptr(), n, &a, &b, false);
        if let Some((u, v)) = plus {
            let (u, v) = (operand(u), operand(v));
            assert!(
                u.rows == m && v.cols == n && u.cols == v.rows,
                "matmul_add: shapes differ"
            );
            product_into(out.as_mut_ptr(), n, &u, &v, true);
        }
        out.set_len(m * n);
    }
    FlexTensor::from_data(TensorData::new(out, [m, n]))
}

pub(crate) fn operand(t: &FlexTensor) -> Operand<'_> {
    Operand::of(t).unwrap_or_else(|| panic!("matmul_add: expected a 2-D f32 matrix, got {t:?}"))
}

/// `dst[m, b.cols] (+)= a · b`, `dst` row-major with rows `n` elements apart (`n ≥ b.cols`),
/// on several threads when the product is large enough. An empty inner dimension writes zeros.
///
/// # Safety
/// `dst` must be valid for writes (and reads when `accumulate`) of `b.cols` elements at each of
/// `a.rows` rows `n` apart.
pub(crate) unsafe fn product_into(
    dst: *mut f32,
    n: usize,
    a: &Operand,
    b: &Operand,
    accumulate: bool,
) {
    let macs = a.rows.saturating_mul(b.cols).saturating_mul(a.cols);
    unsafe { product_on(dst, n, a, b, accumulate, macs >= PARALLEL_MACS) }
}

/// [`product_into`] on the calling thread only (`threaded` false), for callers that already
/// run one product per thread.
///
/// # Safety
/// As [`product_into`].
pub(crate) unsafe fn product_on(
    dst: *mut f32,
    n: usize,
    a: &Operand,
    b: &Operand,
    accumulate: bool,
    threaded: bool,
) {
    let (m, k, cols) = (a.rows, a.cols, b.cols);
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                unsafe { std::ptr::write_bytes(dst.add(i * n), 0, cols) };
            }
        }
        return;
    }
    let parallelism = if threaded {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // gemm computes dst = alpha·dst + beta·(lhs · rhs), reading dst only when asked to.
    unsafe {
        gemm::gemm(
            m,
            cols,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            a.ptr,
            a.col_stride,
            a.row_stride,
            b.ptr,
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize, seed: f32) -> FlexTensor {
        let values = (0..rows * cols)
            .map(|i| ((i as f32 * 0.37 + seed).sin() * 2.0).round() / 2.0)
            .collect::<Vec<_>>();
        FlexTensor::from_data(TensorData::new(values, [rows, cols]))
    }

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n)
            .map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum())
            .collect()
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.clone().into_data().try_to_vec::<f32>().unwrap()
    }

    /// Half-integer entries, so every sum is exact and the comparison can be exact too.
    #[test]
    fn products_and_accumulated_products_are_exact() {
        let (m, k, n, r) = (300, 70, 90, 5); // m·n·k above the parallel threshold
        let (a, b, u, v) = (
            matrix(m, k, 0.1),
            matrix(k, n, 0.2),
            matrix(m, r, 0.3),
            matrix(r, n, 0.4),
        );
        let plain = matmul_add(&a, &b, None);
        assert_eq!(values(&plain), naive(&values(&a), &values(&b), m, k, n));
        let fused = matmul_add(&a, &b, Some((&u, &v)));
        let expected: Vec<f32> = naive(&values(&a), &values(&b), m, k, n)
            .iter()
            .zip(naive(&values(&u), &values(&v), m, r, n))
            .map(|(x, y)| x + y)
            .collect();
        assert_eq!(values(&fused), expected);
    }

    /// A transposed view (swapped strides) and an offset slice are read in place, correctly.
    #[test]
    fn strided_operands_are_read_through_their_layout() {
        use burn::backend::flex::Flex;
        use burn::backend::ops::FloatTensorOps;
        let (m, k, n) = (6, 4, 3);
        let at = matrix(k, m, 0.5); // [k, m]
        let a = Flex::float_transpose(at.clone()); // a [m, k] view with column-major strides
        let b = matrix(k + 2, n, 0.6);
        let b_tail = Flex::float_slice(
            b.clone(),
            &[
                burn::tensor::Slice::from(2..k + 2),
                burn::tensor::Slice::from(0..n),
            ],
        );
        let expected = naive(
            &values(&a.to_contiguous()),
            &values(&b_tail.to_contiguous()),
            m,
            k,
            n,
        );
        assert_eq!(values(&matmul_add(&a, &b_tail, None)), expected);
    }

    #[test]
    fn an_empty_inner_dimension_gives_zeros() {
        let (a, b) = (matrix(3, 0, 0.0), matrix(0, 2, 0.0));
        assert_eq!(values(&matmul_add(&a, &b, None)), vec![0.0; 6]);
    }
}
