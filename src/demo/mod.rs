//! `minordpo demo`: the whole teaching pipeline on the built-in arithmetic task — data, a
//! tokenizer trained here, a tiny Llama trained from scratch (full-parameter SFT), on-policy pairs
//! from it, then DPO and MinorDPO runs side by side, each scored by greedy test accuracy and by
//! how the chosen/rejected log-probs moved — ending in `report.md` and SVG plots.
//!
//! Every step records the settings it was built with (`*.stamp`); a later run with the same
//! settings reuses the step, so `train`'s default config can share the base model and pairs.

pub mod builtin;
pub mod config;
pub mod plot;
pub mod report;
pub mod solve;
pub mod task;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::prelude::*;

pub use config::DemoConfig;

use crate::device::{self, DeviceChoice};
use crate::dpo::config::TrainConfig;
use crate::error::{Error, Result};
use crate::io::write_file;
use crate::model::init::write_random_model;
use crate::sft::{SftConfig, SftMethod};
use crate::tokenizer::Tokenizer;
use task::{Problem, tokenizer::train_tokenizer};

/// Outputs of the shared steps.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The SFT-trained base model (Hugging Face directory).
    pub base: PathBuf,
    /// On-policy preference pairs (conversational JSONL).
    pub pairs: PathBuf,
    /// Greedy accuracy of the base model on the evaluation questions.
    pub base_accuracy: f64,
    /// Stamp of the pairs step (later steps chain on it).
    pub stamp: String,
}

/// Runs `build` unless `stamp_path` already holds `stamp` (then the step's outputs are reused).
/// The stamp is written only after `build` succeeds.
fn cached(
    name: &str,
    stamp_path: &Path,
    stamp: &str,
    build: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if std::fs::read_to_string(stamp_path).is_ok_and(|s| s == stamp) {
        eprintln!(
            "[{name}] reusing {} (same settings)",
            stamp_path.with_extension("").display()
        );
        return Ok(());
    }
    let started = Instant::now();
    eprintln!("[{name}] building…");
    let _ = std::fs::remove_file(stamp_path);
    build()?;
    write_file(stamp_path, stamp)?;
    eprintln!("[{name}] done in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn chain(previous: &str, settings: serde_json::Value) -> String {
    format!("{previous}\n{settings}")
}

/// The evaluation questions of the config.
pub fn eval_problems(config: &DemoConfig) -> Vec<Problem> {
    let (_, mut test) = task::split(config.seed, config.train_questions, config.test_questions);
    test.truncate(config.eval_questions);
    test
}

/// Builds (or reuses) the data, tokenizer, base model and pairs.
pub fn prepare(config: &DemoConfig, choice: DeviceChoice) -> Result<Prepared> {
    config.validate()?;
    let out = &config.output;
    let (train, test) = task::split(config.seed, config.train_questions, config.test_questions);
    let data_dir = out.join("data");
    let stamp = serde_json::json!({"seed": config.seed, "train": config.train_questions, "test": config.test_questions}).to_string();
    cached("data", &out.join("data.stamp"), &stamp, || {
        let rows = |ps: &[Problem], f: &dyn Fn(&Problem) -> serde_json::Value| -> String {
            ps.iter().map(|p| format!("{}\n", f(p))).collect()
        };
        write_file(
            &data_dir.join("sft.jsonl"),
            rows(&train, &|p| {
                serde_json::json!({"messages": [
            {"role": "user", "content": p.question}, {"role": "assistant", "content": p.worked_answer()}]})
            }),
        )?;
        write_file(
            &data_dir.join("test.jsonl"),
            rows(&test, &|p| {
                serde_json::json!({
            "question": p.question, "answer": p.result(), "worked_answer": p.worked_answer()})
            }),
        )
    })?;

    let tok_dir = out.join("tokenizer");
    let stamp = chain(&stamp, serde_json::json!({"vocab": config.vocab_size}));
    cached("tokenizer", &out.join("tokenizer.stamp"), &stamp, || {
        let texts: Vec<String> = train
            .iter()
            .flat_map(|p| [p.question.clone(), p.worked_answer()])
            .collect();
        train_tokenizer(&texts, config.vocab_size, &tok_dir)
    })?;
    let tokenizer = Tokenizer::load(&tok_dir)?;

    let init_dir = out.join("init");
    let stamp = chain(&stamp, serde_json::to_value(&config.model).expect("json"));
    cached("init", &out.join("init.stamp"), &stamp, || {
        let vocab = tokenizer.vocab_size();
        let id = |t: &str| tokenizer.token_to_id(t).expect("special token");
        write_random_model(
            &init_dir,
            &config.model,
            vocab,
            (id(task::tokenizer::END), id(task::tokenizer::PAD)),
            config.seed,
            safetensors::Dtype::F32,
        )?;
        crate::model::save::copy_model_files(&tok_dir, &init_dir)
    })?;

    let base_run = out.join("base");
    let base = base_run.join("model");
    let b = &config.base;
    let stamp = chain(&stamp, serde_json::to_value(b).expect("json"));
    cached(
        "base model (SFT from scratch)",
        &out.join("base.stamp"),
        &stamp,
        || {
            let sft = SftConfig {
                device: choice,
                model: init_dir.clone(),
                data: data_dir.join("sft.jsonl"),
                output: base_run.clone(),
                method: SftMethod::Full,
                learning_rate: b.learning_rate,
                batch_size: b.batch_size,
                max_steps: b.max_steps,
                warmup_steps: b.warmup_steps,
                weight_decay: b.weight_decay,
                adam_beta2: b.adam_beta2,
                max_length: config.model.max_position_embeddings,
                seed: config.seed,
                logging_steps: 25,
                ..SftConfig::default()
            };
            crate::sft::sft(&sft, None).map(|_| ())
        },
    )?;

    let device = device::select(choice)?.device;
    let pairs_path = out.join("pairs.jsonl");
    let p = &config.pairs;
    let accuracy_path = out.join("base_accuracy.json");
    let eval_set = eval_problems(config);
    let eval_stamp = chain(
        &stamp,
        serde_json::json!({"eval_questions": config.eval_questions, "max_answer_tokens": config.max_answer_tokens}),
    );
    let stamp = chain(
        &stamp,
        serde_json::json!({"questions": p.questions, "samples": p.samples, "temperature": p.temperature, "max_answer_tokens": config.max_answer_tokens}),
    );
    cached(
        "base accuracy",
        &out.join("base_accuracy.stamp"),
        &eval_stamp,
        || {
            let model = solve::load(&base, None, &device)?;
            let acc = solve::accuracy(
                &model,
                &tokenizer,
                &eval_set,
                config.max_answer_tokens,
                &device,
            )?;
            write_file(
                &accuracy_path,
                serde_json::json!({"accuracy": acc}).to_string(),
            )
        },
    )?;
    let base_accuracy = read_json(&accuracy_path)?["accuracy"]
        .as_f64()
        .unwrap_or(f64::NAN);
    eprintln!(
        "base model: greedy accuracy {:.1}% on {} test questions",
        100.0 * base_accuracy,
        eval_set.len()
    );
    cached("on-policy pairs", &out.join("pairs.stamp"), &stamp, || {
        let model = solve::load(&base, None, &device)?;
        let questions = &train[..p.questions.min(train.len())];
        let pairs = solve::sample_pairs(
            &model,
            &tokenizer,
            questions,
            p,
            config.seed,
            config.max_answer_tokens,
            &device,
        )?;
        if pairs.len() < 4 {
            return Err(Error::Invalid(format!(
                "only {} of {} questions got a wrong answer among {} samples; the base model is too good (or too bad) for pairs — raise `pairs.temperature` or train the base less",
                pairs.len(),
                questions.len(),
                p.samples
            )));
        }
        let sampled = pairs.iter().filter(|p| p.chosen_sampled).count();
        eprintln!(
            "{} pairs from {} questions ({} chosen answers sampled, {} reference)",
            pairs.len(),
            questions.len(),
            sampled,
            pairs.len() - sampled
        );
        let text: String = pairs.iter().map(|p| format!("{}\n", p.to_json())).collect();
        write_file(&pairs_path, &text)
    })?;
    Ok(Prepared {
        base,
        pairs: pairs_path,
        base_accuracy,
        stamp,
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}

/// The short name of a run: `dpo-lr0.0002`, `minordpo-lr0.003`.
pub fn run_name(spec: &config::RunSpec) -> String {
    let loss = spec.loss.name().to_lowercase();
    format!("{loss}-lr{}", spec.learning_rate)
}

/// The train config of one comparison run.
pub fn run_config(
    config: &DemoConfig,
    prepared: &Prepared,
    spec: &config::RunSpec,
    choice: DeviceChoice,
) -> TrainConfig {
    let p = &config.preference;
    let every = (p.max_steps / p.accuracy_points.max(1)).max(1);
    TrainConfig {
        device: choice,
        model: prepared.base.clone(),
        data: prepared.pairs.clone(),
        eval_split: p.eval_split,
        output: config.output.join("runs").join(run_name(spec)),
        loss: spec.loss,
        beta: p.beta,
        learning_rate: spec.learning_rate,
        batch_size: p.batch_size,
        max_steps: p.max_steps,
        warmup_ratio: 0.1,
        lora_r: p.lora_r,
        lora_alpha: p.lora_alpha,
        max_length: config.model.max_position_embeddings,
        seed: config.seed,
        save_steps: every,
        // held-out log-probs are cheap: a dozen points per curve
        eval_steps: (p.max_steps / 12).max(1),
        logging_steps: 5,
        ..TrainConfig::default()
    }
}

/// Greedy accuracy over the run: `(step, accuracy)` at the start (the base model), at every
/// checkpoint and at the end.
fn accuracy_curve(
    config: &DemoConfig,
    prepared: &Prepared,
    run: &TrainConfig,
    device: &Device,
) -> Result<Vec<(usize, f64)>> {
    let tokenizer = Tokenizer::load(&prepared.base)?;
    let problems = eval_problems(config);
    let mut points = vec![(0, prepared.base_accuracy)];
    let mut adapters: Vec<(usize, PathBuf)> = (1..)
        .map(|k| k * run.save_steps)
        .take_while(|s| *s < run.max_steps)
        .map(|s| {
            (
                s,
                run.output.join(format!("checkpoint-{s}")).join("adapter"),
            )
        })
        .collect();
    adapters.push((run.max_steps, run.output.join("adapter")));
    for (step, adapter) in adapters {
        let model = solve::load(&prepared.base, Some(&adapter), device)?;
        points.push((
            step,
            solve::accuracy(
                &model,
                &tokenizer,
                &problems,
                config.max_answer_tokens,
                device,
            )?,
        ));
    }
    Ok(points)
}

/// The whole demo: prepare, run every comparison, write the report and plots. Returns the report
/// path and the printed table.
pub fn run_demo(config: &DemoConfig, choice: DeviceChoice) -> Result<(PathBuf, String)> {
    let started = Instant::now();
    let prepared = prepare(config, choice)?;
    let device = device::select(choice)?.device;
    let mut results = Vec::new();
    for spec in &config.runs {
        let run = run_config(config, &prepared, spec, choice);
        let name = run_name(spec);
        // The device is left out: the same settings on another device reuse the run.
        let settings = TrainConfig {
            device: DeviceChoice::Auto,
            ..run.clone()
        };
        let stamp = chain(
            &prepared.stamp,
            serde_json::json!({
                "run": crate::io::to_ron(&settings),
                "eval_questions": config.eval_questions,
                "max_answer_tokens": config.max_answer_tokens,
            }),
        );
        let curve_path = run.output.join("accuracy.json");
        cached(
            &format!("run {name}"),
            &config.output.join("runs").join(format!("{name}.stamp")),
            &stamp,
            || {
                crate::dpo::train(&run, None)?;
                let curve = accuracy_curve(config, &prepared, &run, &device)?;
                write_file(&curve_path, serde_json::to_string(&curve).expect("json"))
            },
        )?;
        let curve: Vec<(usize, f64)> = serde_json::from_value(read_json(&curve_path)?)
            .map_err(|e| Error::json(&curve_path, e))?;
        results.push(report::RunResult::load(spec.clone(), name, &run, curve)?);
    }
    let (path, table) =
        report::write_report(config, &prepared, &results, started.elapsed().as_secs_f64())?;
    Ok((path, table))
}
