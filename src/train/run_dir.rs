//! A run's output directory: the resolved `config.ron` and `metrics.jsonl`, one JSON line per
//! logged step. A resumed run keeps the lines of the steps its checkpoint covers and appends after
//! them.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::write_file;

/// The open `metrics.jsonl` of a run.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

/// Creates `output`, writes `config.ron` and opens `metrics.jsonl` for a run whose first step is
/// `start_step + 1` (lines after `start_step` are dropped; a fresh run starts an empty file).
pub fn prepare(output: &Path, config_ron: &str, start_step: usize) -> Result<MetricsLog> {
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    write_file(&output.join("config.ron"), config_ron)?;
    let path = output.join("metrics.jsonl");
    let kept: String = if start_step > 0 {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                    .is_some_and(|s| s as usize <= start_step)
            })
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        String::new()
    };
    write_file(&path, kept)?;
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    Ok(MetricsLog { path, file })
}

impl MetricsLog {
    /// Appends one line.
    pub fn append(&mut self, line: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        writeln!(self.file, "{}", serde_json::Value::Object(line.clone()))
            .map_err(|e| Error::io(&self.path, e))
    }
}
