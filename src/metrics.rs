//! Batch statistics under TRL's metric names: kept on the device during training and read back
//! once per logged step.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;

use crate::loss::{LossParams, PairLogps, rewards};

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

/// The pending side of training's metrics: batch statistics and gradient norms not yet read from
/// the device, and the steps the next metrics line averages.
#[derive(Debug)]
pub struct MetricsWindow {
    pending_stats: Vec<DeviceStats>,
    pending_norms: Vec<Tensor<1>>,
    first_unread_step: usize,
    stats: PairStats,
    norms: Vec<f64>,
    tokens: usize,
    started: Instant,
}

impl MetricsWindow {
    /// An empty window whose first step is `first_step` (1-based).
    pub fn new(first_step: usize) -> Self {
        Self {
            pending_stats: Vec::new(),
            pending_norms: Vec::new(),
            first_unread_step: first_step,
            stats: PairStats::default(),
            norms: Vec::new(),
            tokens: 0,
            started: Instant::now(),
        }
    }

    /// Records a micro-batch of `tokens` tokens and its per-pair `losses` (no host read).
    pub fn add_batch(
        &mut self,
        params: &LossParams,
        logps: &PairLogps,
        losses: Tensor<1>,
        tokens: usize,
    ) {
        self.pending_stats
            .push(DeviceStats::new(params, logps, losses));
        self.tokens += tokens;
    }

    /// Records a step's gradient norm `[1]` (no host read).
    pub fn add_norm(&mut self, norm: Tensor<1>) {
        self.pending_norms.push(norm);
    }

    /// Reads everything pending back in one go, through step `done`. Fails, naming the steps, when
    /// a loss or a gradient norm is not finite.
    pub fn read(&mut self, done: usize) -> Result<(), String> {
        let stats = PairStats::read(std::mem::take(&mut self.pending_stats));
        let norms = if self.pending_norms.is_empty() {
            Vec::new()
        } else {
            host_values(Tensor::cat(std::mem::take(&mut self.pending_norms), 0))
        };
        let steps = if self.first_unread_step == done {
            format!("step {done}")
        } else {
            format!("steps {}–{done}", self.first_unread_step)
        };
        self.first_unread_step = done + 1;
        if stats.loss.iter().any(|l| !l.is_finite()) {
            return Err(format!(
                "non-finite loss at {steps}; stopping (lower the learning rate?)"
            ));
        }
        if norms.iter().any(|n| !n.is_finite()) {
            return Err(format!("non-finite gradient norm at {steps}; stopping"));
        }
        self.stats.extend(stats);
        self.norms.extend(norms);
        Ok(())
    }

    /// The metrics of the steps read since the last line, under TRL's names (means over their
    /// pairs, the last step's `grad_norm` as transformers' Trainer logs it, `tokens_per_second`);
    /// starts the next window.
    pub fn take_line(&mut self) -> serde_json::Map<String, serde_json::Value> {
        let mut line = metrics_line(&std::mem::take(&mut self.stats), "");
        let grad_norm = self.norms.last().copied().unwrap_or(0.0);
        line.insert("grad_norm".into(), serde_json::json!(grad_norm));
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        line.insert(
            "tokens_per_second".into(),
            serde_json::json!(self.tokens as f64 / seconds),
        );
        self.norms.clear();
        self.tokens = 0;
        self.started = Instant::now();
        line
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
    use crate::loss::{LossKind, pair_losses};

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
    fn a_window_averages_its_steps_and_names_the_steps_of_a_non_finite_loss() {
        let device = Device::flex();
        let params = LossParams {
            kind: LossKind::Sigmoid,
            beta: 0.1,
            label_smoothing: 0.0,
            dpop_lambda: 0.0,
            sft_weight: 0.0,
        };
        let add = |window: &mut MetricsWindow, policy_chosen: f32| {
            let batch = logps(policy_chosen, &device);
            window.add_batch(&params, &batch, pair_losses(&params, &batch), 10);
        };
        let mut window = MetricsWindow::new(1);
        // Step 1: Δw = 0; step 2: Δw = 1 (rewards 0 and 0.1).
        add(&mut window, -2.0);
        window.add_norm(Tensor::from_floats([3.0], &device));
        add(&mut window, -1.0);
        window.add_norm(Tensor::from_floats([5.0], &device));
        window.read(2).unwrap();
        let line = window.take_line();
        let get = |k: &str| line[k].as_f64().unwrap();
        assert!((get("rewards/chosen") - 0.05).abs() < 1e-6);
        assert!((get("logps/chosen") + 1.5).abs() < 1e-6);
        assert_eq!(get("rewards/accuracies"), 0.5); // a margin of 0 is not a win
        assert_eq!(get("grad_norm"), 5.0); // the last step's, as transformers logs it
        assert!(get("tokens_per_second") > 0.0);

        add(&mut window, f32::NAN);
        add(&mut window, -2.0);
        let err = window.read(4).unwrap_err();
        assert!(err.contains("non-finite loss at steps 3–4"), "{err}");
    }
}
