//! The evaluation split of a run: a separate file's examples, or a seeded fraction held out of
//! the training data.

use std::path::Path;

use crate::error::{Error, Result};
use crate::train::plan::epoch_order;

/// Splits off `fraction` of `items` (at least one, never all; needs two or more items), chosen by
/// a seeded shuffle.
pub fn hold_out<T>(items: Vec<T>, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let order = epoch_order(items.len(), seed, usize::MAX);
    let held = ((items.len() as f64 * fraction).round() as usize).clamp(1, items.len() - 1);
    let held: std::collections::HashSet<usize> = order[..held].iter().copied().collect();
    let (eval, train): (Vec<_>, Vec<_>) = items
        .into_iter()
        .enumerate()
        .partition(|(i, _)| held.contains(i));
    (
        train.into_iter().map(|(_, p)| p).collect(),
        eval.into_iter().map(|(_, p)| p).collect(),
    )
}

/// The training and evaluation sets of a run: a separate eval file's items when given, else
/// `eval_split` of `items` held out (an error naming the field when `data` has fewer than two
/// `what`s), else no evaluation.
pub fn split_for_eval<T>(
    items: Vec<T>,
    eval_items: Option<Vec<T>>,
    eval_split: f64,
    seed: u64,
    data: &Path,
    what: &str,
) -> Result<(Vec<T>, Vec<T>)> {
    match eval_items {
        Some(eval) => Ok((items, eval)),
        None if eval_split > 0.0 => {
            if items.len() < 2 {
                return Err(Error::Invalid(format!(
                    "config field `eval_split`: {} has {} usable {what}(s); a split needs at least 2",
                    data.display(),
                    items.len()
                )));
            }
            Ok(hold_out(items, eval_split, seed))
        }
        None => Ok((items, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_out_splits_by_fraction_and_keeps_every_pair() {
        let pairs: Vec<crate::data::TokenizedPair> = (0..10)
            .map(|i| crate::data::TokenizedPair {
                line: i + 1,
                prompt: vec![1],
                chosen: vec![2],
                rejected: vec![3],
            })
            .collect();
        let (train, eval) = hold_out(pairs, 0.2, 3);
        assert_eq!((train.len(), eval.len()), (8, 2));
        let mut lines: Vec<usize> = train.iter().chain(&eval).map(|p| p.line).collect();
        lines.sort();
        assert_eq!(lines, (1..=10).collect::<Vec<_>>());
    }
}
