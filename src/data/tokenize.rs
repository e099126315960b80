//! Turns preference rows into token ids exactly as TRL's DPOTrainer does, so log-probs match.
//!
//! - Standard rows: the EOS *text* is appended to chosen and rejected (unless already there);
//!   `prompt`, `prompt+chosen` and `prompt+rejected` are tokenized with special tokens.
//! - Conversational rows: rendered with the chat template (the prompt with the generation prompt
//!   opened), tokenized without adding special tokens; no EOS is appended.
//! - The prompt length is the shortest common prefix of the prompt ids with the two full
//!   sequences; completions are what follows. Sequences are cut to `max_length` keeping the start;
//!   rows whose prompt alone fills `max_length` are dropped.

use crate::data::load::{PreferenceRow, Text};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// One tokenized pair: a shared prompt and two completions.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPair {
    /// Line in the source file.
    pub line: usize,
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

impl TokenizedPair {
    /// Tokens the pair contributes to one forward pass (both sequences).
    pub fn num_tokens(&self) -> usize {
        2 * self.prompt.len() + self.chosen.len() + self.rejected.len()
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Tokenizes `rows`; returns the pairs and the lines dropped because the prompt fills `max_length`.
pub fn tokenize_rows(
    rows: &[PreferenceRow],
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<(Vec<TokenizedPair>, Vec<usize>)> {
    let eos = tokenizer.special_tokens().eos.clone();
    let mut pairs = Vec::with_capacity(rows.len());
    let mut dropped = Vec::new();
    for row in rows {
        let (prompt_ids, full_chosen, full_rejected) =
            match (&row.prompt, &row.chosen, &row.rejected) {
                (Text::Plain(p), Text::Plain(c), Text::Plain(r)) => {
                    let with_eos = |s: &str| match &eos {
                        Some(e) if !s.ends_with(e.as_str()) => format!("{s}{e}"),
                        _ => s.to_string(),
                    };
                    (
                        tokenizer.encode(p, true)?,
                        tokenizer.encode(&format!("{p}{}", with_eos(c)), true)?,
                        tokenizer.encode(&format!("{p}{}", with_eos(r)), true)?,
                    )
                }
                (Text::Chat(p), Text::Chat(c), Text::Chat(r)) => {
                    let render = |extra: &[crate::tokenizer::Message]| -> Result<Vec<u32>> {
                        let mut all = p.clone();
                        all.extend_from_slice(extra);
                        let text = tokenizer.apply_chat_template(&all, extra.is_empty())?;
                        tokenizer.encode(&text, false)
                    };
                    (render(&[])?, render(c)?, render(r)?)
                }
                _ => unreachable!("rows are validated to have one kind"),
            };
        let prompt_len = common_prefix(&prompt_ids, &full_chosen)
            .min(common_prefix(&prompt_ids, &full_rejected));
        if prompt_len >= max_length {
            dropped.push(row.line);
            continue;
        }
        let cut = |full: &[u32]| full[prompt_len..full.len().min(max_length)].to_vec();
        pairs.push(TokenizedPair {
            line: row.line,
            prompt: full_chosen[..prompt_len].to_vec(),
            chosen: cut(&full_chosen),
            rejected: cut(&full_rejected),
        });
    }
    Ok((pairs, dropped))
}
