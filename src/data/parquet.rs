//! Rows of a Parquet file (the Hub's dataset format) as JSON values, so Parquet goes through the
//! same row validation as JSON Lines. Nested columns map as `datasets` writes them: a list of
//! structs (TRL's conversational `messages`, `chosen`, …) becomes a list of objects.
//! Codecs: uncompressed, snappy (the Hub's default), gzip and lz4; others are a clear error.

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};

use super::load::JsonRows;
use crate::error::{Error, Result};

/// Every row of `path`, numbered from 1.
pub fn read_parquet_rows(path: &Path) -> Result<JsonRows> {
    let bad = |e: parquet::errors::ParquetError| {
        Error::Invalid(format!(
            "{}: not a readable Parquet file: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(bad)?;
    let expected = reader.metadata().file_metadata().num_rows().max(0) as usize;
    let mut rows = Vec::with_capacity(expected);
    for (i, row) in reader.into_iter().enumerate() {
        let row = row.map_err(|e| {
            Error::Invalid(format!(
                "{}: row {}: cannot decode: {e}",
                path.display(),
                i + 1
            ))
        })?;
        rows.push((i + 1, Ok(row.to_json_value())));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load_preferences;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dpo")
            .join(name)
    }

    /// The Parquet files `datasets` wrote from the JSONL fixtures (snappy; conversational columns
    /// as lists of structs) read as the very same rows.
    #[test]
    fn parquet_rows_equal_their_jsonl_source() {
        for name in ["standard", "conversational"] {
            let parquet = load_preferences(&fixture(&format!("{name}.parquet"))).unwrap();
            let jsonl = load_preferences(&fixture(&format!("{name}.jsonl"))).unwrap();
            assert!(!parquet.rows.is_empty());
            assert_eq!(parquet.rows, jsonl.rows, "{name}");
        }
    }

    #[test]
    fn a_file_that_is_not_parquet_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("prefs.parquet");
        std::fs::write(&path, b"PAR1 not really").unwrap();
        let err = read_parquet_rows(&path).unwrap_err().to_string();
        assert!(
            err.contains("prefs.parquet") && err.contains("not a readable Parquet file"),
            "{err}"
        );
    }
}
