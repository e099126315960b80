//! Preference data: reading and validating files, TRL-exact tokenization, batching.

pub mod batch;
pub mod load;
pub mod parquet;
pub mod tokenize;

pub use batch::{PairBatch, PairLayout, bucketed_len, make_batch};
pub use load::{LoadedRows, PreferenceRow, Text, load_preferences};
pub use tokenize::{TokenizedPair, tokenize_rows};

use std::path::Path;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Reads, validates and tokenizes a preference file, reporting skipped rows on stderr.
pub fn read_pairs(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<Vec<TokenizedPair>> {
    let loaded = load_preferences(path)?;
    if !loaded.identical.is_empty() {
        eprintln!(
            "warning: {}: skipped {} row(s) whose chosen equals rejected (lines {:?})",
            path.display(),
            loaded.identical.len(),
            loaded.identical
        );
    }
    let (pairs, dropped) = tokenize_rows(&loaded.rows, tokenizer, max_length)?;
    if !dropped.is_empty() {
        eprintln!(
            "warning: {}: dropped {} row(s) whose prompt alone fills max_length = {max_length} (lines {dropped:?})",
            path.display(),
            dropped.len()
        );
    }
    if pairs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no rows left after tokenization",
            path.display()
        )));
    }
    Ok(pairs)
}
