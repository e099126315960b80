//! Batch statistics under TRL's metric names, accumulated on the host once per logged step.

use std::collections::BTreeMap;

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

fn host(t: burn::prelude::Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .expect("f64 data")
}

impl PairStats {
    /// Reads losses, rewards and log-probs of a batch back to the host (one sync).
    pub fn from_batch(params: &LossParams, logps: &PairLogps) -> Self {
        let losses = pair_losses(params, logps).detach();
        let (rc, rr) = rewards(params.beta, logps);
        Self {
            loss: host(losses),
            reward_chosen: host(rc),
            reward_rejected: host(rr),
            policy_chosen: host(logps.policy_chosen.clone().detach()),
            policy_rejected: host(logps.policy_rejected.clone().detach()),
            reference_chosen: host(logps.reference_chosen.clone()),
            reference_rejected: host(logps.reference_rejected.clone()),
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
