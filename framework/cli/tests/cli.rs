//! End-to-end tests of the `clef` binary with built-in strategies: determinism and config
//! errors. Runs of the shipped configs (which use the plugins) are in `plugins.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn clef() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clef"));
    c.env("RUST_LOG", "warn");
    c
}

fn run_ok(args: &[&str]) -> Output {
    let out = clef().args(args).output().expect("run clef");
    assert!(
        out.status.success(),
        "clef {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn records(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// A small digits config, edited by `body_edit`, written into `dir`.
fn small_config(dir: &Path, body_edit: impl Fn(String) -> String) -> PathBuf {
    let text = r#"name = "small"
seeds = [3]
settings = ["task-il", "class-il"]

[data]
dataset = "digits"
test_fraction = 0.25

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2
class_order = "shuffled"

[model]
hidden = [32]

[train]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
epochs = 2
batch_size = 32

[[strategy]]
name = "finetune"

[[strategy]]
name = "joint"
"#
    .to_string();
    let path = dir.join("small.toml");
    std::fs::write(&path, body_edit(text)).expect("write config");
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
