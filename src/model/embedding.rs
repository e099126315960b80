//! The token embeddings `E` `[vocab, hidden]`: f32, or (with `frozen_precision: q8 | q4`) in the
//! same blocks as the projections, along `hidden`. A tied LM head reads the same table, so in
//! blocks it is the head of the fused log-prob op too (`kernels::logprobs`), never widened whole.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::embedding;

use super::quantized::BlockWeight;
use crate::kernels::projection::{BlockOperand, dequantize_blocks};

/// The embedding table.
#[derive(Module, Debug)]
pub enum EmbeddingTable {
    /// `[vocab, hidden]` f32 (trained in full fine-tuning).
    Dense(Param<Tensor<2>>),
    /// Frozen blocks of `[vocab, hidden]`.
    Blocks(BlockWeight),
}

impl EmbeddingTable {
    /// `[batch, seq, hidden]` rows of `tokens` `[batch, seq]`.
    pub fn lookup(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        match self {
            Self::Dense(table) => embedding(table.val(), tokens),
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

    /// The table `[vocab, hidden]` in f32 (saving, merging).
    pub fn dense(&self) -> Tensor<2> {
        match self {
            Self::Dense(table) => table.val(),
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
