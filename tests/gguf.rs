//! GGUF in and out against the fixtures of `tests/fixtures/make_gguf_fixtures.py`: every ggml type
//! dequantizes exactly as the `gguf` package does; four tiny models read from a lone `.gguf` give
//! transformers' GGUF-loader logits, greedy ids and tokenizations; a model written back as GGUF
//! reads back; bad files are clear errors naming the file and the tensor or key.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use minordpo::generate::sampling::Sampling;
use minordpo::generate::{GenerateRequest, generate};
use minordpo::gguf::GgufFile;
use minordpo::gguf::write::{GgufWeightType, TokenizerSource, write_gguf};
use minordpo::model::CausalLm;
use minordpo::tokenizer::Tokenizer;
use serde_json::Value;

use common::{assert_clean_failure, logits, minordpo, minordpo_ok, read_tensor, words};

const MODELS: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join("gguf")
        .join(name)
}

fn expected_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{name}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn every_type_dequantizes_like_the_gguf_package() {
    let gguf = GgufFile::open(&fixture("types.gguf")).unwrap();
    assert_eq!(gguf.order.len(), 13);
    for name in &gguf.order {
        let info = gguf.info(name).unwrap();
        assert_eq!(info.ggml_type.name(), name);
        let got = info.ggml_type.dequantize(gguf.bytes(name).unwrap());
        let (shape, want) = read_tensor(&fixture("types.expected.safetensors"), name);
        assert_eq!(shape, info.torch_shape(), "{name}");
        let exact = got.iter().zip(&want).all(|(g, w)| f64::from(*g) == *w);
        assert!(exact, "{name}: max diff {:e}", max_abs_diff(&got, &want));
    }
}

#[test]
fn tiny_gguf_models_match_transformers_gguf_loader() {
    let device = Device::flex();
    for name in MODELS {
        let path = fixture(&format!("{name}.gguf"));
        let model = CausalLm::load(&path, &device).unwrap();
        let reference = fixture(&format!("{name}.expected.safetensors"));
        for i in 0..2 {
            let (_, ids) = read_tensor(&reference, &format!("input_ids_{i}"));
            let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
            let (_, want) = read_tensor(&reference, &format!("logits_{i}"));
            let err = max_abs_diff(&logits(&model, &ids, &device), &want);
            assert!(err < 1e-4, "{name} sequence {i}: max |Δlogit| = {err:e}");
        }
        let expected = expected_json(name);
        let tokenizer = Tokenizer::load(&path).unwrap();
        check_greedy(name, &model, &tokenizer, &expected["greedy"], &device);
        for case in expected["encodings"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
            let ids = tokenizer.encode(text, true).unwrap();
            assert_eq!(ids, want, "{name}: ids of {text:?}");
            let decoded = tokenizer.decode(&ids, true).unwrap();
            assert_eq!(
                decoded,
                case["decoded"].as_str().unwrap(),
                "{name}: decoded {text:?}"
            );
        }
    }
}

/// Greedy continuations (no stop token) equal the reference's ids.
fn check_greedy(name: &str, model: &CausalLm, tok: &Tokenizer, cases: &Value, device: &Device) {
    for case in cases.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = tok.encode(prompt, true).unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(prompt_ids, want_prompt, "{name}: ids of {prompt:?}");
        let want: Vec<u32> = serde_json::from_value(case["new_ids"].clone()).unwrap();
        let request = GenerateRequest {
            prompt_ids,
            max_new_tokens: want.len(),
            sampling: Sampling::GREEDY,
            seed: 0,
            stop_ids: Vec::new(),
        };
        let got = generate(model, tok, &request, device, |_| {}).unwrap();
        assert_eq!(got, want, "{name}: greedy ids after {prompt:?}");
    }
}

#[test]
fn a_model_written_as_gguf_reads_back_with_its_tokenizer() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let path = fixture(&format!("{name}.gguf"));
        let source = GgufFile::open(&path).unwrap();
        let model = CausalLm::load(&path, &device).unwrap();
        let (_, ids) = read_tensor(
            &fixture(&format!("{name}.expected.safetensors")),
            "input_ids_0",
        );
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        let before: Vec<f64> = logits(&model, &ids, &device)
            .iter()
            .map(|&v| v.into())
            .collect();
        // f16 keeps ~3 decimal digits of each weight, q8_0 ~2; the tiny models' logits move less.
        for (wtype, tolerance) in [(GgufWeightType::F16, 5e-3), (GgufWeightType::Q8_0, 5e-2)] {
            let out = dir.path().join(format!("{name}-{wtype:?}.gguf"));
            write_gguf(&model, &TokenizerSource::Gguf(&source), &out, wtype).unwrap();
            let written = GgufFile::open(&out).unwrap();
            for key in [
                "tokenizer.ggml.tokens",
                "tokenizer.ggml.model",
                "general.name",
            ] {
                assert_eq!(
                    written.metadata.get(key),
                    source.metadata.get(key),
                    "{name}: {key}"
                );
            }
            let back = CausalLm::load(&out, &device).unwrap();
            let err = max_abs_diff(&logits(&back, &ids, &device), &before);
            assert!(err < tolerance, "{name} {wtype:?}: max |Δlogit| = {err:e}");
        }
    }
}

/// A copy of `from` with `edit` applied to its bytes.
fn edited(dir: &Path, from: &str, to: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(fixture(from)).unwrap();
    edit(&mut bytes);
    let path = dir.join(to);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

fn generate_error(model: &Path) -> String {
    let model = model.to_str().unwrap();
    let out = minordpo(&[
        "generate", "--device", "cpu", "--model", model, "--prompt", "hi",
    ]);
    assert_clean_failure(&out, &[model]);
    common::stderr(&out)
}

#[test]
fn bad_gguf_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = edited(dir.path(), "llama.gguf", "truncated.gguf", |b| {
        b.truncate(b.len() - 1000)
    });
    let err = generate_error(&truncated);
    assert!(
        err.contains("truncated GGUF file: tensor `output.weight`"),
        "{err}"
    );

    let cut_header = edited(dir.path(), "llama.gguf", "header.gguf", |b| b.truncate(200));
    let err = generate_error(&cut_header);
    assert!(err.contains("truncated GGUF file: it ends inside"), "{err}");

    // The type id of the first tensor info (`token_embd.weight`, F16 = 1) set to 99.
    let unknown = edited(dir.path(), "llama.gguf", "unknown.gguf", |b| {
        let at = find(b, b"token_embd.weight") + "token_embd.weight".len() + 4 + 2 * 8;
        b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    });
    let err = generate_error(&unknown);
    assert!(
        err.contains("tensor `token_embd.weight` has tensor type 99, which is not supported"),
        "{err}"
    );

    let missing = dir.path().join("missing.gguf");
    assert!(generate_error(&missing).contains("missing.gguf: GGUF file not found"));
    let not_gguf = edited(dir.path(), "llama.gguf", "not.gguf", |b| b[0] = b'X');
    assert!(generate_error(&not_gguf).contains("not a GGUF file (no `GGUF` magic)"));

    let arch = edited(dir.path(), "llama.gguf", "arch.gguf", |b| {
        let at = find(b, b"general.architecture") + "general.architecture".len() + 4 + 8;
        b[at..at + 5].copy_from_slice(b"bloom");
    });
    let err = generate_error(&arch);
    assert!(
        err.contains("unsupported architecture `bloom` (metadata key `general.architecture`)"),
        "{err}"
    );
    assert!(
        err.contains("supported: llama, qwen2, qwen3, gemma3"),
        "{err}"
    );
}

#[test]
fn lora_trained_on_a_gguf_base_merges_into_a_gguf_and_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("llama.gguf");
    let (model, run) = (model.to_str().unwrap(), dir.path().join("run"));
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpo/standard.jsonl");
    let mut args = words("train --device cpu --max-steps 2 --learning-rate 1e-2");
    args.extend(["--model", model, "--data", data.to_str().unwrap()]);
    args.extend(["--output", run.to_str().unwrap()]);
    minordpo_ok(&args);
    let adapter = run.join("adapter");
    let merged_gguf = dir.path().join("merged.gguf");
    let merged_dir = dir.path().join("merged");
    for output in [&merged_gguf, &merged_dir] {
        let mut args = words("merge --model");
        args.extend([model, "--adapter", adapter.to_str().unwrap()]);
        args.extend(["--output", output.to_str().unwrap()]);
        minordpo_ok(&args);
    }
    // The directory (f32 weights, config and tokenizer rebuilt from the GGUF) and the f16 GGUF
    // give the same greedy text as the base with its adapter.
    let greedy = |model: &Path, adapter: Option<&Path>| {
        let mut args = words("generate --device cpu --max-new-tokens 12 --prompt");
        args.extend(["hello world", "--model", model.to_str().unwrap()]);
        if let Some(a) = adapter {
            args.extend(["--adapter", a.to_str().unwrap()]);
        }
        String::from_utf8(minordpo_ok(&args).stdout).unwrap()
    };
    let want = greedy(&fixture("llama.gguf"), Some(&adapter));
    assert_eq!(greedy(&merged_dir, None), want);
    assert_eq!(greedy(&merged_gguf, None), want);
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        assert!(merged_dir.join(file).is_file(), "{file}");
    }
}

#[test]
fn a_hugging_face_directory_writes_to_gguf_with_its_tokenizer_and_llama3_rope() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // The llama3 fixture: byte-level BPE, q/k/v/o biases, Llama 3 RoPE scaling (rope_freqs).
    for name in ["llama3", "qwen2"] {
        let source = common::model_dir(name);
        let model = CausalLm::load(&source, &device).unwrap();
        let out = dir.path().join(format!("{name}.gguf"));
        write_gguf(
            &model,
            &TokenizerSource::Dir(&source),
            &out,
            GgufWeightType::F16,
        )
        .unwrap();
        let back = CausalLm::load(&out, &device).unwrap();
        // The same RoPE (a small head fits several Llama 3 parameter sets to one set of divisors).
        let (got, want) = (back.rope.inv_freq(), model.rope.inv_freq());
        let same = got
            .iter()
            .zip(want)
            .all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs());
        assert!(same, "{name}: RoPE {got:?} vs {want:?}");
        assert_eq!(back.config.qkv_bias, model.config.qkv_bias, "{name}");
        let ids: Vec<i64> = (0..10).map(|i| (i * 31 + 7) % 300).collect();
        let want: Vec<f64> = logits(&model, &ids, &device)
            .iter()
            .map(|&v| v.into())
            .collect();
        let err = max_abs_diff(&logits(&back, &ids, &device), &want);
        assert!(err < 2e-2, "{name}: max |Δlogit| = {err:e}");
        let (hf, gguf) = (
            Tokenizer::load(&source).unwrap(),
            Tokenizer::load(&out).unwrap(),
        );
        for text in [
            "hello world",
            "  spaced  out\n\nlines 12345",
            "café <|im_start|>",
        ] {
            let ids = hf.encode(text, true).unwrap();
            assert_eq!(gguf.encode(text, true).unwrap(), ids, "{name}: {text:?}");
            assert_eq!(
                gguf.decode(&ids, false).unwrap(),
                hf.decode(&ids, false).unwrap()
            );
        }
        assert_eq!(
            gguf.chat_template_source(),
            hf.chat_template_source(),
            "{name}"
        );
    }
    // Gemma 3's layer pattern is fixed in GGUF; the fixture's three layers do not follow it.
    let gemma = CausalLm::load(&common::model_dir("gemma3"), &device).unwrap();
    let source = common::model_dir("gemma3");
    let out = dir.path().join("gemma3.gguf");
    let err = write_gguf(
        &gemma,
        &TokenizerSource::Dir(&source),
        &out,
        GgufWeightType::F16,
    );
    let err = err.unwrap_err().to_string();
    assert!(err.contains("not GGUF's fixed pattern"), "{err}");
    assert!(!out.exists());
}

/// A Q8_0 or Q4_0 GGUF base stays in its blocks under `frozen_precision: auto` (and `q8`/`q4`):
/// every projection, the embeddings and the head (untied: llama; tied: qwen2) dequantize to exactly
/// the weights the f32 load reads, so the logits match it (the Q/K rows come back in transformers'
/// order as whole rows of blocks); a LoRA trains on it.
#[test]
fn a_q8_0_or_q4_0_gguf_base_stays_quantized_in_memory() {
    use minordpo::kernels::projection::BlockFormat;
    use minordpo::model::embedding::EmbeddingTable;
    use minordpo::model::linear::Weight;
    use minordpo::model::precision::{FrozenPrecision, Storage};
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<i64> = (0..40).map(|i| (i * 37 % 300) as i64).collect();
    for (name, wtype, format, precision) in [
        (
            "llama",
            GgufWeightType::Q8_0,
            BlockFormat::Q8_0,
            FrozenPrecision::Q8,
        ),
        (
            "llama",
            GgufWeightType::Q4_0,
            BlockFormat::Q4_0,
            FrozenPrecision::Q4,
        ),
        (
            "qwen2",
            GgufWeightType::Q4_0,
            BlockFormat::Q4_0,
            FrozenPrecision::Q4,
        ),
    ] {
        let path = fixture(&format!("{name}.gguf"));
        let source = GgufFile::open(&path).unwrap();
        let model = CausalLm::load(&path, &device).unwrap();
        let out = dir.path().join(format!("{name}-{wtype:?}.gguf"));
        write_gguf(&model, &TokenizerSource::Gguf(&source), &out, wtype).unwrap();
        let dense = CausalLm::load(&out, &device).unwrap();
        let want = logits(&dense, &ids, &device);
        for precision in [FrozenPrecision::Auto, precision] {
            let (quantized, storage) = CausalLm::load_frozen(&out, &device, precision).unwrap();
            assert_eq!(storage, Storage::Blocks(format));
            assert!(matches!(quantized.embed_tokens, EmbeddingTable::Blocks(_)));
            let embed = (
                quantized.embed_tokens.dense().into_data(),
                dense.embed_tokens.dense(),
            );
            assert_eq!(embed.0, embed.1.into_data(), "{name} embeddings");
            if let Some(head) = &quantized.lm_head {
                assert!(matches!(head.weight, Weight::Blocks(_)), "{name} head");
            }
            for ((name, q), (_, d)) in quantized.projections().iter().zip(dense.projections()) {
                assert!(matches!(q.weight, Weight::Blocks(_)), "{name}");
                let (q, d) = (q.weight.dense().into_data(), d.weight.dense().into_data());
                assert_eq!(q, d, "{name} {wtype:?}");
            }
            let got = logits(&quantized, &ids, &device);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-4,
                "{name} {wtype:?} {precision:?}: max |Δlogit| = {err:e}"
            );
        }
    }
    // Training on the Q4_0 base (its blocks kept, `auto`) runs and writes its adapter.
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpo/standard.jsonl");
    let (run, base) = (dir.path().join("run"), dir.path().join("llama-Q4_0.gguf"));
    let mut args = words("train --device cpu --max-steps 2 --learning-rate 1e-2");
    args.extend(["--model", base.to_str().unwrap()]);
    args.extend([
        "--data",
        data.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]);
    minordpo_ok(&args);
    assert!(run.join("adapter/adapter_model.safetensors").is_file());
}
