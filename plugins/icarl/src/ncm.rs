//! The pure pieces of iCaRL: the class means of the exemplars' features, the
//! nearest-mean-of-exemplars scores, and the sigmoid distillation loss.

use clef_sdk::loss::binary_cross_entropy;
use clef_sdk::memory::l2_normalize;
use clef_sdk::{ensure, Result};

/// Score of a unit whose class has no exemplar: below every distance score, finite.
pub const NO_MEAN_SCORE: f32 = -1e30;

/// The mean of the L2-normalised rows of `features` (`rows × dim`), renormalised to unit
/// length (Rebuffi et al. 2017, §2.1: "averages are also re-normalized"; the official code
/// divides the class mean by its norm). Computed in f64; an all-zero mean stays zero.
pub fn class_mean(features: &[f32], dim: usize) -> Vec<f32> {
    let rows = features.len().checked_div(dim).unwrap_or(0);
    let mut phi = features.to_vec();
    l2_normalize(&mut phi, dim);
    let mut mean = vec![0.0f64; dim];
    for row in phi.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    let n = rows.max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    mean.iter().map(|&m| (m * scale) as f32).collect()
}

/// Nearest-mean-of-exemplars scores: for every row of `features` (`rows × dim`) and every
/// unit `u` of `means` (one vector of `dim` values per unit, empty for a unit without
/// exemplars), `out[r·k + u] = −‖φ(x_r)/‖φ(x_r)‖ − μ_u‖` (f64, then rounded), and
/// [`NO_MEAN_SCORE`] for a unit without a mean. The highest score is the nearest mean.
pub fn ncm_scores(features: &[f32], dim: usize, means: &[Vec<f32>], out: &mut [f32]) -> Result<()> {
    let k = means.len();
    ensure!(dim > 0, "NCM: features of width 0");
    ensure!(
        features.len().is_multiple_of(dim),
        "NCM: {} feature values are not rows of {dim}",
        features.len()
    );
    let rows = features.len() / dim;
    ensure!(
        out.len() == rows * k,
        "NCM: {} scores for {rows} rows of {k} outputs",
        out.len()
    );
    for (u, m) in means.iter().enumerate() {
        ensure!(
            m.is_empty() || m.len() == dim,
            "NCM: the mean of unit {u} has {} values, the features {dim}",
            m.len()
        );
    }
    let mut phi = features.to_vec();
    l2_normalize(&mut phi, dim);
    for (row, scores) in phi.chunks_exact(dim).zip(out.chunks_exact_mut(k.max(1))) {
        for (s, m) in scores.iter_mut().zip(means) {
            *s = if m.is_empty() {
                NO_MEAN_SCORE
            } else {
                let d2: f64 = row
                    .iter()
                    .zip(m)
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum();
                -(d2.sqrt()) as f32
            };
        }
    }
    Ok(())
}

/// iCaRL's classification-and-distillation loss on one batch (Rebuffi et al. 2017, Algorithm
/// 3; Mammoth's `ICarl.get_loss`): sigmoid binary cross-entropy over the `seen` units, with
/// targets `δ(y_r = u)` for the current task's units (`new[u]`) and the old network's sigmoid
/// output `old_probs[r·k + u]` for the other seen units, averaged over rows × seen units
/// (PyTorch's `binary_cross_entropy_with_logits`, mean reduction). Adds the gradient
/// `(σ(z) − q) / (rows·|seen|)` into `cotangent` (`rows × k`, zero outside `seen`) and returns
/// the loss. `old_probs` may be empty when no unit is old.
pub struct DistillBce<'a> {
    /// Output units per row.
    pub k: usize,
    /// Units in the loss (every unit seen so far).
    pub seen: &'a [bool],
    /// Units of the current task (targets from the labels).
    pub new: &'a [bool],
    /// The old network's sigmoid outputs, `rows × k`, or empty.
    pub old_probs: &'a [f32],
}

impl DistillBce<'_> {
    /// The loss of `logits` (`rows × k`) with labels `targets`; see the type.
    pub fn apply(&self, logits: &[f32], targets: &[usize], cotangent: &mut [f32]) -> Result<f64> {
        let (k, rows) = (self.k, targets.len());
        ensure!(
            logits.len() == rows * k && cotangent.len() == rows * k,
            "iCaRL loss: {} logits and {} cotangent values for {rows} rows of {k} outputs",
            logits.len(),
            cotangent.len()
        );
        ensure!(
            self.seen.len() == k && self.new.len() == k,
            "iCaRL loss: unit sets of {} and {} flags for {k} outputs",
            self.seen.len(),
            self.new.len()
        );
        let has_old = (0..k).any(|u| self.seen[u] && !self.new[u]);
        ensure!(
            !has_old || self.old_probs.len() == rows * k,
            "iCaRL loss: {} old-network outputs for {rows} rows of {k} outputs",
            self.old_probs.len()
        );
        let n_seen = self.seen.iter().filter(|&&s| s).count();
        if rows == 0 || n_seen == 0 {
            return Ok(0.0);
        }
        let scale = 1.0 / (rows * n_seen) as f64;
        let mut q = vec![0.0f32; k];
        let mut total = 0.0;
        for (r, &y) in targets.iter().enumerate() {
            ensure!(
                y < k && self.seen[y],
                "iCaRL loss: row {r}'s label {y} is not among the units seen so far"
            );
            for (u, q) in q.iter_mut().enumerate() {
                *q = if self.new[u] {
                    f32::from(u8::from(u == y))
                } else if self.seen[u] {
                    self.old_probs[r * k + u]
                } else {
                    0.0
                };
            }
            total += binary_cross_entropy(
                &logits[r * k..(r + 1) * k],
                &q,
                |u| self.seen[u],
                scale,
                &mut cotangent[r * k..(r + 1) * k],
            );
        }
        Ok(total * scale)
    }
}

/// The logistic sigmoid, in f64 then rounded.
pub fn sigmoid(z: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(z)).exp())) as f32
}
