//! Training curves from runs' `metrics.jsonl`: one panel per quantity (loss, rewards, margins,
//! reward accuracy, log-probs, task accuracy, …), one color per run, solid and dashed for the two
//! quantities a panel compares. `train` and `sft` write a run's own figure as `curves.svg`;
//! `minordpo plot` overlays several runs.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::chart::{Chart, Series, color};
use crate::error::{Error, Result};

/// One run's logged metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurves {
    /// What the legend calls the run (its directory name).
    pub name: String,
    /// Metric name → `(step, value)` in log order.
    pub metrics: BTreeMap<String, Vec<(f64, f64)>>,
}

impl RunCurves {
    /// Reads `dir/metrics.jsonl`; every line needs a numeric `step`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut metrics: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let at = || format!("{}:{}", path.display(), i + 1);
            let value: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| Error::Invalid(format!("{}: not JSON ({e})", at())))?;
            let Some(step) = value.get("step").and_then(serde_json::Value::as_f64) else {
                return Err(Error::Invalid(format!("{}: no numeric `step`", at())));
            };
            for (key, v) in value.as_object().into_iter().flatten() {
                if let Some(v) = v.as_f64().filter(|_| key != "step") {
                    metrics.entry(key.clone()).or_default().push((step, v));
                }
            }
        }
        if metrics.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no metrics logged yet",
                path.display()
            )));
        }
        let name = dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        Ok(Self { name, metrics })
    }
}

/// A panel: its title, y label, and the one or two metrics it draws (solid, then dashed).
struct Panel {
    title: &'static str,
    y_label: &'static str,
    keys: &'static [&'static str],
}

const PANELS: [Panel; 11] = [
    Panel {
        title: "loss (solid: train, dashed: eval)",
        y_label: "loss",
        keys: &["loss", "eval_loss"],
    },
    Panel {
        title: "task accuracy (greedy, validation)",
        y_label: "% correct",
        keys: &["eval_accuracy"],
    },
    Panel {
        title: "train rewards β·Δ (solid: chosen, dashed: rejected)",
        y_label: "reward",
        keys: &["rewards/chosen", "rewards/rejected"],
    },
    Panel {
        title: "eval rewards β·Δ (solid: chosen, dashed: rejected)",
        y_label: "reward",
        keys: &["eval_rewards/chosen", "eval_rewards/rejected"],
    },
    Panel {
        title: "reward margin (solid: train, dashed: eval)",
        y_label: "margin",
        keys: &["rewards/margins", "eval_rewards/margins"],
    },
    Panel {
        title: "reward accuracy (solid: train, dashed: eval)",
        y_label: "pairs with margin > 0",
        keys: &["rewards/accuracies", "eval_rewards/accuracies"],
    },
    Panel {
        title: "train log π(y|x) (solid: chosen, dashed: rejected)",
        y_label: "nats",
        keys: &["logps/chosen", "logps/rejected"],
    },
    Panel {
        title: "eval log π(y|x) (solid: chosen, dashed: rejected)",
        y_label: "nats",
        keys: &["eval_logps/chosen", "eval_logps/rejected"],
    },
    Panel {
        title: "token accuracy (solid: train, dashed: eval)",
        y_label: "fraction",
        keys: &["mean_token_accuracy", "eval_mean_token_accuracy"],
    },
    Panel {
        title: "gradient norm (before clipping)",
        y_label: "norm",
        keys: &["grad_norm"],
    },
    Panel {
        title: "learning rate",
        y_label: "lr",
        keys: &["learning_rate"],
    },
];

const PANEL_WIDTH: f64 = 440.0;
const PANEL_HEIGHT: f64 = 290.0;
const COLUMNS: usize = 3;
const HEADER: f64 = 56.0;

/// The figure of `runs`: a title, a legend of the runs' colors, then a grid of the panels that
/// at least one run has data for.
pub fn figure(title: &str, runs: &[RunCurves]) -> String {
    let mut charts = Vec::new();
    for panel in &PANELS {
        let mut series = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            for (k, key) in panel.keys.iter().enumerate() {
                let Some(points) = run.metrics.get(*key) else {
                    continue;
                };
                let percent = panel.y_label.starts_with('%');
                let points = points
                    .iter()
                    .map(|&(s, v)| (s, if percent { 100.0 * v } else { v }))
                    .collect();
                let line = Series::line(format!("{} {key}", run.name), points, color(r));
                series.push(if k > 0 { line.dashed() } else { line });
            }
        }
        if !series.is_empty() {
            charts.push((panel, series));
        }
    }
    let rows = charts.len().div_ceil(COLUMNS).max(1);
    let width = PANEL_WIDTH * COLUMNS as f64;
    let height = HEADER + PANEL_HEIGHT * rows as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="16">{}</text>"#,
        width / 2.0,
        super::escape(title)
    );
    let mut x = 20.0;
    for (r, run) in runs.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="42" x2="{}" y2="42" stroke="{}" stroke-width="3"/><text x="{}" y="46">{}</text>"#,
            x + 24.0,
            color(r),
            x + 30.0,
            super::escape(&run.name)
        );
        x += 40.0 + 7.0 * run.name.chars().count() as f64;
    }
    for (i, (panel, series)) in charts.iter().enumerate() {
        let chart = Chart {
            title: panel.title,
            x_label: "step",
            y_label: panel.y_label,
            series,
            log_x: false,
            legend: false,
        };
        let (col, row) = (i % COLUMNS, i / COLUMNS);
        svg.push_str(&chart.svg_at(
            PANEL_WIDTH * col as f64,
            HEADER + PANEL_HEIGHT * row as f64,
            PANEL_WIDTH,
            PANEL_HEIGHT,
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes `dir/curves.svg`, the figure of the run in `dir` (from its `metrics.jsonl`).
pub fn write_run_curves(dir: &Path) -> Result<()> {
    let run = RunCurves::load(dir)?;
    let svg = figure(&format!("Training curves: {}", run.name), &[run]);
    crate::io::write_file(&dir.join("curves.svg"), svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(lines: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), lines).unwrap();
        dir
    }

    #[test]
    fn curves_are_read_per_metric_and_step() {
        let dir = run_dir(
            "{\"step\": 0, \"eval_accuracy\": 0.5}\n\
             {\"step\": 5, \"loss\": 0.69, \"rewards/chosen\": 0.01, \"note\": \"x\"}\n\n\
             {\"step\": 10, \"loss\": 0.6, \"eval_accuracy\": 0.6}\n",
        );
        let run = RunCurves::load(dir.path()).unwrap();
        assert_eq!(run.metrics["loss"], vec![(5.0, 0.69), (10.0, 0.6)]);
        assert_eq!(run.metrics["eval_accuracy"], vec![(0.0, 0.5), (10.0, 0.6)]);
        assert!(!run.metrics.contains_key("step") && !run.metrics.contains_key("note"));
        let svg = figure(
            "t",
            &[
                run.clone(),
                RunCurves {
                    name: "b".into(),
                    ..run
                },
            ],
        );
        // loss, task accuracy and train rewards: three panels, one line (or a lone point's dot)
        // per run and metric
        assert_eq!(svg.matches("<svg").count(), 4);
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(">60<"), "accuracy in percent: {svg}");
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let dir = run_dir("{\"step\": 1, \"loss\": 1}\n{\"loss\": 1}\n");
        let err = RunCurves::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:2: no numeric `step`"), "{err}");
        let dir = run_dir("{\"step\": 1,\n");
        let err = RunCurves::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl:1: not JSON"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = RunCurves::load(empty.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl"), "{err}");
    }
}
