//! End-to-end tests of `minordpo sft` and `minordpo demo`: LoRA and full-parameter SFT learn their
//! data and write loadable results, bad SFT rows fail with the file, line and field, and settings
//! full SFT cannot honour with the field and the reason; a shortened
//! demo builds the data, tokenizer, a from-scratch base model and on-policy pairs, runs its sweep
//! and writes a report and figures that parse, `plot` overlays two of its runs; a second run
//! reuses every step; `train` on the built-in task reuses the same base model and pairs and ends
//! with accuracy, its interval and next steps.
//! (One test binary for both: every binary links Burn, which costs CI time.)

mod common;

use std::path::Path;

use common::{assert_clean_failure, command_line, minordpo, words};
use serde_json::Value;

fn write_rows(dir: &Path) -> String {
    let rows = [
        r#"{"prompt": "The capital of France is", "completion": " Paris."}"#,
        r#"{"prompt": "Two plus two is", "completion": " four."}"#,
        r#"{"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there!"}]}"#,
        r#"{"prompt": "The sky is", "completion": " blue."}"#,
    ];
    let path = dir.join("sft.jsonl");
    std::fs::write(&path, rows.join("\n")).unwrap();
    path.to_string_lossy().into_owned()
}

/// Asserts that `text` says each of `needles`.
fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "lacks {needle:?}: {text}");
    }
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn sft(tmp: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    sft_run(tmp, name, extra).0
}

/// An `sft` run on the fixture model: its output directory and stderr.
fn sft_run(tmp: &Path, name: &str, extra: &[&str]) -> (std::path::PathBuf, String) {
    let model = common::model_dir("llama3");
    let data = write_rows(tmp);
    let out = tmp.join(name);
    let mut args = command_line(
        "--device cpu sft --batch-size 4 --logging-steps 1 --warmup-steps 1 --max-length 64",
        &[
            ("--model", model.to_str().unwrap()),
            ("--data", &data),
            ("--output", out.to_str().unwrap()),
        ],
    );
    args.extend_from_slice(extra);
    let result = minordpo(&args);
    assert!(result.status.success(), "{}", common::stderr(&result));
    (out, common::stderr(&result))
}

/// LoRA on frozen weights stored in bf16 (f32 in the fixture), as a real bf16 checkpoint's
/// `auto` keeps them; the run reports how they are stored and multiplied.
#[test]
fn lora_sft_learns_and_writes_a_peft_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = words("--max-steps 25 --learning-rate 1e-2 --lora-r 8 --frozen-precision bf16");
    let (out, stderr) = sft_run(tmp.path(), "lora", &extra);
    assert_contains(&stderr, &["frozen weights: bf16, multiplied in"]);
    let l = losses(&out);
    assert_eq!(l.len(), 25);
    assert!(l[24] < 0.5 * l[0], "loss {} → {}", l[0], l[24]);
    let adapter = out.join("adapter");
    let mut model = minordpo::model::CausalLm::load(
        &common::model_dir("llama3"),
        &burn::prelude::Device::flex(),
    )
    .unwrap();
    minordpo::model::lora::load_peft(&mut model, &adapter, &burn::prelude::Device::flex()).unwrap();
    let line: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    for key in [
        "mean_token_accuracy",
        "grad_norm",
        "learning_rate",
        "tokens_per_second",
        "peak_memory_bytes",
        "epoch",
    ] {
        assert!(line[key].is_number(), "{key} missing: {line}");
    }
}

#[test]
fn full_sft_learns_and_writes_a_whole_model() {
    let tmp = tempfile::tempdir().unwrap();
    let extra = words("--method full --max-steps 20 --learning-rate 3e-3 --save-steps 10");
    let out = sft(tmp.path(), "full", &extra);
    // The checkpoint holds the whole model beside its optimizer state.
    for dir in [out.join("model"), out.join("checkpoint-10/model")] {
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            assert!(dir.join(file).is_file(), "{}/{file}", dir.display());
        }
    }
    let l = losses(&out);
    assert!(l[19] < 0.5 * l[0], "loss {} → {}", l[0], l[19]);
    // the trained model generates its training completion
    let model = out.join("model");
    let args = command_line(
        "--device cpu generate --max-new-tokens 6 --temperature 0",
        &[
            ("--model", model.to_str().unwrap()),
            ("--prompt", "The capital of France is"),
        ],
    );
    let generated = minordpo(&args);
    assert!(generated.status.success(), "{}", common::stderr(&generated));
    assert!(
        String::from_utf8_lossy(&generated.stdout).contains("Paris"),
        "{}",
        String::from_utf8_lossy(&generated.stdout)
    );
}

#[test]
fn bad_sft_rows_and_settings_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::model_dir("llama3");
    let check = |name: &str, text: &str, needles: &[&str]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = tmp.path().join("out");
        let out = minordpo(&command_line(
            "--device cpu sft",
            &[
                ("--model", model.to_str().unwrap()),
                ("--data", path.to_str().unwrap()),
                ("--output", output.to_str().unwrap()),
            ],
        ));
        assert_clean_failure(&out, needles);
    };
    check(
        "a.jsonl",
        "{\"prompt\": \"x\", \"completion\": \"y\"}\n{\"prompt\": \"x\"}\n",
        &["a.jsonl:2: missing field `completion`"],
    );
    check(
        "b.jsonl",
        "{\"messages\": [{\"role\": \"assistant\", \"content\": \"y\"}, {\"role\": \"user\", \"content\": \"x\"}]}\n",
        &["b.jsonl:1: field `messages`", "the last from the assistant"],
    );
    check(
        "c.jsonl",
        "{\"prompt\": \"x\", \"completion\": 3}\n",
        &["c.jsonl:1: field `completion`", "found a number"],
    );
    check("d.jsonl", "", &["d.jsonl", "no usable rows"]);
    // Settings that full SFT cannot honour: its weights are trainable f32.
    let (data, full) = (write_rows(tmp.path()), tmp.path().join("full"));
    for (flags, needles) in [
        (
            "--method full --frozen-precision q4",
            &[
                "config field `frozen_precision`",
                "method full trains every weight in f32",
            ][..],
        ),
        (
            "--method full --matmul-precision bf16",
            &["matmul_precision: bf16 is not available", "use auto or f32"][..],
        ),
    ] {
        let mut args = command_line(
            "--device cpu sft --max-steps 1",
            &[
                ("--model", model.to_str().unwrap()),
                ("--data", &data),
                ("--output", full.to_str().unwrap()),
            ],
        );
        args.extend(words(flags));
        assert_clean_failure(&minordpo(&args), needles);
    }
}

const SHORT_DEMO: &str = r#"(
    output: "OUTPUT",
    seed: 3,
    questions: (train: 300, validation: 8, test: 12),
    max_answer_tokens: 24,
    vocab_size: 300,
    model: (hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2,
            num_key_value_heads: 1, max_position_embeddings: 160, tie_word_embeddings: true),
    base: (learning_rate: 3e-3, batch_size: 8, max_steps: 6, warmup_steps: 2, weight_decay: 0.0, adam_beta2: 0.98),
    pairs: (questions: 16, samples: 2, temperature: 1.0, reference_chosen: true),
    preference: (beta: 0.1, batch_size: 4, max_steps: 4, lora_r: 4, lora_alpha: 8.0,
                 eval_split: 0.25, eval_steps: 2),
    sweep: (
        losses: [(loss: sigmoid), (loss: minor_dpo)],
        extras: [(loss: sigmoid, sft_weight: 1.0)],
        learning_rates: [1e-4, 1e-2],
        seeds: [1, 2],
    ),
)"#;

fn run(args: &[&str]) -> (String, String) {
    let out = minordpo(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn assert_svg(path: &Path, min_lines: usize) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let lines = doc
        .descendants()
        .filter(|n| matches!(n.tag_name().name(), "polyline" | "circle"))
        .count();
    assert!(lines >= min_lines, "{}: {lines} data lines", path.display());
}

#[test]
fn a_short_demo_runs_end_to_end_and_train_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("demo");
    let config = tmp.path().join("demo.ron");
    let text = SHORT_DEMO.replace("OUTPUT", &output.to_string_lossy().replace('\\', "/"));
    std::fs::write(&config, text).unwrap();
    let config = config.to_str().unwrap();

    let (stdout, stderr) = run(&["--device", "cpu", "demo", "--config", config]);
    // the printed table: one row per loss, one column per learning rate, mean ± CI per cell
    assert_contains(
        &stdout,
        &[
            "| test accuracy % | lr 0.0001 | lr 0.01 |",
            "| DPO | ",
            "| MinorDPO | ",
            "| RPO | ",
        ],
    );
    assert_contains(
        &stderr,
        &["pairs from 16 questions", "run 10/10 rpo-lr0.01-seed1"],
    );

    let report = std::fs::read_to_string(output.join("report.md")).unwrap();
    assert!(report.starts_with("# MinorDPO vs DPO"));
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| DPO |") || l.starts_with("| MinorDPO |"))
        .collect();
    // test, validation and drift tables, and the selection table
    assert_eq!(rows.len(), 8, "{report}");
    let cells: Vec<&str> = rows[0].split('|').map(str::trim).collect();
    for cell in &cells[2..4] {
        let (mean, half) = cell
            .split_once(" ± ")
            .unwrap_or_else(|| panic!("{}", rows[0]));
        let (mean, half): (f64, f64) = (mean.parse().unwrap(), half.parse().unwrap());
        assert!((0.0..=100.0).contains(&mean) && half >= 0.0, "{}", rows[0]);
    }
    let rpo = report.lines().find(|l| l.starts_with("| RPO |")).unwrap();
    assert!(rpo.contains("(1 seed)") && rpo.contains("(± n/a)"), "{rpo}");
    for section in [
        "## Settings chosen on the validation split",
        "## What this sweep shows",
        "- **MinorDPO against DPO**",
        "![Test accuracy against learning rate](sweep.svg)",
    ] {
        assert!(report.contains(section), "{section}");
    }
    // the key figure: a line and a band per loss, and the base model's
    assert_svg(&output.join("sweep.svg"), 4);
    let sweep = std::fs::read_to_string(output.join("sweep.svg")).unwrap();
    assert_eq!(sweep.matches("<polygon").count(), 3, "DPO, MinorDPO, base");
    for svg in [
        "logps-minordpo.svg",
        "accuracy-minordpo.svg",
        "accuracy-rpo.svg",
    ] {
        assert!(report.contains(svg), "{svg}");
        assert_svg(&output.join(svg), 2);
    }
    // every run has its curves, validation accuracy from step 0 at every eval, test grades
    let run_dir = output.join("runs/minordpo-lr0.01-seed2");
    assert_svg(&run_dir.join("curves.svg"), 8);
    let curves = minordpo::plot::RunCurves::load(&run_dir).unwrap();
    let steps: Vec<f64> = curves.metrics["eval_accuracy"]
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(steps, vec![0.0, 2.0, 4.0]);
    let test: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("test.json")).unwrap()).unwrap();
    assert_eq!(test["test"].as_str().unwrap().len(), 12);

    // `plot` overlays runs in one SVG
    let overlay = tmp.path().join("overlay.svg");
    let (stdout, _) = run(&[
        "plot",
        output.join("runs/dpo-lr0.01-seed1").to_str().unwrap(),
        run_dir.to_str().unwrap(),
        "--output",
        overlay.to_str().unwrap(),
    ]);
    assert_contains(&stdout, &["overlay.svg (2 runs)"]);
    assert_svg(&overlay, 16);
    let text = std::fs::read_to_string(&overlay).unwrap();
    assert!(text.contains("dpo-lr0.01-seed1") && text.contains("minordpo-lr0.01-seed2"));
    let out = minordpo(&["plot", tmp.path().join("nowhere").to_str().unwrap()]);
    assert_clean_failure(&out, &["nowhere", "metrics.jsonl"]);

    // the base model is a Hugging Face directory; the pairs are a valid preference file
    let base = output.join("base/model");
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(base.join(file).is_file(), "{file}");
    }
    let loaded = minordpo::data::load_preferences(&output.join("pairs.jsonl")).unwrap();
    assert_eq!(loaded.rows.len(), 16);

    // a bad demo config is named before anything is built
    let bad = tmp.path().join("bad.ron");
    std::fs::write(
        &bad,
        std::fs::read_to_string(config)
            .unwrap()
            .replace("seeds: [1, 2]", "seeds: [1, 1]"),
    )
    .unwrap();
    let out = minordpo(&["--device", "cpu", "demo", "--config", bad.to_str().unwrap()]);
    assert_clean_failure(
        &out,
        &["demo config field `sweep.seeds`: `1` is listed twice"],
    );

    // everything is cached: a second run rebuilds nothing
    let (_, stderr) = run(&["--device", "cpu", "demo", "--config", config]);
    assert!(!stderr.contains("building"), "{stderr}");
    // data, tokenizer, init, base, base accuracy, pairs and the ten runs
    assert_eq!(stderr.matches("reusing").count(), 16, "{stderr}");

    // train on the built-in task with this demo's base model and pairs
    let train_out = tmp.path().join("train");
    let builtin = format!("builtin:{config}");
    let (stdout, stderr) = run(&[
        "--device",
        "cpu",
        "train",
        "--model",
        &builtin,
        "--data",
        &builtin,
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--output",
        train_out.to_str().unwrap(),
    ]);
    assert!(!stderr.contains("building"), "{stderr}");
    assert_contains(
        &stdout,
        &[
            "greedy accuracy on 12 test questions",
            "(base) →",
            "change: ",
            "paired",
        ],
    );
    assert_svg(&train_out.join("curves.svg"), 4);
    assert_contains(&stdout, &["try next:", "--adapter"]);
    assert!(
        train_out
            .join("adapter/adapter_model.safetensors")
            .is_file()
    );
}

/// `sft --resume` continues from a checkpoint to the same result as an uninterrupted run, for
/// LoRA (adapter + optimizer) and full fine-tuning (the whole model + optimizer).
#[test]
fn sft_resumes_to_the_uninterrupted_result() {
    let tmp = tempfile::tempdir().unwrap();
    for (method, result, file) in [
        ("lora", "adapter", "adapter_model.safetensors"),
        ("full", "model", "model.safetensors"),
    ] {
        let args = ["--method", method, "--max-steps", "4", "--save-steps", "2"];
        let straight = sft(tmp.path(), &format!("{method}-straight"), &args);
        let resumed = tmp.path().join(format!("{method}-resumed"));
        common::copy_dir(
            &straight.join("checkpoint-2"),
            &resumed.join("checkpoint-2"),
        );
        sft(
            tmp.path(),
            &format!("{method}-resumed"),
            &[&args[..], &["--resume"]].concat(),
        );
        let read = |d: &Path| std::fs::read(d.join(result).join(file)).unwrap();
        assert_eq!(read(&straight), read(&resumed), "{method}");
        let steps = |d: &Path| losses(d).len();
        assert_eq!(steps(&resumed), 2, "{method}: steps 3 and 4 only");
        assert_eq!(steps(&straight), 4);
    }
}
