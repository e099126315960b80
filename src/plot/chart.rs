//! Line charts as standalone SVG (no image crate): axes with rounded ticks (linear, or
//! logarithmic in x), one polyline per series (solid or dashed) with an optional shaded interval
//! band, and a legend. Charts nest, so a figure can lay several out in a grid.

use std::fmt::Write;

use super::escape;

/// One line of a chart.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    /// `(x, y)`, in x order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
    /// CSS color.
    pub color: String,
    pub dashed: bool,
    /// A dot at every point (for few, measured points: a sweep).
    pub markers: bool,
    /// `(x, low, high)`: an interval drawn as a translucent band behind the line (empty: none).
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A solid line without a band.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>, color: &str) -> Self {
        Self {
            name: name.into(),
            points,
            color: color.into(),
            ..Self::default()
        }
    }

    /// The same line, dashed.
    pub fn dashed(self) -> Self {
        Self {
            dashed: true,
            ..self
        }
    }

    /// The same line with a dot at every point.
    pub fn with_markers(self) -> Self {
        Self {
            markers: true,
            ..self
        }
    }
}

/// Colors for runs, in order (colorblind-safe Okabe–Ito palette).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000",
];

/// The color of the `i`-th run or series.
pub fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A chart: what it shows and how its x axis is scaled.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// A logarithmic x axis (decades and their 2× and 5× ticks); x must be > 0.
    pub log_x: bool,
    /// Whether the legend is drawn at the right (else the chart uses the full width).
    pub legend: bool,
}

/// Size of a standalone chart.
pub const WIDTH: f64 = 640.0;
pub const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const LEGEND: f64 = 180.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// About five "nice" tick values (1, 2, 5 × 10^k steps) covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + i as f64 * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .take(12) // bounded even when `step` is lost in the rounding of huge values
        .collect()
}

/// Ticks of a log axis over `[lo, hi]` (both > 0): 1, 2 and 5 × 10^k inside the range, only the
/// decades when that would be more than a dozen.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |v: &f64| *v >= lo * (1.0 - 1e-9) && *v <= hi * (1.0 + 1e-9);
    let with = |mantissas: &[f64]| -> Vec<f64> {
        (first..=last)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(inside)
            .collect()
    };
    let all = with(&[1.0, 2.0, 5.0]);
    if all.len() <= 12 { all } else { with(&[1.0]) }
}

fn label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 || v.abs() < 0.01 {
        let s = format!("{v:.1e}");
        s.replace(".0e", "e")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

impl Chart<'_> {
    /// `x` on the axis scale (log10 for a log axis; non-positive x is not drawable there).
    fn scale_x(&self, x: f64) -> f64 {
        if self.log_x {
            if x > 0.0 { x.log10() } else { f64::NAN }
        } else {
            x
        }
    }

    /// The chart as an `<svg>` element of `width × height` at `(x, y)` of its parent (a
    /// standalone document at (0, 0)).
    pub fn svg_at(&self, x: f64, y: f64, width: f64, height: f64) -> String {
        let xs = self.series.iter().flat_map(|s| {
            let band = s.band.iter().map(|b| b.0);
            s.points.iter().map(|p| p.0).chain(band)
        });
        let ys = self.series.iter().flat_map(|s| {
            let band = s.band.iter().flat_map(|b| [b.1, b.2]);
            s.points.iter().map(|p| p.1).chain(band)
        });
        let (mut x0, mut x1) = bounds(xs.map(|x| self.scale_x(x))).unwrap_or((0.0, 1.0));
        let (mut y0, mut y1) = bounds(ys).unwrap_or((0.0, 1.0));
        if x1 - x0 < 1e-12 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6 * y0.abs().max(y1.abs()).max(1.0));
        (y0, y1) = (y0 - pad, y1 + pad);
        let right = if self.legend { LEGEND } else { RIGHT };
        let (pw, ph) = (width - LEFT - right, height - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (self.scale_x(x) - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let drawable = |x: f64, y: f64| sx(x).is_finite() && y.is_finite();

        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" x="{x}" y="{y}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            LEFT + pw / 2.0,
            escape(self.title)
        );
        let x_ticks = if self.log_x {
            log_ticks(10f64.powf(x0), 10f64.powf(x1))
        } else {
            ticks(x0, x1)
        };
        for t in x_ticks {
            let x = sx(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 16.0,
                label(t)
            );
        }
        for t in ticks(y0, y1) {
            let y = sy(t);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            height - 12.0,
            escape(self.x_label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(self.y_label)
        );
        for s in self.series {
            let band: Vec<&(f64, f64, f64)> = s
                .band
                .iter()
                .filter(|b| drawable(b.0, b.1) && drawable(b.0, b.2))
                .collect();
            if band.len() > 1 {
                let upper = band.iter().map(|b| (b.0, b.2));
                let lower = band.iter().rev().map(|b| (b.0, b.1));
                let pts: Vec<String> = upper
                    .chain(lower)
                    .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polygon fill="{}" fill-opacity="0.18" stroke="none" points="{}"/>"#,
                    s.color,
                    pts.join(" ")
                );
            }
        }
        for (i, s) in self.series.iter().enumerate() {
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| drawable(*x, *y))
                .map(|&(x, y)| (sx(x), sy(y)))
                .collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            if pts.len() == 1 || s.markers {
                for (x, y) in &pts {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                        s.color
                    );
                }
            }
            if pts.len() > 1 {
                let text: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
                    s.color,
                    text.join(" ")
                );
            }
            if self.legend {
                let ly = TOP + 10.0 + 18.0 * i as f64;
                let lx = width - LEGEND + 12.0;
                let _ = writeln!(
                    svg,
                    r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
                    lx + 24.0,
                    s.color,
                    lx + 30.0,
                    ly + 4.0,
                    escape(&s.name)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// The chart as a standalone SVG document.
    pub fn svg(&self) -> String {
        self.svg_at(0.0, 0.0, WIDTH, HEIGHT)
    }
}

/// An SVG document with `series` drawn against shared linear axes, a legend at the right.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    Chart {
        title,
        x_label,
        y_label,
        series,
        log_x: false,
        legend: true,
    }
    .svg()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(-3.3, -1.2);
        assert!(t.first().unwrap() >= &-3.3 && t.last().unwrap() <= &-1.2 && t.len() >= 3);
    }

    #[test]
    fn log_ticks_are_1_2_5_per_decade_inside_the_range() {
        let t = log_ticks(1e-4, 1e-2);
        let expected = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2];
        assert_eq!(t.len(), expected.len());
        for (a, b) in t.iter().zip(expected) {
            assert!((a / b - 1.0).abs() < 1e-9, "{t:?}");
        }
        assert_eq!(
            log_ticks(1e-9, 1e3).len(),
            13,
            "decades only over a wide range"
        );
        assert_eq!(label(2e-4), "2e-4");
        assert_eq!(label(0.25), "0.25");
    }

    #[test]
    fn charts_are_svg_with_every_series() {
        let series = vec![
            Series::line(
                "DPO <a&b>",
                vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
                PALETTE[0],
            ),
            Series::line("one", vec![(1.0, 2.0)], PALETTE[1]).dashed(),
        ];
        let svg = line_chart("t", "step", "y", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("DPO &lt;a&amp;b&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert_eq!(
            svg.matches("stroke-dasharray").count(),
            1,
            "the lone dot's legend"
        );
        assert!(!svg.contains("NaN"));
    }

    /// Points on a log axis sit where their logarithm says: 1e-3 halfway between 1e-4 and 1e-2.
    #[test]
    fn a_log_axis_places_points_by_their_logarithm_and_draws_bands() {
        let series = [Series {
            band: vec![(1e-4, 0.1, 0.3), (1e-3, 0.2, 0.4), (1e-2, 0.3, 0.5)],
            ..Series::line("m", vec![(1e-4, 0.2), (1e-3, 0.3), (1e-2, 0.4)], PALETTE[0])
        }];
        let chart = Chart {
            title: "t",
            x_label: "lr",
            y_label: "acc",
            series: &series,
            log_x: true,
            legend: false,
        };
        let svg = chart.svg();
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let xs: Vec<f64> = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .trim_end_matches("\"/>")
            .split(' ')
            .map(|p| p.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!((xs[1] - (xs[0] + xs[2]) / 2.0).abs() < 0.11, "{xs:?}");
        assert_eq!(svg.matches("<polygon").count(), 1);
        assert!(svg.contains(">1e-3<") && svg.contains(">5e-3<"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}
