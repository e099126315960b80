//! The statistics the demo reports: 95% intervals for an accuracy on one test set (Wilson), for a
//! change measured on the same questions (paired), and for a mean over seeds (Student's t).

/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Student's t quantile `t(0.975, df)`, df 1…30 (standard tables, 3 decimals).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// `t(0.975, df)`: the table up to 30 degrees of freedom, then the Cornish–Fisher expansion
/// around the normal quantile (error < 1e-3 there). `df = 0` has no interval (infinite).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::INFINITY,
        1..=30 => T975[df - 1],
        _ => {
            let (z, n) = (Z95, df as f64);
            z + (z.powi(3) + z) / (4.0 * n)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

/// A value with a symmetric 95% interval `value ± half_width`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub value: f64,
    pub half_width: f64,
}

impl Interval {
    pub fn low(&self) -> f64 {
        self.value - self.half_width
    }

    pub fn high(&self) -> f64 {
        self.value + self.half_width
    }

    /// `62.3 ± 2.9` in percentage points of a fraction (`± n/a` when it has no width).
    pub fn percent(&self) -> String {
        if self.half_width.is_finite() {
            format!("{:.1} ± {:.1}", 100.0 * self.value, 100.0 * self.half_width)
        } else {
            format!("{:.1} (± n/a)", 100.0 * self.value)
        }
    }
}

/// The mean of `values` and its standard error `s/√n` (with the sample standard deviation s;
/// NaN for fewer than two values).
fn mean_and_standard_error(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    if n < 2 {
        return (mean, f64::NAN);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (variance / n as f64).sqrt())
}

/// The mean of `values` with its 95% interval `t(0.975, n−1)·s/√n` (the sample standard deviation
/// s): how far another set of seeds could land. One value has no interval.
pub fn mean_interval(values: &[f64]) -> Interval {
    let (value, se) = mean_and_standard_error(values);
    Interval {
        value,
        half_width: t975(values.len().saturating_sub(1)) * se,
    }
}

/// The fraction of `true` in `graded` (per-question results).
pub fn fraction(graded: &[bool]) -> f64 {
    graded.iter().filter(|&&g| g).count() as f64 / graded.len().max(1) as f64
}

/// The Wilson 95% interval of per-question results.
pub fn graded_wilson(graded: &[bool]) -> (f64, f64) {
    wilson(graded.iter().filter(|&&g| g).count(), graded.len())
}

/// An accuracy with its Wilson interval: `53.0% (95% CI 49.9–56.1)`.
pub fn accuracy_text(graded: &[bool]) -> String {
    let (lo, hi) = graded_wilson(graded);
    format!(
        "{:.1}% (95% CI {:.1}–{:.1})",
        100.0 * fraction(graded),
        100.0 * lo,
        100.0 * hi
    )
}

/// The Wilson score 95% interval `(low, high)` of `right` successes out of `n`: how far the
/// accuracy on other questions from the same task could land (unlike `p ± z·se`, it stays inside
/// [0, 1] and is honest near 0% and 100%).
pub fn wilson(right: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (right as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The change in accuracy from `before` to `after` on the same questions (`true` = right), with
/// the 95% interval of a paired difference: only the questions that changed add variance, so it
/// is much narrower than two independent intervals.
pub fn paired_change(before: &[bool], after: &[bool]) -> Interval {
    assert_eq!(before.len(), after.len(), "the same questions");
    let d: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(&b, &a)| f64::from(u8::from(a)) - f64::from(u8::from(b)))
        .collect();
    let (value, se) = mean_and_standard_error(&d);
    Interval {
        value,
        half_width: Z95 * se,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_quantiles_match_the_tables() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(2), 4.303);
        assert!(t975(0).is_infinite());
        // beyond the table: t(0.975, 40) = 2.021, t(0.975, 120) = 1.980
        assert!((t975(40) - 2.021).abs() < 1e-3, "{}", t975(40));
        assert!((t975(120) - 1.980).abs() < 1e-3, "{}", t975(120));
        assert!((t975(100_000) - Z95).abs() < 1e-4);
    }

    #[test]
    fn the_mean_interval_by_hand() {
        // mean 0.5, s = 0.1, n = 3: 4.303 · 0.1 / √3 = 0.24844
        let i = mean_interval(&[0.4, 0.5, 0.6]);
        assert!((i.value - 0.5).abs() < 1e-12);
        assert!((i.half_width - 0.248_434).abs() < 1e-5, "{}", i.half_width);
        assert!((i.low() - 0.251_566).abs() < 1e-5);
        assert_eq!(i.percent(), "50.0 ± 24.8");
        let one = mean_interval(&[0.7]);
        assert_eq!((one.value, one.half_width.is_nan()), (0.7, true));
        assert_eq!(one.percent(), "70.0 (± n/a)");
    }

    #[test]
    fn wilson_intervals_by_hand() {
        // 60 of 100: centre 0.5963, half 0.0943 → [0.5020, 0.6906]
        let (lo, hi) = wilson(60, 100);
        assert!(
            (lo - 0.5020).abs() < 1e-4 && (hi - 0.6906).abs() < 1e-4,
            "{lo} {hi}"
        );
        // 0 of 10 stays in [0, 1]: [0, 0.2775]
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-4, "{hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn a_paired_change_counts_only_the_questions_that_changed() {
        // 100 questions: 10 fixed, 4 broken, 86 unchanged → +6 points.
        let mut before = vec![false; 10];
        before.extend([true; 4]);
        before.extend([true; 86]);
        let mut after = vec![true; 10];
        after.extend([false; 4]);
        after.extend([true; 86]);
        let change = paired_change(&before, &after);
        assert!((change.value - 0.06).abs() < 1e-12);
        // d: ten +1, four −1, 86 zeros; var = (14 − 100·0.06²)/99 = 0.137778
        let expected = Z95 * (0.137_778_f64 / 100.0).sqrt();
        assert!((change.half_width - expected).abs() < 1e-5);
        // Much narrower than an unpaired interval around 0.6 (≈ ±0.096).
        assert!(change.half_width < 0.08);
    }
}
