//! Packs tokenized pairs into one right-padded forward batch of `2B` rows: the `B` chosen
//! sequences, then the `B` rejected ones, with a mask over the completion labels.

use burn::prelude::*;

use crate::data::tokenize::TokenizedPair;

/// A padded batch ready for the model.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// `[2B, T]`: rows `0..B` chosen, `B..2B` rejected.
    pub tokens: Tensor<2, Int>,
    /// `[2B, T−1]`: 1 where label `t+1` is a completion token (predicted from position `t`).
    pub completion_mask: Tensor<2>,
    /// Completion lengths `[2B]` (as floats, for IPO and RPO).
    pub completion_len: Tensor<1>,
    /// Non-padding tokens in the batch.
    pub num_tokens: usize,
    /// Number of pairs `B`.
    pub pairs: usize,
    /// First label position any row needs (shortest prompt − 1): positions before it are prompt
    /// everywhere, so the LM head can skip them.
    pub first_label: usize,
}

/// Sequence lengths are rounded up to a multiple of this on GPUs, so that batches of slightly
/// different lengths share kernel shapes (and the autotuner's cached choices).
pub const GPU_LENGTH_BUCKET: usize = 64;

/// `len` rounded up to [`GPU_LENGTH_BUCKET`] on a GPU device; unchanged on the CPU, where extra
/// positions are only extra work.
pub fn bucketed_len(len: usize, device: &Device) -> usize {
    if crate::device::is_cube(device) {
        len.div_ceil(GPU_LENGTH_BUCKET) * GPU_LENGTH_BUCKET
    } else {
        len
    }
}

impl PairBatch {
    /// Splits a per-row tensor `[2B]` into (chosen `[B]`, rejected `[B]`). With [`make_batch`]
    /// and [`PairBatch::join_rows`] this is where the layout (the B chosen rows, then the B
    /// rejected rows) lives.
    pub fn split_rows(&self, rows: Tensor<1>) -> (Tensor<1>, Tensor<1>) {
        (
            rows.clone().narrow(0, 0, self.pairs),
            rows.narrow(0, self.pairs, self.pairs),
        )
    }

    /// A per-row tensor `[2B]` from per-pair `(chosen, rejected)` values.
    pub fn join_rows(values: &[(f64, f64)], device: &Device) -> Tensor<1> {
        let rows: Vec<f32> = values
            .iter()
            .map(|v| v.0 as f32)
            .chain(values.iter().map(|v| v.1 as f32))
            .collect();
        Tensor::from_data(TensorData::new(rows, [2 * values.len()]), device)
    }

    /// The batch on the device without autodiff (for the inference view of a model).
    pub fn without_autodiff(&self) -> Self {
        Self {
            tokens: self.tokens.clone().without_autodiff(),
            completion_mask: self.completion_mask.clone().without_autodiff(),
            completion_len: self.completion_len.clone().without_autodiff(),
            ..*self
        }
    }
}

/// Builds a batch padded to its longest row with `pad_id` (rounded up to a bucket on GPUs).
pub fn make_batch(pairs: &[&TokenizedPair], pad_id: u32, device: &Device) -> PairBatch {
    let b = pairs.len();
    // The chosen rows first, then the rejected ones (see `PairBatch::split_rows`).
    let seqs: Vec<(&[u32], &[u32])> = pairs
        .iter()
        .map(|p| (p.prompt.as_slice(), p.chosen.as_slice()))
        .chain(
            pairs
                .iter()
                .map(|p| (p.prompt.as_slice(), p.rejected.as_slice())),
        )
        .collect();
    let t = seqs
        .iter()
        .map(|(p, c)| p.len() + c.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let t = bucketed_len(t, device);
    let mut tokens = vec![i64::from(pad_id); 2 * b * t];
    let mut mask = vec![0.0f32; 2 * b * (t - 1)];
    let mut lens = Vec::with_capacity(2 * b);
    let mut num_tokens = 0;
    for (row, (prompt, completion)) in seqs.iter().enumerate() {
        for (i, &id) in prompt.iter().chain(completion.iter()).enumerate() {
            tokens[row * t + i] = i64::from(id);
        }
        // Label j is token j+1: completion tokens sit at [P, P+C), so j runs over [P−1, P+C−1)
        // (with no prompt, the first token has no prediction).
        for j in prompt.len().saturating_sub(1)..prompt.len() + completion.len() - 1 {
            mask[row * (t - 1) + j] = 1.0;
        }
        lens.push(completion.len() as f32);
        num_tokens += prompt.len() + completion.len();
    }
    PairBatch {
        tokens: Tensor::from_data(TensorData::new(tokens, [2 * b, t]), device),
        completion_mask: Tensor::from_data(TensorData::new(mask, [2 * b, t - 1]), device),
        completion_len: Tensor::from_data(TensorData::new(lens, [2 * b]), device),
        num_tokens,
        pairs: b,
        first_label: seqs
            .iter()
            .map(|(p, _)| p.len().saturating_sub(1))
            .min()
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_cover_exactly_the_completion_labels() {
        let pair = TokenizedPair {
            line: 1,
            prompt: vec![5, 6],
            chosen: vec![7, 8, 9],
            rejected: vec![10],
        };
        let batch = make_batch(&[&pair], 0, &Device::flex());
        let tokens: Vec<i64> = batch
            .tokens
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .unwrap();
        assert_eq!(tokens, vec![5, 6, 7, 8, 9, 5, 6, 10, 0, 0]);
        let mask: Vec<f32> = batch.completion_mask.into_data().try_into_vec().unwrap();
        // labels: chosen row predicts 6,7,8,9 → mask 0,1,1,1; rejected predicts 6,10,pad,pad.
        assert_eq!(mask, vec![0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        assert_eq!(batch.num_tokens, 8);
        assert_eq!(batch.first_label, 1);
    }
}
