//! The demo's sweep: which preference runs it makes — every loss at every learning rate with
//! every seed (the extras with the first few seeds) — and their names.

use serde::{Deserialize, Serialize};

use crate::dpo::loss::LossKind;

/// A preference loss as the sweep runs it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub loss: LossKind,
    /// Weight of the chosen answer's mean token NLL added to the loss (RPO with `sigmoid`).
    #[serde(default)]
    pub sft_weight: f64,
}

impl Variant {
    /// The name in reports: the loss's paper name, `RPO` for DPO with an NLL term.
    pub fn name(&self) -> String {
        match (self.loss, self.sft_weight > 0.0) {
            (_, false) => self.loss.name().to_string(),
            (LossKind::Sigmoid, true) => "RPO".to_string(),
            (loss, true) => format!("{loss}+NLL"),
        }
    }

    /// The name in file names: `dpo`, `minordpo`, `rpo`.
    pub fn slug(&self) -> String {
        self.name().to_lowercase().replace('+', "-")
    }
}

/// The grid of runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Run at every learning rate with every seed.
    pub losses: Vec<Variant>,
    /// Run at every learning rate with the first `extra_seeds` seeds.
    #[serde(default)]
    pub extras: Vec<Variant>,
    #[serde(default = "one")]
    pub extra_seeds: usize,
    pub learning_rates: Vec<f64>,
    /// Seeds of the preference runs (LoRA initialisation, batch order); the base model and the
    /// pairs are the same for all.
    pub seeds: Vec<u64>,
}

fn one() -> usize {
    1
}

/// One run of the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSpec {
    pub variant: Variant,
    pub learning_rate: f64,
    pub seed: u64,
}

impl RunSpec {
    /// The run's directory name: `minordpo-lr0.001-seed2`.
    pub fn name(&self) -> String {
        format!(
            "{}-lr{}-seed{}",
            self.variant.slug(),
            self.learning_rate,
            self.seed
        )
    }
}

impl Sweep {
    /// Every run, variant by variant, each learning rate's seeds together.
    pub fn plan(&self) -> Vec<RunSpec> {
        let main = self.losses.iter().map(|v| (v, &self.seeds[..]));
        let extra_seeds = &self.seeds[..self.extra_seeds.min(self.seeds.len())];
        let extras = self.extras.iter().map(|v| (v, extra_seeds));
        main.chain(extras)
            .flat_map(|(variant, seeds)| {
                self.learning_rates.iter().flat_map(move |&learning_rate| {
                    seeds.iter().map(move |&seed| RunSpec {
                        variant: *variant,
                        learning_rate,
                        seed,
                    })
                })
            })
            .collect()
    }

    /// The variants in report order.
    pub fn variants(&self) -> Vec<Variant> {
        self.losses.iter().chain(&self.extras).copied().collect()
    }

    /// Checks the grid, naming the field at fault.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field: &str, message: String| {
            Err(crate::Error::Invalid(format!(
                "demo config field `sweep.{field}`: {message}"
            )))
        };
        if self.losses.is_empty() {
            return bad("losses", "list at least one loss".into());
        }
        if self.seeds.is_empty() {
            return bad("seeds", "list at least one seed".into());
        }
        if let Some(lr) = self
            .learning_rates
            .iter()
            .find(|lr| !(lr.is_finite() && **lr > 0.0))
        {
            return bad("learning_rates", format!("{lr} is not a positive number"));
        }
        if self.learning_rates.is_empty() {
            return bad("learning_rates", "list at least one".into());
        }
        if self.extra_seeds == 0 || self.extra_seeds > self.seeds.len() {
            return bad(
                "extra_seeds",
                format!("must be between 1 and the {} seeds", self.seeds.len()),
            );
        }
        let mut names: Vec<String> = self.variants().iter().map(Variant::name).collect();
        let mut lrs: Vec<String> = self.learning_rates.iter().map(f64::to_string).collect();
        let mut seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
        for (field, list) in [
            ("losses", &mut names),
            ("learning_rates", &mut lrs),
            ("seeds", &mut seeds),
        ] {
            list.sort();
            if let Some(pair) = list.windows(2).find(|w| w[0] == w[1]) {
                return bad(field, format!("`{}` is listed twice", pair[0]));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(loss: LossKind, sft_weight: f64) -> Variant {
        Variant { loss, sft_weight }
    }

    fn sweep() -> Sweep {
        Sweep {
            losses: vec![
                variant(LossKind::Sigmoid, 0.0),
                variant(LossKind::MinorDpo, 0.0),
            ],
            extras: vec![variant(LossKind::Sigmoid, 1.0)],
            extra_seeds: 1,
            learning_rates: vec![1e-4, 1e-3],
            seeds: vec![1, 2, 3],
        }
    }

    #[test]
    fn the_plan_crosses_losses_rates_and_seeds() {
        let plan = sweep().plan();
        // 2 losses × 2 rates × 3 seeds, then RPO × 2 rates × 1 seed
        assert_eq!(plan.len(), 14);
        let names: Vec<String> = plan.iter().map(RunSpec::name).collect();
        assert_eq!(
            names[..4],
            [
                "dpo-lr0.0001-seed1",
                "dpo-lr0.0001-seed2",
                "dpo-lr0.0001-seed3",
                "dpo-lr0.001-seed1"
            ]
        );
        assert_eq!(names[12..], ["rpo-lr0.0001-seed1", "rpo-lr0.001-seed1"]);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "names are distinct");
        assert_eq!(
            sweep()
                .variants()
                .iter()
                .map(Variant::name)
                .collect::<Vec<_>>(),
            ["DPO", "MinorDPO", "RPO"]
        );
    }

    #[test]
    fn bad_grids_name_their_field() {
        assert!(sweep().validate().is_ok());
        let check = |edit: &dyn Fn(&mut Sweep), expected: &str| {
            let mut s = sweep();
            edit(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        check(&|s| s.seeds.push(2), "`sweep.seeds`: `2` is listed twice");
        check(
            &|s| s.learning_rates = vec![1e-3, -1.0],
            "-1 is not a positive",
        );
        check(&|s| s.learning_rates.clear(), "`sweep.learning_rates`");
        check(
            &|s| s.extra_seeds = 4,
            "`sweep.extra_seeds`: must be between 1 and the 3",
        );
        check(
            &|s| s.extras.push(variant(LossKind::MinorDpo, 0.0)),
            "`MinorDPO` is listed twice",
        );
        check(&|s| s.losses.clear(), "`sweep.losses`");
    }
}
