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
}
