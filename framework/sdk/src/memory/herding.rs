//! iCaRL's herding exemplar selection (Rebuffi, Kolesnikov, Sperl and Lampert 2017, "iCaRL:
//! Incremental classifier and representation learning", Algorithm 4): [`herding`].

/// Scales every row of `features` (`rows × dim`, row-major) to unit L2 norm, in f64 then
/// rounded; an all-zero row stays zero. iCaRL normalises features before herding and before
/// its nearest-mean-of-exemplars classifier.
pub fn l2_normalize(features: &mut [f32], dim: usize) {
    if dim == 0 {
        return;
    }
    for row in features.chunks_exact_mut(dim) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for v in row {
                *v = (f64::from(*v) / norm) as f32;
            }
        }
    }
}

/// Herding: the first `min(m, rows)` exemplars of one class in priority order, from the
/// class's feature vectors (`features`: `rows × dim`, row-major; `dim > 0`).
///
/// Each feature vector is L2-normalised (`φ`), `μ` is the mean of the normalised vectors, and
/// pick `k = 1, 2, ...` is the not yet picked row `x` minimising
/// `‖μ − (φ(x) + Σ_{j<k} φ(p_j)) / k‖` (Algorithm 4; the official iCaRL code does not
/// renormalise `μ` either). Computed in f64; ties go to the lowest row index, so the result
/// is deterministic. Keeping the first `m'` picks of a class is iCaRL's reduction
/// ([`SampleStore::keep_first_per_class`](super::SampleStore::keep_first_per_class)).
pub fn herding(features: &[f32], dim: usize, m: usize) -> Vec<usize> {
    if dim == 0 {
        return Vec::new();
    }
    let rows = features.len() / dim;
    let phi: Vec<Vec<f64>> = features
        .chunks_exact(dim)
        .map(|r| {
            let norm = r.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            r.iter().map(|&v| f64::from(v) * scale).collect()
        })
        .collect();
    let mut mu = vec![0.0f64; dim];
    for p in &phi {
        for (m, &v) in mu.iter_mut().zip(p) {
            *m += v;
        }
    }
    mu.iter_mut().for_each(|m| *m /= rows.max(1) as f64);

    let m = m.min(rows);
    let mut picked = vec![false; rows];
    let mut picks = Vec::with_capacity(m);
    let mut sum = vec![0.0f64; dim];
    for k in 1..=m {
        let inv = 1.0 / k as f64;
        let mut best: Option<(f64, usize)> = None;
        for (i, p) in phi.iter().enumerate() {
            if picked[i] {
                continue;
            }
            let dist: f64 = mu
                .iter()
                .zip(&sum)
                .zip(p)
                .map(|((&mu, &s), &v)| (mu - (s + v) * inv).powi(2))
                .sum();
            if best.is_none_or(|(d, _)| dist < d) {
                best = Some((dist, i));
            }
        }
        let Some((_, i)) = best else { break };
        picked[i] = true;
        picks.push(i);
        for (s, &v) in sum.iter_mut().zip(&phi[i]) {
            *s += v;
        }
    }
    picks
}
