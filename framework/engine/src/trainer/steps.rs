//! Training one task: the seeded batch order over the training pool and the optimizer steps,
//! each with its hooks (`before_batch`, `after_backward`, `after_step`).

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_backend::Inputs;
use clef_data::augment::Augmenter;
use clef_data::scenario::Task;
use clef_data::seed::derive_seed;

use super::evaluate::argmax;
use super::trial::Trial;
use super::{hook_err, steps_for, TrialStatus};
use crate::measurements::TailTally;
use crate::strategy::{Batch, DataMode, Strategy};

/// The rows a task trains on, as `(task, position)` pairs: the current task's training split,
/// or (for the `joint` reference, [`DataMode::Cumulative`]) every training split so far.
pub(super) struct TrainingPool {
    mode: DataMode,
    rows: Vec<(usize, usize)>,
}

impl TrainingPool {
    /// An empty pool for a strategy's data mode.
    pub fn new(mode: DataMode) -> Self {
        TrainingPool {
            mode,
            rows: Vec::new(),
        }
    }

    /// The data mode it was made for.
    pub fn mode(&self) -> DataMode {
        self.mode
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Task `ti` begins: its training rows join the pool (and replace the previous task's,
    /// unless the pool is cumulative).
    pub fn enter(&mut self, ti: usize, task: &Task) {
        if self.mode == DataMode::CurrentTask {
            self.rows.clear();
        }
        self.rows.extend((0..task.train.len()).map(|p| (ti, p)));
    }
}

/// A task's running totals of the online accuracy and the loss.
#[derive(Default)]
struct Tally {
    correct: u64,
    seen: u64,
    loss_sum: f64,
    /// Whether the current step is in the task's tail (its last quarter).
    in_tail: bool,
    /// The tail's totals, which decide the collapse flag.
    tail: TailTally,
}

/// The seeded order in which the pool's rows are visited: reshuffled at every epoch.
struct BatchOrder {
    order: Vec<usize>,
    cursor: usize,
    epoch: u64,
}

impl BatchOrder {
    /// The pool positions of the next batch of `size` rows (shorter at the end of an epoch).
    fn next(&mut self, pool_len: usize, size: usize, shuffle_seed: u64, ti: usize) -> &[usize] {
        if self.cursor >= self.order.len() {
            self.order = (0..pool_len).collect();
            let mut srng = ChaCha8Rng::seed_from_u64(derive_seed(
                shuffle_seed,
                &format!("task-{ti}-epoch-{}", self.epoch),
            ));
            self.order.shuffle(&mut srng);
            self.cursor = 0;
            self.epoch += 1;
        }
        let start = self.cursor;
        self.cursor = (start + size).min(self.order.len());
        &self.order[start..self.cursor]
    }
}

impl Trial<'_> {
    /// Trains task `ti` for its budget of optimizer steps on `pool`, then records the task's
    /// online accuracy, mean loss and training time. A non-finite loss or parameter ends the
    /// trial as diverged.
    pub(super) fn train_task(
        &mut self,
        ti: usize,
        pool: &TrainingPool,
        strategy: &mut dyn Strategy,
    ) -> Result<(), TrialStatus> {
        let sc = self.scenario;
        // The joint reference trains on several tasks at once, so in task-IL it uses the
        // union of their heads (evaluation still masks to each task's own head).
        let mask = match pool.mode() {
            DataMode::CurrentTask => sc.train_mask(ti),
            DataMode::Cumulative => sc.seen_mask(ti),
        };
        let bs = self.cfg.train.batch_size;
        let steps = steps_for(self.cfg.train.budget(), pool.len(), bs);
        let mut order = BatchOrder {
            order: Vec::new(),
            cursor: 0,
            epoch: 0,
        };
        // One batch value reused across steps: its buffers keep their capacity.
        let mut batch = Batch::default();
        let mut logits = Vec::new();
        let mut tally = Tally::default();
        // Augmentation of the gathered training rows (`train.augment`); none by default, and
        // then no random draw at all.
        let mut augmenter = match (self.cfg.train.augment.as_slice(), sc.image_shape()) {
            ([], _) => None,
            (ops, Some(shape)) => Some(Augmenter::new(
                ops,
                shape,
                sc.data.train.normalization.as_ref(),
            )),
            (_, None) => {
                return Err(TrialStatus::Failed(format!(
                    "train.augment needs image data, but `{}` has no image shape",
                    sc.data.train.name
                )))
            }
        };
        let t_start = Instant::now();
        let tail_start = TailTally::start(steps);
        for step in 0..steps {
            tally.in_tail = step >= tail_start;
            batch.x.clear();
            batch.targets.clear();
            batch.mask.clone_from(&mask);
            batch.row_masks = None;
            let rows = order.next(pool.len(), bs, self.shuffle_seed, ti);
            batch.current_rows = rows.len();
            for &k in rows {
                let (tj, p) = pool.rows[k];
                sc.gather(&sc.tasks[tj], false, &[p], &mut batch.x, &mut batch.targets);
            }
            if let Some(aug) = augmenter.as_mut() {
                let seed = derive_seed(self.seed, &format!("augment-task-{ti}-step-{}", self.step));
                aug.apply(&mut batch.x, batch.current_rows, seed);
            }
            self.step_once(ti, &mut batch, &mut logits, &mut tally, strategy)?;
        }
        if !self.net.params().all_finite() {
            return Err(TrialStatus::Diverged {
                task: ti,
                step: self.step,
            });
        }
        let m = &mut self.measured;
        m.train_seconds += t_start.elapsed().as_secs_f64();
        m.steps = self.step;
        m.online_accuracy.push(if tally.seen > 0 {
            tally.correct as f64 / tally.seen as f64
        } else {
            0.0
        });
        m.mean_loss.push(if steps > 0 {
            tally.loss_sum / steps as f64
        } else {
            0.0
        });
        let collapsed = tally.tail.collapsed();
        if collapsed {
            let (h, pmax) = tally.tail.constant_predictor();
            tracing::warn!(
                task = ti,
                tail_loss = tally.tail.mean_loss(),
                label_entropy = h,
                tail_accuracy = tally.tail.accuracy(),
                majority_rate = pmax,
                "training collapsed on this task: over its last quarter of steps the loss stayed \
                 at or above the label entropy and the online accuracy at or below chance \
                 (docs/metrics.md, `collapsed`)"
            );
        }
        m.collapsed.push(collapsed);
        Ok(())
    }

    /// One optimizer step on `batch`: `before_batch` (the strategy may add rows), zeroed
    /// gradients, the masked cross-entropy's backward pass (its logits give the online
    /// accuracy of the current task's rows), the NaN/inf check, `after_backward`, the update,
    /// a frozen expert's body restored, `after_step`.
    fn step_once(
        &mut self,
        ti: usize,
        batch: &mut Batch,
        logits: &mut Vec<f32>,
        tally: &mut Tally,
        strategy: &mut dyn Strategy,
    ) -> Result<(), TrialStatus> {
        let sc = self.scenario;
        strategy
            .before_batch(&mut self.ctx(ti), batch)
            .map_err(|e| hook_err(strategy, "before_batch", e))?;
        self.net.params_mut().zero_grads();
        let rows = batch.rows();
        let inputs = Inputs::new(&batch.x, rows, sc.input_dim())
            .map_err(|e| TrialStatus::Failed(format!("batch: {e}")))?;
        let loss = if strategy.custom_loss() {
            // The strategy's loss: training-mode logits, its cotangent, the backward pass.
            self.net
                .train_logits(inputs, logits)
                .map_err(|e| TrialStatus::Failed(format!("forward: {e}")))?;
            self.cotangent.clear();
            self.cotangent.resize(logits.len(), 0.0);
            let mut cot = std::mem::take(&mut self.cotangent);
            let loss = strategy
                .loss(&mut self.ctx(ti), batch, logits, &mut cot)
                .map_err(|e| hook_err(strategy, "loss", e))?;
            let back = if loss.is_finite() {
                self.net.backward_logits(inputs, &cot)
            } else {
                Ok(())
            };
            self.cotangent = cot;
            back.map_err(|e| TrialStatus::Failed(format!("backward: {e}")))?;
            loss
        } else {
            self.net
                .loss_backward(inputs, &batch.targets, batch.loss_mask(), logits)
                .map_err(|e| TrialStatus::Failed(format!("backward: {e}")))?
        };
        if !loss.is_finite() {
            return Err(TrialStatus::Diverged {
                task: ti,
                step: self.step,
            });
        }
        // Online accuracy: the current task's rows, before the update, each with its own mask.
        let c = sc.num_outputs;
        for r in 0..batch.current_rows {
            let pred = argmax(&logits[r * c..(r + 1) * c], batch.row_mask(r, c));
            tally.correct += (pred == batch.targets[r]) as u64;
            if tally.in_tail {
                tally.tail.add_row(batch.targets[r], pred);
            }
        }
        if tally.in_tail {
            tally.tail.add_loss(f64::from(loss));
        }
        tally.seen += batch.current_rows as u64;
        tally.loss_sum += loss as f64;
        strategy
            .after_backward(&mut self.ctx(ti), loss)
            .map_err(|e| hook_err(strategy, "after_backward", e))?;
        self.opt.step(self.net.params_mut());
        if self.experts.enabled() {
            self.experts.after_step(&mut *self.net);
        }
        self.step += 1;
        strategy
            .after_step(&mut self.ctx(ti))
            .map_err(|e| hook_err(strategy, "after_step", e))?;
        self.measured.samples_seen += rows as u64;
        self.progress.inc(1);
        Ok(())
    }
}
