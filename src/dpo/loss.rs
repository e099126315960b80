//! Preference losses as small pure functions of per-pair log-prob tensors.
//!
//! Notation (all `[pairs]`): `Δw = log π_θ(y_w|x) − log π_ref(y_w|x)` for the chosen completion,
//! `Δl` the same for the rejected one, log-probs summed over completion tokens; `β` the DPO
//! temperature. Every loss is returned per pair; the trainer averages.

use burn::prelude::*;
use burn::tensor::activation::{log_sigmoid, relu};

/// Which preference loss to optimise.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LossKind {
    /// DPO: `−log σ(β(Δw − Δl))`; with label smoothing ε, cDPO:
    /// `(1−ε)·(−log σ(βh)) − ε·log σ(−βh)`, `h = Δw − Δl`.
    /// Gradient: raises Δw and lowers Δl, weighted by `σ(−βh)` (how wrong the pair still is).
    Sigmoid,
    /// MinorDPO: `−log σ(β(Δw − max(0, Δl)))`. Same push on the chosen answer; the rejected one
    /// is pushed down only while it is above the reference (`Δl > 0`); below it the term is
    /// constant and its gradient is zero.
    MinorDpo,
    /// DPOP (Pal et al. 2024): `−log σ(β(Δw − Δl − λ·max(0, −Δw)))`: DPO plus a penalty whenever
    /// the chosen log-prob falls below the reference, which pulls it back up with weight λ.
    Dpop,
    /// IPO: `(Δw/|y_w| − Δl/|y_l| − 1/(2β))²` with length-normalised log-ratios (as TRL): regresses
    /// the normalised margin to `1/(2β)` instead of pushing it to infinity.
    Ipo,
    /// Hinge (SLiC): `relu(1 − β(Δw − Δl))`: zero gradient once the margin exceeds `1/β`.
    Hinge,
}

impl LossKind {
    /// The loss's name in papers and reports: DPO, MinorDPO, DPOP, IPO, hinge (configs and flags
    /// use the snake_case names: sigmoid, minor_dpo, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sigmoid => "DPO",
            Self::MinorDpo => "MinorDPO",
            Self::Dpop => "DPOP",
            Self::Ipo => "IPO",
            Self::Hinge => "hinge",
        }
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Loss hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossParams {
    pub kind: LossKind,
    pub beta: f64,
    /// cDPO's ε (sigmoid only).
    pub label_smoothing: f64,
    /// DPOP's λ.
    pub dpop_lambda: f64,
    /// RPO: weight of the chosen completion's mean token NLL added to every loss (0 = off).
    pub sft_weight: f64,
}

/// The four summed log-prob tensors of a batch of pairs, plus completion lengths.
#[derive(Debug, Clone)]
pub struct PairLogps {
    pub policy_chosen: Tensor<1>,
    pub policy_rejected: Tensor<1>,
    pub reference_chosen: Tensor<1>,
    pub reference_rejected: Tensor<1>,
    /// Completion token counts (as floats).
    pub chosen_len: Tensor<1>,
    pub rejected_len: Tensor<1>,
}

/// Per-pair losses `[pairs]`.
pub fn pair_losses(p: &LossParams, logps: &PairLogps) -> Tensor<1> {
    let dw = logps.policy_chosen.clone() - logps.reference_chosen.clone();
    let dl = logps.policy_rejected.clone() - logps.reference_rejected.clone();
    let beta = p.beta;
    let losses = match p.kind {
        LossKind::Sigmoid => {
            let h = (dw - dl) * beta;
            let main = -log_sigmoid(h.clone());
            if p.label_smoothing > 0.0 {
                main * (1.0 - p.label_smoothing) - log_sigmoid(-h) * p.label_smoothing
            } else {
                main
            }
        }
        LossKind::MinorDpo => -log_sigmoid((dw - relu(dl)) * beta),
        LossKind::Dpop => {
            let penalty = relu(-dw.clone()) * p.dpop_lambda;
            -log_sigmoid((dw - dl - penalty) * beta)
        }
        LossKind::Ipo => {
            let h = dw / logps.chosen_len.clone() - dl / logps.rejected_len.clone();
            (h - 1.0 / (2.0 * beta)).square()
        }
        LossKind::Hinge => relu(-((dw - dl) * beta) + 1.0),
    };
    if p.sft_weight > 0.0 {
        let nll = -logps.policy_chosen.clone() / logps.chosen_len.clone();
        losses + nll * p.sft_weight
    } else {
        losses
    }
}

/// `β·Δw` and `β·Δl` (detached): TRL's `rewards/chosen` and `rewards/rejected` per pair.
pub fn rewards(beta: f64, logps: &PairLogps) -> (Tensor<1>, Tensor<1>) {
    let chosen = (logps.policy_chosen.clone() - logps.reference_chosen.clone()).detach() * beta;
    let rejected =
        (logps.policy_rejected.clone() - logps.reference_rejected.clone()).detach() * beta;
    (chosen, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32]) -> Tensor<1> {
        Tensor::from_floats(values, &Device::flex())
    }

    fn logps(pc: &[f32], pr: &[f32], rc: &[f32], rr: &[f32]) -> PairLogps {
        let n = pc.len();
        PairLogps {
            policy_chosen: t(pc),
            policy_rejected: t(pr),
            reference_chosen: t(rc),
            reference_rejected: t(rr),
            chosen_len: t(&vec![4.0; n]),
            rejected_len: t(&vec![2.0; n]),
        }
    }

    /// `train`'s default loss settings (β = 0.1, DPOP λ = 50) with `kind`.
    fn params(kind: LossKind) -> LossParams {
        crate::dpo::TrainConfig {
            loss: kind,
            ..Default::default()
        }
        .loss_params()
    }

    fn values(x: Tensor<1>) -> Vec<f64> {
        x.into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap()
    }

    fn close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    /// −log σ(x) = ln(1 + e^(−x))
    fn nls(x: f64) -> f64 {
        (1.0 + (-x).exp()).ln()
    }

    #[test]
    fn dpo_is_ln2_when_policy_equals_reference() {
        let l = logps(&[-3.0, -7.5], &[-4.0, -2.0], &[-3.0, -7.5], &[-4.0, -2.0]);
        let got = values(pair_losses(&params(LossKind::Sigmoid), &l));
        assert_eq!(got[0] as f32, std::f32::consts::LN_2);
        assert_eq!(got[1] as f32, std::f32::consts::LN_2);
    }

    // Pair 1: Δw = 2, Δl = 3 (rejected above the reference); pair 2: Δw = 2, Δl = −5.
    fn worked() -> PairLogps {
        logps(
            &[-8.0, -8.0],
            &[-7.0, -15.0],
            &[-10.0, -10.0],
            &[-10.0, -10.0],
        )
    }

    #[test]
    fn sigmoid_and_label_smoothing_by_hand() {
        // β(Δw − Δl): 0.1·(2 − 3) = −0.1 and 0.1·(2 + 5) = 0.7
        close(
            &values(pair_losses(&params(LossKind::Sigmoid), &worked())),
            &[nls(-0.1), nls(0.7)],
        );
        let smoothed = LossParams {
            label_smoothing: 0.2,
            ..params(LossKind::Sigmoid)
        };
        close(
            &values(pair_losses(&smoothed, &worked())),
            &[
                0.8 * nls(-0.1) + 0.2 * nls(0.1),
                0.8 * nls(0.7) + 0.2 * nls(-0.7),
            ],
        );
    }

    #[test]
    fn minor_dpo_clips_rejected_below_reference() {
        // β(Δw − max(0, Δl)): 0.1·(2 − 3) = −0.1; 0.1·(2 − 0) = 0.2
        close(
            &values(pair_losses(&params(LossKind::MinorDpo), &worked())),
            &[nls(-0.1), nls(0.2)],
        );
    }

    #[test]
    fn minor_dpo_gradient_on_rejected_stops_below_reference() {
        let device = Device::flex().autodiff();
        let policy_rejected = Tensor::<1>::from_floats([-7.0, -15.0], &device).require_grad();
        let l = PairLogps {
            policy_chosen: Tensor::from_floats([-8.0, -8.0], &device),
            policy_rejected: policy_rejected.clone(),
            reference_chosen: Tensor::from_floats([-10.0, -10.0], &device),
            reference_rejected: Tensor::from_floats([-10.0, -10.0], &device),
            chosen_len: Tensor::from_floats([4.0, 4.0], &device),
            rejected_len: Tensor::from_floats([2.0, 2.0], &device),
        };
        let grads = pair_losses(&params(LossKind::MinorDpo), &l)
            .sum()
            .backward();
        let g = values(policy_rejected.grad(&grads).unwrap());
        // d/dΔl −log σ(β(Δw − Δl)) = β·σ(−β(Δw−Δl)) = 0.1·σ(0.1) for pair 1; 0 for pair 2.
        let sigma = |x: f64| 1.0 / (1.0 + (-x).exp());
        close(&g, &[0.1 * sigma(0.1), 0.0]);
    }

    #[test]
    fn dpop_ipo_hinge_and_sft_by_hand() {
        // Pair 3: Δw = −1 (chosen fell below the reference), Δl = −2.
        let l = logps(
            &[-8.0, -11.0],
            &[-7.0, -12.0],
            &[-10.0, -10.0],
            &[-10.0, -10.0],
        );
        // DPOP: β(Δw − Δl − 50·max(0, −Δw)) = 0.1·(2 − 3 − 0) = −0.1; 0.1·(−1 + 2 − 50) = −4.9
        close(
            &values(pair_losses(&params(LossKind::Dpop), &l)),
            &[nls(-0.1), nls(-4.9)],
        );
        // IPO: (Δw/4 − Δl/2 − 1/(2·0.1))² = (0.5 − 1.5 − 5)² = 36; (−0.25 + 1 − 5)² = 18.0625
        close(
            &values(pair_losses(&params(LossKind::Ipo), &l)),
            &[36.0, 18.0625],
        );
        // Hinge: relu(1 − 0.1·(−1)) = 1.1; relu(1 − 0.1·1) = 0.9
        close(
            &values(pair_losses(&params(LossKind::Hinge), &l)),
            &[1.1, 0.9],
        );
        // RPO: DPO + 0.5 · (−logp_chosen / 4)
        let rpo = LossParams {
            sft_weight: 0.5,
            ..params(LossKind::Sigmoid)
        };
        close(
            &values(pair_losses(&rpo, &l)),
            &[nls(-0.1) + 0.5 * 2.0, nls(0.1) + 0.5 * 2.75],
        );
    }

    #[test]
    fn rewards_are_beta_times_log_ratios() {
        let (c, r) = rewards(0.1, &worked());
        close(&values(c), &[0.2, 0.2]);
        close(&values(r), &[0.3, -0.5]);
    }
}
