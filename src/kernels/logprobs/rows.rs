//! The chunked driver of the fused LM-head log-prob op, shared by every backend: chunk ranges,
//! each chunk's logits, the forward (with or without the frozen weight's gradient direction) and
//! the gradients. The row-wise softmax work on one chunk is a [`RowOps`]: plain tensor ops here
//! ([`PlainRows`]), fused CPU kernels on flex (`cpu_rows`), WGSL kernels on wgpu (`wgsl_rows`).
//! The head is a dense `[H, V]` weight or block-quantized embeddings `E` `[V, H]` ([`Head`]).

use burn::backend::Backend;
use burn::backend::TensorMetadata;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::prelude::*;
use burn::tensor::{FloatDType, IndexingUpdateOp, Slice};

use crate::kernels::chunk_ranges;
use crate::kernels::projection::ProjectionOps;

/// Rows `start..end` of a float tensor (2-D: whole rows; 1-D: the elements).
fn row_slice<B: Backend>(t: &FloatTensor<B>, start: usize, end: usize) -> FloatTensor<B> {
    let slices = [Slice::from(start..end), Slice::from(..)];
    B::float_slice(t.clone(), &slices[..t.shape().num_dims()])
}

/// The row-wise work on one chunk's logits, which each backend supplies; the chunking, the
/// matmuls and the autodiff plumbing around it are shared.
pub(super) trait RowOps<B: Backend> {
    /// The targets in the layout `pick` and `logit_grad` read (prepared once per call).
    fn prepare_targets(&self, targets: IntTensor<B>) -> IntTensor<B> {
        targets
    }

    /// Most rows per chunk.
    fn max_rows(&self) -> usize {
        usize::MAX
    }

    /// Whether each chunk's products read a block-quantized head in place (flex's tiled
    /// products); otherwise the head is widened to f32 once per call, not once per chunk.
    fn reads_blocks(&self) -> bool {
        false
    }

    /// `a · b` (the backend's own matmul unless it has a faster one).
    fn matmul(&self, a: FloatTensor<B>, b: FloatTensor<B>) -> FloatTensor<B> {
        B::float_matmul(a, b)
    }

    /// `log softmax(logits)[target]` `[c]` of a chunk: `logits` `[c, V]`, `targets` `[c]`.
    fn pick(&self, logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B>;

    /// `g·(onehot(target) − softmax(logits))` `[c, V]`, `grad` `[c]`.
    fn logit_grad(
        &self,
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B>;

    /// `pick` and `onehot(target) − softmax(logits)` (`logit_grad` with `g = 1`) of one chunk.
    fn pick_and_unit_grad(
        &self,
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>) {
        let c = targets.shape()[0];
        let dtype = FloatDType::from(logits.dtype());
        let ones = B::float_ones(Shape::new([c]), &logits.device(), dtype);
        let picked = self.pick(logits.clone(), targets.clone());
        (picked, self.logit_grad(logits, targets, ones))
    }
}

/// The row work as plain tensor operations, for any backend.
pub(super) struct PlainRows;

/// `(logits − max, log Σ exp(logits − max))` of a `[n, V]` chunk: shifted logits and the shifted
/// log-sum-exp `[n, 1]`.
fn shifted<B: Backend>(logits: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let max = B::float_max_dim(logits.clone(), 1);
    let shifted = B::float_sub(logits, max);
    let lse = B::float_log(B::float_sum_dim(B::float_exp(shifted.clone()), 1));
    (shifted, lse)
}

/// `[c]` → `[c, 1]`.
fn column<B: Backend>(targets: IntTensor<B>) -> IntTensor<B> {
    let c = targets.shape()[0];
    B::int_reshape(targets, Shape::new([c, 1]))
}

impl<B: Backend> RowOps<B> for PlainRows {
    fn pick(&self, logits: FloatTensor<B>, targets: IntTensor<B>) -> FloatTensor<B> {
        let c = targets.shape()[0];
        let (shifted, lse) = shifted::<B>(logits);
        let picked = B::float_gather(1, shifted, column::<B>(targets)); // [c, 1]
        B::float_reshape(B::float_sub(picked, lse), Shape::new([c]))
    }

    fn logit_grad(
        &self,
        logits: FloatTensor<B>,
        targets: IntTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let c = targets.shape()[0];
        let grad = B::float_reshape(grad, Shape::new([c, 1]));
        let (shifted, lse) = shifted::<B>(logits);
        let probs = B::float_exp(B::float_sub(shifted, lse)); // [c, V]
        let neg = B::float_mul(probs, B::float_neg(grad.clone())); // −g·softmax
        B::float_scatter(1, neg, column::<B>(targets), grad, IndexingUpdateOp::Add) // + g at the target
    }
}

/// The LM head's weight.
#[derive(Clone, Debug)]
pub(super) enum Head<B: Backend> {
    /// `W` `[H, V]`: logits `h · W`.
    Dense(FloatTensor<B>),
    /// Block-quantized `E` `[V, H]` (tied embeddings, or an untied head; `projection::blocks`):
    /// logits `h · Eᵀ`.
    Blocks {
        words: IntTensor<B>,
        scales: FloatTensor<B>,
        format: usize,
    },
}

impl<B: ProjectionOps> Head<B> {
    /// The head as `rows` reads it: blocks widened once here unless it reads them in place.
    fn for_rows(self, rows: &dyn RowOps<B>) -> Self {
        match self {
            Self::Blocks {
                words,
                scales,
                format,
            } if !rows.reads_blocks() => {
                let e = B::dequantize_blocks(words, scales, format); // [V, H]
                Self::Dense(B::float_transpose(e))
            }
            head => head,
        }
    }

    /// A chunk's logits `[c, V]` from its hidden rows `[c, H]`.
    fn logits(&self, rows: &dyn RowOps<B>, h: FloatTensor<B>) -> FloatTensor<B> {
        match self {
            Self::Dense(w) => rows.matmul(h, w.clone()),
            Self::Blocks {
                words,
                scales,
                format,
            } => B::block_matmul(h, words.clone(), scales.clone(), *format),
        }
    }

    /// `d · Wᵀ` `[c, H]` for `d` `[c, V]`, with `weight_t` the dense head transposed.
    fn back(
        &self,
        rows: &dyn RowOps<B>,
        d: FloatTensor<B>,
        weight_t: &Option<FloatTensor<B>>,
    ) -> FloatTensor<B> {
        match (self, weight_t) {
            (Self::Dense(_), Some(t)) => rows.matmul(d, t.clone()),
            (
                Self::Blocks {
                    words,
                    scales,
                    format,
                },
                _,
            ) => B::block_grad_matmul(d, words.clone(), scales.clone(), *format),
            (Self::Dense(_), None) => unreachable!("a dense head is transposed once per call"),
        }
    }

    /// The dense head transposed, `[V, H]` (`None` for blocks).
    fn transposed(&self) -> Option<FloatTensor<B>> {
        match self {
            Self::Dense(w) => Some(B::float_transpose(w.clone())),
            Self::Blocks { .. } => None,
        }
    }

    /// The dense head (a trained head is always dense).
    fn dense(&self) -> FloatTensor<B> {
        match self {
            Self::Dense(w) => w.clone(),
            Self::Blocks { .. } => unreachable!("a block-quantized head is frozen"),
        }
    }
}

/// One call's operands: `hidden` `[rows, H]`, the head, `targets` `[rows]` and the rows per chunk
/// (also the state the backward keeps for a trained weight: the inputs themselves, the weight
/// shared, not copied).
#[derive(Clone, Debug)]
pub(super) struct Operands<B: Backend> {
    pub hidden: FloatTensor<B>,
    pub weight: Head<B>,
    pub targets: IntTensor<B>,
    pub chunk: usize,
}

impl<B: ProjectionOps> Operands<B> {
    pub fn new(
        hidden: FloatTensor<B>,
        weight: Head<B>,
        targets: IntTensor<B>,
        chunk: usize,
    ) -> Self {
        Self {
            hidden,
            weight,
            targets,
            chunk,
        }
    }

    /// The chunks: `(rows of hidden [c, H], logits [c, V], targets [c], range)`, with `rows`
    /// doing the row work.
    fn chunks<'a>(
        &'a self,
        rows: &'a dyn RowOps<B>,
    ) -> impl Iterator<Item = (FloatTensor<B>, FloatTensor<B>, IntTensor<B>, (usize, usize))> + 'a
    {
        let targets = rows.prepare_targets(self.targets.clone());
        let chunk = self.chunk.min(rows.max_rows());
        chunk_ranges(self.hidden.shape()[0], chunk).map(move |(s, e)| {
            let h = row_slice::<B>(&self.hidden, s, e);
            let logits = self.weight.logits(rows, h.clone());
            let t = B::int_slice(targets.clone(), &[Slice::from(s..e)]);
            (h, logits, t, (s, e))
        })
    }
}

/// `log p(target)` `[rows]`.
pub(super) fn forward<B: ProjectionOps>(
    rows: &dyn RowOps<B>,
    mut op: Operands<B>,
) -> FloatTensor<B> {
    op.weight = op.weight.for_rows(rows);
    let parts = op
        .chunks(rows)
        .map(|(_, logits, t, _)| rows.pick(logits, t));
    B::float_cat(parts.collect(), 0)
}

/// `log p(target)` `[rows]` and the gradient direction `(onehot − softmax) · Wᵀ` `[rows, H]`.
pub(super) fn forward_with_direction<B: ProjectionOps>(
    rows: &dyn RowOps<B>,
    mut op: Operands<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    op.weight = op.weight.for_rows(rows);
    let weight_t = op.weight.transposed(); // [V, H]
    let (logps, directions): (Vec<_>, Vec<_>) = op
        .chunks(rows)
        .map(|(_, logits, t, _)| {
            let (picked, d) = rows.pick_and_unit_grad(logits, t); // [c], onehot − softmax [c, V]
            (picked, op.weight.back(rows, d, &weight_t)) // [c], [c, H]
        })
        .unzip();
    (B::float_cat(logps, 0), B::float_cat(directions, 0))
}

/// `(∂/∂hidden [rows, H], ∂/∂weight [H, V])` given the output gradient `grad` `[rows]`, from one
/// recomputation of each chunk's logits.
pub(super) fn gradients<B: ProjectionOps>(
    rows: &dyn RowOps<B>,
    op: Operands<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let weight_t = B::float_transpose(op.weight.dense()); // [V, H]
    let mut d_hidden = Vec::new();
    let mut d_weight = None;
    for (h, logits, t, (s, e)) in op.chunks(rows) {
        let d = rows.logit_grad(logits, t, row_slice::<B>(&grad, s, e)); // [c, V]
        d_hidden.push(rows.matmul(d.clone(), weight_t.clone())); // [c, H]
        let part = rows.matmul(B::float_transpose(h), d); // [H, V]
        d_weight = Some(match d_weight {
            Some(sum) => B::float_add(sum, part),
            None => part,
        });
    }
    let d_weight = d_weight.expect("at least one row");
    (B::float_cat(d_hidden, 0), d_weight)
}
