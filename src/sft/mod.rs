//! `minordpo sft`: supervised fine-tuning with a completion-only next-token loss — every weight
//! (`method: full`, for a model built from scratch) or LoRA adapters (`method: lora`, for a loaded
//! model) — with `train`'s conventions: a RON config whose fields are also flags, AdamW with
//! warmup + schedule and global-norm clipping, `metrics.jsonl` (TRL's SFT names), checkpoints.

pub mod config;
pub mod data;
pub mod full;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::device;
use crate::error::{Error, Result};
use crate::lora::{self, LoraSettings};
use crate::model::CausalLm;
use crate::optim::{
    AdamW, AdamWParams, LoraGrads, accumulate, clip, global_norm, learning_rate, lora_grads,
};
use crate::steps::{StepPlan, run_length, split_for_eval};
use crate::tokenizer::Tokenizer;
use crate::train::pad_id;
pub use config::{SFT_FIELDS, SftConfig, SftMethod, SftOverrides};
use data::{SftBatch, SftExample, make_batch, read_examples};

/// Next-token log-probs `[B, T−1]` and whether each label was the model's top choice (1/0).
fn next_token_logps(model: &CausalLm, tokens: &Tensor<2, Int>) -> (Tensor<2>, Tensor<2>) {
    let [b, t] = tokens.dims();
    let logits = model.forward(tokens.clone(), None).narrow(1, 0, t - 1); // [B, T−1, V]
    let labels = tokens.clone().narrow(1, 1, t - 1); // [B, T−1]
    let hits = logits
        .clone()
        .argmax(2)
        .reshape([b, t - 1])
        .equal(labels.clone())
        .float();
    let logps = log_softmax(logits, 2)
        .gather(2, labels.unsqueeze_dim::<3>(2))
        .reshape([b, t - 1]);
    (logps, hits.detach())
}

/// Mean completion-token loss and accuracy of `examples` (no gradients kept).
pub fn evaluate(
    model: &CausalLm,
    examples: &[SftExample],
    batch_size: usize,
    pad: u32,
    device: &Device,
) -> (f64, f64) {
    let (mut nll, mut hits, mut count) = (0.0, 0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&SftExample> = chunk.iter().collect();
        let batch = make_batch(&refs, pad, device);
        let (logps, hit) = next_token_logps(model, &batch.tokens);
        let sums = Tensor::cat(
            vec![
                (logps.detach() * batch.mask.clone()).sum(),
                (hit * batch.mask).sum(),
            ],
            0,
        );
        let v: Vec<f32> = sums
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        nll -= f64::from(v[0]);
        hits += f64::from(v[1]);
        count += batch.completion_tokens;
    }
    let n = count.max(1) as f64;
    (nll / n, hits / n)
}

/// The optimizer of each method.
enum Trainer {
    Full(burn::optim::ModuleOptimizer),
    Lora(AdamW, LoraSettings),
}

/// What a finished run produced.
#[derive(Debug)]
pub struct SftSummary {
    pub steps: usize,
    /// `OUTPUT/model` (full) or `OUTPUT/adapter` (lora).
    pub result: PathBuf,
    pub last_log: serde_json::Map<String, serde_json::Value>,
}

/// Writes the whole model as a Hugging Face directory (f32 weights + the source's config and
/// tokenizer files), atomically.
fn save_model(model: &CausalLm, source: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    crate::model::save::save_safetensors(
        model,
        &tmp.join("model.safetensors"),
        safetensors::Dtype::F32,
    )?;
    crate::model::save::copy_model_files(source, &tmp)?;
    // Move the old directory aside before the new one takes its name, so a crash in between
    // leaves one complete model (the old or the new), never none.
    let old = dir.with_extension("old");
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| Error::io(dir, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// Runs a whole SFT job.
pub fn sft(config: &SftConfig) -> Result<SftSummary> {
    config.validate()?;
    let selected = device::select(config.device)?;
    eprintln!("device: {}", selected.description);
    let device = selected.device.clone().autodiff();
    let tokenizer = Tokenizer::load(&config.model)?;
    let examples = read_examples(&config.data, &tokenizer, config.max_length)?;
    let eval_examples = match &config.eval_data {
        Some(path) => Some(read_examples(path, &tokenizer, config.max_length)?),
        None => None,
    };
    let (examples, eval_examples) = split_for_eval(
        examples,
        eval_examples,
        config.eval_split,
        config.seed,
        &config.data,
        "row",
    )?;
    let mut model = CausalLm::load(&config.model, &device)?;
    let mut trainer = match config.method {
        SftMethod::Full => {
            model = full::unfreeze(model);
            let adamw = AdamWConfig::new()
                .with_beta_1(config.adam_beta1 as f32)
                .with_beta_2(config.adam_beta2 as f32)
                .with_epsilon(config.adam_epsilon as f32)
                .with_weight_decay(config.weight_decay as f32);
            Trainer::Full(adamw.init())
        }
        SftMethod::Lora => {
            let settings = config.lora_settings();
            lora::attach(&mut model, &settings, config.seed, &device);
            lora::require_adapters(&mut model, &config.lora_targets)?;
            Trainer::Lora(AdamW::default(), settings)
        }
    };

    let n = examples.len();
    let accum = config.gradient_accumulation_steps;
    let mut plan = StepPlan::new(n, run_length!(config));
    let (total_steps, warmup, steps_per_epoch) =
        (plan.total_steps, plan.warmup, plan.steps_per_epoch);
    let output = config.output.clone();
    std::fs::create_dir_all(&output).map_err(|e| Error::io(&output, e))?;
    let config_path = output.join("config.ron");
    std::fs::write(&config_path, crate::config::to_ron(config))
        .map_err(|e| Error::io(&config_path, e))?;
    let metrics_path = output.join("metrics.jsonl");
    let mut metrics_file =
        std::fs::File::create(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    eprintln!(
        "sft ({:?}): {n} examples ({} eval), {total_steps} steps of {} × {accum}",
        config.method,
        eval_examples.len(),
        config.batch_size
    );
    let pad = pad_id(&tokenizer);
    let adam = AdamWParams {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        epsilon: config.adam_epsilon,
        weight_decay: config.weight_decay,
    };
    let progress = crate::train::progress_bar(total_steps);
    let mut last_log = serde_json::Map::new();
    let mut window = (0.0f64, 0.0f64, 0usize, 0usize, Instant::now()); // nll, hits, label tokens, tokens, since
    for step in 0..total_steps {
        let lr = learning_rate(
            config.learning_rate,
            step,
            total_steps,
            warmup,
            config.lr_scheduler,
        );
        let batches: Vec<SftBatch> = plan
            .micro_batches(step, |_| {})
            .iter()
            .map(|idx| {
                let refs: Vec<&SftExample> = idx.iter().map(|&i| &examples[i]).collect();
                make_batch(&refs, pad, &device)
            })
            .collect();
        let step_tokens: usize = batches
            .iter()
            .map(|b| b.completion_tokens)
            .sum::<usize>()
            .max(1);
        let mut sums = Vec::with_capacity(accum);
        let mut full_grads = GradientsAccumulator::<CausalLm>::new();
        let mut lora_sum = LoraGrads::new();
        for batch in &batches {
            let (logps, hits) = next_token_logps(&model, &batch.tokens);
            let masked = logps * batch.mask.clone();
            sums.push(Tensor::cat(
                vec![
                    masked.clone().sum().detach(),
                    (hits * batch.mask.clone()).sum(),
                ],
                0,
            ));
            let loss = masked.sum().neg() / step_tokens as f64;
            let backward = loss.backward();
            match &mut trainer {
                Trainer::Full(_) => {
                    full_grads.accumulate(&model, GradientsParams::from_grads(backward, &model))
                }
                Trainer::Lora(..) => accumulate(&mut lora_sum, lora_grads(&mut model, &backward)),
            }
            window.2 += batch.completion_tokens;
            window.3 += batch.num_tokens;
        }
        let grad_norm = match &mut trainer {
            Trainer::Full(optim) => {
                let mut grads = full_grads.grads();
                let norm = full::clip_global_norm(&model, &mut grads, config.max_grad_norm);
                model = optim.step(lr, model, grads);
                norm
            }
            Trainer::Lora(optim, _) => {
                let norm = global_norm(&lora_sum);
                if let Some(norm) = &norm {
                    clip(&mut lora_sum, norm, config.max_grad_norm);
                }
                optim.step(&mut model, &lora_sum, lr, &adam);
                norm.map_or(0.0, |n| f64::from(n.into_scalar::<f32>()))
            }
        };
        let v: Vec<f32> = Tensor::cat(sums, 0)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("f32");
        for pair in v.chunks(2) {
            window.0 -= f64::from(pair[0]);
            window.1 += f64::from(pair[1]);
        }
        if !window.0.is_finite() || !grad_norm.is_finite() {
            return Err(Error::Invalid(format!(
                "non-finite loss or gradient at step {}; stopping (lower the learning rate?)",
                step + 1
            )));
        }
        let done = step + 1;
        let eval_now = !eval_examples.is_empty()
            && ((config.eval_steps > 0 && done % config.eval_steps == 0) || done == total_steps);
        if done % config.logging_steps.max(1) == 0 || done == total_steps || eval_now {
            let labels = window.2.max(1) as f64;
            let mut line = serde_json::Map::new();
            line.insert("step".into(), serde_json::json!(done));
            line.insert(
                "epoch".into(),
                serde_json::json!(done as f64 / steps_per_epoch as f64),
            );
            line.insert("loss".into(), serde_json::json!(window.0 / labels));
            line.insert(
                "mean_token_accuracy".into(),
                serde_json::json!(window.1 / labels),
            );
            line.insert("grad_norm".into(), serde_json::json!(grad_norm));
            line.insert("learning_rate".into(), serde_json::json!(lr));
            line.insert(
                "tokens_per_second".into(),
                serde_json::json!(window.3 as f64 / window.4.elapsed().as_secs_f64().max(1e-9)),
            );
            if eval_now {
                let (loss, acc) = evaluate(&model, &eval_examples, config.batch_size, pad, &device);
                line.insert("eval_loss".into(), serde_json::json!(loss));
                line.insert("eval_mean_token_accuracy".into(), serde_json::json!(acc));
            }
            writeln!(metrics_file, "{}", serde_json::Value::Object(line.clone()))
                .map_err(|e| Error::io(&metrics_path, e))?;
            let msg = format!(
                "loss {:.4}  token acc {:.3}  {:.0} tok/s",
                window.0 / labels,
                window.1 / labels,
                line["tokens_per_second"].as_f64().unwrap_or(0.0)
            );
            match &progress {
                Some(bar) => bar.set_message(msg),
                None => eprintln!("step {done}/{total_steps}  {msg}"),
            }
            last_log = line;
            window = (0.0, 0.0, 0, 0, Instant::now());
        }
        if config.save_steps > 0 && done % config.save_steps == 0 && done < total_steps {
            let dir = output.join(format!("checkpoint-{done}"));
            save_result(&mut model, &trainer, config, &dir)?;
        }
        if let Some(bar) = &progress {
            bar.inc(1);
        }
    }
    if let Some(bar) = &progress {
        bar.finish();
    }
    let result = output.join(match config.method {
        SftMethod::Full => "model",
        SftMethod::Lora => "adapter",
    });
    save_result(&mut model, &trainer, config, &result)?;
    Ok(SftSummary {
        steps: total_steps,
        result,
        last_log,
    })
}

/// Writes the trained model (full) or adapter (lora) to `dir`.
fn save_result(
    model: &mut CausalLm,
    trainer: &Trainer,
    config: &SftConfig,
    dir: &Path,
) -> Result<()> {
    match trainer {
        Trainer::Full(_) => save_model(model, &config.model, dir),
        Trainer::Lora(_, settings) => {
            lora::save_peft(model, settings, &config.model.to_string_lossy(), dir)
        }
    }
}
