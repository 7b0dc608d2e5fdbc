//! Tests of the `l2init` plugin against the SDK's mock host.

use clef_sdk::abi::{CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER, CLEF_ROLE_WEIGHT};
use clef_sdk::anchor;
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;

clef_sdk::standard_tests!(
    L2Init,
    config = "lambda = 0.5",
    docs = "../../docs/strategies.md"
);

/// The penalty `λ Σ (θ − θ0)²` in f64.
fn penalty(lambda: f64, params: &[Vec<f64>], init: &[Vec<f32>]) -> f64 {
    anchor::squared_distance(params, init) * lambda
}

#[test]
fn hand_computed_gradient() {
    // θ0 = (w, b) of the mock; move one weight by +0.5: gradient 2·λ·0.5 = λ there only.
    let mut host = MockHost::new(2, 2, 1);
    let mut plugin = MockPlugin::create::<L2Init>("lambda = 0.25").unwrap();
    plugin.on_model_built(&mut host).unwrap();
    host.state_mut().params[0].values[3] += 0.5;
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g = host.grads();
    assert_eq!(g[0], vec![0.0, 0.0, 0.0, 0.25]);
    assert_eq!(g[1], vec![0.0, 0.0]);
}

#[test]
fn gradient_matches_finite_differences_from_the_first_task() {
    let lambda = 3.0;
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2Init>(&format!("lambda = {lambda:?}")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    let init = kit::saved::<L2Init>(&mut plugin, &mut host)
        .init
        .expect("θ0 stored when the model was built")
        .0;
    assert_eq!(init, host.values());
    // The penalty applies during the first task already, and θ0 survives task ends.
    plugin.on_task_start(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    host.perturb(0.05);
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 1.0).unwrap();
    let after = host.grads();
    // The penalty is quadratic, so central differences are exact up to rounding: with
    // h = 1e-4 in f64 the error is ~1e-12 / h; the f32 gradient has relative error ~1e-7.
    let loss = |t: &[Vec<f64>]| penalty(lambda, t, &init);
    kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-4, 1e-4);
    assert!(after
        .iter()
        .zip(&before)
        .any(|(a, b)| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-2)));
}

#[test]
fn zero_at_init_and_zero_lambda_adds_nothing() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
    plugin.on_model_built(&mut host).unwrap();
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), before);

    let mut off = MockPlugin::create::<L2Init>("lambda = 0.0").unwrap();
    off.on_model_built(&mut host).unwrap();
    host.perturb(0.3);
    off.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), before);
}

#[test]
fn missing_init_is_an_error_and_task_start_falls_back() {
    let mut host = MockHost::new(2, 2, 1);
    let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("θ0 is not stored"), "{err}");
    plugin.on_task_start(&mut host).unwrap();
    assert_eq!(
        kit::saved::<L2Init>(&mut plugin, &mut host).init,
        Some(Anchor(host.values()))
    );
    host.perturb(0.2);
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert_ne!(host.grads(), before);
}

#[test]
fn mismatched_init_is_an_error_not_a_panic() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2Init>("lambda = 1.0").unwrap();
    // θ0 of another model (5 inputs, 1 output).
    plugin.on_model_built(&mut MockHost::new(5, 1, 1)).unwrap();
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("parameter 0"), "{err}");
}

/// A conv model as the host describes one: a `[4, 2, 3, 3]` kernel, batch norm (scale, shift,
/// two running-statistic buffers) and a dense head `[3, 36]` with a bias.
fn conv_host() -> MockHost {
    let mut host = MockHost::new(36, 3, 1);
    let t = host.state().params[0].clone();
    let tensors = [
        ("convs.0.weight", vec![4, 2, 3, 3], CLEF_ROLE_WEIGHT, 0),
        ("norms.0.weight", vec![4], CLEF_ROLE_WEIGHT, 0),
        ("norms.0.bias", vec![4], CLEF_ROLE_BIAS, 0),
        ("norms.0.running_mean", vec![4], CLEF_ROLE_BUFFER, 0),
        ("norms.0.running_var", vec![4], CLEF_ROLE_BUFFER, 0),
        ("layers.0.weight", vec![3, 36], CLEF_ROLE_WEIGHT, 1),
        ("layers.0.bias", vec![3], CLEF_ROLE_BIAS, 1),
    ];
    host.state_mut().params = tensors
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, role, layer))| {
            let n: usize = shape.iter().product();
            let mut p = t.clone();
            p.values = (0..n)
                .map(|j| (((i * 31 + j * 17) % 23) as f32 - 11.0) * 0.02)
                .collect();
            p.name = std::ffi::CString::new(name).unwrap();
            p.shape = shape;
            p.role = role;
            p.layer = layer;
            p.grads = vec![0.0; n];
            p.momentum = p.momentum.map(|_| vec![0.0; n]);
            p
        })
        .collect();
    host
}

#[test]
fn conv_tensors_match_finite_differences_and_buffers_are_not_pulled() {
    let lambda = 0.4;
    let mut host = conv_host();
    let mut plugin = MockPlugin::create::<L2Init>(&format!("lambda = {lambda:?}")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    let init = kit::saved::<L2Init>(&mut plugin, &mut host)
        .init
        .expect("θ0 stored")
        .0;
    // θ0 keeps every tensor, buffers included, so it has the model's layout.
    assert_eq!(init, host.values());
    host.perturb(0.05);
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let after = host.grads();
    let buffers = [3usize, 4];
    for &b in &buffers {
        assert_ne!(
            host.values()[b],
            init[b],
            "the buffer moved, yet gets no pull"
        );
        assert_eq!(after[b], before[b], "buffer {b}");
    }
    // The penalty over the trainable tensors (kernel, norm scale and shift, head).
    let trainable: Vec<usize> = (0..init.len()).filter(|i| !buffers.contains(i)).collect();
    let loss = |t: &[Vec<f64>]| {
        let t: Vec<Vec<f64>> = trainable.iter().map(|&i| t[i].clone()).collect();
        let a: Vec<Vec<f32>> = trainable.iter().map(|&i| init[i].clone()).collect();
        penalty(lambda, &t, &a)
    };
    kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-4, 1e-4);
    // The kernel's gradient is 2λ(θ − θ0) entry by entry.
    let v = host.values();
    for j in 0..72 {
        let want = before[0][j] + 2.0 * lambda as f32 * (v[0][j] - init[0][j]);
        assert!((after[0][j] - want).abs() < 1e-6);
    }
}
