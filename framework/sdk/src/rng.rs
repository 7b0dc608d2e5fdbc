//! [`SplitMix64`]: the SDK's one small, fast, reproducible random stream for plugins.
//!
//! Seed it from the host's per-trial stream ([`SplitMix64::from_ctx`], which draws one
//! `rng_u64`) so a run depends only on the trial seed, or from a constant in tests. It is
//! Steele, Lea and Flood's SplitMix64 ("Fast splittable pseudorandom number generators",
//! OOPSLA 2014) with Lemire's multiply-shift for bounded integers ("Fast random integer
//! generation in an interval", 2019).

use serde::{Deserialize, Serialize};

use crate::Ctx;

/// SplitMix64; see the [module docs](self). Serialisable, so a strategy with
/// `type State = SerdeState` checkpoints its position too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A stream starting at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A stream seeded by one draw of the host's per-trial RNG.
    pub fn from_ctx(ctx: &mut Ctx<'_>) -> Self {
        Self(ctx.rng_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` (53 random bits).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "SplitMix64::below(0): empty range");
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// `k` distinct elements of `pool` drawn uniformly (partial Fisher–Yates; `pool` is
    /// reordered). Returns all of `pool` if `k >= pool.len()`.
    pub fn choose(&mut self, pool: &mut [usize], k: usize) -> Vec<usize> {
        let k = k.min(pool.len());
        for i in 0..k {
            let j = i + self.below(pool.len() - i);
            pool.swap(i, j);
        }
        pool[..k].to_vec()
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// `k` distinct indices drawn uniformly from `0..n` (every `k`-subset equally likely), sorted:
/// a partial Fisher–Yates shuffle; `below(m)` must return a uniform integer in `0..m` (e.g.
/// `|m| ctx.rng_below(m)`). All of `0..n` when `k >= n`. The sample subsets of EWC's Fisher,
/// MAS's importance and A-GEM's memory.
pub fn choose_subset(n: usize, k: usize, mut below: impl FnMut(usize) -> usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + below(n - i);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_sequence() {
        // First outputs of splitmix64 seeded with 0 (Vigna's reference C code).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SplitMix64::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[r.below(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn choose_and_shuffle_are_permutations() {
        let mut r = SplitMix64::new(3);
        let mut pool: Vec<usize> = (0..10).collect();
        let mut picked = r.choose(&mut pool, 4);
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked.len(), 4);
        let mut v: Vec<usize> = (0..10).collect();
        r.shuffle(&mut v);
        assert_ne!(v, (0..10).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn subsets_are_distinct_sorted_in_range_and_uniform() {
        let mut rng = SplitMix64::new(3);
        assert_eq!(choose_subset(5, 9, |m| rng.below(m)), vec![0, 1, 2, 3, 4]);
        assert_eq!(choose_subset(5, 5, |m| rng.below(m)), vec![0, 1, 2, 3, 4]);
        assert!(choose_subset(5, 0, |m| rng.below(m)).is_empty());
        let (n, k, runs) = (20, 5, 20_000);
        let mut hits = vec![0usize; n];
        for _ in 0..runs {
            let s = choose_subset(n, k, |m| rng.below(m));
            assert_eq!(s.len(), k);
            assert!(s.windows(2).all(|w| w[0] < w[1]), "{s:?}");
            assert!(s.iter().all(|&i| i < n));
            for i in s {
                hits[i] += 1;
            }
        }
        // Each index is included with probability k/n.
        let p = k as f64 / n as f64;
        let sd = (runs as f64 * p * (1.0 - p)).sqrt();
        for h in hits {
            assert!((h as f64 - runs as f64 * p).abs() < 5.0 * sd, "{h}");
        }
    }
}
