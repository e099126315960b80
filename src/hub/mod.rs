//! Models and datasets straight from the Hugging Face Hub: `ORG/NAME[@REVISION]` wherever a model
//! directory is accepted, `ORG/NAME[@REVISION][:SPLIT]` wherever a data file is. Only what is
//! needed is downloaded (a model's config, generation config, tokenizer files, chat template and
//! the safetensors weights the index names; a dataset split's Parquet or JSON Lines files), into
//! the cache Python's `huggingface_hub` uses, so what either downloaded is reused by the other.
//!
//! The environment is `huggingface_hub`'s: `HF_ENDPOINT`, `HF_TOKEN` (else the token file,
//! `HF_TOKEN_PATH` or `$HF_HOME/token`), `HF_HUB_OFFLINE=1` (the cache only), and the cache at
//! `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.

pub mod cache;
mod client;
pub mod dataset_card;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use cache::RepoCache;
use client::Client;

/// The two kinds of repo this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// `models` or `datasets`, as the API paths and cache folders spell them.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Model => "models",
            Self::Dataset => "datasets",
        }
    }
}

/// Where and how to reach the Hub, from the environment.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE`: use the cache only.
    pub offline: bool,
    /// The cache root (holding `models--ORG--NAME/`).
    pub cache: PathBuf,
}

/// `~`, from `HOME` (or `USERPROFILE` on Windows), as Python's `expanduser` finds it.
fn home() -> PathBuf {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .or_else(|| std::env::var_os("HOME"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether an environment flag is set the way `huggingface_hub` reads one (1, true, yes, on).
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

impl HubSettings {
    /// The settings `huggingface_hub` would use in this environment.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let hf_home = var("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache").join("huggingface"));
        let cache = var("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token_path = var("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("token"));
        let token = std::env::var("HF_TOKEN")
            .ok()
            .or_else(|| std::fs::read_to_string(&token_path).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "https://huggingface.co".into());
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            offline: env_flag("HF_HUB_OFFLINE"),
            cache,
        }
    }
}

/// A Hub repo and revision: `ORG/NAME[@REVISION]` (revision `main` when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    pub repo: String,
    pub revision: String,
}

impl RepoId {
    /// Parses `ORG/NAME[@REVISION]`; `None` for anything else (a path, a bare name).
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((repo, rev)) if !rev.is_empty() => (repo, rev),
            Some(_) => return None,
            None => (spec, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (part_ok(org) && part_ok(name)).then(|| Self {
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }
}

/// A Hub dataset split: `ORG/NAME[@REVISION][:SPLIT]` (split `train` when not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetId {
    pub repo: RepoId,
    pub split: String,
}

impl DatasetId {
    /// Parses `ORG/NAME[@REVISION][:SPLIT]`; `None` for anything else.
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, split) = match spec.rsplit_once(':') {
            Some((repo, split)) => (repo, split),
            None => (spec, "train"),
        };
        let split_ok = !split.is_empty()
            && split
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        // `data/prefs.jsonl` is a missing file, not a repo.
        let file_like = [".jsonl", ".json", ".gz", ".parquet"]
            .iter()
            .any(|ext| repo.ends_with(ext));
        Some(Self {
            repo: RepoId::parse(repo).filter(|_| split_ok && !file_like)?,
            split: split.to_string(),
        })
    }
}

/// Whether repo file `path` holds rows of `split`, by the Hub's file naming: a `SPLIT` folder, or
/// a file named `SPLIT` or `SPLIT-…` / `SPLIT_…` / `SPLIT.…` (`data/train-00000-of-00002.parquet`),
/// with a data extension.
fn is_split_file(path: &str, split: &str) -> bool {
    let data = [".parquet", ".jsonl", ".jsonl.gz", ".json"];
    if !data.iter().any(|ext| path.ends_with(ext)) {
        return false;
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let file = parts.pop().unwrap_or_default();
    let named = file
        .strip_prefix(split)
        .is_some_and(|rest| rest.starts_with(['-', '_', '.']));
    named || parts.contains(&split)
}

/// The local files of dataset split `id`, downloaded into the cache unless offline: those the
/// dataset card's `configs: data_files` names for the split, else those the Hub's default naming
/// gives it ([`is_split_file`]).
pub fn fetch_dataset(id: &DatasetId, hub: &HubSettings) -> Result<Vec<PathBuf>> {
    let repo = &id.repo;
    let cache = RepoCache::new(&hub.cache, RepoKind::Dataset, &repo.repo);
    let (snapshot, files) = if hub.offline {
        let commit = cache.commit_of(&repo.revision);
        let commit = commit.ok_or_else(|| cache.not_cached(&repo.revision))?;
        let snapshot = cache.snapshot(&commit);
        let patterns = card_patterns(&snapshot.join("README.md"), &id.split);
        let files = split_files(files_below(&snapshot), &id.split, patterns.as_deref());
        (snapshot, files)
    } else {
        let client = Client::new(hub);
        let info = client.revision(RepoKind::Dataset, &repo.repo, &repo.revision)?;
        let patterns = match info.files.iter().any(|f| f == "README.md") {
            true => card_patterns(&cache.fetch(&client, &info.sha, "README.md")?, &id.split),
            false => None,
        };
        let wanted = split_files(info.files, &id.split, patterns.as_deref());
        for file in &wanted {
            cache.fetch(&client, &info.sha, file)?;
        }
        cache.write_ref(&repo.revision, &info.sha)?;
        (cache.snapshot(&info.sha), wanted)
    };
    if files.is_empty() {
        let message = format!(
            "no files for split `{}` (the card's `configs: data_files`, else `SPLIT-….parquet`, \
             `SPLIT.jsonl`, a `SPLIT/` folder, …)",
            id.split
        );
        return Err(Error::hub(&repo.repo, message));
    }
    Ok(files.iter().map(|f| snapshot.join(f)).collect())
}

/// The patterns the dataset card at `path` gives `split`, if it has any.
fn card_patterns(path: &Path, split: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    dataset_card::split_patterns(&text, split)
}

/// The data files of `split` among `files`, sorted: those the card's patterns match when it has
/// some, else those the Hub's default naming gives the split.
fn split_files(files: Vec<String>, split: &str, patterns: Option<&[String]>) -> Vec<String> {
    let mut chosen: Vec<String> = files
        .into_iter()
        .filter(|f| match patterns {
            Some(patterns) => patterns.iter().any(|p| dataset_card::matches(p, f)),
            None => is_split_file(f, split),
        })
        .collect();
    chosen.sort();
    chosen
}

/// The files below `dir`, as `/`-separated paths relative to it.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = relative.join(entry.file_name());
            if dir.join(&path).is_dir() {
                stack.push(path);
            } else {
                let parts: Vec<String> = path
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out
}

/// A model argument as a directory: an existing path as given (a `.gguf` name must be a GGUF
/// file); else a Hub id, resolved to its snapshot directory in the cache (downloading what is
/// missing unless offline).
pub fn model_dir(spec: &Path) -> Result<PathBuf> {
    let named_gguf = spec
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if named_gguf && !crate::gguf::is_gguf(spec) {
        let message = if spec.exists() {
            "not a GGUF file (no `GGUF` magic)"
        } else {
            "GGUF file not found"
        };
        return Err(Error::weights(spec, message));
    }
    if spec.exists() {
        return Ok(spec.to_path_buf());
    }
    let Some(id) = spec.to_str().and_then(RepoId::parse) else {
        return Ok(spec.to_path_buf()); // not a Hub id: loading names the missing directory
    };
    fetch_model(&id, &HubSettings::from_env()).map_err(|e| match e {
        Error::Hub { repo, message } => Error::Hub {
            repo,
            message: format!("{message} (and there is no local directory of that name)"),
        },
        other => other,
    })
}

/// The snapshot directory of model `id`, with every file a model needs.
pub fn fetch_model(id: &RepoId, hub: &HubSettings) -> Result<PathBuf> {
    let cache = RepoCache::new(&hub.cache, RepoKind::Model, &id.repo);
    if hub.offline {
        let cached = cache.cached_snapshot(&id.revision, "config.json");
        return cached.ok_or_else(|| cache.not_cached(&id.revision));
    }
    let client = Client::new(hub);
    let info = client.revision(RepoKind::Model, &id.repo, &id.revision)?;
    let has = |file: &str| info.files.iter().any(|f| f == file);
    let mut wanted: Vec<String> = crate::model::MODEL_FILES
        .iter()
        .filter(|f| has(f))
        .map(|f| f.to_string())
        .collect();
    if !has("config.json") {
        let message = "has no config.json: not a transformers model";
        return Err(Error::hub(&id.repo, message));
    }
    let index = "model.safetensors.index.json";
    if has("model.safetensors") {
        wanted.push("model.safetensors".into());
    } else if has(index) {
        let index_path = cache.fetch(&client, &info.sha, index)?;
        wanted.push(index.into());
        wanted.extend(shards_of(&index_path)?);
    } else {
        let message = "has no model.safetensors or model.safetensors.index.json (only safetensors \
                       weights are read)";
        return Err(Error::hub(&id.repo, message));
    }
    for file in &wanted {
        cache.fetch(&client, &info.sha, file)?;
    }
    cache.write_ref(&id.revision, &info.sha)?;
    Ok(cache.snapshot(&info.sha))
}

/// The shard files an index names, each once, in order.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    let value: serde_json::Value = crate::io::read_json(index)?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::weights(index, "no `weight_map` object"))?;
    let mut shards: Vec<String> = Vec::new();
    for file in map.values().filter_map(|v| v.as_str()) {
        if !shards.iter().any(|s| s == file) {
            shards.push(file.to_string());
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        let id = RepoId::parse("Qwen/Qwen2.5-0.5B-Instruct").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str()),
            ("Qwen/Qwen2.5-0.5B-Instruct", "main")
        );
        let id = RepoId::parse("google/gemma-3-270m@v1.0").unwrap();
        assert_eq!(id.revision, "v1.0");
        let data = DatasetId::parse("trl-lib/ultrafeedback_binarized:test").unwrap();
        assert_eq!(
            (data.repo.repo.as_str(), data.split.as_str()),
            ("trl-lib/ultrafeedback_binarized", "test")
        );
        assert_eq!(DatasetId::parse("org/prefs@v2").unwrap().split, "train");
        assert_eq!(
            DatasetId::parse("org/prefs@v2:test").unwrap().repo.revision,
            "v2"
        );
        assert_eq!(DatasetId::parse("C:\\data\\prefs.jsonl"), None);
        assert_eq!(DatasetId::parse("data/prefs.jsonl"), None);
        for (file, split, yes) in [
            ("data/train-00000-of-00002.parquet", "train", true),
            ("data/test-00000-of-00001.parquet", "train", false),
            ("train.jsonl", "train", true),
            ("train/part-1.parquet", "train", true),
            ("training-notes.json", "train", false),
            ("data/train-00000-of-00001.parquet.lock", "train", false),
            ("README.md", "train", false),
        ] {
            assert_eq!(is_split_file(file, split), yes, "{file}");
        }
        for not_an_id in [
            "models/",
            "./a/b",
            "/abs/path",
            "a/b/c",
            "name",
            "a/b@",
            "../x/y",
            "C:\\m\\x",
        ] {
            assert_eq!(RepoId::parse(not_an_id), None, "{not_an_id}");
        }
    }
}
