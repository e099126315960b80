//! Evaluation of a policy (base + adapter) against its reference (adapters off) on preference
//! pairs: per-pair log-probs, losses and TRL-named summary metrics. It runs on the model's
//! inference view, so no graph is built and LoRA dropout is off, inside a training run too.

use burn::prelude::*;

use crate::data::{PairLayout, TokenizedPair, make_batch};
use crate::dpo::loss::LossParams;
use crate::dpo::metrics::PairStats;
use crate::dpo::step::{Reference, score_pairs};
use crate::model::{CausalLm, lora};

/// How pairs are batched and scored (in training and in evaluation).
#[derive(Debug, Clone, Copy)]
pub struct PairScoring {
    pub params: LossParams,
    pub batch_size: usize,
    pub pad_id: u32,
    /// Positions per fused LM-head chunk (0 = whole logits).
    pub logprob_chunk: usize,
    /// How a batch's pairs are laid out in rows (shared prompts, packing).
    pub layout: PairLayout,
}

/// Evaluates every pair (in order) in batches, reading the results back once. A model with no
/// adapter on is its own reference, so each batch then runs one forward pass instead of two.
pub fn evaluate(
    model: &CausalLm,
    pairs: &[TokenizedPair],
    settings: &PairScoring,
    device: &Device,
) -> PairStats {
    let policy = model.inference();
    let same_as_policy = !lora::any_enabled(model);
    let device = device.clone().inner();
    let batches = pairs
        .chunks(settings.batch_size.max(1))
        .map(|chunk| {
            let refs: Vec<&TokenizedPair> = chunk.iter().collect();
            let batch = make_batch(&refs, settings.pad_id, settings.layout, &device);
            let chunk = settings.logprob_chunk;
            let reference = if same_as_policy {
                Reference::Policy
            } else {
                Reference::Live
            };
            score_pairs(&policy, &batch, reference, &settings.params, chunk).stats
        })
        .collect();
    PairStats::read(batches)
}
