//! AdamW over the LoRA parameters only (PyTorch's algorithm: decoupled weight decay, bias
//! correction), global-norm gradient clipping as PyTorch's `clip_grad_norm_`, and the warmup +
//! cosine/linear/constant schedules of transformers.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::config::LrScheduler;
use crate::model::CausalLm;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

/// First and second moments per parameter, keyed by `<module path>.lora_{A,B}`.
#[derive(Debug, Default)]
pub struct AdamW {
    pub step: u64,
    pub moments: BTreeMap<String, (Tensor<2>, Tensor<2>)>,
}

/// Gradients of every LoRA parameter, keyed like the optimizer state (`[d_in, r]` / `[r, d_out]`).
pub type LoraGrads = BTreeMap<String, Tensor<2>>;

/// Collects the LoRA gradients of one backward pass (detached from the graph).
pub fn lora_grads(model: &mut CausalLm, grads: &Gradients) -> LoraGrads {
    let mut out = BTreeMap::new();
    for (path, linear) in model.projections_mut() {
        if let Some(lora) = &linear.lora {
            if let Some(g) = lora.a.val().grad(grads) {
                out.insert(format!("{path}.lora_A"), g);
            }
            if let Some(g) = lora.b.val().grad(grads) {
                out.insert(format!("{path}.lora_B"), g);
            }
        }
    }
    out
}

/// Adds `more` into `sum` (gradient accumulation).
pub fn accumulate(sum: &mut LoraGrads, more: LoraGrads) {
    for (k, g) in more {
        match sum.remove(&k) {
            Some(s) => sum.insert(k, s + g),
            None => sum.insert(k, g),
        };
    }
}

/// The global L2 norm `[1]` of all gradients, left on the device (`None` without gradients).
pub fn global_norm(grads: &LoraGrads) -> Option<Tensor<1>> {
    let squares: Vec<Tensor<1>> = grads.values().map(|g| g.clone().square().sum()).collect();
    (!squares.is_empty()).then(|| Tensor::cat(squares, 0).sum().sqrt())
}

/// Scales gradients so their global norm `norm` `[1]` is at most `max_norm` (PyTorch:
/// `min(1, max/(norm + 1e-6))`), on the device: no host read.
pub fn clip(grads: &mut LoraGrads, norm: &Tensor<1>, max_norm: f64) {
    if max_norm <= 0.0 {
        return;
    }
    let coef = ((norm.clone() + 1e-6).recip() * max_norm)
        .clamp_max(1.0)
        .reshape([1, 1]);
    for g in grads.values_mut() {
        *g = g.clone() * coef.clone();
    }
}

impl AdamW {
    /// One update of every LoRA parameter with gradient in `grads`.
    pub fn step(&mut self, model: &mut CausalLm, grads: &LoraGrads, lr: f64, p: &AdamWParams) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - p.beta1.powi(t);
        let bc2 = 1.0 - p.beta2.powi(t);
        for (path, linear) in model.projections_mut() {
            let Some(lora) = linear.lora.as_mut() else {
                continue;
            };
            for (suffix, param) in [("lora_A", &mut lora.a), ("lora_B", &mut lora.b)] {
                let key = format!("{path}.{suffix}");
                let Some(g) = grads.get(&key) else { continue };
                let value = param.val().inner(); // without autodiff
                let g = g.clone();
                let (m, v) = self
                    .moments
                    .remove(&key)
                    .unwrap_or_else(|| (value.zeros_like(), value.zeros_like()));
                let m = m * p.beta1 + g.clone() * (1.0 - p.beta1);
                let v = v * p.beta2 + g.square() * (1.0 - p.beta2);
                let denom = (v.clone() / bc2).sqrt() + p.epsilon;
                let decayed = value * (1.0 - lr * p.weight_decay);
                let updated = decayed - (m.clone() / bc1) / denom * lr;
                *param = Param::from_tensor(Tensor::from_inner(updated));
                self.moments.insert(key, (m, v));
            }
        }
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total`, transformers-style.
pub fn learning_rate(
    peak: f64,
    step: usize,
    total: usize,
    warmup: usize,
    kind: LrScheduler,
) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match kind {
        LrScheduler::Constant => peak,
        LrScheduler::Linear => peak * (1.0 - progress).max(0.0),
        LrScheduler::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_transformers() {
        // get_cosine_schedule_with_warmup(peak=1, warmup=2, total=10)
        let lr = |s| learning_rate(1.0, s, 10, 2, LrScheduler::Cosine);
        assert_eq!(lr(0), 0.0);
        assert_eq!(lr(1), 0.5);
        assert_eq!(lr(2), 1.0);
        assert!((lr(6) - 0.5).abs() < 1e-12);
        assert!((learning_rate(1.0, 6, 10, 2, LrScheduler::Linear) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(2.0, 9, 10, 2, LrScheduler::Constant), 2.0);
    }

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let d = Device::flex();
        let mut grads = LoraGrads::new();
        grads.insert("a".into(), Tensor::from_floats([[3.0, 0.0]], &d));
        grads.insert("b".into(), Tensor::from_floats([[0.0, 4.0]], &d));
        let norm_of = |g: &LoraGrads| -> f32 { global_norm(g).unwrap().into_scalar() };
        let norm = global_norm(&grads).unwrap();
        assert!((norm_of(&grads) - 5.0).abs() < 1e-6);
        clip(&mut grads, &norm, 1.0);
        assert!((norm_of(&grads) - 1.0).abs() < 1e-5);
        // Below the limit nothing changes.
        let norm = global_norm(&grads).unwrap();
        clip(&mut grads, &norm, 10.0);
        assert!((norm_of(&grads) - 1.0).abs() < 1e-5);
        assert!(global_norm(&LoraGrads::new()).is_none());
    }
}
