//! Strategy plugins end to end: the host loads real shared libraries built by a nested
//! `cargo build` (cargo test does not build `cdylib`s) and a C plugin compiled with the system
//! C compiler, runs them through `clef`, and refuses broken ones with clear messages.
//!
//! Every plugin is built once per test binary (`common::plugins`: a `OnceLock` shared by the
//! parallel tests) in the target directory and profile of the `clef` under test, reusing the
//! dependencies that build compiled.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clef_testkit::Cfg;
use serde_json::Value;

use common::plugin_run::{
    assert_same_training, base, builtin_finetune, line, raw_field, run, write,
};
use common::{clef, find, lines, plugin_file, plugins, records, show, text};

/// `clef validate` on `cfg`, which must fail; returns stderr.
fn validate_err(cfg: &Path) -> String {
    let out = clef().arg("validate").arg(cfg).output().expect("run clef");
    assert!(
        !out.status.success(),
        "validate should fail: {}",
        show(&out)
    );
    text(&out.stderr)
}

#[test]
fn finetune_plugin_matches_the_builtin_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(base(&[plugins()]).strategy("finetune"), tmp.path());
    let (out, _) = run(&cfg, &tmp.path().join("out"), "info");
    assert!(out.status.success(), "{}", show(&out));
    let recs = lines(&tmp.path().join("out"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("using plugin") && stderr.contains("libclef_plugin_finetune"),
        "the finetune plugin was not used:\n{stderr}"
    );
    let builtin = builtin_finetune(&cfg, tmp.path());
    for setting in ["task-il", "class-il"] {
        assert_same_training(
            line(&recs, "finetune", setting),
            line(&builtin, "finetune", setting),
        );
    }
}

#[test]
fn plugin_found_through_clef_plugin_path() {
    let p = plugins();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(base(&[]).strategy("fixture-hparams"), tmp.path());
    // `clef` from a directory of its own: the plugins next to the `clef` under test (where
    // the build put them) are not on its search path.
    let mut lone = lone_clef(tmp.path());
    let out = output_of(
        lone.env("CLEF_PLUGIN_PATH", format!("/nonexistent:{}", p.display()))
            .arg("validate")
            .arg(&cfg),
    );
    assert!(out.status.success(), "{}", show(&out));
    // Without the search path the name is unknown, and the message says where it looked.
    let out = output_of(lone_clef(tmp.path()).arg("validate").arg(&cfg));
    assert!(
        !out.status.success(),
        "validate should fail: {}",
        show(&out)
    );
    let e = text(&out.stderr);
    assert!(
        e.contains("unknown strategy `fixture-hparams`") && e.contains("plugin search path"),
        "{e}"
    );
}

/// [`clef`] for a link to (or copy of) the `clef` under test in `dir/bin`, so that nothing is
/// next to it.
fn lone_clef(dir: &Path) -> Command {
    let bin = dir.join("bin");
    let exe = bin.join("clef");
    if !exe.exists() {
        std::fs::create_dir_all(&bin).expect("create bin/");
        if std::fs::hard_link(env!("CARGO_BIN_EXE_clef"), &exe).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_clef"), &exe).expect("copy clef");
        }
    }
    let mut c = clef();
    c.env_remove("CLEF_PLUGIN_PATH");
    let mut lone = Command::new(&exe);
    lone.envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
    for (k, v) in c.get_envs() {
        if v.is_none() {
            lone.env_remove(k);
        }
    }
    lone
}

/// `cmd.output()`, retried while the executable is busy (ETXTBSY: a copied `clef` can still
/// be open for writing in a child another test thread forked meanwhile).
fn output_of(cmd: &mut Command) -> Output {
    for _ in 0..100 {
        match cmd.output() {
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            r => return r.expect("run clef"),
        }
    }
    panic!("the executable stayed busy")
}

#[test]
fn wrong_abi_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(base(&[plugins()]).strategy("fixture-bad-abi"), tmp.path());
    let e = validate_err(&cfg);
    assert!(
        e.contains("plugin `fixture-bad-abi`")
            && e.contains("libclef_plugin_fixture_bad_abi")
            && e.contains("was built for clef plugin ABI 99.0; this clef supports ABI 1.x"),
        "{e}"
    );
    assert!(
        e.contains("plugins.toml:") && e.contains("`strategy[0].name`"),
        "{e}"
    );
}

#[test]
fn missing_entry_symbol_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = plugins().join(plugin_file("fixture-no-entry"));
    let cfg = write(
        base(&[]).strategy("fixture-no-entry").path(&lib),
        tmp.path(),
    );
    let e = validate_err(&cfg);
    assert!(
        e.contains(&format!(
            "plugin {}: no symbol `clef_plugin_entry_v1`; is it a clef plugin?",
            lib.display()
        )),
        "{e}"
    );
    assert!(
        e.contains("`strategy[0].path`") && e.contains("plugins.toml:28:"),
        "{e}"
    );
}

#[test]
fn a_file_that_is_not_a_shared_library_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join(plugin_file("junk"));
    std::fs::write(&junk, "this is not a shared library\n").unwrap();
    let cfg = write(base(&[tmp.path()]).strategy("junk"), tmp.path());
    let e = validate_err(&cfg);
    assert!(
        e.contains(&format!(
            "plugin {}: cannot load it as a shared library",
            junk.display()
        )),
        "{e}"
    );
    // `clef plugins` lists the broken file with its error instead of failing.
    let out = clef()
        .args(["plugins", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&format!("! {}", junk.display()))
            && listing.contains("cannot load it as a shared library"),
        "{listing}"
    );
}

#[test]
fn explicit_path_must_provide_the_named_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = plugins().join(plugin_file("fixture-hparams"));
    let e = validate_err(&write(base(&[]).strategy("other").path(&lib), tmp.path()));
    assert!(
        e.contains("`strategy[0].name` is `other` but the library")
            && e.contains("provides plugin `fixture-hparams`"),
        "{e}"
    );
}

#[test]
fn panicking_hooks_fail_only_their_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .strategy("finetune")
        .strategy("fixture-panic")
        .strategy("fixture-panic")
        .label("panic-in-create")
        .hparams("panic_in = \"new\"")
        .strategy("fixture-panic")
        .label("panic-in-destroy")
        .hparams("panic_in = \"destroy\"");
    let cfg = write(cfg, tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "warn");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(recs.len(), 8);
    for setting in ["task-il", "class-il"] {
        assert_eq!(find(&recs, "finetune", setting)["status"], "completed");
        let r = find(&recs, "fixture-panic", setting);
        assert_eq!(r["status"], "failed");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.starts_with("plugin `fixture-panic` panicked in after_backward: ")
                && e.contains("fixture-panic: deliberate panic in after_backward"),
            "{e}"
        );
        let r = find(&recs, "panic-in-create", setting);
        assert_eq!(r["status"], "failed");
        let e = r["error"].as_str().unwrap();
        assert!(
            e.contains("plugin `fixture-panic` panicked in create")
                && e.contains("deliberate panic in new"),
            "{e}"
        );
        // A panic in `destroy` (after a completed trial) is contained by the SDK.
        assert_eq!(
            find(&recs, "panic-in-destroy", setting)["status"],
            "completed"
        );
    }
}

#[test]
fn erroring_hooks_fail_only_their_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .strategy("fixture-error")
        .hparams("error_in = \"on_task_end\"")
        .strategy("fixture-error")
        .label("error-in-before-batch")
        .hparams("error_in = \"before_batch\"")
        .strategy("finetune");
    let cfg = write(cfg, tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "warn");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    for setting in ["task-il", "class-il"] {
        let r = find(&recs, "fixture-error", setting);
        assert_eq!(r["status"], "failed");
        assert_eq!(
            r["error"],
            "plugin `fixture-error` failed in on_task_end: fixture-error: deliberate failure in \
             on_task_end"
        );
        // The rows finished before the failure are kept (none: it fails at the first task end).
        assert_eq!(r["accuracy_matrix"], serde_json::json!([]));
        let r = find(&recs, "error-in-before-batch", setting);
        assert_eq!(
            r["error"],
            "plugin `fixture-error` failed in before_batch: fixture-error: deliberate failure in \
             before_batch"
        );
        assert_eq!(find(&recs, "finetune", setting)["status"], "completed");
    }
}

#[test]
fn hyperparameters_are_checked_against_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |hparams: &str, expected: &[&str]| {
        let cfg = base(&[plugins()])
            .strategy("finetune")
            .strategy("fixture-hparams")
            .hparams(hparams);
        let cfg = write(cfg, tmp.path());
        let e = validate_err(&cfg);
        for x in expected {
            assert!(e.contains(x), "{hparams}: expected {x:?} in\n{e}");
        }
        // The hparams line of the second strategy.
        assert!(e.contains("plugins.toml:31:"), "{hparams}: no line in\n{e}");
    };
    check(
        "rte = 2.0",
        &[
            "`strategy[1].hparams.rte`",
            "unknown hyperparameter `rte` for plugin `fixture-hparams`; did you mean `rate`?",
            "known: rate, count, flag, mode",
        ],
    );
    check(
        "count = \"ten\"",
        &["`strategy[1].hparams.count` has the wrong type: expected a whole number (int), got a string"],
    );
    check(
        "count = 2.5",
        &["`strategy[1].hparams.count` must be a whole number (int), got 2.5"],
    );
    check(
        "rate = 11",
        &["`strategy[1].hparams.rate` is out of range: 11 is not in [0, 10]"],
    );
    check(
        "count = 0",
        &["`strategy[1].hparams.count` is out of range"],
    );
    check(
        "flag = 1",
        &["`strategy[1].hparams.flag` has the wrong type: expected true or false (bool)"],
    );
    check(
        "mode = \"c\"",
        &["`strategy[1].hparams.mode` must be one of \"a\" | \"b\", got \"c\""],
    );
    // Valid values (an int where a float is expected, a whole float for an int) pass and the
    // plugin receives the full table.
    let cfg = base(&[plugins()])
        .strategy("fixture-hparams")
        .hparams("rate = 2, count = 5.0, mode = \"b\"");
    let cfg = write(cfg, tmp.path());
    let out = clef().arg("validate").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "info");
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(recs.len(), 2);
    let log = text(&out.stderr);
    assert!(
        log.contains("rate=2")
            && log.contains("count=5")
            && log.contains("flag=false")
            && log.contains("mode=B"),
        "{log}"
    );
}

/// The loss-of-plasticity regularisers train two digits tasks in both settings, reproducibly,
/// and change training compared with finetune: a plugin that added no gradient would give
/// finetune's records bit for bit (`finetune_plugin_matches_the_builtin_bit_for_bit`).
#[test]
fn regulariser_plugins_train_and_change_the_result() {
    let tmp = tempfile::tempdir().unwrap();
    let regularisers = ["spectral", "wasserstein", "l2init"];
    let mut cfg = base(&[plugins()]).tasks(2).strategy("finetune");
    for name in regularisers {
        cfg = cfg.strategy(name).hparams("lambda = 0.1");
    }
    let cfg = write(cfg, tmp.path());
    let mut runs = Vec::new();
    for out in ["a", "b"] {
        let (o, _) = run(&cfg, &tmp.path().join(out), "warn");
        assert!(o.status.success(), "{}", show(&o));
        runs.push(lines(&tmp.path().join(out)));
    }
    for setting in ["task-il", "class-il"] {
        let ft = line(&runs[0], "finetune", setting);
        for name in regularisers {
            let l = line(&runs[0], name, setting);
            // Same seed, same results; `assert_same_training` also checks completion.
            assert_same_training(l, line(&runs[1], name, setting));
            let v: Value = serde_json::from_str(l).unwrap();
            let m = v["accuracy_matrix"].as_array().unwrap();
            assert_eq!(m.len(), 2, "{name}/{setting}: {l}");
            assert!(
                m.iter()
                    .flat_map(|r| r.as_array().unwrap())
                    .all(|a| (0.0..=1.0).contains(&a.as_f64().unwrap())),
                "{name}/{setting}: {l}"
            );
            assert_ne!(
                raw_field(l, "mean_loss"),
                raw_field(ft, "mean_loss"),
                "{name}/{setting} trained exactly like finetune"
            );
        }
    }
}

#[test]
fn sfr_trains_through_the_ntk_service_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .tasks(2)
        .strategy("finetune")
        .strategy("sfr")
        .hparams("inducing_points = 20, dual_batch_size = 50")
        .strategy("sfr")
        .label("sfr-no-cov")
        .hparams("inducing_points = 20, no_covariance = true");
    let cfg = write(cfg, tmp.path());
    let mut runs = Vec::new();
    for out in ["a", "b"] {
        let (o, _) = run(&cfg, &tmp.path().join(out), "warn");
        assert!(o.status.success(), "{}", show(&o));
        runs.push(lines(&tmp.path().join(out)));
    }
    for setting in ["task-il", "class-il"] {
        let ft = line(&runs[0], "finetune", setting);
        for name in ["sfr", "sfr-no-cov"] {
            let l = line(&runs[0], name, setting);
            // Same seed, same results (inducing points from the plugin RNG, f64 Grams).
            assert_same_training(l, line(&runs[1], name, setting));
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                v["accuracy_matrix"].as_array().unwrap().len(),
                2,
                "{name}: {l}"
            );
            // The first task trains like finetune; the regulariser changes the second.
            assert_ne!(
                raw_field(l, "mean_loss"),
                raw_field(ft, "mean_loss"),
                "{name}/{setting} trained exactly like finetune"
            );
        }
        assert_ne!(
            raw_field(line(&runs[0], "sfr", setting), "mean_loss"),
            raw_field(line(&runs[0], "sfr-no-cov", setting), "mean_loss"),
            "Λ from the NTK Gram made no difference"
        );
    }
}

/// The `dst` plugin isolates tasks (task-IL BWT is exactly 0: every column of the accuracy
/// matrix is constant from the task's own row on), its reports land in `results.jsonl`
/// (`strategy_metrics`, one map per task), and `growth = "momentum"` with SGD fails its trial
/// with a message naming the plugin and the hyperparameter.
#[test]
fn dst_isolates_tasks_and_reports_into_the_results() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Cfg::digits()
        .name("dst")
        .seeds(&[3])
        .plugin_dirs(&[plugins()])
        .test_fraction(0.25)
        .momentum(0.9)
        .iterations(20)
        .strategy("finetune")
        .strategy("dst")
        .hparams(
            "sparsity = 0.8, init = \"erk\", growth = \"gradient\", update_every = 5, \
             task_steps = 20",
        )
        .strategy("dst")
        .label("dst-momentum")
        .hparams("growth = \"momentum\", task_steps = 20")
        .write(tmp.path(), "dst.toml");
    let out_dir = tmp.path().join("out");
    let (out, recs) = run(&cfg, &out_dir, "warn");
    // The momentum trial fails (below), so the run reports one incomplete trial.
    assert!(!out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("1 trial(s) did not complete"),
        "{}",
        show(&out)
    );
    assert_eq!(recs.len(), 3, "{}", show(&out));

    let dst = find(&recs, "dst", "task-il");
    assert_eq!(dst["status"], "completed", "{dst}");
    assert_eq!(dst["metrics"]["bwt"].as_f64(), Some(0.0), "{dst}");
    let r: Vec<Vec<f64>> = serde_json::from_value(dst["accuracy_matrix"].clone()).unwrap();
    for j in 0..5 {
        for i in j..5 {
            assert_eq!(r[i][j].to_bits(), r[j][j].to_bits(), "R[{i}][{j}]: {r:?}");
        }
    }
    let m = dst["strategy_metrics"]
        .as_array()
        .expect("strategy_metrics");
    assert_eq!(m.len(), 5, "{dst}");
    // Network 64-32-10: 2048 + 320 weights, ERK scores r = 96/2048 and 42/320. At density
    // 0.2: ε = 0.2·2368 / (96 + 42) = 3.4319, d = 0.16087 and 0.45043 (no layer above 1), so
    // round(329.46) = 329 and round(144.14) = 144 weights: 473 of 2368 = 0.19975.
    let mut free_before = 2368.0;
    for (t, task) in m.iter().enumerate() {
        // (JSON numbers parse back to within an ulp.)
        let near = |key: &str, v: f64| (task[key].as_f64().unwrap() - v).abs() < 1e-12;
        assert!(near("density.total", 473.0 / 2368.0), "task {t}: {task}");
        assert_eq!(task["topology_updates"].as_f64(), Some(4.0), "{task}");
        let free = task["free_weights"].as_f64().unwrap();
        let active = task["active_weights"].as_f64().unwrap();
        let reused = task["reused_weights"].as_f64().unwrap();
        // The task's new weights are exactly the ones that stopped being free.
        assert_eq!(free_before - free, active - reused, "task {t}: {task}");
        if t == 0 {
            assert_eq!(reused, 0.0);
        } else {
            assert!(reused > 0.0, "task {t}: {task}");
        }
        free_before = free;
        assert!(near("density.layers.0.weight", 329.0 / 2048.0), "{task}");
        assert!(near("density.layers.1.weight", 144.0 / 320.0), "{task}");
        assert_eq!(active, 473.0);
    }
    // Strategies that report nothing have no `strategy_metrics`.
    let raw = lines(&out_dir);
    assert!(!line(&raw, "finetune", "task-il").contains("strategy_metrics"));

    let bad = find(&recs, "dst-momentum", "task-il");
    assert_eq!(bad["status"], "failed");
    let e = bad["error"].as_str().unwrap();
    assert!(
        e.contains("plugin `dst` failed in on_model_built")
            && e.contains("`growth` = \"momentum\"")
            && e.contains("adam"),
        "{e}"
    );
}

#[test]
fn a_diverging_trial_is_recorded_and_the_run_goes_on() {
    // `l2` with λ = 1e12 acts from the second task on (its anchor is the end of the first):
    // the step multiplies the weights by about 1 − lr·λ, so they overflow within a few steps.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .strategy("l2")
        .label("blows-up")
        .hparams("lambda = 1e12")
        .strategy("finetune");
    let cfg = write(cfg, tmp.path());
    let out = tmp.path().join("out");
    let (o, recs) = run(&cfg, &out, "warn");
    assert!(!text(&o.stderr).contains("panicked"), "{}", show(&o));
    for setting in ["task-il", "class-il"] {
        assert_eq!(find(&recs, "finetune", setting)["status"], "completed");
        let d = find(&recs, "blows-up", setting);
        assert_eq!(d["status"], "diverged", "{d}");
        let msg = d["error"].as_str().unwrap_or_default();
        assert!(msg.contains("task 1") && msg.contains("at step"), "{msg}");
        // The first task's evaluation is kept.
        let rows = d["accuracy_matrix"].as_array().expect("matrix");
        assert_eq!(rows.len(), 1, "{d}");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary");
    assert!(summary.contains("diverged"), "{summary}");
}

/// The `par` plugin end to end on digits (task-IL, a permuted copy of task 0 in the middle):
/// every task reports its decision and the pool's parameters, the trial's `num_params` is the
/// pool's, the first task and the permuted (unrelated) copy get new experts, and the
/// new-expert-per-task policy isolates tasks (BWT exactly 0) with a hand-counted size.
#[test]
fn par_allocates_experts_and_reports_decisions() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Cfg::digits()
        .name("par")
        .seeds(&[1])
        .plugin_dirs(&[plugins()])
        .test_fraction(0.25)
        .tasks(3)
        .set("scenario", "class_order", "[0, 1, 0, 1, 2, 3]")
        .set("scenario", "permuted_tasks", "[1]")
        .momentum(0.9)
        .iterations(20)
        .strategy("par")
        .hparams(
            "search_epochs = 3, search_steps = 10, max_depth = 2, min_width = 16, max_width = 32",
        )
        .strategy("par")
        .label("expert-per-task")
        .hparams("policy = \"new-expert\"")
        .write(tmp.path(), "par.toml");
    let out_dir = tmp.path().join("out");
    let (out, recs) = run(&cfg, &out_dir, "warn");
    assert!(out.status.success(), "{}", show(&out));

    let par = find(&recs, "par", "task-il");
    assert_eq!(par["status"], "completed", "{par}");
    let m = par["strategy_metrics"]
        .as_array()
        .expect("strategy_metrics");
    assert_eq!(m.len(), 3, "{par}");
    for task in m {
        for key in [
            "decision",
            "expert",
            "arch.depth",
            "arch.width",
            "params.total",
        ] {
            assert!(task[key].is_number(), "{key}: {task}");
        }
    }
    assert_eq!(m[0]["decision"].as_f64(), Some(3.0), "{par}");
    // The permuted copy of task 0 is unrelated in input space: a new expert.
    let d1 = m[1]["decision"].as_f64().unwrap();
    assert!(d1 == 2.0 || d1 == 3.0, "{par}");
    assert_ne!(m[1]["expert"], m[0]["expert"], "{par}");
    assert!(m[1]["relatedness.task0"].as_f64().unwrap() > 0.75, "{par}");
    assert_eq!(
        par["num_params"].as_f64(),
        m[2]["params.total"].as_f64(),
        "{par}"
    );

    let each = find(&recs, "expert-per-task", "task-il");
    assert_eq!(each["status"], "completed", "{each}");
    assert_eq!(each["metrics"]["bwt"].as_f64(), Some(0.0), "{each}");
    // Three 64-32 experts with one 2-unit head each: 3 · (64·32 + 32 + 2·33).
    assert_eq!(each["num_params"].as_f64(), Some(3.0 * 2146.0), "{each}");
}

/// Tune-then-evaluate, conventional and first-task tuning of a plugin's hyperparameters end to
/// end: every selection says which phase and trials chose it, chooses the best candidate by the
/// configured metric, and the evaluation trials run the chosen values on D_eval only.
#[test]
fn protocols_tune_select_and_evaluate_with_provenance() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .seeds(&[3, 4])
        .settings(&["task-il"])
        .protocol(
            "kinds = [\"tune-then-evaluate\", \"conventional\", \"first-task\"]\n\
             selection_metric = \"avg-incremental-accuracy\"\ntune_seeds = [7]\ntune_tasks = 2",
        )
        .tune_data("dataset = \"synthetic\"\nsynthetic_dim = 64")
        .strategy("finetune")
        .strategy("l2")
        .search("lambda = [0.001, 1.0, 100.0]");
    let cfg = write(cfg, tmp.path());
    let out = tmp.path().join("out");
    let (o, recs) = run(&cfg, &out, "warn");
    assert!(o.status.success(), "{}", show(&o));
    let by_id: std::collections::BTreeMap<String, &Value> = recs
        .iter()
        .map(|r| (r["trial_id"].as_str().unwrap().to_string(), r))
        .collect();
    let sels: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("selections.json")).unwrap())
            .unwrap();
    assert_eq!(sels.len(), 3 * 2, "{sels:?}");
    let eval_fp = recs.iter().find(|r| r["phase"] == "eval").unwrap()["data_fingerprint"].clone();
    for s in &sels {
        let eval: Vec<&Value> = s["eval_trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| by_id[id.as_str().unwrap()])
            .collect();
        assert_eq!(eval.len(), 2, "{s}");
        for r in &eval {
            assert_eq!(r["phase"], "eval");
            assert_eq!(r["data_fingerprint"], eval_fp, "evaluation left D_eval");
            assert_eq!(r["hparams"], s["hparams"], "evaluation ran other values");
        }
        if s["strategy"] == "finetune" {
            assert_eq!(s["chosen_in_phase"], "config");
            continue;
        }
        assert_eq!(s["chosen_in_phase"], "tune", "{s}");
        assert_eq!(s["selection_metric"], "avg-incremental-accuracy");
        assert_eq!(s["candidates"], 3);
        let all = s["all_tune_trials"].as_array().unwrap();
        assert_eq!(all.len(), 3, "{s}");
        let tune: Vec<&Value> = all.iter().map(|id| by_id[id.as_str().unwrap()]).collect();
        let aia = |r: &Value| r["metrics"]["avg_incremental_accuracy"].as_f64().unwrap();
        let best = tune.iter().map(|r| aia(r)).fold(f64::MIN, f64::max);
        let chosen = by_id[s["tune_trials"][0].as_str().unwrap()];
        assert_eq!(aia(chosen), best, "{s}");
        assert_eq!(chosen["hparams"], s["hparams"]);
        assert_eq!(s["score"].as_f64().unwrap(), best);
        for r in &tune {
            assert_eq!(r["phase"], "tune");
            assert_eq!(r["seed"], 7);
            let tasks = r["accuracy_matrix"].as_array().unwrap().len();
            match s["protocol"].as_str().unwrap() {
                "tune-then-evaluate" => {
                    assert_ne!(r["data_fingerprint"], eval_fp, "tuned on D_eval");
                    assert_eq!(r["dataset"], "blobs");
                }
                "conventional" => {
                    assert_eq!(r["data_fingerprint"], eval_fp);
                    assert_eq!(tasks, 5);
                }
                "first-task" => {
                    assert_eq!(r["data_fingerprint"], eval_fp);
                    // l2's lambda acts from the second task on: first-task tunes on two.
                    assert_eq!(
                        tasks, 2,
                        "first-task tuned on other than the first two tasks"
                    );
                }
                other => panic!("protocol {other}"),
            }
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("## Protocol `tune-then-evaluate`, task-il"),
        "{summary}"
    );
    assert!(
        summary.contains("tune-then-evaluate vs conventional"),
        "{summary}"
    );
    assert!(summary.contains("phase `tune`: best of 3 candidates by mean avg-incremental-accuracy"));
    let rankings = std::fs::read_to_string(out.join("report/rankings.csv")).unwrap();
    assert_eq!(rankings.lines().count(), 1 + 3, "{rankings}");
    for f in [
        "plots/rank-shift-task-il.svg",
        "plots/bwt-vs-la-conventional-task-il.svg",
        "report/protocols.csv",
        "report/paired.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // `clef report` rebuilds the same summary from the store alone.
    std::fs::remove_file(out.join("results.jsonl")).unwrap();
    let o = clef().args(["report"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("summary.md")).unwrap(),
        summary
    );
    assert_eq!(records(&out).len(), recs.len());
}

/// Tuning protocols sharded over one shared store (the two-array Slurm workflow): a shard that
/// lacks other shards' tuning trials stops after its own and says so; once every tuning trial
/// is stored, the shards' evaluation slices complete exactly the trials of a local run.
#[test]
fn sharded_tuning_waits_for_every_tuning_trial_then_matches_the_local_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .protocol("kinds = [\"conventional\"]")
        .strategy("finetune")
        .strategy("l2")
        .search("lambda = [0.001, 1.0, 100.0]");
    let cfg = write(cfg, tmp.path());
    let shard = |out: &Path, s: &str| {
        let o = clef()
            .args(["run", "--no-progress", "--shard", s, "--out"])
            .arg(out)
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", show(&o));
        text(&o.stdout)
    };
    let shared = tmp.path().join("shared");
    let first = shard(&shared, "0/2");
    assert!(first.contains("the tuning phase is incomplete"), "{first}");
    assert!(!shared.join("selections.json").exists());
    let second = shard(&shared, "1/2");
    assert!(!second.contains("incomplete"), "{second}");
    let again = shard(&shared, "0/2");
    assert!(again.contains("tuning 0 run"), "{again}");
    let local = tmp.path().join("local");
    let (o, _) = run(&cfg, &local, "warn");
    assert!(o.status.success(), "{}", show(&o));
    let ids = |d: &Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(d.join("trials"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(ids(&shared), ids(&local));
    // 2 settings x l2's 3 candidates x 1 seed tuning + 2 settings x 2 strategies x 1 seed eval
    assert_eq!(ids(&local).len(), 6 + 4);
    let sel = |d: &Path| std::fs::read_to_string(d.join("selections.json")).unwrap();
    assert_eq!(sel(&shared), sel(&local));
}

#[test]
fn a_plugin_without_convolutional_support_is_refused_for_a_convnet() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = plugins();
    let convnet = |strategy: &str| {
        base(&[dir])
            .unset("model", "hidden")
            .set("model", "backbone", "\"convnet\"")
            .set("model", "channels", "[4, 4]")
            .strategy(strategy)
    };
    // `fixture-unsaved` does not declare convolutional backbones (ABI 1.4 descriptor field,
    // MLP only by default): refused before anything runs, naming the entry, the plugin and
    // the backbone.
    let err = validate_err(&write(convnet("fixture-unsaved"), tmp.path()));
    for part in [
        "strategy[0].name",
        "`fixture-unsaved`",
        "MLP backbones only",
        "`convnet`",
    ] {
        assert!(err.contains(part), "missing {part:?} in: {err}");
    }
    // `ewc` declares them: the same config validates.
    let out = clef()
        .arg("validate")
        .arg(write(convnet("ewc"), tmp.path()))
        .output()
        .expect("run clef");
    assert!(out.status.success(), "{}", show(&out));
    // `clef plugins` says which backbones each plugin takes (the C plugin, which leaves the
    // descriptor's `backbones` at 0, lists as "mlp only": `c_plugin_loads_lists_and_trains`).
    let listing = clef()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(dir)
        .output()
        .expect("run clef");
    let listing = text(&listing.stdout);
    let block = |name: &str| {
        let start = listing
            .find(&format!("\n{name} "))
            .or_else(|| listing.starts_with(&format!("{name} ")).then_some(0))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        listing[start..]
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        block("ewc").contains("backbones: mlp, convnet, resnet18"),
        "{listing}"
    );
}
