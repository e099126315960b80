//! Batch statistics under TRL's metric names: kept on the device during training and read back
//! once per logged step.

use std::collections::BTreeMap;

use burn::prelude::*;

use crate::loss::{LossParams, PairLogps, pair_losses, rewards};

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
    /// The batch's losses, rewards and log-probs (detached), without a host read.
    pub fn new(params: &LossParams, logps: &PairLogps) -> Self {
        let (rc, rr) = rewards(params.beta, logps);
        Self(Tensor::stack(
            vec![
                pair_losses(params, logps).detach(),
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
    /// Reads losses, rewards and log-probs of a batch back to the host (one sync).
    pub fn from_batch(params: &LossParams, logps: &PairLogps) -> Self {
        Self::read(vec![DeviceStats::new(params, logps)])
    }

    /// Reads the statistics of several batches back to the host in one read.
    pub fn read(batches: Vec<DeviceStats>) -> Self {
        if batches.is_empty() {
            return Self::default();
        }
        let all = Tensor::cat(batches.into_iter().map(|b| b.0).collect(), 1); // [7, pairs]
        let pairs = all.dims()[1];
        let values = all
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64 data");
        let row = |i: usize| values[i * pairs..(i + 1) * pairs].to_vec();
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

    /// Appends another batch's values.
    pub fn extend(&mut self, other: PairStats) {
        self.loss.extend(other.loss);
        self.reward_chosen.extend(other.reward_chosen);
        self.reward_rejected.extend(other.reward_rejected);
        self.policy_chosen.extend(other.policy_chosen);
        self.policy_rejected.extend(other.policy_rejected);
        self.reference_chosen.extend(other.reference_chosen);
        self.reference_rejected.extend(other.reference_rejected);
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
