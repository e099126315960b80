//! What a run trains and how its result is written: LoRA adapters on a frozen model (a PEFT
//! adapter directory) or every weight (a whole Hugging Face model directory).

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;

use crate::error::Result;
use crate::model::CausalLm;
use crate::model::lora::{self, LoraSettings};
use crate::train::optim::Trained;

/// The parameters a run trains.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// LoRA adapters with these settings; writes `adapter/`.
    Lora(LoraSettings),
    /// Every weight; writes `model/` (f32).
    Full,
}

struct Unfreeze;

impl ModuleMapper for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.set_require_grad(true)
    }
}

/// The model with every float parameter trainable (full fine-tuning).
pub fn unfreeze(model: CausalLm) -> CausalLm {
    model.map(&mut Unfreeze)
}

impl Method {
    /// The parameters the optimizer updates.
    pub fn trained(&self) -> Trained {
        match self {
            Self::Lora(_) => Trained::Adapters,
            Self::Full => Trained::AllWeights,
        }
    }

    /// The result's directory name: `adapter` or `model`.
    pub fn result_name(&self) -> &'static str {
        match self {
            Self::Lora(_) => "adapter",
            Self::Full => "model",
        }
    }

    /// Writes the result into the existing (empty) directory `dir`; `base` is the model directory
    /// the run started from (named in the adapter config; its config and tokenizer files are
    /// copied beside a full model).
    pub fn write_result(&self, model: &CausalLm, base: &Path, dir: &Path) -> Result<()> {
        match self {
            Self::Lora(settings) => {
                lora::write_peft_files(model, settings, &base.to_string_lossy(), dir)
            }
            Self::Full => {
                crate::model::save::save_safetensors(
                    model,
                    &dir.join("model.safetensors"),
                    safetensors::Dtype::F32,
                )?;
                crate::model::save::copy_model_files(base, dir)
            }
        }
    }

    /// Restores the result written by [`Self::write_result`] in `dir` into `model`; returns the
    /// method as restored (the adapter's settings as saved).
    pub fn read_result(&self, model: &mut CausalLm, dir: &Path, device: &Device) -> Result<Self> {
        match self {
            Self::Lora(_) => {
                // The checkpoint's adapters replace every fresh one (targets or rank may differ).
                for (_, linear) in model.projections_mut() {
                    linear.lora = None;
                }
                Ok(Self::Lora(lora::load_peft(model, dir, device)?))
            }
            Self::Full => {
                *model = unfreeze(CausalLm::load(dir, device)?);
                Ok(Self::Full)
            }
        }
    }
}
