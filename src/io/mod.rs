//! What every stage reads and writes: atomic file and directory writes, RON and JSON files, content
//! hashes, the crate's seeded random numbers, and the process's allocator.

pub mod atomic;
pub mod hash;
pub mod large_blocks;
pub mod rng;
pub mod ron_file;

pub use atomic::{write_dir, write_file};
pub use large_blocks::ProcessAllocator;
pub use rng::Rng;
pub use ron_file::{parse_ron, read_ron, to_ron};

use std::path::Path;

use crate::error::{Error, Result};

/// Reads the JSON file `path` into `T` (a `serde_json::Value` for untyped access); errors name the
/// file, and the line and column of a syntax error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}
