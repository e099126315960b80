//! The token embeddings `E` `[vocab, hidden]`: f32, bf16/f16 (decoding; bf16 products), or (with
//! `frozen_precision: q8 | q4`) in the same blocks as the projections, along `hidden`. A tied LM
//! head reads the same table, so in blocks it is the head of the fused log-prob op too
//! (`kernels::logprobs`), never widened whole.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::module::embedding;

use super::quantized::BlockWeight;
use crate::kernels::projection::{BlockOperand, dequantize_blocks};

/// The embedding table.
#[derive(Module, Debug)]
pub enum EmbeddingTable {
    /// `[vocab, hidden]` f32 (trained in full fine-tuning), or bf16/f16 for decoding and for
    /// bf16 products ([`Self::narrow`]).
    Dense(Param<Tensor<2>>),
    /// Frozen blocks of `[vocab, hidden]`.
    Blocks(BlockWeight),
}

impl EmbeddingTable {
    /// `[batch, seq, hidden]` rows of `tokens` `[batch, seq]`.
    pub fn lookup(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::Dense(table) => embedding(table.val(), tokens).cast(FloatDType::F32),
            Self::Blocks(table) => {
                let [batch, seq] = tokens.dims();
                let ids = tokens.reshape([batch * seq]);
                let rows = BlockOperand {
                    words: table.words.val().select(0, ids.clone()),
                    scales: table.scales.val().select(0, ids),
                    format: table.format,
                };
                let x = dequantize_blocks(&rows); // [batch·seq, hidden]
                let hidden = x.dims()[1];
                x.reshape([batch, seq, hidden])
            }
        }
    }

    /// Stores a frozen dense table in `dtype` (decoding: a tied head read in half precision is
    /// half the bytes of each step's largest product; bf16 products: the fused log-prob op
    /// multiplies it in bf16); blocks and trained tables stay as they are.
    pub fn narrow(&mut self, dtype: FloatDType) {
        if let Self::Dense(table) = self {
            super::linear::narrow_frozen(table, dtype);
        }
    }

    /// The table `[vocab, hidden]` in f32 (saving, merging).
    pub fn dense(&self) -> Tensor<2> {
        match self {
            Self::Dense(table) => table.val().cast(FloatDType::F32),
            Self::Blocks(table) => table.dequantize(),
        }
    }

    /// Bytes held on the device.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Self::Dense(table) => table.val().shape().num_elements() * table.val().dtype().size(),
            Self::Blocks(table) => table.stored_bytes(),
        }
    }
}

#[cfg(test)]
#[allow(deprecated)] // ndarray is deprecated upstream but stays selectable, so it is tested too
mod tests {
    use super::*;
    use crate::kernels::projection::BlockFormat;

    /// Rows looked up from blocks are the rows of the dequantized table, on every backend (the
    /// u32 words are gathered like any int tensor).
    fn check(device: &Device) {
        let [vocab, hidden] = [11, 64];
        let values: Vec<f32> = (0..vocab * hidden)
            .map(|i| (i as f32 * 0.61).sin())
            .collect();
        let bytes = BlockWeight::quantize_ggml(&values, BlockFormat::Q8_0);
        let weight = BlockWeight::from_ggml(&bytes, BlockFormat::Q8_0, [vocab, hidden], device);
        let table = EmbeddingTable::Blocks(weight);
        let tokens = Tensor::<2, Int>::from_ints([[3, 0, 10], [7, 7, 1]], device);
        let dense = embedding(table.dense(), tokens.clone());
        let got = table.lookup(tokens);
        assert_eq!(got.dims(), [2, 3, hidden]);
        assert_eq!(got.into_data(), dense.into_data());
    }

    crate::device::on_every_backend!(check => block_rows_match_dense_rows_on_flex, block_rows_match_dense_rows_on_ndarray, block_rows_match_dense_rows_on_wgpu);
}
