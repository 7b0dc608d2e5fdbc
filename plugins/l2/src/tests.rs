use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

use super::*;
use clef_sdk::anchor;

clef_sdk::standard_tests!(
    L2,
    config = "lambda = 2.0",
    docs = "../../docs/strategies.md"
);

/// The penalty `(λ/2) Σ (θ − θ*)²` in f64.
fn penalty(lambda: f64, params: &[Vec<f64>], anchor: &[Vec<f32>]) -> f64 {
    anchor::squared_distance(params, anchor) * (lambda / 2.0)
}

#[test]
fn no_penalty_during_the_first_task() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2>("lambda = 5.0").unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    host.seed_grads();
    host.perturb(0.3);
    let before = host.grads();
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    plugin.after_step(&mut host).unwrap();
    assert_eq!(host.grads(), before);
}

#[test]
fn gradient_matches_finite_differences_of_the_penalty() {
    let lambda = 3.0;
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2>(&format!("lambda = {lambda:?}")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    let anchor = kit::saved::<L2>(&mut plugin, &mut host)
        .anchor
        .expect("anchor stored at the end of task 0")
        .0;
    assert_eq!(anchor, host.values());

    // Task 1: move the weights, then check the added gradient.
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    host.perturb(0.05);
    host.seed_grads();
    let before = host.grads();
    plugin.after_backward(&mut host, 1.0).unwrap();
    let after = host.grads();
    let loss = |t: &[Vec<f64>]| penalty(lambda, t, &anchor);
    let checked =
        kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-4, 1e-4);
    assert_eq!(checked, 3 * 4 + 4);
}

#[test]
fn anchor_is_replaced_at_every_task_end() {
    let mut host = MockHost::new(2, 2, 2);
    let mut plugin = MockPlugin::create::<L2>("lambda = 1.0").unwrap();
    plugin.on_task_end(&mut host).unwrap();
    host.perturb(0.1);
    host.state_mut().task = 1;
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!(
        kit::saved::<L2>(&mut plugin, &mut host).anchor,
        Some(anchor::Anchor(host.values()))
    );
    // At the anchor the penalty gradient is exactly zero.
    let before = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), before);
}

#[test]
fn mismatched_anchor_is_an_error_not_a_panic() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<L2>("lambda = 1.0").unwrap();
    plugin.on_task_end(&mut MockHost::new(5, 1, 1)).unwrap();
    let err = plugin.after_backward(&mut host, 0.0).unwrap_err();
    assert!(err.message.contains("parameter 0"), "{err}");
}
