//! Activation checkpointing of one piece of the model (a decoder layer): its forward runs without
//! a graph and keeps only its input, and its backward runs the piece again from that input with
//! autodiff and backpropagates the output gradient through the copy.
//!
//! So a step keeps one `[batch, seq, hidden]` input per layer instead of every activation of
//! every layer; the layers' own activations exist one layer at a time, in the backward. The cost
//! is one more forward per layer. The recompute is a nested backward on a graph of its own (Burn's
//! graph mutex is per graph, so a step may run one): its input and the piece's trained
//! parameters are fresh leaves holding the kept values (the recompute must not reach the outer
//! graph's leaves, whose mutex the outer backward holds), and their gradients are moved into the
//! outer backward's gradients under the parameters' own nodes, where the optimizer finds them as
//! if the piece had run in the outer graph. LoRA dropout draws the same masks both times: the
//! piece's forward seeds the device with a seed of its own and the recompute seeds it again.
//!
//! This is plumbing below Burn's `Tensor` API (the outer node is an `autodiff` backward step over
//! each backend's primitives), so the three backends are matched by hand in [`Concrete`].

// ndarray is deprecated upstream but stays selectable (`--device ndarray`), so it gets the op too.
#![allow(deprecated)]

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients as NodeGradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::Flex;
use burn::backend::ndarray::NdArray;
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    AutodiffBackend, Backend, BackendTensor, Cube, DispatchAutodiffContext, DispatchTensor,
    DispatchTensorKind, GradientCheckpointingStrategy,
};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Gradients;

/// A piece of the model that can be run again in the backward: a module and what its forward
/// needs besides the input.
pub trait Recompute: Clone + Send + Sync + fmt::Debug + 'static {
    /// The module whose parameters the piece trains.
    type Module: Module;
    /// `x` `[batch, seq, hidden]` → the piece's output; tracked when `x` or the module's trained
    /// parameters are.
    fn forward(&self, x: Tensor<3>) -> Tensor<3>;
    /// The module the forward runs.
    fn module(&self) -> &Self::Module;
    /// The same piece over another copy of its module.
    fn with_module(&self, module: Self::Module) -> Self;
    /// Whether the forward draws random numbers (dropout) while training.
    fn draws_random(&self) -> bool;
}

/// The piece with nothing to train: on an untracked input its forward builds no graph, while
/// dropout still sees a training forward (`Module::no_grad`, not `valid`).
fn frozen<R: Recompute>(piece: &R) -> R {
    piece.with_module(piece.module().clone().no_grad())
}

/// The piece with every trained parameter replaced by a fresh leaf of the same value: the
/// recompute's graph must not reach the leaves of the outer graph (whose mutex the outer backward
/// holds while it runs this step).
fn with_fresh_leaves<R: Recompute>(piece: &R) -> R {
    struct Fresh;
    impl ModuleMapper for Fresh {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if param.val().is_require_grad() {
                param.map(|t| t.detach().require_grad())
            } else {
                param
            }
        }
    }
    piece.with_module(piece.module().clone().map(&mut Fresh))
}

/// Each trained parameter of `module` (rank-erased, in the module's order) and its gradient in
/// `grads` when it has one.
fn trained<M: Module>(
    module: &M,
    grads: Option<&Gradients>,
) -> Vec<(DispatchTensor, Option<DispatchTensor>)> {
    struct Trained<'a> {
        grads: Option<&'a Gradients>,
        found: Vec<(DispatchTensor, Option<DispatchTensor>)>,
    }
    impl ModuleVisitor for Trained<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            if value.is_require_grad() {
                let grad = self.grads.and_then(|g| value.grad(g));
                self.found
                    .push((value.into_dispatch(), grad.map(Tensor::into_dispatch)));
            }
        }
    }
    let mut visitor = Trained {
        grads,
        found: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.found
}

/// `piece.forward(x)`, keeping only `x` for the backward when a graph is built.
pub fn checkpointed<R: Recompute>(x: Tensor<3>, piece: R) -> Tensor<3> {
    let first_trained = trained(piece.module(), None)
        .into_iter()
        .next()
        .map(|(p, _)| p);
    if !x.is_autodiff() || (!x.is_tracked() && first_trained.is_none()) {
        return piece.forward(x);
    }
    let seed = piece.draws_random().then(next_seed);
    if let Some(seed) = seed {
        x.device().seed(seed);
    }
    let out = frozen(&piece).forward(x.clone().detach());
    let strategy = x
        .gradient_checkpointing_strategy()
        .expect("an autodiff tensor");
    let state = Kept {
        piece,
        seed,
        strategy,
    };
    Tensor::from_dispatch(record(
        x.into_dispatch(),
        out.into_dispatch(),
        first_trained,
        state,
    ))
}

/// A fresh seed per checkpointed forward (the recompute reuses it).
fn next_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    // splitmix64 of a counter: distinct, well-mixed seeds.
    let mut z = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What the backward needs besides the input: the piece, its dropout seed and the graph's
/// checkpointing strategy (which the recompute's leaves must share with the parameters).
#[derive(Clone, Debug)]
struct Kept<R> {
    piece: R,
    seed: Option<u64>,
    strategy: GradientCheckpointingStrategy,
}

/// The concrete backends under `Dispatch`, and how their float primitives move in and out of
/// [`DispatchTensor`]s.
trait Concrete: Backend {
    /// A primitive as a tensor without autodiff.
    fn plain(p: FloatTensor<Self>) -> DispatchTensor;
    /// The primitive of a tensor without autodiff.
    fn from_plain(t: DispatchTensor) -> FloatTensor<Self>;
    /// The autodiff tensor of an autodiff-enabled tensor (an untracked one lifted).
    fn tracked(t: DispatchTensor) -> AutodiffTensor<Self>;
    /// An autodiff tensor as a tensor with the autodiff context `strategy`.
    fn from_tracked(
        t: AutodiffTensor<Self>,
        strategy: GradientCheckpointingStrategy,
    ) -> DispatchTensor;
}

macro_rules! concrete {
    ($backend:ty, $variant:ident) => {
        impl Concrete for $backend {
            fn plain(p: FloatTensor<Self>) -> DispatchTensor {
                DispatchTensor {
                    kind: DispatchTensorKind::$variant(BackendTensor::Float(p)),
                    autodiff: DispatchAutodiffContext::Disabled,
                }
            }

            fn from_plain(t: DispatchTensor) -> FloatTensor<Self> {
                match t.kind {
                    DispatchTensorKind::$variant(BackendTensor::Float(p)) => p,
                    DispatchTensorKind::Autodiff(inner) => match *inner {
                        DispatchTensorKind::$variant(BackendTensor::Autodiff(t)) => {
                            t.into_primitive()
                        }
                        _ => unreachable!("a tensor on another backend"),
                    },
                    _ => unreachable!("a tensor on another backend"),
                }
            }

            fn tracked(t: DispatchTensor) -> AutodiffTensor<Self> {
                match t.kind {
                    DispatchTensorKind::Autodiff(inner) => match *inner {
                        DispatchTensorKind::$variant(BackendTensor::Autodiff(t)) => t,
                        DispatchTensorKind::$variant(BackendTensor::Float(p)) => {
                            <Autodiff<Self> as AutodiffBackend>::from_inner(p)
                        }
                        _ => unreachable!("a tensor on another backend"),
                    },
                    DispatchTensorKind::$variant(BackendTensor::Float(p)) => {
                        <Autodiff<Self> as AutodiffBackend>::from_inner(p)
                    }
                    _ => unreachable!("a tensor on another backend"),
                }
            }

            fn from_tracked(
                t: AutodiffTensor<Self>,
                strategy: GradientCheckpointingStrategy,
            ) -> DispatchTensor {
                DispatchTensor {
                    kind: DispatchTensorKind::Autodiff(Box::new(DispatchTensorKind::$variant(
                        BackendTensor::Autodiff(t),
                    ))),
                    autodiff: DispatchAutodiffContext::Enabled(strategy),
                }
            }
        }
    };
}

/// The autodiff tensor of backend `B`.
type AutodiffTensor<B> = FloatTensor<Autodiff<B>>;

concrete!(Flex, Flex);
concrete!(NdArray, NdArray);
concrete!(Cube, Cube);

/// The output `out` (computed without a graph) as the result of a node over `x` and the piece's
/// first trained parameter (so the node is tracked whenever the piece has something to train).
fn record<R: Recompute>(
    x: DispatchTensor,
    out: DispatchTensor,
    first_trained: Option<DispatchTensor>,
    kept: Kept<R>,
) -> DispatchTensor {
    fn on<B: Concrete, R: Recompute>(
        (x, out, first_trained): (DispatchTensor, DispatchTensor, Option<DispatchTensor>),
        kept: Kept<R>,
    ) -> DispatchTensor {
        let (x, out) = (B::tracked(x), B::from_plain(out));
        let trained = first_trained.map(B::tracked);
        let strategy = kept.strategy;
        let node = match strategy {
            GradientCheckpointingStrategy::Disabled => {
                node::<B, NoCheckpointing, R>(x, trained, out, kept)
            }
            GradientCheckpointingStrategy::Balanced => {
                node::<B, BalancedCheckpointing, R>(x, trained, out, kept)
            }
        };
        B::from_tracked(node, strategy)
    }
    let kind = match &x.kind {
        DispatchTensorKind::Autodiff(inner) => &**inner,
        kind => kind,
    };
    let route: fn(_, Kept<R>) -> DispatchTensor = match kind {
        DispatchTensorKind::Flex(_) => on::<Flex, R>,
        DispatchTensorKind::NdArray(_) => on::<NdArray, R>,
        DispatchTensorKind::Cube(_) => on::<Cube, R>,
        _ => unreachable!("the backends this crate enables"),
    };
    route((x, out, first_trained), kept)
}

/// The backward step: the kept input and piece, run again.
struct Rerun<R> {
    _piece: std::marker::PhantomData<R>,
}

impl<R> fmt::Debug for Rerun<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernels::checkpoint::Rerun")
    }
}

/// Registers the node whose parents are `x` and `trained` and whose value is `out`.
fn node<B: Concrete, C: CheckpointStrategy, R: Recompute>(
    x: AutodiffTensor<B>,
    trained: Option<AutodiffTensor<B>>,
    out: FloatTensor<B>,
    kept: Kept<R>,
) -> AutodiffTensor<B> {
    // Without a trained parameter, the second parent is `x` again (untracked or not, it only
    // decides whether the node is tracked).
    let second = trained.as_ref().unwrap_or(&x).node();
    let (input, first) = x.into_parts();
    let step = Rerun::<R> {
        _piece: std::marker::PhantomData,
    };
    match step
        .prepare::<C>([first, second])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((input, kept), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

impl<B: Concrete, R: Recompute> Backward<B, 2> for Rerun<R> {
    type State = (FloatTensor<B>, Kept<R>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut NodeGradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (
            input,
            Kept {
                piece,
                seed,
                strategy,
            },
        ) = ops.state;
        let x = Tensor::<3>::from_dispatch(B::plain(input))
            .autodiff()
            .with_gradient_checkpointing_strategy(strategy)
            .require_grad();
        if let Some(seed) = seed {
            x.device().seed(seed);
        }
        let fresh = with_fresh_leaves(&piece);
        let out = fresh.forward(x.clone());
        let grad = Tensor::<3>::from_dispatch(B::plain(grad));
        let inner = (out * grad).sum().backward();
        if let Some(parent) = &ops.parents[0]
            && let Some(dx) = x.grad(&inner)
        {
            grads.register::<B>(parent.id, B::from_plain(dx.into_dispatch()));
        }
        let originals = trained(piece.module(), None);
        for ((param, _), (_, grad)) in originals
            .into_iter()
            .zip(trained(fresh.module(), Some(&inner)))
        {
            if let Some(grad) = grad {
                grads.register::<B>(B::tracked(param).id(), B::from_plain(grad));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::max_rel_err;
    use burn::tensor::Distribution;

    /// `x · w`, with a dropout-like random mask of its own when `masked`.
    #[derive(Module, Debug)]
    struct Scale {
        w: Param<Tensor<1>>,
        masked: bool,
    }

    impl Recompute for Scale {
        type Module = Self;

        fn forward(&self, x: Tensor<3>) -> Tensor<3> {
            let y = x.clone() * self.w.val().reshape([1, 1, -1]);
            if self.masked && x.is_autodiff() {
                let keep = Tensor::random(y.shape(), Distribution::Bernoulli(0.5), &y.device());
                y * keep
            } else {
                y
            }
        }

        fn module(&self) -> &Self {
            self
        }

        fn with_module(&self, module: Self) -> Self {
            module
        }

        fn draws_random(&self) -> bool {
            self.masked
        }
    }

    /// The recomputed piece gives the gradients of the piece run in the graph, for a tracked and
    /// an untracked input (the parameter still gets its gradient); with a random mask, the
    /// recompute draws the forward's mask again (read back from the output), so the gradients are
    /// those of the forward that was run.
    fn check_recompute(device: &Device) {
        let device = device.clone().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<3>::random([2, 3, 4], normal, &device).require_grad();
        let cot = Tensor::<3>::random([2, 3, 4], normal, &device);
        let w0 = Tensor::<1>::random([4], normal, &device);
        let piece = |masked| Scale {
            w: Param::from_tensor(w0.clone().detach().require_grad()),
            masked,
        };

        let plain = piece(false);
        let grads = (plain.forward(x.clone()) * cot.clone()).sum().backward();
        let (dx, dw) = (x.grad(&grads).unwrap(), plain.w.val().grad(&grads).unwrap());
        let kept = piece(false);
        let out = checkpointed(x.clone(), kept.clone());
        let grads = (out * cot.clone()).sum().backward();
        assert!(max_rel_err(x.grad(&grads).unwrap(), dx) <= 1e-6);
        assert!(max_rel_err(kept.w.val().grad(&grads).unwrap(), dw.clone()) <= 1e-6);

        let untracked = piece(false);
        let out = checkpointed(x.clone().detach(), untracked.clone());
        let grads = (out * cot.clone()).sum().backward();
        assert!(max_rel_err(untracked.w.val().grad(&grads).unwrap(), dw) <= 1e-6);

        let masked = piece(true);
        let out = checkpointed(x.clone(), masked.clone());
        let w = w0.clone().reshape([1, 1, 4]);
        let keep = (out.clone().inner() / (x.clone().inner() * w.clone().inner())).round();
        let grads = (out * cot.clone()).sum().backward();
        let dx = w.inner() * keep.clone() * cot.clone().inner();
        let dw = (x.clone().inner() * keep * cot.inner())
            .sum_dim(0)
            .sum_dim(1)
            .reshape([4]);
        assert!(max_rel_err(x.grad(&grads).unwrap(), dx) <= 1e-5);
        assert!(max_rel_err(masked.w.val().grad(&grads).unwrap(), dw) <= 1e-5);
    }

    crate::device::on_every_backend!(check_recompute => recompute_matches_the_graph_on_flex, recompute_matches_the_graph_on_ndarray, recompute_matches_the_graph_on_wgpu);
}
