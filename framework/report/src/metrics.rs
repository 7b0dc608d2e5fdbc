//! Continual-learning metrics, all computed from stored results: the accuracy matrix `R`
//! (`r[i][j]` = accuracy on task `j` after training task `i`, 0-based), the random-init
//! accuracies `b`, a joint-training reference and online accuracies.
//!
//! Formulas and sources are in `docs/metrics.md`. Metrics that are undefined for a stream (BWT
//! with one task, FWT without random-init accuracies) are `None`, never a made-up number.

use serde::{Deserialize, Serialize};

/// The standard metrics of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Average accuracy after the last task, `(1/T) sum_j R[T][j]` (GEM).
    pub acc: f64,
    /// Backward transfer, `(1/(T-1)) sum_{j<T} (R[T][j] - R[j][j])` (GEM).
    pub bwt: Option<f64>,
    /// Forward transfer, `(1/(T-1)) sum_{j>=2} (R[j-1][j] - b_j)` (GEM).
    pub fwt: Option<f64>,
    /// Average forgetting after the last task (Chaudhry et al. 2018).
    pub forgetting: Option<f64>,
    /// Learning accuracy, `(1/T) sum_j R[j][j]` (Riemer et al. 2019).
    pub learning_accuracy: f64,
    /// Average incremental accuracy, `(1/T) sum_k A_k` with `A_k = (1/k) sum_{j<=k} R[k][j]`.
    pub avg_incremental_accuracy: f64,
    /// Intransigence, `(1/T) sum_k (R*[k][k] - R[k][k])` against a joint reference R*.
    pub intransigence: Option<f64>,
    /// Mean accuracy on incoming training batches before their update (Kumar et al.).
    pub online_accuracy: Option<f64>,
}

/// Number of tasks of a square matrix (rows).
fn tasks(r: &[Vec<f64>]) -> usize {
    r.len()
}

/// `(1/T) sum_j R[T][j]`: mean accuracy over all tasks after the last one.
pub fn acc(r: &[Vec<f64>]) -> f64 {
    average_accuracy_at(r, tasks(r) - 1)
}

/// `A_k` = mean of `R[k][0..=k]`: average accuracy over the tasks seen after training task `k`.
pub fn average_accuracy_at(r: &[Vec<f64>], k: usize) -> f64 {
    r[k][..=k].iter().sum::<f64>() / (k + 1) as f64
}

/// Backward transfer; `None` for a single task.
pub fn bwt(r: &[Vec<f64>]) -> Option<f64> {
    let t = tasks(r);
    (t >= 2).then(|| (0..t - 1).map(|j| r[t - 1][j] - r[j][j]).sum::<f64>() / (t - 1) as f64)
}

/// Forward transfer against the random-init accuracies `b`; `None` for a single task.
pub fn fwt(r: &[Vec<f64>], b: &[f64]) -> Option<f64> {
    let t = tasks(r);
    (t >= 2).then(|| (1..t).map(|j| r[j - 1][j] - b[j]).sum::<f64>() / (t - 1) as f64)
}

/// Forgetting of task `j` after task `k` (j < k): the best accuracy on `j` while training
/// tasks `j..k` minus the accuracy after task `k`.
pub fn forgetting_of(r: &[Vec<f64>], j: usize, k: usize) -> f64 {
    let best = (j..k).map(|l| r[l][j]).fold(f64::NEG_INFINITY, f64::max);
    best - r[k][j]
}

/// Average forgetting after the last task; `None` for a single task.
pub fn forgetting(r: &[Vec<f64>]) -> Option<f64> {
    let t = tasks(r);
    (t >= 2).then(|| (0..t - 1).map(|j| forgetting_of(r, j, t - 1)).sum::<f64>() / (t - 1) as f64)
}

/// `(1/T) sum_j R[j][j]`: accuracy on each task right after learning it (plasticity).
pub fn learning_accuracy(r: &[Vec<f64>]) -> f64 {
    (0..tasks(r)).map(|j| r[j][j]).sum::<f64>() / tasks(r) as f64
}

/// (1/T) sum_k A_k.
pub fn avg_incremental_accuracy(r: &[Vec<f64>]) -> f64 {
    (0..tasks(r))
        .map(|k| average_accuracy_at(r, k))
        .sum::<f64>()
        / tasks(r) as f64
}

/// Mean over tasks of the joint reference's `R*[k][k]` minus `R[k][k]`.
pub fn intransigence(r: &[Vec<f64>], joint: &[Vec<f64>]) -> f64 {
    (0..tasks(r)).map(|k| joint[k][k] - r[k][k]).sum::<f64>() / tasks(r) as f64
}

/// All metrics. `random_init` enables FWT, `joint` intransigence, `online` (per-task mean
/// online accuracies) the online accuracy. Panics if `r` is not a non-empty square matrix or the
/// optional inputs have another task count (callers build them from the same stream).
pub fn compute(
    r: &[Vec<f64>],
    random_init: Option<&[f64]>,
    joint: Option<&[Vec<f64>]>,
    online: Option<&[f64]>,
) -> Metrics {
    let t = tasks(r);
    assert!(
        t > 0 && r.iter().all(|row| row.len() == t),
        "R must be square"
    );
    Metrics {
        acc: acc(r),
        bwt: bwt(r),
        fwt: random_init.and_then(|b| fwt(r, b)),
        forgetting: forgetting(r),
        learning_accuracy: learning_accuracy(r),
        avg_incremental_accuracy: avg_incremental_accuracy(r),
        intransigence: joint.map(|j| intransigence(r, j)),
        online_accuracy: online
            .filter(|o| !o.is_empty())
            .map(|o| o.iter().sum::<f64>() / o.len() as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    /// A 3-task matrix with hand-computed metrics.
    fn r() -> Vec<Vec<f64>> {
        vec![
            vec![0.9, 0.1, 0.2],
            vec![0.6, 0.8, 0.3],
            vec![0.5, 0.7, 0.95],
        ]
    }

    #[test]
    fn hand_computed_matrix() {
        let r = r();
        close(acc(&r), (0.5 + 0.7 + 0.95) / 3.0);
        // BWT = ((0.5 - 0.9) + (0.7 - 0.8)) / 2 = -0.25
        close(bwt(&r).unwrap(), -0.25);
        // FWT with b = [0.1, 0.05, 0.15]: ((0.1 - 0.05) + (0.3 - 0.15)) / 2 = 0.1
        close(fwt(&r, &[0.1, 0.05, 0.15]).unwrap(), 0.1);
        // forgetting: task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: 0.8 - 0.7 = 0.1 -> 0.25
        close(forgetting(&r).unwrap(), 0.25);
        close(forgetting_of(&r, 0, 1), 0.3);
        close(learning_accuracy(&r), (0.9 + 0.8 + 0.95) / 3.0);
        // A_0 = 0.9, A_1 = 0.7, A_2 = 0.7166.. -> mean
        let a2 = (0.5 + 0.7 + 0.95) / 3.0;
        close(avg_incremental_accuracy(&r), (0.9 + 0.7 + a2) / 3.0);
        let joint = vec![
            vec![0.95, 0.0, 0.0],
            vec![0.9, 0.9, 0.0],
            vec![0.9, 0.9, 0.97],
        ];
        // ((0.95-0.9) + (0.9-0.8) + (0.97-0.95)) / 3 = 0.17 / 3
        close(intransigence(&r, &joint), 0.17 / 3.0);
    }

    #[test]
    fn forgetting_ignores_rows_before_the_task_was_learned() {
        // Task 1 scored 0.9 before it was trained (row 0): not counted as its best.
        let r = vec![vec![0.8, 0.9], vec![0.8, 0.5]];
        close(forgetting(&r).unwrap(), 0.0);
        close(forgetting_of(&r, 0, 1), 0.0);
    }

    #[test]
    fn single_task_leaves_transfer_metrics_undefined() {
        let m = compute(&[vec![0.7]], Some(&[0.1]), None, Some(&[0.5, 0.6]));
        close(m.acc, 0.7);
        assert_eq!(m.bwt, None);
        assert_eq!(m.fwt, None);
        assert_eq!(m.forgetting, None);
        assert_eq!(m.intransigence, None);
        close(m.online_accuracy.unwrap(), 0.55);
    }

    #[test]
    fn perfect_retention_has_zero_bwt_and_forgetting() {
        let r = vec![vec![1.0, 0.0], vec![1.0, 1.0]];
        let m = compute(&r, None, None, None);
        close(m.bwt.unwrap(), 0.0);
        close(m.forgetting.unwrap(), 0.0);
        assert_eq!(m.fwt, None);
    }
}
