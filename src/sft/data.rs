//! Supervised fine-tuning data: `prompt`/`completion` rows (strings or message lists) or
//! `messages` rows (the last message, an assistant turn, is the completion), tokenized as TRL's
//! SFTTrainer does, and packed into right-padded batches with a completion-only loss mask.

use std::path::Path;

use burn::prelude::*;
use serde_json::Value;

use crate::data::Text;
use crate::data::load::{kind, parse_text, read_json_rows, row_errors};
use crate::error::{Error, Result};
use crate::tokenizer::{Message, Tokenizer};

/// One tokenized example.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Line in the source file.
    pub line: usize,
    pub prompt: Vec<u32>,
    pub completion: Vec<u32>,
}

impl SftExample {
    /// Completion tokens the loss scores: all of them, but the first when there is no prompt
    /// (the first token has no prediction).
    pub fn labels(&self) -> usize {
        self.completion.len() - usize::from(self.prompt.is_empty())
    }
}

fn parse_row(v: &Value) -> std::result::Result<(Text, Text), String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(v)))?;
    if let Some(messages) = obj.get("messages") {
        let Text::Chat(mut messages) = parse_text(messages, "messages")? else {
            return Err("field `messages`: expected a list of messages".into());
        };
        match messages.last() {
            Some(m) if m.role == "assistant" && messages.len() >= 2 => {}
            _ => {
                return Err(
                    "field `messages`: needs at least two messages, the last from the \
                            assistant (the completion)"
                        .into(),
                );
            }
        }
        let last = messages.pop().expect("checked");
        if last.content.is_empty() {
            return Err(
                "field `messages`: the assistant's answer (the completion) is empty".into(),
            );
        }
        return Ok((Text::Chat(messages), Text::Chat(vec![last])));
    }
    let get = |field: &str| {
        obj.get(field)
            .ok_or_else(|| format!("missing field `{field}` (or give `messages`)"))
            .and_then(|v| parse_text(v, field))
    };
    let (prompt, completion) = (get("prompt")?, get("completion")?);
    match (&prompt, &completion) {
        (Text::Plain(_), Text::Plain(c)) if c.is_empty() => {
            Err("field `completion`: empty completion".into())
        }
        (Text::Plain(_), Text::Plain(_)) | (Text::Chat(_), Text::Chat(_)) => {
            Ok((prompt, completion))
        }
        _ => Err("`prompt` and `completion` must both be strings or both message lists".into()),
    }
}

/// Token ids of one example: standard text gets the EOS text appended to the completion;
/// conversations are rendered with the chat template. The prompt is the common prefix.
pub fn tokenize(
    tokenizer: &Tokenizer,
    prompt: &Text,
    completion: &Text,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let (prompt_ids, full) = match (prompt, completion) {
        (Text::Plain(p), Text::Plain(c)) => {
            let eos = tokenizer.special_tokens().eos.clone().unwrap_or_default();
            let c = if c.ends_with(&eos) {
                c.clone()
            } else {
                format!("{c}{eos}")
            };
            (
                tokenizer.encode(p, true)?,
                tokenizer.encode(&format!("{p}{c}"), true)?,
            )
        }
        (Text::Chat(p), Text::Chat(c)) => {
            let all: Vec<Message> = p.iter().chain(c).cloned().collect();
            let prompt_text = tokenizer.apply_chat_template(p, true)?;
            let full_text = tokenizer.apply_chat_template(&all, false)?;
            (
                tokenizer.encode(&prompt_text, false)?,
                tokenizer.encode(&full_text, false)?,
            )
        }
        _ => unreachable!("rows are validated to have one kind"),
    };
    let shared = prompt_ids
        .iter()
        .zip(&full)
        .take_while(|(a, b)| a == b)
        .count();
    Ok((full[..shared].to_vec(), full[shared..].to_vec()))
}

/// Reads, validates and tokenizes an SFT file. Sequences are cut to `max_length`; rows whose prompt
/// alone fills it are dropped with a warning.
pub fn read_examples(
    path: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<Vec<SftExample>> {
    let name = path.display().to_string();
    let mut errors = Vec::new();
    let mut examples = Vec::new();
    let mut dropped = Vec::new();
    for (line, item) in read_json_rows(path)? {
        match item.and_then(|v| parse_row(&v)) {
            Ok((prompt, completion)) => {
                let (prompt, mut completion) = tokenize(tokenizer, &prompt, &completion)?;
                if prompt.len() >= max_length {
                    dropped.push(line);
                    continue;
                }
                completion.truncate(max_length - prompt.len());
                examples.push(SftExample {
                    line,
                    prompt,
                    completion,
                });
            }
            Err(message) => errors.push(format!("{name}:{line}: {message}")),
        }
    }
    if !errors.is_empty() {
        return Err(row_errors(&errors));
    }
    if !dropped.is_empty() {
        eprintln!(
            "warning: {name}: dropped {} row(s) whose prompt alone fills max_length = {max_length} (lines {dropped:?})",
            dropped.len()
        );
    }
    if examples.is_empty() {
        return Err(Error::Invalid(format!("{name}: no usable rows")));
    }
    Ok(examples)
}

/// A padded batch.
#[derive(Debug, Clone)]
pub struct SftBatch {
    /// `[B, T]`
    pub tokens: Tensor<2, Int>,
    /// `[B, T−1]`: 1 where label `t+1` is a completion token.
    pub mask: Tensor<2>,
    /// Completion tokens in the batch (the loss is averaged over them).
    pub completion_tokens: usize,
    /// All non-padding tokens.
    pub num_tokens: usize,
    /// First label position any row needs (shortest prompt − 1): the LM head skips the
    /// positions before it.
    pub first_label: usize,
}

/// Packs `examples` into one batch padded with `pad`.
pub fn make_batch(examples: &[&SftExample], pad: u32, device: &Device) -> SftBatch {
    let t = examples
        .iter()
        .map(|e| e.prompt.len() + e.completion.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let t = crate::data::bucketed_len(t, device);
    let b = examples.len();
    let mut tokens = vec![pad as i64; b * t];
    let mut mask = vec![0f32; b * (t - 1)];
    for (row, e) in examples.iter().enumerate() {
        for (i, &id) in e.prompt.iter().chain(&e.completion).enumerate() {
            tokens[row * t + i] = i64::from(id);
        }
        // label positions p (0-based in the sequence) ≥ prompt len; predicted from p − 1
        for p in e.prompt.len()..e.prompt.len() + e.completion.len() {
            if p >= 1 {
                mask[row * (t - 1) + p - 1] = 1.0;
            }
        }
    }
    SftBatch {
        tokens: Tensor::from_data(TensorData::new(tokens, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t - 1]), device),
        completion_tokens: examples.iter().map(|e| e.labels()).sum(),
        num_tokens: examples
            .iter()
            .map(|e| e.prompt.len() + e.completion.len())
            .sum(),
        first_label: examples
            .iter()
            .map(|e| e.prompt.len().saturating_sub(1))
            .min()
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_every_kind_and_clear_errors() {
        let ok = |v: Value| parse_row(&v).unwrap();
        let (p, c) = ok(serde_json::json!({"prompt": "Q", "completion": "A"}));
        assert_eq!((p, c), (Text::Plain("Q".into()), Text::Plain("A".into())));
        let (p, c) = ok(serde_json::json!({"messages": [
            {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}));
        assert_eq!(p, Text::Chat(vec![Message::new("user", "Q")]));
        assert_eq!(c, Text::Chat(vec![Message::new("assistant", "A")]));
        let err = |v: Value| parse_row(&v).unwrap_err();
        assert!(err(serde_json::json!({"prompt": "Q"})).contains("missing field `completion`"));
        assert!(
            err(serde_json::json!({"messages": [{"role": "user", "content": "Q"}]}))
                .contains("the last from the assistant")
        );
        assert!(err(serde_json::json!({"prompt": "Q", "completion": [{"role": "assistant", "content": "A"}]}))
            .contains("must both be strings"));
        assert!(err(serde_json::json!([1])).contains("expected a JSON object"));
    }

    #[test]
    fn batches_mask_only_completion_labels() {
        let e1 = SftExample {
            line: 1,
            prompt: vec![5, 6],
            completion: vec![7, 8],
        };
        let e2 = SftExample {
            line: 2,
            prompt: vec![5],
            completion: vec![9],
        };
        let batch = make_batch(&[&e1, &e2], 0, &Device::flex());
        let tokens: Vec<i64> = batch
            .tokens
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        assert_eq!(tokens, vec![5, 6, 7, 8, 5, 9, 0, 0]);
        let mask: Vec<f32> = batch.mask.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(mask, vec![0.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!((batch.completion_tokens, batch.num_tokens), (3, 6));
    }
}
