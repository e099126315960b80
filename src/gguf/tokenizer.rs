//! The tokenizer a GGUF file describes in its metadata (`tokenizer.ggml.*`), rebuilt as the
//! `tokenizer.json` and `tokenizer_config.json` transformers' GGUF loader builds from it
//! (`integrations/gguf/gguf_tokenizer_mapping.py`), so a lone `.gguf` file tokenizes exactly as
//! `AutoTokenizer.from_pretrained(dir, gguf_file=…)` does:
//!
//! - `gpt2` (byte-level BPE: SmolLM, Llama 3, Qwen): tokens respelled in GPT-2's byte alphabet, the
//!   file's merges, a split regex chosen by `tokenizer.ggml.pre`;
//! - `llama` (SentencePiece-style BPE with byte fallback: Llama 2, Mistral, Gemma): merges from the
//!   file, or rebuilt from the vocabulary (by score; by file order for Gemma, whose multi-space
//!   tokens are also respelled with `▁`).
//!
//! Tokens of type CONTROL become special added tokens, USER_DEFINED ones plain added tokens; BOS/EOS
//! are added as `tokenizer.ggml.add_bos_token`/`add_eos_token` say.

use std::collections::HashMap;

use serde_json::{Value as Json, json};

use super::byte_level::{bytes_to_unicode, in_byte_alphabet, split_regex};
use super::file::{GgufFile, Value};
use crate::error::{Error, Result};

/// llama.cpp's token types.
pub(super) const NORMAL: u64 = 1;
pub(super) const CONTROL: u64 = 3;
pub(super) const USER_DEFINED: u64 = 4;

/// What the metadata says about the vocabulary.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<u64>,
    scores: Option<Vec<f64>>,
    merges: Option<Vec<String>>,
}

/// The list under `key` (`None` when absent), each item converted by `item`; `what` names the
/// items in the error for a malformed list.
fn list<T>(
    gguf: &GgufFile,
    key: &str,
    what: &str,
    item: impl Fn(&Value) -> Option<T>,
) -> Result<Option<Vec<T>>> {
    let Some(value) = gguf.metadata.get(key) else {
        return Ok(None);
    };
    let bad = || Error::tokenizer(&gguf.path, format!("metadata key `{key}` is not {what}"));
    let items = value.as_array().ok_or_else(bad)?;
    items
        .iter()
        .map(|v| item(v).ok_or_else(bad))
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

fn strings(gguf: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    list(gguf, key, "a list of strings", |v| {
        v.as_str().map(str::to_owned)
    })
}

fn numbers(gguf: &GgufFile, key: &str, len: usize) -> Result<Option<Vec<f64>>> {
    let what = format!("a list of {len} numbers");
    let numbers = list(gguf, key, &what, Value::as_f64)?;
    match numbers {
        Some(n) if n.len() != len => Err(Error::tokenizer(
            &gguf.path,
            format!("metadata key `{key}` is not {what}"),
        )),
        other => Ok(other),
    }
}

impl Vocab {
    fn read(gguf: &GgufFile) -> Result<Self> {
        let tokens = strings(gguf, "tokenizer.ggml.tokens")?.ok_or_else(|| {
            Error::tokenizer(&gguf.path, "missing metadata key `tokenizer.ggml.tokens`")
        })?;
        let n = tokens.len();
        let types = numbers(gguf, "tokenizer.ggml.token_type", n)?
            .map(|t| t.into_iter().map(|v| v as u64).collect())
            .unwrap_or_else(|| vec![NORMAL; n]);
        Ok(Self {
            scores: numbers(gguf, "tokenizer.ggml.scores", n)?,
            merges: strings(gguf, "tokenizer.ggml.merges")?,
            tokens,
            types,
        })
    }
}

/// `tokenizer.json` and `tokenizer_config.json` (as JSON values) for `gguf`.
pub fn tokenizer_files(gguf: &GgufFile) -> Result<(Json, Json)> {
    let model_key = "tokenizer.ggml.model";
    let kind = gguf
        .get_str(model_key)
        .map_err(|_| Error::tokenizer(&gguf.path, format!("missing metadata key `{model_key}`")))?;
    let arch = gguf.architecture()?;
    let vocab = Vocab::read(gguf)?;
    let id_of = |key: &str| {
        gguf.metadata
            .get(key)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    };
    let token_of = |key: &str| id_of(key).and_then(|i| vocab.tokens.get(i)).cloned();
    let flag = |key: &str| gguf.metadata.get(key).and_then(|v| v.as_bool());
    let (bos, eos) = (
        token_of("tokenizer.ggml.bos_token_id"),
        token_of("tokenizer.ggml.eos_token_id"),
    );
    let (unk, pad) = (
        token_of("tokenizer.ggml.unknown_token_id"),
        token_of("tokenizer.ggml.padding_token_id"),
    );

    let (mut tokenizer, spelled, add_bos_default) = match kind {
        "gpt2" => {
            let spelled = byte_level_tokens(&vocab.tokens);
            (byte_level(gguf, &vocab, &spelled)?, spelled, false)
        }
        "llama" => {
            let gemma = matches!(arch, "gemma" | "gemma2" | "gemma3");
            let spelled = if gemma {
                gemma_tokens(&vocab.tokens)
            } else {
                vocab.tokens.clone()
            };
            (
                sentencepiece(gguf, &vocab, &spelled, gemma, unk.as_deref())?,
                spelled,
                true,
            )
        }
        other => {
            return Err(Error::tokenizer(
                &gguf.path,
                format!(
                    "metadata key `{model_key}` is `{other}`; supported tokenizers: gpt2 \
                     (byte-level BPE), llama (SentencePiece BPE)"
                ),
            ));
        }
    };

    // Added tokens: CONTROL as special (in a byte-level vocabulary only those spelled in its
    // alphabet), USER_DEFINED as plain ones when the vocabulary spells them as the file does.
    let byte_level_vocab = kind == "gpt2";
    let in_vocab: HashMap<&str, usize> = spelled
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut added = Vec::new();
    for (id, (token, &ty)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
        let spelled_ok = || !byte_level_vocab || token.chars().all(in_byte_alphabet);
        let special = ty == CONTROL && spelled_ok();
        let user = ty == USER_DEFINED && in_vocab.get(token.as_str()) == Some(&id);
        if special || user {
            added.push(json!({
                "id": id, "content": token, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
    }
    tokenizer["added_tokens"] = Json::Array(added);

    let add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default);
    let add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
    tokenizer["post_processor"] = post_processor(
        add_bos
            .then_some(bos.as_deref())
            .flatten()
            .zip(id_of("tokenizer.ggml.bos_token_id")),
        add_eos
            .then_some(eos.as_deref())
            .flatten()
            .zip(id_of("tokenizer.ggml.eos_token_id")),
    );

    let mut config = json!({
        "bos_token": bos, "eos_token": eos, "unk_token": unk, "pad_token": pad,
        "add_bos_token": add_bos, "add_eos_token": add_eos,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(template) = gguf.metadata.get("tokenizer.chat_template") {
        let template = template.as_str().ok_or_else(|| {
            Error::tokenizer(
                &gguf.path,
                "metadata key `tokenizer.chat_template` is not a string",
            )
        })?;
        config["chat_template"] = json!(template);
    }
    Ok((tokenizer, config))
}

/// The tokens respelled in GPT-2's byte alphabet where they are not already.
fn byte_level_tokens(tokens: &[String]) -> Vec<String> {
    let table = bytes_to_unicode();
    tokens
        .iter()
        .map(|t| {
            if t.chars().all(in_byte_alphabet) {
                t.clone()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
            }
        })
        .collect()
}

/// Gemma files store tokens of two or more spaces as spaces; its tokenizer spells them `▁`.
fn gemma_tokens(tokens: &[String]) -> Vec<String> {
    tokens
        .iter()
        .map(|t| {
            if t.contains(' ') && t.trim().is_empty() {
                "\u{2581}".repeat(t.chars().count())
            } else {
                t.clone()
            }
        })
        .collect()
}

/// `{token: id}`, later ids winning as in a Python dict.
fn vocab_json(tokens: &[String]) -> Json {
    let map: serde_json::Map<String, Json> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    Json::Object(map)
}

fn file_merges(merges: &[String]) -> Json {
    let pairs: Vec<Json> = merges
        .iter()
        .map(|m| {
            let mut parts = m.splitn(2, ' ');
            json!([parts.next().unwrap_or(""), parts.next().unwrap_or("")])
        })
        .collect();
    Json::Array(pairs)
}

/// The byte-level BPE `tokenizer.json` of `vocab`, whose tokens are `spelled` in GPT-2's alphabet.
fn byte_level(gguf: &GgufFile, vocab: &Vocab, spelled: &[String]) -> Result<Json> {
    let merges = vocab.merges.as_ref().ok_or_else(|| {
        Error::tokenizer(
            &gguf.path,
            "missing metadata key `tokenizer.ggml.merges` (a gpt2 tokenizer needs its merges)",
        )
    })?;
    let pre = gguf
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let pre_tokenizer = match split_regex(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false),
        ]}),
        None => byte_level(true),
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab_json(spelled),
            "merges": file_merges(merges),
        },
    }))
}

fn sentencepiece(
    gguf: &GgufFile,
    vocab: &Vocab,
    spelled: &[String],
    gemma: bool,
    unk: Option<&str>,
) -> Result<Json> {
    let merges = match (&vocab.merges, gemma) {
        (Some(merges), _) => file_merges(merges),
        // Gemma's scores do not follow its merge order; the file order does.
        (None, true) => {
            let order: Vec<f64> = (0..spelled.len()).map(|i| -(i as f64)).collect();
            derived_merges(spelled, &order)
        }
        (None, false) => {
            let scores = vocab.scores.as_ref().ok_or_else(|| {
                Error::tokenizer(
                    &gguf.path,
                    "missing metadata keys `tokenizer.ggml.merges` and `tokenizer.ggml.scores` \
                     (a llama tokenizer needs one)",
                )
            })?;
            derived_merges(spelled, scores)
        }
    };
    let decoders = [
        json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    let (normalizer, pre_tokenizer, decoder, unk) = if gemma {
        (
            json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            json!({"type": "Sequence", "decoders": decoders}),
            json!(unk.unwrap_or("<unk>")),
        )
    } else {
        let mut all = decoders.to_vec();
        all.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        (
            Json::Null,
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
            json!({"type": "Sequence", "decoders": all}),
            Json::Null,
        )
    };
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer, "decoder": decoder,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
            "ignore_merges": false, "vocab": vocab_json(spelled), "merges": merges,
        },
    }))
}

/// transformers' `generate_merges(vocab, scores)`: every split of a token into two tokens, best
/// score first, then the longer left piece, then the longer right piece (ties keep vocabulary
/// order, then the pieces' ids).
fn derived_merges(tokens: &[String], scores: &[f64]) -> Json {
    let ids: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // (score, left chars, right chars, order, left, right)
    let mut merges: Vec<(f64, usize, usize, usize, &str, &str)> = Vec::new();
    for (index, token) in tokens.iter().enumerate() {
        if ids.get(token.as_str()) != Some(&index) {
            continue; // a duplicate spelling: the dict keeps the later id only
        }
        let mut local: Vec<(&str, &str)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
            .collect();
        local.sort_by_key(|(l, r)| (ids[l], ids[r]));
        for (l, r) in local {
            let order = merges.len();
            merges.push((
                scores[index],
                l.chars().count(),
                r.chars().count(),
                order,
                l,
                r,
            ));
        }
    }
    merges.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
            .then(a.3.cmp(&b.3))
    });
    Json::Array(merges.into_iter().map(|m| json!([m.4, m.5])).collect())
}

/// transformers' `TemplateProcessing` for BOS/EOS `(token, id)` when they are added.
fn post_processor(bos: Option<(&str, usize)>, eos: Option<(&str, usize)>) -> Json {
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    for (part, type_id) in [("A", 0), ("B", 1)] {
        let list = if part == "A" { &mut single } else { &mut pair };
        if let Some((t, _)) = bos {
            list.push(special(t, type_id));
        }
        list.push(seq(part, type_id));
        if let Some((t, _)) = eos {
            list.push(special(t, type_id));
        }
    }
    let pair: Vec<Json> = single.iter().cloned().chain(pair).collect();
    for (t, id) in bos.into_iter().chain(eos) {
        specials.insert(t.into(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_merges_follow_score_then_length() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "bc"]
            .map(String::from)
            .to_vec();
        // File order as the score (Gemma): "ab" (3) before "abc" (4) before "bc" (5); within
        // "abc" the longer left piece ("ab" + "c") first.
        let order: Vec<f64> = (0..6).map(|i| -(i as f64)).collect();
        let merges = derived_merges(&tokens, &order);
        assert_eq!(
            merges,
            json!([["a", "b"], ["ab", "c"], ["a", "bc"], ["b", "c"]])
        );
    }
}
