//! Tests of the mask arithmetic alone: densities against hand-worked numbers, the drop
//! schedule against its formula, each growth criterion on a constructed layer (the plugin on
//! the mock host: `tests.rs`; conv tensors: `tests_conv.rs`).

use clef_sdk::rng::SplitMix64;

use crate::sparsity::{
    erk_densities, erk_score, exact_count, sample_mask, uniform_densities, Sampling,
};
use crate::topology::{drop_fraction, update_layer, Change, FrozenGrowth, Growth, LayerView};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// ---- densities ------------------------------------------------------------------------------

#[test]
fn erk_matches_a_hand_worked_example_with_one_dense_layer() {
    // Layers [2,3], [4,4], [10,10]: N = 6, 16, 100 (122 in all); scores r = 5/6, 1/2, 1/5.
    // Target density 0.5: rhs = 61, divisor = 5 + 8 + 20 = 33, ε = 61/33 and ε·5/6 = 1.54 > 1,
    // so [2,3] becomes dense. Re-solved: ε = (0.5·116 − 0.5·6) / (8 + 20) = 55/28, giving
    // d = 1, 55/56, 11/28 (ε·1/2 = 0.982 < 1).
    let shapes = vec![vec![2, 3], vec![4, 4], vec![10, 10]];
    assert!(close(erk_score(&shapes[0]), 5.0 / 6.0));
    let d = erk_densities(&shapes, 0.5);
    assert!(close(d[0], 1.0), "{d:?}");
    assert!(close(d[1], 55.0 / 56.0), "{d:?}");
    assert!(close(d[2], 11.0 / 28.0), "{d:?}");
    // Expected active weights 6 + 15.714 + 39.286 = 61 = 0.5 · 122 exactly.
    let expected: f64 = d.iter().zip([6.0, 16.0, 100.0]).map(|(d, n)| d * n).sum();
    assert!(close(expected, 61.0));
    // Exact sampling: round(15.714) = 16, round(39.286) = 39: 61 in all.
    let counts: Vec<usize> = d
        .iter()
        .zip([6, 16, 100])
        .map(|(&d, n)| exact_count(d, n))
        .collect();
    assert_eq!(counts, vec![6, 16, 39]);
}

#[test]
fn erk_without_dense_layers_and_total_density_on_the_mlp() {
    // No layer exceeds 1: [10,10] and [20,10] at density 0.1: r = 0.2, 0.15; N = 100, 200;
    // ε = 0.1·300 / (20 + 30) = 0.6 → d = 0.12, 0.09.
    let d = erk_densities(&[vec![10, 10], vec![20, 10]], 0.1);
    assert!(close(d[0], 0.12) && close(d[1], 0.09), "{d:?}");
    // The split-Fashion-MNIST MLP: the sampled masks hold the target share of all weights
    // (up to rounding: at most half a weight per layer).
    let shapes = vec![vec![256, 784], vec![256, 256], vec![10, 256]];
    let total: usize = shapes.iter().map(|s| s[0] * s[1]).sum();
    for target in [0.2, 0.1, 0.05, 0.37] {
        for d in [
            erk_densities(&shapes, target),
            uniform_densities(&shapes, target),
        ] {
            let expected: f64 = d
                .iter()
                .zip(&shapes)
                .map(|(d, s)| d * (s[0] * s[1]) as f64)
                .sum();
            assert!((expected / total as f64 - target).abs() < 1e-12, "{d:?}");
            let mut rng = SplitMix64::new(5);
            let active: usize = d
                .iter()
                .zip(&shapes)
                .map(|(&d, s)| {
                    let m = sample_mask(s[0] * s[1], d, Sampling::Exact, &mut rng);
                    m.iter().filter(|&&b| b).count()
                })
                .sum();
            assert!(
                (active as f64 - target * total as f64).abs() <= 1.5,
                "{active} vs {}",
                target * total as f64
            );
        }
    }
    // ERK gives the small output layer more density than the wide input layer.
    let d = erk_densities(&shapes, 0.1);
    assert!(d[2] > d[1] && d[1] > d[0], "{d:?}");
}

#[test]
fn uniform_gives_every_layer_the_target() {
    let shapes = vec![vec![2, 3], vec![4, 4], vec![10, 10]];
    assert_eq!(uniform_densities(&shapes, 0.2), vec![0.2, 0.2, 0.2]);
    let counts: Vec<usize> = [6, 16, 100].iter().map(|&n| exact_count(0.2, n)).collect();
    // round(1.2) = 1, round(3.2) = 3, 20.
    assert_eq!(counts, vec![1, 3, 20]);
}

#[test]
fn bernoulli_sampling_hits_the_density_in_expectation() {
    let mut rng = SplitMix64::new(1);
    let m = sample_mask(100_000, 0.1, Sampling::Bernoulli, &mut rng);
    let n = m.iter().filter(|&&b| b).count() as f64;
    // sd = sqrt(1e5 · 0.1 · 0.9) ≈ 95.
    assert!((n - 10_000.0).abs() < 500.0, "{n}");
}

// ---- schedule and topology ------------------------------------------------------------------

#[test]
fn cosine_drop_schedule_matches_its_formula() {
    assert!(close(drop_fraction(0, 400, 0.5, 0.005), 0.5));
    assert!(close(drop_fraction(400, 400, 0.5, 0.005), 0.005));
    assert!(close(drop_fraction(200, 400, 0.5, 0.005), 0.2525));
    // cos(π/4) = √2/2: 0.005 + 0.495·(1 + 0.707107)/2 = 0.427509.
    let q = 0.005 + 0.495 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0;
    assert!(close(drop_fraction(100, 400, 0.5, 0.005), q));
    assert!((q - 0.427_509).abs() < 1e-6);
    // Past the end it stays at the final value.
    assert!(close(drop_fraction(900, 400, 0.5, 0.005), 0.005));
}

/// A layer of 8 positions: active {0, 1, 2, 3} with |w| = 0.4, 0.1, 0.3, 0.2; position 5
/// frozen; position 6 was active earlier in the task (fired).
struct Example {
    mask: Vec<bool>,
    fired: Vec<bool>,
    frozen: Vec<bool>,
    values: Vec<f32>,
    scores: Vec<f32>,
}

fn example() -> Example {
    let mut mask = vec![false; 8];
    mask[..4].fill(true);
    let mut fired = mask.clone();
    fired[6] = true;
    let mut frozen = vec![false; 8];
    frozen[5] = true;
    Example {
        mask,
        fired,
        frozen,
        values: vec![0.4, -0.1, 0.3, 0.2, 0.0, 0.9, 0.0, 0.0],
        // Inactive positions 4..8 score 0.2, -0.9 (frozen), 0.5, -0.7; the active ones are
        // high but never candidates.
        scores: vec![9.0, 9.0, 9.0, 9.0, 0.2, -0.9, 0.5, -0.7],
    }
}

fn run(e: &mut Example, fraction: f64, growth: Growth, frozen: FrozenGrowth, seed: u64) -> Change {
    update_layer(
        LayerView {
            mask: &mut e.mask,
            fired: &mut e.fired,
            frozen: &e.frozen,
            values: &e.values,
            scores: Some(&e.scores),
        },
        fraction,
        growth,
        frozen,
        &mut SplitMix64::new(seed),
    )
}

fn active(mask: &[bool]) -> Vec<usize> {
    (0..mask.len()).filter(|&i| mask[i]).collect()
}

#[test]
fn drop_removes_the_smallest_magnitudes() {
    // ceil(0.4 · 4) = 2: drop |−0.1| (1) and 0.2 (3).
    let mut e = example();
    let c = run(&mut e, 0.4, Growth::Gradient, FrozenGrowth::Reuse, 0);
    assert_eq!(c.dropped, vec![1, 3]);
    assert_eq!(c.grown.len(), 2);
    // Zero fraction: nothing changes.
    let mut e = example();
    assert_eq!(
        run(&mut e, 0.0, Growth::Random, FrozenGrowth::Reuse, 0),
        Change::default()
    );
}

#[test]
fn gradient_and_momentum_grow_the_largest_scores() {
    // Candidates after dropping {1, 3}: 1, 3, 4, 5, 6, 7 with |score| 9, 9, 0.2, 0.9, 0.5,
    // 0.7: the just-dropped positions may come back (as in RigL and the original code).
    for growth in [Growth::Gradient, Growth::Momentum] {
        let mut e = example();
        let c = run(&mut e, 0.4, growth, FrozenGrowth::Reuse, 0);
        assert_eq!(c.grown, vec![1, 3], "{growth:?}");
    }
    // With scores 0 on the dropped positions: frozen 5 (0.9) then 7 (0.7).
    let mut e = example();
    e.scores[1] = 0.0;
    e.scores[3] = 0.0;
    let c = run(&mut e, 0.4, Growth::Gradient, FrozenGrowth::Reuse, 0);
    assert_eq!(c.grown, vec![5, 7]);
    assert_eq!(active(&e.mask), vec![0, 2, 5, 7]);
    // Excluding frozen positions: 7 (0.7) then 6 (0.5).
    let mut e = example();
    e.scores[1] = 0.0;
    e.scores[3] = 0.0;
    let c = run(&mut e, 0.4, Growth::Momentum, FrozenGrowth::Exclude, 0);
    assert_eq!(c.grown, vec![7, 6]);
    assert!(e.fired[7]);
}

#[test]
fn unfired_grows_positions_never_active_in_the_task() {
    // Never fired and not active after the drop: 4, 5, 7 (6 fired earlier, 1 and 3 just
    // dropped). Growing 3 must take exactly those.
    let mut e = example();
    let c = run(&mut e, 0.75, Growth::Unfired, FrozenGrowth::Reuse, 3);
    assert_eq!(c.dropped, vec![1, 3, 2]);
    let mut g = c.grown.clone();
    g.sort_unstable();
    assert_eq!(g, vec![4, 5, 7]);
    // Excluding frozen: unfired {4, 7} are too few for 3, the rest comes from fired {1, 2, 3, 6}.
    for seed in 0..20 {
        let mut e = example();
        let c = run(&mut e, 0.75, Growth::Unfired, FrozenGrowth::Exclude, seed);
        assert_eq!(
            &c.grown[..2]
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            &[4, 7].into_iter().collect()
        );
        assert!([1, 2, 3, 6].contains(&c.grown[2]), "{c:?}");
    }
}

#[test]
fn random_grows_uniformly_among_the_candidates() {
    // Drop 1 (|−0.1|), grow 1 of the 5 candidates {1, 4, 5, 6, 7} with FrozenGrowth::Reuse, or
    // of {1, 4, 6, 7} with Exclude; uniform over 5000 seeds.
    for (mode, cands) in [
        (FrozenGrowth::Reuse, vec![1usize, 4, 5, 6, 7]),
        (FrozenGrowth::Exclude, vec![1, 4, 6, 7]),
    ] {
        let mut counts = [0usize; 8];
        for seed in 0..5000 {
            let mut e = example();
            let c = run(&mut e, 0.25, Growth::Random, mode, seed);
            assert_eq!(c.dropped, vec![1]);
            counts[c.grown[0]] += 1;
        }
        let expected = 5000.0 / cands.len() as f64;
        for (i, &n) in counts.iter().enumerate() {
            if cands.contains(&i) {
                // 5 binomial standard deviations.
                let sd = (expected * (1.0 - 1.0 / cands.len() as f64)).sqrt();
                assert!(
                    (n as f64 - expected).abs() < 5.0 * sd,
                    "{mode:?} {counts:?}"
                );
            } else {
                assert_eq!(n, 0, "{mode:?} {counts:?}");
            }
        }
    }
}
