//! Atomic writes, used by every writer of a result (adapters, models, checkpoints, caches,
//! configs, reports): the content goes to a temporary sibling first and is renamed into place, so
//! a killed run leaves either the old version or the new one, never a half-written file.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `DIR/.NAME.partial`: the temporary sibling a write goes through.
fn partial(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial"))
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
        }
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` (creating its directory), atomically.
pub fn write_file(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    create_parent(path)?;
    let tmp = partial(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes `path` (creating its directory) by streaming into `write`, atomically: for files too
/// large to hold in memory first (a whole model as GGUF).
pub fn write_file_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<()> {
    create_parent(path)?;
    let tmp = partial(path);
    let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write(&mut out)
        .and_then(|()| std::io::Write::flush(&mut out))
        .map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Builds the directory `dir` atomically: `build` fills an empty temporary sibling, which then
/// takes `dir`'s name. An existing `dir` is moved aside first and removed last, so a crash in
/// between leaves one complete version (the old or the new) under `dir` or its `.old` sibling;
/// the next write puts a stranded `.old` back first.
pub fn write_dir(dir: &Path, build: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    create_parent(dir)?;
    let tmp = partial(dir);
    let old = tmp.with_extension("old");
    if old.exists() && !dir.exists() {
        std::fs::rename(&old, dir).map_err(|e| Error::io(dir, e))?;
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    build(&tmp)?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    if let Err(e) = std::fs::rename(&tmp, dir) {
        // Put the old version back rather than leave none under `dir`.
        let _ = std::fs::rename(&old, dir);
        return Err(Error::io(dir, e));
    }
    // The new version is in place; a leftover `.old` (a file still open on Windows, say) is
    // harmless and is removed by the next write.
    if old.exists()
        && let Err(e) = std::fs::remove_dir_all(&old)
    {
        eprintln!("warning: could not remove {}: {e}", old.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(path: impl AsRef<Path>) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn files_and_directories_are_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("sub/a.json");
        write_file(&file, "1").unwrap();
        write_file(&file, "2").unwrap();
        assert_eq!(text(&file), "2");

        let dir = root.path().join("adapter");
        write_dir(&dir, |tmp| write_file(&tmp.join("x"), "old")).unwrap();
        write_dir(&dir, |tmp| write_file(&tmp.join("y"), "new")).unwrap();
        assert!(
            !dir.join("x").exists(),
            "the old directory is replaced, not merged"
        );
        assert_eq!(text(dir.join("y")), "new");

        // A failed build leaves the previous version in place.
        let failed = write_dir(&dir, |_| Err(Error::Invalid("boom".into())));
        assert!(failed.is_err());
        assert_eq!(text(dir.join("y")), "new");
        let left: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".partial"))
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");

        // A crash between moving the old version aside and renaming the new one in: the next
        // write restores the old version before it starts.
        let stranded = root.path().join(".adapter.old");
        std::fs::rename(&dir, &stranded).unwrap();
        let failed = write_dir(&dir, |_| Err(Error::Invalid("boom".into())));
        assert!(failed.is_err());
        assert_eq!(text(dir.join("y")), "new");
        assert!(!stranded.exists());
    }
}
