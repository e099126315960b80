//! Sequence log-probabilities: `log π(y|x) = Σ_t log softmax(logits_t)[y_{t+1}]` over completion
//! tokens only (logits at position t predict token t+1).

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::data::PairBatch;
use crate::model::CausalLm;

/// Summed completion log-probs `[2B]` of a batch (chosen rows first, then rejected).
pub fn sequence_logps(model: &CausalLm, batch: &PairBatch) -> Tensor<1> {
    let [rows, t] = batch.tokens.dims();
    let logits = model.forward(batch.tokens.clone(), None); // [2B, T, V]
    let logits = logits.narrow(1, 0, t - 1); // [2B, T−1, V]
    let labels = batch
        .tokens
        .clone()
        .narrow(1, 1, t - 1)
        .unsqueeze_dim::<3>(2); // [2B, T−1, 1]
    let token_logps = log_softmax(logits, 2)
        .gather(2, labels)
        .reshape([rows, t - 1]);
    (token_logps * batch.completion_mask.clone())
        .sum_dim(1)
        .reshape([rows])
}
