//! End-to-end tests of the `minordpo` binary: greedy generation equals transformers' text, and
//! bad inputs end with a non-zero exit and a message naming the file — never a panic.

mod common;

use std::path::Path;
use std::process::Output;

use common::{
    assert_clean_failure, command_line, expected_json, minordpo, model_dir, stderr, words,
};

/// Copies a fixture model into a fresh temporary directory for tampering.
fn copy_model(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(model_dir(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

#[test]
fn generate_greedy_prints_transformers_text() {
    for name in ["qwen2", "llama3"] {
        let dir = model_dir(name);
        let case = &expected_json(name)["greedy"][1];
        let out = minordpo(&command_line(
            "--device cpu generate --temperature 0 --max-new-tokens 24",
            &[
                ("--model", dir.to_str().unwrap()),
                ("--prompt", case["prompt"].as_str().unwrap()),
            ],
        ));
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            String::from_utf8(out.stdout.clone()).unwrap(),
            case["text"].as_str().unwrap(),
            "{name}"
        );
        assert!(stderr(&out).contains("device: cpu"), "{}", stderr(&out));
    }
}

#[test]
fn generate_chat_with_system_and_sampling_is_reproducible() {
    let dir = model_dir("qwen3");
    let run = |seed: &str| {
        let mut args = command_line(
            "generate --device cpu --chat Hi --temperature 0.8 --top-p 0.9 --top-k 20",
            &[
                ("--model", dir.to_str().unwrap()),
                ("--system", "Be brief."),
            ],
        );
        args.extend(["--seed", seed, "--max-new-tokens", "12"]);
        let out = minordpo(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    assert_eq!(run("5"), run("5"));
}

#[test]
fn devices_lists_and_names_the_auto_choice() {
    let out = minordpo(&["devices"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("auto: "), "{text}");
}

#[test]
fn help_explains_every_generate_flag() {
    let out = minordpo(&["generate", "--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--model",
        "--prompt",
        "--chat",
        "--system",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--seed",
        "--device",
    ] {
        assert!(text.contains(flag), "help lacks {flag}: {text}");
    }
}

fn generate_in(dir: &Path) -> Output {
    minordpo(&command_line(
        "generate --device cpu --prompt Hi --max-new-tokens 2",
        &[("--model", dir.to_str().unwrap())],
    ))
}

/// `generate` on the model in `dir` fails cleanly, saying each of `needles`.
fn generate_fails(dir: &Path, needles: &[&str]) {
    assert_clean_failure(&generate_in(dir), needles);
}

#[test]
fn missing_model_directory_names_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = generate_in(&tmp.path().join("nope"));
    assert_clean_failure(&out, &["tokenizer.json"]);
}

#[test]
fn unsupported_architecture_names_found_and_supported() {
    let tmp = copy_model("qwen2");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("Qwen2ForCausalLM", "GPT2LMHeadModel");
    std::fs::write(&path, text).unwrap();
    let out = generate_in(tmp.path());
    assert_clean_failure(
        &out,
        &["config.json", "GPT2LMHeadModel", "Qwen3ForCausalLM"],
    );
}

#[test]
fn missing_tokenizer_is_named() {
    let tmp = copy_model("qwen2");
    std::fs::remove_file(tmp.path().join("tokenizer.json")).unwrap();
    generate_fails(tmp.path(), &["tokenizer.json", "not found"]);
}

#[test]
fn missing_weights_file_is_named() {
    let tmp = copy_model("qwen2");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    generate_fails(tmp.path(), &["model.safetensors", "not found"]);
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let tmp = copy_model("qwen2");
    let path = tmp.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "model.norm.weight")
        .collect();
    safetensors::serialize_to_file(kept.clone(), None, &path).unwrap();
    generate_fails(tmp.path(), &["missing tensor `model.norm.weight`"]);

    let mut extra = kept;
    let (_, view) = st.tensors().into_iter().next().unwrap();
    extra.push(("model.extra_thing.weight".to_string(), view));
    extra.push((
        "model.norm.weight".to_string(),
        st.tensor("model.norm.weight").unwrap(),
    ));
    safetensors::serialize_to_file(extra, None, &path).unwrap();
    generate_fails(tmp.path(), &["unexpected", "model.extra_thing.weight"]);
}

#[test]
fn corrupt_weights_and_config_are_reported() {
    let tmp = copy_model("qwen2");
    std::fs::write(tmp.path().join("model.safetensors"), b"\x00garbage\xff").unwrap();
    generate_fails(tmp.path(), &["model.safetensors", "safetensors"]);
    std::fs::write(tmp.path().join("config.json"), b"{\"vocab_size\": 3").unwrap();
    generate_fails(tmp.path(), &["config.json", "invalid JSON"]);
}

#[test]
fn generate_applies_a_peft_adapter() {
    let dir = model_dir("qwen2");
    let adapter = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dpo/qwen2_adapter");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--device",
            "cpu",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            "--show-token-ids",
        ];
        args.extend_from_slice(extra);
        let out = minordpo(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    let ids = |log: String| {
        log.lines()
            .find(|l| l.starts_with("generated ids"))
            .unwrap()
            .to_string()
    };
    let base = ids(run(&[]));
    let tuned = ids(run(&["--adapter", adapter.to_str().unwrap()]));
    assert_ne!(base, tuned, "the adapter should change greedy output");
}

#[test]
fn bench_prints_one_json_line_with_its_figures() {
    let model = model_dir("llama3");
    for (what, value) in [("--preset", "tiny"), ("--model", model.to_str().unwrap())] {
        let mut args = words("--device cpu bench --batch-size 2 --seq-len 16 --steps 2");
        args.extend(["--warmup", "0", "--logprob-chunk", "8", what, value]);
        let out = minordpo(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        for key in [
            "tokens_per_second",
            "step_ms_median",
            "gflops_per_second",
            "gflops_per_step",
        ] {
            let v = report[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}: {report}"));
            assert!(v.is_finite() && v > 0.0, "{key}: {report}");
        }
        assert_eq!(report["step_ms"].as_array().unwrap().len(), 2);
        assert!(
            report["parameters"].as_u64().unwrap()
                > report["trainable_parameters"].as_u64().unwrap()
        );
        if cfg!(unix) {
            assert!(
                report["peak_memory_bytes"].as_u64().unwrap() > 1_000_000,
                "{report}"
            );
        }
    }
    let out = minordpo(&["--device", "cpu", "bench", "--preset", "gpt-5"]);
    assert_clean_failure(&out, &["unknown preset `gpt-5`", "qwen2.5-0.5b"]);
}
