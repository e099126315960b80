//! Many prompts at once (evaluation and on-policy sampling): prompts of equal length share a
//! batch, so no padding or attention mask is needed, and each batch decodes with one KV cache.
//! Every prompt has its own random stream, so results do not depend on how prompts are batched.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::generate::sampling::{Sampling, next_ids};
use crate::io::Rng;
use crate::model::{CausalLm, KvCache};

/// How to decode a set of prompts.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Prompt `i` samples with seed `seed + i`.
    pub seed: u64,
    pub stop_ids: Vec<u32>,
    /// Most rows per forward pass.
    pub max_batch: usize,
}

/// The new ids for every prompt, in order, each without the stop token that ended it.
pub fn generate_batch(
    model: &CausalLm,
    prompts: &[Vec<u32>],
    request: &BatchRequest,
    device: &Device,
) -> Result<Vec<Vec<u32>>> {
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::Invalid(format!("prompt {i} encodes to zero tokens")));
        }
        by_len.entry(p.len()).or_default().push(i);
    }
    let mut out = vec![Vec::new(); prompts.len()];
    let vocab = model.config.vocab_size;
    for (len, indices) in by_len {
        model
            .config
            .check_sequence_length(len + request.max_new_tokens.saturating_sub(1))?; // the last token is never fed back
        for rows in indices.chunks(request.max_batch.max(1)) {
            let b = rows.len();
            let mut rngs: Vec<Rng> = rows
                .iter()
                .map(|&i| Rng::new(request.seed.wrapping_add(i as u64)))
                .collect();
            let mut done = vec![false; b];
            let mut cache = KvCache::with_capacity(len + request.max_new_tokens);
            let ids: Vec<i64> = rows
                .iter()
                .flat_map(|&i| prompts[i].iter().map(|&t| i64::from(t)))
                .collect();
            let mut input = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, len]), device);
            for _ in 0..request.max_new_tokens {
                let seq = input.dims()[1];
                let hidden = model.forward_hidden(input, Some(&mut cache)); // [b, seq, hidden]
                let logits = model
                    .lm_head(hidden.narrow(1, seq - 1, 1))
                    .reshape([b, vocab]);
                let ids = next_ids(&request.sampling, logits, &mut rngs)?;
                let mut next = Vec::with_capacity(b);
                for (r, id) in ids.into_iter().enumerate() {
                    if !done[r] {
                        if request.stop_ids.contains(&id) {
                            done[r] = true;
                        } else {
                            out[rows[r]].push(id);
                        }
                    }
                    next.push(i64::from(id));
                }
                if done.iter().all(|&d| d) {
                    break;
                }
                input = Tensor::from_data(TensorData::new(next, [b, 1]), device);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{GenerateRequest, generate};
    use crate::tokenizer::Tokenizer;

    #[test]
    fn batched_greedy_equals_one_by_one() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/llama3");
        let device = Device::flex();
        let model = CausalLm::load(&dir, &device).unwrap();
        let tokenizer = Tokenizer::load(&dir).unwrap();
        let prompts: Vec<Vec<u32>> = ["Hello there", "The cat sat", "Hello world", "A"]
            .iter()
            .map(|p| tokenizer.encode(p, true).unwrap())
            .collect();
        let request = BatchRequest {
            max_new_tokens: 6,
            sampling: Sampling::GREEDY,
            seed: 0,
            stop_ids: vec![],
            max_batch: 2,
        };
        let batched = generate_batch(&model, &prompts, &request, &device).unwrap();
        for (prompt, got) in prompts.iter().zip(&batched) {
            let single = GenerateRequest {
                prompt_ids: prompt.clone(),
                max_new_tokens: 6,
                sampling: Sampling::GREEDY,
                seed: 0,
                stop_ids: vec![],
            };
            let want = generate(&model, &tokenizer, &single, &device, |_| {}).unwrap();
            assert_eq!(got, &want);
        }
    }
}
