//! Per-layer densities (uniform and Erdős–Rényi-Kernel) and mask sampling. Randomness comes
//! from [`SplitMix64`], seeded from the host's per-trial RNG at each use, so runs depend only
//! on the trial seed.

use clef_sdk::rng::SplitMix64;
use clef_sdk::HParamChoice;
use serde::{Deserialize, Serialize};

/// Erdős–Rényi-Kernel raw score of a tensor: `sum(shape) / prod(shape)`, e.g.
/// `(n_out + n_in) / (n_out * n_in)` for a dense layer (RigL's `erk_power_scale` = 1).
pub fn erk_score(shape: &[usize]) -> f64 {
    let n: usize = shape.iter().product();
    if n == 0 {
        return 0.0;
    }
    shape.iter().sum::<usize>() as f64 / n as f64
}

/// Uniform: every layer gets the global density `density`.
pub fn uniform_densities(shapes: &[Vec<usize>], density: f64) -> Vec<f64> {
    vec![density.clamp(0.0, 1.0); shapes.len()]
}

/// ERK densities for a global density `density` (RigL, Evci et al. 2020,
/// `get_sparsities_erdos_renyi`): `d_l = ε·r_l` with `ε` chosen so that
/// `Σ d_l·N_l = density·Σ N_l`. While the layer with the largest score would get `ε·r_l > 1`,
/// that layer (and any with the same score) is made dense and `ε` is re-solved over the rest:
///
/// ```text
/// ε = (density·Σ_{l∉D} N_l − (1 − density)·Σ_{l∈D} N_l) / Σ_{l∉D} r_l·N_l
/// ```
pub fn erk_densities(shapes: &[Vec<usize>], density: f64) -> Vec<f64> {
    let density = density.clamp(0.0, 1.0);
    let numel: Vec<f64> = shapes
        .iter()
        .map(|s| s.iter().product::<usize>() as f64)
        .collect();
    let score: Vec<f64> = shapes.iter().map(|s| erk_score(s)).collect();
    let mut dense = vec![false; shapes.len()];
    loop {
        let (mut rhs, mut divisor) = (0.0, 0.0);
        for l in 0..shapes.len() {
            if dense[l] {
                rhs -= (1.0 - density) * numel[l];
            } else {
                rhs += density * numel[l];
                divisor += score[l] * numel[l];
            }
        }
        if divisor <= 0.0 {
            // Every layer is dense (only possible at density 1).
            return vec![1.0; shapes.len()];
        }
        let eps = rhs / divisor;
        let max_score = (0..shapes.len())
            .filter(|&l| !dense[l])
            .map(|l| score[l])
            .fold(f64::NEG_INFINITY, f64::max);
        if eps * max_score > 1.0 {
            for l in 0..shapes.len() {
                if !dense[l] && score[l] == max_score {
                    dense[l] = true;
                }
            }
        } else {
            return (0..shapes.len())
                .map(|l| {
                    if dense[l] {
                        1.0
                    } else {
                        (eps * score[l]).clamp(0.0, 1.0)
                    }
                })
                .collect();
        }
    }
}

/// Active weights of a layer of `numel` scalars at density `d` with exact sampling:
/// `round(d·numel)`.
pub fn exact_count(d: f64, numel: usize) -> usize {
    ((d * numel as f64).round() as usize).min(numel)
}

/// How a mask is drawn from a layer density (`sampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Sampling {
    /// Exactly `round(d·N)` positions, uniformly without replacement.
    Exact,
    /// Each position independently with probability `d` (the original code).
    Bernoulli,
}

/// A random mask of `numel` positions at density `d`.
pub fn sample_mask(numel: usize, d: f64, sampling: Sampling, rng: &mut SplitMix64) -> Vec<bool> {
    let mut mask = vec![false; numel];
    match sampling {
        Sampling::Exact => {
            let k = exact_count(d, numel);
            let mut pool: Vec<usize> = (0..numel).collect();
            for i in rng.choose(&mut pool, k) {
                mask[i] = true;
            }
        }
        Sampling::Bernoulli => {
            for m in &mut mask {
                *m = rng.f64() < d;
            }
        }
    }
    mask
}
