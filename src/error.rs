//! The crate's error type: every failure a user can cause names the file (and field or tensor)
//! it came from, so the CLI can print one clear line instead of a backtrace.

use std::path::{Path, PathBuf};

/// Errors from loading models, tokenizers and running them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Config {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("chat template: {0}")]
    Template(String),
    #[error("device: {0}")]
    Device(String),
    #[error("Hub repo `{repo}`: {message}")]
    Hub { repo: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
}

/// Crate-wide result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: &Path, err: serde_json::Error) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            message: err.to_string(),
        }
    }

    pub(crate) fn weights(path: &Path, message: impl Into<String>) -> Self {
        Self::Weights {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    pub(crate) fn hub(repo: &str, message: impl Into<String>) -> Self {
        Self::Hub {
            repo: repo.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn tokenizer(path: &Path, message: impl Into<String>) -> Self {
        Self::Tokenizer {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
