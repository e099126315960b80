//! Pair statistics under TRL's metric names: kept on the device during training (`DeviceStats`,
//! the rows the training loop reads back once per logged step) and summarised per line.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::dpo::loss::{LossParams, PairLogps, rewards};
use crate::train::window::StatRows;

/// Per-pair values read back from the device.
#[derive(Debug, Clone, Default)]
pub struct PairStats {
    pub loss: Vec<f64>,
    pub reward_chosen: Vec<f64>,
    pub reward_rejected: Vec<f64>,
    pub policy_chosen: Vec<f64>,
    pub policy_rejected: Vec<f64>,
    pub reference_chosen: Vec<f64>,
    pub reference_rejected: Vec<f64>,
}

/// A `[n]` tensor read back to the host.
pub fn host_values(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")
}

/// One batch's statistics still on the device, `[7, pairs]`: rows loss, reward chosen / rejected,
/// policy chosen / rejected, reference chosen / rejected. Training keeps these until a logged
/// step and reads them all back at once.
#[derive(Debug, Clone)]
pub struct DeviceStats(Tensor<2>);

impl DeviceStats {
    /// The `[7, pairs]` tensor.
    pub fn into_tensor(self) -> Tensor<2> {
        self.0
    }

    /// The batch's per-pair `losses` (as `pair_losses` gave them), rewards and log-probs, all
    /// detached, without a host read.
    pub fn new(params: &LossParams, logps: &PairLogps, losses: Tensor<1>) -> Self {
        let (rc, rr) = rewards(params.beta, logps);
        Self(Tensor::stack(
            vec![
                losses.detach(),
                rc,
                rr,
                logps.policy_chosen.clone().detach(),
                logps.policy_rejected.clone().detach(),
                logps.reference_chosen.clone().detach(),
                logps.reference_rejected.clone().detach(),
            ],
            0,
        ))
    }
}

impl PairStats {
    /// Reads the statistics of several batches back to the host in one read.
    pub fn read(batches: Vec<DeviceStats>) -> Self {
        Self::from_rows(&StatRows::read(batches.into_iter().map(|b| b.0).collect()))
    }

    /// The statistics of [`DeviceStats`] rows read back by the training loop.
    pub fn from_rows(rows: &StatRows) -> Self {
        let row = |i: usize| rows.row(i).to_vec();
        Self {
            loss: row(0),
            reward_chosen: row(1),
            reward_rejected: row(2),
            policy_chosen: row(3),
            policy_rejected: row(4),
            reference_chosen: row(5),
            reference_rejected: row(6),
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.loss.len()
    }

    /// Whether no pair was recorded.
    pub fn is_empty(&self) -> bool {
        self.loss.is_empty()
    }

    /// Means under TRL's names: `loss`, `rewards/{chosen,rejected,accuracies,margins}`,
    /// `logps/{chosen,rejected}`.
    pub fn summary(&self) -> BTreeMap<String, f64> {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let margins: Vec<f64> = self
            .reward_chosen
            .iter()
            .zip(&self.reward_rejected)
            .map(|(c, r)| c - r)
            .collect();
        let accuracies: Vec<f64> = margins.iter().map(|m| f64::from(*m > 0.0)).collect();
        BTreeMap::from([
            ("loss".to_string(), mean(&self.loss)),
            ("rewards/chosen".to_string(), mean(&self.reward_chosen)),
            ("rewards/rejected".to_string(), mean(&self.reward_rejected)),
            ("rewards/accuracies".to_string(), mean(&accuracies)),
            ("rewards/margins".to_string(), mean(&margins)),
            ("logps/chosen".to_string(), mean(&self.policy_chosen)),
            ("logps/rejected".to_string(), mean(&self.policy_rejected)),
        ])
    }
}

/// `stats`' summary as a JSON object, every name prefixed with `prefix`.
pub fn metrics_line(stats: &PairStats, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
    stats
        .summary()
        .into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), serde_json::json!(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpo::loss::{LossKind, pair_losses};

    fn logps(policy_chosen: f32, device: &Device) -> PairLogps {
        let t = |v: f32| Tensor::<1>::from_floats([v], device);
        PairLogps {
            policy_chosen: t(policy_chosen),
            policy_rejected: t(-4.0),
            reference_chosen: t(-2.0),
            reference_rejected: t(-4.0),
            chosen_len: t(3.0),
            rejected_len: t(3.0),
        }
    }

    #[test]
    fn a_window_of_steps_is_summarised_under_trl_names() {
        let device = Device::flex();
        let params = crate::dpo::TrainConfig {
            loss: LossKind::Sigmoid,
            ..Default::default()
        }
        .loss_params();
        let mut window = crate::train::window::StepWindow::new(1);
        // Step 1: Δw = 0; step 2: Δw = 1 (rewards 0 and 0.1).
        for policy_chosen in [-2.0, -1.0] {
            let batch = logps(policy_chosen, &device);
            let stats = DeviceStats::new(&params, &batch, pair_losses(&params, &batch));
            window.add_batch(stats.into_tensor(), 10);
        }
        window.read(2).unwrap();
        let line = metrics_line(&PairStats::from_rows(&window.take().0), "");
        let get = |k: &str| line[k].as_f64().unwrap();
        assert!((get("rewards/chosen") - 0.05).abs() < 1e-6);
        assert!((get("logps/chosen") + 1.5).abs() < 1e-6);
        assert_eq!(get("rewards/accuracies"), 0.5); // a margin of 0 is not a win
    }
}
