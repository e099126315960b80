//! The autodiff side of every custom op in `kernels`, written once: an op is a forward over its
//! tracked inputs that also returns the state its backward keeps, a forward for when nothing is
//! tracked (which may skip that state), and a gradient function from the state and the output
//! gradient to the gradients of the inputs that need one.

use std::fmt;

use burn::backend::Backend;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

/// `gradient(state, ∂out, needed)` → `∂input` for each input whose `needed` is true (the others
/// may be `None`).
pub(crate) type Gradient<B, S, const N: usize> =
    fn(S, FloatTensor<B>, [bool; N]) -> [Option<FloatTensor<B>>; N];

/// The backward step of an op: its gradient function (a plain function, so the step holds no
/// state of its own; the op's state travels in `Ops::state`).
struct Step<B: Backend, S, const N: usize> {
    gradient: Gradient<B, S, N>,
}

impl<B: Backend, S, const N: usize> fmt::Debug for Step<B, S, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernels::autodiff::Step<{N}>")
    }
}

impl<B, S, const N: usize> Backward<B, N> for Step<B, S, N>
where
    B: Backend,
    S: Clone + Send + fmt::Debug + 'static,
{
    type State = S;

    fn backward(self, ops: Ops<S, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let needed = ops.parents.each_ref().map(Option::is_some);
        let parts = (self.gradient)(ops.state, grad, needed);
        for (parent, part) in ops.parents.into_iter().zip(parts) {
            if let (Some(node), Some(part)) = (parent, part) {
                grads.register::<B>(node.id, part);
            }
        }
    }
}

/// The differentiable op of `inputs` (the tensors that may need a gradient; frozen operands are
/// captured by the closures): `tracked` when any input is tracked, returning the output and the
/// state `gradient` receives, `untracked` otherwise.
pub(crate) fn op<B, C, S, const N: usize>(
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    tracked: impl FnOnce([FloatTensor<B>; N]) -> (FloatTensor<B>, S),
    untracked: impl FnOnce([FloatTensor<B>; N]) -> FloatTensor<B>,
    gradient: Gradient<B, S, N>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    S: Clone + Send + fmt::Debug + 'static,
{
    let nodes = inputs.each_ref().map(|input| input.node());
    let primitives = inputs.map(|input| input.into_primitive());
    match (Step { gradient })
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, state) = tracked(primitives);
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(untracked(primitives)),
    }
}
