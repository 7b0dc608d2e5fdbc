//! Tests of the rehearsal memories on hand-computed cases and seeded streams.

use super::*;
use crate::rng::SplitMix64 as SplitMix;
use crate::state::{decode, encode};

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
fn the_reservoir_keeps_exactly_capacity_samples_with_their_payloads() {
    let mut rng = SplitMix::new(1);
    let mut mem = Reservoir::new(10, 2, 3);
    for i in 0..35 {
        let (x, p) = ([i as f32, -(i as f32)], [i as f32; 3]);
        mem.offer(Row::new(&x, i, i / 10).with_payload(&p), |n| rng.below(n))
            .unwrap();
        assert_eq!(mem.len(), (i + 1).min(10));
        assert_eq!(mem.seen(), i as u64 + 1);
    }
    // Every held sample is intact (inputs, payload, target and task belong together).
    let store = mem.store();
    for s in 0..store.len() {
        let t = store.target(s);
        assert_eq!(store.x(s), &[t as f32, -(t as f32)]);
        assert_eq!(store.payload(s), &[t as f32; 3]);
        assert_eq!(store.task(s), t / 10);
    }
    assert_eq!(store.per_task().iter().sum::<usize>(), 10);
    // Wrong widths are refused before any draw or change.
    let before = mem.clone();
    let err = mem
        .offer(Row::new(&[1.0], 0, 0).with_payload(&[0.0; 3]), |_| {
            panic!("no draw")
        })
        .unwrap_err();
    assert!(format!("{err}").contains("1 features"), "{err}");
    let err = mem
        .offer(Row::new(&[1.0, 2.0], 0, 0), |_| panic!("no draw"))
        .unwrap_err();
    assert!(format!("{err}").contains("payload width is 3"), "{err}");
    assert_eq!(mem, before);
}

#[test]
fn every_stream_position_is_kept_with_probability_m_over_n() {
    // N = 2000 items into M = 100 slots, 2000 independent runs (fixed seed, so the test is
    // deterministic): each position's inclusion count is Binomial(R, M/N) with mean 100 and
    // sd ≈ 9.75.
    let (n, m, runs) = (2000usize, 100usize, 2000usize);
    let mut rng = SplitMix::new(0x5EED);
    let mut counts = vec![0usize; n];
    for _ in 0..runs {
        let mut mem = Reservoir::new(m, 1, 0);
        for pos in 0..n {
            mem.offer(Row::new(&[pos as f32], pos, 0), |k| rng.below(k))
                .unwrap();
        }
        assert_eq!(mem.len(), m);
        for &t in mem.store().targets() {
            counts[t] += 1;
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

fn store_of(n: usize) -> SampleStore {
    let mut s = SampleStore::new(1, 1);
    for i in 0..n {
        s.push(Row::new(&[i as f32], i % 3, i / 4).with_payload(&[10.0 * i as f32]))
            .unwrap();
    }
    s
}

#[test]
fn sampling_is_without_replacement_and_uniform() {
    let mut rng = SplitMix::new(9);
    let store = store_of(8);
    assert_eq!(store.sample(0, |n| rng.below(n)), Vec::<usize>::new());
    let mut all = store.sample(20, |n| rng.below(n));
    all.sort_unstable();
    assert_eq!(all, (0..8).collect::<Vec<_>>());
    // The draws, by hand: below(8) = 5 swaps 0 and 5; below(7) = 0 keeps 1; below(6) = 5 swaps
    // 2 and 7.
    let mut draws = [5usize, 0, 5].into_iter();
    assert_eq!(
        store.sample(3, |_| draws.next().unwrap()),
        vec![5, 1, 7],
        "partial Fisher–Yates"
    );
    let runs = 40_000;
    let mut hits = [0usize; 8];
    for _ in 0..runs {
        let s = store.sample(3, |n| rng.below(n));
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
    assert!(SampleStore::new(4, 0).sample(3, |_| 0).is_empty());
}

#[test]
fn counts_gather_set_and_the_icarl_reduction() {
    // Rows i = 0..10: target i % 3, task i / 4, input i, payload 10 i.
    let mut s = store_of(10);
    assert_eq!(s.per_class(), vec![4, 3, 3]);
    assert_eq!(s.per_task(), vec![4, 4, 2]);
    let g = s.gather(&[7, 2]);
    assert_eq!(g.x, vec![7.0, 2.0]);
    assert_eq!(g.payload, vec![70.0, 20.0]);
    assert_eq!(g.targets, vec![1, 2]);
    assert_eq!(g.tasks, vec![1, 0]);
    s.set(3, Row::new(&[-1.0], 5, 9).with_payload(&[-2.0]))
        .unwrap();
    assert_eq!(s.row(3), Row::new(&[-1.0], 5, 9).with_payload(&[-2.0]));
    assert_eq!(s.per_class(), vec![3, 3, 3, 0, 0, 1]);
    assert!(s
        .set(10, Row::new(&[0.0], 0, 0).with_payload(&[0.0]))
        .is_err());
    s.payload_mut(0)[0] = 0.5;
    assert_eq!(s.payload(0), &[0.5]);

    // Keep the first 2 of each class, in row order. Targets now:
    // [0 1 2 5 1 2 0 1 2 0] → kept rows 0 1 2 3 4 5 6 (class 0: 0, 6; 1: 1, 4; 2: 2, 5; 5: 3).
    s.keep_first_per_class(2);
    assert_eq!(s.targets(), &[0, 1, 2, 5, 1, 2, 0]);
    let inputs: Vec<f32> = (0..s.len()).map(|i| s.x(i)[0]).collect();
    assert_eq!(inputs, vec![0.0, 1.0, 2.0, -1.0, 4.0, 5.0, 6.0]);
    assert_eq!(s.payload(4), &[40.0]);
    assert_eq!(s.task(6), 1);
    s.keep_first_per_class(0);
    assert!(s.is_empty());
}

#[test]
fn memories_round_trip_and_inconsistent_ones_are_refused() {
    let mut rng = SplitMix::new(2);
    let mut mem = Reservoir::new(5, 3, 2);
    for i in 0..12 {
        mem.offer(
            Row::new(&[i as f32, 0.5, -1.0], i % 4, i / 6).with_payload(&[0.25, f32::NAN]),
            |n| rng.below(n),
        )
        .unwrap();
    }
    let back: Reservoir = decode(&encode(&mem).unwrap()).unwrap();
    assert_eq!(back.store().targets(), mem.store().targets());
    assert_eq!(
        (back.seen(), back.capacity(), back.store().dim()),
        (12, 5, 3)
    );
    assert!(back.store().payload(4)[1].is_nan());

    let mut bal = ClassBalanced::new(4, 1, 0);
    for y in [0, 1, 1, 1, 2, 2] {
        bal.offer(Row::new(&[y as f32], y, 0), |n| rng.below(n))
            .unwrap();
    }
    let back: ClassBalanced = decode(&encode(&bal).unwrap()).unwrap();
    assert_eq!(back, bal);

    // Raw encodings of inconsistent memories, in the types' field order.
    type Store = (
        usize,
        usize,
        crate::state::Floats,
        crate::state::Floats,
        Vec<usize>,
        Vec<usize>,
    );
    let store = |len: usize, xs: usize, ps: usize, tasks: usize| -> Store {
        (
            1,
            1,
            crate::state::Floats(vec![0.0; xs]),
            crate::state::Floats(vec![0.0; ps]),
            vec![0; len],
            vec![0; tasks],
        )
    };
    let err = |bytes: Vec<u8>, want: &str, what: &str| {
        let e = match what {
            "store" => decode::<SampleStore>(&bytes).map(|_| ()),
            "reservoir" => decode::<Reservoir>(&bytes).map(|_| ()),
            _ => decode::<ClassBalanced>(&bytes).map(|_| ()),
        }
        .unwrap_err();
        assert!(format!("{e:#}").contains(want), "{e:#} lacks {want:?}");
    };
    err(
        encode(&store(2, 2, 2, 1)).unwrap(),
        "2 targets but 1 task ids",
        "store",
    );
    err(
        encode(&store(2, 3, 2, 2)).unwrap(),
        "3 input values for 2 samples",
        "store",
    );
    err(
        encode(&store(2, 2, 1, 2)).unwrap(),
        "1 payload values for 2 samples",
        "store",
    );
    assert!(decode::<SampleStore>(&encode(&store(2, 2, 2, 2)).unwrap()).is_ok());
    // Reservoir counters: (capacity, seen) against 3 held.
    for (capacity, seen, want) in [
        (2usize, 3u64, "3 samples in a memory of 2"),
        (5, 7, "3 samples held after 7 offered"),
        (3, 2, "3 samples held after 2 offered"),
    ] {
        let raw = (capacity, seen, store(3, 3, 3, 3));
        err(encode(&raw).unwrap(), want, "reservoir");
    }
    assert!(decode::<Reservoir>(&encode(&(3usize, 9u64, store(3, 3, 3, 3))).unwrap()).is_ok());
    // Class-balanced: capacity, seen classes (ascending, covering the targets).
    let raw = (2usize, vec![0usize], store(3, 3, 3, 3));
    err(
        encode(&raw).unwrap(),
        "3 samples in a memory of 2",
        "balanced",
    );
    let raw = (3usize, vec![1usize, 0], store(3, 3, 3, 3));
    err(encode(&raw).unwrap(), "not ascending", "balanced");
    let raw = (3usize, vec![1usize, 2], store(3, 3, 3, 3));
    err(encode(&raw).unwrap(), "a sample of class 0", "balanced");
}

#[test]
fn gdumb_fills_then_balances_by_hand() {
    // Capacity 4; draws are scripted.
    let mut mem = ClassBalanced::new(4, 1, 0);
    let offer = |mem: &mut ClassBalanced, y: usize, id: f32, draw: Option<usize>| {
        mem.offer(Row::new(&[id], y, 0), |n| {
            draw.unwrap_or_else(|| panic!("no draw expected (n = {n})"))
        })
        .unwrap()
    };
    // Not full: every sample is added.
    for (id, y) in [0, 0, 0, 1].into_iter().enumerate() {
        assert_eq!(offer(&mut mem, y, id as f32, None), Slot::Append);
    }
    assert_eq!(mem.store().per_class(), vec![3, 1]);
    // Full, Y = {0, 1}: share 4/2 = 2. Class 0 holds 3 ≥ 2: dropped.
    assert_eq!(offer(&mut mem, 0, 4.0, None), Slot::Skip);
    // Class 1 holds 1 < 2: replaces sample #2 (draw 2 of 0..3) of class 0, the largest.
    let mut draw_range = 0;
    let slot = mem
        .offer(Row::new(&[5.0], 1, 0), |n| {
            draw_range = n;
            2
        })
        .unwrap();
    assert_eq!((slot, draw_range), (Slot::Replace(2), 3));
    assert_eq!(mem.store().targets(), &[0, 0, 1, 1]);
    // Class 1 now holds 2 = share: dropped.
    assert_eq!(offer(&mut mem, 1, 6.0, None), Slot::Skip);
    // A new class 2: Y = {0, 1, 2}, share 4/3; class 2 holds 0 < 4/3. Classes 0 and 1 tie at
    // 2: the smaller id (0) loses its sample #0 (row 0).
    assert_eq!(offer(&mut mem, 2, 7.0, Some(0)), Slot::Replace(0));
    assert_eq!(mem.store().targets(), &[2, 0, 1, 1]);
    assert_eq!(mem.classes(), &[0, 1, 2]);
    // Class 2 holds 1 < 4/3 (1·3 < 4): replaces a sample of class 1, the largest (2 samples),
    // its #1, row 3.
    assert_eq!(offer(&mut mem, 2, 8.0, Some(1)), Slot::Replace(3));
    let ids: Vec<f32> = (0..4).map(|i| mem.store().x(i)[0]).collect();
    assert_eq!(ids, vec![7.0, 1.0, 5.0, 8.0]);
    // Class 2 holds 2 ≥ 4/3: dropped; class 0 holds 1 < 4/3 (1·3 < 4): it replaces one of
    // class 2 (2 samples, the largest).
    assert_eq!(offer(&mut mem, 2, 9.0, None), Slot::Skip);
    assert_eq!(offer(&mut mem, 0, 10.0, Some(1)), Slot::Replace(3));
    assert_eq!(mem.store().per_class(), vec![2, 1, 1]);
    // A capacity of 0 holds nothing.
    let mut empty = ClassBalanced::new(0, 1, 0);
    assert_eq!(offer(&mut empty, 3, 0.0, None), Slot::Skip);
    assert!(empty.is_empty());
}

#[test]
fn gdumb_balance_invariant_on_random_streams() {
    // Property, over seeded random streams with random capacities, class counts and class
    // frequencies: (1) the memory holds min(offered, capacity) samples; (2) once full, a sample
    // of class y enters iff count(y)·|Y| < capacity, and then exactly the largest class loses
    // one; (3) after every class has been offered many times in random order, the class counts
    // differ by at most one.
    let mut rng = SplitMix::new(0xBA1A);
    for case in 0..200 {
        let capacity = 1 + rng.below(60);
        let classes = 1 + rng.below(12);
        // Skewed frequencies: class c is drawn with weight 1 + c².
        let weights: Vec<usize> = (0..classes).map(|c| 1 + c * c).collect();
        let total: usize = weights.iter().sum();
        let mut mem = ClassBalanced::new(capacity, 2, 1);
        let draws = 40 * capacity * classes;
        for i in 0..draws {
            let mut r = rng.below(total);
            let y = weights
                .iter()
                .position(|&w| {
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .unwrap();
            let before = mem.store().per_class();
            let count = |v: &[usize], c: usize| v.get(c).copied().unwrap_or(0);
            let seen_after = {
                let mut s = mem.classes().to_vec();
                if !s.contains(&y) {
                    s.push(y);
                }
                s.len()
            };
            let full = mem.len() == capacity;
            let x = [i as f32, y as f32];
            let slot = mem
                .offer(Row::new(&x, y, 0).with_payload(&[y as f32]), |n| {
                    rng.below(n)
                })
                .unwrap();
            let after = mem.store().per_class();
            assert_eq!(mem.len(), (i + 1).min(capacity), "case {case}");
            if full {
                let enters = count(&before, y) * seen_after < capacity;
                assert_eq!(slot != Slot::Skip, enters, "case {case} step {i}");
                if enters {
                    let largest = (0..before.len())
                        .max_by_key(|&c| (before[c], std::cmp::Reverse(c)))
                        .unwrap();
                    assert_eq!(count(&after, y), count(&before, y) + 1);
                    assert_eq!(count(&after, largest), before[largest] - 1);
                } else {
                    assert_eq!(after, before);
                }
            }
        }
        // Every stored row is intact.
        for s in 0..mem.len() {
            let t = mem.store().target(s);
            assert_eq!(mem.store().x(s)[1], t as f32);
            assert_eq!(mem.store().payload(s), &[t as f32]);
        }
        let counts = mem.store().per_class();
        let present: Vec<usize> = (0..classes)
            .map(|c| counts.get(c).copied().unwrap_or(0))
            .collect();
        let (lo, hi) = (present.iter().min().unwrap(), present.iter().max().unwrap());
        assert!(
            hi - lo <= 1,
            "case {case}: capacity {capacity}, counts {present:?}"
        );
        assert_eq!(present.iter().sum::<usize>(), capacity.min(draws));
    }
}

#[test]
fn herding_on_2d_points_by_hand() {
    // Rows (raw → normalised): a (2, 0) → (1, 0); b (0, 1); c (3, 4) → (0.6, 0.8);
    // d (1, −1) → (0.7071, −0.7071); e (−1, 0.5) → (−0.8944, 0.4472).
    // μ = mean of the normalised rows = (0.28254, 0.30802).
    // k = 1: for unit vectors ‖μ − φ‖² = ‖μ‖² + 1 − 2 μ·φ, so the largest μ·φ wins:
    //   a 0.2825, b 0.3080, c 0.4160, d −0.0180, e −0.1150 → c.
    // k = 2: ‖μ − (c + φ)/2‖²: a 0.2762, b 0.3507, d 0.2061, e 0.2843 → d.
    // k = 3: ‖μ − (c + d + φ)/3‖²: a 0.3134, b 0.0266, e 0.0374 → b.
    // k = 4: ‖μ − (c + d + b + φ)/4‖²: a 0.0878, e 0.0381 → e; then a.
    let f = [2.0, 0.0, 0.0, 1.0, 3.0, 4.0, 1.0, -1.0, -1.0, 0.5];
    assert_eq!(herding(&f, 2, 5), vec![2, 3, 1, 4, 0]);
    // Prefixes: m picks are the first m of the priority order; m > rows is capped.
    assert_eq!(herding(&f, 2, 2), vec![2, 3]);
    assert_eq!(herding(&f, 2, 9), vec![2, 3, 1, 4, 0]);
    assert!(herding(&f, 2, 0).is_empty());
    assert!(herding(&[], 2, 3).is_empty());
    // Scaling a row does not change its normalised feature, so not the picks.
    let mut g = f;
    g[0] = 7.0;
    g[3] = 0.01;
    assert_eq!(herding(&g, 2, 5), vec![2, 3, 1, 4, 0]);
    // Ties go to the lowest index: two copies of the same point.
    assert_eq!(herding(&[1.0, 0.0, 1.0, 0.0], 2, 2), vec![0, 1]);
}

#[test]
fn l2_normalize_by_hand() {
    let mut f = [3.0, 4.0, 0.0, 0.0, 0.0, -2.0];
    l2_normalize(&mut f, 2);
    assert_eq!(f, [0.6, 0.8, 0.0, 0.0, 0.0, -1.0]);
}
