//! Tests of the `ewc` plugin against the SDK's mock host (a linear softmax model
//! `z = W x + b`, so per-sample gradients have a closed form the tests compute by hand).

use super::*;
use clef_sdk::abi::{
    ClefTaskInfo, CLEF_OK, CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL,
};
use clef_sdk::testing::{describe, MockHost, MockPlugin, Phase};

/// Runs `on_task_end` for the host's current task with gradient access.
///
/// The SDK's `MockHost` only hands out writable gradients and `vjp` in `after_backward`
/// (`MockPlugin::on_task_end` runs in `Phase::TaskEnd`), while the real clef host allows both
/// in every hook (docs/abi.md), which is what the Fisher estimate relies on. So this helper
/// calls the plugin's exported `on_task_end` directly, with the mock in the phase that allows
/// them.
fn task_end(plugin: &mut MockPlugin, host: &mut MockHost) -> std::result::Result<(), String> {
    let f = plugin
        .descriptor()
        .on_task_end
        .ok_or("the plugin exports no on_task_end")?;
    let s = host.state();
    let task = &s.tasks[s.task];
    let units: Vec<i64> = task.units.iter().map(|&u| u as i64).collect();
    let info = ClefTaskInfo {
        struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
        setting: s.setting,
        task: s.task as i64,
        num_tasks: s.tasks.len() as i64,
        train_samples: task.train_y.len() as i64,
        test_samples: task.test_y.len() as i64,
        input_dim: s.input_dim as i64,
        num_outputs: s.num_outputs as i64,
        feature_dim: s.input_dim as i64,
        units: units.as_ptr(),
        n_units: units.len() as i64,
        num_threads: 1,
        seed: s.seed,
    };
    host.state_mut().phase = Phase::AfterBackward;
    let (_, ctx) = host.raw();
    // SAFETY: the plugin's own descriptor and live instance, the mock host's context (valid
    // while `host` is borrowed here), and a task info whose `units` outlive the call.
    let status = unsafe { f(plugin.instance(), ctx, &info) };
    host.state_mut().phase = Phase::Idle;
    if status == CLEF_OK {
        return Ok(());
    }
    let message = match plugin.descriptor().last_error {
        // SAFETY: our instance, right after the failing call; the string is NUL-terminated.
        Some(last) => unsafe { std::ffi::CStr::from_ptr(last(plugin.instance())) }
            .to_string_lossy()
            .into_owned(),
        None => String::new(),
    };
    Err(format!("status {status}: {message}"))
}

fn state_of(plugin: &mut MockPlugin, host: &mut MockHost) -> Option<Consolidated> {
    decode_state(&plugin.save_state(host).unwrap()).unwrap()
}

/// A model with clearly non-uniform predictions (the mock's default weights are ~0.1).
fn sharpen(host: &mut MockHost) {
    for v in &mut host.state_mut().params[0].values {
        *v *= 12.0;
    }
}

#[derive(Clone, Copy)]
enum Labels {
    True,
    Exact,
}

/// The Fisher of the linear softmax model `z = W x + b` over `picks` of `task`'s training
/// samples, by hand: for a label `y`, `d(-log p_y)/dW[o,i] = (p_o - [o = y]) x_i` and
/// `d/db[o] = p_o - [o = y]` for `o` in `units` (zero elsewhere).
fn hand_fisher(
    host: &MockHost,
    task: usize,
    units: &[usize],
    picks: &[usize],
    labels: Labels,
) -> Vec<Vec<f64>> {
    let s = host.state();
    let (d, k) = (s.input_dim, s.num_outputs);
    let w: Vec<f64> = s.params[0].values.iter().map(|&v| f64::from(v)).collect();
    let b: Vec<f64> = s.params[1].values.iter().map(|&v| f64::from(v)).collect();
    let mut fw = vec![0.0; k * d];
    let mut fb = vec![0.0; k];
    for &n in picks {
        let x: Vec<f64> = s.tasks[task].train_x[n * d..(n + 1) * d]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let z: Vec<f64> = units
            .iter()
            .map(|&o| (0..d).map(|i| w[o * d + i] * x[i]).sum::<f64>() + b[o])
            .collect();
        let zmax = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - zmax).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / sum).collect();
        let label_weights: Vec<(usize, f64)> = match labels {
            Labels::True => vec![(s.tasks[task].train_y[n], 1.0)],
            Labels::Exact => units.iter().copied().zip(p.iter().copied()).collect(),
        };
        for (y, weight) in label_weights {
            for (j, &o) in units.iter().enumerate() {
                let c = p[j] - if o == y { 1.0 } else { 0.0 };
                for i in 0..d {
                    fw[o * d + i] += weight * (c * x[i]).powi(2);
                }
                fb[o] += weight * c * c;
            }
        }
    }
    let n = picks.len() as f64;
    vec![
        fw.into_iter().map(|v| v / n).collect(),
        fb.into_iter().map(|v| v / n).collect(),
    ]
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f64>], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len());
        for (j, (&g, &w)) in g.iter().zip(w).enumerate() {
            let g = f64::from(g);
            assert!(
                (g - w).abs() <= rel * w.abs() + 1e-9,
                "{what}: tensor {i}[{j}]: got {g}, want {w}"
            );
        }
    }
}

fn close(got: &[Vec<f32>], want: &[Vec<f64>], rel: f64) -> bool {
    got.iter().zip(want).all(|(g, w)| {
        g.iter()
            .zip(w)
            .all(|(&g, &w)| (f64::from(g) - w).abs() <= rel * w.abs() + 1e-9)
    })
}

fn all_zero(t: &[Vec<f32>]) -> bool {
    t.iter().flatten().all(|&v| v == 0.0)
}

#[test]
fn schema_is_valid() {
    clef_sdk::validate::<Ewc>().unwrap();
    // SAFETY: the descriptor the export macro built.
    let info = unsafe { describe(clef_plugin_entry_v1()) };
    assert_eq!(info.name, "ewc");
    let names: Vec<&str> = info.hparams.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["lambda", "gamma", "fisher_samples", "fisher"]);
}

#[test]
fn rejects_bad_config() {
    let ok = "lambda = 1.0\ngamma = 1.0\nfisher_samples = 0\nfisher = \"empirical\"";
    MockPlugin::create::<Ewc>(ok).unwrap();
    for bad in [
        ok.replace("gamma = 1.0", "gamma = 1.5"),
        ok.replace("lambda = 1.0", "lambda = -2.0"),
        ok.replace("fisher_samples = 0", "fisher_samples = -1"),
        ok.replace("empirical", "diagonal"),
        format!("{ok}\nextra = 1"),
    ] {
        assert!(MockPlugin::create::<Ewc>(&bad).is_err(), "accepted {bad}");
    }
}

fn config(lambda: f64, gamma: f64, samples: usize, fisher: &str) -> String {
    format!(
        "lambda = {lambda:?}\ngamma = {gamma:?}\nfisher_samples = {samples}\nfisher = \"{fisher}\""
    )
}

#[test]
fn no_penalty_during_the_first_task() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<Ewc>(&config(1e3, 1.0, 0, "empirical")).unwrap();
    plugin.on_model_built(&mut host).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    host.perturb(0.3);
    host.seed_grads();
    let before = host.grads();
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    plugin.after_step(&mut host).unwrap();
    assert_eq!(host.grads(), before);
    assert!(state_of(&mut plugin, &mut host).is_none());
}

#[test]
fn empirical_fisher_matches_the_hand_computed_value() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    host.seed_grads();
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "empirical")).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let want = hand_fisher(&host, 0, &[0, 1], &(0..8).collect::<Vec<_>>(), Labels::True);
    assert_close(&st.fisher, &want, 1e-4, "empirical Fisher");
    // Units outside task 0's head get no Fisher.
    assert!(st.fisher[1][2] == 0.0 && st.fisher[1][3] == 0.0);
    assert!(st.fisher[1][0] > 1e-4, "the check is not vacuous");
    assert_eq!(st.anchor, host.values());
    assert_eq!(st.tasks, 1);
    // The gradient buffers are left zeroed.
    assert!(all_zero(&host.grads()));
}

#[test]
fn exact_fisher_matches_the_hand_computed_expectation() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "exact")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let want = hand_fisher(
        &host,
        0,
        &[0, 1],
        &(0..8).collect::<Vec<_>>(),
        Labels::Exact,
    );
    assert_close(&st.fisher, &want, 1e-4, "exact Fisher");
    let empirical = hand_fisher(&host, 0, &[0, 1], &(0..8).collect::<Vec<_>>(), Labels::True);
    assert!(!close(&st.fisher, &empirical, 1e-2), "exact == empirical");
}

#[test]
fn expected_fisher_converges_to_the_exact_one() {
    // 8 distinct inputs repeated 400 times: the one-label Monte-Carlo estimate averages over
    // 400 draws per input and must approach the exact expectation.
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let exact = hand_fisher(
        &host,
        0,
        &[0, 1],
        &(0..8).collect::<Vec<_>>(),
        Labels::Exact,
    );
    let empirical = hand_fisher(&host, 0, &[0, 1], &(0..8).collect::<Vec<_>>(), Labels::True);
    {
        let t = &mut host.state_mut().tasks[0];
        let (x, y) = (t.train_x.clone(), t.train_y.clone());
        t.train_x = x.repeat(400);
        t.train_y = y.repeat(400);
    }
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "expected")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    assert_close(&st.fisher, &exact, 0.1, "expected Fisher vs exact");
    assert!(!close(&st.fisher, &empirical, 0.1), "expected == empirical");
    // Reproducible: the same host seed gives the same estimate.
    let mut host2 = MockHost::new(3, 4, 2);
    sharpen(&mut host2);
    host2.state_mut().tasks[0] = host.state().tasks[0].clone();
    let mut plugin2 = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "expected")).unwrap();
    task_end(&mut plugin2, &mut host2).unwrap();
    assert_eq!(state_of(&mut plugin2, &mut host2).unwrap(), st);
}

#[test]
fn fisher_on_a_subset_uses_exactly_that_many_samples() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 3, "empirical")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    // It equals the hand-computed Fisher of one 3-subset of the 8 samples, and not the full one.
    let mut matches = Vec::new();
    for a in 0..8 {
        for b in a + 1..8 {
            for c in b + 1..8 {
                let want = hand_fisher(&host, 0, &[0, 1], &[a, b, c], Labels::True);
                if close(&st.fisher, &want, 1e-4) {
                    matches.push([a, b, c]);
                }
            }
        }
    }
    assert_eq!(matches.len(), 1, "{matches:?}");
    let full = hand_fisher(&host, 0, &[0, 1], &(0..8).collect::<Vec<_>>(), Labels::True);
    assert!(!close(&st.fisher, &full, 1e-4));
}

#[test]
fn class_il_fisher_uses_the_union_of_the_seen_heads() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    host.state_mut().task = 1;
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "empirical")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let want = hand_fisher(
        &host,
        1,
        &[0, 1, 2, 3],
        &(0..8).collect::<Vec<_>>(),
        Labels::True,
    );
    assert_close(&st.fisher, &want, 1e-4, "class-IL Fisher");
    assert!(st.fisher[1].iter().all(|&f| f > 0.0));
}

#[test]
fn domain_il_fisher_uses_every_unit() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    host.state_mut().setting = CLEF_SETTING_DOMAIN_IL;
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "exact")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let want = hand_fisher(
        &host,
        0,
        &[0, 1, 2, 3],
        &(0..8).collect::<Vec<_>>(),
        Labels::Exact,
    );
    assert_close(&st.fisher, &want, 1e-4, "domain-IL Fisher");
}

#[test]
fn online_accumulation_decays_with_gamma() {
    let gamma = 0.5;
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    assert_eq!(host.state().setting, CLEF_SETTING_TASK_IL);
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, gamma, 0, "empirical")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let f0 = state_of(&mut plugin, &mut host).unwrap().fisher;

    // Task 1 at other parameters.
    host.state_mut().task = 1;
    host.perturb(0.07);
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let f1 = hand_fisher(&host, 1, &[2, 3], &(0..8).collect::<Vec<_>>(), Labels::True);
    let want: Vec<Vec<f64>> = f0
        .iter()
        .zip(&f1)
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(&a, &b)| gamma * f64::from(a) + b)
                .collect()
        })
        .collect();
    assert_close(&st.fisher, &want, 1e-4, "γ F0 + F1");
    // Both tasks' heads now carry Fisher mass; the anchor moved to the end of task 1.
    assert!(st.fisher[1].iter().all(|&f| f > 0.0));
    assert_eq!(st.anchor, host.values());
    assert_eq!(st.tasks, 2);

    // γ = 0 forgets the old tasks entirely.
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 0.0, 0, "empirical")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    host.state_mut().task = 1;
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();
    let f1 = hand_fisher(&host, 1, &[2, 3], &(0..8).collect::<Vec<_>>(), Labels::True);
    assert_close(&st.fisher, &f1, 1e-4, "γ = 0");
}

#[test]
fn penalty_gradient_matches_finite_differences() {
    let lambda = 50.0;
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(lambda, 1.0, 0, "exact")).unwrap();
    plugin.on_task_start(&mut host).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let st = state_of(&mut plugin, &mut host).unwrap();

    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    host.perturb(0.05);
    host.seed_grads();
    let before = host.grads();
    plugin.before_batch(&mut host).unwrap();
    plugin.after_backward(&mut host, 1.0).unwrap();
    let after = host.grads();

    let theta: Vec<Vec<f64>> = host
        .values()
        .iter()
        .map(|t| t.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let h = 1e-4;
    let mut nonzero = 0;
    for i in 0..theta.len() {
        for j in 0..theta[i].len() {
            let added = f64::from(after[i][j]) - f64::from(before[i][j]);
            let mut plus = theta.clone();
            plus[i][j] += h;
            let mut minus = theta.clone();
            minus[i][j] -= h;
            let fd = (st.penalty(lambda, &plus) - st.penalty(lambda, &minus)) / (2.0 * h);
            assert!(
                (added - fd).abs() <= 1e-4 * fd.abs() + 1e-6,
                "param {i}[{j}]: added {added}, finite difference {fd}"
            );
            nonzero += usize::from(fd.abs() > 1e-3);
        }
    }
    assert!(nonzero >= 6, "only {nonzero} non-trivial coordinates");
}

#[test]
fn state_round_trip() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    let empty = plugin.save_state(&mut host).unwrap();
    assert_eq!(decode_state(&empty).unwrap(), None);
    task_end(&mut plugin, &mut host).unwrap();
    let saved = plugin.save_state(&mut host).unwrap();

    let mut fresh = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    fresh.load_state(&mut host, &saved).unwrap();
    assert_eq!(fresh.save_state(&mut host).unwrap(), saved);

    // The restored instance applies the same penalty.
    host.perturb(0.1);
    host.seed_grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g1 = host.grads();
    host.seed_grads();
    fresh.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), g1);

    assert!(fresh
        .load_state(&mut host, &saved[..saved.len() - 3])
        .is_err());
    assert!(fresh
        .load_state(&mut host, b"clefl2\0\0\x01\0\0\0\0")
        .is_err());
    fresh.load_state(&mut host, &[]).unwrap();
    assert_eq!(fresh.save_state(&mut host).unwrap(), empty);
}

#[test]
fn a_target_outside_the_training_mask_is_an_error() {
    let mut host = MockHost::new(3, 4, 2);
    host.state_mut().tasks[0].train_y[5] = 3; // unit 3 belongs to task 1's head
    let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, "empirical")).unwrap();
    let err = task_end(&mut plugin, &mut host).unwrap_err();
    assert!(
        err.contains("estimating the Fisher of task 0") && err.contains("outside"),
        "{err}"
    );
}
