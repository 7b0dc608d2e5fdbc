//! Class prototypes, the nearest-prototype divergence estimate and its mapping to relatedness,
//! and PAR's decision rule, as in the official code (`github.com/WenjinW/PAR`,
//! `src/approaches/par_v2.py`; Wang et al., CVPR 2023, arXiv 2304.05288).

/// Smallest distance used in the log-ratio (a sample exactly on a prototype would give a
/// division by zero or `log 0`; the original code has no guard).
pub const MIN_DISTANCE: f64 = 1e-12;

/// The prototypes of one task: `(class, mean feature vector)` sorted by class.
pub type Prototypes = Vec<(usize, Vec<f32>)>;

/// Mean feature vector of every class among `labels` (`feats` holds `labels.len()` rows of
/// `dim` values), sorted by class.
pub fn prototypes(feats: &[f32], dim: usize, labels: &[usize]) -> Prototypes {
    let mut classes: Vec<usize> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    classes
        .into_iter()
        .map(|c| {
            let mut sum = vec![0f64; dim];
            let mut n = 0usize;
            for (r, _) in labels.iter().enumerate().filter(|(_, &l)| l == c) {
                for (s, &v) in sum.iter_mut().zip(&feats[r * dim..(r + 1) * dim]) {
                    *s += v as f64;
                }
                n += 1;
            }
            (c, sum.iter().map(|s| (s / n as f64) as f32).collect())
        })
        .collect()
}

/// Euclidean distance.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

/// The divergence `D(t, j)` of new task `t` (samples `feats` with `labels`, prototypes `own`)
/// from old task `j` (prototypes `old`):
///
/// ```text
/// ρ(x)  = ‖φ(x) − μ_c^t‖                   (own-class prototype)
/// ν(x)  = min_{c' ∈ C_j} ‖φ(x) − μ_{c'}^j‖ (nearest prototype of task j)
/// D_c   = mean_{x ∈ c} log(ν(x) / ρ(x))
/// D     = Σ_c max(D_c, 0)                  (summed, not averaged, over classes)
/// ```
pub fn divergence(
    feats: &[f32],
    dim: usize,
    labels: &[usize],
    own: &Prototypes,
    old: &Prototypes,
) -> f64 {
    own.iter()
        .map(|(c, mu)| {
            let (mut sum, mut n) = (0f64, 0usize);
            for (r, _) in labels.iter().enumerate().filter(|(_, &l)| l == *c) {
                let x = &feats[r * dim..(r + 1) * dim];
                let rho = distance(x, mu).max(MIN_DISTANCE);
                let nu = old
                    .iter()
                    .map(|(_, m)| distance(x, m))
                    .fold(f64::INFINITY, f64::min)
                    .max(MIN_DISTANCE);
                sum += (nu / rho).ln();
                n += 1;
            }
            let d_c = if n > 0 { sum / n as f64 } else { 0.0 };
            d_c.max(0.0)
        })
        .sum()
}

/// Relatedness score `s = min(1 − exp(−2D), D)`, and `s = 1` when `D == 0` (the code's guard:
/// samples closer to old prototypes than to their own count as *unrelated*). Lower = more
/// related.
pub fn relatedness(d: f64) -> f64 {
    if d == 0.0 {
        1.0
    } else {
        (1.0 - (-2.0 * d).exp()).min(d)
    }
}

/// How an expert's score aggregates its tasks' relatedness scores (hyperparameter
/// `aggregate`: `mean`, `min` or `max`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clef_sdk::HParamChoice, serde::Serialize, serde::Deserialize,
)]
pub enum Aggregate {
    /// Mean (the code's default).
    Mean,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

impl Aggregate {
    /// Aggregates `scores` (non-empty).
    pub fn apply(self, scores: &[f64]) -> f64 {
        match self {
            Aggregate::Mean => scores.iter().sum::<f64>() / scores.len().max(1) as f64,
            Aggregate::Min => scores.iter().copied().fold(f64::INFINITY, f64::min),
            Aggregate::Max => scores.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// What PAR does with a new task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Regularisation, direct reuse: freeze `expert`, train only a new head (code 0).
    ReuseHead {
        /// The related expert.
        expert: usize,
    },
    /// Regularisation, transfer: fine-tune `expert` and a new head with distillation on the
    /// expert's old heads (code 1).
    Transfer {
        /// The related expert.
        expert: usize,
    },
    /// A new expert with `expert`'s architecture, trained from scratch (code 2).
    ReuseArch {
        /// The moderately related expert whose architecture is reused.
        expert: usize,
    },
    /// A new expert whose architecture comes from the search (code 3).
    Search,
    /// A new expert with the configured base architecture (the `new-expert` policy, code 4).
    NewBase,
}

impl Decision {
    /// The numeric code reported as `decision`.
    pub fn code(self) -> u8 {
        match self {
            Decision::ReuseHead { .. } => 0,
            Decision::Transfer { .. } => 1,
            Decision::ReuseArch { .. } => 2,
            Decision::Search => 3,
            Decision::NewBase => 4,
        }
    }
}

/// The decision rule. `best` is the most related expert and its score `S` (`None` before any
/// expert exists). `S ≤ alpha`: regularisation on it — direct reuse if the task has fewer than
/// `reuse_ratio` × the largest task the expert has seen, else transfer; `alpha < S ≤ beta`:
/// new expert with its architecture; `S > beta`: new expert from the search.
pub fn decide(
    best: Option<(usize, f64)>,
    alpha: f64,
    beta: f64,
    task_size: usize,
    largest_seen: usize,
    reuse_ratio: f64,
) -> Decision {
    match best {
        None => Decision::Search,
        Some((e, s)) if s <= alpha => {
            if (task_size as f64) < reuse_ratio * largest_seen as f64 {
                Decision::ReuseHead { expert: e }
            } else {
                Decision::Transfer { expert: e }
            }
        }
        Some((e, s)) if s <= beta => Decision::ReuseArch { expert: e },
        Some(_) => Decision::Search,
    }
}
