//! End-to-end tests of `minordpo train` and `minordpo eval` on the tiny fixture models: learning
//! works, runs are reproducible, accumulation equals a large batch, outputs are complete, and bad
//! inputs fail with messages that name the file and line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use common::{assert_clean_failure, command_line, minordpo};

fn data(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dpo")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn model() -> String {
    common::model_dir("llama3").to_string_lossy().into_owned()
}

fn train(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let model = model();
    let data = data("standard.jsonl");
    let mut args = command_line(
        "--device cpu train --max-length 48 --lora-r 8 --seed 7",
        &[("--model", &model), ("--output", out)],
    );
    if !extra.contains(&"--data") {
        args.extend_from_slice(&["--data", &data]);
    }
    args.extend_from_slice(extra);
    let output = minordpo(&args);
    assert!(output.status.success(), "{}", common::stderr(&output));
    output
}

/// The per-pair metrics TRL's `DPOTrainer` logs, in training and in evaluation.
const PAIR_METRICS: [&str; 7] = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
];

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn forty_minor_dpo_steps_learn_the_preferences() {
    let tmp = tempfile::tempdir().unwrap();
    let eval = data("standard.jsonl");
    let args = [&["--max-steps", "40", "--eval-data", &eval][..], &QUICK].concat();
    train(tmp.path(), &args);
    let lines = metrics(tmp.path());
    assert_eq!(lines.len(), 40);
    let last = lines.last().unwrap();
    assert!(
        last["eval_rewards/accuracies"].as_f64().unwrap() >= 0.9,
        "{last}"
    );
    assert!(
        last["eval_rewards/margins"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    let step_keys = [
        "step",
        "epoch",
        "grad_norm",
        "learning_rate",
        "tokens_per_second",
        "peak_memory_bytes",
    ];
    for key in step_keys.iter().chain(&PAIR_METRICS) {
        assert!(last.get(key).is_some(), "metrics lack {key}: {last}");
    }
    assert!(
        tmp.path()
            .join("adapter/adapter_model.safetensors")
            .is_file()
    );
    assert!(tmp.path().join("adapter/adapter_config.json").is_file());
    let ron = std::fs::read_to_string(tmp.path().join("config.ron")).unwrap();
    assert!(ron.contains("max_steps: 40"), "{ron}");
}

/// Same number of lines, and `keys` within `tolerance` on every line.
fn assert_metrics_close(a: &[Value], b: &[Value], keys: &[&str], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for key in keys {
            let (x, y) = (x[key].as_f64().unwrap(), y[key].as_f64().unwrap());
            assert!((x - y).abs() < tolerance, "{key}: {x} vs {y}");
        }
    }
}

/// The lines without what the machine measures (throughput, peak memory), which differ between
/// identical runs.
fn without_measurements(lines: Vec<Value>) -> Vec<Value> {
    lines
        .into_iter()
        .map(|mut v| {
            let line = v.as_object_mut().unwrap();
            line.remove("tokens_per_second");
            line.remove("peak_memory_bytes");
            v
        })
        .collect()
}

/// A short run's learning rate and batch (two pairs a step).
const QUICK: [&str; 4] = ["--learning-rate", "1e-3", "--batch-size", "2"];

#[test]
fn same_seed_same_run() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [&["--max-steps", "4"][..], &QUICK].concat();
    train(a.path(), &args);
    train(b.path(), &args);
    assert_eq!(
        without_measurements(metrics(a.path())),
        without_measurements(metrics(b.path()))
    );
    let read = |d: &Path| std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(read(a.path()), read(b.path()));
}

/// Memory-efficient attention in blocks of 3 query rows (many blocks, the last one partial) trains
/// like plain attention: the same losses, gradient norms and margins step after step, so its
/// backward feeds the same updates. Sigmoid DPO: MinorDPO's `max(0, Δl)` has a kink at the
/// first step's `Δl = 0`, where rounding-level differences pick either one-sided gradient.
#[test]
fn blocked_attention_trains_like_plain_attention() {
    let (blocked, plain) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [&["--max-steps", "4", "--loss", "sigmoid"][..], &QUICK].concat();
    train(
        blocked.path(),
        &[&args[..], &["--attention-block", "3"]].concat(),
    );
    train(
        plain.path(),
        &[&args[..], &["--attention-block", "0"]].concat(),
    );
    let (a, b) = (metrics(blocked.path()), metrics(plain.path()));
    assert_eq!(a.len(), 4);
    assert_metrics_close(&a, &b, &["loss", "grad_norm", "rewards/margins"], 1e-5);
}

/// Runs laid out as TRL lays them (two padded rows per pair, no packing) and with every decoder
/// layer recomputed in the backward (the default layout: prompts once, packed) train alike: the
/// same losses, gradient norms and margins step after step (sigmoid DPO, as above).
#[test]
fn layouts_and_recomputed_layers_train_alike() {
    let (two_rows, recomputed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [&["--max-steps", "4", "--loss", "sigmoid"][..], &QUICK].concat();
    let trl_layout = ["--share-prompt", "false", "--max-tokens-per-batch", "0"];
    train(two_rows.path(), &[&args[..], &trl_layout].concat());
    train(
        recomputed.path(),
        &[&args[..], &["--gradient-checkpointing", "true"]].concat(),
    );
    let (a, b) = (metrics(two_rows.path()), metrics(recomputed.path()));
    assert_eq!(a.len(), 4);
    assert_metrics_close(&a, &b, &["loss", "grad_norm", "rewards/margins"], 1e-5);
    let ron = std::fs::read_to_string(recomputed.path().join("config.ron")).unwrap();
    assert!(ron.contains("gradient_checkpointing: true"), "{ron}");
}

#[test]
fn accumulating_eight_micro_batches_equals_one_batch_of_eight() {
    // Eight pairs: the four fixture rows and four variations of them.
    let tmp = tempfile::tempdir().unwrap();
    let rows = std::fs::read_to_string(data("standard.jsonl")).unwrap();
    let more = rows.replace("\"prompt\": \"", "\"prompt\": \"Q: ");
    let eight = tmp.path().join("eight.jsonl");
    std::fs::write(&eight, format!("{rows}{more}")).unwrap();
    let eight = eight.to_str().unwrap();
    let (big, small) = (tmp.path().join("big"), tmp.path().join("small"));
    let common = [
        "--data",
        eight,
        "--max-steps",
        "3",
        "--learning-rate",
        "1e-3",
        "--warmup-steps",
        "1",
    ];
    train(&big, &[&common[..], &["--batch-size", "8"]].concat());
    train(
        &small,
        &[
            &common[..],
            &["--batch-size", "1", "--gradient-accumulation-steps", "8"],
        ]
        .concat(),
    );
    let (a, b) = (metrics(&big), metrics(&small));
    assert_eq!(a.len(), 3);
    assert_metrics_close(&a, &b, &["loss", "grad_norm", "rewards/margins"], 1e-4);
}

#[test]
fn eval_writes_summary_and_per_example_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, per) = (tmp.path().join("eval.json"), tmp.path().join("per.jsonl"));
    let model = model();
    let adapter = data("llama3_adapter");
    let data = data("standard.jsonl");
    let output = minordpo(&command_line(
        "eval --device cpu --max-length 48 --loss sigmoid",
        &[
            ("--model", &model),
            ("--adapter", &adapter),
            ("--data", &data),
            ("--output", out.to_str().unwrap()),
            ("--per-example", per.to_str().unwrap()),
        ],
    ));
    assert!(output.status.success(), "{}", common::stderr(&output));
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(summary["num_examples"], 4);
    for key in PAIR_METRICS {
        assert!(summary[key].is_number(), "{key}: {summary}");
    }
    let lines: Vec<Value> = std::fs::read_to_string(&per)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["line"], 1);
    for key in [
        "policy_chosen_logps",
        "policy_rejected_logps",
        "reference_chosen_logps",
        "reference_rejected_logps",
        "loss",
    ] {
        assert!(lines[0][key].is_number(), "{key}");
    }
}

fn fails_with<S: AsRef<str>>(args: &[S], needles: &[&str]) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    assert_clean_failure(&minordpo(&args), needles);
}

#[test]
fn bad_training_inputs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model();
    let out = tmp.path().join("out");
    let out = out.to_str().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    };
    let run = |data: &str| -> Vec<String> {
        [
            "--device", "cpu", "train", "--model", &model, "--data", data, "--output", out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let truncated = write(
        "t.jsonl",
        b"{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"cho",
    );
    fails_with(&run(&truncated), &["t.jsonl:2: bad JSON"]);
    let missing = write("m.jsonl", b"{\"prompt\": \"a\", \"chosen\": \"b\"}\n");
    fails_with(&run(&missing), &["m.jsonl:1: missing field `rejected`"]);
    let wrong = write(
        "w.jsonl",
        b"{\"prompt\": \"a\", \"chosen\": [1], \"rejected\": \"c\"}\n",
    );
    fails_with(&run(&wrong), &["w.jsonl:1: field `chosen`"]);
    let empty = write("e.jsonl", b"");
    fails_with(&run(&empty), &["e.jsonl", "no usable rows"]);
    let garbage = write("g.jsonl", &[0xff, 0xfe, 0x00, 0x13, 0x80]);
    fails_with(&run(&garbage), &["g.jsonl"]);
    fails_with(
        &run(&tmp.path().join("nope.jsonl").to_string_lossy()),
        &["nope.jsonl"],
    );

    let no_weights = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            common::model_dir("llama3").join(name),
            no_weights.path().join(name),
        )
        .unwrap();
    }
    let standard = data("standard.jsonl");
    fails_with(
        &[
            "--device",
            "cpu",
            "train",
            "--model",
            no_weights.path().to_str().unwrap(),
            "--data",
            &standard,
            "--output",
            out,
        ],
        &["model.safetensors", "not found"],
    );

    let config = write("bad.ron", b"(\n  beta: 0.1,\n  betta: 2.0,\n)\n");
    fails_with(&["train", "--config", &config], &["bad.ron:3", "betta"]);
    // --data without --model is not the built-in task: the missing model is named
    fails_with(
        &["train", "--device", "cpu", "--data", &standard],
        &["config field `model`"],
    );
}

#[test]
fn resuming_a_checkpoint_reproduces_the_uninterrupted_run() {
    let (straight, resumed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [&["--max-steps", "6", "--save-steps", "3"][..], &QUICK].concat();
    train(straight.path(), &args);
    assert!(
        straight
            .path()
            .join("checkpoint-3/adapter/adapter_model.safetensors")
            .is_file()
    );
    assert!(
        straight
            .path()
            .join("checkpoint-3/optimizer.safetensors")
            .is_file()
    );
    // A run that stopped after its step-3 checkpoint: only the checkpoint is left.
    common::copy_dir(
        &straight.path().join("checkpoint-3"),
        &resumed.path().join("checkpoint-3"),
    );
    train(resumed.path(), &[&args[..], &["--resume"]].concat());
    let a = without_measurements(metrics(straight.path()));
    let b = without_measurements(metrics(resumed.path()));
    assert_eq!(b.len(), 3);
    assert_eq!(&a[3..], &b[..]);
    let read = |d: &Path| std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(read(straight.path()), read(resumed.path()));

    let empty = tempfile::tempdir().unwrap();
    let out = empty.path().to_str().unwrap();
    let (model, data) = (model(), data("standard.jsonl"));
    fails_with(
        &[
            "--device", "cpu", "train", "--model", &model, "--data", &data, "--output", out,
            "--resume",
        ],
        &["no checkpoint"],
    );
}

/// The last step writes a checkpoint, as transformers' Trainer does, so a finished run continues
/// with `--resume` and a larger `max_steps`.
#[test]
fn a_finished_run_continues_with_a_larger_max_steps() {
    let out = tempfile::tempdir().unwrap();
    let args = QUICK;
    train(out.path(), &[&args[..], &["--max-steps", "3"]].concat());
    assert!(out.path().join("checkpoint-3/state.json").is_file());
    let output = train(
        out.path(),
        &[&args[..], &["--max-steps", "5", "--resume"]].concat(),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming from"), "{stderr}");
    let steps: Vec<u64> = metrics(out.path())
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 5]);
    assert!(
        out.path()
            .join("checkpoint-5/adapter/adapter_model.safetensors")
            .is_file()
    );
}

#[test]
fn precomputed_reference_matches_the_live_reference_and_is_cached() {
    let (cached, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // DPO, not MinorDPO: at the first step the policy equals the reference, so MinorDPO's
    // max(0, Δl) sits exactly on its kink, and rounding noise of ±1e-7 between the cached and the
    // live reference (different batch shapes) flips which subgradient each pair takes.
    let args = [&["--max-steps", "3", "--loss", "sigmoid"][..], &QUICK].concat();
    let first = train(cached.path(), &args);
    assert!(String::from_utf8_lossy(&first.stderr).contains("reference log-probs: computing"));
    assert!(cached.path().join("reference_logps.json").is_file());
    let second = train(cached.path(), &args);
    assert!(String::from_utf8_lossy(&second.stderr).contains("reference log-probs: reusing"));
    train(
        live.path(),
        &[&args[..], &["--precompute-reference", "false"]].concat(),
    );
    assert_metrics_close(
        &metrics(cached.path()),
        &metrics(live.path()),
        &["loss", "rewards/chosen", "rewards/rejected", "grad_norm"],
        1e-5,
    );
}

#[test]
fn shipped_configs_parse() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "demo.ron") {
            minordpo::io::read_ron::<minordpo::demo::DemoConfig>(&path)
                .and_then(|demo| demo.validate())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        } else if path.extension().is_some_and(|e| e == "ron") {
            minordpo::dpo::TrainConfig::from_ron_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            count += 1;
        }
    }
    assert!(count >= 3);
}

#[test]
fn configuration_doc_lists_every_field() {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    // Each config's fields must be listed in its own section of the reference.
    let section = |title: &str| -> String {
        let start = doc
            .find(title)
            .unwrap_or_else(|| panic!("docs/configuration.md lacks the section {title}"));
        let rest = &doc[start + title.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    };
    let check = |title: &str, fields: Vec<String>| {
        let text = section(title);
        for field in fields {
            assert!(
                text.contains(&format!("| `{field}` |")),
                "docs/configuration.md, {title}: lacks `{field}`"
            );
        }
    };
    // The shared training fields in their own section, each command's own fields in its section.
    let shared = minordpo::train::settings::SHARED_FIELDS;
    let own = |fields: &[(&str, &str)]| {
        fields
            .iter()
            .map(|(f, _)| f.to_string())
            .filter(|f| !shared.contains(&f.as_str()))
            .collect()
    };
    check(
        "## Shared by `train` and `sft`",
        shared.iter().map(|f| f.to_string()).collect(),
    );
    check("## `train`", own(minordpo::dpo::FIELDS));
    check("## `sft`", own(minordpo::sft::SFT_FIELDS));
    // The demo config's fields, nested ones as `section.field`.
    let demo = serde_json::to_value(minordpo::demo::DemoConfig::embedded()).unwrap();
    let mut fields = Vec::new();
    for (key, value) in demo.as_object().unwrap() {
        match value {
            Value::Object(inner) if key != "model" => {
                fields.extend(inner.keys().map(|k| format!("{key}.{k}")));
            }
            _ => fields.push(key.clone()),
        }
    }
    check("## `demo`", fields);
}

#[test]
fn a_diverging_run_stops_and_names_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = (model(), data("standard.jsonl"));
    let out = tmp.path().to_str().unwrap();
    fails_with(
        &[
            "--device",
            "cpu",
            "train",
            "--model",
            &model,
            "--data",
            &data,
            "--output",
            out,
            "--max-length",
            "48",
            "--max-steps",
            "6",
            "--learning-rate",
            "1e30",
            "--max-grad-norm",
            "0",
            "--save-steps",
            "1",
        ],
        &["non-finite", "last good checkpoint", "checkpoint-2"],
    );
    assert!(
        tmp.path()
            .join("checkpoint-2/adapter/adapter_model.safetensors")
            .is_file()
    );
    assert!(
        !tmp.path().join("adapter").exists(),
        "no final adapter from a diverged run"
    );
}
