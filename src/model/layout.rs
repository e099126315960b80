//! Where the tokens of one forward pass sit: each token's position (what RoPE rotates by) and the
//! keys it may attend to, as the additive mask and the attention spans of `model::attention`.
//!
//! Two layouts:
//! - **contiguous**: every row is one sequence from position `past` on (after `past` cached
//!   positions), causal, optionally limited to a sliding window: training on padded rows,
//!   evaluation, decoding;
//! - **packed** ([`PackedRows`]): a row holds several *segments*, each restarting at position 0
//!   and blind to the others (block-diagonal attention, no compute on padding between them). A
//!   segment is one sequence, or a preference pair with its prompt computed once,
//!   `[prompt | chosen | rejected]`, where the rejected tokens sit at the positions that follow the
//!   prompt and see the prompt but not the chosen tokens (prefix sharing, arXiv 2410.20305). Every
//!   token then sees exactly the keys it would see in its own two-sequence row, at the same
//!   positions, so the log-probs are the same.
//!
//! The mask is `[mask_rows, seq, keys]` (1 row when every row shares it). Besides the mask, a pass
//! gets its query *spans*: runs of query positions with the range of keys any of them can see, so
//! the blocked attention never multiplies a query block by keys that are masked for all of its
//! rows (the causal upper triangle, other segments, positions outside a window).

use crate::kernels::attention::Span;

/// The additive mask value of a key a query may not see.
pub const MASKED: f32 = -1e30;

/// Which part of a segment a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// A plain sequence, or the prompt of a pair: seen by the whole segment after it.
    Shared,
    /// The pair's first completion (chosen).
    First,
    /// The pair's second completion (rejected): sees the prompt, not the first completion.
    Second,
}

/// One token's place in a packed row.
#[derive(Debug, Clone, Copy)]
struct Place {
    position: u32,
    segment: u32,
    branch: Branch,
}

/// Rows of `len` tokens holding segments at given offsets; every other token is padding (a
/// segment of its own that sees only itself, so it never touches real tokens).
#[derive(Debug, Clone)]
pub struct PackedRows {
    rows: usize,
    len: usize,
    /// `[rows · len]`
    places: Vec<Place>,
    next_segment: u32,
}

impl PackedRows {
    /// `rows` rows of `len` padding tokens.
    pub fn new(rows: usize, len: usize) -> Self {
        let places = (0..rows * len)
            .map(|i| Place {
                position: 0,
                segment: i as u32,
                branch: Branch::Shared,
            })
            .collect();
        Self {
            rows,
            len,
            places,
            next_segment: (rows * len) as u32,
        }
    }

    /// `[rows, len]`
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.len]
    }

    /// Places a segment at `row` from token `start`: `prefix` shared tokens (positions
    /// `0..prefix`), then `first` tokens and `second` tokens, each branch at positions
    /// `prefix..` (`second` = 0 for a plain sequence of `prefix + first` tokens).
    pub fn place(
        &mut self,
        row: usize,
        start: usize,
        prefix: usize,
        (first, second): (usize, usize),
    ) {
        assert!(
            start + prefix + first + second <= self.len,
            "segment past the row's end"
        );
        let segment = self.next_segment;
        self.next_segment += 1;
        let branches = [
            (Branch::Shared, 0, prefix),
            (Branch::First, prefix, first),
            (Branch::Second, prefix, second),
        ];
        let mut at = row * self.len + start;
        for (branch, from, count) in branches {
            for position in from..from + count {
                self.places[at] = Place {
                    position: position as u32,
                    segment,
                    branch,
                };
                at += 1;
            }
        }
    }

    /// Each token's position `[rows · len]`.
    pub fn positions(&self) -> Vec<u32> {
        self.places.iter().map(|p| p.position).collect()
    }

    /// Whether query `i` of `row` sees key `j`: same segment, not after it, not a rejected token
    /// looking at a chosen one, and within the window.
    fn visible(&self, row: usize, (i, j): (usize, usize), window: usize) -> bool {
        let (q, k) = (
            self.places[row * self.len + i],
            self.places[row * self.len + j],
        );
        j <= i
            && q.segment == k.segment
            && !(q.branch == Branch::Second && k.branch == Branch::First)
            && ((q.position - k.position) as usize) < window
    }

    /// The additive mask `[rows, len, len]` of layers with an optional sliding `window`, and its
    /// query spans of `span_len` positions.
    pub fn mask(&self, window: Option<usize>, span_len: usize) -> (Vec<f32>, Vec<Span>) {
        let window = window.unwrap_or(usize::MAX);
        let len = self.len;
        let mut mask = vec![MASKED; self.rows * len * len];
        // The first key any row's query i sees.
        let mut first_key = vec![usize::MAX; len];
        for row in 0..self.rows {
            for i in 0..len {
                let out = &mut mask[(row * len + i) * len..][..=i];
                for (j, value) in out.iter_mut().enumerate() {
                    if self.visible(row, (i, j), window) {
                        *value = 0.0;
                        first_key[i] = first_key[i].min(j);
                    }
                }
            }
        }
        (mask, spans(&first_key, 0, span_len))
    }
}

/// The additive causal mask `[1, seq, past + seq]` of `seq` new queries after `past` cached keys
/// (query `i`, at position `past + i`, sees key `j` when `j ≤ past + i` and, with a window,
/// `past + i − j < window`), and its query spans of `span_len` positions.
pub fn contiguous_mask(
    past: usize,
    seq: usize,
    window: Option<usize>,
    span_len: usize,
) -> (Vec<f32>, Vec<Span>) {
    let total = past + seq;
    let window = window.unwrap_or(usize::MAX);
    let first_key: Vec<usize> = (0..seq)
        .map(|i| (past + i + 1).saturating_sub(window))
        .collect();
    let mut mask = Vec::with_capacity(seq * total);
    for (i, &first) in first_key.iter().enumerate() {
        mask.extend((0..total).map(|j| {
            if (first..=past + i).contains(&j) {
                0.0
            } else {
                MASKED
            }
        }));
    }
    (mask, spans(&first_key, past, span_len))
}

/// Spans of `span_len` queries (the last may be shorter), each with the keys from the first any
/// of its queries sees to the last query's own position (`past + end`).
fn spans(first_key: &[usize], past: usize, span_len: usize) -> Vec<Span> {
    crate::kernels::chunk_ranges(first_key.len(), span_len)
        .map(|(start, end)| Span {
            queries: (start, end),
            keys: (
                first_key[start..end].iter().copied().min().unwrap_or(0),
                past + end,
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(queries: (usize, usize), keys: (usize, usize)) -> Span {
        Span { queries, keys }
    }

    fn visible_keys(mask: &[f32], keys: usize, query: usize) -> Vec<usize> {
        (0..keys)
            .filter(|&j| mask[query * keys + j] == 0.0)
            .collect()
    }

    #[test]
    fn a_shared_prompt_pair_sees_what_its_two_sequences_see() {
        // [p p p | c c | r r r] then one padding token.
        let mut rows = PackedRows::new(1, 9);
        rows.place(0, 0, 3, (2, 3));
        assert_eq!(rows.positions(), vec![0, 1, 2, 3, 4, 3, 4, 5, 0]);
        let (mask, spans) = rows.mask(None, 4);
        assert_eq!(visible_keys(&mask, 9, 2), vec![0, 1, 2]);
        assert_eq!(visible_keys(&mask, 9, 4), vec![0, 1, 2, 3, 4]);
        // The rejected tokens see the prompt and themselves, not the chosen tokens.
        assert_eq!(visible_keys(&mask, 9, 5), vec![0, 1, 2, 5]);
        assert_eq!(visible_keys(&mask, 9, 7), vec![0, 1, 2, 5, 6, 7]);
        // Padding sees only itself.
        assert_eq!(visible_keys(&mask, 9, 8), vec![8]);
        assert_eq!(
            spans,
            vec![
                span((0, 4), (0, 4)),
                span((4, 8), (0, 8)),
                span((8, 9), (8, 9)),
            ]
        );
    }

    #[test]
    fn packed_segments_are_blind_to_each_other_and_windows_count_positions() {
        // Two sequences [a a a][b b b b] in one row, window 2.
        let mut rows = PackedRows::new(1, 7);
        rows.place(0, 0, 3, (0, 0));
        rows.place(0, 3, 4, (0, 0));
        let (mask, spans) = rows.mask(Some(2), 3);
        assert_eq!(visible_keys(&mask, 7, 3), vec![3]);
        assert_eq!(visible_keys(&mask, 7, 6), vec![5, 6]);
        assert_eq!(spans[1], span((3, 6), (3, 6)));
        // A window over a shared prompt counts positions, not indices: each rejected token sees
        // the last two positions of its own sequence `[p p p | r r]`.
        let mut pair = PackedRows::new(1, 7);
        pair.place(0, 0, 3, (2, 2));
        let (mask, _) = pair.mask(Some(2), 8);
        // Rejected tokens at indices 5 (position 3) and 6 (position 4).
        assert_eq!(visible_keys(&mask, 7, 5), vec![2, 5]);
        assert_eq!(visible_keys(&mask, 7, 6), vec![5, 6]);
    }

    #[test]
    fn contiguous_masks_after_cached_keys() {
        let (mask, spans) = contiguous_mask(2, 3, Some(3), 2);
        assert_eq!(visible_keys(&mask, 5, 0), vec![0, 1, 2]);
        assert_eq!(visible_keys(&mask, 5, 2), vec![2, 3, 4]);
        assert_eq!(spans, vec![span((0, 2), (0, 4)), span((2, 3), (2, 5)),]);
    }
}
