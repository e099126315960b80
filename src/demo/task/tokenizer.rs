//! Trains the demo's tokenizer here with the `tokenizers` crate: a small byte-level BPE whose
//! pre-tokenizer is Qwen2's (every digit its own token, which arithmetic needs), plus chat special
//! tokens, saved as `tokenizer.json` + `tokenizer_config.json` with a chat template, so the
//! directory loads in transformers too.

use std::path::Path;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};

/// Qwen2's pre-tokenizer pattern (words with their leading space, single digits, punctuation
/// runs), except that a digit also takes the space before it: `" 47"` is `" 4"`, `"7"`, so numbers
/// cost no extra space tokens (a quarter fewer tokens per worked answer).
const SPLIT_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// End of a turn; also the EOS token.
pub const END: &str = "<|end|>";
/// Padding.
pub const PAD: &str = "<|pad|>";
/// Role markers of the chat template.
pub const ROLES: [&str; 3] = ["<|system|>", "<|user|>", "<|assistant|>"];

/// `<|role|>\ncontent<|end|>\n` per message; the generation prompt opens an assistant turn.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/// Trains a BPE of at most `vocab_size` tokens (256 bytes + specials + merges) on `texts` and
/// writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize, dir: &Path) -> Result<()> {
    let fail = |e: Box<dyn std::error::Error + Send + Sync>| {
        Error::tokenizer(&dir.join("tokenizer.json"), format!("cannot train: {e}"))
    };
    let mut tokenizer = tokenizers::Tokenizer::new(BPE::default());
    let split = Split::new(
        SplitPattern::Regex(SPLIT_PATTERN.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(fail)?;
    let byte_level = ByteLevel::new(false, false, false);
    tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![split.into(), byte_level.into()])));
    tokenizer.with_decoder(Some(byte_level));
    let specials: Vec<AddedToken> = [END, PAD]
        .into_iter()
        .chain(ROLES)
        .map(|t| AddedToken::from(t, true))
        .collect();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, texts.iter()).map_err(fail)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(fail)?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": END,
        "pad_token": PAD,
        "bos_token": null,
        "unk_token": null,
        "add_bos_token": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": 1024,
        "chat_template": CHAT_TEMPLATE,
    });
    let text = serde_json::to_string_pretty(&config).expect("json");
    crate::io::write_file(&dir.join("tokenizer_config.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::config::Questions;
    use crate::demo::task::split;
    use crate::tokenizer::{Message, Tokenizer};

    #[test]
    fn trains_a_tokenizer_with_single_digits_and_a_chat_template() {
        let sizes = Questions {
            train: 300,
            validation: 0,
            test: 0,
        };
        let texts: Vec<String> = split(1, sizes)
            .train
            .iter()
            .flat_map(|p| [p.question.clone(), p.worked_answer()])
            .collect();
        let dir = tempfile::tempdir().unwrap();
        train_tokenizer(&texts, 300, dir.path()).unwrap();
        let tok = Tokenizer::load(dir.path()).unwrap();
        let text = "So 47 + 385 = 432. The answer is 432.";
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        // every digit is one token
        let digits = ids
            .iter()
            .filter(|&&i| {
                let s = tok.decode(&[i], false).unwrap();
                s.chars().any(|c| c.is_ascii_digit())
            })
            .count();
        assert_eq!(digits, 11);
        assert!(ids.len() <= 20, "BPE merged words: {ids:?}");
        let end = tok.eos_token_id().unwrap();
        let chat = tok
            .apply_chat_template(
                &[Message {
                    role: "user".into(),
                    content: "Hi?".into(),
                }],
                true,
            )
            .unwrap();
        assert_eq!(chat, "<|user|>\nHi?<|end|>\n<|assistant|>\n");
        let ids = tok.encode(&chat, false).unwrap();
        assert!(ids.contains(&end));
        assert!(ids.contains(&tok.token_to_id("<|assistant|>").unwrap()));
    }
}
