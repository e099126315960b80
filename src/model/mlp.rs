//! The gated feed-forward block: `down(act(gate(x)) · up(x))`, with SiLU (SwiGLU, the Llama
//! family) or tanh-approximated GELU (GeGLU, Gemma).

use burn::prelude::*;
use burn::tensor::activation::gelu_approximate;

use super::config::Activation;
use super::linear::Linear;
use crate::kernels::swiglu;

/// Gated MLP of every decoder layer.
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl Mlp {
    /// `[batch, seq, hidden]` → `[batch, seq, hidden]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gate = self.gate_proj.forward(x.clone()); // [batch, seq, intermediate]
        let up = self.up_proj.forward(x);
        let gated = match self.activation {
            // One fused op that keeps only `gate` and `up` for the backward.
            Activation::Silu => swiglu(gate, up),
            Activation::GeluTanh => gelu_approximate(gate) * up,
        };
        self.down_proj.forward(gated)
    }
}
