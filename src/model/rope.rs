//! Hugging Face "rotate-half" rotary position embeddings, with `linear` and `llama3` frequency
//! scaling, computed in f32 the way transformers computes them.
//!
//! The cos/sin tables are built on the host for just the positions a forward pass needs, so a
//! model with a 128k context costs nothing up front.

use burn::prelude::*;

use super::config::RopeScaling;

/// Inverse frequencies of one head (`head_dim / 2` values).
#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    head_dim: usize,
}

impl Rope {
    /// Frequencies `1 / theta^(2i/d)`, then scaled as the checkpoint asks.
    pub fn new(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Self {
        let base = theta as f32;
        let mut inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        match *scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                for f in &mut inv_freq {
                    *f /= factor as f32;
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: old_len,
            } => {
                let (factor, low, high, old_len) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    old_len as f32,
                );
                let low_freq_wavelen = old_len / low;
                let high_freq_wavelen = old_len / high;
                for f in &mut inv_freq {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_freq_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                    *f = if medium {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    };
                }
            }
        }
        Self { inv_freq, head_dim }
    }

    /// `(cos, sin)` for positions `start..start + len`, each `[1, 1, len, head_dim]`.
    pub fn tables(&self, start: usize, len: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let positions: Vec<u32> = (start..start + len).map(|p| p as u32).collect();
        self.tables_at(&positions, [1, len], device)
    }

    /// `(cos, sin)` for the positions of `rows` rows of `len` tokens (`positions` `[rows·len]`),
    /// each `[rows, 1, len, head_dim]`.
    pub fn tables_at(
        &self,
        positions: &[u32],
        [rows, len]: [usize; 2],
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * self.head_dim);
        let mut sin = Vec::with_capacity(positions.len() * self.head_dim);
        for &pos in positions {
            let p = pos as f32;
            let row_start = cos.len();
            for &f in &self.inv_freq {
                let angle = p * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
            // emb = cat(freqs, freqs): the second half repeats the first.
            cos.extend_from_within(row_start..row_start + half);
            sin.extend_from_within(row_start..row_start + half);
        }
        let shape = [rows, 1, len, self.head_dim];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Rotates `x` `[batch, heads, seq, head_dim]` with tables from [`Rope::tables`] or
    /// [`Rope::tables_at`] (`kernels::rope`: one pass on the CPU).
    pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        crate::kernels::rope(x, cos.clone(), sin.clone())
    }

    /// The inverse frequencies (for tests).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_frequencies() {
        let rope = Rope::new(8, 10000.0, &RopeScaling::None);
        let expected = [1.0, 0.1, 0.01, 0.001];
        for (a, b) in rope.inv_freq().iter().zip(expected) {
            assert!((a - b).abs() < 1e-6 * b.max(1e-3), "{a} vs {b}");
        }
    }

    #[test]
    fn llama3_scaling_divides_low_frequencies_only() {
        let plain = Rope::new(64, 500000.0, &RopeScaling::None);
        let scaled = Rope::new(
            64,
            500000.0,
            &RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        );
        // Highest frequency (short wavelength) untouched, lowest divided by the factor.
        assert_eq!(plain.inv_freq()[0], scaled.inv_freq()[0]);
        let last = plain.inv_freq().len() - 1;
        assert!((plain.inv_freq()[last] / 8.0 - scaled.inv_freq()[last]).abs() < 1e-12);
    }
}
