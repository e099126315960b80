//! GGUF, llama.cpp's single-file model format (what Ollama and LM Studio keep): reading a model's
//! config, tokenizer and dequantized weights out of one `.gguf` file, and writing a model back as
//! one (`merge --output FILE.gguf`).
//!
//! Loading follows transformers' GGUF loader (`from_pretrained(…, gguf_file=…)`), the parity
//! reference: the same `config.json` fields (`config.rs`), the same tokenizer (`tokenizer.rs`) and
//! the same tensors (`weights.rs`, dequantized by `types.rs` exactly as the `gguf` package does).

pub mod byte_level;
pub mod config;
pub mod file;
pub mod tokenizer;
pub mod types;
pub mod weights;
pub mod write;
pub mod write_tokenizer;

pub use file::{GgufFile, is_gguf};
