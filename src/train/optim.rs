//! One optimizer path for every trainer: AdamW (PyTorch's algorithm: decoupled weight decay, bias
//! correction) over the LoRA factors or over every weight, and global-norm gradient clipping as
//! PyTorch's `clip_grad_norm_`, on the device (no host read).

use std::collections::BTreeMap;

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Gradients;

use crate::model::CausalLm;
use crate::model::params::ParamMut;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub weight_decay: f64,
}

/// First and second moments per parameter, keyed by the parameter's name (`<module>.lora_A`,
/// or a checkpoint name such as `model.norm.weight` in full fine-tuning); vectors are kept as
/// `[1, n]`.
#[derive(Debug, Default)]
pub struct AdamW {
    pub step: u64,
    pub moments: BTreeMap<String, (Tensor<2>, Tensor<2>)>,
}

/// Gradients of the trained parameters, keyed like the optimizer state (vectors as `[1, n]`).
pub type Grads = BTreeMap<String, Tensor<2>>;

/// What a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trained {
    /// The LoRA factors only (the base stays frozen).
    Adapters,
    /// Every weight of the model.
    AllWeights,
}

fn trained_params(model: &mut CausalLm, trained: Trained) -> Vec<(String, ParamMut<'_>)> {
    match trained {
        Trained::Adapters => model.lora_params_mut(),
        Trained::AllWeights => model.all_params_mut(),
    }
}

/// Collects the gradients of the trained parameters from one backward pass (detached).
pub fn collect_grads(model: &mut CausalLm, trained: Trained, grads: &Gradients) -> Grads {
    let mut out = BTreeMap::new();
    for (name, param) in trained_params(model, trained) {
        let grad = match param {
            ParamMut::Matrix(p) => p.val().grad(grads),
            ParamMut::Vector(p) => p.val().grad(grads).map(|g| g.unsqueeze::<2>()),
        };
        if let Some(g) = grad {
            out.insert(name, g);
        }
    }
    out
}

/// Adds `more` into `sum` (gradient accumulation).
pub fn accumulate(sum: &mut Grads, more: Grads) {
    for (k, g) in more {
        match sum.remove(&k) {
            Some(s) => sum.insert(k, s + g),
            None => sum.insert(k, g),
        };
    }
}

/// The global L2 norm `[1]` of all gradients, left on the device (`None` without gradients).
pub fn global_norm(grads: &Grads) -> Option<Tensor<1>> {
    let squares: Vec<Tensor<1>> = grads.values().map(|g| g.clone().square().sum()).collect();
    (!squares.is_empty()).then(|| Tensor::cat(squares, 0).sum().sqrt())
}

/// Scales gradients so their global norm `norm` `[1]` is at most `max_norm` (PyTorch:
/// `min(1, max/(norm + 1e-6))`), on the device: no host read.
pub fn clip(grads: &mut Grads, norm: &Tensor<1>, max_norm: f64) {
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
    /// One update of every trained parameter with a gradient in `grads`.
    pub fn step(
        &mut self,
        model: &mut CausalLm,
        trained: Trained,
        grads: &Grads,
        lr: f64,
        p: &AdamWParams,
    ) {
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - p.beta1.powi(t), 1.0 - p.beta2.powi(t));
        let mut update = |key: &str, value: Tensor<2>| -> Option<Tensor<2>> {
            let g = grads.get(key)?.clone();
            let (m, v) = self
                .moments
                .remove(key)
                .unwrap_or_else(|| (value.zeros_like(), value.zeros_like()));
            let m = m * p.beta1 + g.clone() * (1.0 - p.beta1);
            let v = v * p.beta2 + g.square() * (1.0 - p.beta2);
            let denom = (v.clone() / bc2).sqrt() + p.epsilon;
            let decayed = value * (1.0 - lr * p.weight_decay);
            let updated = decayed - (m.clone() / bc1) / denom * lr;
            self.moments.insert(key.to_string(), (m, v));
            Some(updated)
        };
        for (key, param) in trained_params(model, trained) {
            // Updates run without autodiff; the result is a fresh trainable leaf.
            match param {
                ParamMut::Matrix(param) => {
                    if let Some(updated) = update(&key, param.val().inner()) {
                        *param = Param::from_tensor(Tensor::from_inner(updated));
                    }
                }
                ParamMut::Vector(param) => {
                    let value = param.val().inner().unsqueeze::<2>();
                    if let Some(updated) = update(&key, value) {
                        let [_, n] = updated.dims();
                        *param = Param::from_tensor(Tensor::from_inner(updated.reshape([n])));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_scales_to_the_global_norm() {
        let d = Device::flex();
        let mut grads = Grads::new();
        grads.insert("a".into(), Tensor::from_floats([[3.0, 0.0]], &d));
        grads.insert("b".into(), Tensor::from_floats([[0.0, 4.0]], &d));
        let norm_of = |g: &Grads| -> f32 { global_norm(g).unwrap().into_scalar() };
        let norm = global_norm(&grads).unwrap();
        assert!((norm_of(&grads) - 5.0).abs() < 1e-6);
        clip(&mut grads, &norm, 1.0);
        assert!((norm_of(&grads) - 1.0).abs() < 1e-5);
        // Below the limit nothing changes.
        let norm = global_norm(&grads).unwrap();
        clip(&mut grads, &norm, 10.0);
        assert!((norm_of(&grads) - 1.0).abs() < 1e-5);
        assert!(global_norm(&Grads::new()).is_none());
    }
}
