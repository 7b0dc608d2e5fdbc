//! End-to-end tests of the `clef` binary with built-in strategies: determinism and config
//! errors. Runs of the shipped configs (which use the plugins) are in `plugins.rs`.

mod common;

use std::path::{Path, PathBuf};

use clef_testkit::Cfg;
use serde_json::Value;

use common::{clef, records, run_ok};

/// A small digits config (both settings, finetune and joint), as TOML text.
fn small() -> String {
    Cfg::digits()
        .name("small")
        .seeds(&[3])
        .settings(&["task-il", "class-il"])
        .test_fraction(0.25)
        .shuffled_classes()
        .momentum(0.9)
        .epochs(2)
        .strategy("finetune")
        .strategy("joint")
        .toml()
}

/// The small config's text edited by `body_edit`, written into `dir` (tests of messages about
/// the text edit it as text).
fn small_config(dir: &Path, body_edit: impl Fn(String) -> String) -> PathBuf {
    let path = dir.join("small.toml");
    std::fs::write(&path, body_edit(small())).expect("write config");
    path
}

#[test]
fn same_config_and_seed_give_identical_accuracy_matrices() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path(), |t| t);
    let mut matrices = Vec::new();
    for run in ["a", "b"] {
        let out = tmp.path().join(run);
        run_ok(&[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ]);
        let recs = records(&out);
        matrices.push(
            recs.iter()
                .map(|r| {
                    (
                        r["accuracy_matrix"].clone(),
                        r["online_accuracy"].clone(),
                        r["mean_loss"].clone(),
                        r["trial_id"].clone(),
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(matrices[0], matrices[1]);
    // ... and a different seed gives a different stream (shuffled class order) and result.
    let cfg2 = small_config(tmp.path(), |t| t.replace("seeds = [3]", "seeds = [4]"));
    let out = tmp.path().join("c");
    run_ok(&[
        "run",
        cfg2.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ]);
    let other: Vec<Value> = records(&out)
        .iter()
        .map(|r| r["accuracy_matrix"].clone())
        .collect();
    let first: Vec<Value> = matrices[0].iter().map(|m| m.0.clone()).collect();
    assert_ne!(first, other);
}

/// Runs `clef validate` on a config edited by `edit` and returns its stderr (it must fail).
fn validate_err(edit: impl Fn(String) -> String) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path(), edit);
    let out = clef()
        .args(["validate", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "validate should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let e = validate_err(|t| t.replace("batch_size = 32", "batch_size = 32\nbatch_sise = 4"));
    assert!(e.contains("unknown field `batch_sise`"), "{e}");
    assert!(e.contains("line 24"), "{e}");
    assert!(e.contains("small.toml"), "{e}");
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let e = validate_err(|t| t.replace("lr = 0.05", "lr = \"fast\""));
    assert!(e.contains("line 20") && e.contains("invalid type"), "{e}");
}

#[test]
fn out_of_range_value_names_the_key_and_line() {
    let e = validate_err(|t| t.replace("lr = 0.05", "lr = -1.0"));
    assert!(
        e.contains("small.toml:20: `train.lr` must be a positive number"),
        "{e}"
    );
    let e = validate_err(|t| t.replace("test_fraction = 0.25", "test_fraction = 1.5"));
    assert!(
        e.contains("small.toml:7: `data.test_fraction` must be in (0, 1)"),
        "{e}"
    );
    let e = validate_err(|t| t.replace("hidden = [32]", "hidden = [32, 0]"));
    assert!(e.contains("`model.hidden`") && e.contains("width 0"), "{e}");
}

#[test]
fn malformed_toml_is_reported_with_its_line() {
    let e = validate_err(|t| t.replace("[model]", "[model"));
    assert!(e.contains("line 15"), "{e}");
}

#[test]
fn unknown_strategy_lists_the_available_ones() {
    let e = validate_err(|t| t.replace("name = \"joint\"", "name = \"jiont\""));
    assert!(
        e.contains("unknown strategy `jiont`") && e.contains("finetune, joint"),
        "{e}"
    );
}

#[test]
fn unknown_strategy_hyperparameter_is_rejected() {
    let e =
        validate_err(|t| t.replace("name = \"joint\"", "name = \"joint\"\nhparams = { lr = 1 }"));
    assert!(e.contains("strategy[1].hparams.lr"), "{e}");
}

#[test]
fn more_classes_than_the_data_set_has_is_rejected() {
    let e = validate_err(|t| t.replace("classes_per_task = 2", "classes_per_task = 3"));
    assert!(
        e.contains("scenario.classes_per_task") && e.contains("need 15 classes"),
        "{e}"
    );
}

#[test]
fn missing_data_file_names_the_file() {
    let e = validate_err(|t| {
        t.replace(
            "dataset = \"digits\"",
            "dataset = \"csv\"\npath = \"/nonexistent/data.csv.gz\"",
        )
    });
    assert!(e.contains("/nonexistent/data.csv.gz"), "{e}");
}

#[test]
fn unreadable_config_file_is_named() {
    let out = clef()
        .args(["validate", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("cannot read config /nonexistent/config.toml"),
        "{e}"
    );
}

/// `clef run` ends by writing `run.json` (atomically: no temporary file left) with what it did:
/// trials planned, run and skipped per phase, the evaluation records' statuses, wall time, peak
/// memory, the exit status and clef's version.
#[test]
fn run_writes_a_machine_readable_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = small_config(tmp.path(), |t| t);
    let out = tmp.path().join("out");
    let args = [
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    let started = std::time::Instant::now();
    run_ok(&args);
    let elapsed = started.elapsed().as_secs_f64();
    let s = common::run_summary(&out);
    assert_eq!(s["clef_version"], env!("CARGO_PKG_VERSION"), "{s}");
    assert_eq!(s["config"], cfg.to_str().unwrap(), "{s}");
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["exit_code"], 0, "{s}");
    assert_eq!(s["shard"], "0/1", "{s}");
    assert_eq!(s["jobs"], 1, "{s}");
    // 2 settings x (finetune, joint) x 1 seed, no tuning.
    let phase = |p: &str| phase_of(&s, p);
    assert_eq!(phase("tune"), [0, 0, 0], "{s}");
    assert_eq!(s["tune"]["pending_other_shards"], 0, "{s}");
    assert_eq!(phase("eval"), [4, 4, 0], "{s}");
    for (k, n) in [
        ("records", 4),
        ("completed", 4),
        ("failed", 0),
        ("diverged", 0),
    ] {
        assert_eq!(s["eval"][k], n, "eval.{k}: {s}");
    }
    let wall = s["wall_seconds"].as_f64().expect("wall_seconds");
    assert!(
        wall > 0.0 && wall <= elapsed + 0.001,
        "{wall} s of {elapsed} s: {s}"
    );
    let rss = s["peak_rss_mib"].as_f64().expect("peak_rss_mib");
    assert!(rss > 1.0 && rss < 4096.0, "{s}");
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A second run skips every trial and says so.
    run_ok(&args);
    let again = common::run_summary(&out);
    assert_eq!(
        (phase_of(&again, "eval"), &again["eval"]["records"]),
        ([4, 0, 4], &Value::from(4)),
        "{again}"
    );
}

/// `[planned, run, skipped]` of phase `p` in a `run.json`.
fn phase_of(s: &Value, p: &str) -> [u64; 3] {
    ["planned", "run", "skipped"]
        .map(|k| s[p][k].as_u64().unwrap_or_else(|| panic!("{p}.{k}: {s}")))
}
