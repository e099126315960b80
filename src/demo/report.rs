//! The demo's report: `report.md` with the comparison table and what it shows, and SVG plots of
//! the held-out chosen/rejected log-probs per run, the reward margins and greedy test accuracy.

use std::path::{Path, PathBuf};

use super::Prepared;
use super::config::{DemoConfig, RunSpec};
use crate::demo::plot::{PALETTE, Series, line_chart};
use crate::dpo::config::TrainConfig;
use crate::dpo::loss::LossKind;
use crate::error::{Error, Result};
use crate::io::write_file;

/// One finished comparison run.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub spec: RunSpec,
    pub name: String,
    /// `(step, mean held-out log π(chosen), log π(rejected), reward margin, reward accuracy)`,
    /// from the start (policy = reference) to the end.
    pub eval: Vec<(usize, f64, f64, f64, f64)>,
    /// `(step, greedy test accuracy)`.
    pub accuracy: Vec<(usize, f64)>,
}

impl RunResult {
    /// Reads the run's `metrics.jsonl` (its `eval_*` lines).
    pub fn load(
        spec: RunSpec,
        name: String,
        run: &TrainConfig,
        accuracy: Vec<(usize, f64)>,
    ) -> Result<Self> {
        let path = run.output.join("metrics.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut eval = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| Error::json(&path, e))?;
            let get = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
            let (Some(step), Some(c), Some(r)) = (
                get("step"),
                get("eval_logps/chosen"),
                get("eval_logps/rejected"),
            ) else {
                continue;
            };
            if eval.is_empty() {
                // At step 0 the policy is the reference: log π = log π_ref = log π − reward/β.
                let (rc, rr) = (
                    get("eval_rewards/chosen").unwrap_or(0.0),
                    get("eval_rewards/rejected").unwrap_or(0.0),
                );
                eval.push((0, c - rc / run.beta, r - rr / run.beta, 0.0, f64::NAN));
            }
            eval.push((
                step as usize,
                c,
                r,
                get("eval_rewards/margins").unwrap_or(f64::NAN),
                get("eval_rewards/accuracies").unwrap_or(f64::NAN),
            ));
        }
        if eval.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: no eval lines (eval_split must be > 0)",
                path.display()
            )));
        }
        Ok(Self {
            spec,
            name,
            eval,
            accuracy,
        })
    }

    fn label(&self) -> String {
        format!("{}, lr {}", self.spec.loss, self.spec.learning_rate)
    }

    /// Change of the held-out chosen and rejected log-probs from start to end (nats).
    pub fn drift(&self) -> (f64, f64) {
        let (first, last) = (self.eval[0], self.eval[self.eval.len() - 1]);
        (last.1 - first.1, last.2 - first.2)
    }

    /// Accuracy at the start and the end.
    pub fn accuracy_change(&self) -> (f64, f64) {
        let first = self.accuracy.first().map_or(f64::NAN, |a| a.1);
        let last = self.accuracy.last().map_or(f64::NAN, |a| a.1);
        (first, last)
    }
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// The comparison table (Markdown).
pub fn table(results: &[RunResult]) -> String {
    let mut t = String::from(
        "| run | learning rate | test accuracy (greedy) | Δ logps/chosen | Δ logps/rejected | reward accuracy | reward margin |\n|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let (dc, dr) = r.drift();
        let (a0, a1) = r.accuracy_change();
        let last = r.eval[r.eval.len() - 1];
        t.push_str(&format!(
            "| {} | {} | {} → {} | {:+.2} | {:+.2} | {} | {:.3} |\n",
            r.label().split(',').next().unwrap_or(""),
            r.spec.learning_rate,
            pct(a0),
            pct(a1),
            dc,
            dr,
            pct(last.4),
            last.3
        ));
    }
    t
}

/// Sentences comparing DPO and MinorDPO at each learning rate both ran at, from the numbers.
fn findings(results: &[RunResult]) -> String {
    let mut out = String::new();
    let mut rates: Vec<f64> = results.iter().map(|r| r.spec.learning_rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let find = |loss: LossKind, lr: f64| {
        results
            .iter()
            .find(|r| r.spec.loss == loss && r.spec.learning_rate == lr)
    };
    let mut verdicts = Vec::new();
    for lr in rates {
        let (Some(dpo), Some(minor)) = (find(LossKind::Sigmoid, lr), find(LossKind::MinorDpo, lr))
        else {
            continue;
        };
        let describe = |r: &RunResult| {
            let (dc, dr) = r.drift();
            let (a0, a1) = r.accuracy_change();
            format!(
                "chosen {dc:+.2} nats, rejected {dr:+.2} nats, accuracy {} → {}",
                pct(a0),
                pct(a1)
            )
        };
        out.push_str(&format!(
            "- **lr {lr}**: DPO: {}; MinorDPO: {}.\n",
            describe(dpo),
            describe(minor)
        ));
        verdicts.push((
            lr,
            dpo.drift().0,
            minor.drift().0,
            dpo.accuracy_change().1,
            minor.accuracy_change().1,
        ));
    }
    if let Some(&(lr, dpo_chosen, minor_chosen, dpo_acc, minor_acc)) = verdicts.last() {
        let chosen_claim = dpo_chosen < minor_chosen;
        let acc_claim = dpo_acc < minor_acc;
        out.push_str(&format!(
            "\nAt the highest learning rate ({lr}), DPO's chosen log-prob moved {} MinorDPO's ({dpo_chosen:+.2} vs {minor_chosen:+.2} nats) and its final greedy accuracy was {} ({} vs {}). ",
            if chosen_claim { "further down than" } else { "no further down than" },
            if acc_claim { "lower" } else if dpo_acc == minor_acc { "the same" } else { "higher" },
            pct(dpo_acc),
            pct(minor_acc)
        ));
        out.push_str(match (chosen_claim, acc_claim) {
            (true, true) => "This run agrees with the paper's claim on both counts.\n",
            (true, false) | (false, true) => {
                "This run agrees with the paper's claim on one count only.\n"
            }
            (false, false) => "This run does not reproduce the paper's claim.\n",
        });
        let base = results.first().map_or(f64::NAN, |r| r.accuracy_change().0);
        let best = results
            .iter()
            .max_by(|a, b| a.accuracy_change().1.total_cmp(&b.accuracy_change().1))
            .expect("runs");
        out.push_str(&format!(
            "The best final accuracy was {}'s {} against the base model's {}: {}.\n",
            best.label(),
            pct(best.accuracy_change().1),
            pct(base),
            if best.accuracy_change().1 > base + 0.02 {
                "preference tuning improved the model"
            } else {
                "no run improved on the base model; on these pairs the gain is stability, not accuracy"
            }
        ));
        out.push_str("One seed, a tiny model and a few hundred pairs: differences of a few points of accuracy are within run-to-run noise.\n");
    }
    out
}

fn file_name(name: &str) -> String {
    name.replace('.', "_")
}

/// Writes `report.md` and the plots into the demo's output; returns the report path and table.
pub fn write_report(
    config: &DemoConfig,
    prepared: &Prepared,
    results: &[RunResult],
    seconds: f64,
) -> Result<(PathBuf, String)> {
    let out = &config.output;
    let color = |i: usize| PALETTE[i % PALETTE.len()].to_string();
    let mut plots = Vec::new();
    for r in results {
        let series = vec![
            Series {
                name: "chosen".into(),
                points: r.eval.iter().map(|e| (e.0 as f64, e.1)).collect(),
                color: color(0),
                dashed: false,
            },
            Series {
                name: "rejected".into(),
                points: r.eval.iter().map(|e| (e.0 as f64, e.2)).collect(),
                color: color(1),
                dashed: true,
            },
        ];
        let file = format!("logps-{}.svg", file_name(&r.name));
        write_file(
            &out.join(&file),
            line_chart(
                &format!("Held-out log-probs: {}", r.label()),
                "step",
                "mean log π(y|x) (nats)",
                &series,
            ),
        )?;
        plots.push((
            format!("Chosen and rejected log-probs, {}", r.label()),
            file,
        ));
    }
    let all = |f: &dyn Fn(&RunResult) -> Vec<(f64, f64)>| -> Vec<Series> {
        results
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: r.label(),
                points: f(r),
                color: color(i),
                dashed: r.spec.loss == LossKind::Sigmoid,
            })
            .collect()
    };
    let margins = all(&|r| r.eval.iter().map(|e| (e.0 as f64, e.3)).collect());
    write_file(
        &out.join("margins.svg"),
        line_chart(
            "Held-out reward margin β(Δw − Δl)",
            "step",
            "margin",
            &margins,
        ),
    )?;
    plots.push(("Reward margins".into(), "margins.svg".into()));
    let chosen = all(&|r| r.eval.iter().map(|e| (e.0 as f64, e.1)).collect());
    write_file(
        &out.join("chosen.svg"),
        line_chart("Held-out log π(chosen), all runs", "step", "nats", &chosen),
    )?;
    plots.push(("Chosen log-probs, all runs".into(), "chosen.svg".into()));
    let accuracy = all(&|r| {
        r.accuracy
            .iter()
            .map(|&(s, a)| (s as f64, 100.0 * a))
            .collect()
    });
    write_file(
        &out.join("accuracy.svg"),
        line_chart("Greedy test accuracy", "step", "% correct", &accuracy),
    )?;
    plots.push(("Greedy test accuracy".into(), "accuracy.svg".into()));

    let table = table(results);
    let pairs = std::fs::read_to_string(&prepared.pairs)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let m = &config.model;
    let p = &config.preference;
    let mut md = format!(
        "# MinorDPO vs DPO on column arithmetic\n\n\
         A {}-layer Llama (hidden {}, {} heads) was trained from random weights on {} worked \
         arithmetic answers ({} SFT steps), reaching **{}** greedy accuracy on {} held-out questions. \
         It then answered {} training questions {} times each at temperature {}; {} questions gave at \
         least one wrong answer, and each became a pair (a right answer as chosen, its own wrong answer \
         as rejected). Every run below trains LoRA (r = {}) on these pairs for {} steps of {} pairs, \
         β = {}, and is scored on held-out pairs ({}%) and by greedy accuracy on the test questions.\n\n\
         Total time: {:.0} s.\n\n## Results\n\n{table}\n\
         Δ = change of the mean held-out log-probability from the start (the reference) to the end, in nats.\n\n\
         ## What this run shows\n\n{}\n## Plots\n\n",
        m.num_hidden_layers,
        m.hidden_size,
        m.num_attention_heads,
        config.train_questions,
        config.base.max_steps,
        pct(prepared.base_accuracy),
        config.eval_questions,
        config.pairs.questions.min(config.train_questions),
        config.pairs.samples,
        config.pairs.temperature,
        pairs,
        p.lora_r,
        p.max_steps,
        p.batch_size,
        p.beta,
        100.0 * p.eval_split,
        seconds,
        findings(results)
    );
    for (title, file) in &plots {
        md.push_str(&format!("### {title}\n\n![{title}]({file})\n\n"));
    }
    let path = out.join("report.md");
    write_file(&path, &md)?;
    Ok((path, table))
}

/// The report path of a demo output directory.
pub fn report_path(output: &Path) -> PathBuf {
    output.join("report.md")
}
