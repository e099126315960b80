//! Next-token selection: greedy, or temperature → top-k → top-p sampling in the order
//! transformers applies its logits warpers, driven by a small seeded RNG so a seed reproduces a
//! run on every platform.

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::io::Rng;

/// How to pick the next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass kept (1.0 = off).
    pub top_p: f32,
    /// Most likely tokens kept (0 = off).
    pub top_k: usize,
}

impl Sampling {
    /// Greedy decoding.
    pub const GREEDY: Self = Self {
        temperature: 0.0,
        top_p: 1.0,
        top_k: 0,
    };

    /// Picks a token id from `logits` `[vocab]`.
    pub fn pick(&self, logits: &[f32], rng: &mut Rng) -> u32 {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        // (logit / T, id), most likely first (ties by id, as a stable sort would leave them).
        let mut ranked: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (l / self.temperature, i as u32))
            .collect();
        let by_rank = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if self.top_k > 0 && self.top_k < ranked.len() {
            // Only the k most likely need sorting: a partial selection, then k log k.
            ranked.select_nth_unstable_by(self.top_k - 1, by_rank);
            ranked.truncate(self.top_k);
        }
        ranked.sort_unstable_by(by_rank);
        let max = ranked[0].0;
        let mut probs: Vec<f64> = ranked
            .iter()
            .map(|(l, _)| f64::from(l - max).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.top_p < 1.0 {
            // Keep the smallest prefix whose mass reaches top_p (at least one token).
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    mass += p;
                    mass >= f64::from(self.top_p)
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let mut u = rng.next_f64();
        for (p, (_, id)) in probs.iter().zip(&ranked) {
            if u < *p {
                return *id;
            }
            u -= p;
        }
        ranked[probs.len() - 1].1
    }
}

/// The next token of each row of `logits` `[rows, vocab]`, row `r` sampled with `rngs[r]`.
/// Greedy decoding picks on the device and reads back only the ids; sampling reads the logits.
pub fn next_ids(sampling: &Sampling, logits: Tensor<2>, rngs: &mut [Rng]) -> Result<Vec<u32>> {
    let read_error = |e| Error::Invalid(format!("reading the next tokens: {e:?}"));
    if sampling.temperature <= 0.0 {
        let ids: Vec<i64> = crate::kernels::argmax_rows(logits)
            .into_data()
            .convert::<i64>()
            .try_into_vec()
            .map_err(read_error)?;
        return Ok(ids.into_iter().map(|id| id as u32).collect());
    }
    let vocab = logits.dims()[1];
    let values: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .map_err(read_error)?;
    Ok(values
        .chunks(vocab)
        .zip(rngs)
        .map(|(row, rng)| sampling.pick(row, rng))
        .collect())
}

/// Index of the largest value as `torch.argmax` gives it, and `kernels::argmax_rows` on every
/// backend: the first one on ties, and the first NaN if there is one (NaN counts as the largest).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            return i as u32;
        }
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_maximum() {
        let mut rng = Rng::new(0);
        assert_eq!(Sampling::GREEDY.pick(&[0.1, 3.0, 3.0, -1.0], &mut rng), 1);
    }

    #[test]
    fn argmax_takes_the_first_nan_as_torch_does() {
        let nan = f32::NAN;
        assert_eq!(argmax(&[0.1, 3.0, nan, 5.0, nan]), 2);
        assert_eq!(argmax(&[nan, 3.0]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        assert_eq!(argmax(&[-1.0, f32::INFINITY, nan]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_reproduces() {
        let logits = [0.5, 0.2, 2.0, 1.9, -3.0];
        let k1 = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 1,
        };
        let mut rng = Rng::new(7);
        for _ in 0..20 {
            assert_eq!(k1.pick(&logits, &mut rng), 2);
        }
        let s = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
        };
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| s.pick(&logits, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn sampling_frequencies_follow_softmax_and_top_p_cuts_tail() {
        let logits = [0.0, (3.0f32).ln()]; // p = [0.25, 0.75]
        let s = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
        };
        let mut rng = Rng::new(1);
        let ones = (0..20_000)
            .filter(|_| s.pick(&logits, &mut rng) == 1)
            .count();
        let freq = ones as f64 / 20_000.0;
        assert!((freq - 0.75).abs() < 0.02, "{freq}");
        let nucleus = Sampling { top_p: 0.7, ..s };
        assert!((0..200).all(|_| nucleus.pick(&logits, &mut rng) == 1));
    }

    /// Greedy `next_ids` picks on the device what `pick` picks on the host, for a batch of rows as
    /// long as Qwen's vocabulary (where Burn's own `argmax` gets 3 of these 4 rows wrong on
    /// software Vulkan).
    fn greedy_ids_match_the_host(device: &Device) {
        let (rows, vocab) = (4, 151_936);
        let values: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i as u64 * 2_654_435_761) % 1_000_003) as f32 / 1_000_003.0)
            .collect();
        let mut rng = Rng::new(0);
        let want: Vec<u32> = values
            .chunks(vocab)
            .map(|row| Sampling::GREEDY.pick(row, &mut rng))
            .collect();
        let logits = Tensor::<2>::from_data(TensorData::new(values, [rows, vocab]), device);
        let mut rngs = vec![Rng::new(0); rows];
        let got = next_ids(&Sampling::GREEDY, logits, &mut rngs).unwrap();
        assert_eq!(got, want);
    }

    crate::device::on_every_backend!(greedy_ids_match_the_host => greedy_ids_match_the_host_on_flex, greedy_ids_match_the_host_on_ndarray, greedy_ids_match_the_host_on_wgpu);
}
