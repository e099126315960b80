//! Frozen projections stored block-quantized (`frozen_precision: q8 | q4`): llama.cpp's Q8_0 and
//! Q4_0 blocks of 32 values with one scale each (`kernels::projection::blocks` has the layout),
//! on any device. A GGUF file's Q8_0/Q4_0 tensors are used as they are; anything else is quantized
//! once, at load, exactly as llama.cpp's `quantize` would (`gguf::types`), so the same checkpoint
//! gives the same blocks here and in a GGUF written by llama.cpp.

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use crate::gguf::types::{quantize_q4_0, quantize_q8_0};
use crate::kernels::projection::blocks::BLOCK;
use crate::kernels::projection::{BlockFormat, BlockOperand, dequantize_blocks};

/// A frozen `W` `[d_out, d_in]` (PyTorch's orientation) in blocks along `d_in`.
#[derive(Module, Debug)]
pub struct BlockWeight {
    /// `[d_out, d_in / 32 · words per block]` u32: the blocks' quantized values.
    pub words: Param<Tensor<2, Int>>,
    /// `[d_out, d_in / 32]` f32: the blocks' scales.
    pub scales: Param<Tensor<2>>,
    #[module(skip)]
    pub format: BlockFormat,
}

impl BlockWeight {
    /// The weight from its ggml blocks (`d_out` rows of `d_in / 32` blocks, as a GGUF stores them).
    pub fn from_ggml(
        bytes: &[u8],
        format: BlockFormat,
        [d_out, d_in]: [usize; 2],
        device: &Device,
    ) -> Self {
        let blocks = d_in / BLOCK;
        debug_assert_eq!(bytes.len(), d_out * blocks * format.ggml_block_bytes());
        let (words, scales) = format.split_ggml(bytes);
        let per_row = blocks * format.words_per_block();
        Self {
            words: Param::initialized(
                ParamId::new(),
                Tensor::from_data(
                    TensorData::new(words, [d_out, per_row]),
                    (device, DType::U32),
                ),
            ),
            scales: Param::from_tensor(Tensor::from_data(
                TensorData::new(scales, [d_out, blocks]),
                (device, DType::F32),
            ))
            .set_require_grad(false),
            format,
        }
    }

    /// The ggml blocks of `values` (`W` `[d_out, d_in]`, row-major), quantized as llama.cpp does
    /// (blocks are independent, so runs of them are quantized in parallel).
    pub fn quantize_ggml(values: &[f32], format: BlockFormat) -> Vec<u8> {
        let quantize = match format {
            BlockFormat::Q8_0 => quantize_q8_0,
            BlockFormat::Q4_0 => quantize_q4_0,
        };
        let parts: Vec<Vec<u8>> = values.par_chunks(BLOCK * 1024).map(quantize).collect();
        parts.concat()
    }

    /// What the projection ops take.
    pub fn operand(&self) -> BlockOperand {
        BlockOperand {
            words: self.words.val(),
            scales: self.scales.val(),
            format: self.format,
        }
    }

    /// `[d_in, d_out]`, the orientation of a dense projection's weight.
    pub fn dims(&self) -> [usize; 2] {
        let [d_out, blocks] = self.scales.val().dims();
        [blocks * BLOCK, d_out]
    }

    /// `W` `[d_out, d_in]` in f32.
    pub fn dequantize(&self) -> Tensor<2> {
        dequantize_blocks(&self.operand())
    }

    /// Bytes held on the device (values and scales).
    pub fn stored_bytes(&self) -> usize {
        let words = self.words.val().shape().num_elements() * 4;
        words + self.scales.val().shape().num_elements() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::types::GgmlType;

    /// Quantizing a weight and reading it back gives exactly ggml's dequantization of the same
    /// blocks, and what it costs per value.
    #[test]
    fn quantized_weights_read_back_as_ggml_dequantizes_them() {
        let device = Device::flex();
        let [d_out, d_in] = [3, 64];
        let values: Vec<f32> = (0..d_out * d_in).map(|i| (i as f32 * 0.37).cos()).collect();
        for (format, ggml, bytes_per_value) in [
            (BlockFormat::Q8_0, GgmlType::Q8_0, 1.125),
            (BlockFormat::Q4_0, GgmlType::Q4_0, 0.625),
        ] {
            let bytes = BlockWeight::quantize_ggml(&values, format);
            let weight = BlockWeight::from_ggml(&bytes, format, [d_out, d_in], &device);
            assert_eq!(weight.dims(), [d_in, d_out]);
            let back = weight.dequantize().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(back, ggml.dequantize(&bytes));
            let per_value = weight.stored_bytes() as f64 / (d_out * d_in) as f64;
            assert_eq!(per_value, bytes_per_value);
        }
    }
}
