//! Content hashes for caches: 64-bit xxh3 over bytes and whole files (memory-mapped, so a
//! multi-gigabyte checkpoint streams through at memory speed). Every piece is length-prefixed, so
//! moving bytes from one piece to the next changes the hash.

use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// An incremental hash over a sequence of byte strings and files.
#[derive(Clone, Default)]
pub struct ContentHash(Xxh3);

impl ContentHash {
    /// An empty hash.
    pub fn new() -> Self {
        Self(Xxh3::new())
    }

    /// Adds one byte string.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a file's name and its whole contents.
    pub fn file(&mut self, path: &Path) -> Result<&mut Self> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.bytes(name.unwrap_or_default().as_bytes());
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(self.bytes(&[]));
        }
        // SAFETY: the map is read once, here, and nothing in minordpo writes a file in place (its
        // writes rename a finished temporary file over the old one). Another program writing this
        // file during the read is outside what a map can guard against, as for every mapped
        // checkpoint loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(self.bytes(&map))
    }

    /// The hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_decide_the_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        let of_file = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            ContentHash::new().file(&path).unwrap().hex()
        };
        // Same name and size, different contents: different hashes.
        assert_ne!(of_file(b"abcd"), of_file(b"abce"));
        assert_eq!(of_file(b"abcd"), of_file(b"abcd"));
        assert_eq!(
            of_file(b""),
            ContentHash::new().bytes(b"w.bin").bytes(b"").hex()
        );
        // Pieces are length-prefixed.
        let ab_c = ContentHash::new().bytes(b"ab").bytes(b"c").hex();
        let a_bc = ContentHash::new().bytes(b"a").bytes(b"bc").hex();
        assert_ne!(ab_c, a_bc);
    }
}
