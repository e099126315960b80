//! Evaluation of a policy (base + adapter) against its reference (adapters off) on preference
//! pairs: per-pair log-probs, losses and TRL-named summary metrics.

use burn::prelude::*;

use crate::data::{PairBatch, TokenizedPair, make_batch};
use crate::logprobs::sequence_logps;
use crate::lora;
use crate::loss::{LossParams, PairLogps, pair_losses};
use crate::metrics::{DeviceStats, PairStats};
use crate::model::CausalLm;

/// Splits `[2B]` log-probs into (chosen `[B]`, rejected `[B]`).
pub fn split_pairs(logps: Tensor<1>, pairs: usize) -> (Tensor<1>, Tensor<1>) {
    (
        logps.clone().narrow(0, 0, pairs),
        logps.narrow(0, pairs, pairs),
    )
}

/// Pairs the `[2B]` policy and reference log-probs of `batch` (chosen rows first) with its
/// completion lengths.
pub fn pair_logps(policy: Tensor<1>, reference: Tensor<1>, batch: &PairBatch) -> PairLogps {
    let (policy_chosen, policy_rejected) = split_pairs(policy, batch.pairs);
    let (reference_chosen, reference_rejected) = split_pairs(reference, batch.pairs);
    let (chosen_len, rejected_len) = split_pairs(batch.completion_len.clone(), batch.pairs);
    PairLogps {
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        chosen_len,
        rejected_len,
    }
}

/// Reference log-probs `[2B]` of a batch: the same model with every adapter off, no gradient.
pub fn reference_logps(model: &mut CausalLm, batch: &PairBatch) -> Tensor<1> {
    lora::set_enabled(model, false);
    let logps = sequence_logps(model, batch).detach();
    lora::set_enabled(model, true);
    logps
}

/// Evaluates every pair (in order) in batches of `batch_size`, reading the results back once.
pub fn evaluate(
    model: &mut CausalLm,
    pairs: &[TokenizedPair],
    params: &LossParams,
    batch_size: usize,
    pad_id: u32,
    device: &Device,
) -> PairStats {
    let mut batches = Vec::new();
    for chunk in pairs.chunks(batch_size.max(1)) {
        let refs: Vec<&TokenizedPair> = chunk.iter().collect();
        let batch = make_batch(&refs, pad_id, device);
        let policy = sequence_logps(model, &batch).detach();
        let reference = reference_logps(model, &batch);
        let logps = pair_logps(policy, reference, &batch);
        batches.push(DeviceStats::new(
            params,
            &logps,
            pair_losses(params, &logps),
        ));
    }
    PairStats::read(batches)
}
