//! The tokenizer of a Hugging Face model directory: `tokenizer.json` through the `tokenizers`
//! crate, special tokens and the chat template from `tokenizer_config.json` (or
//! `chat_template.jinja`) — or rebuilt from a GGUF file's metadata (`gguf::tokenizer`).

pub mod chat_template;

use std::path::Path;

use serde_json::Value;

pub use chat_template::{ChatTemplate, Message, SpecialTokens};

use crate::error::{Error, Result};

/// A tokenizer plus the metadata transformers keeps beside it.
#[derive(Debug)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    chat_template: Option<ChatTemplate>,
    chat_template_source: Option<String>,
    /// transformers' `clean_up_tokenization_spaces`, as transformers 5 applies it (never on BPE
    /// models unless forced).
    cleanup_spaces: bool,
}

/// A special token written either as a string or as `{"content": "..."}` (an `AddedToken`).
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// transformers' `clean_up_tokenization`: drops spaces before punctuation and contractions.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

impl Tokenizer {
    /// Loads the tokenizer of a model: `DIR/tokenizer.json`, `DIR/tokenizer_config.json`
    /// (optional) and `DIR/chat_template.jinja` (optional, preferred over the config's template)
    /// — or, for a `.gguf` file, the tokenizer its metadata describes.
    pub fn load(path: &Path) -> Result<Self> {
        if crate::gguf::is_gguf(path) {
            return Self::from_gguf(&crate::gguf::GgufFile::open(path)?);
        }
        let dir = path;
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::tokenizer(
                &path,
                "not found; the model directory needs a Hugging Face fast tokenizer (tokenizer.json)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::tokenizer(&path, format!("cannot load: {e}")))?;

        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.is_file() {
            crate::io::read_json(&config_path)?
        } else {
            Value::Null
        };
        let jinja_path = dir.join("chat_template.jinja");
        if jinja_path.is_file() {
            let source =
                std::fs::read_to_string(&jinja_path).map_err(|e| Error::io(&jinja_path, e))?;
            return Self::assemble(inner, &config, Some(source), &jinja_path);
        }
        let source = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_owned),
            _ => None,
        };
        Self::assemble(inner, &config, source, &config_path)
    }

    /// The tokenizer a GGUF file's metadata describes (see `gguf::tokenizer`).
    pub fn from_gguf(gguf: &crate::gguf::GgufFile) -> Result<Self> {
        let (json, config) = crate::gguf::tokenizer::tokenizer_files(gguf)?;
        let inner: tokenizers::Tokenizer = json.to_string().parse().map_err(|e| {
            Error::tokenizer(
                &gguf.path,
                format!("cannot build the tokenizer of its metadata: {e}"),
            )
        })?;
        let source = config["chat_template"].as_str().map(str::to_owned);
        Self::assemble(inner, &config, source, &gguf.path)
    }

    /// A tokenizer from its parts: `config` is `tokenizer_config.json`'s content, `template_path`
    /// names the template's file in errors.
    fn assemble(
        inner: tokenizers::Tokenizer,
        config: &Value,
        template_source: Option<String>,
        template_path: &Path,
    ) -> Result<Self> {
        let special = SpecialTokens {
            bos: token_text(config.get("bos_token")),
            eos: token_text(config.get("eos_token")),
            pad: token_text(config.get("pad_token")),
            unk: token_text(config.get("unk_token")),
        };
        let chat_template = template_source
            .as_deref()
            .map(ChatTemplate::new)
            .transpose()
            .map_err(|e| Error::tokenizer(template_path, e.to_string()))?;
        let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        let is_bpe = matches!(inner.get_model(), tokenizers::ModelWrapper::BPE(_));
        let cleanup_spaces = flag("clean_up_tokenization_spaces")
            && (!is_bpe
                || flag("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"));
        Ok(Self {
            inner,
            special,
            chat_template,
            chat_template_source: template_source,
            cleanup_spaces,
        })
    }

    /// The chat template's Jinja source, if the tokenizer has one.
    pub fn chat_template_source(&self) -> Option<&str> {
        self.chat_template_source.as_deref()
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS…).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Invalid(format!("tokenizer: cannot encode: {e}")))
    }

    /// Text of `ids`, optionally without special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let text = self
            .inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| Error::Invalid(format!("tokenizer: cannot decode: {e}")))?;
        Ok(if self.cleanup_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        })
    }

    /// Whether decoding removes spaces before punctuation (so text may change at word ends).
    pub fn cleans_up_spaces(&self) -> bool {
        self.cleanup_spaces
    }

    /// Renders `messages` with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::Invalid(
                "this tokenizer has no chat_template (tokenizer_config.json or chat_template.jinja)"
                    .into(),
            )
        })?;
        template.render(messages, add_generation_prompt, &self.special)
    }

    /// Special-token strings from `tokenizer_config.json`.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Number of tokens, added (special) tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Id of the EOS token named in `tokenizer_config.json`.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.special
            .eos
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The padding id for batches: the pad token, else EOS, else 0.
    pub fn pad_id(&self) -> u32 {
        self.special_tokens()
            .pad
            .as_deref()
            .and_then(|t| self.token_to_id(t))
            .or_else(|| self.eos_token_id())
            .unwrap_or(0)
    }
}
