//! Sequence log-probabilities: `log π(y|x) = Σ_t log softmax(logits_t)[y_{t+1}]` over completion
//! tokens only (logits at position t predict token t+1).
//!
//! Only positions from the batch's first label on go through the LM head (prompt positions every
//! row shares are skipped). With `CausalLm::logprob_chunk` > 0 the head and the log-softmax run as
//! one fused operation over chunks of positions ([`crate::kernels::linear_logprobs`]), so neither
//! the forward nor the backward holds the whole `[rows, positions, vocab]` logits; 0 is the plain
//! path (whole logits, Burn's `log_softmax`), kept as the reference the fused path is tested
//! against.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::data::PairBatch;
use crate::kernels::linear_logprobs;
use crate::model::CausalLm;

/// Summed completion log-probs `[2B]` of a batch (chosen rows first, then rejected).
pub fn sequence_logps(model: &CausalLm, batch: &PairBatch) -> Tensor<1> {
    let [rows, t] = batch.tokens.dims();
    let first = batch.first_label.min(t - 2);
    let len = t - 1 - first; // label positions kept
    let hidden = model.forward_hidden(batch.tokens.clone(), None); // [R, T, H]
    let hidden = hidden.narrow(1, first, len); // [R, L, H]
    let labels = batch.tokens.clone().narrow(1, first + 1, len); // [R, L]
    let mask = batch.completion_mask.clone().narrow(1, first, len); // [R, L]
    let token_logps = match model.lm_head_weight() {
        Some(weight) if model.logprob_chunk > 0 => {
            let h = hidden.dims()[2];
            linear_logprobs(
                hidden.reshape([rows * len, h]),
                weight,
                labels.reshape([rows * len]),
                model.logprob_chunk,
            )
            .reshape([rows, len])
        }
        _ => {
            let logits = model.lm_head(hidden); // [R, L, V]
            log_softmax(logits, 2)
                .gather(2, labels.unsqueeze_dim::<3>(2))
                .reshape([rows, len])
        }
    };
    (token_logps * mask).sum_dim(1).reshape([rows])
}
