//! The plugin ABI across languages and versions: a C plugin written from the header alone, a
//! plugin built against ABI 1.2 (before typed hyperparameters, backbones and the 1.6 hooks)
//! loading and running unchanged, the `new-plugin` template, and the ABI 1.6 `loss` and
//! `predict` hooks end to end.

mod common;

use std::process::Command;

use serde_json::Value;

use common::plugin_run::{assert_same_training, base, builtin_finetune, line, metric, run, write};
use common::{
    c_abi12_plugin_dir, c_plugin_dir, clef, find, lines, plugin_file, plugins, repo_root,
    scratch_target, show, text,
};

#[test]
fn c_plugin_loads_lists_and_trains() {
    let c_dir = c_plugin_dir();
    let out = clef()
        .args(["plugins", "--dir"])
        .arg(c_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = text(&out.stdout);
    for x in [
        "c-minimal 0.2.0 (ABI 1.6)",
        "libclef_plugin_c_minimal",
        "hooks:  on_model_built, on_task_start, after_backward, on_task_end",
        "lambda",
        "range [0, 10000], log scale",
        "strength of the L2 pull towards the anchor weights",
        r#"one of "previous-task" | "init""#,
        "samples  int    default 16         range [1, 256]",
        "biases   bool   default true",
        "backbones: mlp only",
    ] {
        assert!(listing.contains(x), "expected {x:?} in\n{listing}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[c_dir])
        .strategy("c-minimal")
        .label("plain")
        .strategy("c-minimal")
        .label("typed")
        .hparams("lambda = 0.5, anchor = \"init\", distill = 2, samples = 8, biases = false")
        .strategy("c-minimal")
        .label("pull")
        .hparams("lambda = 1.0")
        .strategy("c-minimal")
        .label("distill")
        .hparams("distill = 1.0");
    let cfg = write(cfg, tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "info");
    assert!(out.status.success(), "{}", show(&out));
    let log = text(&out.stderr);
    assert!(
        log.contains(
            "c-minimal: task 0 of 5, lambda 0.5, anchor init, distill 2, samples 8, biases 0"
        ),
        "{log}"
    );
    // The plugin keeps state but has no save_state: checkpoints are off, with a warning, and
    // the trials still complete.
    assert!(
        log.contains("no more checkpoints for this trial")
            && log.contains(
                "plugin `c-minimal` does not save its state (no save_state export): checkpoints \
                 are off for this trial"
            ),
        "{log}"
    );
    let builtin = builtin_finetune(&cfg, tmp.path());
    let raw = lines(&tmp.path().join("out"));
    for setting in ["task-il", "class-il"] {
        // With lambda = distill = 0 it trains exactly as fine-tuning.
        assert_same_training(
            line(&raw, "plain", setting),
            line(&builtin, "finetune", setting),
        );
        // The typed values it received (reported in task 0) are the config's, in the kinds'
        // encodings: numbers, the choice's index, the bool as 0/1; defaults filled in.
        let typed = find(&recs, "typed", setting);
        let plain = find(&recs, "plain", setting);
        for (r, want) in [
            (typed, [0.5, 1.0, 2.0, 8.0, 0.0]),
            (plain, [0.0, 0.0, 0.0, 16.0, 1.0]),
        ] {
            assert_eq!(r["status"], "completed");
            let got: Vec<f64> = ["lambda", "anchor", "distill", "samples", "biases"]
                .iter()
                .map(|k| metric(r, 0, &format!("hparam.{k}")))
                .collect();
            assert_eq!(got, want, "{}", r["strategy"]);
        }
        // The L2 pull keeps the weights closer to the previous task's: a smaller distance at
        // every task end (tasks 1..4; the anchor exists from the end of task 0).
        let pull = find(&recs, "pull", setting);
        for t in 1..5 {
            let (a, b) = (
                metric(pull, t, "anchor_dist2"),
                metric(plain, t, "anchor_dist2"),
            );
            assert!(a < b, "{setting} task {t}: pull {a} vs plain {b}");
        }
        // The distillation (forward + vjp) keeps the stored rows' logits closer to what they
        // were at their task's end.
        let distill = find(&recs, "distill", setting);
        for t in 1..5 {
            let (a, b) = (
                metric(distill, t, "output_drift"),
                metric(plain, t, "output_drift"),
            );
            assert!(a < b, "{setting} task {t}: distill {a} vs plain {b}");
        }
        assert_ne!(distill["accuracy_matrix"], plain["accuracy_matrix"]);
    }
    // In class-IL, where fine-tuning forgets most, distillation forgets less.
    let forgetting = |s: &str| find(&recs, s, "class-il")["metrics"]["forgetting"].as_f64();
    assert!(
        forgetting("distill") < forgetting("plain"),
        "{:?} vs {:?}",
        forgetting("distill"),
        forgetting("plain")
    );
}

#[test]
fn new_plugin_template_builds_and_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let out = clef()
        .args(["new-plugin", "l2-anchor", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let krate = tmp.path().join("l2-anchor");
    assert!(krate.join("Cargo.toml").is_file() && krate.join("src/lib.rs").is_file());
    // A second time refuses to overwrite.
    let again = clef()
        .args(["new-plugin", "l2-anchor", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!again.status.success() && text(&again.stderr).contains("already exists"));
    let bad = clef().args(["new-plugin", "L2!"]).output().unwrap();
    assert!(!bad.status.success() && text(&bad.stderr).contains("invalid plugin name"));

    // Pin the dependency versions to the workspace's so the build needs no registry update.
    std::fs::copy(repo_root().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    // Not next to `clef`: the tests' own target directory.
    let target = scratch_target();
    let build = Command::new(env!("CARGO"))
        .arg("build")
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", show(&build));
    // Its own tests (the SDK kit's five and the gradient on the mock host) pass as generated.
    let test = Command::new(env!("CARGO"))
        .arg("test")
        .arg("--manifest-path")
        .arg(krate.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", show(&test));
    assert!(text(&test.stdout).contains("6 passed"), "{}", show(&test));
    let lib = target.join("debug").join(plugin_file("l2-anchor"));
    assert!(lib.is_file(), "{} missing", lib.display());

    let listing = clef()
        .args(["plugins", "--dir"])
        .arg(&lib)
        .output()
        .unwrap();
    let listing = text(&listing.stdout);
    assert!(
        listing.contains("l2-anchor 0.1.0 (ABI 1.6)") && listing.contains("lambda"),
        "{listing}"
    );

    let cfg = base(&[])
        .strategy("l2-anchor")
        .path(&lib)
        .hparams("lambda = 0.1");
    let cfg = write(cfg, tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "warn");
    assert!(out.status.success(), "{}", show(&out));
    assert!(recs.iter().all(|r| r["status"] == "completed"));
}

#[test]
fn a_plugin_built_against_abi_1_2_loads_and_runs() {
    let dir = c_abi12_plugin_dir();
    let out = clef().args(["plugins", "--dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = text(&out.stdout);
    for x in [
        "c-abi12 0.1.0 (ABI 1.2)",
        "hooks:  on_task_end",
        "backbones: mlp only",
    ] {
        assert!(listing.contains(x), "expected {x:?} in\n{listing}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write(base(&[dir]).strategy("c-abi12"), tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "warn");
    assert!(out.status.success(), "{}", show(&out));
    let builtin = builtin_finetune(&cfg, tmp.path());
    let raw = lines(&tmp.path().join("out"));
    for setting in ["task-il", "class-il"] {
        // No gradient of its own: it trains exactly as the built-in fine-tuning.
        assert_same_training(
            line(&raw, "c-abi12", setting),
            line(&builtin, "finetune", setting),
        );
        let r = find(&recs, "c-abi12", setting);
        // Its 1.2 service (`expert_params(-1)`: the pool, here the configured network) and
        // its parameter views worked in every task.
        let params = r["num_params"].as_f64().unwrap();
        for task in 0..5 {
            assert_eq!(metric(r, task, "pool_params"), params);
            assert!(metric(r, task, "param_norm2") > 0.0);
        }
    }
}

#[test]
fn loss_and_predict_hooks_drive_training_and_the_accuracy_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = base(&[plugins()])
        .strategy("fixture-scorer")
        .label("logits")
        .strategy("fixture-scorer")
        .label("negated")
        .hparams("scores = \"negated\"");
    let cfg = write(cfg, tmp.path());
    let (out, recs) = run(&cfg, &tmp.path().join("out"), "warn");
    assert!(out.status.success(), "{}", show(&out));
    let builtin = builtin_finetune(&cfg, tmp.path());
    let fine: Vec<Value> = builtin
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|x| match x.as_array() {
                Some(row) => row.iter().map(|y| y.as_f64().unwrap()).collect(),
                None => vec![x.as_f64().unwrap()],
            })
            .collect()
    };
    for setting in ["task-il", "class-il"] {
        let f = find(&fine, "finetune", setting);
        let logits = find(&recs, "logits", setting);
        let negated = find(&recs, "negated", setting);
        let steps = f["steps"].as_f64().unwrap() / 5.0;
        for r in [logits, negated] {
            assert_eq!(r["status"], "completed");
            // The hook ran once per step, and its loss (the default one, summed in another
            // order) is what the record's loss curve shows.
            for task in 0..5 {
                assert_eq!(metric(r, task, "loss_calls"), steps);
            }
            for (a, b) in floats(&r["mean_loss"]).iter().zip(floats(&f["mean_loss"])) {
                assert!((a - b).abs() < 1e-3 * b.abs().max(1.0), "{a} vs {b}");
            }
        }
        // Scoring by the logits evaluates as fine-tuning does (up to summation order) ...
        for (a, b) in floats(&logits["accuracy_matrix"])
            .iter()
            .zip(floats(&f["accuracy_matrix"]))
        {
            assert!((a - b).abs() <= 0.02, "{a} vs {b}");
        }
        // ... and negated scores pick the least likely class: the matrix comes from predict.
        let acc = |r: &Value| metric_acc(r);
        assert!(
            acc(negated) < 0.5 * acc(logits),
            "{} vs {}",
            acc(negated),
            acc(logits)
        );
        // Every test row of every evaluated task went through predict.
        assert!(metric(logits, 4, "scored_rows") > 0.0);
    }
}

/// The final average accuracy of a record.
fn metric_acc(r: &Value) -> f64 {
    let m = r["accuracy_matrix"].as_array().unwrap();
    let last = m.last().unwrap().as_array().unwrap();
    last.iter().map(|v| v.as_f64().unwrap()).sum::<f64>() / last.len() as f64
}

/// `clef plugins` lists the strategy zoo of issue 19 with its schemas, backbones and the 1.6
/// hooks the methods need (a `loss` for the ones that replace the training loss, `predict` for
/// iCaRL's nearest-mean classifier).
#[test]
fn the_strategy_zoo_is_listed_with_its_schemas_and_hooks() {
    let out = clef()
        .arg("plugins")
        .arg("--plugin-dir")
        .arg(plugins())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let listing = text(&out.stdout);
    let block = |name: &str| -> String {
        let start = listing
            .find(&format!("\n{name} "))
            .map(|i| i + 1)
            .or_else(|| listing.starts_with(&format!("{name} ")).then_some(0))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
        let rest = &listing[start..];
        // The block ends at the next unindented line.
        let end = rest
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .find(|&i| rest[i..].starts_with(|c: char| !c.is_whitespace()))
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let hooks = |b: &str| -> Vec<String> {
        let line = b
            .lines()
            .find(|l| l.trim_start().starts_with("hooks:"))
            .unwrap_or_else(|| panic!("no hooks line in\n{b}"));
        line.trim_start()["hooks:".len()..]
            .split(',')
            .map(|h| h.trim().to_string())
            .collect()
    };
    for (name, hparams, loss, predict) in [
        ("si", &["c", "xi"][..], false, false),
        ("mas", &["lambda", "importance_samples"][..], false, false),
        ("agem", &["memory_size", "sample_size"][..], false, false),
        (
            "er-ace",
            &["memory_size", "replay_batch_size"][..],
            true,
            false,
        ),
        ("der", &["memory_size", "alpha"][..], true, false),
        ("derpp", &["memory_size", "alpha", "beta"][..], true, false),
        ("icarl", &["memory_size", "classifier"][..], true, true),
        (
            "gdumb",
            &["memory_size", "epochs", "batch_size"][..],
            false,
            false,
        ),
    ] {
        let b = block(name);
        assert!(b.contains("(ABI 1.6)"), "{b}");
        assert!(b.contains("backbones: mlp, convnet, resnet18"), "{b}");
        for h in hparams {
            assert!(
                b.contains(&format!("\n      {h} ")),
                "{name}: no {h} in\n{b}"
            );
        }
        let hk = hooks(&b);
        assert_eq!(hk.contains(&"loss".to_string()), loss, "{name}: {hk:?}");
        assert_eq!(
            hk.contains(&"predict".to_string()),
            predict,
            "{name}: {hk:?}"
        );
    }
}
