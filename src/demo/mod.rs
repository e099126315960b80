//! `minordpo demo`: the whole teaching experiment on the built-in arithmetic task — train,
//! validation and test questions, a tokenizer trained here, a tiny Llama trained from scratch
//! (full-parameter SFT), on-policy pairs from it, then a sweep of DPO, MinorDPO and extras over
//! learning rates and seeds, each run scored by greedy accuracy (validation during training, test
//! at the end) and by how the chosen/rejected log-probs moved — ending in `report.md` and SVG
//! figures.
//!
//! Every step records the settings it was built with (`*.stamp`); a later run with the same
//! settings reuses the step, so `train`'s default config can share the base model and pairs.

pub mod builtin;
pub mod config;
pub mod report;
pub mod solve;
pub mod stats;
pub mod sweep;
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
use sweep::RunSpec;
use task::{Problem, Splits, tokenizer::train_tokenizer};

/// Outputs of the shared steps.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The SFT-trained base model (Hugging Face directory).
    pub base: PathBuf,
    /// On-policy preference pairs (conversational JSONL).
    pub pairs: PathBuf,
    /// Whether the base model's greedy answer is right, per validation question.
    pub base_validation: Vec<bool>,
    /// The same per test question.
    pub base_test: Vec<bool>,
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

/// The config's train, validation and test questions.
pub fn splits(config: &DemoConfig) -> Splits {
    task::split(config.seed, config.questions)
}

/// Per-question results as text (`1` right, `0` wrong), compact in JSON.
fn grades_text(graded: &[bool]) -> String {
    graded.iter().map(|&g| if g { '1' } else { '0' }).collect()
}

/// The grades of `split` in the JSON file `path`, which must hold one per question.
fn read_grades(path: &Path, split: &str, questions: usize) -> Result<Vec<bool>> {
    let text = crate::io::read_json::<serde_json::Value>(path)?[split]
        .as_str()
        .unwrap_or("")
        .to_string();
    if text.len() != questions || !text.chars().all(|c| c == '0' || c == '1') {
        return Err(Error::Invalid(format!(
            "{}: field `{split}` must hold one 0/1 grade per question ({questions}); delete the \
             step's `.stamp` file (in the demo's output) to rebuild it",
            path.display()
        )));
    }
    Ok(text.chars().map(|c| c == '1').collect())
}

/// Builds (or reuses) the data, tokenizer, base model and pairs.
pub fn prepare(config: &DemoConfig, choice: DeviceChoice) -> Result<Prepared> {
    config.validate()?;
    let out = &config.output;
    let Splits {
        train,
        validation,
        test,
    } = splits(config);
    let data_dir = out.join("data");
    let stamp = serde_json::json!({"seed": config.seed, "questions": config.questions}).to_string();
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
        let answered = |p: &Problem| {
            serde_json::json!({
            "question": p.question, "answer": p.result(), "worked_answer": p.worked_answer()})
        };
        write_file(
            &data_dir.join("validation.jsonl"),
            rows(&validation, &answered),
        )?;
        write_file(&data_dir.join("test.jsonl"), rows(&test, &answered))
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
    let eval_stamp = chain(
        &stamp,
        serde_json::json!({"max_answer_tokens": config.max_answer_tokens}),
    );
    let stamp = chain(&eval_stamp, serde_json::to_value(p).expect("json"));
    cached(
        "base accuracy",
        &out.join("base_accuracy.stamp"),
        &eval_stamp,
        || {
            let model = solve::load(&base, None, &device)?;
            let grade = |problems: &[Problem]| {
                solve::graded(
                    &model,
                    &tokenizer,
                    problems,
                    config.max_answer_tokens,
                    &device,
                )
            };
            let (v, t) = (grade(&validation)?, grade(&test)?);
            write_file(
                &accuracy_path,
                serde_json::json!({"validation": grades_text(&v), "test": grades_text(&t)})
                    .to_string(),
            )
        },
    )?;
    let base_validation = read_grades(&accuracy_path, "validation", validation.len())?;
    let base_test = read_grades(&accuracy_path, "test", test.len())?;
    eprintln!(
        "base model: greedy accuracy {} on {} validation and {} on {} test questions",
        stats::accuracy_text(&base_validation),
        base_validation.len(),
        stats::accuracy_text(&base_test),
        base_test.len()
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
        base_validation,
        base_test,
        stamp,
    })
}

/// The train config of one run of the sweep.
pub fn run_config(
    config: &DemoConfig,
    prepared: &Prepared,
    spec: &RunSpec,
    choice: DeviceChoice,
) -> TrainConfig {
    let p = &config.preference;
    TrainConfig {
        device: choice,
        model: prepared.base.clone(),
        data: prepared.pairs.clone(),
        eval_split: p.eval_split,
        output: config.output.join("runs").join(spec.name()),
        loss: spec.variant.loss,
        sft_weight: spec.variant.sft_weight,
        beta: p.beta,
        learning_rate: spec.learning_rate,
        batch_size: p.batch_size,
        max_steps: p.max_steps,
        warmup_ratio: 0.1,
        lora_r: p.lora_r,
        lora_alpha: p.lora_alpha,
        max_length: config.model.max_position_embeddings,
        seed: spec.seed,
        save_steps: 0,
        eval_steps: p.eval_steps,
        logging_steps: 5,
        ..TrainConfig::default()
    }
}

/// The probe a run on the built-in task trains with: greedy accuracy on the validation
/// questions, `eval_accuracy` in its metrics.
pub fn accuracy_probe(
    config: &DemoConfig,
    prepared: &Prepared,
    device: &Device,
) -> Result<solve::AccuracyProbe> {
    Ok(solve::AccuracyProbe {
        problems: splits(config).validation,
        tokenizer: Tokenizer::load(&prepared.base)?,
        max_tokens: config.max_answer_tokens,
        device: device.clone(),
        at_start: Some(stats::fraction(&prepared.base_validation)),
    })
}

/// Copies the reference log-probs of an earlier run with the same seed (the same base model and
/// held-out split, so the same training pairs) into `output`: the cache's key still decides
/// whether they are used.
fn seed_reference_cache(
    earlier: &[RunSpec],
    spec: &RunSpec,
    config: &DemoConfig,
    output: &Path,
) -> Result<()> {
    let file = crate::dpo::reference_cache::FILE;
    let runs = config.output.join("runs");
    let found = earlier
        .iter()
        .filter(|e| e.seed == spec.seed)
        .map(|e| runs.join(e.name()).join(file))
        .find(|path| path.is_file());
    if let Some(path) = found {
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        write_file(&output.join(file), text)?;
    }
    Ok(())
}

/// The whole demo: prepare, run the sweep, write the report and figures. Returns the report
/// path and the printed table.
pub fn run_demo(config: &DemoConfig, choice: DeviceChoice) -> Result<(PathBuf, String)> {
    let started = Instant::now();
    let prepared = prepare(config, choice)?;
    let device = device::select(choice)?.device;
    let tokenizer = Tokenizer::load(&prepared.base)?;
    let test = splits(config).test;
    let plan = config.sweep.plan();
    // One probe serves every run: the same validation questions, the same base accuracy at step 0.
    let mut probe = accuracy_probe(config, &prepared, &device)?;
    let mut results = Vec::new();
    for (i, spec) in plan.iter().enumerate() {
        let run = run_config(config, &prepared, spec, choice);
        let name = spec.name();
        // The device is left out: the same settings on another device reuse the run.
        let settings = TrainConfig {
            device: DeviceChoice::Auto,
            ..run.clone()
        };
        let stamp = chain(
            &prepared.stamp,
            serde_json::json!({
                "run": crate::io::to_ron(&settings),
                "max_answer_tokens": config.max_answer_tokens,
            }),
        );
        let test_path = run.output.join("test.json");
        cached(
            &format!("run {}/{} {name}", i + 1, plan.len()),
            &config.output.join("runs").join(format!("{name}.stamp")),
            &stamp,
            || {
                seed_reference_cache(&plan[..i], spec, config, &run.output)?;
                crate::dpo::train(&run, None, Some(&mut probe))?;
                let model =
                    solve::load(&prepared.base, Some(&run.output.join("adapter")), &device)?;
                let graded =
                    solve::graded(&model, &tokenizer, &test, config.max_answer_tokens, &device)?;
                write_file(
                    &test_path,
                    serde_json::json!({"test": grades_text(&graded)}).to_string(),
                )
            },
        )?;
        let test_grades = read_grades(&test_path, "test", test.len())?;
        results.push(report::RunResult::load(*spec, &run, test_grades)?);
    }
    report::write_report(config, &prepared, &results, started.elapsed().as_secs_f64())
}
