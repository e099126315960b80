//! What every stage reads and writes: atomic file and directory writes, RON configs, content
//! hashes, and the crate's seeded random numbers.

pub mod atomic;
pub mod hash;
pub mod rng;
pub mod ron_file;

pub use atomic::{write_dir, write_file};
pub use rng::Rng;
pub use ron_file::{parse_ron, read_ron, to_ron};
