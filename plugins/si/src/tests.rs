//! Tests of the `si` plugin against the SDK's mock host (a linear model `z = W x + b`: two
//! tensors, `W` of 2 × 2 and `b` of 2 in the hand-computed cases).

use clef_sdk::abi::CLEF_ROLE_BUFFER;
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;

clef_sdk::standard_tests!(
    Si,
    config = "c = 0.5\nxi = 0.01",
    docs = "../../docs/strategies.md"
);

fn config(c: f64, xi: f64) -> String {
    format!("c = {c:?}\nxi = {xi:?}")
}

/// Sets `W` and `b` of the mock.
fn set_theta(host: &mut MockHost, w: [f32; 4], b: [f32; 2]) {
    let s = host.state_mut();
    s.params[0].values = w.to_vec();
    s.params[1].values = b.to_vec();
}

/// Adds `dw`, `db` to the parameters (a step the test makes instead of the optimizer).
fn move_theta(host: &mut MockHost, dw: [f32; 4], db: [f32; 2]) {
    let s = host.state_mut();
    s.params[0]
        .values
        .iter_mut()
        .zip(dw)
        .for_each(|(v, d)| *v += d);
    s.params[1]
        .values
        .iter_mut()
        .zip(db)
        .for_each(|(v, d)| *v += d);
}

fn set_grads(host: &mut MockHost, gw: [f32; 4], gb: [f32; 2]) {
    let s = host.state_mut();
    s.params[0].grads = gw.to_vec();
    s.params[1].grads = gb.to_vec();
}

/// One step made by hand: gradient `g`, hooks around an update `d`.
fn hand_step(
    plugin: &mut MockPlugin,
    host: &mut MockHost,
    g: ([f32; 4], [f32; 2]),
    d: ([f32; 4], [f32; 2]),
) {
    set_grads(host, g.0, g.1);
    plugin.after_backward(host, 0.0).unwrap();
    move_theta(host, d.0, d.1);
    plugin.after_step(host).unwrap();
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: tensors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: tensor {i}");
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= tol * w.abs().max(1.0),
                "{what}: tensor {i}[{j}]: got {g}, want {w}"
            );
        }
    }
}

/// Task 0 of the hand-computed case: θ0, two steps, task end (ξ = 0.1).
fn task0(plugin: &mut MockPlugin, host: &mut MockHost) {
    host.state_mut().task = 0;
    set_theta(host, [1.0, 2.0, 3.0, 4.0], [0.5, -0.5]);
    plugin.on_task_start(host).unwrap();
    hand_step(
        plugin,
        host,
        ([0.5, -1.0, 0.0, 2.0], [1.0, 0.0]),
        ([-0.1, 0.3, 0.2, -0.5], [-0.2, 0.1]),
    );
    hand_step(
        plugin,
        host,
        ([0.2, 0.4, -1.0, 1.0], [0.0, -2.0]),
        ([0.1, -0.3, 0.1, 0.5], [0.2, 0.4]),
    );
}

#[test]
fn the_path_integral_after_two_known_steps_and_omega_at_the_task_end() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    task0(&mut plugin, &mut host);
    // ω = −g1·d1 − g2·d2:
    //   step 1: W (0.05, 0.3, 0, 1), b (0.2, 0); step 2: W (−0.02, 0.12, 0.1, −0.5), b (0, 0.8).
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_close(
        &s.path,
        &[vec![0.03, 0.42, 0.1, 0.5], vec![0.2, 0.8]],
        1e-6,
        "ω",
    );
    assert!(
        s.omega.is_empty() && s.anchor.is_empty(),
        "no Ω before a task ends"
    );
    assert_eq!(s.start, vec![vec![1.0, 2.0, 3.0, 4.0], vec![0.5, -0.5]]);

    plugin.on_task_end(&mut host).unwrap();
    // Δ = d1 + d2 = W (0, 0, 0.3, 0), b (0, 0.5); Ω = ω / (Δ² + 0.1):
    //   W (0.3, 4.2, 0.1/0.19, 5), b (2, 0.8/0.35).
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_close(
        &s.omega,
        &[vec![0.3, 4.2, 0.1 / 0.19, 5.0], vec![2.0, 0.8 / 0.35]],
        1e-6,
        "Ω",
    );
    assert_close(
        &s.anchor,
        &[vec![1.0, 2.0, 3.3, 4.0], vec![0.5, 0.0]],
        1e-6,
        "θ*",
    );
    assert_eq!(
        s.anchor,
        host.values(),
        "θ* is θ at the task end, bit for bit"
    );
    assert_eq!(s.start, s.anchor);
    assert_eq!(s.path, vec![vec![0.0; 4], vec![0.0; 2]], "ω is reset");
}

#[test]
fn no_penalty_before_the_first_task_ends() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    host.state_mut().task = 0;
    plugin.on_task_start(&mut host).unwrap();
    move_theta(&mut host, [1.0; 4], [1.0; 2]);
    set_grads(&mut host, [0.25; 4], [0.5; 2]);
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), vec![vec![0.25; 4], vec![0.5; 2]]);
}

#[test]
fn the_penalty_gradient_matches_finite_differences() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(0.7, 0.1)).unwrap();
    task0(&mut plugin, &mut host);
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    // Task 1, away from θ*.
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    move_theta(&mut host, [0.3, -0.2, 0.5, 0.1], [-0.4, 0.25]);
    set_grads(&mut host, [0.0; 4], [0.0; 2]);
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let after = host.grads();
    // The surrogate c·Σ Ω (θ − θ*)², in f64 from the plugin's own state.
    let loss = |theta: &[Vec<f64>]| -> f64 {
        let mut sum = 0.0;
        for ((t, om), a) in theta.iter().zip(&s.omega).zip(&s.anchor) {
            for ((&t, &om), &a) in t.iter().zip(om).zip(a) {
                sum += f64::from(om) * (t - f64::from(a)).powi(2);
            }
        }
        0.7 * sum
    };
    let checked =
        kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-3, 1e-3);
    assert_eq!(checked, 6);
    // By hand for one entry: 2·0.7·Ω_b1·(θ − θ*) = 1.4 · (0.8/0.35) · 0.25.
    assert!((f64::from(after[1][1]) - 1.4 * (0.8 / 0.35) * 0.25).abs() < 1e-5);
}

#[test]
fn the_path_integral_uses_the_task_gradient_without_the_penalty() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    task0(&mut plugin, &mut host);
    plugin.on_task_end(&mut host).unwrap();
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    // θ − θ* = W (0.1, 0, 0, 0), b (0, −0.1): the penalty adds 2·Ω·(θ − θ*) = W (0.06, 0, 0, 0),
    // b (0, −2·(0.8/0.35)·0.1).
    move_theta(&mut host, [0.1, 0.0, 0.0, 0.0], [0.0, -0.1]);
    let g = ([1.0, -1.0, 0.5, 0.0], [0.0, 2.0]);
    set_grads(&mut host, g.0, g.1);
    plugin.after_backward(&mut host, 0.0).unwrap();
    let grads = host.grads();
    assert!((grads[0][0] - 1.06).abs() < 1e-6, "{grads:?}");
    assert!((f64::from(grads[1][1]) - (2.0 - 0.2 * 0.8 / 0.35)).abs() < 1e-5);
    // The step moves every parameter by 0.1: ω = −g·0.1 (the task gradient), not −(g + penalty)·0.1.
    move_theta(&mut host, [0.1; 4], [0.1; 2]);
    plugin.after_step(&mut host).unwrap();
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_close(
        &s.path,
        &[vec![-0.1, 0.1, -0.05, 0.0], vec![0.0, -0.2]],
        1e-6,
        "ω",
    );
}

#[test]
fn omega_is_clamped_at_zero_as_in_the_official_code() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    task0(&mut plugin, &mut host);
    plugin.on_task_end(&mut host).unwrap();
    // Task 1: one step that moves W[0] by +1 with gradient +1 (ω = −1) and b[0] by +1 with
    // gradient +0.5 (ω = −0.5). Δ = 1: Ω_W0 = max(0, 0.3 − 1/1.1) = 0, Ω_b0 = max(0, 2 − 0.5/1.1).
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    hand_step(
        &mut plugin,
        &mut host,
        ([1.0, 0.0, 0.0, 0.0], [0.5, 0.0]),
        ([1.0, 0.0, 0.0, 0.0], [1.0, 0.0]),
    );
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_close(
        &s.omega,
        &[
            vec![0.0, 4.2, 0.1 / 0.19, 5.0],
            vec![2.0 - 0.5 / 1.1, 0.8 / 0.35],
        ],
        1e-6,
        "Ω",
    );
}

#[test]
fn with_the_optimizer_the_path_integral_is_minus_g_times_the_actual_update() {
    // Real steps on the mock (SGD with momentum 0.9): ω = Σ −g·Δθ with g the batch loss's
    // gradient, observed around each step, in task 1 where the penalty is active.
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(2.0, 0.05)).unwrap();
    kit::run_task(&mut plugin, &mut host, 0);
    let s0 = kit::saved::<Si>(&mut plugin, &mut host);
    assert!(s0.omega.iter().flatten().any(|&o| o > 0.0));
    {
        let s = host.state_mut();
        s.task = 1;
        let d = s.input_dim;
        s.batch_x = s.tasks[1].train_x[..4 * d].to_vec();
        s.batch_targets = s.tasks[1].train_y[..4].to_vec();
        s.batch_current_rows = 4;
    }
    plugin.on_task_start(&mut host).unwrap();
    let mut want: Vec<Vec<f64>> = host.values().iter().map(|t| vec![0.0; t.len()]).collect();
    let start = host.values();
    for step in 0..4 {
        plugin.before_batch(&mut host).unwrap();
        host.loss_backward(0).unwrap();
        let g = host.grads();
        plugin.after_backward(&mut host, 0.0).unwrap();
        if step > 0 {
            // θ = θ* at the first step; after it the penalty adds to the gradient.
            assert_ne!(host.grads(), g, "the penalty is active");
        }
        let before = host.values();
        host.step();
        plugin.after_step(&mut host).unwrap();
        for (i, w) in want.iter_mut().enumerate() {
            for (j, w) in w.iter_mut().enumerate() {
                let d = f64::from(host.values()[i][j]) - f64::from(before[i][j]);
                *w -= f64::from(g[i][j]) * d;
            }
        }
    }
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_close(&s.path, &want, 1e-4, "ω");
    assert_eq!(s.start, start);
    // Ω after task 1 = max(0, Ω0 + ω/(Δ² + ξ)).
    plugin.on_task_end(&mut host).unwrap();
    let end = host.values();
    let s1 = kit::saved::<Si>(&mut plugin, &mut host);
    let omega: Vec<Vec<f64>> = (0..2)
        .map(|i| {
            (0..end[i].len())
                .map(|j| {
                    let delta = f64::from(end[i][j] - start[i][j]);
                    (f64::from(s0.omega[i][j]) + f64::from(s.path[i][j]) / (delta * delta + 0.05))
                        .max(0.0)
                })
                .collect()
        })
        .collect();
    assert_close(&s1.omega, &omega, 1e-4, "Ω");
}

#[test]
fn batch_norm_buffers_are_skipped() {
    let mut host = MockHost::new(2, 2, 2);
    let mut buffer = host.state().params[1].clone();
    buffer.name = std::ffi::CString::new("norms.0.running_mean").unwrap();
    buffer.role = CLEF_ROLE_BUFFER;
    buffer.values = vec![5.0, -5.0];
    host.state_mut().params.push(buffer);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    host.state_mut().task = 0;
    plugin.on_task_start(&mut host).unwrap();
    set_grads(&mut host, [1.0; 4], [1.0; 2]);
    host.state_mut().params[2].grads = vec![1.0, 1.0];
    plugin.after_backward(&mut host, 0.0).unwrap();
    move_theta(&mut host, [-0.1; 4], [-0.1; 2]);
    host.state_mut().params[2].values = vec![7.0, 1.0]; // running statistics move
    plugin.after_step(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Si>(&mut plugin, &mut host);
    assert_eq!(s.omega.len(), 3);
    assert!(s.omega[2].is_empty() && s.anchor[2].is_empty() && s.path[2].is_empty());
    assert!(s.omega[0].iter().all(|&o| o > 0.0));
    // Task 1: the buffer gets no penalty gradient, the others do.
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    move_theta(&mut host, [0.5; 4], [0.5; 2]);
    host.state_mut().params[2].values = vec![0.0, 0.0];
    set_grads(&mut host, [0.0; 4], [0.0; 2]);
    host.state_mut().params[2].grads = vec![0.0, 0.0];
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    assert_eq!(g[2], vec![0.0, 0.0]);
    assert!(g[0].iter().chain(&g[1]).all(|&v| v > 0.0), "{g:?}");
}

#[test]
fn a_state_of_another_model_is_an_error() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    task0(&mut plugin, &mut host);
    plugin.on_task_end(&mut host).unwrap();
    let saved = plugin.save_state(&mut host).unwrap();
    let mut other = MockHost::new(3, 2, 2);
    let mut fresh = MockPlugin::create::<Si>(&config(1.0, 0.1)).unwrap();
    fresh.load_state(&mut other, &saved).unwrap();
    let err = fresh.after_backward(&mut other, 0.0).unwrap_err();
    assert!(
        err.message
            .contains("parameter 0 has 6 values, the stored copy 4"),
        "{err}"
    );
}
