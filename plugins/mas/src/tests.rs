//! Tests of the `mas` plugin against the SDK's mock host (a linear model `z = W x + b`, so
//! `∂‖f(x)‖²/∂W[o,i] = 2 f_o(x) x_i` and `∂/∂b[o] = 2 f_o(x)` for the units `o` of `f`).

use clef_sdk::abi::{CLEF_ROLE_BUFFER, CLEF_SETTING_CLASS_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;

clef_sdk::standard_tests!(
    Mas,
    config = "lambda = 2.0\nimportance_samples = 5",
    docs = "../../docs/strategies.md"
);

fn config(lambda: f64, samples: usize, per_sample: &str) -> String {
    format!("lambda = {lambda:?}\nimportance_samples = {samples}\nper_sample = \"{per_sample}\"")
}

/// Ω_t of `task` over all its training samples, by hand in f64, for the units `units`.
fn hand_omega(host: &MockHost, task: usize, units: &[usize]) -> Vec<Vec<f64>> {
    let s = host.state();
    let (d, k) = (s.input_dim, s.num_outputs);
    let w: Vec<f64> = s.params[0].values.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = s.params[1].values.iter().map(|&v| f64::from(v)).collect();
    let (mut ow, mut ob) = (vec![0.0; k * d], vec![0.0; k]);
    let t = &s.tasks[task];
    let n = t.train_y.len();
    for r in 0..n {
        let x: Vec<f64> = t.train_x[r * d..(r + 1) * d]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        for &o in units {
            let f = (0..d).map(|i| w[o * d + i] * x[i]).sum::<f64>() + b[o];
            for i in 0..d {
                ow[o * d + i] += (2.0 * f * x[i]).abs() / n as f64;
            }
            ob[o] += (2.0 * f).abs() / n as f64;
        }
    }
    vec![ow, ob]
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f64>], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: tensors");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: tensor {i}");
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= rel * w.abs() + 1e-9,
                "{what}: tensor {i}[{j}]: got {g}, want {w}"
            );
        }
    }
}

/// A mock whose outputs are clearly non-zero (the default weights are ~0.1).
fn host() -> MockHost {
    let mut host = MockHost::new(3, 4, 2);
    for v in &mut host.state_mut().params[0].values {
        *v *= 10.0;
    }
    host
}

#[test]
fn the_importance_of_a_task_matches_the_hand_computed_value() {
    let mut host = host();
    host.seed_grads();
    let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 0, "sample-grads")).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Mas>(&mut plugin, &mut host);
    let want = hand_omega(&host, 0, &[0, 1]);
    assert_close(&s.omega, &want, 1e-5, "Ω after task 0");
    // Task-IL: units of task 1's head get no importance; the others do.
    assert!(s.omega[1][2] == 0.0 && s.omega[1][3] == 0.0);
    assert!(
        s.omega[1][0] > 1e-3 && s.omega[1][1] > 1e-3,
        "{:?}",
        s.omega
    );
    assert_eq!(s.anchor, host.values());
    assert_eq!(s.tasks, 1);
    assert!(host.grads().iter().flatten().all(|&g| g == 0.0));
}

#[test]
fn sample_grads_and_one_vjp_per_sample_give_the_same_importance() {
    for setting in [None, Some(CLEF_SETTING_CLASS_IL)] {
        let mut omegas = Vec::new();
        for method in ["sample-grads", "vjp"] {
            let mut host = host();
            if let Some(s) = setting {
                host.state_mut().setting = s;
            }
            host.state_mut().task = 1;
            let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 0, method)).unwrap();
            plugin.on_task_end(&mut host).unwrap();
            omegas.push(kit::saved::<Mas>(&mut plugin, &mut host).omega);
        }
        let (a, b) = (&omegas[0], &omegas[1]);
        let b64: Vec<Vec<f64>> = b
            .iter()
            .map(|t| t.iter().map(|&v| f64::from(v)).collect())
            .collect();
        assert_close(a, &b64, 1e-6, "sample_grads vs vjp");
        // Class-IL at task 1 covers every unit; task-IL only task 1's head.
        let zero_units = a[1].iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zero_units, if setting.is_some() { 0 } else { 2 });
    }
}

#[test]
fn importances_add_up_over_tasks_and_the_anchor_moves() {
    let mut host = host();
    let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 0, "sample-grads")).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let first = hand_omega(&host, 0, &[0, 1]);
    host.state_mut().task = 1;
    host.perturb(0.2);
    plugin.on_task_end(&mut host).unwrap();
    let second = hand_omega(&host, 1, &[2, 3]);
    let s = kit::saved::<Mas>(&mut plugin, &mut host);
    let want: Vec<Vec<f64>> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| a.iter().zip(b).map(|(a, b)| a + b).collect())
        .collect();
    assert_close(&s.omega, &want, 1e-5, "Ω after two tasks");
    assert_eq!(s.anchor, host.values());
    assert_eq!(s.tasks, 2);
}

#[test]
fn a_subset_uses_that_many_samples() {
    let mut host = host();
    let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 3, "sample-grads")).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Mas>(&mut plugin, &mut host);
    // The mean over 3 of the 8 samples: some bias entry |2 f_o| sum differs from the full mean,
    // and Ω·3 must be a sum of exactly 3 per-sample magnitudes of the bias (|2 f_o(x_r)|).
    let full = hand_omega(&host, 0, &[0, 1]);
    assert!((f64::from(s.omega[1][0]) - full[1][0]).abs() > 1e-6);
    let st = host.state();
    let d = st.input_dim;
    let per: Vec<f64> = (0..8)
        .map(|r| {
            let x = &st.tasks[0].train_x[r * d..(r + 1) * d];
            let f: f64 = (0..d)
                .map(|i| f64::from(st.params[0].values[i]) * f64::from(x[i]))
                .sum::<f64>()
                + f64::from(st.params[1].values[0]);
            (2.0 * f).abs()
        })
        .collect();
    let target = 3.0 * f64::from(s.omega[1][0]);
    let mut found = false;
    for a in 0..8 {
        for b in a + 1..8 {
            for c in b + 1..8 {
                found |= (per[a] + per[b] + per[c] - target).abs() < 1e-4;
            }
        }
    }
    assert!(
        found,
        "Ω·3 = {target} is no sum of 3 per-sample magnitudes {per:?}"
    );
}

#[test]
fn no_penalty_before_the_first_task_ends() {
    let mut host = host();
    let mut plugin = MockPlugin::create::<Mas>(&config(10.0, 0, "sample-grads")).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 1.0).unwrap();
    assert_eq!(host.grads(), before);
}

#[test]
fn the_penalty_gradient_matches_finite_differences() {
    let lambda = 3.0;
    let mut host = host();
    let mut plugin = MockPlugin::create::<Mas>(&config(lambda, 0, "sample-grads")).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Mas>(&mut plugin, &mut host);
    host.state_mut().task = 1;
    host.perturb(0.05);
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 1.0).unwrap();
    let after = host.grads();
    let penalty = |theta: &[Vec<f64>]| {
        let mut sum = 0.0;
        for ((t, om), a) in theta.iter().zip(&s.omega).zip(&s.anchor) {
            for ((&t, &om), &a) in t.iter().zip(om).zip(a) {
                sum += f64::from(om) * (t - f64::from(a)).powi(2);
            }
        }
        lambda * sum
    };
    let checked =
        kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, penalty, 1e-4, 1e-4);
    assert_eq!(checked, 3 * 4 + 4);
}

#[test]
fn batch_norm_buffers_get_no_importance_and_no_penalty() {
    let mut host = host();
    let mut buffer = host.state().params[1].clone();
    buffer.name = std::ffi::CString::new("norms.0.running_mean").unwrap();
    buffer.role = CLEF_ROLE_BUFFER;
    buffer.values = vec![5.0, -5.0, 1.0, 2.0];
    host.state_mut().params.push(buffer);
    let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 0, "sample-grads")).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let s = kit::saved::<Mas>(&mut plugin, &mut host);
    assert_eq!(s.omega.len(), 3);
    assert!(s.omega[2].is_empty() && s.anchor[2].is_empty());
    host.state_mut().task = 1;
    host.perturb(0.3);
    host.state_mut().params[2].values = vec![0.0; 4];
    host.zero_grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    assert_eq!(g[2], vec![0.0; 4]);
    assert!(g[1][0] != 0.0 && g[1][1] != 0.0, "{g:?}");
}

#[test]
fn a_stored_importance_of_another_shape_is_refused() {
    let mut host = host();
    let mut plugin = MockPlugin::create::<Mas>(&config(1.0, 0, "sample-grads")).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let mut other = MockHost::new(5, 4, 2);
    other.state_mut().task = 1;
    let err = plugin
        .after_backward(&mut other, 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("parameter 0 has 20 values"), "{err}");
}
