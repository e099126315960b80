//! The model against the task: greedy accuracy (also as a training probe), and on-policy preference pairs (a correct
//! answer as `chosen`, one of the model's own wrong answers as `rejected`).

use std::path::Path;

use burn::prelude::*;

use super::config::PairSampling;
use crate::demo::task::{Problem, is_correct};
use crate::error::Result;
use crate::generate::batch::{BatchRequest, generate_batch};
use crate::generate::sampling::Sampling;
use crate::model::CausalLm;
use crate::model::lora;
use crate::tokenizer::{Message, Tokenizer};
use crate::train::{MetricsLine, Probe};

const MAX_BATCH: usize = 64;

/// The chat-formatted prompt of a question.
pub fn prompt_ids(tokenizer: &Tokenizer, question: &str) -> Result<Vec<u32>> {
    let text = tokenizer.apply_chat_template(&[Message::new("user", question)], true)?;
    tokenizer.encode(&text, false)
}

/// Loads the model in `model_dir` (plus a PEFT adapter) for inference.
pub fn load(model_dir: &Path, adapter: Option<&Path>, device: &Device) -> Result<CausalLm> {
    let mut model = CausalLm::load(model_dir, device)?;
    if let Some(adapter) = adapter {
        lora::load_peft(&mut model, adapter, device)?;
    }
    Ok(model)
}

/// Answers to `problems` (decoded text), greedy or sampled.
pub fn answers(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    problems: &[&Problem],
    sampling: Sampling,
    seed: u64,
    max_tokens: usize,
    device: &Device,
) -> Result<Vec<String>> {
    let prompts = problems
        .iter()
        .map(|p| prompt_ids(tokenizer, &p.question))
        .collect::<Result<Vec<_>>>()?;
    let request = BatchRequest {
        max_new_tokens: max_tokens,
        sampling,
        seed,
        stop_ids: tokenizer.eos_token_id().into_iter().collect(),
        max_batch: MAX_BATCH,
    };
    generate_batch(model, &prompts, &request, device)?
        .iter()
        .map(|ids| tokenizer.decode(ids, true))
        .collect()
}

/// Whether the model's greedy answer to each of `problems` is right.
pub fn graded(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    problems: &[Problem],
    max_tokens: usize,
    device: &Device,
) -> Result<Vec<bool>> {
    let refs: Vec<&Problem> = problems.iter().collect();
    let texts = answers(
        model,
        tokenizer,
        &refs,
        Sampling::GREEDY,
        0,
        max_tokens,
        device,
    )?;
    Ok(problems
        .iter()
        .zip(&texts)
        .map(|(p, t)| is_correct(p, t))
        .collect())
}

/// Greedy accuracy on validation questions, logged as `eval_accuracy` while a run trains.
pub struct AccuracyProbe {
    pub problems: Vec<Problem>,
    pub tokenizer: Tokenizer,
    pub max_tokens: usize,
    /// The inference device (the training device without autodiff).
    pub device: Device,
    /// The accuracy before training when it is already known: a fresh adapter (B = 0) leaves
    /// the base model's answers exactly as they were.
    pub at_start: Option<f64>,
}

impl Probe for AccuracyProbe {
    fn measure(&mut self, model: &CausalLm, step: usize) -> Result<MetricsLine> {
        let accuracy = match (step, self.at_start) {
            (0, Some(known)) => known,
            _ => super::stats::fraction(&graded(
                &model.inference(),
                &self.tokenizer,
                &self.problems,
                self.max_tokens,
                &self.device,
            )?),
        };
        Ok(MetricsLine::from_iter([(
            "eval_accuracy".to_string(),
            accuracy.into(),
        )]))
    }
}

/// One on-policy pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub question: String,
    pub chosen: String,
    pub rejected: String,
    /// Whether `chosen` was sampled (else it is the reference worked answer).
    pub chosen_sampled: bool,
}

/// Samples `samples` answers per problem; keeps a pair for every problem with at least one wrong
/// answer: the first right sample against the first wrong one (the reference answer as chosen
/// when no sample was right and `plan.reference_chosen`; else the problem is skipped).
pub fn sample_pairs(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    problems: &[Problem],
    plan: &PairSampling,
    seed: u64,
    max_tokens: usize,
    device: &Device,
) -> Result<Vec<Pair>> {
    let (samples, temperature) = (plan.samples, plan.temperature);
    let repeated: Vec<&Problem> = problems
        .iter()
        .flat_map(|p| std::iter::repeat_n(p, samples))
        .collect();
    let sampling = Sampling {
        temperature,
        top_p: 1.0,
        top_k: 0,
    };
    let texts = answers(
        model, tokenizer, &repeated, sampling, seed, max_tokens, device,
    )?;
    let mut pairs = Vec::new();
    for (p, group) in problems.iter().zip(texts.chunks(samples.max(1))) {
        let right = group.iter().find(|t| is_correct(p, t));
        let Some(wrong) = group.iter().find(|t| !is_correct(p, t)) else {
            continue;
        };
        if right.is_none() && !plan.reference_chosen {
            continue;
        }
        pairs.push(Pair {
            question: p.question.clone(),
            chosen: right.cloned().unwrap_or_else(|| p.worked_answer()),
            rejected: wrong.clone(),
            chosen_sampled: right.is_some(),
        });
    }
    Ok(pairs)
}

impl Pair {
    /// The conversational preference row (TRL's format).
    pub fn to_json(&self) -> serde_json::Value {
        let turn =
            |role: &str, content: &str| serde_json::json!([{"role": role, "content": content}]);
        serde_json::json!({
            "prompt": turn("user", &self.question),
            "chosen": turn("assistant", &self.chosen),
            "rejected": turn("assistant", &self.rejected),
        })
    }
}
