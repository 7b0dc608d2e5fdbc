//! Tests of the `er-ace` plugin against the SDK's mock host (a linear model `z = W x + b`, 2
//! inputs and 4 outputs, two tasks of units {0, 1} and {2, 3}).

use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::testing::{AppendedRows, MockHost, MockPlugin};

use clef_sdk::memory::Reservoir;

use super::*;

clef_sdk::standard_tests!(
    ErAce,
    config = "memory_size = 5\nreplay_batch_size = 3",
    docs = "../../docs/strategies.md"
);

const D: usize = 2;
const K: usize = 4;

fn config(memory: usize, replay: usize) -> String {
    format!("memory_size = {memory}\nreplay_batch_size = {replay}")
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

fn ce(z: &[f64], t: usize, allowed: &[usize]) -> f64 {
    let s: f64 = allowed.iter().map(|&u| z[u].exp()).sum();
    s.ln() - z[t]
}

fn memory(plugin: &mut MockPlugin, host: &mut MockHost) -> Reservoir {
    kit::saved::<ErAce>(plugin, host)
        .memory()
        .cloned()
        .expect("a memory after the first batch")
}

const W0: [f32; 8] = [0.1, 0.2, 0.3, -0.1, 0.0, 0.5, -0.2, 0.1];
const B0: [f32; 4] = [0.0, 0.1, 0.2, 0.3];
const X0: [f32; 2] = [1.0, -2.0];

#[test]
fn the_first_task_is_plain_cross_entropy_without_replay() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<ErAce>(&config(10, 0)).unwrap();
    // Two batches of task 0, each of one class only: task 0 masks nothing beyond the
    // training mask, so the other seen class still gets mass; and nothing is replayed.
    for step in 0..2 {
        set_batch(&mut host, 0, &X0, &[0]);
        plugin.before_batch(&mut host).unwrap();
        assert!(
            host.state().appended.is_empty(),
            "step {step} replayed in task 0"
        );
        let loss = plugin.loss(&mut host, 0).unwrap();
        // W x0 + b = (-0.3, 0.6, ...): CE(target 0) over {0, 1} = log(1 + e^0.9).
        let expected = (1.0 + 0.9f64.exp()).ln();
        assert!(
            (f64::from(loss) - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
    }
    assert_eq!(memory(&mut plugin, &mut host).len(), 2);
}

#[test]
fn current_rows_see_only_the_batch_classes_replayed_rows_every_seen_class() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<ErAce>(&config(1, 1)).unwrap();
    set_batch(&mut host, 0, &X0, &[1]);
    plugin.before_batch(&mut host).unwrap();
    plugin.loss(&mut host, 0).unwrap();

    // Task 1, a batch of class 2 only: the current rows' softmax is over {2} alone, so their
    // loss and gradient are 0; the replayed row (x0, class 1) is over all 4 seen units.
    let x1 = [0.5f32, 1.0, -1.0, 0.25];
    set_batch(&mut host, 1, &x1, &[2, 2]);
    plugin.before_batch(&mut host).unwrap();
    assert_eq!(
        host.state().appended,
        vec![AppendedRows {
            x: X0.to_vec(),
            targets: vec![1],
            masks: None
        }]
    );
    let theta = kit::theta(&host);
    let loss = plugin.loss(&mut host, 0).unwrap();
    // Replayed row: logits (-0.3, 0.6, -0.8, -0.1), CE(target 1) over the 4 units.
    let z0 = [-0.3f64, 0.6, -0.8, -0.1];
    let expected = z0.iter().map(|z| z.exp()).sum::<f64>().ln() - 0.6;
    assert!(
        (f64::from(loss) - expected).abs() < 1e-6,
        "{loss} vs {expected}"
    );
    let zeros: Vec<Vec<f32>> = host.grads().iter().map(|g| vec![0.0; g.len()]).collect();
    kit::assert_grad_matches_fd(
        &theta,
        &zeros,
        &host.grads(),
        |t| {
            let z = logits_at(t, &X0);
            // The current rows' terms: -log softmax over {2} = 0 whatever θ.
            ce(&z, 1, &[0, 1, 2, 3])
        },
        1e-4,
        1e-3,
    );
}

#[test]
fn the_asymmetric_loss_matches_finite_differences_on_a_mixed_batch() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<ErAce>(&config(2, 2)).unwrap();
    let xa = [1.0f32, -2.0, 0.5, 0.5];
    set_batch(&mut host, 0, &xa, &[1, 0]);
    plugin.before_batch(&mut host).unwrap();
    plugin.loss(&mut host, 0).unwrap();
    // Task 1, classes 2 and 3 present: the current rows over {2, 3}; the two replayed rows
    // (the memory's only two, in the order the draw picked them) over {0, 1, 2, 3}.
    let xb = [0.5f32, 1.0, -1.0, 0.25, 2.0, 0.0];
    set_batch(&mut host, 1, &xb, &[2, 3, 3]);
    plugin.before_batch(&mut host).unwrap();
    let replayed = host.state().appended[0].clone();
    assert_eq!(replayed.targets.len(), 2);
    let theta = kit::theta(&host);
    let loss = plugin.loss(&mut host, 0).unwrap();
    let objective = |t: &[Vec<f64>]| {
        let cur: f64 = (0..3)
            .map(|r| ce(&logits_at(t, &xb[2 * r..2 * r + 2]), [2, 3, 3][r], &[2, 3]))
            .sum::<f64>()
            / 3.0;
        let rep: f64 = (0..2)
            .map(|r| {
                let x = &replayed.x[2 * r..2 * r + 2];
                ce(&logits_at(t, x), replayed.targets[r], &[0, 1, 2, 3])
            })
            .sum::<f64>()
            / 2.0;
        cur + rep
    };
    assert!((f64::from(loss) - objective(&theta)).abs() < 1e-6);
    let zeros: Vec<Vec<f32>> = host.grads().iter().map(|g| vec![0.0; g.len()]).collect();
    kit::assert_grad_matches_fd(&theta, &zeros, &host.grads(), objective, 1e-4, 1e-3);
}

#[test]
fn task_il_replayed_rows_use_their_own_head() {
    let mut host = MockHost::new(D, K, 2);
    assert_eq!(host.state().setting, CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<ErAce>(&config(10, 2)).unwrap();
    set_batch(&mut host, 0, &[1.0, 0.0, 2.0, 0.0], &[0, 1]);
    plugin.train_step(&mut host).unwrap();
    set_batch(&mut host, 1, &[3.0, 1.0, 4.0, 1.0], &[2, 3]);
    plugin.train_step(&mut host).unwrap();
    let rows = host.state().appended[0].clone();
    assert_eq!(
        rows.masks,
        Some(vec![true, true, false, false, true, true, false, false])
    );
    let m = memory(&mut plugin, &mut host);
    assert_eq!((m.len(), m.seen()), (4, 4));
    assert_eq!(
        (0..4).map(|i| m.store().task(i)).collect::<Vec<_>>(),
        [0, 0, 1, 1]
    );
}

#[test]
fn the_present_classes_mask_is_the_batch_targets() {
    let k = 5;
    let logits = [0.0f32; 15];
    let masks = [1u8; 15];
    let targets = [3i64, 1, 3];
    // Two current rows (classes 3 and 1), one replayed.
    let b = LossBatch::new(k, 2, &[0.0; 3], &logits, &targets, &masks).unwrap();
    let mut cot = [0.0f32; 15];
    let (v, present) = asymmetric_ce(&b, 1, true, &mut cot);
    assert_eq!(present, vec![false, true, false, true, false]);
    // Zero logits: ln 2 for each current row (2 units), ln 5 for the replayed row.
    assert!((v - (2f64.ln() + 5f64.ln())).abs() < 1e-9);
    assert_eq!(&cot[..5], &[0.0, 0.25, 0.0, -0.25, 0.0]);
    let (_, all) = asymmetric_ce(&b, 1, false, &mut [0.0; 15]);
    assert_eq!(all, vec![true; 5]);
}

#[test]
fn rows_appended_by_someone_else_are_an_error() {
    let mut host = MockHost::new(D, K, 2);
    let mut plugin = MockPlugin::create::<ErAce>(&config(10, 2)).unwrap();
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
