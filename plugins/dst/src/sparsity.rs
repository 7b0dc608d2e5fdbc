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
    erk_solve(shapes, density, &vec![false; shapes.len()])
        .unwrap_or_else(|| vec![1.0; shapes.len()])
}

/// [`erk_densities`] with the layers flagged in `dense` held at density 1 from the start
/// (`dense_first`), inside the budget: the other layers share what is left,
/// `density·Σ N_l − Σ_{l∈D} N_l`. `None` when the held layers alone exceed the budget (or take
/// all of it, leaving the others nothing).
pub fn erk_densities_with_dense(
    shapes: &[Vec<usize>],
    density: f64,
    dense: &[bool],
) -> Option<Vec<f64>> {
    erk_solve(shapes, density, dense)
}

/// The ERK solve from a starting dense set. Without a starting set it is only `None` when
/// nothing is left to solve for (every layer dense), which [`erk_densities`] maps to density 1
/// everywhere as before.
fn erk_solve(shapes: &[Vec<usize>], density: f64, held: &[bool]) -> Option<Vec<f64>> {
    let density = density.clamp(0.0, 1.0);
    let numel: Vec<f64> = shapes
        .iter()
        .map(|s| s.iter().product::<usize>() as f64)
        .collect();
    let score: Vec<f64> = shapes.iter().map(|s| erk_score(s)).collect();
    let forced = held.iter().any(|&h| h);
    let mut dense = held.to_vec();
    dense.resize(shapes.len(), false);
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
            // Every layer is dense (without held layers only possible at density 1).
            return if forced {
                None
            } else {
                Some(vec![1.0; shapes.len()])
            };
        }
        let eps = rhs / divisor;
        if forced && eps <= 0.0 {
            return None;
        }
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
            return Some(
                (0..shapes.len())
                    .map(|l| {
                        if dense[l] {
                            1.0
                        } else {
                            (eps * score[l]).clamp(0.0, 1.0)
                        }
                    })
                    .collect(),
            );
        }
    }
}

/// Uniform with the first layer dense inside the budget: the others get
/// `(density·Σ N_l − N_0) / Σ_{l≥1} N_l`. `None` when the first layer alone takes the whole
/// budget (or there is no other layer).
pub fn uniform_densities_dense_first(shapes: &[Vec<usize>], density: f64) -> Option<Vec<f64>> {
    let density = density.clamp(0.0, 1.0);
    let numel: Vec<f64> = shapes
        .iter()
        .map(|s| s.iter().product::<usize>() as f64)
        .collect();
    let (first, rest) = numel.split_first()?;
    let rest_total: f64 = rest.iter().sum();
    let left = density * (first + rest_total) - first;
    if rest_total <= 0.0 || left <= 0.0 {
        return None;
    }
    let d = (left / rest_total).min(1.0);
    Some(std::iter::once(1.0).chain(rest.iter().map(|_| d)).collect())
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
