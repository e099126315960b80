//! End-to-end tests of the `minordpo` binary: greedy generation equals transformers' text, and
//! bad inputs end with a non-zero exit and a message naming the file — never a panic.

mod common;

use std::path::Path;
use std::process::Output;

use common::hub_server::{COMMIT, HubServer, Repo, TOKEN};
use common::{
    assert_clean_failure, command_line, expected_json, minordpo, minordpo_env, minordpo_ok,
    model_dir, stderr, words,
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

/// `devices --check` runs the vocabulary-wide kernels and one DPO step on the CPU and passes every
/// check there. (The wgpu side is the library tests `every_check_passes_on_wgpu` and
/// `the_step_matches_the_cpu_tensor_ops_on_wgpu`.)
#[test]
fn devices_check_passes_on_the_cpu() {
    let out = minordpo(&["--device", "cpu", "devices", "--check"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("checking cpu"), "{text}");
    for check in [
        "fused LM head + log-prob (training's loss): ok",
        "row argmax (greedy decoding, token accuracy): ok",
        "Burn's argmax, for information: ok",
        "one DPO step, default kernels (loss, LoRA gradients, gradient norm): ok",
    ] {
        assert!(text.contains(check), "{check}: {text}");
    }
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

/// Runs `bench` with `args`: it succeeds and prints one line, its JSON report.
fn bench_report(args: &[&str]) -> serde_json::Value {
    let out = minordpo_ok(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn bench_prints_one_json_line_with_its_figures() {
    let model = model_dir("llama3");
    for (what, value) in [("--preset", "tiny"), ("--model", model.to_str().unwrap())] {
        let mut args = words("--device cpu bench --batch-size 2 --seq-len 16 --steps 2");
        args.extend(["--warmup", "0", "--logprob-chunk", "8", what, value]);
        let report = bench_report(&args);
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
        if cfg!(any(unix, windows)) {
            assert!(
                report["peak_memory_bytes"].as_u64().unwrap() > 1_000_000,
                "{report}"
            );
        }
    }
    let out = minordpo(&["--device", "cpu", "bench", "--preset", "gpt-5"]);
    assert_clean_failure(&out, &["unknown preset `gpt-5`", "qwen2.5-0.5b"]);
}

/// `bench --decode N` times greedy decoding: N new tokens for each of --batch-size prompts, on a
/// preset or a real model directory; its rate is the tokens over the median run. Training-only
/// flags and an empty decode are refused.
#[test]
fn bench_decode_times_greedy_decoding() {
    let model = model_dir("llama3");
    for (what, value) in [("--preset", "tiny"), ("--model", model.to_str().unwrap())] {
        let mut args = words("--device cpu bench --decode 12 --batch-size 3 --prompt-len 5");
        args.extend(["--steps", "3", "--warmup", "0", what, value]);
        let report = bench_report(&args);
        assert_eq!(report["mode"], "decode", "{report}");
        assert_eq!(report["new_tokens"], 12);
        assert_eq!(report["batch_size"], 3);
        assert_eq!(report["prompt_len"], 5);
        let mut runs: Vec<f64> = report["run_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(runs.len(), 3);
        runs.sort_by(f64::total_cmp);
        let rate = report["tokens_per_second"].as_f64().unwrap();
        assert!(
            (rate - 36.0 / (runs[1] / 1e3)).abs() < 1e-6 * rate,
            "{report}"
        );
        let per_token = report["step_ms_median"].as_f64().unwrap();
        assert!((per_token - runs[1] / 12.0).abs() < 1e-9, "{report}");
    }
    let out = minordpo(&words(
        "--device cpu bench --preset tiny --decode 4 --gradient-checkpointing",
    ));
    assert_clean_failure(
        &out,
        &["'--decode <N>' cannot be used with '--gradient-checkpointing'"],
    );
    let out = minordpo(&words("--device cpu bench --preset tiny --decode 0"));
    assert_clean_failure(&out, &["--decode ≥ 1"]);
}

/// A preset counts as a bf16 checkpoint: `auto` multiplies it in bf16 where the CPU can and says
/// so in the report; f32 weights with an explicit `bf16` are refused with the reason (on any CPU:
/// either it lacks the instructions or the weights are not bf16).
#[test]
fn bench_reports_the_product_precision_and_refuses_an_impossible_one() {
    let base = "--device cpu bench --preset tiny --batch-size 2 --seq-len 16 --steps 1 --warmup 0";
    let native = minordpo::kernels::projection::cpu_has_bf16_products();
    for (flags, want) in [
        ("", if native { "bf16" } else { "f32" }),
        ("--matmul-precision f32", "f32"),
        ("--frozen-precision f32", "f32"),
    ] {
        let report = bench_report(&words(&format!("{base} {flags}")));
        assert_eq!(report["matmul_precision"], want, "{flags}: {report}");
    }
    let out = minordpo(&words(&format!(
        "{base} --frozen-precision f32 --matmul-precision bf16"
    )));
    let why = if native {
        "stored as f32"
    } else {
        "lacks AVX512-BF16"
    };
    assert_clean_failure(&out, &["matmul_precision: bf16 is not available", why]);
}

/// The Hub variables pointing at `server` and a cache under `root` (a home without a token file).
fn hub_env<'a>(server: &'a HubServer, root: &'a Path) -> Vec<(&'static str, String)> {
    vec![
        ("HF_ENDPOINT", server.endpoint.clone()),
        (
            "HF_HUB_CACHE",
            root.join("hub").to_string_lossy().into_owned(),
        ),
        ("HF_HOME", root.join("home").to_string_lossy().into_owned()),
    ]
}

/// `generate --temperature 0` on `model` with `env`, as `(output, stdout)`.
fn generate_env(model: &str, prompt: &str, env: &[(&str, String)]) -> (Output, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = command_line(
        "--device cpu generate --temperature 0 --max-new-tokens 24",
        &[("--model", model), ("--prompt", prompt)],
    );
    let out = minordpo_env(&args, &env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

fn repo(name: &str, gated: bool, extra: Vec<&'static str>) -> Repo {
    Repo {
        dir: model_dir(name),
        gated,
        extra,
    }
}

/// A Hub id downloads only what a model needs into `huggingface_hub`'s cache layout, generates
/// transformers' text, reuses the cache without downloading again, and runs offline from it.
#[test]
fn hub_ids_download_into_the_python_cache_and_run_offline() {
    let server = HubServer::start(vec![
        (
            "org/tiny",
            repo("qwen2", false, vec!["pytorch_model.bin", "README.md"]),
        ),
        ("org/sharded", repo("mistral", false, vec![])),
    ]);
    let root = tempfile::tempdir().unwrap();
    let env = hub_env(&server, root.path());
    for (id, fixture) in [("org/tiny", "qwen2"), ("org/sharded", "mistral")] {
        let case = &expected_json(fixture)["greedy"][0];
        let prompt = case["prompt"].as_str().unwrap();
        let (out, text) = generate_env(id, prompt, &env);
        assert!(out.status.success(), "{id}: {}", stderr(&out));
        assert_eq!(text, case["text"].as_str().unwrap(), "{id}");
    }
    let paths = server.paths();
    assert!(
        paths
            .iter()
            .all(|p| !p.contains("pytorch_model.bin") && !p.contains("README")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/cdn/org/sharded/") && p.ends_with("-of-00003.safetensors")),
        "{paths:?}"
    );

    let repo_dir = root.path().join("hub/models--org--tiny");
    assert_eq!(
        std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        COMMIT
    );
    let snapshot = repo_dir.join("snapshots").join(COMMIT);
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "generation_config.json",
    ] {
        let path = snapshot.join(file);
        assert!(path.is_file(), "{}", path.display());
        #[cfg(unix)]
        assert!(
            std::fs::read_link(&path)
                .unwrap()
                .starts_with("../../blobs"),
            "{file}"
        );
    }
    let blobs = std::fs::read_dir(repo_dir.join("blobs")).unwrap().count();
    assert_eq!(
        blobs,
        std::fs::read_dir(&snapshot).unwrap().count(),
        "one blob per file"
    );

    // `train` takes the id too (the same resolution as every command).
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpo/standard.jsonl");
    let run = root.path().join("run");
    let args = command_line(
        "--device cpu train --max-steps 1 --max-length 48 --lora-r 4",
        &[
            ("--model", "org/tiny"),
            ("--data", data.to_str().unwrap()),
            ("--output", run.to_str().unwrap()),
        ],
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = minordpo_env(&args, &pairs);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run.join("adapter/adapter_model.safetensors").is_file());

    // Cached: only the revision is asked again, no file.
    let before = server.paths().len();
    let prompt = expected_json("qwen2")["greedy"][0]["prompt"]
        .as_str()
        .unwrap()
        .to_string();
    let (out, _) = generate_env("org/tiny", &prompt, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = &server.paths()[before..];
    assert_eq!(again, ["/api/models/org/tiny/revision/main"], "{again:?}");

    // Offline: the cache alone, with the server gone; an uncached repo is a clear error.
    drop(server);
    let mut offline = env.clone();
    offline.push(("HF_HUB_OFFLINE", "1".into()));
    let (out, text) = generate_env("org/tiny", &prompt, &offline);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        text,
        expected_json("qwen2")["greedy"][0]["text"]
            .as_str()
            .unwrap()
    );
    let (out, _) = generate_env("org/elsewhere", &prompt, &offline);
    assert_clean_failure(
        &out,
        &["org/elsewhere", "HF_HUB_OFFLINE", "not in the cache"],
    );
}

/// Missing repos, revisions and gated access without a token fail with the repo named and what
/// to do; the token (`HF_TOKEN` or the token file) opens a gated repo.
#[test]
fn hub_errors_name_the_repo_and_tokens_open_gated_repos() {
    let server = HubServer::start(vec![("org/gated", repo("llama3", true, vec![]))]);
    let root = tempfile::tempdir().unwrap();
    let env = hub_env(&server, root.path());
    let (out, _) = generate_env("org/missing", "Hi", &env);
    assert_clean_failure(&out, &["org/missing", "HTTP 404", "not found"]);
    let (out, _) = generate_env("org/gated@v9", "Hi", &env);
    assert_clean_failure(&out, &["org/gated", "HTTP 401", "gated", "HF_TOKEN"]);
    let mut with_token = env.clone();
    with_token.push(("HF_TOKEN", TOKEN.into()));
    let (out, _) = generate_env("org/gated@v9", "Hi", &with_token);
    assert_clean_failure(&out, &["org/gated", "revision `v9`", "no such revision"]);

    let case = &expected_json("llama3")["greedy"][0];
    let prompt = case["prompt"].as_str().unwrap();
    let (out, text) = generate_env("org/gated", prompt, &with_token);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text, case["text"].as_str().unwrap());
    // The token file under HF_HOME, as `huggingface-cli login` writes it.
    let fresh = tempfile::tempdir().unwrap();
    let env = hub_env(&server, fresh.path());
    std::fs::create_dir_all(fresh.path().join("home")).unwrap();
    std::fs::write(fresh.path().join("home/token"), format!("{TOKEN}\n")).unwrap();
    let (out, text) = generate_env("org/gated", prompt, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text, case["text"].as_str().unwrap());
}

/// Python's `huggingface_hub` and minordpo share one cache: each runs offline on what the other
/// downloaded from the same local Hub. Opt-in: `MINORDPO_PYTHON` names a Python that has
/// `huggingface_hub` (skipped otherwise).
#[test]
fn the_hub_cache_is_shared_with_python() {
    let Some(python) = std::env::var_os("MINORDPO_PYTHON") else {
        eprintln!("skipping: set MINORDPO_PYTHON to a Python with huggingface_hub");
        return;
    };
    let server = HubServer::start(vec![("org/tiny", repo("qwen2", false, vec![]))]);
    let case = &expected_json("qwen2")["greedy"][0];
    let prompt = case["prompt"].as_str().unwrap();
    let want = case["text"].as_str().unwrap();
    let python_download = |cache: &Path, offline: bool| {
        let script = "import os, sys; from huggingface_hub import hf_hub_download\n\
                      for f in ['config.json', 'generation_config.json', 'tokenizer.json',\n\
                                'tokenizer_config.json', 'model.safetensors']:\n\
                      \x20   path = hf_hub_download('org/tiny', f, local_files_only=sys.argv[1] == '1')\n\
                      print(os.path.dirname(path))";
        let out = std::process::Command::new(&python)
            .args(["-c", script, if offline { "1" } else { "0" }])
            .env("HF_ENDPOINT", &server.endpoint)
            .env("HF_HUB_CACHE", cache.join("hub"))
            .env("HF_HOME", cache.join("home"))
            .env_remove("HF_TOKEN")
            .env("HF_HUB_DISABLE_TELEMETRY", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Python downloads; minordpo runs from that cache offline.
    let by_python = tempfile::tempdir().unwrap();
    python_download(by_python.path(), false);
    let mut env = hub_env(&server, by_python.path());
    env.push(("HF_HUB_OFFLINE", "1".into()));
    let (out, text) = generate_env("org/tiny", prompt, &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(text, want);
    // minordpo downloads; Python finds the snapshot offline.
    let by_us = tempfile::tempdir().unwrap();
    let (out, _) = generate_env("org/tiny", prompt, &hub_env(&server, by_us.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    let snapshot = python_download(by_us.path(), true);
    assert!(snapshot.ends_with(COMMIT), "{snapshot}");
}

/// A Hub dataset split (`ORG/NAME:SPLIT`, Parquet shards under `data/` as `push_to_hub` writes
/// them) evaluates exactly as its JSONL source; only that split's files are downloaded; offline
/// the cache serves it; a split it lacks is named.
#[test]
fn hub_dataset_splits_read_like_their_files() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpo");
    let dataset = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dataset.path().join("data")).unwrap();
    for (from, to) in [
        ("standard.parquet", "data/train-00000-of-00001.parquet"),
        ("conversational.parquet", "data/test-00000-of-00001.parquet"),
    ] {
        std::fs::copy(fixtures.join(from), dataset.path().join(to)).unwrap();
    }
    // A card without `configs`: the default naming applies.
    std::fs::write(
        dataset.path().join("README.md"),
        "---\nlicense: mit\n---\n# prefs\n",
    )
    .unwrap();
    // A dataset whose card names its train files; the default-named file is a decoy.
    let carded = tempfile::tempdir().unwrap();
    for dir in ["holdout", "data"] {
        std::fs::create_dir_all(carded.path().join(dir)).unwrap();
    }
    std::fs::copy(
        fixtures.join("standard.parquet"),
        carded.path().join("holdout/prefs.parquet"),
    )
    .unwrap();
    std::fs::copy(
        fixtures.join("conversational.parquet"),
        carded.path().join("data/train-00000-of-00001.parquet"),
    )
    .unwrap();
    let card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: holdout/*.parquet\n---\n# prefs\n";
    std::fs::write(carded.path().join("README.md"), card).unwrap();
    let server = HubServer::start(vec![
        (
            "datasets/org/prefs",
            Repo {
                dir: dataset.path().to_path_buf(),
                gated: false,
                extra: vec![],
            },
        ),
        (
            "datasets/org/carded",
            Repo {
                dir: carded.path().to_path_buf(),
                gated: false,
                extra: vec![],
            },
        ),
    ]);
    let root = tempfile::tempdir().unwrap();
    let env = hub_env(&server, root.path());
    let eval = |model: &str, data: &str, env: &[(&str, String)]| {
        let adapter = fixtures.join(format!("{model}_adapter"));
        let out_file = root.path().join("eval.json");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let model = model_dir(model);
        let args = command_line(
            "--device cpu eval --max-length 48 --loss sigmoid",
            &[
                ("--model", model.to_str().unwrap()),
                ("--adapter", adapter.to_str().unwrap()),
                ("--data", data),
                ("--output", out_file.to_str().unwrap()),
            ],
        );
        let out = minordpo_env(&args, &env);
        let summary = std::fs::read_to_string(&out_file).unwrap_or_default();
        let _ = std::fs::remove_file(&out_file);
        (out, summary)
    };
    for (model, split, file) in [
        ("llama3", "org/prefs", "standard.jsonl"),
        ("qwen2", "org/prefs:test", "conversational.jsonl"),
        ("llama3", "org/carded:train", "standard.jsonl"),
    ] {
        let (out, from_hub) = eval(model, split, &env);
        assert!(out.status.success(), "{split}: {}", stderr(&out));
        let local = fixtures.join(file);
        let (out, from_file) = eval(model, local.to_str().unwrap(), &env);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(from_hub, from_file, "{split}");
    }
    let paths = server.paths();
    assert!(
        paths.iter().all(|p| !p.contains("carded/data/")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/api/datasets/org/prefs/revision/main".to_string()),
        "{paths:?}"
    );
    let snapshot = root
        .path()
        .join("hub/datasets--org--prefs/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("data/train-00000-of-00001.parquet").is_file());

    let (out, _) = eval("llama3", "org/prefs:validation", &env);
    assert_clean_failure(&out, &["org/prefs", "no files for split `validation`"]);
    drop(server);
    let mut offline = env.clone();
    offline.push(("HF_HUB_OFFLINE", "1".into()));
    let (out, summary) = eval("llama3", "org/prefs:train", &offline);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(summary.contains("rewards/accuracies"), "{summary}");
}
