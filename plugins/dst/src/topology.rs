//! One topology update of one layer (drop the smallest-magnitude active weights, regrow as
//! many) and the cosine drop-fraction schedule.

use std::f64::consts::PI;

use clef_sdk::rng::SplitMix64;
use clef_sdk::HParamChoice;
use serde::{Deserialize, Serialize};

/// The growth criterion (`growth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Growth {
    /// Uniformly among the candidates.
    Random,
    /// Uniformly among candidates never active in this task's mask history; topped up
    /// uniformly from the other candidates when too few.
    Unfired,
    /// Largest dense-gradient magnitude `|∂L/∂w|` of the current batch (RigL).
    Gradient,
    /// Largest Adam moment ratio `|m / (√v + 1e-8)|` (sparse momentum).
    Momentum,
}

/// May growth pick positions frozen by earlier tasks? (`frozen_growth`)
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum FrozenGrowth {
    /// Yes; the position then reuses the earlier task's value (readable, never trained), in
    /// training and evaluation alike.
    Reuse,
    /// No: only free positions are candidates.
    Exclude,
    /// Yes, as the original code: training sees 0 there (the weight never trains), but
    /// evaluation uses the earlier task's value.
    Original,
}

/// Drop fraction after `step` of `total` steps of a task: cosine annealing from `start` to
/// `end`, `p = end + (start − end)·(1 + cos(π·step/total))/2` (`step` capped at `total`).
pub fn drop_fraction(step: usize, total: usize, start: f64, end: f64) -> f64 {
    let x = if total == 0 {
        1.0
    } else {
        step.min(total) as f64 / total as f64
    };
    end + (start - end) * (1.0 + (PI * x).cos()) / 2.0
}

/// What one layer update changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// Positions removed from the mask, in order of increasing magnitude.
    pub dropped: Vec<usize>,
    /// Positions added to the mask.
    pub grown: Vec<usize>,
}

/// Inputs of one layer update.
pub struct LayerView<'a> {
    /// The task's mask (updated in place).
    pub mask: &'a mut [bool],
    /// Positions ever active in this task (updated in place; for `Unfired`).
    pub fired: &'a mut [bool],
    /// Positions frozen by earlier tasks.
    pub frozen: &'a [bool],
    /// The magnitudes that decide what is dropped (the weights as the task's network uses them).
    pub values: &'a [f32],
    /// Growth scores for `Gradient` / `Momentum` (larger = grown first); ignored otherwise.
    pub scores: Option<&'a [f32]>,
}

/// Drops `k = ceil(fraction·nnz)` active positions with the smallest `|value|` (ties: lower
/// index first) and grows `min(k, #candidates)` among the inactive positions (just-dropped
/// ones included, frozen ones unless `frozen == Exclude`), by `growth`.
pub fn update_layer(
    v: LayerView<'_>,
    fraction: f64,
    growth: Growth,
    frozen: FrozenGrowth,
    rng: &mut SplitMix64,
) -> Change {
    let mut active: Vec<usize> = (0..v.mask.len()).filter(|&i| v.mask[i]).collect();
    let k = ((fraction * active.len() as f64).ceil() as usize).min(active.len());
    if k == 0 {
        return Change::default();
    }
    let key = |i: usize| (v.values[i].abs(), i);
    let by_magnitude = |a: &usize, b: &usize| {
        let (ma, ia) = key(*a);
        let (mb, ib) = key(*b);
        ma.total_cmp(&mb).then(ia.cmp(&ib))
    };
    if k < active.len() {
        active.select_nth_unstable_by(k - 1, by_magnitude);
    }
    let mut dropped = active[..k].to_vec();
    dropped.sort_by(by_magnitude);
    for &i in &dropped {
        v.mask[i] = false;
    }
    let mut candidates: Vec<usize> = (0..v.mask.len())
        .filter(|&i| !v.mask[i] && (frozen != FrozenGrowth::Exclude || !v.frozen[i]))
        .collect();
    let n = k.min(candidates.len());
    let grown = match growth {
        Growth::Random => rng.choose(&mut candidates, n),
        Growth::Unfired => {
            let (mut unfired, mut fired): (Vec<usize>, Vec<usize>) =
                candidates.into_iter().partition(|&i| !v.fired[i]);
            if unfired.len() >= n {
                rng.choose(&mut unfired, n)
            } else {
                let rest = n - unfired.len();
                let mut out = unfired;
                out.extend(rng.choose(&mut fired, rest));
                out
            }
        }
        Growth::Gradient | Growth::Momentum => {
            let scores = v.scores.unwrap_or(&[]);
            let score = |i: usize| scores.get(i).map_or(0.0, |s| s.abs());
            let by_score = |a: &usize, b: &usize| score(*b).total_cmp(&score(*a)).then(a.cmp(b));
            if n > 0 && n < candidates.len() {
                candidates.select_nth_unstable_by(n - 1, by_score);
            }
            let mut top = candidates[..n].to_vec();
            top.sort_by(by_score);
            top
        }
    };
    for &i in &grown {
        v.mask[i] = true;
        v.fired[i] = true;
    }
    Change { dropped, grown }
}
