//! Preference tuning (`train`): LoRA on a frozen model, a preference loss against the same model
//! with its adapters off, metrics under TRL's names. [`DpoObjective`] is what the shared training
//! loop (`train`) runs; `bench` times the same micro-batch.

pub mod bench;
pub mod config;
pub mod device_check;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod reference_cache;
pub mod step;

use burn::prelude::*;

use crate::data::{TokenizedPair, make_batch, read_pairs};
use crate::error::Result;
use crate::model::CausalLm;
use crate::model::lora::{self, LoraSettings};
use crate::model::precision;
use crate::train::method::Method;
use crate::train::window::StatRows;
use crate::train::{MetricsLine, MicroBatch, Objective, Probe, Resume, TrainSummary};
pub use config::{FIELDS, TrainConfig, TrainOverrides};
use eval::{PairScoring, evaluate};
use loss::LossParams;
use metrics::{PairStats, metrics_line};
use step::{Reference, score_pairs};

/// Reorders a shuffled epoch so that each window of 50 batches is sorted by length (longest
/// first): batches then hold pairs of similar length, while the windows keep the shuffle.
fn group_by_length(order: &mut [usize], pairs: &[TokenizedPair], batch_size: usize) {
    for window in order.chunks_mut(50 * batch_size.max(1)) {
        window.sort_by_key(|&i| std::cmp::Reverse(pairs[i].num_tokens()));
    }
}

/// The preference objective: pairs, their reference log-probs when precomputed, the loss.
pub struct DpoObjective {
    pub pairs: Vec<TokenizedPair>,
    pub eval_pairs: Vec<TokenizedPair>,
    /// Reference `(chosen, rejected)` per training pair, or `None` for a live reference pass.
    pub reference: Option<Vec<(f64, f64)>>,
    /// The loss, the batching and the LM-head chunk, for training and evaluation alike.
    pub scoring: PairScoring,
    pub group_by_length: bool,
    pub device: Device,
}

impl DpoObjective {
    fn params(&self) -> &LossParams {
        &self.scoring.params
    }
}

impl Objective for DpoObjective {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn arrange(&self, order: &mut [usize]) {
        if self.group_by_length {
            group_by_length(order, &self.pairs, self.scoring.batch_size);
        }
    }

    fn step_units(&self, micro_batches: &[Vec<usize>]) -> usize {
        micro_batches.iter().map(Vec::len).sum()
    }

    fn micro_batch(&mut self, model: &CausalLm, examples: &[usize], units: usize) -> MicroBatch {
        let chunk: Vec<&TokenizedPair> = examples.iter().map(|&i| &self.pairs[i]).collect();
        let batch = make_batch(
            &chunk,
            self.scoring.pad_id,
            self.scoring.layout,
            &self.device,
        );
        let reference = match &self.reference {
            Some(cache) => Reference::Precomputed(examples.iter().map(|&i| cache[i]).collect()),
            None => Reference::Live,
        };
        let scored = score_pairs(
            model,
            &batch,
            reference,
            self.params(),
            self.scoring.logprob_chunk,
        );
        MicroBatch {
            // Sum over the step's pairs / their count: accumulation equals one large batch.
            loss: scored.losses.sum() / units as f64,
            stats: scored.stats.into_tensor(),
            tokens: batch.num_tokens,
        }
    }

    fn metrics(&self, stats: &StatRows) -> MetricsLine {
        metrics_line(&PairStats::from_rows(stats), "")
    }

    fn has_eval(&self) -> bool {
        !self.eval_pairs.is_empty()
    }

    fn evaluate(&mut self, model: &CausalLm) -> MetricsLine {
        let stats = evaluate(model, &self.eval_pairs, &self.scoring, &self.device);
        metrics_line(&stats, "eval_")
    }

    fn progress(&self) -> &'static [(&'static str, &'static str, usize)] {
        &[
            ("loss", "loss", 4),
            ("acc", "rewards/accuracies", 2),
            ("margin", "rewards/margins", 3),
        ]
    }
}

/// The adapters a run starts from: an existing PEFT adapter (`adapter`), or fresh ones.
fn attach_adapters(
    config: &TrainConfig,
    model: &mut CausalLm,
    device: &Device,
) -> Result<LoraSettings> {
    let settings = match &config.adapter {
        Some(dir) => lora::load_peft(model, dir, device)?,
        None => {
            let settings = config.training().lora();
            lora::attach(model, &settings, config.seed, device);
            settings
        }
    };
    lora::require_adapters(model, &config.lora_targets)?;
    Ok(settings)
}

/// Runs a whole preference-training job, optionally continuing from a checkpoint; `probe` (the
/// built-in task's accuracy) is measured at the start and with every evaluation.
pub fn train(
    config: &TrainConfig,
    resume: Option<Resume>,
    probe: Option<&mut dyn Probe>,
) -> Result<TrainSummary> {
    let (start, rows) = config.start(resume, "pair", read_pairs)?;
    let device = &start.device;
    let (mut model, _) = CausalLm::load_frozen(&config.model, device, config.frozen_precision)?;
    model.attention_block = config.attention_block;
    model.attention_kernel = config.attention_kernel;
    let products = precision::set_matmul_precision(&mut model, config.matmul_precision, device)?;
    eprintln!(
        "frozen weights: {}",
        precision::frozen_summary(&model, products)
    );
    let lora = attach_adapters(config, &mut model, device)?;
    eprintln!(
        "training: {} pairs ({} eval), {} × {} pairs per step, {} loss, β = {}",
        rows.train.len(),
        rows.eval.len(),
        config.batch_size,
        config.gradient_accumulation_steps,
        config.loss,
        config.beta
    );
    let scoring = PairScoring {
        params: config.loss_params(),
        batch_size: config.batch_size,
        pad_id: start.tokenizer.pad_id(),
        logprob_chunk: config.logprob_chunk,
        layout: config.pair_layout(),
    };
    std::fs::create_dir_all(&config.output)
        .map_err(|e| crate::error::Error::io(&config.output, e))?;
    let reference = if config.precompute_reference {
        Some(reference_cache::load_or_compute(
            &config.output,
            &config.model,
            &model,
            &rows.train,
            &scoring,
            device,
        )?)
    } else {
        None
    };
    let mut objective = DpoObjective {
        pairs: rows.train,
        eval_pairs: rows.eval,
        reference,
        scoring,
        group_by_length: config.group_by_length,
        device: device.clone(),
    };
    let method = Method::Lora(lora);
    start.train(
        config.to_ron(),
        &config.model,
        method,
        (&mut model, &mut objective),
        probe,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_sorts_windows_by_length() {
        let pair = |len: usize| TokenizedPair {
            line: len,
            prompt: vec![1; len],
            chosen: vec![2],
            rejected: vec![3],
        };
        let pairs: Vec<TokenizedPair> = [3, 9, 1, 7].into_iter().map(pair).collect();
        let mut order = vec![0, 1, 2, 3];
        group_by_length(&mut order, &pairs, 1);
        assert_eq!(order, vec![1, 3, 0, 2]);
    }
}
