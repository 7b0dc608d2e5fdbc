//! Tests of the `l2init` plugin against the SDK's mock host.

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
