//! Preference data: reading and validating files, TRL-exact tokenization, batching.

pub mod batch;
pub mod load;
pub mod tokenize;

pub use batch::{PairBatch, make_batch};
pub use load::{LoadedRows, PreferenceRow, Text, load_preferences};
pub use tokenize::{TokenizedPair, tokenize_rows};
