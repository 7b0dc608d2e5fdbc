//! Statistics over seeds and between strategies: mean, sample standard deviation, 95%
//! confidence intervals (Student's t), paired comparisons on the same seeds (exact Wilcoxon
//! signed-rank test, paired bootstrap), ranks and Kendall's tau between rankings.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use crate::results::mean_std;

/// Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
    2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
    2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
    2.048407, 2.045230, 2.042272,
];

/// The 0.975 quantile of Student's t with `df` degrees of freedom (table up to 30, then the
/// Cornish-Fisher expansion around the normal quantile, accurate to 1e-5 there).
pub fn t_quantile_975(df: usize) -> f64 {
    assert!(df >= 1, "t distribution needs df >= 1");
    if df <= 30 {
        return T975[df - 1];
    }
    let z: f64 = 1.959_963_984_540_054;
    let n = df as f64;
    let (z3, z5, z7) = (z.powi(3), z.powi(5), z.powi(7));
    z + (z3 + z) / (4.0 * n)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * n * n)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * n * n * n)
}

/// Mean, sample standard deviation and 95% confidence interval of the mean over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 for one value.
    pub std: f64,
    /// Half width of the 95% t interval (`None` for fewer than two values).
    pub ci95: Option<f64>,
}

/// [`Summary`] of `xs` (`None` if empty).
pub fn summarize(xs: &[f64]) -> Option<Summary> {
    if xs.is_empty() {
        return None;
    }
    let (mean, std) = mean_std(xs);
    let n = xs.len();
    Some(Summary {
        n,
        mean,
        std,
        ci95: (n >= 2).then(|| t_quantile_975(n - 1) * std / (n as f64).sqrt()),
    })
}

/// Ranks of `values` with 1 for the largest; ties share the mean of their ranks. NaN ranks
/// last.
pub fn ranks_desc(values: &[f64]) -> Vec<f64> {
    let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| key(values[b]).total_cmp(&key(values[a])));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && key(values[idx[j + 1]]) == key(values[idx[i]]) {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Kendall's tau-b between two paired score lists (ties handled); `None` if undefined (fewer
/// than two items, or one list constant).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "kendall_tau needs paired lists");
    let n = a.len();
    let (mut conc, mut disc, mut ties_a, mut ties_b) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let da = (a[i] - a[j]).partial_cmp(&0.0)? as i64;
            let db = (b[i] - b[j]).partial_cmp(&0.0)? as i64;
            match (da, db) {
                (0, 0) => {}
                (0, _) => ties_a += 1,
                (_, 0) => ties_b += 1,
                _ if da == db => conc += 1,
                _ => disc += 1,
            }
        }
    }
    let n0 = (conc + disc + ties_a) as f64;
    let n1 = (conc + disc + ties_b) as f64;
    (n0 > 0.0 && n1 > 0.0).then(|| (conc - disc) as f64 / (n0 * n1).sqrt())
}

/// Result of a Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Wilcoxon {
    /// Non-zero differences used.
    pub n: usize,
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// Two-sided p-value (exact for n <= 20, normal approximation with tie correction above).
    pub p_value: f64,
}

/// Wilcoxon signed-rank test of the paired differences `a[i] - b[i]` (same seeds). Zero
/// differences are dropped; tied absolute differences share their mean rank. `None` if every
/// difference is zero.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Option<Wilcoxon> {
    assert_eq!(a.len(), b.len(), "wilcoxon needs paired lists");
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x - y)
        .filter(|v| *v != 0.0)
        .collect();
    let n = d.len();
    if n == 0 {
        return None;
    }
    let abs: Vec<f64> = d.iter().map(|v| v.abs()).collect();
    // ranks ascending = (n + 1) - descending ranks
    let ranks: Vec<f64> = ranks_desc(&abs)
        .iter()
        .map(|r| (n + 1) as f64 - r)
        .collect();
    let w_plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let p_value = if n <= 20 {
        // Exact null distribution over the 2^n sign patterns, in half-rank units.
        let units: Vec<usize> = ranks.iter().map(|r| (r * 2.0).round() as usize).collect();
        let total: usize = units.iter().sum();
        let mut counts = vec![0f64; total + 1];
        counts[0] = 1.0;
        for &u in &units {
            for s in (u..=total).rev() {
                counts[s] += counts[s - u];
            }
        }
        let all = 2f64.powi(n as i32);
        let w = (w_plus * 2.0).round() as usize;
        let lower: f64 = counts[..=w].iter().sum::<f64>() / all;
        let upper: f64 = counts[w..].iter().sum::<f64>() / all;
        (2.0 * lower.min(upper)).min(1.0)
    } else {
        let nf = n as f64;
        let mean = nf * (nf + 1.0) / 4.0;
        let mut tie = 0.0;
        let mut sorted = abs.clone();
        sorted.sort_by(f64::total_cmp);
        let mut i = 0;
        while i < n {
            let mut j = i;
            while j + 1 < n && sorted[j + 1] == sorted[i] {
                j += 1;
            }
            let t = (j - i + 1) as f64;
            tie += t * t * t - t;
            i = j + 1;
        }
        let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie / 48.0;
        let z = (w_plus - mean).abs() / var.sqrt();
        (2.0 * (1.0 - normal_cdf(z))).min(1.0)
    };
    Some(Wilcoxon { n, w_plus, p_value })
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26 through erf, |error| < 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Paired bootstrap of the mean difference `a - b` over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Observed mean difference.
    pub mean_diff: f64,
    /// 2.5th percentile of the resampled mean differences.
    pub lo: f64,
    /// 97.5th percentile.
    pub hi: f64,
    /// Share of resamples whose mean difference is <= 0 (a one-sided p-value for "a > b").
    pub p_not_greater: f64,
}

/// Paired bootstrap (`resamples` draws of the seeds with replacement, seeded by `seed`).
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<Bootstrap> {
    assert_eq!(a.len(), b.len(), "bootstrap needs paired lists");
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if d.is_empty() || resamples == 0 {
        return None;
    }
    let n = d.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| d[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some(Bootstrap {
        mean_diff: d.iter().sum::<f64>() / n as f64,
        lo: q(0.025),
        hi: q(0.975),
        p_not_greater: means.iter().filter(|m| **m <= 0.0).count() as f64 / resamples as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn summary_of_one_to_five_by_hand() {
        // mean 3, s = sqrt(2.5) = 1.581139, se = s / sqrt(5) = 0.707107, t(4) = 2.776445
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        close(s.mean, 3.0, 1e-12);
        close(s.std, 2.5f64.sqrt(), 1e-12);
        close(
            s.ci95.unwrap(),
            2.776445 * std::f64::consts::FRAC_1_SQRT_2,
            1e-6,
        );
        assert_eq!(summarize(&[0.5]).unwrap().ci95, None);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn t_quantiles_past_the_table_match_published_values() {
        close(t_quantile_975(40), 2.021075, 2e-5);
        close(t_quantile_975(60), 2.000298, 2e-5);
        close(t_quantile_975(120), 1.979930, 2e-5);
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks_desc(&[0.9, 0.8, 0.8, 0.5]), vec![1.0, 2.5, 2.5, 4.0]);
        assert_eq!(ranks_desc(&[0.1, f64::NAN, 0.3]), vec![2.0, 3.0, 1.0]);
    }

    #[test]
    fn kendall_tau_by_hand() {
        // pairs: (1,2)c (1,3)c (1,4)c (2,3)d (2,4)c (3,4)c -> (5 - 1) / 6
        close(
            kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap(),
            4.0 / 6.0,
            1e-12,
        );
        close(
            kendall_tau(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(),
            -1.0,
            1e-12,
        );
        // tau-b with a tie in b: conc 2 (1,3),(2,3); tie_b 1 (1,2) -> 2 / sqrt(3 * 2)
        close(
            kendall_tau(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]).unwrap(),
            2.0 / 6f64.sqrt(),
            1e-12,
        );
        assert_eq!(kendall_tau(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn wilcoxon_exact_by_hand() {
        // all five differences positive: W+ = 15, P(W+ >= 15) = 1/32, two-sided 2/32
        let w =
            wilcoxon_signed_rank(&[2.0, 4.0, 6.0, 8.0, 10.0], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!((w.n, w.w_plus), (5, 15.0));
        close(w.p_value, 0.0625, 1e-12);
        // d = 1, -2, 3, 4, -5, 6: W+ = 1+3+4+6 = 14; subsets of {1..6} with sum >= 14 are the
        // complements of those with sum <= 7: 18 of 64 -> two-sided 36/64
        let a = [1.0, -2.0, 3.0, 4.0, -5.0, 6.0];
        let w = wilcoxon_signed_rank(&a, &[0.0; 6]).unwrap();
        assert_eq!(w.w_plus, 14.0);
        close(w.p_value, 36.0 / 64.0, 1e-12);
        // zeros dropped; all zero -> undefined
        assert_eq!(wilcoxon_signed_rank(&[1.0, 2.0], &[1.0, 2.0]), None);
        // ties: |d| = 1, 1, 2 -> ranks 1.5, 1.5, 3; W+ = 1.5 + 3 = 4.5 (d = 1, -1, 2)
        let w = wilcoxon_signed_rank(&[1.0, -1.0, 2.0], &[0.0; 3]).unwrap();
        assert_eq!(w.w_plus, 4.5);
        // null sums in half units {0,3,3,6,6,9,9,12}: P(W+ >= 4.5) = 3/8 -> two-sided 6/8
        close(w.p_value, 0.75, 1e-12);
    }

    #[test]
    fn wilcoxon_normal_approximation_by_hand() {
        let a: Vec<f64> = (1..=21)
            .map(|i| if i % 3 == 0 { -(i as f64) } else { i as f64 })
            .collect();
        let w = wilcoxon_signed_rank(&a, &[0.0; 21]).unwrap();
        // negatives 3, 6, ..., 21 sum to 84 of 231: W+ = 147; mean 115.5, var 21*22*43/24;
        // z = 1.094866, two-sided p = erfc(z / sqrt 2) = 0.273575
        assert_eq!(w.w_plus, 147.0);
        close(w.p_value, 0.273_575, 1e-5);
        close(normal_cdf(1.959964), 0.975, 1e-6);
        close(normal_cdf(-1.0), 0.158_655_25, 1e-6);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_mean() {
        let a = [0.80, 0.82, 0.79, 0.85, 0.81];
        let b = [0.70, 0.75, 0.72, 0.71, 0.74];
        let x = paired_bootstrap(&a, &b, 2000, 1).unwrap();
        assert_eq!(Some(x), paired_bootstrap(&a, &b, 2000, 1));
        close(x.mean_diff, 0.09, 1e-12);
        assert!(x.lo <= x.mean_diff && x.mean_diff <= x.hi, "{x:?}");
        assert!(x.lo >= 0.05 && x.hi <= 0.13, "{x:?}");
        assert_eq!(x.p_not_greater, 0.0);
    }
}
