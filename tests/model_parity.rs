//! Parity with transformers: logits (max abs error ≤ 1e-4) and greedy continuations (exact ids)
//! of the tiny fixture models built by `tests/fixtures/make_model_fixtures.py`, on the CPU and,
//! when an adapter exists, on wgpu.

mod common;

use burn::prelude::*;
use minordpo::generate::sampling::Sampling;
use minordpo::generate::{GenerateRequest, GenerationDefaults, generate, stop_ids};
use minordpo::model::CausalLm;
use minordpo::tokenizer::Tokenizer;

use common::{MODELS, expected_json, expected_tensor, model_dir};

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
    let tokenizer = Tokenizer::load(&dir).unwrap();
    let defaults = GenerationDefaults::load(&dir).unwrap();
    for case in expected_json(name)["greedy"].as_array().unwrap() {
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
            stop_ids: stop_ids(&defaults, &model, &tokenizer),
        };
        let mut streamed = String::new();
        let got = generate(&model, &tokenizer, &request, device, |s| {
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

#[test]
fn logits_match_transformers_on_cpu() {
    for name in MODELS {
        check_logits(name, &Device::flex());
    }
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
