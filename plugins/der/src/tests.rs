//! Tests of the `der` plugin against the SDK's mock host (a linear model `z = W x + b`, here
//! 2 inputs and 4 outputs, two tasks of two units each).

use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::testing::{AppendedRows, MockHost, MockPlugin};

use clef_sdk::memory::Reservoir;

use super::*;

clef_sdk::standard_tests!(
    Der,
    config = "memory_size = 5\nreplay_batch_size = 3\nalpha = 0.5",
    docs = "../../docs/strategies.md"
);

const D: usize = 2;
const K: usize = 4;

fn config(memory: usize, replay: usize, alpha: f64) -> String {
    format!("memory_size = {memory}\nreplay_batch_size = {replay}\nalpha = {alpha:?}")
}

fn set_batch(host: &mut MockHost, task: usize, x: &[f32], y: &[usize]) {
    let s = host.state_mut();
    s.task = task;
    s.batch_x = x.to_vec();
    s.batch_targets = y.to_vec();
    s.batch_current_rows = y.len();
    s.appended.clear();
}

fn set_theta(host: &mut MockHost, w: [f32; 8], b: [f32; 4]) {
    let s = host.state_mut();
    s.params[0].values = w.to_vec();
    s.params[1].values = b.to_vec();
}

/// `W x + b` at `theta` (f64; `theta[0]` is `W`, `K × D` row-major).
fn logits_at(theta: &[Vec<f64>], x: &[f32]) -> Vec<f64> {
    (0..K)
        .map(|o| {
            (0..D)
                .map(|i| theta[0][o * D + i] * f64::from(x[i]))
                .sum::<f64>()
                + theta[1][o]
        })
        .collect()
}

/// `-log softmax(z)[t]` over the units `allowed` (f64 reference).
fn ce(z: &[f64], t: usize, allowed: &[usize]) -> f64 {
    let s: f64 = allowed.iter().map(|&u| z[u].exp()).sum();
    s.ln() - z[t]
}

fn memory(plugin: &mut MockPlugin, host: &mut MockHost) -> Reservoir {
    kit::saved::<Der>(plugin, host)
        .dark()
        .memory()
        .cloned()
        .expect("a memory after the first batch")
}

/// θ0 of the hand-computed cases: `W x0 + b` at `x0 = (1, -2)` is `(-0.3, 0.6, -0.8, -0.1)`.
const W0: [f32; 8] = [0.1, 0.2, 0.3, -0.1, 0.0, 0.5, -0.2, 0.1];
const B0: [f32; 4] = [0.0, 0.1, 0.2, 0.3];
const X0: [f32; 2] = [1.0, -2.0];
const Z0: [f64; 4] = [-0.3, 0.6, -0.8, -0.1];

#[test]
fn the_first_step_is_plain_cross_entropy_and_stores_the_rows_logits() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<Der>(&config(1, 1, 0.5)).unwrap();
    set_batch(&mut host, 0, &X0, &[1]);
    plugin.before_batch(&mut host).unwrap();
    assert!(host.state().appended.is_empty(), "nothing to replay yet");
    let loss = plugin.loss(&mut host, 0).unwrap();
    // Class-IL task 0: softmax over units {0, 1}: log(e^-0.3 + e^0.6) - 0.6 = log(1 + e^-0.9).
    let expected = (1.0 + (-0.9f64).exp()).ln();
    assert!(
        (f64::from(loss) - expected).abs() < 1e-6,
        "{loss} vs {expected}"
    );
    // Gradient of the bias: p - onehot over {0, 1}, nothing on the other units.
    let p0 = 1.0 / (1.0 + 0.9f64.exp());
    let gb = &host.grads()[1];
    assert!((f64::from(gb[0]) - p0).abs() < 1e-6 && (f64::from(gb[1]) + p0).abs() < 1e-6);
    assert_eq!((gb[2], gb[3]), (0.0, 0.0));
    let m = memory(&mut plugin, &mut host);
    assert_eq!((m.len(), m.seen()), (1, 1));
    assert_eq!(
        (m.store().x(0), m.store().target(0), m.store().task(0)),
        (&X0[..], 1, 0)
    );
    for (s, z) in m.store().payload(0).iter().zip(Z0) {
        assert!((f64::from(*s) - z).abs() < 1e-6, "stored {s}, logit {z}");
    }
}

#[test]
fn the_loss_adds_alpha_times_the_logit_mse_of_a_replayed_row() {
    let alpha = 0.5;
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<Der>(&config(1, 1, alpha)).unwrap();
    set_batch(&mut host, 0, &X0, &[1]);
    plugin.before_batch(&mut host).unwrap();
    plugin.loss(&mut host, 0).unwrap();

    // Task 1 at θ1 = 0: every logit is 0.
    set_theta(&mut host, [0.0; 8], [0.0; 4]);
    let x1 = [0.5f32, 1.0];
    set_batch(&mut host, 1, &x1, &[3]);
    plugin.before_batch(&mut host).unwrap();
    let appended = host.state().appended.clone();
    assert_eq!(
        appended,
        vec![AppendedRows {
            x: X0.to_vec(),
            targets: vec![1],
            masks: None
        }]
    );
    let theta = kit::theta(&host);
    let loss = plugin.loss(&mut host, 0).unwrap();
    // CE over the 4 seen units at zero logits: ln 4; MSE: mean of Z0² = 1.1 / 4.
    let expected = 4f64.ln() + alpha * 1.1 / 4.0;
    assert!(
        (f64::from(loss) - expected).abs() < 1e-6,
        "{loss} vs {expected}"
    );
    // d/db: (1/4 - onehot(3)) from the current row, α·2(0 - Z0)/(1·4) from the replayed one.
    let gb = host.grads()[1].clone();
    let want = [0.25 + 0.075, 0.25 - 0.15, 0.25 + 0.2, -0.75 + 0.025];
    for (g, w) in gb.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{gb:?} vs {want:?}");
    }
    // And every entry against finite differences of the f64 objective.
    let stored: Vec<f64> = Z0.to_vec();
    let zeros: Vec<Vec<f32>> = host.grads().iter().map(|g| vec![0.0; g.len()]).collect();
    kit::assert_grad_matches_fd(
        &theta,
        &zeros,
        &host.grads(),
        |t| {
            let z1 = logits_at(t, &x1);
            let z0 = logits_at(t, &X0);
            let mse = z0
                .iter()
                .zip(&stored)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / 4.0;
            ce(&z1, 3, &[0, 1, 2, 3]) + alpha * mse
        },
        1e-4,
        1e-3,
    );
}

#[test]
fn the_memory_holds_stream_rows_with_the_logits_of_the_step_that_saw_them() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    let mut plugin = MockPlugin::create::<Der>(&config(3, 0, 1.0)).unwrap();
    // Row id i has inputs (i, 1); its logits at the step that saw it.
    let mut seen_logits: Vec<Vec<f64>> = Vec::new();
    for step in 0..6 {
        let task = step / 3;
        let ids = [2 * step, 2 * step + 1];
        let x: Vec<f32> = ids.iter().flat_map(|&i| [i as f32, 1.0]).collect();
        let y: Vec<usize> = ids.iter().map(|&i| 2 * task + i % 2).collect();
        set_batch(&mut host, task, &x, &y);
        let theta = kit::theta(&host);
        for r in 0..2 {
            seen_logits.push(logits_at(&theta, &x[r * D..(r + 1) * D]));
        }
        plugin.train_step(&mut host).unwrap();
        let m = memory(&mut plugin, &mut host);
        assert_eq!(
            (m.len(), m.seen()),
            ((2 * step + 2).min(3), 2 * step as u64 + 2)
        );
        // The optimizer moved θ, so the stored logits are not the current ones.
        assert_ne!(kit::theta(&host), theta);
    }
    let m = memory(&mut plugin, &mut host);
    let mut ids = Vec::new();
    for i in 0..m.len() {
        let id = m.store().x(i)[0] as usize;
        ids.push(id);
        assert_eq!(m.store().x(i), &[id as f32, 1.0]);
        let task = id / 6;
        assert_eq!(
            (m.store().task(i), m.store().target(i)),
            (task, 2 * task + id % 2)
        );
        for (s, z) in m.store().payload(i).iter().zip(&seen_logits[id]) {
            assert!(
                (f64::from(*s) - z).abs() < 1e-5,
                "row {id}: stored {s}, logit {z}"
            );
        }
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "duplicates in the memory");
}

#[test]
fn replayed_rows_keep_their_task_head_in_task_il() {
    let mut host = MockHost::new(D, K, 2);
    assert_eq!(host.state().setting, CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Der>(&config(10, 2, 1.0)).unwrap();
    set_batch(&mut host, 0, &[1.0, 0.0, 2.0, 0.0], &[0, 1]);
    plugin.train_step(&mut host).unwrap();
    set_batch(&mut host, 1, &[3.0, 1.0, 4.0, 1.0], &[2, 3]);
    plugin.train_step(&mut host).unwrap();
    let rows = host.state().appended[0].clone();
    assert_eq!(rows.targets.len(), 2);
    assert_eq!(
        rows.masks,
        Some(vec![true, true, false, false, true, true, false, false])
    );
}

#[test]
fn rows_appended_by_someone_else_are_an_error() {
    let mut host = MockHost::new(D, K, 2);
    let mut plugin = MockPlugin::create::<Der>(&config(10, 2, 1.0)).unwrap();
    set_batch(&mut host, 0, &X0, &[1]);
    plugin.before_batch(&mut host).unwrap();
    host.state_mut().appended.push(AppendedRows {
        x: X0.to_vec(),
        targets: vec![0],
        masks: None,
    });
    let err = plugin.loss(&mut host, 0).unwrap_err();
    assert!(
        err.message.contains("expected 1 current + 0 replayed"),
        "{err}"
    );
}

/// Four steps on one host; with `resume`, the plugin is saved after the third and a fresh
/// instance loaded from that state takes the fourth. Returns the last loss and θ.
fn four_steps(resume: bool) -> (u32, Vec<Vec<f32>>, Reservoir) {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    let mut plugin = MockPlugin::create::<Der>(&config(4, 0, 1.0)).unwrap();
    for step in 0..3 {
        let x: Vec<f32> = (0..2).flat_map(|r| [(2 * step + r) as f32, 0.5]).collect();
        set_batch(&mut host, 0, &x, &[0, 1]);
        plugin.train_step(&mut host).unwrap();
    }
    if resume {
        let saved = plugin.save_state(&mut host).unwrap();
        let before = memory(&mut plugin, &mut host);
        plugin = MockPlugin::create::<Der>(&config(4, 0, 1.0)).unwrap();
        plugin.load_state(&mut host, &saved).unwrap();
        assert_eq!(memory(&mut plugin, &mut host), before);
    }
    set_batch(&mut host, 0, &[9.0, 0.5, 10.0, 0.5], &[0, 1]);
    let loss = plugin.train_step(&mut host).unwrap();
    assert_eq!(
        host.state().appended[0].targets.len(),
        2,
        "replayed the restored rows"
    );
    (
        loss.to_bits(),
        host.values(),
        memory(&mut plugin, &mut host),
    )
}

#[test]
fn a_restored_plugin_continues_bit_identically() {
    assert_eq!(four_steps(true), four_steps(false));
}
