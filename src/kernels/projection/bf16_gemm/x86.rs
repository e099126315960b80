//! The AVX-512 parts of the bf16 product (`super`): rounding rows of `x` to pairs, packing the
//! weight (two rows interleaved, or 16 × 16 blocks of column runs transposed) and the
//! micro-kernel, whose tile adds LoRA's `u · v` in f32 before storing its sums.

use std::arch::x86_64::*;

use half::bf16;

use super::{MR, NR};

/// 32 bf16 lanes as 16 u32 pairs (the same 512 bits).
#[inline(always)]
fn pairs(v: __m512bh) -> __m512i {
    // SAFETY: both are plain 512-bit vectors.
    unsafe { std::mem::transmute::<__m512bh, __m512i>(v) }
}

/// 16 u32 pairs as 32 bf16 lanes (the same 512 bits).
#[inline(always)]
fn halves(v: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// Rounds `src` by whole 32-value chunks into `row`'s pairs; returns the pairs written.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) fn round_row(src: &[f32], row: &mut [u32]) -> usize {
    let chunks = (src.len() / 32).min(row.len() / 16);
    for c in 0..chunks {
        // SAFETY: 32 floats from `32c` and 16 pairs from `16c` are in bounds.
        unsafe {
            let low = _mm512_loadu_ps(src.as_ptr().add(32 * c));
            let high = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
            // 32 bf16 in order: the 16 pairs of this chunk.
            let rounded = pairs(_mm512_cvtne2ps_pbh(high, low));
            _mm512_storeu_si512(row.as_mut_ptr().add(16 * c).cast(), rounded);
        }
    }
    16 * chunks
}

/// `dst[j] = first[j] | second[j] << 16` by 16 columns; returns the columns written.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn interleave(first: &[bf16], second: &[bf16], dst: &mut [u32]) -> usize {
    let chunks = dst.len().min(first.len()).min(second.len()) / 16;
    for c in 0..chunks {
        // SAFETY: 16 values from `16c` of each operand are in bounds.
        unsafe {
            let low = _mm512_cvtepu16_epi32(_mm256_loadu_si256(first.as_ptr().add(16 * c).cast()));
            let high =
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(second.as_ptr().add(16 * c).cast()));
            let pairs = _mm512_or_si512(low, _mm512_slli_epi32::<16>(high));
            _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c).cast(), pairs);
        }
    }
    16 * chunks
}

/// Packs the column runs of a transposed row-major weight, 16 columns × 16 pairs at a time:
/// column `j`'s pairs are the bf16 values from `data[start + j·col_stride]` taken two by two, and
/// pair `p` of column `j` goes to `out[p·NR + j]`. Covers the first `cols / 16 · 16` columns and
/// `pairs / 16 · 16` pairs and returns those two counts; the caller packs the rest.
#[target_feature(enable = "avx512f")]
pub(super) fn transpose_runs(
    data: &[bf16],
    (start, col_stride): (usize, usize),
    (cols, pairs): (usize, usize),
    out: &mut [u32],
) -> (usize, usize) {
    let (cols, pairs) = (cols / 16 * 16, pairs / 16 * 16);
    if cols == 0 || pairs == 0 {
        return (cols, pairs);
    }
    assert!(
        start + (cols - 1) * col_stride + 2 * pairs <= data.len()
            && (pairs - 1) * NR + cols <= out.len(),
        "transpose_runs: out of bounds"
    );
    let mut rows = [_mm512_setzero_si512(); 16];
    for j0 in (0..cols).step_by(16) {
        for p0 in (0..pairs).step_by(16) {
            for (c, row) in rows.iter_mut().enumerate() {
                // SAFETY: 16 pairs of column `j0 + c` from pair `p0` are in bounds (asserted).
                *row = unsafe {
                    _mm512_loadu_si512(
                        data.as_ptr()
                            .add(start + (j0 + c) * col_stride + 2 * p0)
                            .cast(),
                    )
                };
            }
            for (p, pair) in transpose16(rows).iter().enumerate() {
                // SAFETY: 16 values from `(p0 + p)·NR + j0` are in bounds (asserted).
                unsafe {
                    _mm512_storeu_si512(out.as_mut_ptr().add((p0 + p) * NR + j0).cast(), *pair)
                };
            }
        }
    }
    (cols, pairs)
}

/// The transpose of a 16 × 16 matrix of u32, one row per vector: 32-bit and 64-bit unpacks within
/// 128-bit lanes, then two rounds of lane shuffles.
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    // Rows 2i, 2i + 1 interleaved: lane L of t[2i] holds columns 4L, 4L + 1 of both rows, of
    // t[2i + 1] columns 4L + 2, 4L + 3.
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // Lane L of s[4i + c] holds column 4L + c of rows 4i .. 4i + 3.
    let mut s = [_mm512_setzero_si512(); 16];
    for i in 0..4 {
        s[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        s[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        s[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        s[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // Column C = 4L + c is lane L of s[c], s[4 + c], s[8 + c], s[12 + c], in that order.
    let mut out = [_mm512_setzero_si512(); 16];
    for c in 0..4 {
        // Lanes 0, 2 (0x88) or 1, 3 (0xdd) of each operand.
        let even_low = _mm512_shuffle_i32x4::<0x88>(s[c], s[4 + c]);
        let odd_low = _mm512_shuffle_i32x4::<0xdd>(s[c], s[4 + c]);
        let even_high = _mm512_shuffle_i32x4::<0x88>(s[8 + c], s[12 + c]);
        let odd_high = _mm512_shuffle_i32x4::<0xdd>(s[8 + c], s[12 + c]);
        out[c] = _mm512_shuffle_i32x4::<0x88>(even_low, even_high);
        out[8 + c] = _mm512_shuffle_i32x4::<0xdd>(even_low, even_high);
        out[4 + c] = _mm512_shuffle_i32x4::<0x88>(odd_low, odd_high);
        out[12 + c] = _mm512_shuffle_i32x4::<0xdd>(odd_low, odd_high);
    }
    out
}

/// One micro-tile: `dst[rows, cols] (+)= x[rows, pairs] · packed[pairs, NR] (+ u · v)`.
pub(super) struct Tile {
    pub x: *const u32,
    pub x_stride: usize,
    pub rows: usize,
    pub packed: *const u32,
    pub pairs: usize,
    pub dst: *mut f32,
    pub ldc: usize,
    pub cols: usize,
    /// Write the sums instead of adding them to `dst`.
    pub overwrite: bool,
    /// LoRA's term, added to the sums of the first `k` block.
    pub low_rank: Option<LowRankTile>,
}

/// `u · v` for a tile's rows: `u` `[rows, r]` with rows `u_stride` apart, `v` the panel's columns
/// packed as `[r][NR]` f32.
#[derive(Clone, Copy)]
pub(super) struct LowRankTile {
    pub u: *const f32,
    pub u_stride: usize,
    pub v: *const f32,
    pub r: usize,
}

impl Tile {
    /// # Safety
    /// The pointers must cover what the fields describe, and the CPU must have AVX512-BF16.
    pub(super) unsafe fn run(&self) {
        // SAFETY: forwarded.
        unsafe {
            match self.rows {
                8 => self.rows_of::<8>(),
                7 => self.rows_of::<7>(),
                6 => self.rows_of::<6>(),
                5 => self.rows_of::<5>(),
                4 => self.rows_of::<4>(),
                3 => self.rows_of::<3>(),
                2 => self.rows_of::<2>(),
                1 => self.rows_of::<1>(),
                rows => unreachable!("a micro-tile has 1 to {MR} rows, not {rows}"),
            }
        }
    }

    /// `R` rows: `R × 3` vectors of sums stay in registers over the whole `k` block.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn rows_of<const R: usize>(&self) {
        // SAFETY: the caller's contract covers every read and write below.
        unsafe {
            let mut sums = [[_mm512_setzero_ps(); 3]; R];
            for p in 0..self.pairs {
                let b = self.packed.add(p * NR);
                let w: [__m512bh; 3] = [
                    halves(_mm512_loadu_si512(b.cast())),
                    halves(_mm512_loadu_si512(b.add(16).cast())),
                    halves(_mm512_loadu_si512(b.add(32).cast())),
                ];
                for (r, row) in sums.iter_mut().enumerate() {
                    let pair = *self.x.add(r * self.x_stride + p);
                    let xs = halves(_mm512_set1_epi32(pair as i32));
                    for (sum, &w) in row.iter_mut().zip(&w) {
                        *sum = _mm512_dpbf16_ps(*sum, xs, w);
                    }
                }
            }
            if let Some(low_rank) = self.low_rank {
                for j in 0..low_rank.r {
                    let b = low_rank.v.add(j * NR);
                    let v = [
                        _mm512_loadu_ps(b),
                        _mm512_loadu_ps(b.add(16)),
                        _mm512_loadu_ps(b.add(32)),
                    ];
                    for (r, row) in sums.iter_mut().enumerate() {
                        let u = _mm512_set1_ps(*low_rank.u.add(r * low_rank.u_stride + j));
                        for (sum, &v) in row.iter_mut().zip(&v) {
                            *sum = _mm512_fmadd_ps(u, v, *sum);
                        }
                    }
                }
            }
            for (r, row) in sums.iter().enumerate() {
                for (v, &sum) in row.iter().enumerate() {
                    let start = 16 * v;
                    if start >= self.cols {
                        break;
                    }
                    let lanes = (self.cols - start).min(16);
                    let mask: __mmask16 = if lanes == 16 { !0 } else { (1 << lanes) - 1 };
                    let dst = self.dst.add(r * self.ldc + start);
                    let value = if self.overwrite {
                        sum
                    } else {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), sum)
                    };
                    _mm512_mask_storeu_ps(dst, mask, value);
                }
            }
        }
    }
}
