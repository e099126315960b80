//! The DPO micro-batch, as training, evaluation and `bench` all run it: the policy's summed
//! completion log-probs, the reference's (the model's inference view with its adapters off, or
//! precomputed values), the per-pair losses and their statistics.

use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use crate::data::PairBatch;
use crate::dpo::loss::{LossParams, PairLogps, pair_losses};
use crate::dpo::metrics::DeviceStats;
use crate::model::CausalLm;
use crate::model::logprobs::row_logps;

/// Summed completion log-probs `[2B]` of a batch (see [`PairBatch::split_rows`] for the order),
/// the LM head fused in chunks of `chunk` positions (0 = whole logits). Only the positions that
/// predict a completion label reach the head.
pub fn sequence_logps(model: &CausalLm, batch: &PairBatch, chunk: usize) -> Tensor<1> {
    let [rows, t] = batch.tokens.dims();
    let device = batch.tokens.device();
    let sequences = Tensor::zeros([2 * batch.pairs], &device);
    let hidden = match &batch.packed {
        Some(packed) => model.forward_packed(batch.tokens.clone(), packed),
        None => model.forward_hidden(batch.tokens.clone(), None),
    }; // [rows, T, H]
    if batch.labels.dims()[0] == 0 {
        // No completion token has a prediction (empty prompts and one-token answers): zeros, on
        // the graph like any other result.
        return sequences + hidden.sum() * 0.0;
    }
    let h = hidden.dims()[2];
    // [N, H]: a prompt's last position appears twice when two completions share it.
    let predictors = hidden
        .reshape([rows * t, h])
        .select(0, batch.label_positions.clone());
    let logps = row_logps(model, predictors, batch.labels.clone(), chunk); // [N]
    sequences.select_assign(0, batch.label_owners.clone(), logps, IndexingUpdateOp::Add)
}

/// Reference log-probs `[2B]` of a batch: the model's inference view with every adapter off (no
/// graph, no dropout), as a constant on the batch's device.
pub fn reference_logps(model: &CausalLm, batch: &PairBatch, chunk: usize) -> Tensor<1> {
    let logps = sequence_logps(&model.reference(), &batch.without_autodiff(), chunk);
    if batch.tokens.is_autodiff() {
        logps.autodiff()
    } else {
        logps
    }
}

/// Pairs the `[2B]` policy and reference log-probs of `batch` with its completion lengths.
pub fn pair_logps(policy: Tensor<1>, reference: Tensor<1>, batch: &PairBatch) -> PairLogps {
    let (policy_chosen, policy_rejected) = batch.split_rows(policy);
    let (reference_chosen, reference_rejected) = batch.split_rows(reference);
    let (chosen_len, rejected_len) = batch.split_rows(batch.completion_len.clone());
    PairLogps {
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        chosen_len,
        rejected_len,
    }
}

/// Where a micro-batch's reference log-probs come from.
pub enum Reference {
    /// A reference forward pass now.
    Live,
    /// Precomputed per-pair `(chosen, rejected)` values of the batch's pairs, in order.
    Precomputed(Vec<(f64, f64)>),
    /// The policy itself, detached: for a model with no adapter on, whose reference pass would
    /// repeat the policy's to the bit.
    Policy,
}

/// One scored micro-batch: per-pair losses `[B]` (with the policy's graph) and the statistics
/// `[7, B]` training logs (detached).
pub struct ScoredPairs {
    pub losses: Tensor<1>,
    pub stats: DeviceStats,
}

/// The policy forward, the reference and the losses of `batch`.
pub fn score_pairs(
    model: &CausalLm,
    batch: &PairBatch,
    reference: Reference,
    params: &LossParams,
    chunk: usize,
) -> ScoredPairs {
    let device = batch.tokens.device();
    // The live reference runs first, so that its temporaries are freed before the policy's
    // graph is built.
    let (policy, reference) = match reference {
        Reference::Live => {
            let reference = reference_logps(model, batch, chunk);
            (sequence_logps(model, batch, chunk), reference)
        }
        Reference::Precomputed(values) => (
            sequence_logps(model, batch, chunk),
            PairBatch::join_rows(&values, &device),
        ),
        Reference::Policy => {
            let policy = sequence_logps(model, batch, chunk);
            (policy.clone(), policy.detach())
        }
    };
    let logps = pair_logps(policy, reference, batch);
    let losses = pair_losses(params, &logps);
    let stats = DeviceStats::new(params, &logps, losses.clone());
    ScoredPairs { losses, stats }
}
