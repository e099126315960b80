//! Full-parameter training helpers: unfreeze every weight, and clip the global gradient norm of
//! Burn's per-parameter gradients as PyTorch's `clip_grad_norm_` does (Burn's own clipping is per
//! tensor).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::model::CausalLm;

struct Unfreeze;

impl ModuleMapper for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.set_require_grad(true)
    }
}

/// The model with every float parameter trainable.
pub fn unfreeze(model: CausalLm) -> CausalLm {
    model.map(&mut Unfreeze)
}

struct SquaredNorms<'a> {
    grads: &'a GradientsParams,
    squares: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.squares.push(g.square().sum());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    coef: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.coef);
        }
    }
}

/// The global L2 norm of `grads` (one host read); scales them to `max_norm` when above it
/// (`max/(norm + 1e-6)`, 0 = no clipping).
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut norms = SquaredNorms {
        grads,
        squares: Vec::new(),
    };
    model.visit(&mut norms);
    if norms.squares.is_empty() {
        return 0.0;
    }
    let total: f32 = Tensor::cat(norms.squares, 0).sum().into_scalar();
    let norm = f64::from(total).sqrt();
    if max_norm > 0.0 && norm > max_norm {
        model.visit(&mut Scale {
            grads,
            coef: max_norm / (norm + 1e-6),
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Module, Debug)]
    struct Two {
        a: Param<Tensor<1>>,
        b: Param<Tensor<1>>,
    }

    #[test]
    fn clipping_uses_the_norm_over_all_parameters() {
        let device = Device::flex().autodiff();
        let two = Two {
            a: Param::from_tensor(Tensor::from_floats([1.0], &device)),
            b: Param::from_tensor(Tensor::from_floats([1.0], &device)),
        };
        let loss = two.a.val() * 3.0 + two.b.val() * 4.0;
        let mut grads = GradientsParams::from_grads(loss.sum().backward(), &two);
        let norm = clip_global_norm(&two, &mut grads, 1.0);
        assert!((norm - 5.0).abs() < 1e-5);
        let a: f32 = grads.get::<1>(two.a.id).unwrap().into_scalar();
        let b: f32 = grads.get::<1>(two.b.id).unwrap().into_scalar();
        assert!((a - 0.6).abs() < 1e-6 && (b - 0.8).abs() < 1e-6);
    }
}
