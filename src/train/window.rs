//! The pending side of a run's metrics: each micro-batch's statistics and each step's gradient
//! norm stay on the device until a step that logs, evaluates or saves, when one host read brings
//! back everything since the last one (no per-step host sync).

use std::time::Instant;

use burn::prelude::*;

/// Statistics read back to the host: row `r` holds what the objective put in row `r` of each
/// micro-batch's statistics, concatenated over the micro-batches read (row 0: the loss terms).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatRows(pub Vec<Vec<f64>>);

impl StatRows {
    /// Rows of `columns` values each, from their row-major `values`.
    fn from_row_major(values: &[f64], columns: usize) -> Self {
        Self(values.chunks(columns.max(1)).map(<[f64]>::to_vec).collect())
    }

    /// Several batches' statistics `[rows, n_i]` read back in one host read (empty for none).
    pub fn read(batches: Vec<Tensor<2>>) -> Self {
        if batches.is_empty() {
            return Self::default();
        }
        let all = Tensor::cat(batches, 1); // [rows, n]
        let columns = all.dims()[1];
        let values = all
            .into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .expect("f64 data");
        Self::from_row_major(&values, columns)
    }

    /// Row `r` (empty when nothing was read).
    pub fn row(&self, r: usize) -> &[f64] {
        self.0.get(r).map_or(&[], Vec::as_slice)
    }

    fn extend(&mut self, more: StatRows) {
        if self.0.is_empty() {
            *self = more;
        } else {
            for (row, extra) in self.0.iter_mut().zip(more.0) {
                row.extend(extra);
            }
        }
    }
}

/// Statistics and gradient norms not yet read, and the steps the next metrics line averages.
#[derive(Debug)]
pub struct StepWindow {
    pending_stats: Vec<Tensor<2>>,
    pending_norms: Vec<Tensor<1>>,
    first_unread_step: usize,
    stats: StatRows,
    norms: Vec<f64>,
    tokens: usize,
    started: Instant,
}

/// What a window gives a metrics line besides the objective's own statistics.
#[derive(Debug, Clone, Copy)]
pub struct WindowTotals {
    /// The last step's gradient norm, as transformers' Trainer logs it (0 without gradients).
    pub grad_norm: f64,
    pub tokens_per_second: f64,
}

impl StepWindow {
    /// An empty window whose first step is `first_step` (1-based).
    pub fn new(first_step: usize) -> Self {
        Self {
            pending_stats: Vec::new(),
            pending_norms: Vec::new(),
            first_unread_step: first_step,
            stats: StatRows::default(),
            norms: Vec::new(),
            tokens: 0,
            started: Instant::now(),
        }
    }

    /// Records a micro-batch's statistics `[rows, n]` and its token count (no host read).
    pub fn add_batch(&mut self, stats: Tensor<2>, tokens: usize) {
        self.pending_stats.push(stats);
        self.tokens += tokens;
    }

    /// Records a step's gradient norm `[1]` (no host read).
    pub fn add_norm(&mut self, norm: Tensor<1>) {
        self.pending_norms.push(norm);
    }

    /// Reads everything pending back in one read, through step `done`. Fails, naming the steps,
    /// when a loss term (row 0) or a gradient norm is not finite.
    pub fn read(&mut self, done: usize) -> Result<(), String> {
        let stats: Vec<Tensor<2>> = std::mem::take(&mut self.pending_stats)
            .into_iter()
            .map(Tensor::without_autodiff)
            .collect();
        let norms = std::mem::take(&mut self.pending_norms)
            .into_iter()
            .map(Tensor::without_autodiff);
        let shape = stats.first().map(|s| s.dims()[0]).unwrap_or(0);
        let mut parts: Vec<Tensor<1>> = Vec::new();
        let mut columns = 0;
        if !stats.is_empty() {
            let all = Tensor::cat(stats, 1); // [rows, n]
            columns = all.dims()[1];
            parts.push(all.reshape([shape * columns]));
        }
        parts.extend(norms);
        let values: Vec<f64> = if parts.is_empty() {
            Vec::new()
        } else {
            Tensor::cat(parts, 0)
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .expect("f64 data")
        };
        let (stat_values, norm_values) = values.split_at(shape * columns);
        let rows = StatRows::from_row_major(stat_values, columns);
        let steps = if self.first_unread_step == done {
            format!("step {done}")
        } else {
            format!("steps {}–{done}", self.first_unread_step)
        };
        self.first_unread_step = done + 1;
        if rows.row(0).iter().any(|l| !l.is_finite()) {
            return Err(format!(
                "non-finite loss at {steps}; stopping (lower the learning rate?)"
            ));
        }
        if norm_values.iter().any(|n| !n.is_finite()) {
            return Err(format!("non-finite gradient norm at {steps}; stopping"));
        }
        self.stats.extend(rows);
        self.norms.extend_from_slice(norm_values);
        Ok(())
    }

    /// The statistics read since the last line and the window's totals; starts the next window.
    pub fn take(&mut self) -> (StatRows, WindowTotals) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-9);
        let totals = WindowTotals {
            grad_norm: self.norms.last().copied().unwrap_or(0.0),
            tokens_per_second: self.tokens as f64 / seconds,
        };
        self.norms.clear();
        self.tokens = 0;
        self.started = Instant::now();
        (std::mem::take(&mut self.stats), totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_read_brings_back_every_batch_and_names_the_steps_of_a_non_finite_loss() {
        let device = Device::flex();
        let batch = |loss: f32, other: f32| Tensor::<2>::from_floats([[loss], [other]], &device);
        let mut window = StepWindow::new(1);
        window.add_batch(batch(1.0, 10.0), 4);
        window.add_norm(Tensor::from_floats([3.0], &device));
        window.add_batch(batch(2.0, 20.0), 4);
        window.add_norm(Tensor::from_floats([5.0], &device));
        window.read(2).unwrap();
        let (rows, totals) = window.take();
        assert_eq!(rows, StatRows(vec![vec![1.0, 2.0], vec![10.0, 20.0]]));
        assert_eq!(totals.grad_norm, 5.0); // the last step's, as transformers logs it
        assert!(totals.tokens_per_second > 0.0);

        window.add_batch(batch(f32::NAN, 0.0), 4);
        window.add_batch(batch(1.0, 0.0), 4);
        let err = window.read(4).unwrap_err();
        assert!(err.contains("non-finite loss at steps 3–4"), "{err}");
        window.add_norm(Tensor::from_floats([f32::INFINITY], &device));
        let err = window.read(5).unwrap_err();
        assert!(err.contains("non-finite gradient norm at step 5"), "{err}");
    }
}
