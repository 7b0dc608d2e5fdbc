//! Tests on convolutional shapes: ERK on a hand-computed conv stack, `dense_first`, a topology
//! update of a 4-D kernel under every growth criterion, and a conv + batch norm model on the
//! SDK's mock host. The mock's model is one linear layer (`params[0]`, `params[1]`); the conv
//! and norm tensors added here are extra parameters the plugin masks, copies and restores
//! like a real ConvNet's, so these tests check what the plugin writes, not a conv forward.

use std::collections::BTreeSet;
use std::ffi::CString;

use clef_sdk::abi::{CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER, CLEF_ROLE_WEIGHT};
use clef_sdk::kit;
use clef_sdk::rng::SplitMix64;
use clef_sdk::testing::{MockHost, MockParam, MockPlugin};

use crate::sparsity::{
    erk_densities, erk_densities_with_dense, erk_score, exact_count, sample_mask,
    uniform_densities_dense_first, Sampling,
};
use crate::topology::{update_layer, FrozenGrowth, Growth, LayerView};
use crate::{target_densities, Bias, Config, Dst, GrowInit, MaskInit, NewWeights};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// conv 1->8 3x3, conv 8->16 3x3, dense 784->10.
fn stack() -> Vec<Vec<usize>> {
    vec![vec![8, 1, 3, 3], vec![16, 8, 3, 3], vec![10, 784]]
}

#[test]
fn erk_on_a_hand_computed_conv_stack() {
    // N = 72, 1152, 7840 (9064 in all); r = (8+1+3+3)/72 = 15/72, (16+8+3+3)/1152 = 30/1152,
    // (10+784)/7840 = 794/7840: the kernel term k_h + k_w is in the conv scores.
    let s = stack();
    assert!(close(erk_score(&s[0]), 15.0 / 72.0));
    assert!(close(erk_score(&s[1]), 30.0 / 1152.0));
    assert!(close(erk_score(&s[2]), 794.0 / 7840.0));
    // Density 0.2: budget 0.2·9064 = 1812.8, Σ r_l·N_l = 15 + 30 + 794 = 839, ε = 1812.8/839 =
    // 2.16067; ε·15/72 = 0.4501 < 1, so no layer is dense:
    // d = 0.450139, 0.056267, 0.218823.
    let d = erk_densities(&s, 0.2);
    let eps = 1812.8 / 839.0;
    assert!(close(d[0], eps * 15.0 / 72.0), "{d:?}");
    assert!(close(d[1], eps * 30.0 / 1152.0), "{d:?}");
    assert!(close(d[2], eps * 794.0 / 7840.0), "{d:?}");
    assert!((d[0] - 0.450139).abs() < 1e-6 && (d[1] - 0.056267).abs() < 1e-6);
    assert!((d[2] - 0.218823).abs() < 1e-6);
    // Density 0.5: ε = 4532/839 = 5.4017 and ε·15/72 = 1.125 > 1: the first conv is made dense
    // and ε re-solved over the other two: (0.5·(1152 + 7840) − 0.5·72) / (30 + 794) =
    // 4460/824 = 1115/206, so d = 1, (1115/206)·30/1152 = 5575/39552 = 0.140954,
    // (1115/206)·794/7840 = 88531/161504 = 0.548166.
    let d = erk_densities(&s, 0.5);
    assert!(close(d[0], 1.0), "{d:?}");
    assert!(close(d[1], 5575.0 / 39552.0), "{d:?}");
    assert!(close(d[2], 88531.0 / 161504.0), "{d:?}");
    // The budget holds: 72 + 162.38 + 4297.62 = 4532 = 0.5 · 9064.
    let kept: f64 = d
        .iter()
        .zip([72.0, 1152.0, 7840.0])
        .map(|(d, n)| d * n)
        .sum();
    assert!((kept - 4532.0).abs() < 1e-9, "{kept}");
}

#[test]
fn dense_first_keeps_the_global_density() {
    let s = stack();
    // Uniform: the others share (0.2·9064 − 72) / (1152 + 7840) = 1740.8/8992 = 0.193594.
    let d = uniform_densities_dense_first(&s, 0.2).unwrap();
    assert!(close(d[0], 1.0) && close(d[1], 1740.8 / 8992.0) && close(d[2], d[1]));
    // ERK with conv 1 held dense from the start: ε = (0.2·8992 − 0.8·72) / (30 + 794) =
    // 1740.8/824 = 2.112621, d = 1, 0.055016, 0.213957 (no other layer exceeds 1).
    let d = erk_densities_with_dense(&s, 0.2, &[true, false, false]).unwrap();
    let eps = 1740.8 / 824.0;
    assert!(close(d[0], 1.0), "{d:?}");
    assert!(close(d[1], eps * 30.0 / 1152.0) && (d[1] - 0.055016).abs() < 1e-6);
    assert!(close(d[2], eps * 794.0 / 7840.0) && (d[2] - 0.213957).abs() < 1e-6);
    for d in [d, uniform_densities_dense_first(&s, 0.2).unwrap()] {
        let kept: f64 = d
            .iter()
            .zip([72.0, 1152.0, 7840.0])
            .map(|(d, n)| d * n)
            .sum();
        assert!((kept - 1812.8).abs() < 1e-9, "{kept}");
    }
    // Nothing held: the same as plain ERK, bit for bit.
    assert_eq!(
        erk_densities_with_dense(&s, 0.2, &[false; 3]).unwrap(),
        erk_densities(&s, 0.2)
    );
    // A first layer larger than the budget (576 of 0.5·676 = 338), or a lone layer: refused.
    let big = vec![vec![64, 1, 3, 3], vec![10, 10]];
    assert_eq!(uniform_densities_dense_first(&big, 0.5), None);
    assert_eq!(erk_densities_with_dense(&big, 0.5, &[true, false]), None);
    assert_eq!(uniform_densities_dense_first(&big[..1], 0.5), None);
    let mut cfg = config();
    cfg.dense_first = true;
    cfg.sparsity = 0.5;
    for init in [MaskInit::Uniform, MaskInit::Erk] {
        cfg.init = init;
        let err = target_densities(&cfg, &big, "convs.0.weight").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("dense_first")
                && msg.contains("`convs.0.weight` dense (576 weights)")
                && msg.contains("338 of the 676"),
            "{msg}"
        );
    }
}

fn config() -> Config {
    Config {
        sparsity: 0.75,
        init: MaskInit::Erk,
        growth: Growth::Gradient,
        update_every: 2,
        task_steps: 6,
        drop_start: 0.5,
        drop_end: 0.005,
        sampling: Sampling::Exact,
        new_weights: NewWeights::Init,
        grow_init: GrowInit::Zero,
        frozen_growth: FrozenGrowth::Reuse,
        bias: Bias::PerTask,
        dense_first: false,
    }
}

#[test]
fn a_topology_update_of_a_conv_kernel_is_element_wise() {
    // A [4, 2, 3, 3] kernel (72 positions), 18 active; positions i % 5 == 0 frozen; growth
    // scores large only at the kernel centre (kh = kw = 1, i.e. i % 9 == 4) of every
    // (out, in) pair: the criteria pick single kernel positions, not whole filters.
    let n = 72;
    let mask0 = sample_mask(n, 0.25, Sampling::Exact, &mut SplitMix64::new(7));
    assert_eq!(mask0.iter().filter(|&&m| m).count(), 18);
    let frozen: Vec<bool> = (0..n).map(|i| i % 5 == 0).collect();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i * 29) % 71) as f32 * 0.01 - 0.35)
        .collect();
    let scores: Vec<f32> = (0..n)
        .map(|i| if i % 9 == 4 { 1.0 + i as f32 } else { 0.01 })
        .collect();
    // The 3 = ceil(0.15·18) active positions of smallest |value|, ties by index.
    let mut by_mag: Vec<usize> = (0..n).filter(|&i| mask0[i]).collect();
    by_mag.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    let expect_dropped = by_mag[..3].to_vec();
    for growth in [
        Growth::Random,
        Growth::Unfired,
        Growth::Gradient,
        Growth::Momentum,
    ] {
        for mode in [FrozenGrowth::Reuse, FrozenGrowth::Exclude] {
            let mut mask = mask0.clone();
            let mut fired = mask0.clone();
            let c = update_layer(
                LayerView {
                    mask: &mut mask,
                    fired: &mut fired,
                    frozen: &frozen,
                    values: &values,
                    scores: Some(&scores),
                },
                0.15,
                growth,
                mode,
                &mut SplitMix64::new(3),
            );
            let tag = format!("{growth:?} {mode:?}");
            assert_eq!(c.dropped, expect_dropped, "{tag}");
            assert_eq!(c.grown.len(), 3, "{tag}");
            assert_eq!(mask.iter().filter(|&&m| m).count(), 18, "{tag}");
            let grown: BTreeSet<usize> = c.grown.iter().copied().collect();
            assert_eq!(grown.len(), 3, "{tag}: grown twice");
            for &i in &c.grown {
                assert!(mask[i] && fired[i], "{tag}");
                // Candidates were inactive after the drop: not active before, or just dropped.
                assert!(!mask0[i] || expect_dropped.contains(&i), "{tag}: {i}");
                if mode == FrozenGrowth::Exclude {
                    assert!(!frozen[i], "{tag}: grew frozen {i}");
                }
            }
            // Positions neither dropped nor grown keep their mask bit.
            for i in 0..n {
                if !grown.contains(&i) && !expect_dropped.contains(&i) {
                    assert_eq!(mask[i], mask0[i], "{tag}: {i}");
                }
            }
            if matches!(growth, Growth::Gradient | Growth::Momentum) {
                // The 3 largest scores among the candidates: kernel centres, largest index
                // first (the score grows with the index).
                let mut cands: Vec<usize> = (0..n)
                    .filter(|&i| !mask0[i] || expect_dropped.contains(&i))
                    .filter(|&i| mode == FrozenGrowth::Reuse || !frozen[i])
                    .filter(|&i| i % 9 == 4)
                    .collect();
                cands.sort_unstable_by(|a, b| b.cmp(a));
                assert_eq!(c.grown, cands[..3].to_vec(), "{tag}");
            }
            if growth == Growth::Unfired {
                assert!(
                    c.grown.iter().all(|&i| !mask0[i]),
                    "{tag}: regrew a fired one"
                );
            }
        }
    }
}

// ---- a conv + batch norm model on the mock host ---------------------------------------------

/// Index of the conv kernel, norm scale, norm shift and the two running statistics.
const CONV: usize = 2;
const SCALE: usize = 3;
const SHIFT: usize = 4;
const MEAN: usize = 5;
const VAR: usize = 6;

/// The mock's linear model (8 -> 4, 2 tasks, Adam) plus `convs.0.weight` `[4, 2, 3, 3]` and a
/// batch norm over its 4 channels: scale (role Weight, `[4]`), shift (Bias) and the running
/// statistics (Buffer: no optimizer state).
fn conv_host() -> MockHost {
    let mut h = MockHost::new(8, 4, 2);
    h.state_mut().task = 0;
    h.use_adam();
    let mut add = |name: &str, shape: Vec<usize>, role: i32, values: Vec<f32>| {
        let n = values.len();
        let trained = role != CLEF_ROLE_BUFFER;
        h.state_mut().params.push(MockParam {
            name: CString::new(name).unwrap(),
            shape,
            role,
            layer: 1,
            values,
            grads: vec![0.0; n],
            momentum: None,
            exp_avg: trained.then(|| vec![0.0; n]),
            exp_avg_sq: trained.then(|| vec![0.0; n]),
        });
    };
    let kernel: Vec<f32> = (0..72).map(|i| 0.05 * ((i % 13) as f32 - 6.5)).collect();
    add("convs.0.weight", vec![4, 2, 3, 3], CLEF_ROLE_WEIGHT, kernel);
    add("norms.0.weight", vec![4], CLEF_ROLE_WEIGHT, vec![1.0; 4]);
    add("norms.0.bias", vec![4], CLEF_ROLE_BIAS, vec![0.0; 4]);
    add(
        "norms.0.running_mean",
        vec![4],
        CLEF_ROLE_BUFFER,
        vec![0.0; 4],
    );
    add(
        "norms.0.running_var",
        vec![4],
        CLEF_ROLE_BUFFER,
        vec![1.0; 4],
    );
    h
}

/// One simulated training step of task `task`: every trainable value and state entry moves,
/// gradients get a pattern, and the running statistics move as a BN forward would move them.
fn step(host: &mut MockHost, task: usize, s: usize) {
    let amount = 0.01 * (s + 1 + 10 * task) as f32;
    for p in &mut host.state_mut().params {
        for (i, v) in p.values.iter_mut().enumerate() {
            *v += amount * (1.0 + (i % 7) as f32);
        }
        for (i, g) in p.grads.iter_mut().enumerate() {
            *g = ((i * 37 + s) % 11) as f32 - 5.0;
        }
        for st in [&mut p.exp_avg, &mut p.exp_avg_sq].into_iter().flatten() {
            st.iter_mut().for_each(|x| *x += 1.0);
        }
    }
}

fn vals(host: &MockHost, i: usize) -> Vec<f32> {
    host.state().params[i].values.clone()
}

fn cfg_text(growth: &str, bias: &str) -> String {
    format!(
        "sparsity = 0.75\ninit = \"erk\"\ngrowth = \"{growth}\"\nupdate_every = 2\n\
         task_steps = 6\nbias = \"{bias}\"\n"
    )
}

/// Trains task `task` for 6 steps, checking after every step that the kernel is zero outside
/// the working mask, the mask keeps its size, and the norm tensors are left as trained.
fn train(p: &mut MockPlugin, h: &mut MockHost, task: usize, active: usize) {
    h.state_mut().task = task;
    p.on_task_start(h).unwrap();
    for s in 0..6 {
        step(h, task, s);
        let norms: Vec<Vec<f32>> = (SCALE..=VAR).map(|i| vals(h, i)).collect();
        p.after_backward(h, 1.0).unwrap();
        p.after_step(h).unwrap();
        let after: Vec<Vec<f32>> = (SCALE..=VAR).map(|i| vals(h, i)).collect();
        assert_eq!(norms, after, "norm tensors are never masked");
        let st = kit::saved::<Dst>(p, h);
        let conv = &st.layers[1];
        assert_eq!(conv.mask.iter().filter(|&&m| m).count(), active);
        let w = vals(h, CONV);
        for (i, (&w, &m)) in w.iter().zip(&conv.mask).enumerate() {
            if !m {
                assert_eq!(w, 0.0, "task {task} step {s}: {i} outside the mask");
            }
        }
    }
    p.on_task_end(h).unwrap();
}

/// Values of the listed tensors while task `j` is evaluated.
fn at_eval(p: &mut MockPlugin, h: &mut MockHost, j: usize, which: &[usize]) -> Vec<Vec<f32>> {
    p.before_eval(h, Some(j)).unwrap();
    let out = which.iter().map(|&i| vals(h, i)).collect();
    p.after_eval(h).unwrap();
    out
}

#[test]
fn conv_kernels_are_masked_and_norm_tensors_kept_per_task() {
    for growth in ["random", "unfired", "gradient", "momentum"] {
        let mut h = conv_host();
        let mut p = MockPlugin::create::<Dst>(&cfg_text(growth, "per-task")).unwrap();
        p.on_model_built(&mut h).unwrap();
        let st = kit::saved::<Dst>(&mut p, &mut h);
        let names: Vec<&str> = st.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["layers.0.weight", "convs.0.weight"], "{growth}");
        assert_eq!(st.layers[1].shape, vec![4, 2, 3, 3]);
        let d = erk_densities(&[vec![4, 8], vec![4, 2, 3, 3]], 0.25);
        assert_eq!(st.densities(), &d[..]);
        let active = exact_count(d[1], 72);

        train(&mut p, &mut h, 0, active);
        // Per-layer densities name the conv layer; the norms have none.
        assert_eq!(
            h.reported(0, "density.convs.0.weight"),
            Some(active as f64 / 72.0)
        );
        assert_eq!(h.reported(0, "density.norms.0.weight"), None);
        assert_eq!(h.reported(0, "topology_updates"), Some(3.0));
        let all = [CONV, SCALE, SHIFT, MEAN, VAR];
        let task0 = at_eval(&mut p, &mut h, 0, &all);
        assert_eq!(task0[1..], [SCALE, SHIFT, MEAN, VAR].map(|i| vals(&h, i)));

        // Task 1 starts from θ0's norm parameters and fresh running statistics.
        h.state_mut().task = 1;
        p.on_task_start(&mut h).unwrap();
        assert_eq!(vals(&h, SCALE), vec![1.0; 4], "{growth}");
        assert_eq!(
            (vals(&h, MEAN), vals(&h, VAR)),
            (vec![0.0; 4], vec![1.0; 4])
        );
        let frozen0 = kit::saved::<Dst>(&mut p, &mut h).layers[1].frozen.clone();
        assert_eq!(frozen0.iter().filter(|&&f| f).count(), active);
        let mut fired = 0;
        for s in 0..6 {
            step(&mut h, 1, s);
            p.after_backward(&mut h, 1.0).unwrap();
            p.after_step(&mut h).unwrap();
            let st = kit::saved::<Dst>(&mut p, &mut h);
            let conv = &st.layers[1];
            assert_eq!(conv.mask.iter().filter(|&&m| m).count(), active);
            // Frozen positions in the working mask carry their task-0 value, bit for bit.
            let w = vals(&h, CONV);
            for i in 0..72 {
                if conv.mask[i] && frozen0[i] {
                    assert_eq!(w[i].to_bits(), conv.consolidated[i].to_bits(), "{i}");
                }
            }
            fired = conv.fired.iter().filter(|&&f| f).count();
        }
        if matches!(growth, "random" | "unfired") {
            assert!(fired > active, "{growth}: no topology change ({fired})");
        }
        p.on_task_end(&mut h).unwrap();
        // Task 0 evaluates exactly as before task 1 trained: kernel, norm parameters and
        // running statistics; task 1 sees its own.
        assert_eq!(at_eval(&mut p, &mut h, 0, &all), task0, "{growth}");
        let task1 = at_eval(&mut p, &mut h, 1, &all);
        assert_ne!(task1[3], task0[3], "{growth}: running means differ by task");
        assert_eq!(
            task1[3],
            vals(&h, MEAN),
            "after_eval restores the current values"
        );
    }
}

#[test]
fn shared_norm_parameters_but_per_task_running_statistics() {
    let mut h = conv_host();
    let mut p = MockPlugin::create::<Dst>(&cfg_text("random", "shared")).unwrap();
    p.on_model_built(&mut h).unwrap();
    let active = exact_count(erk_densities(&[vec![4, 8], vec![4, 2, 3, 3]], 0.25)[1], 72);
    train(&mut p, &mut h, 0, active);
    let mean0 = vals(&h, MEAN);
    let scale0 = vals(&h, SCALE);
    h.state_mut().task = 1;
    p.on_task_start(&mut h).unwrap();
    // Shared: the scale goes on from where task 0 left it; the statistics start afresh.
    assert_eq!(vals(&h, SCALE), scale0);
    assert_eq!(vals(&h, MEAN), vec![0.0; 4]);
    for s in 0..6 {
        step(&mut h, 1, s);
        p.after_backward(&mut h, 1.0).unwrap();
        p.after_step(&mut h).unwrap();
    }
    p.on_task_end(&mut h).unwrap();
    let e0 = at_eval(&mut p, &mut h, 0, &[SCALE, MEAN]);
    assert_eq!(
        e0[0],
        vals(&h, SCALE),
        "shared scale: the last trained value"
    );
    assert_eq!(e0[1], mean0, "task 0's own running mean");
}
