//! Tests of the `gdumb` plugin against the SDK's mock host.

use super::*;
use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockOptimizer, MockPlugin};

clef_sdk::standard_tests!(
    GDumb,
    config = "memory_size = 6\nepochs = 2\nbatch_size = 3",
    docs = "../../docs/strategies.md"
);

const DIM: usize = 3;
const OUTPUTS: usize = 4;

fn config(memory: usize, epochs: usize, batch: usize) -> String {
    format!("memory_size = {memory}\nepochs = {epochs}\nbatch_size = {batch}")
}

fn host(setting: i32) -> MockHost {
    let mut host = MockHost::new(DIM, OUTPUTS, 2);
    host.state_mut().setting = setting;
    host
}

/// Makes the next batch of task `task`: one row per target, the row's inputs `x(r)`.
fn set_batch(host: &mut MockHost, task: usize, targets: &[usize], x: impl Fn(usize) -> [f32; 3]) {
    let s = host.state_mut();
    s.task = task;
    s.batch_x = (0..targets.len()).flat_map(&x).collect();
    s.batch_targets = targets.to_vec();
    s.batch_current_rows = targets.len();
    s.appended.clear();
}

/// A batch whose rows carry a unique id in their first input, so stored rows can be traced.
fn id_batch(host: &mut MockHost, task: usize, id0: usize, targets: &[usize]) {
    set_batch(host, task, targets, |r| {
        [(id0 + r) as f32, task as f32, 0.5]
    });
}

fn memory_of(plugin: &mut MockPlugin, host: &mut MockHost) -> ClassBalanced {
    kit::saved::<GDumb>(plugin, host)
        .memory
        .expect("memory exists")
}

/// Separable inputs: class `c`'s prototype (a linear model with bias separates the four) plus
/// a small offset that differs per row.
fn separable(c: usize, r: usize) -> [f32; 3] {
    let p = [
        [2.0, 0.0, 0.0],
        [0.0, 2.0, 0.0],
        [0.0, 0.0, 2.0],
        [-2.0, -2.0, -2.0],
    ][c];
    let e = 0.1 * ((r % 5) as f32 - 2.0);
    [p[0] + e, p[1] - e, p[2] + 0.5 * e]
}

fn separable_batch(host: &mut MockHost, task: usize, targets: &[usize], salt: usize) {
    let t = targets.to_vec();
    set_batch(host, task, targets, move |r| separable(t[r], r + salt));
}

#[test]
fn the_memory_fills_then_balances_by_hand() {
    // Capacity 4. Task 0: four rows of class 0 fill it; three of class 1: the first two
    // replace class-0 rows (count(1)·|Y| = 0, then 2 < 4), the third is dropped (2·2 = 4).
    // Task 1, class 2: |Y| = 3; the first replaces a row of class 0 (tie 2–2: smallest id),
    // the second one of class 1 (the largest, 2), the third is dropped (2·3 = 6 ≥ 4).
    let mut host = host(CLEF_SETTING_CLASS_IL);
    let mut plugin = MockPlugin::create::<GDumb>(&config(4, 1, 4)).unwrap();
    id_batch(&mut host, 0, 0, &[0, 0, 0, 0]);
    plugin.before_batch(&mut host).unwrap();
    assert_eq!(memory_of(&mut plugin, &mut host).store().per_class(), [4]);
    id_batch(&mut host, 0, 4, &[1, 1, 1]);
    plugin.before_batch(&mut host).unwrap();
    let m = memory_of(&mut plugin, &mut host);
    assert_eq!(m.store().per_class(), [2, 2]);
    assert!(
        (0..4).all(|i| m.store().x(i)[0] as usize != 6),
        "row 6 was dropped"
    );
    id_batch(&mut host, 1, 7, &[2, 2, 2]);
    plugin.before_batch(&mut host).unwrap();
    let m = memory_of(&mut plugin, &mut host);
    assert_eq!(m.store().per_class(), [1, 1, 2]);
    assert_eq!(m.classes(), [0, 1, 2]);
    // Every stored row is a stream row, intact, with its class and its task.
    for i in 0..m.len() {
        let id = m.store().x(i)[0] as usize;
        let (target, task) = if id < 4 {
            (0, 0)
        } else if id < 7 {
            (1, 0)
        } else {
            (2, 1)
        };
        assert_eq!(m.store().x(i), &[id as f32, task as f32, 0.5]);
        assert_eq!((m.store().target(i), m.store().task(i)), (target, task));
    }
    let ids: Vec<usize> = (0..m.len()).map(|i| m.store().x(i)[0] as usize).collect();
    assert!(
        ids.contains(&7) && ids.contains(&8) && !ids.contains(&9),
        "{ids:?}"
    );
}

#[test]
fn a_long_stream_leaves_the_classes_balanced() {
    // 10 slots, four classes arriving in two tasks with very unequal frequencies: once every
    // class has been offered often enough the counts differ by at most one.
    let mut host = host(CLEF_SETTING_CLASS_IL);
    let mut plugin = MockPlugin::create::<GDumb>(&config(10, 1, 4)).unwrap();
    let mut id = 0;
    for b in 0..40 {
        let task = b / 20;
        let (a, c) = (2 * task, 2 * task + 1);
        let targets = [a, a, a, c, a, a];
        id_batch(&mut host, task, id, &targets);
        plugin.before_batch(&mut host).unwrap();
        id += targets.len();
    }
    let m = memory_of(&mut plugin, &mut host);
    let counts = m.store().per_class();
    assert_eq!((m.len(), counts.len()), (10, 4));
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 1, "{counts:?}");
}

#[test]
fn on_task_end_reinitialises_and_fits_a_separable_memory() {
    let mut host = host(CLEF_SETTING_CLASS_IL);
    let mut plugin = MockPlugin::create::<GDumb>(&config(12, 60, 4)).unwrap();
    for b in 0..3 {
        separable_batch(&mut host, 0, &[0, 1, 0, 1], 4 * b);
        plugin.train_step(&mut host).unwrap();
    }
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!(host.state().reinits, 1);
    for b in 0..3 {
        separable_batch(&mut host, 1, &[2, 3, 3, 2], 4 * b + 1);
        plugin.train_step(&mut host).unwrap();
    }
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!(host.state().reinits, 2);
    let m = memory_of(&mut plugin, &mut host);
    assert_eq!(m.store().per_class(), [3, 3, 3, 3]);
    // 60 epochs of ceil(12 / 4) steps since the re-initialisation.
    assert_eq!(host.state().steps, 60 * 3);
    // The fitted linear model classifies every stored row (argmax over the 4 seen classes),
    // computed here from its parameters.
    let (w, b) = (&host.values()[0], &host.values()[1]);
    for i in 0..m.len() {
        let x = m.store().x(i);
        let z: Vec<f32> = (0..OUTPUTS)
            .map(|o| b[o] + (0..DIM).map(|j| w[o * DIM + j] * x[j]).sum::<f32>())
            .collect();
        assert_eq!(
            fit::argmax_masked(&z, &[true; OUTPUTS]),
            Some(m.store().target(i)),
            "row {i}: {z:?}"
        );
    }
    assert_eq!(host.reported(1, "fit_accuracy"), Some(1.0));
    assert_eq!(host.reported(1, "memory_rows"), Some(12.0));
    let loss = host.reported(1, "fit_loss").unwrap();
    assert!(loss > 0.0 && loss < 0.1, "fit_loss {loss}");
}

#[test]
fn the_fit_does_not_depend_on_the_network_before_the_task_end() {
    // Same stream, same RNG, a different network at the task end: the same learner.
    let run = |perturb: bool| {
        let mut host = host(CLEF_SETTING_CLASS_IL);
        let mut plugin = MockPlugin::create::<GDumb>(&config(8, 5, 3)).unwrap();
        for b in 0..3 {
            separable_batch(&mut host, 0, &[0, 1, 1], 3 * b);
            plugin.before_batch(&mut host).unwrap();
        }
        if perturb {
            for p in &mut host.state_mut().params {
                p.values.iter_mut().for_each(|v| *v = 3.0 - *v);
                p.momentum.as_mut().unwrap().fill(0.7);
            }
        }
        plugin.on_task_end(&mut host).unwrap();
        host.values()
    };
    let (a, b) = (run(false), run(true));
    assert_eq!(a, b);
    // And the learner was trained: not the bare re-initialisation.
    let mut bare = host(CLEF_SETTING_CLASS_IL);
    let mut empty = MockPlugin::create::<GDumb>(&config(8, 5, 3)).unwrap();
    empty.on_task_end(&mut bare).unwrap();
    assert_eq!(bare.state().reinits, 1);
    assert_ne!(bare.values(), a);
}

#[test]
fn an_empty_memory_leaves_the_fresh_initialisation() {
    let mut host = host(CLEF_SETTING_CLASS_IL);
    let before = host.values();
    let mut plugin = MockPlugin::create::<GDumb>(&config(8, 5, 3)).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!((host.state().reinits, host.state().steps), (1, 0));
    assert_ne!(host.values(), before);
    assert_eq!(host.reported(0, "fit_accuracy"), None);
}

#[test]
fn stream_steps_leave_the_network_bit_identical() {
    let mut host = host(CLEF_SETTING_TASK_IL);
    let cfg = format!("{}\ntrain_on_stream = false", config(8, 3, 4));
    let mut plugin = MockPlugin::create::<GDumb>(&cfg).unwrap();
    let initial = host.values();
    for b in 0..4 {
        separable_batch(&mut host, 0, &[0, 1, 1, 0], b);
        let loss = plugin.train_step(&mut host).unwrap();
        assert!(loss > 0.0);
        // The step had a gradient to apply; the plugin undid it.
        assert!(host.grads()[0].iter().any(|&g| g != 0.0));
        assert_eq!(host.values(), initial, "batch {b} moved the network");
    }
    plugin.on_task_end(&mut host).unwrap();
    let fitted = host.values();
    assert_ne!(fitted, initial);
    for b in 0..3 {
        separable_batch(&mut host, 1, &[2, 3, 3, 2], b);
        plugin.train_step(&mut host).unwrap();
        assert_eq!(host.values(), fitted, "task 1 batch {b} moved the learner");
    }
}

/// One SGD step (lr, no momentum) of the mean masked softmax cross-entropy of the linear
/// model `w`, `b` over rows `x` with per-row masks, in f64.
fn sgd_step_reference(
    w: &[f32],
    b: &[f32],
    x: &[[f32; 3]],
    targets: &[usize],
    masks: &[[bool; OUTPUTS]],
    lr: f64,
) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() as f64;
    let mut gw = vec![0.0f64; w.len()];
    let mut gb = vec![0.0f64; b.len()];
    for ((x, &t), m) in x.iter().zip(targets).zip(masks) {
        let z: Vec<f64> = (0..OUTPUTS)
            .map(|o| {
                f64::from(b[o])
                    + (0..DIM)
                        .map(|j| f64::from(w[o * DIM + j]) * f64::from(x[j]))
                        .sum::<f64>()
            })
            .collect();
        let zmax = (0..OUTPUTS)
            .filter(|&o| m[o])
            .map(|o| z[o])
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..OUTPUTS)
            .filter(|&o| m[o])
            .map(|o| (z[o] - zmax).exp())
            .sum();
        for o in (0..OUTPUTS).filter(|&o| m[o]) {
            let p = (z[o] - zmax).exp() / sum;
            let dz = (p - if o == t { 1.0 } else { 0.0 }) / n;
            gb[o] += dz;
            for j in 0..DIM {
                gw[o * DIM + j] += dz * f64::from(x[j]);
            }
        }
    }
    let w1 = w
        .iter()
        .zip(&gw)
        .map(|(&w, g)| f64::from(w) - lr * g)
        .collect();
    let b1 = b
        .iter()
        .zip(&gb)
        .map(|(&b, g)| f64::from(b) - lr * g)
        .collect();
    (w1, b1)
}

/// The rows of tasks 0 and 1 streamed into a 4-slot memory, then the task-1 end with one
/// epoch of one step (batch 8 ≥ 4 rows) of plain SGD at lr 0.5 (times the schedule's factor
/// for epoch 0): the host's parameters after it, and the re-initialised parameters it started
/// from.
fn one_step_at_the_task_1_end(setting: i32, schedule: &str) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let lr = 0.5;
    let plain = MockOptimizer::Sgd {
        lr,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let mut host = host(setting);
    host.state_mut().optimizer = plain;
    let cfg = format!("{}\nschedule = \"{schedule}\"", config(4, 1, 8));
    let mut plugin = MockPlugin::create::<GDumb>(&cfg).unwrap();
    separable_batch(&mut host, 0, &[0, 1], 0);
    plugin.before_batch(&mut host).unwrap();
    separable_batch(&mut host, 1, &[2, 3], 1);
    plugin.before_batch(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    // The mock's re-initialisation depends on its seed and count only: an empty GDumb on an
    // identical host re-initialises to the same values and trains nothing.
    let mut bare = MockHost::new(DIM, OUTPUTS, 2);
    bare.state_mut().setting = setting;
    bare.state_mut().task = 1;
    MockPlugin::create::<GDumb>(&config(4, 1, 8))
        .unwrap()
        .on_task_end(&mut bare)
        .unwrap();
    (host.values(), bare.values())
}

fn assert_close(actual: &[f32], expected: &[f64], what: &str) {
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() < 1e-5,
            "{what}[{i}]: {a} against the reference {e}"
        );
    }
}

#[test]
fn task_il_rows_train_with_their_own_task_head() {
    // The default schedule's epoch 0 is a warm-up at 0.1 × lr: the step of plain SGD at 0.05.
    let (after, init) = one_step_at_the_task_1_end(CLEF_SETTING_TASK_IL, "cosine-restarts");
    let x = [
        separable(0, 0),
        separable(1, 1),
        separable(2, 1),
        separable(3, 2),
    ];
    let heads = [[true, true, false, false], [false, false, true, true]];
    let masks = [heads[0], heads[0], heads[1], heads[1]];
    let (w, b) = sgd_step_reference(&init[0], &init[1], &x, &[0, 1, 2, 3], &masks, 0.05);
    assert_close(&after[0], &w, "weight");
    assert_close(&after[1], &b, "bias");
    // The shared class-IL mask gives another step: the check tells them apart.
    let all = [[true; OUTPUTS]; 4];
    let (w_all, _) = sgd_step_reference(&init[0], &init[1], &x, &[0, 1, 2, 3], &all, 0.05);
    assert!(w.iter().zip(&w_all).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn class_il_rows_train_over_every_seen_class_and_domain_il_over_every_output() {
    let x = [
        separable(0, 0),
        separable(1, 1),
        separable(2, 1),
        separable(3, 2),
    ];
    for setting in [CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL] {
        let (after, init) = one_step_at_the_task_1_end(setting, "constant");
        let all = [[true; OUTPUTS]; 4];
        let (w, b) = sgd_step_reference(&init[0], &init[1], &x, &[0, 1, 2, 3], &all, 0.5);
        assert_close(&after[0], &w, "weight");
        assert_close(&after[1], &b, "bias");
    }
}

#[test]
fn the_restored_memory_gives_the_same_learner() {
    let cfg = config(6, 4, 4);
    let stream = |plugin: &mut MockPlugin, host: &mut MockHost| {
        for b in 0..4 {
            separable_batch(host, 0, &[0, 1, 1, 0, 1], 5 * b);
            plugin.train_step(host).unwrap();
        }
    };
    let mut host_a = host(CLEF_SETTING_CLASS_IL);
    let mut a = MockPlugin::create::<GDumb>(&cfg).unwrap();
    stream(&mut a, &mut host_a);
    let saved = a.save_state(&mut host_a).unwrap();
    let memory = memory_of(&mut a, &mut host_a);
    assert_eq!((memory.len(), memory.capacity()), (6, 6));
    a.on_task_end(&mut host_a).unwrap();

    // Another host brought to the same point (same stream, same RNG draws), a fresh instance
    // restored from the state.
    let mut host_b = host(CLEF_SETTING_CLASS_IL);
    stream(&mut MockPlugin::create::<GDumb>(&cfg).unwrap(), &mut host_b);
    let mut b = MockPlugin::create::<GDumb>(&cfg).unwrap();
    b.load_state(&mut host_b, &saved).unwrap();
    assert_eq!(memory_of(&mut b, &mut host_b), memory);
    b.on_task_end(&mut host_b).unwrap();
    assert_eq!(host_b.values(), host_a.values());
    assert_eq!(host_b.state().reports, host_a.state().reports);
}

#[test]
fn a_memory_of_another_width_is_an_error() {
    let mut plugin = MockPlugin::create::<GDumb>(&config(4, 1, 2)).unwrap();
    let mut wide = MockHost::new(DIM + 1, OUTPUTS, 2);
    {
        let s = wide.state_mut();
        s.batch_x = vec![0.0; 2 * (DIM + 1)];
        s.batch_targets = vec![0, 1];
        s.batch_current_rows = 2;
    }
    plugin.before_batch(&mut wide).unwrap();
    let mut host = host(CLEF_SETTING_TASK_IL);
    id_batch(&mut host, 0, 0, &[0, 1]);
    let err = plugin.before_batch(&mut host).unwrap_err();
    assert!(err.message.contains("4 features, the batch has 3"), "{err}");
}

#[test]
fn argmax_over_a_mask_by_hand() {
    let z = [0.5, 3.0, 2.0, 3.0];
    assert_eq!(fit::argmax_masked(&z, &[true; 4]), Some(1)); // tie 1–3: the lowest
    assert_eq!(fit::argmax_masked(&z, &[true, false, true, false]), Some(2));
    assert_eq!(fit::argmax_masked(&z, &[false; 4]), None);
}

#[test]
fn train_on_stream_lets_the_steps_through_and_changes_no_learner() {
    let run = |through: bool| {
        let mut host = host(CLEF_SETTING_CLASS_IL);
        let cfg = format!("{}\ntrain_on_stream = {through}", config(6, 3, 4));
        let mut plugin = MockPlugin::create::<GDumb>(&cfg).unwrap();
        let initial = host.values();
        for b in 0..3 {
            separable_batch(&mut host, 0, &[0, 1, 1, 0], b);
            plugin.train_step(&mut host).unwrap();
        }
        let moved = host.values() != initial;
        plugin.on_task_end(&mut host).unwrap();
        (moved, host.values())
    };
    let (frozen_moved, frozen) = run(false);
    let (through_moved, through) = run(true);
    assert!(!frozen_moved && through_moved);
    assert_eq!(frozen, through);
}

#[test]
fn the_schedule_factors_by_hand_and_against_pytorchs_recurrence() {
    use schedule::{factor, Schedule::*};
    let f = 0.01;
    let by_hand = [
        (0, 0.1),
        (1, 1.0),
        (2, 1.0),
        (3, 0.505), // f + (1 − f)·(1 + cos(π/2))/2
        (4, 1.0),
        (
            5,
            0.01 + 0.99 * (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0,
        ), // cos(π/4)
        (6, 0.505),
        (
            7,
            0.01 + 0.99 * (1.0 - std::f64::consts::FRAC_1_SQRT_2) / 2.0,
        ), // cos(3π/4)
        (8, 1.0),
    ];
    for (e, want) in by_hand {
        assert!(
            (factor(CosineRestarts, e, f) - want).abs() < 1e-12,
            "epoch {e}"
        );
        assert_eq!(factor(Constant, e, f), 1.0);
    }
    // torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0 = 1, T_mult = 2), stepped once
    // per epoch from epoch 2 as the official loop does (T_cur += 1; on T_cur ≥ T_i: T_cur −=
    // T_i, T_i *= 2).
    let (mut t_cur, mut t_i) = (0usize, 1usize);
    for e in 2..600 {
        t_cur += 1;
        if t_cur >= t_i {
            t_cur -= t_i;
            t_i *= 2;
        }
        let torch =
            f + (1.0 - f) * (1.0 + (std::f64::consts::PI * t_cur as f64 / t_i as f64).cos()) / 2.0;
        assert!(
            (factor(CosineRestarts, e, f) - torch).abs() < 1e-12,
            "epoch {e}"
        );
    }
}

/// The memory of `one_step_at_the_task_1_end` fitted for one epoch of two steps (batch 2) with
/// `optimizer`; returns the parameters.
fn two_steps(optimizer: MockOptimizer, schedule: &str) -> Vec<Vec<f32>> {
    let mut host = host(CLEF_SETTING_CLASS_IL);
    if matches!(optimizer, MockOptimizer::Adam { .. }) {
        host.use_adam();
    }
    host.state_mut().optimizer = optimizer;
    let cfg = format!("{}\nschedule = \"{schedule}\"", config(4, 1, 2));
    let mut plugin = MockPlugin::create::<GDumb>(&cfg).unwrap();
    separable_batch(&mut host, 0, &[0, 1], 0);
    plugin.before_batch(&mut host).unwrap();
    separable_batch(&mut host, 1, &[2, 3], 1);
    plugin.before_batch(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!(host.state().steps, 2);
    host.values()
}

#[test]
fn a_scaled_step_is_the_step_at_the_scaled_rate_with_momentum_and_adam() {
    // Epoch 0 of the default schedule scales every update by 0.1: the same two steps as the
    // optimizer at a tenth of the rate, its state carried from the first to the second.
    let sgd = |lr| MockOptimizer::Sgd {
        lr,
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: false,
    };
    let adam = |lr| MockOptimizer::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    for (full, tenth) in [(sgd(0.5), sgd(0.05)), (adam(0.01), adam(0.001))] {
        let scaled = two_steps(full, "cosine-restarts");
        let reference = two_steps(tenth, "constant");
        let unscaled = two_steps(full, "constant");
        for (a, b) in scaled.iter().zip(&reference) {
            for (&a, &b) in a.iter().zip(b) {
                assert!((a - b).abs() < 1e-6, "{full:?}: {a} against {b}");
            }
        }
        assert_ne!(scaled, unscaled);
    }
}
