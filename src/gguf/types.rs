//! The ggml tensor types this crate reads (and the two it writes), with their block layouts, and
//! their dequantization to f32 — the same arithmetic, in the same order, as the `gguf` Python
//! package's `dequantize` (llama.cpp's `ggml-quants.c`), so values are bit-identical.
//!
//! A block holds 32 values (the `_0`/`_1` types) or 256 (the k-quants, made of 8 or 16
//! sub-blocks with 6- or 8-bit scales). Scales are f16.

use half::f16;

/// A ggml tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// Values per k-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    pub const ALL: [GgmlType; 13] = [
        Self::F32,
        Self::F16,
        Self::Bf16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2K,
        Self::Q3K,
        Self::Q4K,
        Self::Q5K,
        Self::Q6K,
    ];

    /// ggml's numeric id, as stored in a tensor info.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// ggml's name (`Q4_K`, `BF16`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Bf16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
        }
    }

    /// The supported names, for error messages.
    pub fn supported_names() -> String {
        let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
        names.join(", ")
    }

    /// `(values per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 2 + 16),
            Self::Q4_1 => (32, 2 + 2 + 16),
            Self::Q5_0 => (32, 2 + 4 + 16),
            Self::Q5_1 => (32, 2 + 2 + 4 + 16),
            Self::Q8_0 => (32, 2 + 32),
            Self::Q2K => (QK_K, 2 + 2 + QK_K / 16 + QK_K / 4),
            Self::Q3K => (QK_K, 2 + QK_K / 4 + QK_K / 8 + 12),
            Self::Q4K => (QK_K, 2 + 2 + QK_K / 2 + 12),
            Self::Q5K => (QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12),
            Self::Q6K => (QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16),
        }
    }

    /// Bytes of `n` values, `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let (values, bytes) = self.block();
        n.is_multiple_of(values as u64)
            .then(|| n / values as u64 * bytes as u64)
    }

    /// Dequantizes whole blocks to f32 (`bytes.len()` a multiple of the block size).
    pub fn dequantize(self, bytes: &[u8]) -> Vec<f32> {
        let (values, size) = self.block();
        let mut out = vec![0f32; bytes.len() / size * values];
        let blocks = bytes.chunks_exact(size).zip(out.chunks_exact_mut(values));
        match self {
            Self::F32 => blocks.for_each(|(b, o)| o[0] = f32::from_le_bytes(le4(b, 0))),
            Self::F16 => blocks.for_each(|(b, o)| o[0] = half(b, 0)),
            Self::Bf16 => blocks.for_each(|(b, o)| {
                o[0] = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }),
            Self::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
            Self::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
            Self::Q5_0 => blocks.for_each(|(b, o)| q5(b, o, false)),
            Self::Q5_1 => blocks.for_each(|(b, o)| q5(b, o, true)),
            Self::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
            Self::Q2K => blocks.for_each(|(b, o)| q2_k(b, o)),
            Self::Q3K => blocks.for_each(|(b, o)| q3_k(b, o)),
            Self::Q4K => blocks.for_each(|(b, o)| q45_k(b, o, false)),
            Self::Q5K => blocks.for_each(|(b, o)| q45_k(b, o, true)),
            Self::Q6K => blocks.for_each(|(b, o)| q6_k(b, o)),
        }
        out
    }
}

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn le4(b: &[u8], at: usize) -> [u8; 4] {
    [b[at], b[at + 1], b[at + 2], b[at + 3]]
}

/// `d`, 16 bytes of nibbles: low nibbles are values 0..16, high nibbles 16..32; `(q − 8)·d`.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = half(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        out[j] = d * ((q & 0x0F) as i8 - 8) as f32;
        out[j + 16] = d * ((q >> 4) as i8 - 8) as f32;
    }
}

/// `d`, `m`, 16 bytes of nibbles; `d·q + m`.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (half(b, 0), half(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        out[j] = d * (q & 0x0F) as f32 + m;
        out[j + 16] = d * (q >> 4) as f32 + m;
    }
}

/// Q5_0 (`d`, 32 high bits, nibbles; `(q − 16)·d`) and Q5_1 (`d`, `m`, …; `d·q + m`).
fn q5(b: &[u8], out: &mut [f32], with_min: bool) {
    let d = half(b, 0);
    let (m, at) = if with_min { (half(b, 2), 4) } else { (0.0, 2) };
    let qh = u32::from_le_bytes(le4(b, at));
    let qs = &b[at + 4..at + 20];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 16 {
            qs[j] & 0x0F
        } else {
            qs[j - 16] >> 4
        };
        let q = low | ((((qh >> j) & 1) as u8) << 4);
        *o = if with_min {
            d * q as f32 + m
        } else {
            d * (q as i8 - 16) as f32
        };
    }
}

/// `d`, 32 signed bytes; `q·d`.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = half(b, 0);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit values, `d`, `dmin`.
fn q2_k(b: &[u8], out: &mut [f32]) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half(b, 80), half(b, 82));
    for (f, o) in out.iter_mut().enumerate() {
        let (h, s, l) = (f / 128, (f / 32) % 4, f % 32);
        let q = (qs[h * 32 + l] >> (2 * s)) & 3;
        let sc = scales[f / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *o = dl * q as f32 - ml;
    }
}

/// 32 bytes of high-bit masks, 64 bytes of 2-bit values, 12 bytes of 6-bit scales, `d`.
fn q3_k(b: &[u8], out: &mut [f32]) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half(b, 108);
    let mut dl = [0f32; 16];
    for (i, dl) in dl.iter_mut().enumerate() {
        let low = (scales[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *dl = d * ((low | (high << 4)) as i8 - 32) as f32;
    }
    for (f, o) in out.iter_mut().enumerate() {
        let (h, s, l) = (f / 128, (f / 32) % 4, f % 32);
        let low = ((qs[h * 32 + l] >> (2 * s)) & 3) as i8;
        // The offset is 4 when the mask bit is clear.
        let bit = (hmask[f % 32] >> (f / 32)) & 1;
        let q = low - (((bit ^ 1) << 2) as i8);
        *o = dl[f / 16] * q as f32;
    }
}

/// Q4_K / Q5_K's 12 bytes of packed 6-bit scales and mins for 8 sub-blocks.
fn k_scale_min(scales: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (d, m, md) = (&scales[0..4], &scales[4..8], &scales[8..12]);
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for i in 0..4 {
        sc[i] = d[i] & 0x3F;
        sc[i + 4] = (md[i] & 0x0F) | ((d[i] >> 2) & 0x30);
        mn[i] = m[i] & 0x3F;
        mn[i + 4] = (md[i] >> 4) | ((m[i] >> 2) & 0x30);
    }
    (sc, mn)
}

/// `d`, `dmin`, 12 scale bytes, (Q5_K: 32 bytes of fifth bits,) 128 bytes of nibbles:
/// sub-block `g` of 32 values is `d·sc[g]·q − dmin·m[g]`.
fn q45_k(b: &[u8], out: &mut [f32], fifth_bit: bool) {
    let (d, dmin) = (half(b, 0), half(b, 2));
    let (sc, mn) = k_scale_min(&b[4..16]);
    let (qh, qs) = if fifth_bit {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    for (f, o) in out.iter_mut().enumerate() {
        let (g, l) = (f / 32, f % 32);
        let mut q = (qs[(g / 2) * 32 + l] >> (4 * (g % 2))) & 0x0F;
        if fifth_bit {
            q |= ((qh[l] >> g) & 1) << 4;
        }
        let scale = d * sc[g] as f32;
        let min = dmin * mn[g] as f32;
        *o = scale * q as f32 - min;
    }
}

/// 128 bytes of low nibbles, 64 bytes of 2-bit highs, 16 signed scales, `d`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    for (f, o) in out.iter_mut().enumerate() {
        let (h, r) = (f / 128, f % 128);
        let low = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let high = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        *o = d * scales[f / 16] as i8 as f32 * q as f32;
    }
}

/// Quantizes f32 values (a multiple of 32) to Q8_0 blocks exactly as `ggml-quants.c` does:
/// `d = max|x| / 127`, `q = round(x / d)` half away from zero.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// Quantizes f32 values (a multiple of 32) to Q4_0 blocks exactly as `ggml-quants.c` does: the
/// value of largest magnitude `m` gives `d = m / −8` (so it lands on −8), and each value becomes
/// `min(15, trunc(x / d + 8.5))` (the unrounded `d` divides; the f16 `d` is stored).
pub fn quantize_q4_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 18);
    for block in values.chunks_exact(32) {
        let max = block
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        out.extend((0..16).map(|j| q(block[j]) | (q(block[j + 16]) << 4)));
    }
    out
}

/// f32 values as little-endian f16 (round to nearest even).
pub fn encode_f16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_block_sizes_match_ggml() {
        assert_eq!(GgmlType::from_id(12), Some(GgmlType::Q4K));
        assert_eq!(GgmlType::from_id(4), None); // the retired Q4_2
        assert_eq!(GgmlType::Q6K.block(), (256, 210));
        assert_eq!(GgmlType::Q4K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q8_0.bytes_for(33), None);
    }

    #[test]
    fn q8_0_round_trips_within_its_rounding() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let blocks = quantize_q8_0(&values);
        assert_eq!(blocks.len(), 68);
        let back = GgmlType::Q8_0.dequantize(&blocks);
        // Half a step of rounding, plus the f16 rounding of the scale times |q| ≤ 127.
        let step = 3.15 / 127.0;
        let scale_error = 127.0 * (step * 2f32.powi(-11));
        for (a, b) in values.iter().zip(&back) {
            assert!((a - b).abs() <= step / 2.0 + scale_error, "{a} vs {b}");
        }
        // The largest value is exact up to the f16 scale.
        assert!((back[0] + 3.15).abs() < 2e-3);
    }

    #[test]
    fn q4_0_worked_block() {
        // d = 0.5; byte j holds value j (low) and value j+16 (high) as q + 8.
        let mut block = f16::from_f32(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|j| (j % 16) | (15 - j % 16) << 4));
        let v = GgmlType::Q4_0.dequantize(&block);
        assert_eq!(v[0], -4.0); // (0 − 8)·0.5
        assert_eq!(v[15], 3.5); // (15 − 8)·0.5
        assert_eq!(v[16], 3.5); // high nibble of byte 0 = 15
        assert_eq!(v[31], -4.0);
    }
}
