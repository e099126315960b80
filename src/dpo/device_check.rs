//! `devices --check`'s training lines: one DPO step of a small random model on the checked device,
//! against the plain tensor ops on the CPU. The kernel tests check each operation alone on the
//! machines that run them; this checks them wired together, on the user's own GPU and driver,
//! where a wrong product, reduction or mask in any part of a real step would show.
//!
//! The step is what `train` runs by default: the prompt shared by both completions, packed rows,
//! the policy with LoRA on every projection (B non-zero, so that every adapter matrix gets a
//! gradient), the reference as the same weights with the adapters off, the MinorDPO loss, the
//! backward and the global gradient norm. The model is a two-layer Llama with grouped-query
//! attention, its frozen weights stored as `train` stores a bf16 checkpoint's on the device (f16
//! on GPUs, bf16 on the CPU) and multiplied in f32 (the CPU's bf16 products have their own
//! parity tests). The device runs its defaults (fused LM head; on wgpu the tensor-op attention
//! spans) and, on wgpu, the WGSL attention (`attention_kernel: fused`) as well; the CPU runs the
//! same weights, stored the same way, through Burn's tensor ops on flex: whole logits, plain
//! attention.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::data::{TokenizedPair, make_batch};
use crate::device;
use crate::dpo::TrainConfig;
use crate::dpo::step::{Reference, score_pairs};
use crate::io::Rng;
use crate::kernels::attention::AttentionKernel;
use crate::kernels::self_check::{CheckLine, max_relative_error, read, worse};
use crate::model::CausalLm;
use crate::model::config::ModelConfig;
use crate::model::lora::{self, LoraSettings};
use crate::model::precision::{self, FrozenPrecision, MatmulPrecision, Storage};
use crate::train::optim::{Trained, collect_grads, global_norm};

/// The checked model: small, but with GQA and head_dim 32.
const MODEL: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 3000,
  "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
  "tie_word_embeddings": true
}"#;
/// (prompt, chosen, rejected) lengths of the step's pairs: unequal, so rows pad and pack, with
/// 306 completion tokens, more than one chunk of the fused LM head (256 positions).
const PAIRS: [(usize, usize, usize); 3] = [(90, 100, 57), (33, 71, 12), (150, 40, 26)];
/// Largest error accepted: of the losses and the gradient norm relative to their size (at least
/// 1), of each adapter matrix's gradient relative to its largest value. The same weights and f32
/// products on both sides differ by ≤ 7e-6 (flex's kernels, and Mesa's software Vulkan, against
/// flex's tensor ops); 1% planted in the log-softmax gradient of the fused head's WGSL kernel
/// moves the gradients by 1.8e-3.
const TOLERANCE: f64 = 1e-4;
const SEED: u64 = 7;

/// What one step leaves, read back to the host.
struct StepResult {
    /// Per-pair losses `[pairs]`.
    losses: Vec<f64>,
    /// Every adapter matrix's gradient, flattened, by parameter name.
    gradients: BTreeMap<String, Vec<f64>>,
    norm: f64,
}

/// The step on `device` with its defaults and, on wgpu, with the WGSL attention, each against
/// the CPU's tensor ops.
pub fn step_lines(device: &Device) -> Vec<CheckLine> {
    let bf16_checkpoint = Some(Storage::Dense(FloatDType::BF16));
    let storage = FrozenPrecision::Auto
        .resolve(device, bf16_checkpoint)
        .unwrap_or(Storage::Dense(FloatDType::F32));
    let reference = run_step(&Device::flex(), storage, AttentionKernel::TensorOps, 0);
    let chunk = TrainConfig::default().logprob_chunk;
    let mut lines = vec![step_line(
        "one DPO step, default kernels (loss, LoRA gradients, gradient norm)",
        storage,
        run_step(device, storage, AttentionKernel::Auto, chunk),
        &reference,
    )];
    if device::is_cube(device) {
        lines.push(step_line(
            "one DPO step, WGSL attention (attention_kernel: fused)",
            storage,
            run_step(device, storage, AttentionKernel::Fused, chunk),
            &reference,
        ));
    }
    lines
}

fn run_step(
    device: &Device,
    storage: Storage,
    attention: AttentionKernel,
    logprob_chunk: usize,
) -> StepResult {
    let device = device.clone().autodiff();
    let config = ModelConfig::from_json(MODEL, std::path::Path::new("the check's model"))
        .expect("the check's model config parses");
    let vocab = config.vocab_size as u64;
    let mut model =
        CausalLm::random(config, SEED, &device, storage).expect("the check's model builds");
    precision::set_matmul_precision(&mut model, MatmulPrecision::F32, &device)
        .expect("f32 products exist everywhere");
    model.attention_kernel = attention;
    lora::attach(
        &mut model,
        &LoraSettings::on_every_projection(8, 16.0, 0.0),
        SEED,
        &device,
    );
    let mut rng = Rng::new(SEED);
    for (_, linear) in model.projections_mut() {
        if let Some(adapter) = linear.lora.as_mut() {
            let dims = adapter.b.val().dims();
            let values: Vec<f32> = (0..dims[0] * dims[1])
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * 0.05) as f32)
                .collect();
            adapter.b =
                Param::from_tensor(Tensor::from_data(TensorData::new(values, dims), &device));
        }
    }
    let mut tokens =
        |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let pairs: Vec<TokenizedPair> = PAIRS
        .iter()
        .enumerate()
        .map(|(i, &(p, c, r))| TokenizedPair {
            line: i + 1,
            prompt: tokens(p),
            chosen: tokens(c),
            rejected: tokens(r),
        })
        .collect();
    let refs: Vec<&TokenizedPair> = pairs.iter().collect();
    let train = TrainConfig::default();
    let batch = make_batch(&refs, 0, train.pair_layout(), &device);
    let scored = score_pairs(
        &model,
        &batch,
        Reference::Live,
        &train.loss_params(),
        logprob_chunk,
    );
    let backward = scored.losses.clone().mean().backward();
    let gradients = collect_grads(&mut model, Trained::Adapters, &backward);
    let norm = global_norm(&gradients).map_or(f64::NAN, |n| read(n)[0]);
    StepResult {
        losses: read(scored.losses),
        gradients: gradients
            .into_iter()
            .map(|(name, g)| (name, read(g.reshape([-1]))))
            .collect(),
        norm,
    }
}

/// The line comparing a step's `got` with the CPU's `want`.
fn step_line(
    name: &'static str,
    storage: Storage,
    got: StepResult,
    want: &StepResult,
) -> CheckLine {
    let magnitude = |v: &[f64]| v.iter().fold(1f64, |m, x| m.max(x.abs()));
    let loss_err = max_relative_error(&got.losses, &want.losses, magnitude(&want.losses));
    let norm_err = max_relative_error(&[got.norm], &[want.norm], magnitude(&[want.norm]));
    let grad_err = if got.gradients.len() == want.gradients.len() {
        want.gradients.iter().fold(0f64, |m, (name, w)| {
            let scale = w.iter().fold(0f64, |s, x| s.max(x.abs())).max(1e-30);
            let e = got
                .gradients
                .get(name)
                .map_or(f64::INFINITY, |g| max_relative_error(g, w, scale));
            worse(m, e)
        })
    } else {
        f64::INFINITY
    };
    CheckLine {
        name,
        required: true,
        // `<=` is false for NaN, which `f64::max` would drop.
        passed: [loss_err, norm_err, grad_err]
            .iter()
            .all(|&e| e <= TOLERANCE),
        detail: format!(
            "{} weights, against the CPU's tensor ops: loss error {loss_err:.1e}, gradient error \
             {grad_err:.1e} over {} adapter matrices, norm error {norm_err:.1e}; tolerance \
             {TOLERANCE:.0e}",
            storage.name(),
            want.gradients.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_matches_the_cpu_tensor_ops_on_flex() {
        for line in step_lines(&Device::flex()) {
            assert!(line.passed, "{line}");
        }
    }

    #[test]
    fn the_step_matches_the_cpu_tensor_ops_on_wgpu() {
        if let Some(device) = crate::device::wgpu_or_skip() {
            let lines = step_lines(&device);
            assert_eq!(lines.len(), 2);
            for line in lines {
                assert!(line.passed, "{line}");
            }
        }
    }

    /// A step that differs fails its line: a changed loss, a changed gradient, a missing matrix.
    #[test]
    fn a_different_step_fails_its_line() {
        let step = || StepResult {
            losses: vec![0.7, 0.69],
            gradients: BTreeMap::from([("a".to_string(), vec![1e-3, -2e-3])]),
            norm: 0.01,
        };
        let f32 = Storage::Dense(FloatDType::F32);
        assert!(step_line("s", f32, step(), &step()).passed);
        let mut off = step();
        off.gradients.get_mut("a").unwrap()[1] = -1.9e-3;
        let line = step_line("s", f32, off, &step());
        assert!(!line.passed);
        assert!(line.detail.starts_with("f32 weights, against"), "{line}");
        assert!(line.detail.contains("gradient error 5.0e-2"), "{line}");
        let mut nan = step();
        nan.losses[0] = f64::NAN;
        assert!(!step_line("s", f32, nan, &step()).passed);
        let mut missing = step();
        missing.gradients.clear();
        assert!(!step_line("s", f32, missing, &step()).passed);
    }
}
