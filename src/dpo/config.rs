//! The `train` configuration: the shared training fields (`train::settings`) plus the
//! preference loss, the reference and the precision fields, as one RON struct whose fields are
//! also command-line flags.

use std::path::{Path, PathBuf};

use crate::data::PairLayout;
use crate::dpo::loss::{LossKind, LossParams};
use crate::error::{Error, Result};
use crate::io::{parse_ron, read_ron, to_ron};
use crate::model::precision::{FrozenPrecision, MatmulPrecision};
use crate::train::settings::{require_path, training_config};

training_config! {
    /// Everything a preference-training run needs. Unknown fields in a RON file are errors.
    TrainConfig, TrainOverrides, FIELDS;
    defaults {
        output: "runs/minordpo",
        learning_rate: 5e-5,
        batch_size: 4,
        warmup_ratio: 0.1,
        logging_steps: 1,
    }
    /// Hugging Face model directory (config.json, safetensors, tokenizer files), a GGUF file, a Hub id
    /// `ORG/NAME[@REVISION]`, or `builtin:arithmetic` for the built-in task's base model (built
    /// and cached when missing; `builtin:DEMO.ron` takes that demo config's).
    model: PathBuf = PathBuf::new(),
    /// Preference data: .jsonl, .jsonl.gz, .json, .parquet, a Hub dataset split
    /// `ORG/NAME[:SPLIT]`, or `builtin:arithmetic` for the built-in task's on-policy pairs.
    data: PathBuf = PathBuf::new(),
    /// Start from an existing PEFT adapter instead of a fresh one.
    adapter: Option<PathBuf> = None,
    /// Loss: sigmoid (DPO), minor_dpo, dpop, ipo, hinge.
    loss: LossKind = LossKind::MinorDpo,
    /// β: strength of the implicit KL constraint to the reference.
    beta: f64 = 0.1,
    /// cDPO label smoothing ε (sigmoid only).
    label_smoothing: f64 = 0.0,
    /// DPOP's λ.
    dpop_lambda: f64 = 50.0,
    /// RPO: weight of the chosen completion's mean NLL added to the loss.
    sft_weight: f64 = 0.0,
    /// Compute the reference log-probs once before training (cached in the output directory)
    /// instead of a reference forward pass every step.
    precompute_reference: bool = true,
    /// Group pairs of similar length into the same batches (within shuffled windows of 50
    /// batches, as transformers' `group_by_length`) to cut padding.
    group_by_length: bool = false,
    /// Positions per fused LM-head + log-prob chunk: the whole `[rows, positions, vocab]` logits
    /// are never held, forward or backward (0 = the plain path).
    logprob_chunk: usize = 256,
    /// Query rows per block of memory-efficient attention: the backward keeps `q`, `k`, `v` and
    /// recomputes the probabilities a block at a time (0 = keep the whole `[heads, seq, seq]`
    /// probabilities of every layer, as plain attention does).
    attention_block: usize = crate::model::causal_lm::DEFAULT_ATTENTION_BLOCK,
    /// What runs the blocked attention: `auto` (the fused kernel on the CPU; the tensor ops on
    /// GPUs, where the fused WGSL kernels are not measured yet), `fused` (the backend's fused
    /// kernel: flex and wgpu have one) or `tensor_ops`. The same values and gradients either way.
    attention_kernel: crate::kernels::attention::AttentionKernel =
        crate::kernels::attention::AttentionKernel::Auto,
    /// Run each pair as one sequence `[prompt | chosen | rejected]`: the prompt is computed once,
    /// the rejected tokens see it but not the chosen ones, at the positions that follow it (the
    /// same log-probs as two sequences; false = two right-padded rows per pair, as TRL).
    share_prompt: bool = true,
    /// Pack a micro-batch's sequences (whole pairs with `share_prompt`) into rows of at most this
    /// many tokens, each restarting at position 0 and blind to the others, in the row length that
    /// pads the fewest positions (never more than one row per sequence would; 0 = one row per
    /// sequence, padded to the longest).
    max_tokens_per_batch: usize = 2048,
    /// Storage of the frozen base weights: `auto` keeps a checkpoint in its own precision (lossless:
    /// bf16/f16, f16 for bf16 on GPUs without bf16, a GGUF's Q8_0/Q4_0 blocks), `f32`, `bf16`,
    /// `f16`, or llama.cpp's 8- and 4-bit blocks `q8`/`q4` for the projections, embeddings and head
    /// (9 and 5 bits per weight). Activations, adapters and optimizer state are f32 either way.
    frozen_precision: FrozenPrecision = FrozenPrecision::Auto,
    /// How the frozen projections multiply: `auto` (bf16 where it is native and the weights are
    /// bf16: the CPU device on x86-64 with AVX512-BF16; f32 otherwise), `f32` (the weights
    /// widened, activations f32: the parity-tested path) or `bf16` (activations rounded to bf16 in
    /// those products, forward and backward, sums in f32; an error where it cannot run).
    matmul_precision: MatmulPrecision = MatmulPrecision::Auto,
}

impl TrainConfig {
    /// Reads a RON file; errors name the file, line and column.
    pub fn from_ron_file(path: &Path) -> Result<Self> {
        read_ron(path)
    }

    /// The committed `configs/default.ron` (MinorDPO on the built-in task), compiled in.
    pub fn embedded_default() -> Self {
        parse_ron(
            include_str!("../../configs/default.ron"),
            "configs/default.ron",
        )
        .expect("the embedded default config parses")
    }

    /// The resolved config as RON.
    pub fn to_ron(&self) -> String {
        to_ron(self)
    }

    /// The loss settings.
    pub fn loss_params(&self) -> LossParams {
        LossParams {
            kind: self.loss,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            dpop_lambda: self.dpop_lambda,
            sft_weight: self.sft_weight,
        }
    }

    /// How a micro-batch's pairs are laid out in rows.
    pub fn pair_layout(&self) -> PairLayout {
        PairLayout {
            share_prompt: self.share_prompt,
            max_tokens_per_batch: self.max_tokens_per_batch,
        }
    }

    /// Checks values that would make a run meaningless.
    pub fn validate(&self) -> Result<()> {
        require_path("model", &self.model, "set a model directory (--model DIR)")?;
        require_path("data", &self.data, "set a preference file (--data FILE)")?;
        if self.beta.is_nan() || self.beta <= 0.0 {
            return Err(Error::Invalid("config field `beta`: must be > 0".into()));
        }
        self.training().validate(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ron_round_trip_and_unknown_fields() {
        let config = TrainConfig {
            beta: 0.2,
            ..Default::default()
        };
        let back: TrainConfig = ron::from_str(&config.to_ron()).unwrap();
        assert_eq!(back, config);
        let partial: TrainConfig = ron::from_str("(beta: 0.3, loss: sigmoid)").unwrap();
        assert_eq!(partial.beta, 0.3);
        assert_eq!(partial.loss, LossKind::Sigmoid);
        assert_eq!(partial.learning_rate, 5e-5);
        assert!(ron::from_str::<TrainConfig>("(betta: 0.3)").is_err());
    }

    #[test]
    fn overrides_win_and_fields_are_documented() {
        let mut config = TrainConfig::default();
        let overrides = TrainOverrides {
            beta: Some(0.5),
            max_steps: Some(7),
            ..Default::default()
        };
        overrides.apply(&mut config);
        assert_eq!((config.beta, config.max_steps), (0.5, 7));
        assert!(FIELDS.iter().all(|(_, doc)| !doc.trim().is_empty()));
    }
}
