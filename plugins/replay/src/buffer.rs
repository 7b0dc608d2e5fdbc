//! The reservoir-sampled replay memory (Vitter's Algorithm R), independent of the host.

use clef_sdk::{ensure, Result};
use serde::{Deserialize, Serialize};

/// Where Algorithm R puts the next item of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The memory is not full yet: append the item.
    Append,
    /// Replace the item in this slot.
    Replace(usize),
    /// Drop the item.
    Skip,
}

/// Algorithm R's decision for the item with 0-based stream index `seen` in a memory of
/// `capacity` slots: the first `capacity` items are kept; item `n ≥ capacity` draws
/// `j = below(n + 1)` uniformly in `0..=n` and replaces slot `j` if `j < capacity`. After any
/// number `N ≥ capacity` of items, every item of the stream is in the memory with probability
/// `capacity / N` (Vitter 1985).
pub fn reservoir_slot(seen: u64, capacity: usize, below: impl FnOnce(usize) -> usize) -> Slot {
    match usize::try_from(seen) {
        Ok(n) if n < capacity => Slot::Append,
        _ if capacity == 0 => Slot::Skip,
        _ => {
            let range = usize::try_from(seen.saturating_add(1)).unwrap_or(usize::MAX);
            let j = below(range);
            if j < capacity {
                Slot::Replace(j)
            } else {
                Slot::Skip
            }
        }
    }
}

/// A fixed-capacity memory of samples (inputs, target, task), filled by reservoir sampling.
///
/// Storage is flat: `capacity × dim` floats at most. Serialisable (the inputs as raw floats);
/// deserialising checks that the fields agree with each other ([`Stored`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Stored")]
pub struct ReplayBuffer {
    capacity: usize,
    dim: usize,
    /// Items offered so far (the reservoir counter).
    seen: u64,
    #[serde(with = "clef_sdk::state::tensor")]
    x: Vec<f32>,
    targets: Vec<usize>,
    tasks: Vec<usize>,
}

/// A [`ReplayBuffer`] as read from a checkpoint, before its consistency checks (same fields,
/// same order, same encoding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Maximum number of samples.
    pub capacity: usize,
    /// Features per sample.
    pub dim: usize,
    /// Items offered so far.
    pub seen: u64,
    /// Inputs, `len × dim`, row-major.
    #[serde(with = "clef_sdk::state::tensor")]
    pub x: Vec<f32>,
    /// Target of each held sample.
    pub targets: Vec<usize>,
    /// Task of each held sample.
    pub tasks: Vec<usize>,
}

impl TryFrom<Stored> for ReplayBuffer {
    type Error = String;

    /// Accepts a memory whose sizes agree: at most `capacity` samples, as many targets as
    /// tasks and `dim` inputs each, and a counter consistent with Algorithm R (every offered
    /// sample kept until the memory is full).
    fn try_from(s: Stored) -> std::result::Result<Self, String> {
        let len = s.targets.len();
        if s.tasks.len() != len {
            return Err(format!(
                "replay state: {len} targets but {} task ids",
                s.tasks.len()
            ));
        }
        if len > s.capacity {
            return Err(format!(
                "replay state: {len} samples in a memory of {}",
                s.capacity
            ));
        }
        if s.seen < len as u64 || (len != s.capacity && s.seen != len as u64) {
            return Err(format!(
                "replay state: {len} samples held after {} offered (capacity {})",
                s.seen, s.capacity
            ));
        }
        if Some(s.x.len()) != len.checked_mul(s.dim) {
            return Err(format!(
                "replay state: {} input values for {len} samples of {} features",
                s.x.len(),
                s.dim
            ));
        }
        Ok(Self {
            capacity: s.capacity,
            dim: s.dim,
            seen: s.seen,
            x: s.x,
            targets: s.targets,
            tasks: s.tasks,
        })
    }
}

impl ReplayBuffer {
    /// An empty memory of `capacity` samples of `dim` features.
    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            capacity,
            dim,
            seen: 0,
            x: Vec::new(),
            targets: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// Maximum number of samples.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Features per sample.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Samples offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the memory holds no sample.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Inputs of sample `i`.
    pub fn x(&self, i: usize) -> &[f32] {
        &self.x[i * self.dim..(i + 1) * self.dim]
    }

    /// Target of sample `i`.
    pub fn target(&self, i: usize) -> usize {
        self.targets[i]
    }

    /// Task of sample `i`.
    pub fn task(&self, i: usize) -> usize {
        self.tasks[i]
    }

    /// Number of samples of each task (index = task).
    pub fn per_task(&self) -> Vec<usize> {
        let mut counts = vec![0; self.tasks.iter().max().map_or(0, |&t| t + 1)];
        for &t in &self.tasks {
            counts[t] += 1;
        }
        counts
    }

    /// Offers one sample of the stream to the reservoir (`below(n)`: uniform in `0..n`).
    pub fn offer(
        &mut self,
        x: &[f32],
        target: usize,
        task: usize,
        below: impl FnOnce(usize) -> usize,
    ) -> Result<()> {
        ensure!(
            x.len() == self.dim,
            "replay memory: a sample has {} features, the memory holds {}",
            x.len(),
            self.dim
        );
        match reservoir_slot(self.seen, self.capacity, below) {
            Slot::Append => {
                self.x.extend_from_slice(x);
                self.targets.push(target);
                self.tasks.push(task);
            }
            Slot::Replace(j) => {
                self.x[j * self.dim..(j + 1) * self.dim].copy_from_slice(x);
                self.targets[j] = target;
                self.tasks[j] = task;
            }
            Slot::Skip => {}
        }
        self.seen += 1;
        Ok(())
    }

    /// `min(k, len)` distinct sample indices, uniformly at random (partial Fisher–Yates), in
    /// random order.
    pub fn sample(&self, k: usize, mut below: impl FnMut(usize) -> usize) -> Vec<usize> {
        let n = self.len();
        let k = k.min(n);
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = i + below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clef_sdk::rng::SplitMix64 as SplitMix;

    #[test]
    fn algorithm_r_draws_from_zero_to_n_inclusive() {
        assert_eq!(reservoir_slot(0, 3, |_| panic!("no draw")), Slot::Append);
        assert_eq!(reservoir_slot(2, 3, |_| panic!("no draw")), Slot::Append);
        // Item n = 3 draws in 0..4 and replaces slot j < 3.
        assert_eq!(
            reservoir_slot(3, 3, |m| {
                assert_eq!(m, 4);
                2
            }),
            Slot::Replace(2)
        );
        assert_eq!(
            reservoir_slot(9, 3, |m| {
                assert_eq!(m, 10);
                3
            }),
            Slot::Skip
        );
        assert_eq!(reservoir_slot(5, 0, |_| panic!("no draw")), Slot::Skip);
    }

    #[test]
    fn keeps_exactly_capacity_samples_once_the_stream_is_longer() {
        let mut rng = SplitMix::new(1);
        let mut buf = ReplayBuffer::new(10, 2);
        for i in 0..35 {
            buf.offer(&[i as f32, -(i as f32)], i, i / 10, |n| rng.below(n))
                .unwrap();
            assert_eq!(buf.len(), (i + 1).min(10));
            assert_eq!(buf.seen(), i as u64 + 1);
        }
        // Every held sample is intact (inputs, target and task belong together).
        for s in 0..buf.len() {
            let t = buf.target(s);
            assert_eq!(buf.x(s), &[t as f32, -(t as f32)]);
            assert_eq!(buf.task(s), t / 10);
        }
        assert_eq!(buf.per_task().iter().sum::<usize>(), 10);
        assert!(buf.offer(&[1.0], 0, 0, |n| rng.below(n)).is_err());
    }

    #[test]
    fn every_stream_position_is_kept_with_probability_m_over_n() {
        // N = 2000 items into M = 100 slots, 2000 independent runs (fixed seed, so the test
        // is deterministic): each position's inclusion count is Binomial(R, M/N) with mean 100
        // and sd ≈ 9.75.
        let (n, m, runs) = (2000usize, 100usize, 2000usize);
        let mut rng = SplitMix::new(0x5EED);
        let mut counts = vec![0usize; n];
        for _ in 0..runs {
            let mut buf = ReplayBuffer::new(m, 1);
            for pos in 0..n {
                buf.offer(&[pos as f32], pos, 0, |k| rng.below(k)).unwrap();
            }
            assert_eq!(buf.len(), m);
            for s in 0..m {
                counts[buf.target(s)] += 1;
            }
        }
        let p = m as f64 / n as f64;
        let mean = runs as f64 * p;
        let sd = (runs as f64 * p * (1.0 - p)).sqrt();
        let z: Vec<f64> = counts.iter().map(|&c| (c as f64 - mean) / sd).collect();
        // No position is far off (P(|Z| > 5) ≈ 6e-7 per position).
        let worst = z.iter().cloned().fold(0.0f64, |a, b| a.max(b.abs()));
        assert!(worst < 5.0, "a position's inclusion is {worst} sd off");
        // Chi-square over all positions: mean n, sd sqrt(2n).
        let chi2: f64 = z.iter().map(|v| v * v).sum();
        assert!(
            (chi2 - n as f64).abs() < 5.0 * (2.0 * n as f64).sqrt(),
            "chi-square {chi2} for {n} positions"
        );
        // No drift along the stream: the first and last 200 positions have the same mean.
        let avg = |r: std::ops::Range<usize>| {
            let len = r.len() as f64;
            counts[r].iter().sum::<usize>() as f64 / len
        };
        let se = sd / 200f64.sqrt();
        assert!((avg(0..200) - avg(n - 200..n)).abs() < 5.0 * se * 2f64.sqrt());
    }

    #[test]
    fn sampling_is_without_replacement_and_uniform() {
        let mut rng = SplitMix::new(9);
        let mut buf = ReplayBuffer::new(8, 1);
        for i in 0..8 {
            buf.offer(&[i as f32], i, 0, |n| rng.below(n)).unwrap();
        }
        assert_eq!(buf.sample(0, |n| rng.below(n)), Vec::<usize>::new());
        let mut all = buf.sample(20, |n| rng.below(n));
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        let runs = 40_000;
        let mut hits = [0usize; 8];
        for _ in 0..runs {
            let s = buf.sample(3, |n| rng.below(n));
            assert_eq!(s.len(), 3);
            assert!(s[0] != s[1] && s[0] != s[2] && s[1] != s[2], "{s:?}");
            for i in s {
                hits[i] += 1;
            }
        }
        let p = 3.0 / 8.0;
        let sd = (runs as f64 * p * (1.0 - p)).sqrt();
        for h in hits {
            assert!((h as f64 - runs as f64 * p).abs() < 5.0 * sd, "{hits:?}");
        }
        assert!(ReplayBuffer::new(4, 1).sample(3, |_| 0).is_empty());
    }

    fn stored(buf: &ReplayBuffer) -> Stored {
        Stored {
            capacity: buf.capacity,
            dim: buf.dim,
            seen: buf.seen,
            x: buf.x.clone(),
            targets: buf.targets.clone(),
            tasks: buf.tasks.clone(),
        }
    }

    #[test]
    fn a_consistent_memory_is_accepted_and_inconsistent_ones_are_refused() {
        let mut rng = SplitMix::new(2);
        let mut buf = ReplayBuffer::new(5, 3);
        for i in 0..12 {
            buf.offer(&[i as f32, 0.5, -1.0], i % 4, i / 6, |n| rng.below(n))
                .unwrap();
        }
        assert_eq!(ReplayBuffer::try_from(stored(&buf)).unwrap(), buf);

        // Inconsistent counts are rejected: (capacity, held, offered).
        for (capacity, len, seen) in [(5usize, 6usize, 12u64), (5, 3, 12), (5, 5, 4)] {
            let s = Stored {
                capacity,
                dim: 1,
                seen,
                x: vec![0.0; len],
                targets: vec![0; len],
                tasks: vec![0; len],
            };
            assert!(
                ReplayBuffer::try_from(s).is_err(),
                "{capacity} {len} {seen}"
            );
        }
        let mut s = stored(&buf);
        s.x.pop();
        assert!(ReplayBuffer::try_from(s)
            .unwrap_err()
            .contains("input values"));
        let mut s = stored(&buf);
        s.tasks.pop();
        assert!(ReplayBuffer::try_from(s).unwrap_err().contains("task ids"));
    }
}
