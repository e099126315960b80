//! Figures as standalone SVG, with no image crate: line charts (`chart.rs`) and the training
//! curves of runs read from their `metrics.jsonl` (`curves.rs`).

pub mod chart;
pub mod curves;

pub use chart::{Chart, PALETTE, Series, color, line_chart};
pub use curves::{RunCurves, figure, write_run_curves};

/// `s` with the characters XML gives meaning to escaped.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
