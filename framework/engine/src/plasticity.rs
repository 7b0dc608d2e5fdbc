//! Loss-of-plasticity diagnostics: what the network looks like at the end of each task.
//!
//! Pure functions over a network's parameters and its features (penultimate-layer activations)
//! on a probe batch; the trainer records them per task when `[diagnostics]` is enabled.
//!
//! - **Dormant units** (Sokar et al. 2023, ReDO): unit `i` of a layer with activations `h` has
//!   score `s_i = mean_x |h_i(x)| / ((1/H) Σ_k mean_x |h_k(x)|)` and is dormant if `s_i ≤ τ`
//!   (`τ = 0`: dead units). Measured on the features (last hidden layer). When the features
//!   are a convolutional feature map (`ModelSpec::feature_map`: `c` channels of `p` positions)
//!   the unit is the **channel**, with `mean_x |h_i(x)|` also averaged over the `p` spatial
//!   positions, as ReDO scores conv layers (`mean |activation|` over the batch and the spatial
//!   axes). srank and effective rank stay on the features as the head reads them (the
//!   flattened map; see `docs/metrics.md`).
//! - **srank** (Kumar et al. 2020, used by Kumar et al. 2023 "L2 Init"): the smallest `k` with
//!   `Σ_{i≤k} σ_i / Σ_i σ_i ≥ 1 − δ` over the singular values of the feature matrix, `δ = 0.01`.
//! - **Effective rank** (Roy & Vetterli 2007): `exp(−Σ p_i ln p_i)` with `p_i = σ_i / Σ σ`.
//! - **Largest singular value** `σ_max(W_l)` and **mean |w|** of every weight matrix (the
//!   quantities the spectral-regularisation paper tracks).
//!
//! Singular values come from `faer`'s SVD in f64.

use clef_backend::{ParamRole, ParamStore};
use faer::Mat;
use serde::{Deserialize, Serialize};

/// Per-task diagnostics recorded in a trial's results (one entry per task, in task order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDiagnostics {
    /// Accuracy on (a probe subset of) the task's own training data at the end of the task:
    /// can the network still fit what it was just trained on?
    pub train_accuracy: f64,
    /// Fraction of dormant feature units (score ≤ `dormant_threshold`); channels when the
    /// features are a conv feature map.
    pub dormant_fraction: f64,
    /// srank of the feature matrix on the probe batch.
    pub feature_srank: usize,
    /// Effective rank of the feature matrix on the probe batch.
    pub feature_effective_rank: f64,
    /// Largest singular value of each weight matrix, input layer first.
    pub sigma_max: Vec<f64>,
    /// Mean absolute value of each weight matrix, input layer first.
    pub mean_abs_weight: Vec<f64>,
}

/// Fraction of the `units` columns of `features` (`rows x units`, row-major) that are dormant:
/// ReDO score at most `tau` (see the module docs). If every unit is silent, all are dormant.
pub fn dormant_fraction(features: &[f32], rows: usize, units: usize, tau: f64) -> f64 {
    dormant_channel_fraction(features, rows, units, 1, tau)
}

/// Fraction of the `channels` of a feature map that are dormant: each row of `features` holds
/// `channels` blocks of `positions` values (channel-major, `rows x channels·positions`), and a
/// channel's ReDO score uses its mean `|h|` over the rows *and* its positions. With
/// `positions = 1` this is [`dormant_fraction`]. If every channel is silent, all are dormant.
pub fn dormant_channel_fraction(
    features: &[f32],
    rows: usize,
    channels: usize,
    positions: usize,
    tau: f64,
) -> f64 {
    let units = channels * positions;
    if units == 0 || rows == 0 {
        return 0.0;
    }
    // Sums of |h| per channel; every channel has the same count (rows·positions), so the
    // ratio to the layer mean needs no division by it.
    let mut mean_abs = vec![0.0f64; channels];
    for row in features.chunks_exact(units).take(rows) {
        for (m, block) in mean_abs.iter_mut().zip(row.chunks_exact(positions)) {
            *m += block.iter().map(|v| f64::from(v.abs())).sum::<f64>();
        }
    }
    let units = channels;
    let layer_mean = mean_abs.iter().sum::<f64>() / units as f64;
    if layer_mean == 0.0 {
        return 1.0;
    }
    let dormant = mean_abs.iter().filter(|&&m| m / layer_mean <= tau).count();
    dormant as f64 / units as f64
}

/// Singular values (descending) of the `rows x cols` row-major matrix `data`, in f64.
pub fn singular_values(data: &[f32], rows: usize, cols: usize) -> Result<Vec<f64>, String> {
    if rows == 0 || cols == 0 {
        return Ok(Vec::new());
    }
    if data.len() != rows * cols {
        return Err(format!(
            "matrix has {} values, expected {rows} x {cols}",
            data.len()
        ));
    }
    let m = Mat::<f64>::from_fn(rows, cols, |i, j| f64::from(data[i * cols + j]));
    m.singular_values()
        .map_err(|e| format!("SVD did not converge: {e:?}"))
}

/// srank: the smallest `k` such that the `k` largest singular values hold at least `1 − delta`
/// of their sum (0 for an all-zero or empty matrix). `sv` must be sorted descending.
pub fn srank(sv: &[f64], delta: f64) -> usize {
    let total: f64 = sv.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    for (k, s) in sv.iter().enumerate() {
        acc += s;
        if acc / total >= 1.0 - delta {
            return k + 1;
        }
    }
    sv.len()
}

/// Effective rank `exp(entropy(σ / Σσ))` (0 for an all-zero or empty matrix).
pub fn effective_rank(sv: &[f64]) -> f64 {
    let total: f64 = sv.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let entropy: f64 = sv
        .iter()
        .map(|s| s / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    entropy.exp()
}

/// `(σ_max, mean |w|)` of every weight matrix of `params`, input layer first. A conv weight
/// `[out, in, kh, kw]` counts as the matrix `[out, in * kh * kw]`; 1-D weights (norm scales)
/// and buffers are skipped.
pub fn weight_stats(params: &ParamStore) -> Result<Vec<(f64, f64)>, String> {
    let mut out = Vec::new();
    for (i, info) in params.infos().iter().enumerate() {
        if info.role != ParamRole::Weight || info.shape.len() < 2 {
            continue;
        }
        let w = params.value(i);
        let rows = info.shape[0];
        let cols = info.shape[1..].iter().product();
        let sigma = singular_values(w, rows, cols)
            .map_err(|e| format!("{}: {e}", info.name))?
            .first()
            .copied()
            .unwrap_or(0.0);
        let mean_abs = w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w.len().max(1) as f64;
        out.push((sigma, mean_abs));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clef_backend::{Activation, Init, MlpSpec};

    #[test]
    fn dormant_fraction_follows_the_redo_score_on_a_hand_worked_matrix() {
        // 4 rows x 3 units: unit 0 always 0 (dead), unit 1 mean |h| 0.05, unit 2 mean |h| 1.
        // Layer mean (0 + 0.05 + 1) / 3 = 0.35; scores 0, 0.1429, 2.857.
        let f = [
            0.0, 0.1, 1.0, //
            0.0, -0.1, 2.0, //
            0.0, 0.0, 0.5, //
            0.0, 0.0, 0.5,
        ];
        assert_eq!(dormant_fraction(&f, 4, 3, 0.0), 1.0 / 3.0);
        assert_eq!(dormant_fraction(&f, 4, 3, 0.1), 1.0 / 3.0);
        assert_eq!(dormant_fraction(&f, 4, 3, 0.15), 2.0 / 3.0);
        assert_eq!(dormant_fraction(&f, 4, 3, 3.0), 1.0);
        assert_eq!(dormant_fraction(&[0.0; 6], 2, 3, 0.0), 1.0);
    }

    #[test]
    fn dormant_channels_pool_over_positions_on_a_hand_worked_map() {
        // 2 rows x 3 channels x 2 positions (channel-major per row).
        // Channel 0: |h| = 0, 0 | 0, 0        -> mean 0      (dead)
        // Channel 1: |h| = 0.2, 0 | 0, 0.2    -> mean 0.1
        // Channel 2: |h| = 1, 3 | 2, 2        -> mean 2
        // Layer mean (0 + 0.1 + 2) / 3 = 0.7; scores 0, 0.142857, 2.857.
        let f = [
            0.0, 0.0, 0.2, 0.0, 1.0, 3.0, //
            0.0, 0.0, 0.0, -0.2, 2.0, -2.0,
        ];
        assert_eq!(dormant_channel_fraction(&f, 2, 3, 2, 0.0), 1.0 / 3.0);
        assert_eq!(dormant_channel_fraction(&f, 2, 3, 2, 0.14), 1.0 / 3.0);
        assert_eq!(dormant_channel_fraction(&f, 2, 3, 2, 0.15), 2.0 / 3.0);
        assert_eq!(dormant_channel_fraction(&f, 2, 3, 2, 2.9), 1.0);
        // positions = 1 is the unit-level score over the 6 columns: means 0, 0, 0.1, 0.1,
        // 1.5, 2.5, layer mean 0.7: 2 dead at tau 0, 4 at tau 0.15.
        assert_eq!(dormant_channel_fraction(&f, 2, 6, 1, 0.0), 2.0 / 6.0);
        assert_eq!(dormant_fraction(&f, 2, 6, 0.15), 4.0 / 6.0);
        // A channel with one dead position is not dormant: channel 0 has positions means 0 and
        // 4, channel 1 means 1 and 1. Per channel: means 2, 1, layer 1.5, none at tau 0.5; per
        // position: 0, 4, 1, 1, layer 1.5, one unit dead.
        let g = [0.0, 4.0, 1.0, 1.0];
        assert_eq!(dormant_channel_fraction(&g, 1, 2, 2, 0.5), 0.0);
        assert_eq!(dormant_fraction(&g, 1, 4, 0.0), 0.25);
        assert_eq!(dormant_channel_fraction(&[0.0; 8], 2, 2, 2, 0.0), 1.0);
    }

    #[test]
    fn srank_and_effective_rank_match_hand_computed_values() {
        // Sum 4.51: cumulative shares 0.665, 0.887, 0.9978 -> 3 values reach 0.99.
        let sv = [3.0, 1.0, 0.5, 0.01];
        assert_eq!(srank(&sv, 0.01), 3);
        assert_eq!(srank(&sv, 0.2), 2);
        assert_eq!(srank(&[0.0, 0.0], 0.01), 0);
        // Equal singular values: effective rank = their number; one value: 1.
        assert!((effective_rank(&[2.0; 5]) - 5.0).abs() < 1e-12);
        assert!((effective_rank(&[7.0, 0.0]) - 1.0).abs() < 1e-12);
        // p = (0.75, 0.25): exp(-(0.75 ln 0.75 + 0.25 ln 0.25)) = 1.7548...
        let want = (-(0.75f64 * 0.75f64.ln() + 0.25 * 0.25f64.ln())).exp();
        assert!((effective_rank(&[3.0, 1.0]) - want).abs() < 1e-12);
    }

    #[test]
    fn singular_values_of_known_matrices() {
        // diag(3, 4) padded with a zero row: singular values 4, 3.
        let sv = singular_values(&[3.0, 0.0, 0.0, 4.0, 0.0, 0.0], 3, 2).unwrap();
        assert!(
            (sv[0] - 4.0).abs() < 1e-9 && (sv[1] - 3.0).abs() < 1e-9,
            "{sv:?}"
        );
        // Rank one u vᵀ with |u| = 5 (3, 4) and |v| = 2 (2, 0, 0): σ = 10, then zeros.
        let (u, v) = ([3.0f32, 4.0], [2.0f32, 0.0, 0.0]);
        let m: Vec<f32> = u
            .iter()
            .flat_map(|a| v.iter().map(move |b| a * b))
            .collect();
        let sv = singular_values(&m, 2, 3).unwrap();
        assert!((sv[0] - 10.0).abs() < 1e-9 && sv[1].abs() < 1e-9, "{sv:?}");
        assert!(singular_values(&[1.0; 5], 2, 3).is_err());
    }

    #[test]
    fn weight_stats_cover_every_weight_matrix() {
        let spec = MlpSpec {
            input: 6,
            hidden: vec![4],
            output: 3,
            activation: Activation::Relu,
            init: Init::TorchDefault,
        };
        let mut p = ParamStore::init_mlp(&spec, 1);
        // Make the first weight matrix 2 * identity-like: rows e_i scaled by 2 -> σ_max 2.
        let w0 = p.value_mut(0);
        w0.fill(0.0);
        for i in 0..4 {
            w0[i * 6 + i] = 2.0;
        }
        let stats = weight_stats(&p).unwrap();
        assert_eq!(
            stats.len(),
            2,
            "one entry per weight matrix, biases skipped"
        );
        assert!((stats[0].0 - 2.0).abs() < 1e-9);
        assert!((stats[0].1 - 8.0 / 24.0).abs() < 1e-9);
        let w1 = p.value(2);
        let mean = w1.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w1.len() as f64;
        assert!((stats[1].1 - mean).abs() < 1e-12);
        let sv = singular_values(w1, 3, 4).unwrap();
        assert!((stats[1].0 - sv[0]).abs() < 1e-12);
    }

    #[test]
    fn weight_stats_read_conv_weights_as_matrices_and_skip_norms_and_buffers() {
        use clef_backend::{ConvNetSpec, ImageShape, ModelSpec, Norm};
        let spec = ModelSpec::ConvNet(ConvNetSpec {
            input: ImageShape {
                channels: 2,
                height: 4,
                width: 4,
            },
            channels: vec![3],
            hidden: vec![],
            output: 2,
            norm: Norm::Batch,
            activation: Activation::Relu,
            init: Init::TorchDefault,
            pool: Default::default(),
        });
        let p = ParamStore::init(&spec, 5);
        let stats = weight_stats(&p).unwrap();
        // convs.0.weight [3, 2, 3, 3] as a 3 x 18 matrix, then the head; not norms.0.weight.
        assert_eq!(stats.len(), 2);
        let w = p.value(p.index_of("convs.0.weight").unwrap());
        let sigma = singular_values(w, 3, 18).unwrap()[0];
        assert!((stats[0].0 - sigma).abs() < 1e-12);
    }
}
