//! What a trainer starts from, read the same way by every command: its settings (validated by the
//! command), the checkpoint it resumes, the device, the tokenizer, and the training and evaluation
//! rows; and the hand-over to the training loop once the command has its model and objective.

use std::path::{Path, PathBuf};

use burn::prelude::*;

use crate::error::Result;
use crate::model::CausalLm;
use crate::tokenizer::Tokenizer;
use crate::train::method::Method;
use crate::train::settings::TrainingSettings;
use crate::train::split::split_for_eval;
use crate::train::{Objective, Probe, Resume, Run, TrainSummary, training_device};

/// How a command reads its rows: `read(path, tokenizer, max_length)`.
pub type ReadRows<T> = fn(&Path, &Tokenizer, usize) -> Result<Vec<T>>;

/// What a trainer starts from besides its rows.
pub struct Start {
    pub settings: TrainingSettings,
    /// The checkpoint to continue from, checked to be one ([`Resume::resolve`]).
    pub resume: Option<PathBuf>,
    /// The training device (with autodiff).
    pub device: Device,
    pub tokenizer: Tokenizer,
}

/// A run's rows: the training rows and the evaluation rows (a separate `eval_data` file's, else
/// `eval_split` of the data held out, else none).
pub struct Rows<T> {
    pub train: Vec<T>,
    pub eval: Vec<T>,
}

impl Start {
    /// Resolves `resume` first (a wrong path fails before anything loads), then selects the
    /// device, loads `model`'s tokenizer and reads `data` and `eval_data` with `read` (`what`
    /// names one row in messages).
    pub fn new<T>(
        settings: TrainingSettings,
        model: &Path,
        data: &Path,
        eval_data: Option<&Path>,
        resume: Option<Resume>,
        what: &str,
        read: ReadRows<T>,
    ) -> Result<(Self, Rows<T>)> {
        let resume = resume.map(|r| r.resolve(&settings.output)).transpose()?;
        let device = training_device(&settings)?;
        let tokenizer = Tokenizer::load(model)?;
        let rows = read(data, &tokenizer, settings.max_length)?;
        let eval_rows = eval_data
            .map(|path| read(path, &tokenizer, settings.max_length))
            .transpose()?;
        let (seed, eval_split) = (settings.seed, settings.eval_split);
        let (train, eval) = split_for_eval(rows, eval_rows, eval_split, seed, data, what)?;
        let start = Self {
            settings,
            resume,
            device,
            tokenizer,
        };
        Ok((start, Rows { train, eval }))
    }

    /// Runs the training loop ([`train`](crate::train::train)) for `objective` on `model`, which
    /// `method` prepared, from the model directory `base`; `config_ron` goes to `config.ron`;
    /// `probe` is measured at the start and with every evaluation.
    pub fn train(
        self,
        config_ron: String,
        base: &Path,
        method: Method,
        (model, objective): (&mut CausalLm, &mut impl Objective),
        probe: Option<&mut dyn Probe>,
    ) -> Result<TrainSummary> {
        model.gradient_checkpointing = self.settings.gradient_checkpointing;
        let run = Run {
            settings: &self.settings,
            config_ron,
            base,
            method,
            resume: self.resume,
            probe,
        };
        crate::train::train(run, model, objective, &self.device)
    }
}
