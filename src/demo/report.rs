//! The demo's report: `report.md` with test accuracy per loss and learning rate (mean ± 95% CI
//! over seeds), validation accuracy (what settings are chosen on), the chosen/rejected log-prob
//! drift, the settings validation picks, findings written from the numbers; and its figures — the
//! key one test accuracy against learning rate with CI bands (`sweep.svg`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Prepared;
use super::config::DemoConfig;
use super::stats::{
    Interval, accuracy_text, fraction, graded_wilson, mean_interval, paired_change,
};
use super::sweep::{RunSpec, Variant};
use crate::dpo::config::TrainConfig;
use crate::error::{Error, Result};
use crate::io::write_file;
use crate::plot::{Chart, RunCurves, Series, color, line_chart};

/// One finished run of the sweep.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    /// Mean held-out `(step, log π(chosen), log π(rejected))` from the start (policy = reference).
    pub logps: Vec<(f64, f64, f64)>,
    /// `(step, greedy validation accuracy)` from the start.
    pub validation: Vec<(f64, f64)>,
    /// Whether the final model's greedy answer is right, per test question.
    pub test: Vec<bool>,
}

impl RunResult {
    /// Reads the run's `metrics.jsonl` (its `eval_*` lines) beside its test grades.
    pub fn load(spec: RunSpec, run: &TrainConfig, test: Vec<bool>) -> Result<Self> {
        let curves = RunCurves::load(&run.output)?;
        let series = |key: &str| curves.metrics.get(key).cloned().unwrap_or_default();
        let (chosen, rejected) = (series("eval_logps/chosen"), series("eval_logps/rejected"));
        let reward = series("eval_rewards/chosen");
        let reward_rejected = series("eval_rewards/rejected");
        let (Some(c), Some(r), Some(rc), Some(rr)) = (
            chosen.first(),
            rejected.first(),
            reward.first(),
            reward_rejected.first(),
        ) else {
            return Err(Error::Invalid(format!(
                "{}: no eval lines (eval_split must be > 0)",
                run.output.join("metrics.jsonl").display()
            )));
        };
        // The reference is fixed: log π_ref = log π − reward/β, which is log π at step 0.
        let mut logps = vec![(0.0, c.1 - rc.1 / run.beta, r.1 - rr.1 / run.beta)];
        logps.extend(chosen.iter().zip(&rejected).map(|(c, r)| (c.0, c.1, r.1)));
        Ok(Self {
            spec,
            logps,
            validation: series("eval_accuracy"),
            test,
        })
    }

    /// Change of the held-out chosen and rejected log-probs from start to end (nats).
    pub fn drift(&self) -> (f64, f64) {
        let (first, last) = (self.logps[0], self.logps[self.logps.len() - 1]);
        (last.1 - first.1, last.2 - first.2)
    }

    /// Validation accuracy at the end.
    pub fn final_validation(&self) -> f64 {
        self.validation.last().map_or(f64::NAN, |v| v.1)
    }
}

/// The runs of one (loss, learning rate) cell, over seeds.
struct Cell<'a> {
    runs: Vec<&'a RunResult>,
}

impl Cell<'_> {
    fn test(&self) -> Interval {
        mean_interval(&self.values(|r| fraction(&r.test)))
    }

    fn validation(&self) -> Interval {
        mean_interval(&self.values(RunResult::final_validation))
    }

    fn values(&self, f: impl Fn(&RunResult) -> f64) -> Vec<f64> {
        self.runs.iter().map(|r| f(r)).collect()
    }

    fn drift(&self) -> (f64, f64) {
        let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
        (
            mean(self.values(|r| r.drift().0)),
            mean(self.values(|r| r.drift().1)),
        )
    }
}

/// The sweep's results by variant and learning rate.
struct Grid<'a> {
    variants: Vec<Variant>,
    rates: Vec<f64>,
    cells: BTreeMap<(usize, usize), Cell<'a>>,
}

impl<'a> Grid<'a> {
    fn new(config: &DemoConfig, results: &'a [RunResult]) -> Self {
        let variants = config.sweep.variants();
        let rates = config.sweep.learning_rates.clone();
        let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
        for r in results {
            let v = variants.iter().position(|v| *v == r.spec.variant);
            let l = rates.iter().position(|l| *l == r.spec.learning_rate);
            if let (Some(v), Some(l)) = (v, l) {
                cells
                    .entry((v, l))
                    .or_insert(Cell { runs: vec![] })
                    .runs
                    .push(r);
            }
        }
        Self {
            variants,
            rates,
            cells,
        }
    }

    fn cell(&self, v: usize, l: usize) -> Option<&Cell<'a>> {
        self.cells.get(&(v, l))
    }

    /// A Markdown table: one row per variant, one column per learning rate.
    fn table(&self, what: &str, text: impl Fn(&Cell) -> String) -> String {
        let mut t = format!("| {what} |");
        for lr in &self.rates {
            t.push_str(&format!(" lr {lr} |"));
        }
        t.push_str(&format!("\n|---|{}\n", "---|".repeat(self.rates.len())));
        for (v, variant) in self.variants.iter().enumerate() {
            t.push_str(&format!("| {} |", variant.name()));
            for l in 0..self.rates.len() {
                let cell = self.cell(v, l).map_or("–".to_string(), &text);
                t.push_str(&format!(" {cell} |"));
            }
            t.push('\n');
        }
        t
    }

    /// The learning rate of `v` with the best mean validation accuracy.
    fn selected(&self, v: usize) -> Option<(usize, &Cell<'a>)> {
        (0..self.rates.len())
            .filter_map(|l| self.cell(v, l).map(|c| (l, c)))
            .max_by(|a, b| a.1.validation().value.total_cmp(&b.1.validation().value))
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

fn seeds_note(cell: &Cell) -> String {
    match cell.runs.len() {
        1 => " (1 seed)".to_string(),
        n => format!(" ({n} seeds)"),
    }
}

/// The settings validation selects per variant, with their test accuracy and its change from the
/// base model (paired over the same questions, per seed).
fn selection(grid: &Grid, base_test: &[bool]) -> String {
    let mut out = String::from(
        "| loss | lr chosen on validation | validation accuracy | test accuracy | change from the base (paired 95% CI per seed) |\n|---|---|---|---|---|\n",
    );
    for (v, variant) in grid.variants.iter().enumerate() {
        let Some((l, cell)) = grid.selected(v) else {
            continue;
        };
        let changes: Vec<String> = cell
            .runs
            .iter()
            .map(|r| {
                let c = paired_change(base_test, &r.test);
                format!("{:+.1} ± {:.1}", 100.0 * c.value, 100.0 * c.half_width)
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {}{} | {} points |\n",
            variant.name(),
            grid.rates[l],
            cell.validation().percent(),
            cell.test().percent(),
            seeds_note(cell),
            changes.join(", ")
        ));
    }
    out
}

/// Sentences from the numbers: what improved on the base, what collapsed, how the log-probs
/// moved, and DPO against MinorDPO at each learning rate.
fn findings(grid: &Grid, base: f64) -> String {
    let mut out = String::new();
    let by_name = |name: &str| grid.variants.iter().position(|v| v.name() == name);
    for (v, variant) in grid.variants.iter().enumerate() {
        let cells: Vec<(f64, &Cell)> = (0..grid.rates.len())
            .filter_map(|l| grid.cell(v, l).map(|c| (grid.rates[l], c)))
            .collect();
        let above: Vec<String> = cells
            .iter()
            .filter(|(_, c)| c.test().low() > base)
            .map(|(lr, _)| lr.to_string())
            .collect();
        let below: Vec<String> = cells
            .iter()
            .filter(|(_, c)| c.test().high() < base)
            .map(|(lr, _)| lr.to_string())
            .collect();
        let collapsed: Vec<String> = cells
            .iter()
            .filter(|(_, c)| c.test().value < base / 2.0)
            .map(|(lr, _)| lr.to_string())
            .collect();
        let Some((best_lr, best)) = cells
            .iter()
            .max_by(|a, b| a.1.test().value.total_cmp(&b.1.test().value))
        else {
            continue;
        };
        let (dc, dr) = best.drift();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push_str(&format!(
            "- **{}**: best mean test accuracy {} at lr {best_lr} (base {}; held-out chosen {dc:+.2}, rejected {dr:+.2} nats). Learning rates whose whole interval is above the base: {}; below it: {}; collapsed to under half the base: {}.\n",
            variant.name(),
            best.test().percent(),
            pct(base),
            list(&above),
            list(&below),
            list(&collapsed),
        ));
    }
    if let (Some(d), Some(m)) = (by_name("DPO"), by_name("MinorDPO")) {
        let mut wins = (0, 0, 0);
        for l in 0..grid.rates.len() {
            let (Some(dc), Some(mc)) = (grid.cell(d, l), grid.cell(m, l)) else {
                continue;
            };
            let (dt, mt) = (dc.test(), mc.test());
            if mt.low() > dt.high() {
                wins.0 += 1;
            } else if dt.low() > mt.high() {
                wins.1 += 1;
            } else {
                wins.2 += 1;
            }
        }
        out.push_str(&format!(
            "- **MinorDPO against DPO**, learning rate by learning rate: MinorDPO's interval lies above DPO's at {} rates, below at {}, and they overlap at {}.\n",
            wins.0, wins.1, wins.2
        ));
        let drift = |v: usize| {
            let last = (0..grid.rates.len()).rev().find_map(|l| grid.cell(v, l))?;
            Some(last.drift())
        };
        if let (Some((dpo_c, dpo_r)), Some((min_c, min_r))) = (drift(d), drift(m)) {
            out.push_str(&format!(
                "- **Log-probs at the highest learning rate**: DPO moved the held-out chosen answers by {dpo_c:+.2} nats and the rejected by {dpo_r:+.2}; MinorDPO by {min_c:+.2} and {min_r:+.2}. {}\n",
                if dpo_c < 0.0 && dpo_c < min_c {
                    "DPO pushed the chosen answers down with the rejected ones (likelihood displacement); MinorDPO did so less."
                } else {
                    "Here DPO did not push the chosen answers down further than MinorDPO."
                }
            ));
        }
    }
    out
}

fn file_name(name: &str) -> String {
    name.replace('.', "_")
}

/// The key figure: mean test accuracy against learning rate (log axis), one line per variant with
/// its 95% CI band, the base model's accuracy and interval in grey.
fn sweep_figure(grid: &Grid, base_test: &[bool]) -> String {
    let mut series = Vec::new();
    for (v, variant) in grid.variants.iter().enumerate() {
        let cells: Vec<(f64, Interval)> = (0..grid.rates.len())
            .filter_map(|l| grid.cell(v, l).map(|c| (grid.rates[l], c.test())))
            .collect();
        let band = cells
            .iter()
            .filter(|(_, i)| i.half_width.is_finite())
            .map(|(lr, i)| (*lr, 100.0 * i.low().max(0.0), 100.0 * i.high().min(1.0)))
            .collect();
        series.push(Series {
            band,
            ..Series::line(
                variant.name(),
                cells.iter().map(|(lr, i)| (*lr, 100.0 * i.value)).collect(),
                color(v),
            )
            .with_markers()
        });
    }
    let (lo, hi) = (
        grid.rates.iter().copied().fold(f64::INFINITY, f64::min),
        grid.rates.iter().copied().fold(0.0, f64::max),
    );
    let base = 100.0 * fraction(base_test);
    let (wl, wh) = graded_wilson(base_test);
    series.push(Series {
        band: vec![(lo, 100.0 * wl, 100.0 * wh), (hi, 100.0 * wl, 100.0 * wh)],
        ..Series::line("base model", vec![(lo, base), (hi, base)], "#888888").dashed()
    });
    Chart {
        title: "Greedy test accuracy after tuning (mean, 95% CI over seeds)",
        x_label: "learning rate (log scale)",
        y_label: "% of test questions right",
        series: &series,
        log_x: true,
        legend: true,
    }
    .svg()
}

/// Per variant, the first seed's runs over steps: validation accuracy, and held-out chosen
/// (solid) and rejected (dashed) log-probs, one color per learning rate.
fn step_figures(grid: &Grid, out: &Path) -> Result<Vec<(String, String)>> {
    let mut plots = Vec::new();
    for (v, variant) in grid.variants.iter().enumerate() {
        let first_seed = |l: usize| grid.cell(v, l).and_then(|c| c.runs.first().copied());
        let runs: Vec<(usize, &RunResult)> = (0..grid.rates.len())
            .filter_map(|l| first_seed(l).map(|r| (l, r)))
            .collect();
        let Some((_, first)) = runs.first() else {
            continue;
        };
        let label = |l: usize| format!("lr {}", grid.rates[l]);
        let accuracy: Vec<Series> = runs
            .iter()
            .map(|(l, r)| {
                let points = r.validation.iter().map(|&(s, a)| (s, 100.0 * a)).collect();
                Series::line(label(*l), points, color(*l))
            })
            .collect();
        let slug = file_name(&variant.slug());
        let seed = first.spec.seed;
        let file = format!("accuracy-{slug}.svg");
        let title = format!(
            "{}: greedy validation accuracy (seed {seed})",
            variant.name()
        );
        write_file(
            &out.join(&file),
            line_chart(&title, "step", "% correct", &accuracy),
        )?;
        plots.push((title, file));
        let mut logps = Vec::new();
        for (l, r) in &runs {
            let chosen = r.logps.iter().map(|p| (p.0, p.1)).collect();
            let rejected = r.logps.iter().map(|p| (p.0, p.2)).collect();
            logps.push(Series::line(
                format!("{} chosen", label(*l)),
                chosen,
                color(*l),
            ));
            logps.push(
                Series::line(format!("{} rejected", label(*l)), rejected, color(*l)).dashed(),
            );
        }
        let file = format!("logps-{slug}.svg");
        let title = format!("{}: held-out log-probs (seed {seed})", variant.name());
        write_file(
            &out.join(&file),
            line_chart(&title, "step", "mean log π(y|x) (nats)", &logps),
        )?;
        plots.push((title, file));
    }
    Ok(plots)
}

/// Writes `report.md` and the figures into the demo's output; returns the report path and the
/// test-accuracy table.
pub fn write_report(
    config: &DemoConfig,
    prepared: &Prepared,
    results: &[RunResult],
    seconds: f64,
) -> Result<(PathBuf, String)> {
    let out = &config.output;
    let grid = Grid::new(config, results);
    let base_test = &prepared.base_test;
    let base = fraction(base_test);
    write_file(&out.join("sweep.svg"), sweep_figure(&grid, base_test))?;
    let mut plots = vec![(
        "Test accuracy against learning rate".to_string(),
        "sweep.svg".to_string(),
    )];
    plots.extend(step_figures(&grid, out)?);

    let seeds = config.sweep.seeds.len();
    let test_table = grid.table("test accuracy %", |c| {
        format!("{}{}", c.test().percent(), seeds_note_short(c, seeds))
    });
    let validation_table = grid.table("validation accuracy %", |c| c.validation().percent());
    let drift_table = grid.table("Δ chosen / Δ rejected (nats)", |c| {
        let (dc, dr) = c.drift();
        format!("{dc:+.2} / {dr:+.2}")
    });
    let pairs = std::fs::read_to_string(&prepared.pairs)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let (m, p, q, s) = (
        &config.model,
        &config.preference,
        &config.questions,
        &config.sweep,
    );
    let interval = |g: &[bool]| format!("**{}**", accuracy_text(g));
    let mut md = format!(
        "# MinorDPO vs DPO on column arithmetic: a learning-rate sweep\n\n\
         **Setup.** A {}-layer Llama (hidden {}, {} heads) was trained from random weights on {} \
         worked arithmetic answers ({} SFT steps). Its greedy accuracy is {} on {} validation \
         questions and {} on {} test questions; no calculation appears in two of the splits. It \
         answered {} training questions {} times each at temperature {}; {pairs} questions gave a \
         pair (its own right answer as chosen, its own wrong answer as rejected{}). Every run \
         trains LoRA (r = {}) on these pairs for {} steps of {} pairs with β = {}; {}% of the pairs \
         are held out to track log-probs, and greedy validation accuracy is measured every {} \
         steps. Seeds {:?} change the LoRA initialisation and the batch order; the base model and \
         the pairs are the same for every run.\n\n\
         Intervals: across seeds, mean ± t(0.975, n−1)·s/√n (what another set of seeds could give; \
         with 3 seeds the factor is 4.3). A single accuracy on {} test questions has a binomial \
         95% interval of about ±{:.1} points at 50%.\n\n\
         Total time: {:.0} s.\n\n\
         ## Test accuracy (greedy, mean ± 95% CI over seeds)\n\nBase model: {}.\n\n{test_table}\n\
         ![Test accuracy against learning rate](sweep.svg)\n\n\
         ## Settings chosen on the validation split\n\n{}\n\
         ## Validation accuracy at the end (mean ± 95% CI)\n\n{validation_table}\n\
         ## How the held-out log-probs moved (mean over seeds, from the start to the end)\n\n{drift_table}\n\
         ## What this sweep shows\n\n{}\n## Figures\n\n",
        m.num_hidden_layers,
        m.hidden_size,
        m.num_attention_heads,
        q.train,
        config.base.max_steps,
        interval(&prepared.base_validation),
        q.validation,
        interval(base_test),
        q.test,
        config.pairs.questions.min(q.train),
        config.pairs.samples,
        config.pairs.temperature,
        if config.pairs.reference_chosen {
            "; the reference worked answer as chosen when no sample was right"
        } else {
            ""
        },
        p.lora_r,
        p.max_steps,
        p.batch_size,
        p.beta,
        100.0 * p.eval_split,
        p.eval_steps,
        s.seeds,
        q.test,
        100.0 * 1.96 * (0.25 / q.test as f64).sqrt(),
        seconds,
        interval(base_test),
        selection(&grid, base_test),
        findings(&grid, base),
    );
    for (title, file) in &plots[1..] {
        md.push_str(&format!("### {title}\n\n![{title}]({file})\n\n"));
    }
    md.push_str(
        "Every run's own curves (loss, rewards, margins, reward accuracy, log-probs, validation \
         accuracy) are in `runs/NAME/curves.svg`; `minordpo plot runs/A runs/B …` overlays any of \
         them.\n",
    );
    let path = out.join("report.md");
    write_file(&path, &md)?;
    Ok((path, format!("base model: {}\n\n{test_table}", pct(base))))
}

/// ` (1 seed)` for a cell with fewer seeds than the sweep's (the extras).
fn seeds_note_short(cell: &Cell, seeds: usize) -> String {
    if cell.runs.len() < seeds {
        seeds_note(cell)
    } else {
        String::new()
    }
}
