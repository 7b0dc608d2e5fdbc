//! Tests of the plugin through its C entry points on the SDK's mock host: isolation, masked
//! optimizer state, growth modes, checkpoints (the mask arithmetic alone: `tests_masks.rs`).

use clef_sdk::abi::{CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL};
use clef_sdk::kit;
use clef_sdk::testing::{MockHost, MockParam, MockPlugin};

use crate::Dst;

const BASE: &str = r#"
sparsity = 0.5
init = "uniform"
growth = "random"
update_every = 2
task_steps = 6
drop_start = 0.5
drop_end = 0.005
sampling = "exact"
new_weights = "init"
grow_init = "zero"
frozen_growth = "reuse"
bias = "per-task"
"#;

fn config(overrides: &[(&str, &str)]) -> String {
    let mut text = BASE.to_string();
    for (k, v) in overrides {
        let start = text.find(&format!("\n{k} = ")).expect("known key") + 1;
        let end = start + text[start..].find('\n').expect("line end");
        text.replace_range(start..end, &format!("{k} = {v}"));
    }
    text
}

// The kit's tests. dst has no usable default for `task_steps` (0 stands for "not set", and
// `new` refuses it with a message saying how to set it, see
// `bad_hyperparameters_name_the_plugin_and_the_key`), so an empty config cannot build.
const KIT_CONFIG: &str =
    "task_steps = 3\nupdate_every = 2\nsparsity = 0.5\ngrowth = \"gradient\"\ninit = \"erk\"";

clef_sdk::standard_tests!(
    Dst,
    config = KIT_CONFIG,
    docs = "../../docs/strategies.md",
    config_required = true
);

// ---- the plugin on the mock host ------------------------------------------------------------

/// A mock host whose linear model `[num_outputs, input_dim]` has no zero weights.
fn host(input: usize, outputs: usize, tasks: usize) -> MockHost {
    MockHost::new(input, outputs, tasks)
}

/// Simulates an optimizer step: every weight, bias and state entry moves.
fn perturb(host: &mut MockHost, amount: f32) {
    for p in &mut host.state_mut().params {
        for (i, v) in p.values.iter_mut().enumerate() {
            *v += amount * (1.0 + (i % 7) as f32);
        }
        for (i, g) in p.grads.iter_mut().enumerate() {
            *g = ((i * 37) % 11) as f32 - 5.0;
        }
        for s in [&mut p.momentum, &mut p.exp_avg, &mut p.exp_avg_sq]
            .into_iter()
            .flatten()
        {
            s.iter_mut().for_each(|x| *x += 1.0);
        }
    }
}

fn train_task(plugin: &mut MockPlugin, host: &mut MockHost, task: usize, steps: usize) {
    host.state_mut().task = task;
    plugin.on_task_start(host).unwrap();
    for s in 0..steps {
        // Different moves in every task, so a task's biases differ from the others'.
        perturb(host, 0.01 * (s + 1 + 10 * task) as f32);
        plugin.after_backward(host, 1.0).unwrap();
        plugin.after_step(host).unwrap();
    }
    plugin.on_task_end(host).unwrap();
}

/// Logits of task `j`'s test inputs as evaluation sees them.
fn eval_logits(plugin: &mut MockPlugin, host: &mut MockHost, j: usize) -> Vec<u32> {
    plugin.before_eval(host, Some(j)).unwrap();
    let st = host.state();
    let (d, k) = (st.input_dim, st.num_outputs);
    let (w, b) = (&st.params[0].values, &st.params[1].values);
    let x = &st.tasks[j].test_x;
    let mut out = Vec::new();
    for r in 0..x.len() / d {
        for o in 0..k {
            let dot: f32 = (0..d).map(|i| w[o * d + i] * x[r * d + i]).sum();
            out.push((dot + b[o]).to_bits());
        }
    }
    plugin.after_eval(host).unwrap();
    out
}

fn weights(host: &MockHost) -> Vec<f32> {
    host.state().params[0].values.clone()
}

#[test]
fn frozen_weights_are_bitwise_unchanged_and_evaluation_is_isolated() {
    // 3 tasks, linear 20 -> 6, 50% density, updates every 2 steps.
    let mut h = host(20, 6, 3);
    let mut plugin = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    plugin.on_model_built(&mut h).unwrap();
    let init = weights(&h);
    train_task(&mut plugin, &mut h, 0, 6);
    // The working copy holds at most the mask's 60 non-zero weights: dropped positions are 0.
    let nonzero = weights(&h).iter().filter(|&&v| v != 0.0).count();
    assert!((50..=60).contains(&nonzero), "{nonzero}");
    let logits0 = eval_logits(&mut plugin, &mut h, 0);
    // Task 0's trained weights as evaluation sees them.
    plugin.before_eval(&mut h, Some(0)).unwrap();
    let task0 = weights(&h);
    let bias0 = h.state().params[1].values.clone();
    plugin.after_eval(&mut h).unwrap();
    // Exactly half of the 120 weights (weights grown at the last update are still 0).
    assert_eq!(h.reported(0, "active_weights"), Some(60.0));
    let used0: Vec<usize> = (0..task0.len()).filter(|&i| task0[i] != 0.0).collect();
    assert!(used0.len() > 50, "{}", used0.len());
    assert!(used0.iter().any(|&i| task0[i] != init[i]), "task 0 trained");

    for t in 1..3 {
        train_task(&mut plugin, &mut h, t, 6);
        // Every weight of task 0 is bitwise unchanged in the shared network after task t, and
        // task 0's evaluation gives bit-identical logits (so R[t][0] = R[0][0]: BWT = 0).
        let w = weights(&h);
        for &i in &used0 {
            let in_current = w[i] != 0.0;
            if in_current {
                assert_eq!(
                    w[i].to_bits(),
                    task0[i].to_bits(),
                    "weight {i} after task {t}"
                );
            }
        }
        assert_eq!(
            eval_logits(&mut plugin, &mut h, 0),
            logits0,
            "task 0 after task {t}"
        );
        plugin.before_eval(&mut h, Some(0)).unwrap();
        let again = weights(&h);
        assert_eq!(
            again.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            task0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(h.state().params[1].values, bias0, "task 0's own biases");
        plugin.after_eval(&mut h).unwrap();
    }
    // Later tasks reused some of task 0's weights and the reports say how many.
    let reused = h.reported(1, "reused_weights").unwrap();
    assert!(reused > 0.0, "{reused}");
    assert_eq!(h.reported(0, "reused_weights"), Some(0.0));
    assert_eq!(h.reported(0, "density.total"), Some(0.5));
    assert_eq!(h.reported(0, "density.layers.0.weight"), Some(0.5));
    assert_eq!(h.reported(0, "free_weights"), Some(60.0));
    // Task 1 adds 60 − reused new weights to the 60 of task 0.
    assert_eq!(
        h.reported(1, "free_weights"),
        Some(120.0 - 60.0 - (60.0 - reused))
    );
    assert_eq!(h.reported(1, "reuse"), Some(reused / 60.0));
    assert_eq!(h.reported(2, "topology_updates"), Some(3.0));
}

/// Positions whose value changed between two snapshots (the ones the step trained).
fn changed(before: &[f32], after: &[f32]) -> Vec<bool> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.to_bits() != b.to_bits())
        .collect()
}

#[test]
fn after_step_restores_fixed_positions_and_masks_the_optimizer_state() {
    // Updates every 2 steps; `perturb` moves every value and adds 1 to every state entry, so a
    // trained position's state counts the steps it was trained in (masked-state semantics).
    // Task 0, so that every position of the mask is trainable (no frozen ones).
    let mut h = host(10, 4, 2);
    let mut plugin = MockPlugin::create::<Dst>(&config(&[("update_every", "2")])).unwrap();
    plugin.on_model_built(&mut h).unwrap();
    h.state_mut().task = 0;
    plugin.on_task_start(&mut h).unwrap();
    let start = weights(&h);
    let state = |h: &MockHost| h.state().params[0].momentum.clone().unwrap();

    // Step 1 (no update): untrained positions are restored bitwise.
    perturb(&mut h, 0.5);
    plugin.after_step(&mut h).unwrap();
    let w1 = weights(&h);
    let t1 = changed(&start, &w1);
    let trained = t1.iter().filter(|&&t| t).count();
    // Task 0 trains its mask: 20 of 40 positions.
    assert_eq!(trained, 20);
    let m1 = state(&h);
    for (i, _) in t1.iter().enumerate().filter(|(_, &t)| t) {
        assert_eq!(m1[i], 1.0, "state of trained position {i}");
    }
    // Step 2 ends with a topology update: dropped and grown positions get zero state.
    perturb(&mut h, 0.5);
    plugin.after_step(&mut h).unwrap();
    let (w2, m2) = (weights(&h), state(&h));
    // Step 3: which positions train now.
    perturb(&mut h, 0.5);
    plugin.after_step(&mut h).unwrap();
    let (w3, m3) = (weights(&h), state(&h));
    let t3 = changed(&w2, &w3);
    let (mut kept, mut grown, mut dropped) = (0, 0, 0);
    for i in 0..w3.len() {
        match (t1[i], t3[i]) {
            // Dropped and regrown at the update: a fresh start at 0 with zero state.
            (true, true) if m2[i] == 0.0 => {
                assert_eq!((w2[i], m3[i]), (0.0, 1.0), "regrown position {i}");
                grown += 1;
            }
            // Trained throughout: three steps of state.
            (true, true) => {
                assert_eq!((m2[i], m3[i]), (2.0, 3.0), "kept position {i}");
                kept += 1;
            }
            // Grown at the update: its state starts at the update, as if it had been masked.
            (false, true) => {
                assert_eq!(m2[i], 0.0, "grown position {i} after the update");
                assert_eq!(m3[i], 1.0, "grown position {i}");
                grown += 1;
            }
            // Dropped at the update: zero state, value restored from then on.
            (true, false) => {
                assert_eq!(m2[i], 0.0, "dropped position {i}");
                assert_eq!(w3[i].to_bits(), w2[i].to_bits());
                dropped += 1;
            }
            (false, false) => assert_eq!(w3[i].to_bits(), w2[i].to_bits(), "fixed {i}"),
        }
    }
    assert!(
        kept > 0 && grown > 0 && dropped > 0,
        "{kept} {grown} {dropped}"
    );
    // A new task starts with zero state everywhere, whatever the last one left.
    plugin.on_task_end(&mut h).unwrap();
    assert!(state(&h).iter().any(|&m| m != 0.0));
    h.state_mut().task = 1;
    plugin.on_task_start(&mut h).unwrap();
    assert!(state(&h).iter().all(|&m| m == 0.0));
}

#[test]
fn new_task_weights_start_at_init_or_zero() {
    for (mode, zero) in [("\"init\"", false), ("\"zero\"", true)] {
        let mut h = host(10, 4, 2);
        let cfg = config(&[("new_weights", mode), ("update_every", "1000")]);
        let mut plugin = MockPlugin::create::<Dst>(&cfg).unwrap();
        plugin.on_model_built(&mut h).unwrap();
        let init = weights(&h);
        train_task(&mut plugin, &mut h, 0, 1);
        plugin.before_eval(&mut h, Some(0)).unwrap();
        let task0 = weights(&h);
        plugin.after_eval(&mut h).unwrap();
        h.state_mut().task = 1;
        plugin.on_task_start(&mut h).unwrap();
        let w = weights(&h);
        // Positions not used by task 0 hold 0 (outside the mask) or init / 0 (new).
        let new: Vec<usize> = (0..w.len())
            .filter(|&i| task0[i] == 0.0 && w[i] != 0.0)
            .collect();
        if zero {
            assert!(new.is_empty(), "{new:?}");
        } else {
            assert!(new.len() > 5);
            assert!(new.iter().all(|&i| w[i] == init[i]));
        }
    }
}

#[test]
fn momentum_growth_needs_adam_and_reads_its_moments() {
    let mut h = host(6, 4, 2);
    let cfg = config(&[("growth", "\"momentum\"")]);
    let mut plugin = MockPlugin::create::<Dst>(&cfg).unwrap();
    let err = plugin.on_model_built(&mut h).unwrap_err();
    assert!(
        err.message.contains("strategy `dst`")
            && err.message.contains("`growth` = \"momentum\"")
            && err.message.contains("adam"),
        "{err}"
    );
    // With Adam: the grown positions are the inactive ones with the largest |m/√v|.
    let mut h = host(6, 4, 2);
    h.use_adam();
    let cfg = config(&[("growth", "\"momentum\""), ("update_every", "1")]);
    let mut plugin = MockPlugin::create::<Dst>(&cfg).unwrap();
    plugin.on_model_built(&mut h).unwrap();
    plugin.on_task_start(&mut h).unwrap();
    let mask: Vec<bool> = weights(&h).iter().map(|&v| v != 0.0).collect();
    let inactive: Vec<usize> = (0..24).filter(|&i| !mask[i]).collect();
    assert_eq!(inactive.len(), 12);
    // Moment ratio: m = position index + 1, v = 1 → the largest inactive indices win.
    {
        let p = &mut h.state_mut().params[0];
        let (m, v) = (p.exp_avg.as_mut().unwrap(), p.exp_avg_sq.as_mut().unwrap());
        for i in 0..24 {
            m[i] = if mask[i] { 0.0 } else { i as f32 + 1.0 };
            v[i] = 1.0;
        }
    }
    // drop fraction at step 1 of 6: 0.005 + 0.495·(1 + cos(π/6))/2 = 0.4668 → ceil(0.4668·12) = 6.
    plugin.after_step(&mut h).unwrap();
    // Grown weights start at zero, so the mask is not visible in the values; the grown
    // positions' moments were zeroed when they were grown, the other inactive ones kept theirs.
    let p = &h.state().params[0];
    let m = p.exp_avg.as_ref().unwrap();
    let zeroed: Vec<usize> = inactive.iter().copied().filter(|&i| m[i] == 0.0).collect();
    let mut top = inactive.clone();
    top.sort_unstable_by(|a, b| b.cmp(a));
    top.truncate(6);
    top.sort_unstable();
    assert_eq!(zeroed, top);
}

#[test]
fn unset_task_steps_and_a_hidden_task_id_are_refused() {
    // `task_steps` has no usable default: an empty config, or 0, is refused with the fix.
    for text in [String::new(), config(&[("task_steps", "0")])] {
        let err = MockPlugin::create::<Dst>(&text).unwrap_err();
        assert!(
            err.message.contains("strategy `dst`")
                && err.message.contains("`task_steps` must be set"),
            "{err}"
        );
    }
    // Task id hidden: refused with a clear message.
    let mut h = host(6, 4, 2);
    h.state_mut().setting = CLEF_SETTING_CLASS_IL;
    let mut plugin = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    plugin.on_model_built(&mut h).unwrap();
    let err = plugin.on_task_start(&mut h).unwrap_err();
    assert!(err.message.contains("task-il"), "{err}");
}

#[test]
fn erk_masks_on_a_two_layer_model_and_same_seed_same_masks() {
    let run = || {
        let mut h = host(8, 4, 2);
        // Add a second (wide) weight layer [32, 8]: ERK gives it a lower density.
        h.state_mut().params.push(MockParam {
            name: std::ffi::CString::new("layers.1.weight").unwrap(),
            shape: vec![32, 8],
            role: CLEF_ROLE_WEIGHT,
            layer: 1,
            values: (0..256).map(|i| 0.01 * (i as f32 + 1.0)).collect(),
            grads: vec![0.0; 256],
            momentum: Some(vec![0.0; 256]),
            exp_avg: None,
            exp_avg_sq: None,
        });
        let cfg = config(&[("init", "\"erk\""), ("sparsity", "0.8")]);
        let mut plugin = MockPlugin::create::<Dst>(&cfg).unwrap();
        plugin.on_model_built(&mut h).unwrap();
        train_task(&mut plugin, &mut h, 0, 4);
        let masks: Vec<Vec<bool>> = h
            .state()
            .params
            .iter()
            .filter(|p| p.role == CLEF_ROLE_WEIGHT)
            .map(|p| p.values.iter().map(|&v| v != 0.0).collect())
            .collect();
        (h, masks)
    };
    let (h, a) = run();
    let (_, b) = run();
    assert_eq!(a, b, "same seed, same masks");
    // Scores r = 12/32 and 40/256; target 0.2 of 288 = 57.6 weights:
    // ε = 57.6 / (12 + 40) = 1.1077 → d = 0.41538, 0.17308; round(13.29) = 13, round(44.31) = 44.
    let d0 = h.reported(0, "density.layers.0.weight").unwrap();
    let d1 = h.reported(0, "density.layers.1.weight").unwrap();
    assert_eq!((d0, d1), (13.0 / 32.0, 44.0 / 256.0));
    assert_eq!(h.reported(0, "density.total"), Some(57.0 / 288.0));
}

#[test]
fn growth_into_frozen_weights_reuses_them_or_mirrors_the_original_mismatch() {
    for mode in ["reuse", "original"] {
        let mut h = host(10, 4, 2);
        let cfg = config(&[
            ("growth", "\"gradient\""),
            ("frozen_growth", &format!("{mode:?}")),
        ]);
        let mut plugin = MockPlugin::create::<Dst>(&cfg).unwrap();
        plugin.on_model_built(&mut h).unwrap();
        train_task(&mut plugin, &mut h, 0, 1);
        plugin.before_eval(&mut h, Some(0)).unwrap();
        let task0 = weights(&h);
        plugin.after_eval(&mut h).unwrap();
        h.state_mut().task = 1;
        plugin.on_task_start(&mut h).unwrap();
        perturb(&mut h, 0.01);
        plugin.after_step(&mut h).unwrap();
        // Step 2 updates the topology: the largest gradients sit on task 0's weights that are
        // not in task 1's mask, so those are grown.
        let start = weights(&h);
        let targets: Vec<usize> = (0..40)
            .filter(|&i| task0[i] != 0.0 && start[i] == 0.0)
            .collect();
        assert!(!targets.is_empty());
        for (i, g) in h.state_mut().params[0].grads.iter_mut().enumerate() {
            *g = if targets.contains(&i) { 100.0 } else { 0.0 };
        }
        plugin.after_step(&mut h).unwrap();
        let w = weights(&h);
        plugin.on_task_end(&mut h).unwrap();
        plugin.before_eval(&mut h, Some(1)).unwrap();
        let eval = weights(&h);
        plugin.after_eval(&mut h).unwrap();
        let grown: Vec<usize> = targets
            .iter()
            .copied()
            .filter(|&i| eval[i] != 0.0)
            .collect();
        assert!(!grown.is_empty(), "{mode}");
        for &i in &grown {
            // Evaluation always reads the frozen value ...
            assert_eq!(eval[i].to_bits(), task0[i].to_bits(), "{mode} {i}");
            // ... training sees it too with `reuse`, and 0 with `original`.
            let expect = if mode == "reuse" { task0[i] } else { 0.0 };
            assert_eq!(w[i].to_bits(), expect.to_bits(), "{mode} {i}");
        }
    }
}

#[test]
fn a_checkpoint_between_tasks_resumes_bit_identically() {
    // Host A runs 3 tasks uninterrupted. Host B runs 2, checkpoints, and a fresh instance
    // (on_model_built on the trained model, then load_state) runs the third. Both hosts see the
    // same calls, so their RNG streams agree; the weights, every task's evaluation logits and
    // the reports of task 2 must be bit-identical.
    for cfg in [
        config(&[]),
        config(&[("growth", "\"unfired\""), ("bias", "\"shared\"")]),
    ] {
        let (mut a, mut b) = (host(12, 6, 3), host(12, 6, 3));
        let mut pa = MockPlugin::create::<Dst>(&cfg).unwrap();
        let mut pb = MockPlugin::create::<Dst>(&cfg).unwrap();
        pa.on_model_built(&mut a).unwrap();
        pb.on_model_built(&mut b).unwrap();
        for t in 0..2 {
            train_task(&mut pa, &mut a, t, 5);
            train_task(&mut pb, &mut b, t, 5);
        }
        let blob = pb.save_state(&mut b).unwrap();
        drop(pb);
        let mut resumed = MockPlugin::create::<Dst>(&cfg).unwrap();
        resumed.on_model_built(&mut b).unwrap();
        resumed.load_state(&mut b, &blob).unwrap();
        // Saving again gives the same bytes.
        assert_eq!(resumed.save_state(&mut b).unwrap(), blob);
        train_task(&mut pa, &mut a, 2, 5);
        train_task(&mut resumed, &mut b, 2, 5);
        let bits = |h: &MockHost| -> Vec<u32> {
            h.state()
                .params
                .iter()
                .flat_map(|p| p.values.iter().map(|v| v.to_bits()))
                .collect()
        };
        assert_eq!(bits(&a), bits(&b));
        for j in 0..3 {
            assert_eq!(
                eval_logits(&mut pa, &mut a, j),
                eval_logits(&mut resumed, &mut b, j),
                "task {j}"
            );
        }
        for key in ["reused_weights", "free_weights", "density.total"] {
            assert_eq!(a.reported(2, key), b.reported(2, key), "{key}");
        }
    }
}

#[test]
fn the_state_is_small_between_tasks_and_complete_within_one() {
    // Between tasks the state holds no working mask (the checkpoints the host takes).
    let mut h = host(12, 6, 3);
    let mut p = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    p.on_model_built(&mut h).unwrap();
    train_task(&mut p, &mut h, 0, 3);
    let between = kit::saved::<Dst>(&mut p, &mut h);
    assert_eq!(between.training, None);
    for l in &between.layers {
        assert!(l.mask.is_empty() && l.fired.is_empty() && l.fixed.is_empty());
        assert_eq!(l.task_masks.len(), 1);
        assert_eq!(l.task_masks[0].iter().filter(|&&m| m).count(), 36);
    }
    assert_eq!(between.task_biases.len(), 1);

    // A state saved within a task (after 2 of 5 steps, across a topology update) also resumes
    // bit-identically: it holds the task's working mask, fixed values and step count.
    let mut a = host(12, 6, 3);
    let mut pa = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    pa.on_model_built(&mut a).unwrap();
    train_task(&mut pa, &mut a, 0, 3);
    for plugin_host in [(&mut p, &mut h), (&mut pa, &mut a)] {
        let (plugin, host) = plugin_host;
        host.state_mut().task = 1;
        plugin.on_task_start(host).unwrap();
        for s in 0..2 {
            perturb(host, 0.01 * (s + 11) as f32);
            plugin.after_backward(host, 1.0).unwrap();
            plugin.after_step(host).unwrap();
        }
    }
    let within = kit::saved::<Dst>(&mut p, &mut h);
    assert_eq!((within.training, within.steps_in_task), (Some(1), 2));
    assert_eq!(within.updates_in_task, 1);
    let blob = p.save_state(&mut h).unwrap();
    drop(p);
    let mut resumed = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    resumed.on_model_built(&mut h).unwrap();
    resumed.load_state(&mut h, &blob).unwrap();
    for (plugin, host) in [(&mut resumed, &mut h), (&mut pa, &mut a)] {
        for s in 2..5 {
            perturb(host, 0.01 * (s + 11) as f32);
            plugin.after_backward(host, 1.0).unwrap();
            plugin.after_step(host).unwrap();
        }
        plugin.on_task_end(host).unwrap();
    }
    assert_eq!(h.values(), a.values());
    for j in 0..2 {
        assert_eq!(
            eval_logits(&mut resumed, &mut h, j),
            eval_logits(&mut pa, &mut a, j),
            "task {j}"
        );
    }
    assert_eq!(
        h.reported(1, "reused_weights"),
        a.reported(1, "reused_weights")
    );
}

#[test]
fn a_state_of_another_model_is_refused_with_a_reason() {
    let mut h = host(12, 6, 3);
    let mut p = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    p.on_model_built(&mut h).unwrap();
    train_task(&mut p, &mut h, 0, 3);
    let blob = p.save_state(&mut h).unwrap();
    // A model with 10 inputs: the state loads (it cannot see the model), but the next task
    // and the evaluation of a finished one refuse it instead of indexing out of bounds.
    let mut other = host(10, 6, 3);
    let mut p2 = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    p2.on_model_built(&mut other).unwrap();
    p2.load_state(&mut other, &blob).unwrap();
    let err = p2.before_eval(&mut other, Some(0)).unwrap_err();
    assert!(
        err.message.contains("72 values for parameter 0")
            && err.message.contains("has 60")
            && err.message.contains("another model"),
        "{}",
        err.message
    );
    other.state_mut().task = 1;
    let err = p2.on_task_start(&mut other).unwrap_err();
    assert!(err.message.contains("another model"), "{}", err.message);
    // Truncated, or another plugin's blob.
    let mut fresh = MockPlugin::create::<Dst>(&config(&[])).unwrap();
    fresh.on_model_built(&mut h).unwrap();
    for cut in [5, 20, blob.len() / 2, blob.len() - 1] {
        assert!(fresh.load_state(&mut h, &blob[..cut]).is_err(), "cut {cut}");
    }
}
