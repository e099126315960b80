//! The block-quantized projections on flex: the weight is widened to f32 one tile at a time (about
//! a megabyte, in parallel rows) and each tile's product goes straight to `gemm`, writing its own
//! columns of one unzeroed output; a LoRA product is then accumulated into that output. No f32
//! copy of the whole weight ever exists, forward or backward.
//!
//! With `W` `[d_out, d_in]` (blocks along `d_in`):
//! - forward, `x · Wᵀ` `[rows, d_out]`: tiles of whole rows of `W` give columns of the output;
//! - backward, `g · W` `[rows, d_in]`: tiles of whole block columns of `W` (every row, a run of
//!   blocks) give columns of the output, so no output element is revisited.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

use super::blocks::{BLOCK, BlockFormat};
use super::few_rows::{self, Widen};
use super::gemm::{Operand, operand, product_into};

/// f32 values per widened tile (1 MiB).
const TILE_VALUES: usize = 1 << 18;

/// A weight in blocks in host memory, read in place: a flex tensor's storage, or the data read back
/// from another host backend.
pub(super) struct Blocks<'a> {
    words: &'a [u32],
    scales: &'a [f32],
    format: BlockFormat,
    d_out: usize,
    blocks: usize,
}

impl<'a> Blocks<'a> {
    /// `words` (contiguous u32) and `scales` (contiguous f32) as the kernel reads them, or `None`
    /// when either is laid out otherwise.
    pub(super) fn of(
        words: &'a FlexTensor,
        scales: &'a FlexTensor,
        format: BlockFormat,
    ) -> Option<Self> {
        let ok = words.dtype() == DType::U32
            && scales.dtype() == DType::F32
            && words.is_contiguous()
            && scales.is_contiguous()
            && words.layout().start_offset() == 0
            && scales.layout().start_offset() == 0;
        let shape = scales.layout().shape();
        let words_shape = [shape[0], shape[1] * format.words_per_block()];
        if !ok || words.layout().shape().as_slice() != words_shape {
            return None;
        }
        let dims = [shape[0], shape[1]];
        Some(Self::new(words.storage(), scales.storage(), format, dims))
    }

    /// `words` `[d_out, blocks · w]` and `scales` `[d_out, blocks]`, row-major.
    pub(super) fn new(
        words: &'a [u32],
        scales: &'a [f32],
        format: BlockFormat,
        [d_out, blocks]: [usize; 2],
    ) -> Self {
        assert_eq!(scales.len(), d_out * blocks, "block scales");
        assert_eq!(
            words.len(),
            scales.len() * format.words_per_block(),
            "block words"
        );
        Self {
            words,
            scales,
            format,
            d_out,
            blocks,
        }
    }

    fn d_in(&self) -> usize {
        self.blocks * BLOCK
    }

    /// Rows `rows` × blocks `blocks` of `W` in f32, row-major, into `out`.
    fn widen(&self, rows: std::ops::Range<usize>, blocks: std::ops::Range<usize>, out: &mut [f32]) {
        let per_block = self.format.words_per_block();
        let width = blocks.len() * BLOCK;
        if width == 0 {
            return;
        }
        out.par_chunks_mut(width).zip(rows).for_each(|(out, r)| {
            let first = r * self.blocks + blocks.start;
            let words = &self.words[first * per_block..(first + blocks.len()) * per_block];
            let scales = &self.scales[first..first + blocks.len()];
            self.format.dequantize_row(words, scales, out);
        });
    }

    /// Row `r` of `W` (`d_in` values) in f32, on this thread.
    fn widen_row(&self, r: usize, out: &mut [f32]) {
        let per_block = self.format.words_per_block();
        let first = r * self.blocks;
        let words = &self.words[first * per_block..(first + self.blocks) * per_block];
        let scales = &self.scales[first..first + self.blocks];
        self.format.dequantize_row(words, scales, out);
    }

    /// The whole weight `[d_out, d_in]` in f32, row-major.
    pub(super) fn widened(&self) -> Vec<f32> {
        let mut values = vec![0f32; self.d_out * self.d_in()];
        self.widen(0..self.d_out, 0..self.blocks, &mut values);
        values
    }

    /// The whole weight `[d_out, d_in]` in f32.
    pub(super) fn dequantize(&self) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(self.widened(), [self.d_out, self.d_in()]))
    }
}

/// Which product of `W`: the forward's `x · Wᵀ` or the backward's `g · W`.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Forward,
    Backward,
}

/// `lhs · Wᵀ` (`Forward`, `lhs` `[rows, d_in]`) or `lhs · W` (`Backward`, `lhs` `[rows, d_out]`),
/// plus `u · v` when given. `lhs`, `u` and `v` are 2-D f32 matrices (any strides).
pub(super) fn product(
    lhs: &FlexTensor,
    weight: &Blocks,
    side: Side,
    plus: Option<(&FlexTensor, &FlexTensor)>,
) -> FlexTensor {
    let x = operand(lhs);
    let (d_out, d_in) = (weight.d_out, weight.d_in());
    let (inner, n) = match side {
        Side::Forward => (d_in, d_out),
        Side::Backward => (d_out, d_in),
    };
    assert_eq!(x.cols, inner, "block product: inner dimensions differ");
    let m = x.rows;
    if m == 0 {
        // No rows: nothing to compute, and no buffer for the tiles' offsets to point into.
        return FlexTensor::from_data(TensorData::new(Vec::<f32>::new(), [0, n]));
    }
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    let mut tile = Vec::new();
    // SAFETY: every tile's product writes its own columns of all `m` rows of `out` (its capacity
    // is `m·n`), and together the tiles cover all `n` columns before `set_len`; the LoRA product
    // then accumulates into initialised memory.
    unsafe {
        match side {
            Side::Forward if (1..=few_rows::MAX_ROWS).contains(&m) => {
                // A decoding step: each output column is one row of `W` widened into a buffer
                // and dotted with the rows of `x`; `W` is read once.
                let lhs = lhs.to_contiguous();
                let x: &[f32] = lhs.as_slice().expect("contiguous f32 rows");
                let values = few_rows::by_output_columns(m, n, |columns, out| {
                    let mut row = vec![0.0f32; d_in];
                    for (j, out) in columns.zip(out.chunks_exact_mut(m)) {
                        weight.widen_row(j, &mut row);
                        for (r, o) in out.iter_mut().enumerate() {
                            *o = f32::dot(&x[r * d_in..(r + 1) * d_in], &row);
                        }
                    }
                });
                std::ptr::copy_nonoverlapping(values.as_ptr(), out.as_mut_ptr(), m * n);
            }
            Side::Forward => {
                let rows_per_tile = (TILE_VALUES / d_in.max(1)).clamp(16, d_out.max(16));
                for r0 in (0..d_out).step_by(rows_per_tile) {
                    let r1 = (r0 + rows_per_tile).min(d_out);
                    tile.resize((r1 - r0) * d_in, 0.0);
                    weight.widen(r0..r1, 0..weight.blocks, &mut tile);
                    // The tile transposed: [d_in, r1 − r0].
                    let w = Operand::strided(&tile, 0, [d_in, r1 - r0], [1, d_in]);
                    product_into(out.as_mut_ptr().add(r0), n, &x, &w, false);
                }
            }
            Side::Backward => {
                let per_tile =
                    (TILE_VALUES / (d_out.max(1) * BLOCK)).clamp(1, weight.blocks.max(1));
                for b0 in (0..weight.blocks).step_by(per_tile) {
                    let b1 = (b0 + per_tile).min(weight.blocks);
                    let width = (b1 - b0) * BLOCK;
                    tile.resize(d_out * width, 0.0);
                    weight.widen(0..d_out, b0..b1, &mut tile);
                    let w = Operand::strided(&tile, 0, [d_out, width], [width, 1]);
                    product_into(out.as_mut_ptr().add(b0 * BLOCK), n, &x, &w, false);
                }
            }
        }
        out.set_len(m * n);
        if let Some((u, v)) = plus {
            let (u, v) = (operand(u), operand(v));
            assert!(
                u.rows == m && v.cols == n && u.cols == v.rows,
                "block product: LoRA shapes differ"
            );
            product_into(out.as_mut_ptr(), n, &u, &v, true);
        }
    }
    FlexTensor::from_data(TensorData::new(out, [m, n]))
}
