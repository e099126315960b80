//! The learning-rate schedules of transformers: linear warmup, then cosine, linear or constant.

use serde::{Deserialize, Serialize};

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduler {
    /// Half a cosine from the peak to zero.
    Cosine,
    /// Straight line from the peak to zero.
    Linear,
    /// The peak throughout.
    Constant,
}

/// Learning rate at optimizer step `step` (0-based) of `total`, transformers-style.
pub fn learning_rate(
    peak: f64,
    step: usize,
    total: usize,
    warmup: usize,
    kind: LrScheduler,
) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    match kind {
        LrScheduler::Constant => peak,
        LrScheduler::Linear => peak * (1.0 - progress).max(0.0),
        LrScheduler::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_transformers() {
        // get_cosine_schedule_with_warmup(peak=1, warmup=2, total=10)
        let lr = |s| learning_rate(1.0, s, 10, 2, LrScheduler::Cosine);
        assert_eq!(lr(0), 0.0);
        assert_eq!(lr(1), 0.5);
        assert_eq!(lr(2), 1.0);
        assert!((lr(6) - 0.5).abs() < 1e-12);
        assert!((learning_rate(1.0, 6, 10, 2, LrScheduler::Linear) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(2.0, 9, 10, 2, LrScheduler::Constant), 2.0);
    }
}
