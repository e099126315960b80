//! Block-quantized frozen weights: the two formats, their layout in tensors, and their
//! dequantization on the host (the inner loop of the flex kernel, and the fallback for backends
//! without a kernel).
//!
//! A weight `W` `[d_out, d_in]` (PyTorch's orientation) is cut along `d_in` into blocks of 32
//! values, each with one scale, exactly as llama.cpp's Q8_0 and Q4_0 cut it, so a GGUF's blocks
//! are used as they are:
//! - `words` `[d_out, d_in / 32 · w]` u32: each block's quantized values in ggml's byte order,
//!   four bytes per little-endian word (Q8_0: 32 signed bytes, `w = 8`; Q4_0: 16 bytes whose low
//!   nibbles are values 0‥16 and high nibbles values 16‥32, each `q + 8`, `w = 4`);
//! - `scales` `[d_out, d_in / 32]` f32: the block's f16 scale `d`, widened (exactly).
//!
//! A value is `q · d` (Q8_0) or `(q − 8) · d` (Q4_0), the same f32 product as `ggml-quants.c`
//! (and `gguf::types`), so dequantized weights are bit-identical to llama.cpp's.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, TensorMetadata};
use burn::tensor::TensorData;
use serde::{Deserialize, Serialize};

use super::blocks_cpu::Blocks;

/// Values per block (both formats).
pub const BLOCK: usize = 32;

/// A block-quantized storage format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockFormat {
    /// 8-bit values, one f16 scale per 32 (8.5 bits per weight in GGUF, 9 here with the f32 scale).
    Q8_0,
    /// 4-bit values, one f16 scale per 32 (4.5 bits per weight in GGUF, 5 here).
    Q4_0,
}

impl BlockFormat {
    /// u32 words of quantized values per block.
    pub fn words_per_block(self) -> usize {
        match self {
            Self::Q8_0 => 8,
            Self::Q4_0 => 4,
        }
    }

    /// The format's number, as the backend ops carry it (its bits per value).
    pub fn code(self) -> usize {
        match self {
            Self::Q8_0 => 8,
            Self::Q4_0 => 4,
        }
    }

    /// The inverse of [`Self::code`].
    pub fn from_code(code: usize) -> Self {
        match code {
            8 => Self::Q8_0,
            4 => Self::Q4_0,
            _ => unreachable!("block format code {code}"),
        }
    }

    /// llama.cpp's name (`Q8_0`, `Q4_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
        }
    }

    /// Bytes of one block in a GGUF file (the f16 scale first).
    pub fn ggml_block_bytes(self) -> usize {
        2 + 4 * self.words_per_block()
    }

    /// A GGUF tensor's blocks (`[rows, cols / 32]` blocks of [`Self::ggml_block_bytes`]) split into
    /// `words` and `scales` as laid out above.
    pub fn split_ggml(self, bytes: &[u8]) -> (Vec<u32>, Vec<f32>) {
        let size = self.ggml_block_bytes();
        let blocks = bytes.len() / size;
        let mut words = Vec::with_capacity(blocks * self.words_per_block());
        let mut scales = Vec::with_capacity(blocks);
        for block in bytes.chunks_exact(size) {
            scales.push(half::f16::from_le_bytes([block[0], block[1]]).to_f32());
            words.extend(
                block[2..]
                    .chunks_exact(4)
                    .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
            );
        }
        (words, scales)
    }

    /// Dequantizes consecutive blocks of one row: `words` (`w` per block) and their `scales` into
    /// `out` (32 per block).
    #[inline]
    pub fn dequantize_row(self, words: &[u32], scales: &[f32], out: &mut [f32]) {
        let per_block = self.words_per_block();
        let blocks = words.chunks_exact(per_block).zip(scales);
        // The block's bytes first (word j holds bytes 4j‥4j+4, little-endian), then one
        // straight-line loop over them, which the compiler vectorises.
        let mut bytes = [0u8; 32];
        for ((block, &d), out) in blocks.zip(out.chunks_exact_mut(BLOCK)) {
            for (j, word) in block.iter().enumerate() {
                bytes[4 * j..4 * j + 4].copy_from_slice(&word.to_le_bytes());
            }
            match self {
                Self::Q8_0 => {
                    for (o, &q) in out.iter_mut().zip(&bytes) {
                        *o = q as i8 as f32 * d;
                    }
                }
                Self::Q4_0 => {
                    let (low, high) = out.split_at_mut(16);
                    for ((l, h), &q) in low.iter_mut().zip(high).zip(&bytes[..16]) {
                        *l = ((q & 0x0F) as i8 - 8) as f32 * d;
                        *h = ((q >> 4) as i8 - 8) as f32 * d;
                    }
                }
            }
        }
    }
}

/// `W` `[d_out, d_in]` in f32 by a round trip through the host (backends without a kernel:
/// ndarray, whose tensors live on the host anyway).
pub(crate) fn dequantize_on_host<B: Backend>(
    words: IntTensor<B>,
    scales: FloatTensor<B>,
    format: BlockFormat,
) -> FloatTensor<B> {
    let device = scales.device();
    let read = |data: Result<TensorData, _>| data.expect("reading a tensor of a host backend");
    let words = read(pollster::block_on(B::int_into_data(words)));
    let scales = read(pollster::block_on(B::float_into_data(scales)));
    let [d_out, blocks] = [scales.shape()[0], scales.shape()[1]];
    let (words, scales) = (
        words.convert::<u32>().into_vec::<u32>().expect("u32 words"),
        scales
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 scales"),
    );
    let values = Blocks::new(&words, &scales, format, [d_out, blocks]).widened();
    B::float_from_data(TensorData::new(values, [d_out, blocks * BLOCK]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::types::{GgmlType, quantize_q4_0, quantize_q8_0};
    use crate::kernels::projection::tests::{assert_same, normal};
    use crate::kernels::projection::{BlockOperand, block_lora_matmul, block_matmul};
    use burn::prelude::*;
    use burn::tensor::DType;

    /// `W` `[d_out, d_in]` quantized as llama.cpp would, on `device`: the operand and the exact
    /// f32 values ggml dequantizes it to.
    fn quantized(
        format: BlockFormat,
        [d_out, d_in]: [usize; 2],
        device: &Device,
    ) -> (BlockOperand, Tensor<2>) {
        let values: Vec<f32> = (0..d_out * d_in)
            .map(|i| (i * 7919 % 1009) as f32 / 500.0 - 1.0)
            .collect();
        let (bytes, ggml) = match format {
            BlockFormat::Q8_0 => (quantize_q8_0(&values), GgmlType::Q8_0),
            BlockFormat::Q4_0 => (quantize_q4_0(&values), GgmlType::Q4_0),
        };
        let (words, scales) = format.split_ggml(&bytes);
        let blocks = d_in / BLOCK;
        let operand = BlockOperand {
            words: Tensor::from_data(
                TensorData::new(words, [d_out, blocks * format.words_per_block()]),
                (device, DType::U32),
            ),
            scales: Tensor::from_data(TensorData::new(scales, [d_out, blocks]), device),
            format,
        };
        let exact = Tensor::from_data(
            TensorData::new(ggml.dequantize(&bytes), [d_out, d_in]),
            device,
        );
        (operand, exact)
    }

    /// Both block ops against ordinary ops on the exactly dequantized weight: the same values and
    /// the same gradients for `x` (and LoRA's `a` and `b`), for `rows` rows of `x`. `[80, 8192]`
    /// gives flex several tiles in both directions (32 rows per forward tile, 102 blocks per
    /// backward tile); up to four rows take the decoding path forward.
    fn check(device: &Device, shape: [usize; 2], rows: usize) {
        let device = device.clone().autodiff();
        let [d_out, d_in] = shape;
        let r = 3;
        for format in [BlockFormat::Q8_0, BlockFormat::Q4_0] {
            let (weight, exact) = quantized(format, shape, &device);
            assert_eq!(
                super::super::dequantize_blocks(&weight).into_data(),
                exact.clone().into_data()
            );
            let x = normal([rows, d_in], &device).require_grad();
            let a = normal([d_in, r], &device).require_grad();
            let b = normal([r, d_out], &device).require_grad();
            let cot = normal([rows, d_out], &device);
            let wide = exact.transpose();

            let fused = block_matmul(x.clone(), &weight);
            let plain = x.clone().matmul(wide.clone());
            assert_same(fused, plain, &cot, &[&x]);

            let fused = block_lora_matmul(x.clone(), &weight, a.clone(), b.clone());
            let plain = x.clone().matmul(wide) + x.clone().matmul(a.clone()).matmul(b.clone());
            assert_same(fused, plain, &cot, &[&x, &a, &b]);
        }
    }

    #[test]
    fn block_projections_match_plain_ops_on_flex() {
        check(&Device::flex(), [80, 8192], 5);
        check(&Device::flex(), [7, 64], 5);
        check(&Device::flex(), [80, 8192], 3);
    }

    #[test]
    fn block_projections_match_plain_ops_on_ndarray() {
        check(&Device::ndarray(), [7, 64], 5);
    }

    #[test]
    fn block_projections_match_plain_ops_on_wgpu() {
        if let Some(device) = crate::device::wgpu_or_skip() {
            check(&device, [7, 64], 5);
        }
    }

    /// No rows in, no rows out, in both directions (flex's tiles must not point past an empty
    /// buffer).
    #[test]
    fn block_projections_of_no_rows_are_empty_on_flex() {
        let device = Device::flex().autodiff();
        let (weight, _) = quantized(BlockFormat::Q8_0, [80, 8192], &device);
        let x = Tensor::<2>::zeros([0, 8192], &device).require_grad();
        let y = block_matmul(x.clone(), &weight);
        assert_eq!(y.dims(), [0, 80]);
        let grads = y.sum().backward();
        assert_eq!(x.grad(&grads).unwrap().dims(), [0, 8192]);
    }

    /// Both formats dequantize to exactly what ggml's own dequantization gives for the same blocks.
    #[test]
    fn split_blocks_dequantize_exactly_as_ggml() {
        let values: Vec<f32> = (0..96).map(|i| ((i as f32) * 0.731).sin() * 3.0).collect();
        for (format, ggml, bytes) in [
            (BlockFormat::Q8_0, GgmlType::Q8_0, quantize_q8_0(&values)),
            (BlockFormat::Q4_0, GgmlType::Q4_0, quantize_q4_0(&values)),
        ] {
            assert_eq!(bytes.len(), 3 * format.ggml_block_bytes());
            let (words, scales) = format.split_ggml(&bytes);
            assert_eq!(words.len(), 3 * format.words_per_block());
            let mut out = vec![0f32; 96];
            format.dequantize_row(&words, &scales, &mut out);
            assert_eq!(out, ggml.dequantize(&bytes), "{}", format.name());
            assert_eq!(BlockFormat::from_code(format.code()), format);
        }
    }
}
