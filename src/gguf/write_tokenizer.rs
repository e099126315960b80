//! The tokenizer metadata (`tokenizer.*`) of a written GGUF: copied verbatim from a GGUF base, or
//! built from a Hugging Face directory's byte-level BPE `tokenizer.json` (SmolLM, Llama 3, Qwen) as
//! llama.cpp's converter writes it: `gpt2` tokens (CONTROL for special added tokens, USER_DEFINED
//! for other added ones), merges, the `pre` name of its split regex, BOS/EOS/UNK/PAD ids, whether
//! BOS/EOS are added, the chat template.

use std::path::Path;

use serde_json::Value as Json;

use super::file::{GgufFile, Value};
use super::tokenizer::{CONTROL, NORMAL, USER_DEFINED};
use crate::error::{Error, Result};

/// Where the tokenizer metadata of a written GGUF comes from.
pub enum TokenizerSource<'a> {
    /// A GGUF base: its `tokenizer.*` keys and `general.name` verbatim.
    Gguf(&'a GgufFile),
    /// A Hugging Face directory with a byte-level BPE `tokenizer.json`.
    Dir(&'a Path),
}

pub(super) fn tokenizer_metadata(source: &TokenizerSource) -> Result<Vec<(String, Value)>> {
    match source {
        TokenizerSource::Gguf(gguf) => Ok(gguf
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer.") || k.as_str() == "general.name")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()),
        TokenizerSource::Dir(dir) => byte_level_metadata(dir),
    }
}

/// `tokenizer.ggml.*` of a byte-level BPE `tokenizer.json` (llama.cpp's `gpt2` model).
fn byte_level_metadata(dir: &Path) -> Result<Vec<(String, Value)>> {
    let path = dir.join("tokenizer.json");
    let json: Json = crate::io::read_json(&path)?;
    let model = &json["model"];
    let mentions_byte_level = |part: &str| json[part].to_string().contains("\"ByteLevel\"");
    let byte_level = mentions_byte_level("pre_tokenizer") || mentions_byte_level("decoder");
    if model["type"] != "BPE" || model["byte_fallback"] == true || !byte_level {
        return Err(Error::tokenizer(
            &path,
            "only byte-level BPE tokenizers (SmolLM, Llama 3, Qwen) can be written to GGUF from a \
             Hugging Face directory; merge onto the model's GGUF (`--model FILE.gguf`) to keep \
             its own tokenizer",
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| Error::tokenizer(&path, "field `model.vocab` is not an object"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<u64> = Vec::new();
    let mut put = |id: usize, token: &str, ty: u64| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, NORMAL);
        }
        tokens[id] = Some(token.to_string());
        types[id] = ty;
    };
    for (token, id) in vocab {
        put(id.as_u64().unwrap_or(0) as usize, token, NORMAL);
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        let ty = if added["special"] == true {
            CONTROL
        } else {
            USER_DEFINED
        };
        put(id as usize, content, ty);
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(p) => Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?)),
            _ => None,
        })
        .map(Value::String)
        .collect();

    let tokenizer = crate::tokenizer::Tokenizer::load(dir)?;
    let id = |t: &Option<String>| t.as_deref().and_then(|t| tokenizer.token_to_id(t));
    let special = tokenizer.special_tokens();
    let mut kv: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            Value::String(pre_name(&json).into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(|t| Value::I32(t as i32)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    for (key, token) in [
        ("bos_token_id", &special.bos),
        ("eos_token_id", &special.eos),
        ("unknown_token_id", &special.unk),
        ("padding_token_id", &special.pad),
    ] {
        if let Some(id) = id(token) {
            kv.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    // What the post-processor adds is what llama.cpp must add: compare an encoding with and
    // without special tokens.
    let plain = tokenizer.encode("a", false)?;
    let full = tokenizer.encode("a", true)?;
    let add_bos = full.len() > plain.len() && full.first() != plain.first();
    let add_eos = full.len() > plain.len() && full.last() != plain.last();
    kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(add_bos)));
    kv.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(add_eos)));
    if let Some(template) = tokenizer.chat_template_source() {
        kv.push((
            "tokenizer.chat_template".into(),
            Value::String(template.into()),
        ));
    }
    Ok(kv)
}

/// llama.cpp's `tokenizer.ggml.pre` for a byte-level `tokenizer.json`: the split regex it uses.
fn pre_name(json: &Json) -> &'static str {
    let text = json["pre_tokenizer"].to_string();
    let has = |needle: &str| text.contains(&needle.replace('\\', "\\\\"));
    if has(r"\p{N}{1,3}") && has(r"[^\r\n\p{L}\p{N}]?\p{L}+") {
        "llama-bpe"
    } else if has(r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|") {
        "qwen2"
    } else {
        "gpt-2"
    }
}
