//! Tests of the `lwf` plugin against the SDK's mock host (a linear model `z = W x + b`).

use super::*;
use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

clef_sdk::standard_tests!(
    Lwf,
    config = "alpha = 2.0\ntemperature = 3.0\nt_squared = true",
    docs = "../../docs/strategies.md"
);

fn bits(host: &MockHost) -> Vec<Vec<u32>> {
    host.state()
        .params
        .iter()
        .map(|p| p.values.iter().map(|v| v.to_bits()).collect())
        .collect()
}

fn config(alpha: f64, t: f64, t_squared: bool) -> String {
    format!("alpha = {alpha:?}\ntemperature = {t:?}\nt_squared = {t_squared}")
}

/// Host with 3 inputs, 6 outputs, 3 tasks ({0,1}, {2,3}, {4,5}); sharper weights.
fn host(setting: i32) -> MockHost {
    let mut host = MockHost::new(3, 6, 3);
    host.state_mut().setting = setting;
    for v in &mut host.state_mut().params[0].values {
        *v *= 10.0;
    }
    host
}

/// Makes task `t` current and its first 4 training samples the batch, 3 of them current-task
/// rows (the 4th stands for a row another strategy appended).
fn set_task(host: &mut MockHost, t: usize) {
    let s = host.state_mut();
    s.task = t;
    s.batch_x = s.tasks[t].train_x[..4 * s.input_dim].to_vec();
    s.batch_targets = s.tasks[t].train_y[..4].to_vec();
    s.batch_current_rows = 3;
}

/// The gradient the distillation should add, computed independently in f64 for the linear
/// model: logits of the old and new parameters, the cotangent
/// `α c_T / (B T) (softmax(new/T) − softmax(old/T))` per head, then `Jᵀ cot`.
fn expected_added_grad(
    host: &MockHost,
    old: &[Vec<f32>],
    heads: &[Vec<usize>],
    alpha: f64,
    t: f64,
    t_squared: bool,
) -> Vec<Vec<f64>> {
    let s = host.state();
    let (d, k, rows) = (s.input_dim, s.num_outputs, s.batch_current_rows);
    let x: Vec<f64> = s.batch_x.iter().map(|&v| f64::from(v)).collect();
    let logits = |p: &[Vec<f32>], r: usize, o: usize| -> f64 {
        (0..d)
            .map(|i| f64::from(p[0][o * d + i]) * x[r * d + i])
            .sum::<f64>()
            + f64::from(p[1][o])
    };
    let new = host.values();
    let softmax = |z: Vec<f64>| -> Vec<f64> {
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| ((v - m) / t).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.into_iter().map(|v| v / sum).collect()
    };
    let c = alpha * if t_squared { t * t } else { 1.0 } / (rows as f64 * t);
    let mut gw = vec![0.0; k * d];
    let mut gb = vec![0.0; k];
    for r in 0..rows {
        for h in heads {
            let p = softmax(h.iter().map(|&o| logits(old, r, o)).collect());
            let q = softmax(h.iter().map(|&o| logits(&new, r, o)).collect());
            for (j, &o) in h.iter().enumerate() {
                let cot = c * (q[j] - p[j]);
                for i in 0..d {
                    gw[o * d + i] += cot * x[r * d + i];
                }
                gb[o] += cot;
            }
        }
    }
    vec![gw, gb]
}

fn added(before: &[Vec<f32>], after: &[Vec<f32>]) -> Vec<Vec<f64>> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            b.iter()
                .zip(a)
                .map(|(&b, &a)| f64::from(a) - f64::from(b))
                .collect()
        })
        .collect()
}

fn assert_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        for (j, (g, w)) in g.iter().zip(w).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * w.abs() + 2e-6,
                "{what}: tensor {i}[{j}]: got {g}, want {w}"
            );
        }
    }
}

#[test]
fn nothing_happens_during_the_first_task() {
    let mut host = host(CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Lwf>(&config(1.0, 2.0, true)).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    set_task(&mut host, 0);
    plugin.on_task_start(&mut host).unwrap();
    host.perturb(0.2);
    host.seed_grads();
    let (g, v) = (host.grads(), bits(&host));
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    plugin.after_step(&mut host).unwrap();
    plugin.on_task_end(&mut host).unwrap();
    assert_eq!(host.grads(), g);
    assert_eq!(bits(&host), v);
    assert!(host.state().appended.is_empty());
}

/// Runs task `t`'s start and one batch after moving the weights away from the old model, and
/// checks the added gradient and the bitwise restoration of the parameters.
fn check_distillation(
    setting: i32,
    t: usize,
    heads: &[Vec<usize>],
    alpha: f64,
    temp: f64,
    sq: bool,
) {
    let mut host = host(setting);
    let mut plugin = MockPlugin::create::<Lwf>(&config(alpha, temp, sq)).unwrap();
    set_task(&mut host, t);
    plugin.on_task_start(&mut host).unwrap();
    let old = host.values();
    let teacher = kit::saved::<Lwf>(&mut plugin, &mut host)
        .teacher
        .expect("old model stored at task start");
    assert_eq!(teacher.params, old);
    assert_eq!(teacher.heads, heads);

    host.perturb(0.1);
    host.seed_grads();
    let (g0, v0) = (host.grads(), bits(&host));
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    // The current parameters are back, bit for bit.
    assert_eq!(
        bits(&host),
        v0,
        "parameters not restored after the old model's forward"
    );
    let got = added(&g0, &host.grads());
    let want = expected_added_grad(&host, &old, heads, alpha, temp, sq);
    assert_close(&got, &want, "distillation gradient");
    assert!(
        want.iter().flatten().any(|v| v.abs() > 1e-3),
        "vacuous check: no distillation gradient"
    );
}

#[test]
fn task_il_distils_each_old_head_separately() {
    check_distillation(
        CLEF_SETTING_TASK_IL,
        2,
        &[vec![0, 1], vec![2, 3]],
        1.0,
        2.0,
        true,
    );
}

#[test]
fn class_il_distils_one_softmax_over_the_old_units() {
    check_distillation(
        CLEF_SETTING_CLASS_IL,
        2,
        &[vec![0, 1, 2, 3]],
        0.5,
        2.0,
        true,
    );
}

#[test]
fn domain_il_distils_the_shared_head() {
    check_distillation(
        CLEF_SETTING_DOMAIN_IL,
        1,
        &[(0..6).collect()],
        1.0,
        3.0,
        false,
    );
}

#[test]
fn t_squared_scales_the_gradient_by_t_squared() {
    let run = |sq: bool| {
        let mut host = host(CLEF_SETTING_TASK_IL);
        let mut plugin = MockPlugin::create::<Lwf>(&config(1.0, 4.0, sq)).unwrap();
        set_task(&mut host, 1);
        plugin.on_task_start(&mut host).unwrap();
        host.perturb(0.1);
        plugin.before_batch(&mut host).unwrap();
        plugin.after_backward(&mut host, 1.0).unwrap();
        host.grads()
    };
    let (with, without) = (run(true), run(false));
    for (a, b) in with.iter().flatten().zip(without.iter().flatten()) {
        assert!(
            (a - 16.0 * b).abs() <= 1e-5 * a.abs() + 1e-9,
            "{a} vs 16 × {b}"
        );
    }
    assert!(with.iter().flatten().any(|v| v.abs() > 1e-4));
}

#[test]
fn no_gradient_when_the_model_has_not_moved() {
    let mut host = host(CLEF_SETTING_CLASS_IL);
    let mut plugin = MockPlugin::create::<Lwf>(&config(1.0, 2.0, true)).unwrap();
    set_task(&mut host, 1);
    plugin.on_task_start(&mut host).unwrap();
    host.seed_grads();
    let g0 = host.grads();
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    for (a, b) in host.grads().iter().flatten().zip(g0.iter().flatten()) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn the_restored_old_model_distils_like_the_original() {
    let mut host = host(CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Lwf>(&config(1.0, 2.0, true)).unwrap();
    set_task(&mut host, 2);
    plugin.on_task_start(&mut host).unwrap();
    let saved = plugin.save_state(&mut host).unwrap();

    let mut fresh = MockPlugin::create::<Lwf>(&config(1.0, 2.0, true)).unwrap();
    fresh.load_state(&mut host, &saved).unwrap();
    let restored = kit::saved::<Lwf>(&mut fresh, &mut host);
    assert_eq!(
        restored.teacher,
        kit::saved::<Lwf>(&mut plugin, &mut host).teacher
    );
    assert_eq!(restored.rows, 0, "no batch survives a checkpoint");

    // Both instances add the same distillation gradient.
    host.perturb(0.1);
    host.seed_grads();
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    let g1 = host.grads();
    host.seed_grads();
    let g0 = host.grads();
    fresh.before_batch(&mut host).unwrap();
    fresh.after_backward(&mut host, 1.0).unwrap();
    assert_eq!(host.grads(), g1);
    assert_ne!(g1, g0, "vacuous: no distillation gradient");
}

#[test]
fn a_mismatched_old_model_is_an_error_and_leaves_the_parameters_alone() {
    let mut host = host(CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Lwf>(&config(1.0, 2.0, true)).unwrap();
    // The old model of another network: 3 inputs, 4 outputs (W has 12 values, not 18).
    let mut other = MockHost::new(3, 4, 2);
    set_task(&mut other, 1);
    plugin.on_task_start(&mut other).unwrap();
    set_task(&mut host, 1);
    let v0 = bits(&host);
    plugin.before_batch(&mut host).unwrap();
    let err = plugin.after_backward(&mut host, 1.0).unwrap_err();
    assert!(err.message.contains("parameter 0"), "{err}");
    assert_eq!(bits(&host), v0);
}
