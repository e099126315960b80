//! The Hub cache as `huggingface_hub` lays it out, so either side reuses the other's downloads:
//!
//! ```text
//! CACHE/models--ORG--NAME/         (datasets--ORG--NAME/ for a dataset)
//!   blobs/ETAG                      file contents, named by their ETag
//!   refs/REVISION                   the commit a branch or tag pointed to
//!   snapshots/COMMIT/FILE           a link to ../../blobs/ETAG (a copy where links are unavailable)
//! ```
//!
//! A blob is downloaded to `ETAG.incomplete` and renamed when whole, so an interrupted download
//! never leaves a partial file under its final name.

use std::path::{Path, PathBuf};

use super::RepoKind;
use super::client::Client;
use crate::error::{Error, Result};

/// One repo's folder in the cache.
pub struct RepoCache {
    root: PathBuf,
    kind: RepoKind,
    repo: String,
}

/// Whether `revision` is already a commit hash.
fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

impl RepoCache {
    /// The folder of repo `repo` (`ORG/NAME`) of `kind` under the cache root `cache`
    /// (`models--ORG--NAME`, `datasets--ORG--NAME`).
    pub fn new(cache: &Path, kind: RepoKind, repo: &str) -> Self {
        let folder = format!("{}--{}", kind.plural(), repo.replace('/', "--"));
        Self {
            root: cache.join(folder),
            kind,
            repo: repo.to_string(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `snapshots/COMMIT`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// The commit `revision` names in the cache (itself when it is one).
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        Some(text.trim().to_string())
    }

    /// The snapshot of `revision` when it is cached with `file` in it.
    pub fn cached_snapshot(&self, revision: &str, file: &str) -> Option<PathBuf> {
        let dir = self.snapshot(&self.commit_of(revision)?);
        dir.join(file).is_file().then_some(dir)
    }

    /// Records that `revision` points at `commit` (`refs/REVISION`); a commit names itself, so
    /// there is nothing to record for one.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        crate::io::write_file(&self.root.join("refs").join(revision), commit)
    }

    /// The error for `revision` missing from the cache while `HF_HUB_OFFLINE` is set.
    pub fn not_cached(&self, revision: &str) -> Error {
        let message = format!(
            "HF_HUB_OFFLINE is set and revision `{revision}` is not in the cache ({})",
            self.root.display()
        );
        Error::hub(&self.repo, message)
    }

    /// `snapshots/COMMIT/FILE`, downloading its blob (unless some snapshot already has it) and
    /// linking it in place when it is not already there.
    pub fn fetch(&self, client: &Client, commit: &str, file: &str) -> Result<PathBuf> {
        let target = self.snapshot(commit).join(file);
        if target.is_file() {
            return Ok(target);
        }
        let blobs = self.root.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(|e| Error::io(&blobs, e))?;
        let etag = client.download(self.kind, &self.repo, commit, file, &blobs)?;
        link(&blobs.join(&etag), &target)?;
        Ok(target)
    }
}

/// Places `blob` at `target`: a relative symbolic link where the platform allows one without
/// privileges (as `huggingface_hub` does), else a hard link, else a copy.
fn link(blob: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().expect("a snapshot file has a folder");
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    #[cfg(unix)]
    {
        // From snapshots/COMMIT/a/b.json up to the repo folder: one `..` per folder below it.
        let repo_root = blob.parent().and_then(Path::parent).expect("blobs/ETAG");
        let depth = parent
            .strip_prefix(repo_root)
            .map_or(2, |p| p.components().count());
        let mut relative = PathBuf::new();
        for _ in 0..depth {
            relative.push("..");
        }
        relative.push("blobs");
        relative.push(blob.file_name().expect("a blob name"));
        if std::os::unix::fs::symlink(&relative, target).is_ok() {
            return Ok(());
        }
    }
    if std::fs::hard_link(blob, target).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, target)
        .map(|_| ())
        .map_err(|e| Error::io(target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_snapshots_and_links_follow_the_python_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let data = RepoCache::new(tmp.path(), RepoKind::Dataset, "org/name");
        assert!(data.root().ends_with("datasets--org--name"));
        let cache = RepoCache::new(tmp.path(), RepoKind::Model, "org/name");
        assert!(cache.root().ends_with("models--org--name"));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(cache.commit_of(commit).as_deref(), Some(commit));
        assert_eq!(cache.commit_of("main"), None);
        cache.write_ref("main", commit).unwrap();
        assert_eq!(cache.commit_of("main").as_deref(), Some(commit));

        let blobs = cache.root().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("abc"), "{}").unwrap();
        let nested = cache.snapshot(commit).join("sub/config.json");
        link(&blobs.join("abc"), &nested).unwrap();
        assert_eq!(std::fs::read_to_string(&nested).unwrap(), "{}");
        #[cfg(unix)]
        assert_eq!(
            std::fs::read_link(&nested).unwrap(),
            Path::new("../../../blobs/abc")
        );
        assert!(cache.cached_snapshot("main", "sub/config.json").is_some());
        assert!(cache.cached_snapshot("main", "tokenizer.json").is_none());
    }
}
