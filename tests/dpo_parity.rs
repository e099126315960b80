//! Preference evaluation parity with TRL + PEFT (fixtures from
//! `tests/fixtures/make_dpo_fixtures.py`): TRL's tokenization (ids exact), per-example log-probs of
//! base + PEFT adapter and of the base (≤ 1e-3), per-example losses and summary metrics (≤ 1e-4),
//! a PEFT adapter round trip, and the B = 0 invariant (DPO loss = ln 2 exactly); the pair layouts
//! (shared prompts, packed rows), attention in short spans and recomputed layers against the two
//! padded rows per pair, gradients included.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use minordpo::data::{PairLayout, TokenizedPair, make_batch};
use minordpo::data::{load_preferences, tokenize_rows};
use minordpo::dpo::eval::{PairScoring, evaluate};
use minordpo::dpo::loss::{LossKind, LossParams};
use minordpo::dpo::metrics::PairStats;
use minordpo::dpo::step::{Reference, score_pairs};
use minordpo::model::CausalLm;
use minordpo::model::lora::{self, LoraSettings};
use minordpo::model::precision::{self, FrozenPrecision, MatmulPrecision};
use minordpo::tokenizer::Tokenizer;
use serde_json::Value;

use common::{MODELS, logits, model_dir};

/// The pair layouts every parity check runs: TRL's two padded rows per pair, each pair as one
/// `[prompt | chosen | rejected]` sequence, and those packed several to a row.
const LAYOUTS: [PairLayout; 3] = [
    PairLayout {
        share_prompt: false,
        max_tokens_per_batch: 0,
    },
    PairLayout {
        share_prompt: true,
        max_tokens_per_batch: 0,
    },
    PairLayout {
        share_prompt: true,
        max_tokens_per_batch: 96,
    },
];

/// Evaluates `pairs` in batches of `batch_size` laid out as `layout` with `kind`, the LM head
/// fused in chunks of `chunk` positions (0 = whole logits).
fn eval_pairs(
    model: &CausalLm,
    pairs: &[TokenizedPair],
    kind: LossKind,
    (batch_size, layout): (usize, PairLayout),
    chunk: usize,
) -> PairStats {
    let settings = PairScoring {
        params: params(kind),
        batch_size,
        pad_id: 0,
        logprob_chunk: chunk,
        layout,
    };
    evaluate(model, pairs, &settings, &Device::flex())
}

fn dpo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dpo")
}

/// The fixture's standard preference rows, tokenized for the model in `dir` (at most 48 tokens).
fn standard_pairs(dir: &Path) -> Vec<TokenizedPair> {
    let tokenizer = Tokenizer::load(dir).unwrap();
    let rows = load_preferences(&dpo_dir().join("standard.jsonl")).unwrap();
    tokenize_rows(&rows.rows, &tokenizer, 48).unwrap().0
}

/// Adapters (r = 4, α = 8, `dropout`) on every projection, each B set to 0.05 everywhere so that
/// they change the outputs.
fn attach_nonzero_adapters(model: &mut CausalLm, dropout: f64, seed: u64, device: &Device) {
    let settings = LoraSettings::on_every_projection(4, 8.0, dropout);
    lora::attach(model, &settings, seed, device);
    for (_, linear) in model.projections_mut() {
        let lora = linear.lora.as_mut().unwrap();
        let b = lora.b.val().ones_like() * 0.05;
        lora.b = burn::module::Param::from_tensor(b);
    }
}

const KINDS: [(LossKind, &str); 5] = [
    (LossKind::Sigmoid, "sigmoid"),
    (LossKind::MinorDpo, "minor_dpo"),
    (LossKind::Dpop, "dpop"),
    (LossKind::Ipo, "ipo"),
    (LossKind::Hinge, "hinge"),
];

fn params(kind: LossKind) -> LossParams {
    // `train`'s defaults: β = 0.1, DPOP λ = 50, no label smoothing or RPO term.
    minordpo::dpo::TrainConfig {
        loss: kind,
        ..Default::default()
    }
    .loss_params()
}

fn check(model_name: &str, data: &str) {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dpo_dir().join(format!("{model_name}_{data}.json"))).unwrap(),
    )
    .unwrap();
    let examples = expected["examples"].as_array().unwrap();
    let dir = model_dir(model_name);
    let tokenizer = Tokenizer::load(&dir).unwrap();
    let rows = load_preferences(&dpo_dir().join(format!("{data}.jsonl"))).unwrap();
    let (pairs, dropped) = tokenize_rows(&rows.rows, &tokenizer, 48).unwrap();
    assert!(dropped.is_empty());
    assert_eq!(pairs.len(), examples.len());
    for (pair, ex) in pairs.iter().zip(examples) {
        let ids = |k: &str| -> Vec<u32> { serde_json::from_value(ex[k].clone()).unwrap() };
        assert_eq!(
            pair.prompt,
            ids("prompt_ids"),
            "{model_name} {data} line {}",
            pair.line
        );
        assert_eq!(
            pair.chosen,
            ids("chosen_ids"),
            "{model_name} {data} line {}",
            pair.line
        );
        assert_eq!(
            pair.rejected,
            ids("rejected_ids"),
            "{model_name} {data} line {}",
            pair.line
        );
    }

    let device = Device::flex();
    let mut model = CausalLm::load(&dir, &device).unwrap();
    lora::load_peft(
        &mut model,
        &dpo_dir().join(format!("{model_name}_adapter")),
        &device,
    )
    .unwrap();
    // The plain path (whole logits) and the fused, chunked LM head (chunks of 4 positions, so
    // every sequence spans several chunks), in every pair layout, must all match TRL.
    let paths = [
        (0, LAYOUTS[0]),
        (4, LAYOUTS[0]),
        (4, LAYOUTS[1]),
        (0, LAYOUTS[2]),
    ];
    for ((chunk, layout), (kind, name)) in paths.into_iter().flat_map(|p| KINDS.map(|k| (p, k))) {
        let stats = eval_pairs(&model, &pairs, kind, (3, layout), chunk);
        for (i, ex) in examples.iter().enumerate() {
            let close = |got: f64, key: &str, tol: f64| {
                let want = ex[key].as_f64().unwrap();
                assert!(
                    (got - want).abs() <= tol,
                    "{model_name} {data} {layout:?} #{i} {key}: {got} vs {want}"
                );
            };
            close(stats.policy_chosen[i], "policy_chosen_logps", 1e-3);
            close(stats.policy_rejected[i], "policy_rejected_logps", 1e-3);
            close(stats.reference_chosen[i], "reference_chosen_logps", 1e-3);
            close(
                stats.reference_rejected[i],
                "reference_rejected_logps",
                1e-3,
            );
            let want = ex["losses"][name].as_f64().unwrap();
            assert!(
                (stats.loss[i] - want).abs() <= 1e-4,
                "{model_name} {data} #{i} {name} loss: {} vs {want}",
                stats.loss[i]
            );
        }
        for (key, got) in stats.summary() {
            let want = expected["summary"][name][&key].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-4,
                "{model_name} {data} {name} {key}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn standard_rows_match_trl_and_peft() {
    check("qwen2", "standard");
    check("llama3", "standard");
    check("gemma3", "standard");
}

#[test]
fn implicit_prompt_rows_match_trl_and_peft() {
    check("qwen2", "implicit");
    check("llama3", "implicit");
    check("gemma3", "implicit");
}

#[test]
fn conversational_rows_match_trl_and_peft() {
    check("qwen2", "conversational");
    // Gemma's chat template writes the BOS; TRL's rules add no second one.
    check("gemma3", "conversational");
}

/// Frozen weights rounded from the fixture's f32 to bf16, or quantized to llama.cpp's Q8_0 / Q4_0
/// blocks (LoRA, activations and the embeddings in f32): every per-example log-prob stays within
/// 0.1% (bf16), 0.5% (bf16 multiplied in bf16, where the CPU can), 1% (q8) and 20% (q4) relative of
/// TRL's f32 values on the fused path, and the
/// projections really take 1/2, 9/32 and 5/32 of the f32 bytes. (The random fixture's logits are
/// nearly flat, so the errors here are small; docs/performance.md measures them on real models.)
#[test]
fn narrow_frozen_weights_stay_close_to_trl() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dpo_dir().join("qwen2_standard.json")).unwrap(),
    )
    .unwrap();
    let dir = model_dir("qwen2");
    let pairs = standard_pairs(&dir);
    let device = Device::flex();
    let f32_bytes = precision::projection_weight_bytes(&CausalLm::load(&dir, &device).unwrap());
    for (precision, products, name, tolerance, bytes_in_32ths) in [
        (
            FrozenPrecision::Bf16,
            MatmulPrecision::F32,
            "bf16",
            1e-3,
            16,
        ),
        (
            FrozenPrecision::Bf16,
            MatmulPrecision::Bf16,
            "bf16",
            5e-3,
            16,
        ),
        (FrozenPrecision::Q8, MatmulPrecision::F32, "q8_0", 1e-2, 9),
        (FrozenPrecision::Q4, MatmulPrecision::F32, "q4_0", 0.2, 5),
    ] {
        let (mut model, storage) = CausalLm::load_frozen(&dir, &device, precision).unwrap();
        assert_eq!(storage.name(), name);
        let name = match precision::set_matmul_precision(&mut model, products, &device) {
            Ok(products) => format!("{name}, {} products", products.name()),
            Err(e) => {
                eprintln!("skipping {name} with {products:?} products: {e}");
                continue;
            }
        };
        lora::load_peft(&mut model, &dpo_dir().join("qwen2_adapter"), &device).unwrap();
        let bytes = precision::projection_weight_bytes(&model);
        assert_eq!(32 * bytes, bytes_in_32ths * f32_bytes, "{name}");
        let stats = eval_pairs(&model, &pairs, LossKind::MinorDpo, (3, LAYOUTS[1]), 4);
        let mut worst = 0.0f64;
        for (i, ex) in expected["examples"].as_array().unwrap().iter().enumerate() {
            for (got, key) in [
                (stats.policy_chosen[i], "policy_chosen_logps"),
                (stats.policy_rejected[i], "policy_rejected_logps"),
                (stats.reference_chosen[i], "reference_chosen_logps"),
                (stats.reference_rejected[i], "reference_rejected_logps"),
            ] {
                let want = ex[key].as_f64().unwrap();
                let rel = (got - want).abs() / want.abs();
                assert!(
                    rel <= tolerance,
                    "#{i} {key}: {got} vs {want} ({name} weights)"
                );
                worst = worst.max(rel);
            }
        }
        eprintln!("{name} frozen weights: largest relative log-prob error {worst:.2e}");
    }
}

#[test]
fn peft_adapter_round_trips_bit_exactly() {
    let device = Device::flex();
    let mut model = CausalLm::load(&model_dir("qwen2"), &device).unwrap();
    let src = dpo_dir().join("qwen2_adapter");
    let settings = lora::load_peft(&mut model, &src, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    lora::save_peft(&model, &settings, "qwen2", out.path()).unwrap();
    let read = |p: PathBuf| std::fs::read(p).unwrap();
    let a = read(src.join("adapter_model.safetensors"));
    let b = read(out.path().join("adapter_model.safetensors"));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    let mut names_b = b.names();
    names_b.sort();
    assert_eq!(names, names_b);
    for name in names {
        let (x, y) = (a.tensor(name).unwrap(), b.tensor(name).unwrap());
        assert_eq!(x.shape(), y.shape(), "{name}");
        assert_eq!(x.data(), y.data(), "{name}");
    }
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["task_type"], "CAUSAL_LM");
}

#[test]
fn fresh_adapters_give_exactly_ln2() {
    let device = Device::flex();
    let dir = model_dir("llama3");
    let mut model = CausalLm::load(&dir, &device).unwrap();
    let settings = LoraSettings::on_every_projection(8, 16.0, 0.0);
    lora::attach(&mut model, &settings, 1, &device);
    let pairs = standard_pairs(&dir);
    let stats = eval_pairs(&model, &pairs, LossKind::Sigmoid, (2, LAYOUTS[2]), 0);
    for loss in &stats.loss {
        assert_eq!(*loss as f32, std::f32::consts::LN_2);
    }
}

#[test]
fn merged_model_matches_base_plus_adapter() {
    let device = Device::flex();
    let ids: Vec<i64> = vec![1, 57, 74, 293, 268, 223, 19, 20, 33, 2];
    for (name, tolerance, dtype) in [
        ("llama3", 1e-4, safetensors::Dtype::F32),
        ("gemma3", 1e-4, safetensors::Dtype::F32),
        ("qwen2", 0.1, safetensors::Dtype::BF16),
    ] {
        let dir = model_dir(name);
        let adapter = dpo_dir().join(format!("{name}_adapter"));
        let out = tempfile::tempdir().unwrap();
        lora::merge_to_dir(&dir, &adapter, out.path(), &device).unwrap();
        let bytes = std::fs::read(out.path().join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("model.norm.weight").unwrap().dtype(),
            dtype,
            "{name}"
        );
        assert!(out.path().join("tokenizer.json").is_file());

        let mut with_adapter = CausalLm::load(&dir, &device).unwrap();
        lora::load_peft(&mut with_adapter, &adapter, &device).unwrap();
        let merged = CausalLm::load(out.path(), &device).unwrap();
        let (a, b) = (
            logits(&with_adapter, &ids, &device),
            logits(&merged, &ids, &device),
        );
        let max = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(f64::from(max) <= tolerance, "{name}: max |Δlogit| {max}");
    }
}

/// Each unsupported PEFT option is reported under its own field name.
#[test]
fn unsupported_peft_options_name_their_field() {
    let device = Device::flex();
    let src = dpo_dir().join("qwen2_adapter");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("adapter_config.json")).unwrap())
            .unwrap();
    for (field, value) in [
        ("rank_pattern", serde_json::json!({"q_proj": 2})),
        ("alpha_pattern", serde_json::json!({"q_proj": 2.0})),
        ("use_dora", serde_json::json!(true)),
        ("fan_in_fan_out", serde_json::json!(true)),
        ("bias", serde_json::json!("all")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut changed = config.clone();
        changed[field] = value;
        std::fs::write(dir.path().join("adapter_config.json"), changed.to_string()).unwrap();
        std::fs::copy(
            src.join("adapter_model.safetensors"),
            dir.path().join("adapter_model.safetensors"),
        )
        .unwrap();
        let mut model = CausalLm::load(&model_dir("qwen2"), &device).unwrap();
        let err = lora::load_peft(&mut model, dir.path(), &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
    }
}

/// Saving an adapter replaces the directory whole (written aside, then renamed): nothing of an
/// older adapter survives next to the new files.
#[test]
fn saving_an_adapter_replaces_the_directory_whole() {
    let device = Device::flex();
    let mut model = CausalLm::load(&model_dir("qwen2"), &device).unwrap();
    let settings = lora::load_peft(&mut model, &dpo_dir().join("qwen2_adapter"), &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("adapter");
    lora::save_peft(&model, &settings, "qwen2", &dir).unwrap();
    std::fs::write(dir.join("stale.bin"), b"from an older run").unwrap();
    lora::save_peft(&model, &settings, "qwen2", &dir).unwrap();
    assert!(!dir.join("stale.bin").exists());
    assert!(dir.join("adapter_model.safetensors").is_file());
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["adapter".to_string()],
        "no temporary directories are left"
    );
}

/// Evaluation inside a training run (an autodiff device, adapters with dropout) runs on the
/// inference view: no dropout, so two evaluations agree exactly and equal the evaluation of the
/// same weights without autodiff.
#[test]
fn evaluation_applies_no_lora_dropout() {
    let dir = model_dir("llama3");
    let pairs = standard_pairs(&dir);
    let device = Device::flex().autodiff();
    let mut model = CausalLm::load(&dir, &device).unwrap();
    // A nonzero B, so that dropout on the adapter input would change the outputs.
    attach_nonzero_adapters(&mut model, 0.5, 3, &device);
    let settings = PairScoring {
        params: params(LossKind::Sigmoid),
        batch_size: 2,
        pad_id: 0,
        logprob_chunk: 0,
        layout: LAYOUTS[2],
    };
    let first = evaluate(&model, &pairs, &settings, &device);
    let second = evaluate(&model, &pairs, &settings, &device);
    assert_eq!(first.policy_chosen, second.policy_chosen);
    assert_eq!(first.loss, second.loss);
    assert_ne!(
        first.policy_chosen, first.reference_chosen,
        "the adapter is on"
    );
}

/// A model with no adapter on is its own reference: evaluation scores it once, and the policy
/// and reference columns both equal the base's log-probs as a live reference pass (adapters
/// off) computes them for the same model with an adapter.
#[test]
fn a_model_without_adapters_is_its_own_reference() {
    let dir = model_dir("qwen3");
    let pairs = standard_pairs(&dir);
    let device = Device::flex();
    let mut model = CausalLm::load(&dir, &device).unwrap();
    let setting = (2, LAYOUTS[1]);
    let base = eval_pairs(&model, &pairs, LossKind::Sigmoid, setting, 4);
    assert_eq!(base.policy_chosen, base.reference_chosen);
    assert_eq!(base.policy_rejected, base.reference_rejected);
    for loss in &base.loss {
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-6, "{loss}");
    }
    attach_nonzero_adapters(&mut model, 0.0, 3, &device);
    let adapted = eval_pairs(&model, &pairs, LossKind::Sigmoid, setting, 4);
    assert_ne!(adapted.policy_chosen, adapted.reference_chosen);
    assert_eq!(base.reference_chosen, adapted.reference_chosen);
    assert_eq!(base.reference_rejected, adapted.reference_rejected);
    // Adapters switched off: the model is its own reference again.
    lora::set_enabled(&mut model, false);
    let off = eval_pairs(&model, &pairs, LossKind::Sigmoid, setting, 4);
    assert_eq!(off.policy_chosen, base.policy_chosen);
    assert_eq!(off.reference_rejected, base.reference_rejected);
}

/// Per-pair losses and every adapter factor's gradient (A then B, layer by layer) of one DPO
/// micro-batch with a live reference, laid out as `layout`.
fn losses_and_gradients(
    model: &CausalLm,
    pairs: &[&TokenizedPair],
    layout: PairLayout,
) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let batch = make_batch(pairs, 0, layout, &device);
    let scored = score_pairs(
        model,
        &batch,
        Reference::Live,
        &params(LossKind::Sigmoid),
        4,
    );
    let losses = scored
        .losses
        .clone()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let grads = scored.losses.sum().backward();
    let mut all = Vec::new();
    for (_, linear) in model.projections() {
        let lora = linear.lora.as_ref().unwrap();
        for factor in [&lora.a, &lora.b] {
            let grad = factor
                .val()
                .grad(&grads)
                .expect("every adapter gets a gradient");
            all.extend(grad.into_data().try_into_vec::<f32>().unwrap());
        }
    }
    (losses, all)
}

/// On every fixture architecture (GQA, Qwen3's q/k norms, Gemma 3's sliding window of 6 over
/// 30-token pairs): each pair as one `[prompt | chosen | rejected]` sequence, pairs packed several
/// to a row, attention in spans of one to a few queries, and every decoder layer recomputed in the
/// backward all give the losses (≤ 1e-5) and adapter gradients (≤ 1e-4 of the largest) of TRL's
/// two padded rows per pair with the whole attention matrix.
#[test]
fn layouts_and_recomputed_layers_give_the_same_gradients() {
    for name in MODELS {
        let dir = model_dir(name);
        let pairs = standard_pairs(&dir);
        let pairs: Vec<&TokenizedPair> = pairs.iter().take(4).collect();
        let device = Device::flex().autodiff();
        let mut model = CausalLm::load(&dir, &device).unwrap();
        // A nonzero B, so that A gets a gradient too.
        attach_nonzero_adapters(&mut model, 0.0, 5, &device);
        model.attention_block = 0;
        let (losses, grads) = losses_and_gradients(&model, &pairs, LAYOUTS[0]);
        let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        assert!(scale > 0.0, "{name}: the gradients are not all zero");
        for (layout, block, recompute) in [
            (LAYOUTS[0], 3, false),
            (LAYOUTS[1], 3, false),
            (LAYOUTS[2], 5, false),
            (LAYOUTS[0], 0, true),
            (LAYOUTS[2], 3, true),
        ] {
            model.attention_block = block;
            model.gradient_checkpointing = recompute;
            let what = format!("{name} {layout:?} block {block} recompute {recompute}");
            let (l, g) = losses_and_gradients(&model, &pairs, layout);
            for (a, b) in l.iter().zip(&losses) {
                assert!((a - b).abs() <= 1e-5, "{what}: loss {a} vs {b}");
            }
            let err = g
                .iter()
                .zip(&grads)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{what}: gradient error {err} of {scale}"
            );
        }
    }
}
