//! What a trial measures as it runs: the accuracy matrix and the per-task series. One type for
//! the finished trial ([`crate::trainer::TrialOutcome`]) and for a checkpoint's progress
//! ([`crate::checkpoint::Progress`]), so resuming restores exactly what an uninterrupted run
//! would hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plasticity::TaskDiagnostics;

/// The measurements of a trial so far. On failure the matrix holds the rows finished before it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// `accuracy_matrix[i][j]`: accuracy on task `j` after training task `i`.
    pub accuracy_matrix: Vec<Vec<f64>>,
    /// Accuracy on each task of the untrained network (for FWT).
    pub random_init_accuracy: Vec<f64>,
    /// Per finished task: mean accuracy on incoming batches before their update.
    pub online_accuracy: Vec<f64>,
    /// Per finished task: loss averaged over the task's steps.
    pub mean_loss: Vec<f64>,
    /// Seconds spent in the training loops (evaluation excluded).
    pub train_seconds: f64,
    /// Seconds spent evaluating.
    pub eval_seconds: f64,
    /// Seconds spent in the strategy's end-of-task work (`on_task_end`: consolidation such as
    /// a Fisher, exemplar selection, retraining on a memory), beside `train_seconds`. Absent in
    /// checkpoints written before it was measured (read as 0).
    #[serde(default)]
    pub task_end_seconds: f64,
    /// Training rows processed (including rows a strategy added).
    pub samples_seen: u64,
    /// Optimizer steps taken (`step` in a checkpoint's metadata).
    #[serde(rename = "step")]
    pub steps: u64,
    /// Per trained task: the numbers the strategy reported during it (key → value; see
    /// [`crate::strategy::Strategy::take_reports`]). Empty maps when the strategy reports
    /// nothing.
    pub strategy_metrics: Vec<BTreeMap<String, f64>>,
    /// Per trained task: loss-of-plasticity diagnostics (empty unless `[diagnostics]` is
    /// enabled).
    pub diagnostics: Vec<TaskDiagnostics>,
    /// Per trained task: whether training *collapsed* on it ([`TailTally::collapsed`]: over the
    /// last quarter of its steps the loss stayed at or above the entropy of the labels and the
    /// online accuracy at or below the majority-class rate, i.e. the network learned nothing
    /// input-dependent about the task).
    /// Absent in checkpoints written before the flag existed (read as no collapse).
    #[serde(default)]
    pub collapsed: Vec<bool>,
}

/// How close to the label entropy the tail loss must be (relative) to count as collapsed.
pub const COLLAPSE_LOSS_TOLERANCE: f64 = 0.01;
/// How far above the majority-class rate the tail online accuracy may be and still count as
/// collapsed.
pub const COLLAPSE_ACCURACY_MARGIN: f64 = 0.05;

/// The last quarter of a task's steps (at least one): the loss of each step, the online
/// predictions and the targets of the current task's rows. Decides
/// [`Measurements::collapsed`].
#[derive(Debug, Clone, Default)]
pub struct TailTally {
    loss_sum: f64,
    steps: u64,
    correct: u64,
    seen: u64,
    /// Rows seen per target class.
    counts: BTreeMap<usize, u64>,
}

impl TailTally {
    /// The first step of the tail of a task of `steps` steps (0-based): the last
    /// `max(1, ⌈steps / 4⌉)` steps are the tail.
    pub fn start(steps: u64) -> u64 {
        steps - steps.div_ceil(4).max(1).min(steps)
    }

    /// Adds one step: its mean loss and, per current-task row, `(target, prediction)`.
    pub fn add_step(&mut self, loss: f64, rows: impl IntoIterator<Item = (usize, usize)>) {
        self.add_loss(loss);
        for (target, pred) in rows {
            self.add_row(target, pred);
        }
    }

    /// Adds one step's mean loss.
    pub fn add_loss(&mut self, loss: f64) {
        self.loss_sum += loss;
        self.steps += 1;
    }

    /// Adds one current-task row's target and online prediction.
    pub fn add_row(&mut self, target: usize, pred: usize) {
        *self.counts.entry(target).or_default() += 1;
        self.correct += u64::from(target == pred);
        self.seen += 1;
    }

    /// Mean loss over the tail's steps (0 when empty).
    pub fn mean_loss(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.loss_sum / self.steps as f64
        }
    }

    /// Online accuracy over the tail's rows (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.correct as f64 / self.seen as f64
        }
    }

    /// The entropy `H` (nats) of the tail's targets and the majority-class rate `p_max`: the
    /// loss and the accuracy of the best network whose output ignores its input.
    pub fn constant_predictor(&self) -> (f64, f64) {
        let n = self.seen as f64;
        if self.seen == 0 {
            return (0.0, 0.0);
        }
        let h = self
            .counts
            .values()
            .map(|&c| {
                let p = c as f64 / n;
                -p * p.ln()
            })
            .sum();
        let pmax = self.counts.values().copied().max().unwrap_or(0) as f64 / n;
        (h, pmax)
    }

    /// Collapsed: at least two classes among the tail's targets, a tail loss of at least
    /// `(1 − COLLAPSE_LOSS_TOLERANCE) · H` and a tail online accuracy of at most
    /// `p_max + COLLAPSE_ACCURACY_MARGIN` ([`TailTally::constant_predictor`]). A dead network
    /// (e.g. every ReLU off, so the logits are the output bias) sits exactly at `(H, p_max)`
    /// once its bias has adapted; a network that learns anything is well below `H`.
    pub fn collapsed(&self) -> bool {
        if self.counts.len() < 2 {
            return false;
        }
        let (h, pmax) = self.constant_predictor();
        self.mean_loss() >= (1.0 - COLLAPSE_LOSS_TOLERANCE) * h
            && self.accuracy() <= pmax + COLLAPSE_ACCURACY_MARGIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two balanced classes: `H = ln 2`, `p_max = 0.5`.
    fn two_classes(loss: f64, correct_every: usize) -> TailTally {
        let mut t = TailTally::default();
        for step in 0..10 {
            t.add_step(
                loss,
                (0..8).map(|r| {
                    let target = r % 2;
                    let hit = (step * 8 + r) % correct_every == 0;
                    (target, if hit { target } else { 1 - target })
                }),
            );
        }
        t
    }

    #[test]
    fn the_tail_is_the_last_quarter() {
        assert_eq!(TailTally::start(150), 150 - 38);
        assert_eq!(TailTally::start(4), 3);
        assert_eq!(TailTally::start(1), 0);
        assert_eq!(TailTally::start(0), 0);
    }

    #[test]
    fn constant_predictor_of_balanced_and_skewed_labels() {
        let t = two_classes(0.7, 2);
        let (h, p) = t.constant_predictor();
        assert!((h - 2f64.ln()).abs() < 1e-12);
        assert_eq!(p, 0.5);
        // 3 of class 0, 1 of class 1: H = −(¾ ln ¾ + ¼ ln ¼), p_max = ¾.
        let mut s = TailTally::default();
        s.add_step(0.5, [(0, 0), (0, 0), (0, 0), (1, 0)]);
        let (h, p) = s.constant_predictor();
        let want = -(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln());
        assert!((h - want).abs() < 1e-12);
        assert_eq!(p, 0.75);
        assert_eq!(s.accuracy(), 0.75);
    }

    #[test]
    fn a_dead_network_is_collapsed_a_learning_one_is_not() {
        // The trial: loss ln 2 ≈ 0.693, online accuracy 0.49-0.50 on two classes.
        assert!(two_classes(0.6935, 2).collapsed());
        assert!(two_classes(0.70, 2).collapsed()); // above H: no better either
                                                   // Learning: accuracy 0.96, loss 0.1.
        assert!(!two_classes(0.1, 1).collapsed());
        // Loss just outside the 1% band: not collapsed even at chance accuracy.
        assert!(!two_classes(0.98 * 2f64.ln(), 2).collapsed());
        // At the loss band but clearly above chance: not collapsed.
        assert!(!two_classes(0.6935, 1).collapsed());
    }

    #[test]
    fn one_class_or_nothing_is_never_collapsed() {
        let mut t = TailTally::default();
        assert!(!t.collapsed());
        t.add_step(0.0, [(3, 1), (3, 1)]);
        assert!(!t.collapsed());
    }
}
