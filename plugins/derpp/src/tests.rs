//! Tests of the `derpp` plugin against the SDK's mock host (a linear model `z = W x + b`, 2
//! inputs and 4 outputs, two tasks of two units each). The memory and the logit term are
//! `clef_der_core::Dark`'s, tested through `der`; these check the second draw.

use clef_sdk::abi::CLEF_SETTING_CLASS_IL;
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;

clef_sdk::standard_tests!(
    Derpp,
    config = "memory_size = 5\nreplay_batch_size = 3\nalpha = 0.5\nbeta = 0.25",
    docs = "../../docs/strategies.md"
);

const D: usize = 2;
const K: usize = 4;

fn config(memory: usize, replay: usize, alpha: f64, beta: f64) -> String {
    format!(
        "memory_size = {memory}\nreplay_batch_size = {replay}\nalpha = {alpha:?}\nbeta = {beta:?}"
    )
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

/// `W x0 + b` at `x0 = (1, -2)` is `(-0.3, 0.6, -0.8, -0.1)`.
const W0: [f32; 8] = [0.1, 0.2, 0.3, -0.1, 0.0, 0.5, -0.2, 0.1];
const B0: [f32; 4] = [0.0, 0.1, 0.2, 0.3];
const X0: [f32; 2] = [1.0, -2.0];
const Z0: [f64; 4] = [-0.3, 0.6, -0.8, -0.1];

#[test]
fn the_loss_adds_beta_times_the_cross_entropy_of_the_second_draw() {
    let (alpha, beta) = (0.5, 0.25);
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    set_theta(&mut host, W0, B0);
    let mut plugin = MockPlugin::create::<Derpp>(&config(1, 1, alpha, beta)).unwrap();
    set_batch(&mut host, 0, &X0, &[1]);
    plugin.before_batch(&mut host).unwrap();
    plugin.loss(&mut host, 0).unwrap();

    // Task 1 at θ1: W = 0, b = (0, 0, 0, 1).
    set_theta(&mut host, [0.0; 8], [0.0, 0.0, 0.0, 1.0]);
    let x1 = [0.5f32, 1.0];
    set_batch(&mut host, 1, &x1, &[2]);
    plugin.before_batch(&mut host).unwrap();
    // One row in memory: both draws are that row (logit draw first, then the label draw).
    let rows = host.state().appended[0].clone();
    assert_eq!(rows.x, [X0, X0].concat());
    assert_eq!(rows.targets, vec![1, 1]);
    let theta = kit::theta(&host);
    let loss = plugin.loss(&mut host, 0).unwrap();
    // Logits (0, 0, 0, 1) for every row. Current: CE(target 2) over 4 units = ln(3 + e) - 0;
    // MSE: mean((0,0,0,1) - Z0)² = (0.09 + 0.36 + 0.64 + 1.21) / 4; label term: CE(target 1)
    // = ln(3 + e).
    let l = (3.0 + 1f64.exp()).ln();
    let expected = l + alpha * (0.09 + 0.36 + 0.64 + 1.21) / 4.0 + beta * l;
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
            let (z1, z0) = (logits_at(t, &x1), logits_at(t, &X0));
            let mse = z0.iter().zip(Z0).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / 4.0;
            ce(&z1, 2, &[0, 1, 2, 3]) + alpha * mse + beta * ce(&z0, 1, &[0, 1, 2, 3])
        },
        1e-4,
        1e-3,
    );
}

#[test]
fn two_independent_draws_of_replay_batch_rows_each() {
    let mut host = MockHost::new(D, K, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    let mut plugin = MockPlugin::create::<Derpp>(&config(50, 3, 1.0, 0.5)).unwrap();
    let mut differ = 0;
    for step in 0..12 {
        let x: Vec<f32> = (0..4).flat_map(|r| [(4 * step + r) as f32, 1.0]).collect();
        set_batch(&mut host, 0, &x, &[0, 1, 0, 1]);
        plugin.train_step(&mut host).unwrap();
        let Some(rows) = host.state().appended.first().cloned() else {
            assert_eq!(step, 0, "replay starts once the memory holds rows");
            continue;
        };
        assert_eq!(rows.targets.len(), 6);
        let ids: Vec<u32> = rows.x.chunks(D).map(|r| r[0] as u32).collect();
        for draw in ids.chunks(3) {
            let mut d = draw.to_vec();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "a draw repeats a row: {ids:?}");
            assert!(
                d.iter().all(|&id| id < 4 * step as u32),
                "replayed its own rows"
            );
        }
        differ += usize::from(ids[..3] != ids[3..]);
    }
    assert!(
        differ >= 8,
        "the two draws are rarely different ({differ} of 11)"
    );
}
