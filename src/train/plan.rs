//! Step bookkeeping of every trainer: how many optimizer steps a run has, its warmup, and which
//! examples each micro-batch of a step takes. The data order is a seeded shuffle per epoch, a
//! pure function of (seed, epoch), so a resumed run sees the same batches.

use crate::io::Rng;

/// Shuffled index order of epoch `epoch` (Fisher–Yates with a per-epoch seed).
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The step plan of a run over `n` examples.
#[derive(Debug, Clone)]
pub struct StepPlan {
    n: usize,
    batch_size: usize,
    accum: usize,
    seed: u64,
    batches_per_epoch: usize,
    /// Optimizer steps per pass over the data.
    pub steps_per_epoch: usize,
    /// Optimizer steps of the run.
    pub total_steps: usize,
    /// Warmup steps of the learning-rate schedule.
    pub warmup: usize,
    /// The order of the epoch last asked for (epoch, indices).
    order: Option<(usize, Vec<usize>)>,
}

/// What decides a run's length.
#[derive(Debug, Clone, Copy)]
pub struct RunLength {
    pub batch_size: usize,
    pub gradient_accumulation_steps: usize,
    /// 0 = from `num_epochs`.
    pub max_steps: usize,
    pub num_epochs: usize,
    /// Overrides `warmup_ratio` when > 0.
    pub warmup_steps: usize,
    pub warmup_ratio: f64,
    pub seed: u64,
}

impl StepPlan {
    /// The plan for `n` examples (`n`, batch size and accumulation ≥ 1).
    pub fn new(n: usize, length: RunLength) -> Self {
        let batches_per_epoch = n.div_ceil(length.batch_size);
        let steps_per_epoch = batches_per_epoch
            .div_ceil(length.gradient_accumulation_steps)
            .max(1);
        let total_steps = if length.max_steps > 0 {
            length.max_steps
        } else {
            length.num_epochs * steps_per_epoch
        };
        let warmup = if length.warmup_steps > 0 {
            length.warmup_steps
        } else {
            (length.warmup_ratio * total_steps as f64).ceil() as usize
        };
        Self {
            n,
            batch_size: length.batch_size,
            accum: length.gradient_accumulation_steps,
            seed: length.seed,
            batches_per_epoch,
            steps_per_epoch,
            total_steps,
            warmup,
            order: None,
        }
    }

    /// The example indices of each micro-batch of optimizer step `step` (0-based); `arrange`
    /// may reorder each new epoch's shuffle (e.g. group by length).
    pub fn micro_batches(
        &mut self,
        step: usize,
        arrange: impl Fn(&mut [usize]),
    ) -> Vec<Vec<usize>> {
        (0..self.accum)
            .map(|micro| {
                let k = step * self.accum + micro;
                let (epoch, within) = (k / self.batches_per_epoch, k % self.batches_per_epoch);
                if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    let mut order = epoch_order(self.n, self.seed, epoch);
                    arrange(&mut order);
                    self.order = Some((epoch, order));
                }
                let order = &self.order.as_ref().expect("set above").1;
                order[within * self.batch_size..((within + 1) * self.batch_size).min(self.n)]
                    .to_vec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_orders_are_permutations_that_change_per_epoch() {
        let (a, b) = (epoch_order(10, 1, 0), epoch_order(10, 1, 1));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_order(10, 1, 0));
    }

    #[test]
    fn plans_cover_each_epoch_once_per_pass() {
        let length = RunLength {
            batch_size: 3,
            gradient_accumulation_steps: 2,
            max_steps: 0,
            num_epochs: 2,
            warmup_steps: 0,
            warmup_ratio: 0.25,
            seed: 5,
        };
        let mut plan = StepPlan::new(10, length);
        // 4 batches per epoch (3, 3, 3, 1) → 2 steps per epoch, 4 in all, warmup ⌈0.25·4⌉ = 1
        assert_eq!(
            (plan.steps_per_epoch, plan.total_steps, plan.warmup),
            (2, 4, 1)
        );
        let first: Vec<usize> = (0..2)
            .flat_map(|s| plan.micro_batches(s, |_| {}))
            .flatten()
            .collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(plan.micro_batches(0, |_| {}).concat(), first[..6].to_vec());
        let reversed = plan.micro_batches(2, |o| o.reverse());
        assert_eq!(reversed[0].len(), 3);
    }
}
