//! Parity with transformers: logits (max abs error ≤ 1e-4) and greedy continuations (exact ids)
//! of the tiny fixture models built by `tests/fixtures/make_model_fixtures.py`, on the CPU and,
//! when an adapter exists, on wgpu.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use minordpo::generate::sampling::Sampling;
use minordpo::generate::{GenerateRequest, GenerationDefaults, generate, stop_ids};
use minordpo::model::CausalLm;
use minordpo::model::precision::FrozenPrecision;
use minordpo::tokenizer::Tokenizer;
use serde_json::Value;

use common::{MODELS, expected_json, expected_tensor, model_dir, read_tensor};

const LOGIT_TOLERANCE: f64 = 1e-4;

fn check_logits(name: &str, device: &Device) {
    let model = CausalLm::load(&model_dir(name), device).unwrap();
    let expected = expected_json(name);
    let count = expected["sequence_lengths"].as_array().unwrap().len();
    for i in 0..count {
        let (_, ids) = expected_tensor(name, &format!("input_ids_{i}"));
        let (shape, want) = expected_tensor(name, &format!("logits_{i}"));
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), device);
        let logits = model.forward(tokens, None); // [1, seq, vocab]
        assert_eq!(logits.dims(), [1, shape[0], shape[1]], "{name} seq {i}");
        let got: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
        let max_err = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (f64::from(*g) - w).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{name} seq {i} ({} tokens): max |Δlogit| = {max_err:.2e}",
            ids.len()
        );
        assert!(
            max_err <= LOGIT_TOLERANCE,
            "{name} seq {i}: max |Δlogit| = {max_err:e} > {LOGIT_TOLERANCE:e}"
        );
    }
}

fn check_greedy(name: &str, device: &Device) {
    let dir = model_dir(name);
    let model = CausalLm::load(&dir, device).unwrap();
    check_greedy_cases(name, &model, &dir, &expected_json(name)["greedy"], device);
}

/// Each greedy case (prompt, its ids, the new ids and their text) of `cases`, for `model` loaded
/// from `dir`.
fn check_greedy_cases(name: &str, model: &CausalLm, dir: &Path, cases: &Value, device: &Device) {
    let tokenizer = Tokenizer::load(dir).unwrap();
    let defaults = GenerationDefaults::load(dir).unwrap();
    for case in cases.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prompt_ids = tokenizer.encode(prompt, true).unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(
            prompt_ids, want_prompt,
            "{name}: prompt tokenization of {prompt:?}"
        );
        let want: Vec<u32> = serde_json::from_value(case["new_ids"].clone()).unwrap();
        let request = GenerateRequest {
            prompt_ids,
            max_new_tokens: 24,
            sampling: Sampling::GREEDY,
            seed: 0,
            stop_ids: stop_ids(&defaults, model, &tokenizer),
        };
        let mut streamed = String::new();
        let got = generate(model, &tokenizer, &request, device, |s| {
            streamed.push_str(s)
        })
        .unwrap();
        assert_eq!(got, want, "{name}: greedy ids after {prompt:?}");
        assert_eq!(
            streamed,
            case["text"].as_str().unwrap(),
            "{name}: streamed text"
        );
    }
}

/// Each `{text, ids[, chat]}` tokenizes to `ids` (with special tokens, except a rendered chat, which
/// must also render from its messages to `text`).
fn check_encodings(name: &str, path: &Path, cases: &Value) {
    let tokenizer = Tokenizer::load(path).unwrap();
    for case in cases.as_array().into_iter().flatten() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let chat = case.get("chat");
        if let Some(messages) = chat {
            let messages: Vec<minordpo::tokenizer::Message> =
                serde_json::from_value(messages.clone()).unwrap();
            let rendered = tokenizer.apply_chat_template(&messages, true).unwrap();
            assert_eq!(rendered, text, "{name}: rendered chat");
        }
        let got = tokenizer.encode(text, chat.is_none()).unwrap();
        assert_eq!(got, want, "{name}: ids of {text:?}");
    }
}

#[test]
fn logits_match_transformers_on_cpu() {
    for name in MODELS {
        check_logits(name, &Device::flex());
    }
}

/// Attention in blocks of a few query rows (many blocks, a partial last one) gives the logits of
/// plain attention on every fixture architecture (GQA, sliding windows, q/k norms).
#[test]
fn blocked_attention_logits_equal_plain_attention() {
    let device = Device::flex();
    for name in MODELS {
        let mut model = CausalLm::load(&model_dir(name), &device).unwrap();
        let (_, ids) = expected_tensor(name, "input_ids_3");
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        model.attention_block = 0;
        let plain = common::logits(&model, &ids, &device);
        for block in [1, 3, 7, 64] {
            model.attention_block = block;
            let blocked = common::logits(&model, &ids, &device);
            let worst = plain
                .iter()
                .zip(&blocked)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-5,
                "{name}, block {block}: max |Δlogit| {worst:e}"
            );
        }
    }
}

/// Decoding one token at a time with the KV cache (products of one row: on the CPU the few-row
/// kernels reading bf16 weights and the bf16 tied table in place, on wgpu the WGSL kernels reading
/// f16 ones; attention over cached keys with the sliding windows of Gemma 3's local layers) gives
/// the logits the whole sequence gives at once (the general products on widened weights), for the
/// same half-precision weights.
fn check_cached_decoding(device: &Device, precision: FrozenPrecision) {
    for name in MODELS {
        let (model, _) = CausalLm::load_for_decoding(&model_dir(name), device, precision).unwrap();
        let (_, ids) = expected_tensor(name, "input_ids_3"); // 40 tokens, past every window
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        let whole = common::logits(&model, &ids, device);
        let vocab = whole.len() / ids.len();
        let prefill = 8;
        let mut cache = minordpo::model::KvCache::default();
        let mut worst = 0.0f32;
        for at in prefill..=ids.len() {
            let new = if at == prefill {
                &ids[..at]
            } else {
                &ids[at - 1..at]
            };
            let tokens =
                Tensor::<2, Int>::from_data(TensorData::new(new.to_vec(), [1, new.len()]), device);
            let logits: Vec<f32> = model
                .forward(tokens, Some(&mut cache))
                .into_data()
                .convert::<f32>()
                .try_into_vec()
                .unwrap();
            let last = &logits[logits.len() - vocab..];
            let want = &whole[(at - 1) * vocab..at * vocab];
            for (g, w) in last.iter().zip(want) {
                worst = worst.max((g - w).abs());
            }
        }
        eprintln!("{name}: max |Δlogit| cached vs whole = {worst:.2e}");
        assert!(
            worst <= 1e-4,
            "{name}: cached decoding differs by {worst:e}"
        );
    }
}

#[test]
fn cached_decoding_in_half_precision_matches_the_whole_sequence() {
    check_cached_decoding(&Device::flex(), FrozenPrecision::Bf16);
}

#[test]
fn cached_decoding_in_f16_matches_the_whole_sequence_on_wgpu() {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    check_cached_decoding(&device, FrozenPrecision::F16);
}

#[test]
#[allow(deprecated)]
fn logits_match_transformers_on_ndarray() {
    check_logits("qwen3", &Device::ndarray());
}

#[test]
fn greedy_matches_transformers_on_cpu() {
    for name in MODELS {
        check_greedy(name, &Device::flex());
    }
}

#[test]
fn logits_and_greedy_match_transformers_on_wgpu() {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    for name in MODELS {
        check_logits(name, &device);
        check_greedy(name, &device);
    }
}

/// The real checkpoints named by `MINORDPO_REAL_MODELS` (directories joined like `PATH`), each with
/// the reference `tests/fixtures/make_real_reference.py` wrote beside it: logits at the reference
/// positions of a sequence longer than a sliding window, greedy continuations, tokenizations and
/// (when the reference has them) summed sequence log-probs, checked with f32, q8 and q4 frozen
/// weights. Skipped with a message when the variable is unset (the checkpoints are too large to
/// commit).
#[test]
fn real_checkpoints_match_transformers() {
    let Some(dirs) = std::env::var_os("MINORDPO_REAL_MODELS") else {
        eprintln!("skipping: set MINORDPO_REAL_MODELS=DIR to check real checkpoints");
        return;
    };
    let device = Device::flex();
    for dir in std::env::split_paths(&dirs) {
        let name = dir.display().to_string();
        let model = CausalLm::load(&dir, &device).unwrap();
        // A directory holds its reference; a GGUF file has it beside, as FILE.minordpo_reference.*.
        let reference_file = |ext: &str| {
            if dir.is_dir() {
                dir.join(format!("minordpo_reference.{ext}"))
            } else {
                PathBuf::from(format!("{}.minordpo_reference.{ext}", dir.display()))
            }
        };
        let reference = reference_file("safetensors");
        let (_, ids) = read_tensor(&reference, "input_ids");
        let (_, positions) = read_tensor(&reference, "positions");
        let (shape, want) = read_tensor(&reference, "logits"); // [positions, vocab]
        let ids: Vec<i64> = ids.iter().map(|&v| v as i64).collect();
        let tokens =
            Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, ids.len()]), &device);
        let hidden = model.forward_hidden(tokens, None); // [1, seq, hidden]
        let at: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        let at = Tensor::<1, Int>::from_data(TensorData::new(at, [positions.len()]), &device);
        let logits = model.lm_head(hidden.select(1, at)); // [1, positions, vocab]
        assert_eq!(logits.dims(), [1, shape[0], shape[1]], "{name}");
        let got: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
        let row = shape[1];
        for (k, position) in positions.iter().enumerate() {
            let span = k * row..(k + 1) * row;
            let err = got[span.clone()]
                .iter()
                .zip(&want[span.clone()])
                .map(|(g, w)| (f64::from(*g) - w).abs())
                .fold(0.0, f64::max);
            // Real logits reach ±30 after 30 layers: f32 rounding grows with them, so the bound
            // scales from the fixtures' 1e-4 at |logit| ≤ 10.
            let scale = want[span].iter().fold(10f64, |m, w| m.max(w.abs())) / 10.0;
            eprintln!("{name} position {position}: max |Δlogit| = {err:.2e} (scale {scale:.1})");
            assert!(
                err <= LOGIT_TOLERANCE * scale,
                "{name} position {position}: {err:e}"
            );
        }
        let text = std::fs::read_to_string(reference_file("json")).unwrap();
        let reference: Value = serde_json::from_str(&text).unwrap();
        check_greedy_cases(&name, &model, &dir, &reference["greedy"], &device);
        check_encodings(&name, &dir, &reference["encodings"]);
        if let Some(sequences) = reference.get("sequence_logprobs") {
            check_sequence_logprobs(&name, &dir, sequences, &device);
        }
    }
}

/// Summed sequence log-probs (what DPO compares) with the frozen weights in f32, bf16 (multiplied
/// in f32 and in bf16), q8 and q4 against transformers' f32: f32 within 0.05 nats per sequence,
/// bf16 products within 0.5 (where the CPU has them), q8 within 0.75 (llama.cpp's Q8_0 blocks);
/// q4's distance is printed for the docs (Q4_0 moves log-probs by nats, not tenths), and so is
/// transformers' own bf16 run when the reference has it.
fn check_sequence_logprobs(name: &str, dir: &Path, sequences: &Value, device: &Device) {
    use burn::tensor::activation::log_softmax;
    use minordpo::model::precision::{self, FrozenPrecision, MatmulPrecision};
    let cases = sequences.as_array().unwrap();
    if cases.iter().all(|c| c.get("logprob_bf16").is_some()) {
        let distances: Vec<f64> = cases
            .iter()
            .map(|c| (c["logprob_bf16"].as_f64().unwrap() - c["logprob"].as_f64().unwrap()).abs())
            .collect();
        eprintln!(
            "{name} transformers bf16: |Δ sequence log-prob| mean {:.4}, max {:.4} nats",
            distances.iter().sum::<f64>() / distances.len() as f64,
            distances.iter().fold(0f64, |m, &d| m.max(d))
        );
    }
    for (frozen, products, tolerance) in [
        (FrozenPrecision::F32, MatmulPrecision::F32, Some(0.05)),
        (FrozenPrecision::Bf16, MatmulPrecision::F32, None),
        (FrozenPrecision::Bf16, MatmulPrecision::Bf16, Some(0.5)),
        // Q8_0 blocks of the bf16 SmolLM2 directory: 0.20 nats on average, 0.53 at most.
        (FrozenPrecision::Q8, MatmulPrecision::F32, Some(0.75)),
        (FrozenPrecision::Q4, MatmulPrecision::F32, None),
    ] {
        let (mut model, storage) = CausalLm::load_frozen(dir, device, frozen).unwrap();
        let products = match precision::set_matmul_precision(&mut model, products, device) {
            Ok(products) => products.name(),
            Err(e) => {
                eprintln!("skipping {}: {e}", storage.name());
                continue;
            }
        };
        let (mut worst, mut total) = (0f64, 0f64);
        for case in cases {
            let ids: Vec<i64> = serde_json::from_value(case["ids"].clone()).unwrap();
            let want = case["logprob"].as_f64().unwrap();
            let n = ids.len();
            let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), device);
            let logp = log_softmax(model.forward(tokens, None), 2); // [1, n, vocab]
            let next = Tensor::<3, Int>::from_data(
                TensorData::new(ids[1..].to_vec(), [1, n - 1, 1]),
                device,
            );
            let picked = logp.slice([0..1, 0..n - 1]).gather(2, next);
            let got = f64::from(picked.sum().into_scalar::<f32>());
            worst = worst.max((got - want).abs());
            total += (got - want).abs();
        }
        eprintln!(
            "{name} frozen {}, {products} products: |Δ sequence log-prob| mean {:.4}, max \
             {worst:.4} nats over {} sequences",
            storage.name(),
            total / cases.len() as f64,
            cases.len()
        );
        if let Some(tolerance) = tolerance {
            assert!(
                worst <= tolerance,
                "{name} {} {products}: {worst}",
                storage.name()
            );
        }
    }
}

#[test]
fn chat_templates_render_like_transformers() {
    for name in MODELS {
        let dir = model_dir(name);
        let tokenizer = Tokenizer::load(&dir).unwrap();
        let chat = &expected_json(name)["chat"];
        let messages: Vec<minordpo::tokenizer::Message> =
            serde_json::from_value(chat["messages"].clone()).unwrap();
        let text = tokenizer.apply_chat_template(&messages, true).unwrap();
        assert_eq!(
            text,
            chat["text"].as_str().unwrap(),
            "{name}: rendered chat"
        );
        let ids: Vec<u32> = serde_json::from_value(chat["ids"].clone()).unwrap();
        assert_eq!(
            tokenizer.encode(&text, false).unwrap(),
            ids,
            "{name}: chat ids"
        );
    }
}
