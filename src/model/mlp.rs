//! The SwiGLU feed-forward block: `down(silu(gate(x)) · up(x))`.

use burn::prelude::*;

use super::linear::Linear;
use crate::kernels::swiglu;

/// Gated MLP of every Llama-family decoder layer.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone()); // [batch, seq, intermediate]
        let up = self.up_proj.forward(x);
        self.down_proj.forward(swiglu(gate, up))
    }
}
