//! Tests of the `ewc` plugin against the SDK's mock host (a linear softmax model
//! `z = W x + b`, so per-sample gradients have a closed form the tests compute by hand).

use super::*;
use clef_sdk::abi::{CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockPlugin};

clef_sdk::standard_tests!(
    Ewc,
    config = "lambda = 50.0\ngamma = 0.5\nfisher_samples = 5\nfisher = \"expected\"",
    docs = "../../docs/strategies.md"
);

/// Runs `on_task_end` for the host's current task (the mock, like the real host, allows
/// gradient access and `vjp` there, which the Fisher estimate relies on).
fn task_end(plugin: &mut MockPlugin, host: &mut MockHost) -> std::result::Result<(), String> {
    plugin.on_task_end(host).map_err(|e| e.to_string())
}

fn state_of(plugin: &mut MockPlugin, host: &mut MockHost) -> Option<Consolidated> {
    kit::saved::<Ewc>(plugin, host).state
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

    let loss = |t: &[Vec<f64>]| st.penalty(lambda, t);
    kit::assert_grad_matches_fd(&kit::theta(&host), &before, &after, loss, 1e-4, 1e-4);
    let nonzero = after
        .iter()
        .zip(&before)
        .flat_map(|(a, b)| a.iter().zip(b))
        .filter(|(x, y)| (*x - *y).abs() > 1e-3)
        .count();
    assert!(nonzero >= 6, "only {nonzero} non-trivial coordinates");
}

#[test]
fn the_restored_state_applies_the_same_penalty() {
    let mut host = MockHost::new(3, 4, 2);
    sharpen(&mut host);
    let mut plugin = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    assert_eq!(state_of(&mut plugin, &mut host), None);
    task_end(&mut plugin, &mut host).unwrap();
    let saved = plugin.save_state(&mut host).unwrap();

    let mut fresh = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    fresh.load_state(&mut host, &saved).unwrap();
    assert_eq!(
        state_of(&mut fresh, &mut host),
        state_of(&mut plugin, &mut host)
    );

    // The restored instance applies the same penalty.
    host.perturb(0.1);
    host.seed_grads();
    let g0 = host.grads();
    plugin.after_backward(&mut host, 0.0).unwrap();
    let g1 = host.grads();
    assert_ne!(g1, g0, "vacuous: no penalty");
    host.seed_grads();
    fresh.after_backward(&mut host, 0.0).unwrap();
    assert_eq!(host.grads(), g1);
}

#[test]
fn a_saved_fisher_and_anchor_of_different_shapes_are_refused() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    task_end(&mut plugin, &mut host).unwrap();
    let saved = plugin.save_state(&mut host).unwrap();
    let payload = clef_sdk::state::open("ewc", 1, &saved).unwrap().to_vec();
    // The payload ends with θ*: its last tensor is the 4 biases, after their byte length 16.
    let n = payload.len();
    assert_eq!(payload[n - 17], 16, "layout changed: adapt the test");
    // Drop the last bias of θ*: byte length 12 and 4 bytes fewer.
    let mut bad = payload[..n - 4].to_vec();
    bad[n - 17] = 12;
    let mut fresh = MockPlugin::create::<Ewc>(&config(10.0, 1.0, 0, "empirical")).unwrap();
    assert!(fresh
        .load_state(&mut host, &clef_sdk::state::seal("ewc", 1, &bad))
        .is_err());
    fresh
        .load_state(&mut host, &clef_sdk::state::seal("ewc", 1, &payload))
        .unwrap();
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

/// `J(x)ᵀ c` of one row on the mock, through the host's `vjp` service (the per-row
/// computation the Fisher used before `sample_grads`): the gradients are zeroed, the service
/// adds into them, the result is read and the gradients zeroed again.
fn mock_vjp(host: &mut MockHost, x: &[f32], cot: &[f32]) -> Vec<Vec<f32>> {
    host.zero_grads();
    let (table, ctx) = host.raw();
    // SAFETY: `table` is the mock's static service table and `ctx` its live context; `x` holds
    // one row of `input_dim` values and `cot` `num_outputs` values, as the lengths passed say.
    let status = unsafe { ((*table).vjp)(ctx, x.as_ptr(), 1, cot.as_ptr(), cot.len() as i64) };
    assert_eq!(status, clef_sdk::abi::CLEF_OK, "mock vjp refused");
    let g = host.grads();
    host.zero_grads();
    g
}

/// The Fisher of `task` over all its training samples with one `vjp` per sample and label,
/// accumulated in f64 (the plugin's computation before it moved to `sample_grads`).
fn per_row_vjp_fisher(
    host: &mut MockHost,
    task: usize,
    units: &[usize],
    exact: bool,
) -> Vec<Vec<f64>> {
    let (d, k) = (host.state().input_dim, host.state().num_outputs);
    let (xs, ys) = {
        let t = &host.state().tasks[task];
        (t.train_x.clone(), t.train_y.clone())
    };
    let n = ys.len();
    let mut acc: Vec<Vec<f64>> = host.values().iter().map(|v| vec![0.0; v.len()]).collect();
    for r in 0..n {
        let x = &xs[r * d..(r + 1) * d];
        // The linear mock's logits, then the masked softmax.
        let s = host.state();
        let z: Vec<f32> = (0..k)
            .map(|o| {
                (0..d)
                    .map(|i| s.params[0].values[o * d + i] * x[i])
                    .sum::<f32>()
                    + s.params[1].values[o]
            })
            .collect();
        let mut p = vec![0.0f64; units.len()];
        masked_softmax(&z, units, &mut p);
        let labels: Vec<(usize, f64)> = if exact {
            p.iter().copied().enumerate().collect()
        } else {
            vec![(units.iter().position(|&u| u == ys[r]).unwrap(), 1.0)]
        };
        for (label, w) in labels {
            let mut cot = vec![0.0f32; k];
            for (j, &u) in units.iter().enumerate() {
                cot[u] = (p[j] - if j == label { 1.0 } else { 0.0 }) as f32;
            }
            for (a, g) in acc.iter_mut().zip(mock_vjp(host, x, &cot)) {
                for (a, g) in a.iter_mut().zip(g) {
                    *a += w * f64::from(g) * f64::from(g);
                }
            }
        }
    }
    acc.iter_mut()
        .for_each(|a| a.iter_mut().for_each(|v| *v /= n as f64));
    acc
}

#[test]
fn the_sample_grads_fisher_equals_the_per_row_vjp_fisher() {
    for (setting, task, units, fisher) in [
        (CLEF_SETTING_TASK_IL, 1, vec![2, 3], "empirical"),
        (CLEF_SETTING_CLASS_IL, 1, vec![0, 1, 2, 3], "empirical"),
        (CLEF_SETTING_TASK_IL, 0, vec![0, 1], "exact"),
        (CLEF_SETTING_CLASS_IL, 1, vec![0, 1, 2, 3], "exact"),
    ] {
        let mut host = MockHost::new(3, 4, 2);
        sharpen(&mut host);
        host.state_mut().setting = setting;
        host.state_mut().task = task;
        let want = per_row_vjp_fisher(&mut host, task, &units, fisher == "exact");
        let mut plugin = MockPlugin::create::<Ewc>(&config(1.0, 1.0, 0, fisher)).unwrap();
        task_end(&mut plugin, &mut host).unwrap();
        let st = state_of(&mut plugin, &mut host).unwrap();
        assert_close(&st.fisher, &want, 1e-5, fisher);
        assert!(
            want.iter().flatten().filter(|&&v| v > 1e-4).count() >= units.len() * 3,
            "the reference is not vacuous"
        );
        assert!(all_zero(&host.grads()), "gradients left non-zero");
    }
}
