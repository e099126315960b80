//! The training loop: LoRA on a frozen model, preference loss against the same model with its
//! adapters off, AdamW with accumulation, global-norm clipping and a warmup schedule, metrics
//! under TRL's names in `metrics.jsonl` (read back from the device once per logged step, not per
//! step), and a PEFT adapter at the end.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::data::{TokenizedPair, make_batch, read_pairs};
use crate::device;
use crate::error::{Error, Result};
use crate::eval::{evaluate, pair_logps, reference_logps};
use crate::logprobs::sequence_logps;
use crate::lora::{self, LoraSettings};
use crate::loss::{LossParams, pair_losses};
use crate::metrics::{MetricsWindow, metrics_line};
use crate::model::CausalLm;
use crate::optim::{
    AdamW, AdamWParams, LoraGrads, accumulate, clip, global_norm, learning_rate, lora_grads,
};
use crate::precision;
use crate::steps::{StepPlan, run_length, split_for_eval};
use crate::tokenizer::Tokenizer;

/// What a finished run produced.
#[derive(Debug)]
pub struct TrainSummary {
    pub steps: usize,
    pub output: PathBuf,
    pub last_log: serde_json::Map<String, serde_json::Value>,
}

/// The padding id for batches: the tokenizer's pad token, else EOS, else 0.
pub fn pad_id(tokenizer: &Tokenizer) -> u32 {
    tokenizer
        .special_tokens()
        .pad
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
        .or_else(|| tokenizer.eos_token_id())
        .unwrap_or(0)
}

/// Loss settings of a config.
pub fn loss_params(c: &TrainConfig) -> LossParams {
    LossParams {
        kind: c.loss,
        beta: c.beta,
        label_smoothing: c.label_smoothing,
        dpop_lambda: c.dpop_lambda,
        sft_weight: c.sft_weight,
    }
}

/// Reorders a shuffled epoch so that each window of 50 batches is sorted by length (longest
/// first): batches then hold pairs of similar length, while the windows keep the shuffle.
fn group_by_length(order: &mut [usize], pairs: &[TokenizedPair], batch_size: usize) {
    for window in order.chunks_mut(50 * batch_size.max(1)) {
        window.sort_by_key(|&i| std::cmp::Reverse(pairs[i].num_tokens()));
    }
}

/// A progress bar on stderr when it is a terminal (plain log lines otherwise).
pub(crate) fn progress_bar(total_steps: usize) -> Option<indicatif::ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total_steps as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}")
                .expect("valid template"),
        );
        bar
    })
}

/// Where a run continues from.
#[derive(Debug, Clone)]
pub enum Resume {
    /// The latest `checkpoint-N/` in the output directory.
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

/// Adapters and optimizer to start from: a checkpoint (`--resume`), an existing PEFT adapter, or
/// fresh adapters. Returns the LoRA settings, the optimizer and the first step to run.
fn init_adapters(
    config: &TrainConfig,
    resume: Option<Resume>,
    model: &mut CausalLm,
    device: &Device,
) -> Result<(LoraSettings, AdamW, usize)> {
    let resume_dir = match resume {
        None => None,
        Some(Resume::From(dir)) => Some(dir),
        Some(Resume::Latest) => Some(checkpoint::latest(&config.output).ok_or_else(|| {
            Error::Invalid(format!(
                "--resume: no checkpoint-N directory in {}",
                config.output.display()
            ))
        })?),
    };
    let adapters = match (&resume_dir, &config.adapter) {
        (Some(dir), _) => {
            let (state, settings, optimizer) = checkpoint::load(dir, model, device)?;
            if state.seed != config.seed {
                return Err(Error::Invalid(format!(
                    "{}: checkpoint was made with seed {}, the config says {}; keep the seed to resume",
                    dir.display(),
                    state.seed,
                    config.seed
                )));
            }
            eprintln!("resuming from {} (step {})", dir.display(), state.step);
            (settings, optimizer, state.step)
        }
        (None, Some(dir)) => (lora::load_peft(model, dir, device)?, AdamW::default(), 0),
        (None, None) => {
            let settings = LoraSettings::from_fields(
                config.lora_r,
                config.lora_alpha,
                config.lora_dropout,
                &config.lora_targets,
            );
            lora::attach(model, &settings, config.seed, device);
            (settings, AdamW::default(), 0)
        }
    };
    Ok(adapters)
}

/// Runs a whole training job, optionally continuing from a checkpoint.
pub fn train(config: &TrainConfig, resume: Option<Resume>) -> Result<TrainSummary> {
    config.validate()?;
    let selected = device::select(config.device)?;
    eprintln!("device: {}", selected.description);
    let device = selected.device.clone().autodiff();

    let tokenizer = Tokenizer::load(&config.model)?;
    let pairs = read_pairs(&config.data, &tokenizer, config.max_length)?;
    let eval_pairs = match &config.eval_data {
        Some(path) => Some(read_pairs(path, &tokenizer, config.max_length)?),
        None => None,
    };
    let (pairs, eval_pairs) = split_for_eval(
        pairs,
        eval_pairs,
        config.eval_split,
        config.seed,
        &config.data,
        "pair",
    )?;

    let mut model = CausalLm::load(&config.model, &device)?;
    model.logprob_chunk = config.logprob_chunk;
    let frozen_dtype = config
        .frozen_precision
        .resolve(&device, precision::checkpoint_dtype(&config.model))?;
    precision::store_frozen_weights(&mut model, frozen_dtype);
    let (settings, mut optimizer, start_step) = init_adapters(config, resume, &mut model, &device)?;
    lora::require_adapters(&mut model, &config.lora_targets)?;

    let n = pairs.len();
    let accum = config.gradient_accumulation_steps;
    let mut plan = StepPlan::new(n, run_length!(config));
    let (total_steps, warmup, steps_per_epoch) =
        (plan.total_steps, plan.warmup, plan.steps_per_epoch);
    let output = config.output.clone();
    std::fs::create_dir_all(&output).map_err(|e| Error::io(&output, e))?;
    let config_path = output.join("config.ron");
    std::fs::write(&config_path, config.to_ron()).map_err(|e| Error::io(&config_path, e))?;
    let metrics_path = output.join("metrics.jsonl");
    // On resume, keep the metrics of the steps the checkpoint covers and append after them.
    let kept: String = if start_step > 0 {
        std::fs::read_to_string(&metrics_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                    .is_some_and(|s| s as usize <= start_step)
            })
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        String::new()
    };
    std::fs::write(&metrics_path, kept).map_err(|e| Error::io(&metrics_path, e))?;
    let mut metrics_file = std::fs::OpenOptions::new()
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    eprintln!(
        "training: {n} pairs ({} eval), {total_steps} steps of {} × {accum} pairs, {} loss, β = {}",
        eval_pairs.len(),
        config.batch_size,
        serde_json::to_value(config.loss)
            .unwrap_or_default()
            .as_str()
            .unwrap_or("?"),
        config.beta
    );

    let params = loss_params(config);
    let adam = AdamWParams {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay: config.weight_decay,
    };
    let pad = pad_id(&tokenizer);
    let precomputed = if config.precompute_reference {
        Some(crate::reference_cache::load_or_compute(
            &output,
            &config.model,
            &mut model,
            &pairs,
            config.batch_size,
            pad,
            &device,
        )?)
    } else {
        None
    };
    let progress = progress_bar(total_steps);
    let mut last_log = serde_json::Map::new();

    let base_name = config.model.to_string_lossy().to_string();
    let last_checkpoint = |output: &Path| {
        checkpoint::latest(output).map_or("no checkpoint was written".to_string(), |p| {
            format!("the last good checkpoint is {}", p.display())
        })
    };
    if let Some(bar) = &progress {
        bar.set_position(start_step as u64);
    }
    // Statistics and gradient norms stay on the device until a step that logs, evaluates or
    // saves; one read then brings back everything since the last one (no per-step host sync).
    let mut window = MetricsWindow::new(start_step + 1);
    for step in start_step..total_steps {
        let lr = learning_rate(
            config.learning_rate,
            step,
            total_steps,
            warmup,
            config.lr_scheduler,
        );
        let mut grads = LoraGrads::new();
        let micro_batches = plan.micro_batches(step, |order| {
            if config.group_by_length {
                group_by_length(order, &pairs, config.batch_size);
            }
        });
        let step_pairs: usize = micro_batches.iter().map(Vec::len).sum();
        for idx in &micro_batches {
            let chunk: Vec<&TokenizedPair> = idx.iter().map(|&i| &pairs[i]).collect();
            let batch = make_batch(&chunk, pad, &device);
            let reference = match &precomputed {
                // Same layout as the forward batch: the B chosen, then the B rejected.
                Some(cache) => {
                    let values: Vec<f32> = idx
                        .iter()
                        .map(|&i| cache[i].0 as f32)
                        .chain(idx.iter().map(|&i| cache[i].1 as f32))
                        .collect();
                    Tensor::from_data(TensorData::new(values, [2 * idx.len()]), &device)
                }
                None => reference_logps(&mut model, &batch),
            };
            let logps = pair_logps(sequence_logps(&model, &batch), reference, &batch);
            let losses = pair_losses(&params, &logps);
            window.add_batch(&params, &logps, losses.clone(), batch.num_tokens);
            // Sum over the step's pairs / their count: accumulation equals one large batch.
            let loss = losses.sum() / step_pairs as f64;
            let backward = loss.backward();
            accumulate(&mut grads, lora_grads(&mut model, &backward));
        }
        if let Some(norm) = global_norm(&grads) {
            clip(&mut grads, &norm, config.max_grad_norm);
            window.add_norm(norm);
        }
        optimizer.step(&mut model, &grads, lr, &adam);

        let done = step + 1;
        let eval_now = !eval_pairs.is_empty()
            && ((config.eval_steps > 0 && done % config.eval_steps == 0) || done == total_steps);
        let save_now = config.save_steps > 0 && done % config.save_steps == 0 && done < total_steps;
        let log_now = done % config.logging_steps.max(1) == 0 || done == total_steps || eval_now;
        if log_now || save_now {
            window
                .read(done)
                .map_err(|e| Error::Invalid(format!("{e}; {}", last_checkpoint(&output))))?;
        }
        if log_now {
            let mut line = window.take_line();
            line.insert("step".into(), serde_json::json!(done));
            line.insert(
                "epoch".into(),
                serde_json::json!(done as f64 / steps_per_epoch as f64),
            );
            line.insert("learning_rate".into(), serde_json::json!(lr));
            if eval_now {
                let eval_stats = evaluate(
                    &mut model,
                    &eval_pairs,
                    &params,
                    config.batch_size,
                    pad,
                    &device,
                );
                line.extend(metrics_line(&eval_stats, "eval_"));
            }
            writeln!(metrics_file, "{}", serde_json::Value::Object(line.clone()))
                .map_err(|e| Error::io(&metrics_path, e))?;
            let get = |k: &str| {
                line.get(k)
                    .and_then(serde_json::Value::as_f64)
                    .unwrap_or(f64::NAN)
            };
            let msg = format!(
                "loss {:.4}  acc {:.2}  margin {:.3}  {:.0} tok/s",
                get("loss"),
                get("rewards/accuracies"),
                get("rewards/margins"),
                get("tokens_per_second")
            );
            match &progress {
                Some(bar) => bar.set_message(msg),
                None => eprintln!("step {done}/{total_steps}  {msg}"),
            }
            last_log = line;
        }
        if save_now {
            let state = checkpoint::CheckpointState {
                step: done,
                seed: config.seed,
            };
            checkpoint::save(
                &output, &mut model, &settings, &base_name, &optimizer, &state,
            )?;
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = &progress {
        bar.finish();
    }
    lora::save_peft(&mut model, &settings, &base_name, &output.join("adapter"))?;
    Ok(TrainSummary {
        steps: total_steps,
        output,
        last_log,
    })
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
