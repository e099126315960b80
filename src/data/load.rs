//! Reads preference files — JSON Lines (`.jsonl`, `.jsonl.gz`), a JSON array (`.json`), Parquet
//! (`.parquet`), or a Hub dataset split (`ORG/NAME[:SPLIT]`) — and validates every row, reporting
//! each problem as `FILE:LINE: what is wrong` (the row number for Parquet and Hub splits).
//!
//! Row formats: **standard** (`prompt`, `chosen`, `rejected` strings), **conversational** (the
//! same keys holding lists of `{role, content}` messages), or either with no `prompt` (the implicit
//! prompt is the longest common prefix, as TRL's `extract_prompt`).

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Message;

/// A completion or prompt: plain text or chat messages.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    Plain(String),
    Chat(Vec<Message>),
}

/// One validated preference row.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRow {
    /// 1-based line (JSONL) or element index + 1 (JSON array).
    pub line: usize,
    pub prompt: Text,
    pub chosen: Text,
    pub rejected: Text,
}

/// Rows read from a file, with the lines that were skipped.
#[derive(Debug, Clone, Default)]
pub struct LoadedRows {
    pub rows: Vec<PreferenceRow>,
    /// Lines whose chosen and rejected were identical.
    pub identical: Vec<usize>,
}

/// A file's rows as JSON values with their line (JSONL) or 1-based index (JSON array); a row that
/// is not valid JSON carries its error message.
pub type JsonRows = Vec<(usize, std::result::Result<Value, String>)>;

/// Reads `.jsonl`, `.jsonl.gz`, `.json` (an array) or `.parquet` into rows; a path that does not
/// exist but reads as a Hub dataset id (`ORG/NAME[:SPLIT]`) is that split's files, downloaded into
/// the Hub cache, their rows numbered on across files.
pub fn read_json_rows(path: &Path) -> Result<JsonRows> {
    if !path.exists()
        && let Some(id) = path.to_str().and_then(crate::hub::DatasetId::parse)
    {
        let mut rows = JsonRows::new();
        for file in crate::hub::fetch_dataset(&id, &crate::hub::HubSettings::from_env())? {
            let offset = rows.len();
            let more = read_file_rows(&file)?;
            rows.extend(more.into_iter().map(|(n, v)| (n + offset, v)));
        }
        return Ok(rows);
    }
    read_file_rows(path)
}

/// The rows of one local file.
fn read_file_rows(path: &Path) -> Result<JsonRows> {
    let name = path.to_string_lossy().to_string();
    if name.ends_with(".parquet") {
        return super::parquet::read_parquet_rows(path);
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = if name.ends_with(".gz") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut out)
            .map_err(|e| Error::Invalid(format!("{name}: not valid gzip text: {e}")))?;
        out
    } else {
        String::from_utf8(bytes)
            .map_err(|e| Error::Invalid(format!("{name}: not UTF-8 text (binary file?): {e}")))?
    };
    let is_array =
        name.trim_end_matches(".gz").ends_with(".json") || text.trim_start().starts_with('[');
    if is_array {
        return match serde_json::from_str::<Value>(&text) {
            Ok(Value::Array(items)) => Ok(items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i + 1, Ok(v)))
                .collect()),
            Ok(_) => Err(Error::Invalid(format!(
                "{name}: expected a JSON array of rows"
            ))),
            Err(e) => Err(Error::Invalid(format!(
                "{name}:{}: bad JSON: {e}",
                e.line()
            ))),
        };
    }
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                i + 1,
                serde_json::from_str::<Value>(l).map_err(|e| format!("bad JSON: {e}")),
            )
        })
        .collect())
}

/// Joins per-row errors (the first 20, then a count) into one error.
pub fn row_errors(errors: &[String]) -> Error {
    let shown = errors.len().min(20);
    let mut text = errors[..shown].join("\n");
    if errors.len() > shown {
        text.push_str(&format!("\n… and {} more bad rows", errors.len() - shown));
    }
    Error::Invalid(text)
}

/// Reads and validates `path`. Any bad row fails the whole file, listing every bad row.
pub fn load_preferences(path: &Path) -> Result<LoadedRows> {
    let name = path.to_string_lossy().to_string();
    let items = read_json_rows(path)?;
    let mut loaded = LoadedRows::default();
    let mut errors = Vec::new();
    for (line, item) in items {
        match item.and_then(|v| parse_row(line, &v)) {
            Ok(row) if row.chosen == row.rejected => loaded.identical.push(line),
            Ok(row) => loaded.rows.push(row),
            Err(message) => errors.push(format!("{name}:{line}: {message}")),
        }
    }
    if !errors.is_empty() {
        return Err(row_errors(&errors));
    }
    if loaded.rows.is_empty() {
        return Err(Error::Invalid(format!(
            "{name}: no usable rows (the file is empty{})",
            if loaded.identical.is_empty() {
                ""
            } else {
                ", or every row's chosen equals its rejected"
            }
        )));
    }
    Ok(loaded)
}

pub(crate) fn parse_text(v: &Value, field: &str) -> std::result::Result<Text, String> {
    match v {
        Value::String(s) => Ok(Text::Plain(s.clone())),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = m.get("role").and_then(Value::as_str);
                let content = m.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(role), Some(content)) => Ok(Message::new(role, content)),
                    _ => Err(format!(
                        "field `{field}`: message {i} needs string `role` and `content`"
                    )),
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Text::Chat),
        other => Err(format!(
            "field `{field}`: expected a string or a list of messages, found {}",
            kind(other)
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn is_empty(t: &Text) -> bool {
    match t {
        Text::Plain(s) => s.is_empty(),
        Text::Chat(m) => m.is_empty(),
    }
}

fn parse_row(line: usize, v: &Value) -> std::result::Result<PreferenceRow, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(v)))?;
    let get = |field: &str| -> std::result::Result<Text, String> {
        let value = obj
            .get(field)
            .ok_or_else(|| format!("missing field `{field}`"))?;
        parse_text(value, field)
    };
    let chosen = get("chosen")?;
    let rejected = get("rejected")?;
    let prompt = if obj.contains_key("prompt") {
        Some(get("prompt")?)
    } else {
        None
    };
    let same_kind = |a: &Text, b: &Text| {
        matches!(
            (a, b),
            (Text::Plain(_), Text::Plain(_)) | (Text::Chat(_), Text::Chat(_))
        )
    };
    if !same_kind(&chosen, &rejected) || prompt.as_ref().is_some_and(|p| !same_kind(p, &chosen)) {
        return Err(
            "`prompt`, `chosen` and `rejected` must all be strings or all be message lists".into(),
        );
    }
    let (prompt, chosen, rejected) = match prompt {
        Some(p) => (p, chosen, rejected),
        None => extract_prompt(chosen, rejected),
    };
    for (field, t) in [("chosen", &chosen), ("rejected", &rejected)] {
        if is_empty(t) {
            return Err(format!("field `{field}`: empty completion"));
        }
    }
    Ok(PreferenceRow {
        line,
        prompt,
        chosen,
        rejected,
    })
}

/// TRL's `extract_prompt`: the longest common prefix becomes the prompt (for text, a space just
/// before the first difference stays with the completions).
pub fn extract_prompt(chosen: Text, rejected: Text) -> (Text, Text, Text) {
    fn split_at<T: PartialEq + Clone>(a: &[T], b: &[T], is_space: impl Fn(&T) -> bool) -> usize {
        let n = a.len().min(b.len());
        let mut idx = n.saturating_sub(1);
        for i in 0..n {
            if a[i] != b[i] {
                idx = i;
                if i > 0 && is_space(&a[i - 1]) {
                    idx -= 1;
                }
                break;
            }
        }
        idx
    }
    match (chosen, rejected) {
        (Text::Plain(c), Text::Plain(r)) => {
            let (cc, rc): (Vec<char>, Vec<char>) = (c.chars().collect(), r.chars().collect());
            let idx = split_at(&cc, &rc, |ch| *ch == ' ');
            let s = |v: &[char]| v.iter().collect::<String>();
            (
                Text::Plain(s(&cc[..idx])),
                Text::Plain(s(&cc[idx..])),
                Text::Plain(s(&rc[idx..])),
            )
        }
        (Text::Chat(c), Text::Chat(r)) => {
            let idx = split_at(&c, &r, |_| false);
            (
                Text::Chat(c[..idx].to_vec()),
                Text::Chat(c[idx..].to_vec()),
                Text::Chat(r[idx..].to_vec()),
            )
        }
        (c, r) => (Text::Plain(String::new()), c, r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Text {
        Text::Plain(s.into())
    }

    #[test]
    fn implicit_prompt_matches_trl() {
        let (p, c, r) = extract_prompt(plain("The sky is blue."), plain("The sky is green."));
        assert_eq!(
            (p, c, r),
            (plain("The sky is"), plain(" blue."), plain(" green."))
        );
        let u = Message::new("user", "Hi");
        let (p, c, _) = extract_prompt(
            Text::Chat(vec![u.clone(), Message::new("assistant", "a")]),
            Text::Chat(vec![u.clone(), Message::new("assistant", "b")]),
        );
        assert_eq!(p, Text::Chat(vec![u]));
        assert_eq!(c, Text::Chat(vec![Message::new("assistant", "a")]));
    }

    #[test]
    fn bad_rows_are_reported_with_file_and_line() {
        let dir = std::env::temp_dir().join(format!("minordpo-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n\
             {\"prompt\": \"a\", \"chosen\": \"b\"}\n\
             {\"prompt\": \"a\", \"chosen\": 3, \"rejected\": \"c\"}\n\
             {\"prompt\": \"a\", \"chosen\": \"\", \"rejected\": \"c\"}\n\
             {\"prompt\": \"a\", \"chosen\": \"b\", \"rej\n",
        )
        .unwrap();
        let err = load_preferences(&path).unwrap_err().to_string();
        assert!(
            err.contains("bad.jsonl:2: missing field `rejected`"),
            "{err}"
        );
        assert!(err.contains("bad.jsonl:3: field `chosen`: expected a string or a list of messages, found a number"), "{err}");
        assert!(
            err.contains("bad.jsonl:4: field `chosen`: empty completion"),
            "{err}"
        );
        assert!(err.contains("bad.jsonl:5: bad JSON"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert!(
            load_preferences(&path)
                .unwrap_err()
                .to_string()
                .contains("no usable rows")
        );
        std::fs::write(&path, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"b\"}\n{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}").unwrap();
        let loaded = load_preferences(&path).unwrap();
        assert_eq!((loaded.rows.len(), loaded.identical.clone()), (1, vec![1]));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn json_arrays_and_gzip_read_like_jsonl() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("minordpo-formats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rows = r#"[{"prompt": "a", "chosen": "b", "rejected": "c"},
                       {"prompt": [{"role": "user", "content": "q"}],
                        "chosen": [{"role": "assistant", "content": "y"}],
                        "rejected": [{"role": "assistant", "content": "n"}]}]"#;
        let json = dir.join("rows.json");
        std::fs::write(&json, rows).unwrap();
        let loaded = load_preferences(&json).unwrap();
        assert_eq!(loaded.rows.len(), 2);
        assert_eq!(loaded.rows[1].line, 2);
        assert!(matches!(loaded.rows[1].prompt, Text::Chat(_)));

        let gz = dir.join("rows.jsonl.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(b"{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n")
            .unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(load_preferences(&gz).unwrap().rows[0].chosen, plain("b"));
        std::fs::write(&gz, b"not gzip").unwrap();
        assert!(
            load_preferences(&gz)
                .unwrap_err()
                .to_string()
                .contains("rows.jsonl.gz")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
