//! Label log-probabilities: `log softmax(logits_t)[y_{t+1}]` for the positions a trainer scores
//! (logits at position t predict token t+1).
//!
//! Only positions from the first scored label on go through the LM head (prompt positions every
//! row shares are skipped). With `chunk` > 0 the head and the log-softmax run as one fused
//! operation over chunks of positions ([`crate::kernels::linear_logprobs`]), so neither the
//! forward nor the backward holds the whole `[rows, positions, vocab]` logits; 0 is the plain path
//! (whole logits, Burn's `log_softmax`), kept as the reference the fused path is tested against.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use super::CausalLm;
use super::causal_lm::HeadWeight;
use crate::kernels::linear_logprobs;
use crate::kernels::logprobs::linear_logprobs_blocks;

/// The final hidden states of the scored positions and their labels.
pub struct ScoredPositions {
    /// `[rows, len, hidden]`: positions `first .. first + len`.
    pub hidden: Tensor<3>,
    /// `[rows, len]`: the tokens those positions predict.
    pub labels: Tensor<2, Int>,
}

/// Runs the decoder over `tokens` `[rows, T]` and keeps positions `first ..= T − 2` (`first` is
/// clamped so at least one label remains).
pub fn scored_positions(
    model: &CausalLm,
    tokens: &Tensor<2, Int>,
    first: usize,
) -> ScoredPositions {
    let t = tokens.dims()[1];
    let first = first.min(t - 2);
    let len = t - 1 - first;
    let hidden = model.forward_hidden(tokens.clone(), None); // [R, T, H]
    ScoredPositions {
        hidden: hidden.narrow(1, first, len),
        labels: tokens.clone().narrow(1, first + 1, len),
    }
}

/// Log-probs `[rows, len]` of each scored position's label.
pub fn label_logps(model: &CausalLm, scored: &ScoredPositions, chunk: usize) -> Tensor<2> {
    let [rows, len, h] = scored.hidden.dims();
    let hidden = scored.hidden.clone().reshape([rows * len, h]);
    let labels = scored.labels.clone().reshape([rows * len]);
    row_logps(model, hidden, labels, chunk).reshape([rows, len])
}

/// Log-probs `[n]` of `labels` `[n]` under the LM head applied to `hidden` `[n, hidden]`.
pub fn row_logps(
    model: &CausalLm,
    hidden: Tensor<2>,
    labels: Tensor<1, Int>,
    chunk: usize,
) -> Tensor<1> {
    let n = labels.dims()[0];
    match model.lm_head_weight() {
        Some(HeadWeight::Dense(weight)) if chunk > 0 => {
            linear_logprobs(hidden, weight, labels, chunk)
        }
        Some(HeadWeight::Blocks(head)) if chunk > 0 => {
            linear_logprobs_blocks(hidden, &head, labels, chunk)
        }
        _ => {
            let logits = model.lm_head(hidden); // [n, V]
            log_softmax(logits, 1)
                .gather(1, labels.unsqueeze_dim::<2>(1))
                .reshape([n])
        }
    }
}

/// 1 where the label is the top choice of `inference` (a model's inference view), else 0
/// `[rows, len]`, without autodiff; the logits are built `chunk` positions at a time (all at once
/// with 0).
pub fn label_hits(inference: &CausalLm, scored: &ScoredPositions, chunk: usize) -> Tensor<2> {
    let [rows, len, h] = scored.hidden.dims();
    let hidden = scored
        .hidden
        .clone()
        .without_autodiff()
        .reshape([rows * len, h]);
    let labels = scored
        .labels
        .clone()
        .without_autodiff()
        .reshape([rows * len]);
    let n = rows * len;
    let step = if chunk == 0 { n } else { chunk.min(n) };
    let hits: Vec<Tensor<1>> = (0..n)
        .step_by(step.max(1))
        .map(|start| {
            let end = (start + step).min(n);
            let logits = inference.lm_head(hidden.clone().narrow(0, start, end - start)); // [c, V]
            let top = crate::kernels::argmax_rows(logits); // [c]
            top.equal(labels.clone().narrow(0, start, end - start))
                .float()
        })
        .collect();
    Tensor::cat(hits, 0).reshape([rows, len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::precision::Storage;
    use burn::tensor::{Distribution, FloatDType};

    /// `label_hits` at Qwen's vocabulary: the first half of the labels are each position's top
    /// logit (read back and picked on the host), the rest one past it, so the hits must be exactly
    /// `[1…, 0…]` (on software Vulkan, Burn's own `argmax` got half of such rows wrong).
    fn hits_at_qwen_vocabulary(device: &Device) {
        let mut config = crate::model::preset::preset_config("tiny").unwrap();
        config.vocab_size = 151_936;
        let h = config.hidden_size;
        let model = CausalLm::random(config, 3, device, Storage::Dense(FloatDType::F32)).unwrap();
        let (rows, len) = (2, 32);
        let hidden = Tensor::<3>::random([rows, len, h], Distribution::Normal(0.0, 1.0), device);
        let logits = model.lm_head(hidden.clone().reshape([rows * len, h])); // [n, V]
        let values: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
        let vocab = 151_936;
        let top: Vec<i64> = values
            .chunks(vocab)
            .map(|row| crate::generate::sampling::argmax(row) as i64)
            .collect();
        let half = rows * len / 2;
        let labels: Vec<i64> = top
            .iter()
            .enumerate()
            .map(|(i, &t)| if i < half { t } else { (t + 1) % vocab as i64 })
            .collect();
        let scored = ScoredPositions {
            hidden,
            labels: Tensor::from_data(TensorData::new(labels, [rows, len]), device),
        };
        let hits: Vec<f32> = label_hits(&model, &scored, rows * len)
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        let want: Vec<f32> = (0..rows * len).map(|i| f32::from(i < half)).collect();
        assert_eq!(hits, want);
    }

    crate::device::on_every_backend!(hits_at_qwen_vocabulary => label_hits_at_qwen_vocabulary_on_flex, label_hits_at_qwen_vocabulary_on_ndarray, label_hits_at_qwen_vocabulary_on_wgpu);
}
