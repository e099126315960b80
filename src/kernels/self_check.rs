//! `minordpo devices --check`: the operations minordpo runs over a whole vocabulary, on the
//! chosen device, against the same arithmetic on the host. A GPU driver can get a kernel wrong
//! (Burn's own reduction is wrong on Mesa's software Vulkan at these sizes, `argmax.rs`), and
//! this says so in seconds, before hours of training on it.
//!
//! Checked, at Gemma 3's vocabulary (262144, the largest of the supported models):
//! - the fused LM head + log-prob ([`super::linear_logprobs`]): training's log-probs and loss;
//! - the row argmax ([`super::argmax_rows`]): greedy decoding and the token accuracy;
//! - for information only, Burn's own `argmax` on the same rows, which minordpo does not use over
//!   a vocabulary: whether this driver shares the reduction fault.

use burn::prelude::*;

use crate::generate::sampling::argmax;
use crate::io::Rng;

/// Gemma 3's vocabulary.
const VOCAB: usize = 262_144;
/// Hidden size of the check's head.
const HIDDEN: usize = 64;
/// Positions scored.
const ROWS: usize = 8;
/// Largest log-prob error accepted, relative to the largest log-prob (f32 against f64).
const LOGPROB_TOLERANCE: f64 = 1e-4;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    pub name: &'static str,
    /// Whether a failure makes the device unfit for minordpo (not just informative).
    pub required: bool,
    pub passed: bool,
    pub detail: String,
}

impl std::fmt::Display for CheckLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match (self.passed, self.required) {
            (true, _) => "ok",
            (false, true) => "FAILED",
            (false, false) => "wrong (not used by minordpo)",
        };
        write!(f, "{}: {verdict} ({})", self.name, self.detail)
    }
}

/// Runs every check on `device`.
pub fn run_checks(device: &Device) -> Vec<CheckLine> {
    let mut rng = Rng::new(2024);
    let mut uniform = |n: usize, scale: f64| -> Vec<f32> {
        (0..n)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    };
    let hidden = uniform(ROWS * HIDDEN, 1.0); // [ROWS, HIDDEN]
    let weight = uniform(HIDDEN * VOCAB, 0.5); // [HIDDEN, VOCAB]
    let logits = host_logits(&hidden, &weight); // [ROWS, VOCAB], f64
    // The argmax checks read these f32 logits on both sides, so both see the same values.
    let logits32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
    let top: Vec<i64> = logits32
        .chunks(VOCAB)
        .map(|row| i64::from(argmax(row)))
        .collect();
    // Half the targets are the top token, half spread over the vocabulary.
    let targets: Vec<i64> = (0..ROWS)
        .map(|r| {
            if r % 2 == 0 {
                top[r]
            } else {
                (r * 32_771 % VOCAB) as i64
            }
        })
        .collect();
    let want = host_logprobs(&logits, &targets);

    let on = |values: Vec<f32>, shape: [usize; 2]| -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), device)
    };
    let got = super::linear_logprobs(
        on(hidden, [ROWS, HIDDEN]),
        on(weight, [HIDDEN, VOCAB]),
        Tensor::from_data(TensorData::new(targets, [ROWS]), device),
        4,
    );
    let logprobs = logprob_line(&read(got), &want);

    let ours = super::argmax_rows(on(logits32.clone(), [ROWS, VOCAB]));
    let burns = on(logits32, [ROWS, VOCAB]).argmax(1).reshape([ROWS]);
    vec![
        logprobs,
        argmax_line(
            "row argmax (greedy decoding, token accuracy)",
            true,
            &ids(ours),
            &top,
        ),
        argmax_line("Burn's argmax, for information", false, &ids(burns), &top),
    ]
}

/// `hidden · weight` in f64, `[ROWS, VOCAB]` row-major.
fn host_logits(hidden: &[f32], weight: &[f32]) -> Vec<f64> {
    let mut out = vec![0f64; ROWS * VOCAB];
    for (row, h) in out.chunks_mut(VOCAB).zip(hidden.chunks(HIDDEN)) {
        for (&x, w) in h.iter().zip(weight.chunks(VOCAB)) {
            for (o, &w) in row.iter_mut().zip(w) {
                *o += f64::from(x) * f64::from(w);
            }
        }
    }
    out
}

/// `log softmax(row)[target]` per row, in f64.
fn host_logprobs(logits: &[f64], targets: &[i64]) -> Vec<f64> {
    logits
        .chunks(VOCAB)
        .zip(targets)
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            row[t as usize] - lse
        })
        .collect()
}

/// `t` on the host in f64 (empty if it cannot be read, which fails every comparison).
pub(crate) fn read(t: Tensor<1>) -> Vec<f64> {
    t.into_data()
        .convert::<f64>()
        .try_into_vec()
        .unwrap_or_default()
}

fn ids(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_into_vec()
        .unwrap_or_default()
}

/// The larger of two errors, NaN if either is (`f64::max` would drop a NaN).
pub(crate) fn worse(a: f64, b: f64) -> f64 {
    if b.is_nan() || b > a { b } else { a }
}

/// The largest `|got − want|` relative to `scale`: NaN if any is NaN, infinite when the lengths
/// differ. The checks' measure, here and in `dpo/device_check.rs`.
pub(crate) fn max_relative_error(got: &[f64], want: &[f64], scale: f64) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0f64, worse)
}

/// The log-prob check from the device's `got` and the host's `want`.
fn logprob_line(got: &[f64], want: &[f64]) -> CheckLine {
    let scale = want.iter().fold(0f64, |m, w| m.max(w.abs())).max(1e-12);
    let err = max_relative_error(got, want, scale);
    CheckLine {
        name: "fused LM head + log-prob (training's loss)",
        required: true,
        passed: err <= LOGPROB_TOLERANCE,
        detail: format!(
            "{ROWS} positions × {VOCAB} tokens, max relative error {err:.1e}, tolerance {LOGPROB_TOLERANCE:.0e}"
        ),
    }
}

/// An argmax check from the device's `got` and the host's `want`.
fn argmax_line(name: &'static str, required: bool, got: &[i64], want: &[i64]) -> CheckLine {
    let wrong = if got.len() == want.len() {
        got.iter().zip(want).filter(|(g, w)| g != w).count()
    } else {
        want.len()
    };
    CheckLine {
        name,
        required,
        passed: wrong == 0,
        detail: format!("{wrong} of {} rows of {VOCAB} values wrong", want.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_check_passes_on_flex() {
        for line in run_checks(&Device::flex()) {
            assert!(line.passed, "{line}");
        }
    }

    #[test]
    fn every_check_passes_on_wgpu() {
        if let Some(device) = crate::device::wgpu_or_skip() {
            for line in run_checks(&device).iter().filter(|l| l.required) {
                assert!(line.passed, "{line}");
            }
        }
    }

    /// A wrong answer fails its line, with the count or the error in the text.
    #[test]
    fn wrong_answers_fail_their_lines() {
        let line = argmax_line("argmax", true, &[1, 2, 3, 4], &[1, 2, 3, 5]);
        assert!(!line.passed);
        assert_eq!(
            line.to_string(),
            "argmax: FAILED (1 of 4 rows of 262144 values wrong)"
        );
        let info = argmax_line("Burn", false, &[0], &[7]);
        assert!(
            info.to_string()
                .starts_with("Burn: wrong (not used by minordpo)")
        );
        assert!(
            argmax_line("argmax", true, &[], &[1])
                .detail
                .starts_with("1 of 1")
        );

        let want = [-12.0, -3.0];
        assert!(logprob_line(&[-12.0, -3.0], &want).passed);
        let off = logprob_line(&[-12.0, -2.9], &want);
        assert!(!off.passed);
        assert!(
            off.to_string().contains("max relative error 8.3e-3"),
            "{off}"
        );
        assert!(!logprob_line(&[f64::NAN, -3.0], &want).passed);
        assert!(!logprob_line(&[-12.0], &want).passed);
    }
}
