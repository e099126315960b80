//! `minordpo sft`: supervised fine-tuning with a completion-only next-token loss — every weight
//! (`method: full`, for a model built from scratch) or LoRA adapters (`method: lora`, for a loaded
//! model). [`SftObjective`] is what the shared training loop (`train`) runs; metrics use TRL's
//! SFT names.

pub mod config;
pub mod data;

use burn::prelude::*;

use crate::error::Result;
use crate::model::CausalLm;
use crate::model::logprobs::{label_hits, label_logps, scored_positions};
use crate::model::{lora, precision};
use crate::train::method::{Method, unfreeze};
use crate::train::window::StatRows;
use crate::train::{MetricsLine, MicroBatch, Objective, Resume, TrainSummary};
pub use config::{SFT_FIELDS, SftConfig, SftMethod, SftOverrides};
use data::{SftBatch, SftExample, make_batch, read_examples};

/// Positions per fused LM-head chunk in SFT (the loss and the token accuracy).
const LOGPROB_CHUNK: usize = 256;

/// A batch scored by `model`: label log-probs `[B, L]`, their completion mask `[B, L]` and the
/// statistics rows `[3, 1]` (summed completion log-prob, summed top-1 hits of `inference`, the
/// model's inference view, and the completion tokens), the statistics without autodiff.
fn score(
    model: &CausalLm,
    inference: &CausalLm,
    batch: &SftBatch,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let t = batch.tokens.dims()[1];
    let scored = scored_positions(model, &batch.tokens, batch.first_label);
    let len = scored.labels.dims()[1];
    let mask = batch.mask.clone().narrow(1, t - 1 - len, len);
    let logps = label_logps(model, &scored, LOGPROB_CHUNK);
    let hits = label_hits(inference, &scored, LOGPROB_CHUNK);
    let plain_mask = mask.clone().without_autodiff();
    let count = Tensor::<1>::from_floats([batch.completion_tokens as f32], &plain_mask.device());
    let stats = Tensor::cat(
        vec![
            (logps.clone().without_autodiff() * plain_mask.clone()).sum(),
            (hits * plain_mask).sum(),
            count,
        ],
        0,
    )
    .reshape([3, 1]);
    (logps, mask, stats)
}

/// Mean completion-token loss and top-1 accuracy of the statistics rows of [`score`].
fn loss_and_accuracy(stats: &StatRows) -> (f64, f64) {
    let sum = |r: usize| stats.row(r).iter().sum::<f64>();
    let tokens = sum(2).max(1.0);
    (-sum(0) / tokens, sum(1) / tokens)
}

/// The SFT objective: examples and the completion-only loss.
pub struct SftObjective {
    pub examples: Vec<SftExample>,
    pub eval_examples: Vec<SftExample>,
    pub batch_size: usize,
    pub pad_id: u32,
    pub device: Device,
}

impl Objective for SftObjective {
    fn len(&self) -> usize {
        self.examples.len()
    }

    fn step_units(&self, micro_batches: &[Vec<usize>]) -> usize {
        micro_batches
            .iter()
            .flatten()
            .map(|&i| self.examples[i].labels())
            .sum::<usize>()
            .max(1)
    }

    fn micro_batch(&mut self, model: &CausalLm, examples: &[usize], units: usize) -> MicroBatch {
        let refs: Vec<&SftExample> = examples.iter().map(|&i| &self.examples[i]).collect();
        let batch = make_batch(&refs, self.pad_id, &self.device);
        let (logps, mask, stats) = score(model, &model.inference(), &batch);
        MicroBatch {
            loss: (logps * mask).sum().neg() / units as f64,
            stats,
            tokens: batch.num_tokens,
        }
    }

    fn metrics(&self, stats: &StatRows) -> MetricsLine {
        let (loss, accuracy) = loss_and_accuracy(stats);
        let mut line = MetricsLine::new();
        line.insert("loss".into(), loss.into());
        line.insert("mean_token_accuracy".into(), accuracy.into());
        line
    }

    fn has_eval(&self) -> bool {
        !self.eval_examples.is_empty()
    }

    fn evaluate(&mut self, model: &CausalLm) -> MetricsLine {
        let (loss, accuracy) = evaluate(
            model,
            &self.eval_examples,
            self.batch_size,
            self.pad_id,
            &self.device,
        );
        let mut line = MetricsLine::new();
        line.insert("eval_loss".into(), loss.into());
        line.insert("eval_mean_token_accuracy".into(), accuracy.into());
        line
    }

    fn progress(&self) -> &'static [(&'static str, &'static str, usize)] {
        &[("loss", "loss", 4), ("token acc", "mean_token_accuracy", 3)]
    }
}

/// Mean completion-token loss and accuracy of `examples`, on the model's inference view (one
/// host read).
pub fn evaluate(
    model: &CausalLm,
    examples: &[SftExample],
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> (f64, f64) {
    let model = model.inference();
    let device = device.clone().inner();
    let stats: Vec<Tensor<2>> = examples
        .chunks(batch_size.max(1))
        .map(|chunk| {
            let refs: Vec<&SftExample> = chunk.iter().collect();
            score(&model, &model, &make_batch(&refs, pad, &device)).2
        })
        .collect();
    if stats.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    loss_and_accuracy(&StatRows::read(stats))
}

/// Runs a whole SFT job, optionally continuing from a checkpoint.
pub fn sft(config: &SftConfig, resume: Option<Resume>) -> Result<TrainSummary> {
    let (start, rows) = config.start(resume, "row", read_examples)?;
    let device = &start.device;
    let lora = config.method == SftMethod::Lora;
    let mut model = if lora {
        CausalLm::load_frozen(&config.model, device, config.frozen_precision)?.0
    } else {
        unfreeze(CausalLm::load(&config.model, device)?)
    };
    // Trainable f32 weights resolve `auto` to f32 products; an explicit `bf16` says why not.
    let products = precision::set_matmul_precision(&mut model, config.matmul_precision, device)?;
    let method = if lora {
        eprintln!(
            "frozen weights: {}",
            precision::frozen_summary(&model, products)
        );
        let lora_settings = start.settings.lora();
        lora::attach(&mut model, &lora_settings, config.seed, device);
        lora::require_adapters(&model, &config.lora_targets)?;
        Method::Lora(lora_settings)
    } else {
        Method::Full
    };
    eprintln!(
        "sft ({:?}): {} examples ({} eval), {} × {} rows per step",
        config.method,
        rows.train.len(),
        rows.eval.len(),
        config.batch_size,
        config.gradient_accumulation_steps
    );
    let mut objective = SftObjective {
        examples: rows.train,
        eval_examples: rows.eval,
        batch_size: config.batch_size,
        pad_id: start.tokenizer.pad_id(),
        device: device.clone(),
    };
    let config_ron = crate::io::to_ron(config);
    start.train(
        config_ron,
        &config.model,
        method,
        (&mut model, &mut objective),
        None,
    )
}
