//! RON configs: reading with errors that name the file, line and column, and pretty writing.

use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};

/// Reads a RON config file into `T`; errors name the file, line and column.
pub fn read_ron<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_ron(&text, &path.display().to_string())
}

/// Parses RON `text` (named `origin` in errors) into `T`.
pub fn parse_ron<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    ron::from_str(text).map_err(|e| {
        Error::Invalid(format!(
            "{origin}:{}:{}: {}",
            e.position.line, e.position.col, e.code
        ))
    })
}

/// Writes `value` as pretty RON.
pub fn to_ron<T: Serialize>(value: &T) -> String {
    ron::ser::to_string_pretty(value, ron::ser::PrettyConfig::default()).expect("config serialises")
}
