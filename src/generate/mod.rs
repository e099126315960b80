//! Autoregressive generation with a KV cache: encode the prompt once, then feed one token at a
//! time, streaming decoded text as soon as it forms whole characters, stopping at EOS.

pub mod batch;
pub mod bench;
pub mod sampling;

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::generate::sampling::{Sampling, next_ids};
use crate::io::Rng;
use crate::model::config::token_ids;
use crate::model::{CausalLm, KvCache};
use crate::tokenizer::Tokenizer;

/// Defaults a checkpoint ships in `generation_config.json`.
#[derive(Debug, Clone, Default)]
pub struct GenerationDefaults {
    pub eos_token_ids: Vec<u32>,
    pub do_sample: bool,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
}

impl GenerationDefaults {
    /// Reads `DIR/generation_config.json` if it exists.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let json: Value = crate::io::read_json(&path)?;
        Ok(Self {
            eos_token_ids: token_ids(&json.get("eos_token_id").cloned()),
            do_sample: json
                .get("do_sample")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            temperature: json
                .get("temperature")
                .and_then(Value::as_f64)
                .map(|v| v as f32),
            top_p: json.get("top_p").and_then(Value::as_f64).map(|v| v as f32),
            top_k: json
                .get("top_k")
                .and_then(Value::as_u64)
                .map(|v| v as usize),
        })
    }

    /// The sampling transformers would use when the user sets nothing: the file's own settings
    /// when it asks to sample, greedy otherwise.
    pub fn sampling(&self) -> Sampling {
        if !self.do_sample {
            return Sampling::GREEDY;
        }
        Sampling {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(50),
        }
    }
}

/// The ids that end generation, chosen as transformers chooses them: `generation_config.json`,
/// else `config.json`'s `eos_token_id`, else the tokenizer's EOS token.
pub fn stop_ids(
    defaults: &GenerationDefaults,
    model: &CausalLm,
    tokenizer: &Tokenizer,
) -> Vec<u32> {
    if !defaults.eos_token_ids.is_empty() {
        defaults.eos_token_ids.clone()
    } else if !model.config.eos_token_ids.is_empty() {
        model.config.eos_token_ids.clone()
    } else {
        tokenizer.eos_token_id().into_iter().collect()
    }
}

/// What to generate and how.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub seed: u64,
    pub stop_ids: Vec<u32>,
}

/// Runs generation, calling `on_text` with each newly completed piece of text. Returns the new
/// token ids (without the EOS that stopped it).
pub fn generate(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    request: &GenerateRequest,
    device: &Device,
    mut on_text: impl FnMut(&str),
) -> Result<Vec<u32>> {
    if request.prompt_ids.is_empty() {
        return Err(Error::Invalid(
            "the prompt encodes to zero tokens; give a non-empty prompt".into(),
        ));
    }
    model
        .config
        .check_sequence_length(request.prompt_ids.len() + request.max_new_tokens)?;
    let vocab = model.config.vocab_size;
    let mut rng = Rng::new(request.seed);
    let mut cache = KvCache::with_capacity(request.prompt_ids.len() + request.max_new_tokens);
    let mut generated: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut input = request.prompt_ids.clone();

    while generated.len() < request.max_new_tokens {
        let len = input.len();
        let ids: Vec<i64> = input.iter().map(|&t| i64::from(t)).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, len]), device);
        let hidden = model.forward_hidden(tokens, Some(&mut cache)); // [1, len, hidden]
        let last = hidden.narrow(1, len - 1, 1); // [1, 1, hidden]
        let logits = model.lm_head(last).reshape([1, vocab]);
        let next = next_ids(&request.sampling, logits, std::slice::from_mut(&mut rng))?[0];
        if request.stop_ids.contains(&next) {
            break;
        }
        generated.push(next);
        input = vec![next];

        let text = tokenizer.decode(&generated, true)?;
        let stable = stable_prefix(&text, tokenizer.cleans_up_spaces());
        if stable.len() > printed.len() && stable.starts_with(printed.as_str()) {
            on_text(&stable[printed.len()..]);
            printed = stable.to_string();
        }
    }
    let text = tokenizer.decode(&generated, true)?;
    if text.len() > printed.len() && text.starts_with(&printed) {
        on_text(&text[printed.len()..]);
    }
    Ok(generated)
}

/// The part of a partial decode that later tokens cannot change: everything but a trailing
/// incomplete UTF-8 sequence (shown as U+FFFD), or, when decoding cleans up spaces before
/// punctuation, everything before the last whitespace.
fn stable_prefix(text: &str, cleans_up_spaces: bool) -> &str {
    if cleans_up_spaces {
        return text.rfind(char::is_whitespace).map_or("", |i| &text[..i]);
    }
    text.trim_end_matches('\u{FFFD}')
}

#[cfg(test)]
mod tests {
    use super::stable_prefix;

    #[test]
    fn stable_prefix_holds_back_what_may_change() {
        assert_eq!(stable_prefix("abc\u{FFFD}", false), "abc");
        assert_eq!(stable_prefix("a\u{FFFD}b", false), "a\u{FFFD}b");
        assert_eq!(stable_prefix("it is .", true), "it is");
        assert_eq!(stable_prefix("word", true), "");
    }
}
