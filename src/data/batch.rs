//! Lays a micro-batch of tokenized pairs out as rows for one forward pass, and lists the
//! completion labels to score: for each, the position that predicts it, the token, and which of
//! the `2B` sequences (the `B` chosen, then the `B` rejected) it belongs to.
//!
//! - Plain: `2B` right-padded rows `[prompt | chosen]`, `[prompt | rejected]`, each a sequence
//!   from position 0 (what TRL runs).
//! - `share_prompt`: one segment per pair, `[prompt | chosen | rejected]`, the prompt computed
//!   once; the rejected tokens restart at the position after the prompt and do not see the
//!   chosen ones (`model::layout`). Both completions' first tokens are predicted by the prompt's
//!   last position.
//! - `max_tokens_per_batch` > 0: the segments (pairs, or single sequences) are packed into rows
//!   of at most that many tokens (a longer segment sets the row length), choosing the row length
//!   that pads the fewest positions, so little compute goes to padding.

use std::sync::Arc;

use burn::prelude::*;

use crate::data::tokenize::TokenizedPair;
use crate::model::layout::PackedRows;

/// How a micro-batch's pairs are laid out in rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairLayout {
    /// Each pair as one segment `[prompt | chosen | rejected]`, its prompt computed once.
    pub share_prompt: bool,
    /// Pack segments into rows of at most this many tokens (0: one segment per row, padded).
    pub max_tokens_per_batch: usize,
}

/// A micro-batch ready for the model.
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// `[rows, T]`
    pub tokens: Tensor<2, Int>,
    /// The rows' layout when they are not one sequence each from position 0.
    pub packed: Option<Arc<PackedRows>>,
    /// `[N]`: for each completion label, the flat index (`row · T + position`) of the position
    /// that predicts it.
    pub label_positions: Tensor<1, Int>,
    /// `[N]`: the label tokens.
    pub labels: Tensor<1, Int>,
    /// `[N]`: the sequence each label belongs to (`0..B` chosen, `B..2B` rejected).
    pub label_owners: Tensor<1, Int>,
    /// Completion lengths `[2B]` (as floats, for IPO and RPO).
    pub completion_len: Tensor<1>,
    /// The pairs' tokens counted as two sequences each, whatever the layout (TRL's count).
    pub num_tokens: usize,
    /// Number of pairs `B`.
    pub pairs: usize,
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
    /// Splits a per-sequence tensor `[2B]` into (chosen `[B]`, rejected `[B]`). With
    /// [`PairBatch::join_rows`] and the label owners this is where the order of the sequences
    /// (the B chosen, then the B rejected) lives.
    pub fn split_rows(&self, rows: Tensor<1>) -> (Tensor<1>, Tensor<1>) {
        (
            rows.clone().narrow(0, 0, self.pairs),
            rows.narrow(0, self.pairs, self.pairs),
        )
    }

    /// A per-sequence tensor `[2B]` from per-pair `(chosen, rejected)` values.
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
            packed: self.packed.clone(),
            label_positions: self.label_positions.clone().without_autodiff(),
            labels: self.labels.clone().without_autodiff(),
            label_owners: self.label_owners.clone().without_autodiff(),
            completion_len: self.completion_len.clone().without_autodiff(),
            ..*self
        }
    }
}

/// One segment of a row: `prefix` tokens, then one or two branches, each with the sequence
/// (`0..2B`) its labels belong to.
struct Segment<'a> {
    prefix: &'a [u32],
    branches: Vec<(&'a [u32], usize)>,
}

impl Segment<'_> {
    fn len(&self) -> usize {
        self.prefix.len() + self.branches.iter().map(|b| b.0.len()).sum::<usize>()
    }
}

/// The segments of `pairs`: one per pair with a shared prompt, else the chosen sequences then the
/// rejected ones.
fn segments<'a>(pairs: &[&'a TokenizedPair], share_prompt: bool) -> Vec<Segment<'a>> {
    let b = pairs.len();
    if share_prompt {
        return pairs
            .iter()
            .enumerate()
            .map(|(i, p)| Segment {
                prefix: &p.prompt,
                branches: vec![(&p.chosen, i), (&p.rejected, b + i)],
            })
            .collect();
    }
    let single = |(i, p): (usize, &&'a TokenizedPair), completion: &'a [u32]| Segment {
        prefix: &p.prompt,
        branches: vec![(completion, i)],
    };
    let chosen = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| single((i, p), &p.chosen));
    let rejected = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| single((b + i, p), &p.rejected));
    chosen.chain(rejected).collect()
}

/// `(row, start)` of each segment: one row each, or packed into rows of at most `budget` tokens
/// (a longer segment sets the row length). Rows are padded to the fullest, so of the row lengths
/// from the longest segment up to the budget (one per row count the tokens could fill), the
/// packing takes the one whose first fit by decreasing length pads the fewest positions, the
/// shorter on a tie (attention grows with the square of a row).
fn assign_rows(lens: &[usize], budget: usize) -> Vec<(usize, usize)> {
    if budget == 0 {
        return (0..lens.len()).map(|i| (i, 0)).collect();
    }
    let longest = lens.iter().copied().max().unwrap_or(0);
    let total: usize = lens.iter().sum();
    let widest = budget.max(longest);
    (1..=lens.len().max(1))
        .map(|rows| first_fit(lens, total.div_ceil(rows).clamp(longest, widest)))
        .min_by_key(|packing| (packing.rows * packing.fullest, packing.fullest))
        .map(|packing| packing.at)
        .unwrap_or_default()
}

/// A packing: each segment's `(row, start)`, the rows it opened and the fullest row's fill.
struct Packing {
    at: Vec<(usize, usize)>,
    rows: usize,
    fullest: usize,
}

/// First fit by decreasing length into rows of `capacity` tokens.
fn first_fit(lens: &[usize], capacity: usize) -> Packing {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut fill: Vec<usize> = Vec::new();
    let mut at = vec![(0, 0); lens.len()];
    for i in order {
        let row = match fill.iter().position(|&f| f + lens[i] <= capacity) {
            Some(row) => row,
            None => {
                fill.push(0);
                fill.len() - 1
            }
        };
        at[i] = (row, fill[row]);
        fill[row] += lens[i];
    }
    Packing {
        at,
        rows: fill.len(),
        fullest: fill.into_iter().max().unwrap_or(0),
    }
}

/// Lays `pairs` out as `layout` says, padding with `pad_id` (row lengths rounded up to a bucket
/// on GPUs).
pub fn make_batch(
    pairs: &[&TokenizedPair],
    pad_id: u32,
    layout: PairLayout,
    device: &Device,
) -> PairBatch {
    let segments = segments(pairs, layout.share_prompt);
    let lens: Vec<usize> = segments.iter().map(Segment::len).collect();
    let at = assign_rows(&lens, layout.max_tokens_per_batch);
    let rows = at.iter().map(|a| a.0 + 1).max().unwrap_or(1);
    let mut fill = vec![0; rows];
    for (&(row, start), len) in at.iter().zip(&lens) {
        fill[row] = fill[row].max(start + len);
    }
    let t = bucketed_len(fill.iter().copied().max().unwrap_or(2).max(2), device);

    let plain = !layout.share_prompt && layout.max_tokens_per_batch == 0;
    let mut packed = (!plain).then(|| PackedRows::new(rows, t));
    let mut tokens = vec![i64::from(pad_id); rows * t];
    let (mut label_positions, mut labels, mut owners) = (Vec::new(), Vec::new(), Vec::new());
    for (segment, &(row, start)) in segments.iter().zip(&at) {
        let base = row * t + start;
        let prefix = segment.prefix.len();
        for (i, &id) in segment.prefix.iter().enumerate() {
            tokens[base + i] = i64::from(id);
        }
        let mut offset = prefix;
        for &(branch, owner) in &segment.branches {
            for (k, &id) in branch.iter().enumerate() {
                tokens[base + offset + k] = i64::from(id);
                // The first completion token is predicted by the prompt's last position (with no
                // prompt it has no prediction); the others by the token before them.
                let predictor = match k {
                    0 if prefix == 0 => continue,
                    0 => prefix - 1,
                    _ => offset + k - 1,
                };
                label_positions.push((base + predictor) as i64);
                labels.push(i64::from(id));
                owners.push(owner as i64);
            }
            offset += branch.len();
        }
        if let Some(packed) = packed.as_mut() {
            let branch_len = |i: usize| segment.branches.get(i).map_or(0, |b| b.0.len());
            packed.place(row, start, prefix, (branch_len(0), branch_len(1)));
        }
    }
    let n = labels.len();
    let lens: Vec<f32> = pairs
        .iter()
        .map(|p| p.chosen.len() as f32)
        .chain(pairs.iter().map(|p| p.rejected.len() as f32))
        .collect();
    let int = |values: Vec<i64>| Tensor::from_data(TensorData::new(values, [n]), device);
    PairBatch {
        tokens: Tensor::from_data(TensorData::new(tokens, [rows, t]), device),
        packed: packed.map(Arc::new),
        label_positions: int(label_positions),
        labels: int(labels),
        label_owners: int(owners),
        completion_len: Tensor::from_data(TensorData::new(lens, [2 * pairs.len()]), device),
        num_tokens: pairs.iter().map(|p| p.num_tokens()).sum(),
        pairs: pairs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(t: Tensor<1, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_into_vec().unwrap()
    }

    fn pair(prompt: Vec<u32>, chosen: Vec<u32>, rejected: Vec<u32>) -> TokenizedPair {
        TokenizedPair {
            line: 1,
            prompt,
            chosen,
            rejected,
        }
    }

    #[test]
    fn labels_are_exactly_the_completion_tokens_in_every_layout() {
        let a = pair(vec![5, 6], vec![7, 8, 9], vec![10]);
        let b = pair(vec![1], vec![2], vec![3, 4]);
        let device = Device::flex();
        let plain = make_batch(&[&a, &b], 0, PairLayout::default(), &device);
        assert!(plain.packed.is_none());
        let tokens = ints(plain.tokens.clone().reshape([-1]));
        // Rows: a chosen, b chosen, a rejected, b rejected (T = 5).
        assert_eq!(
            tokens,
            [
                [5, 6, 7, 8, 9],
                [1, 2, 0, 0, 0],
                [5, 6, 10, 0, 0],
                [1, 3, 4, 0, 0]
            ]
            .concat()
        );
        // Each label with the position that predicts it and its sequence.
        assert_eq!(ints(plain.labels.clone()), vec![7, 8, 9, 2, 10, 3, 4]);
        assert_eq!(
            ints(plain.label_positions.clone()),
            vec![1, 2, 3, 5, 11, 15, 16]
        );
        assert_eq!(ints(plain.label_owners.clone()), vec![0, 0, 0, 1, 2, 3, 3]);
        assert_eq!(plain.num_tokens, 8 + 5);

        let shared = PairLayout {
            share_prompt: true,
            max_tokens_per_batch: 0,
        };
        let batch = make_batch(&[&a, &b], 0, shared, &device);
        assert_eq!(
            ints(batch.tokens.clone().reshape([-1])),
            [[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 0, 0]].concat()
        );
        assert_eq!(ints(batch.labels.clone()), vec![7, 8, 9, 10, 2, 3, 4]);
        // Both first completion tokens are predicted by the prompt's last position.
        assert_eq!(
            ints(batch.label_positions.clone()),
            vec![1, 2, 3, 1, 6, 6, 8]
        );
        assert_eq!(ints(batch.label_owners.clone()), vec![0, 0, 0, 2, 1, 3, 3]);
        assert_eq!(batch.num_tokens, plain.num_tokens);

        // Packed: the 6- and 4-token segments share a row of 10.
        let packed = PairLayout {
            share_prompt: true,
            max_tokens_per_batch: 10,
        };
        let batch = make_batch(&[&a, &b], 0, packed, &device);
        assert_eq!(
            ints(batch.tokens.clone().reshape([-1])),
            vec![5, 6, 7, 8, 9, 10, 1, 2, 3, 4]
        );
        assert_eq!(ints(batch.label_positions), vec![1, 2, 3, 1, 6, 6, 8]);
        assert_eq!(
            batch.packed.unwrap().positions(),
            vec![0, 1, 2, 3, 4, 2, 0, 1, 1, 2]
        );
    }

    #[test]
    fn packing_pads_the_fewest_positions() {
        // The 12-token segment sets the row length: three rows of 12 (12 | 7 4 | 6 3).
        let at = assign_rows(&[3, 7, 6, 12, 4], 10);
        assert_eq!(at, vec![(2, 6), (1, 0), (2, 0), (0, 0), (1, 7)]);
        // 12 tokens: 10 + 2 would pad to 20 positions; 6 + 6 and 4 + 4 + 4 pad none, and the
        // shorter rows win.
        let at = assign_rows(&[4, 4, 2, 2], 10);
        assert_eq!(at, vec![(0, 0), (1, 0), (2, 0), (2, 2)]);
        assert_eq!(assign_rows(&[3, 7], 0), vec![(0, 0), (1, 0)]);
    }
}
