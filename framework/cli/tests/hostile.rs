//! The hostile-input catalogue (`docs/reliability.md`): every bad config, data file, output
//! location or numerical blow-up gets a one-line error naming the culprit, with a non-zero
//! exit and no panic. Plugin failures (not a shared library, wrong ABI, missing entry point,
//! panicking or erroring hooks) and a diverging trial are in `plugins.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::clef;

/// A small valid digits config, pasted: the tests below are about its text (line numbers,
/// malformed and unknown keys).
const BASE: &str = r#"name = "hostile"
seeds = [3]
settings = ["task-il"]

[data]
dataset = "digits"
test_fraction = 0.25

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2

[model]
hidden = [16]

[train]
optimizer = "sgd"
lr = 0.05
epochs = 1
batch_size = 32

[[strategy]]
name = "finetune"
"#;

/// Writes `text` as `case.toml` in `dir`.
fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("case.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The one `error:` line of a failed command (it must fail, must not panic, and must print
/// exactly one error line).
fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panicked:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected:\n{stderr}");
    errors[0].to_string()
}

/// `clef validate` on BASE with `from` replaced by `to`: the error line.
fn validate_error(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), &BASE.replacen(from, to, 1));
    let out = clef().arg("validate").arg(&cfg).output().expect("run clef");
    error_line(&out)
}

fn assert_names(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "`{p}` missing from: {line}");
    }
}

#[test]
fn malformed_toml() {
    let e = validate_error("seeds = [3]", "seeds = [3");
    assert_names(
        &e,
        &["case.toml", "line 3", "invalid array", "expected `]`"],
    );
    let e = validate_error("[model]", "[model");
    assert_names(
        &e,
        &["case.toml", "line 14", "invalid table header", "`[model`"],
    );
}

#[test]
fn unknown_keys() {
    let e = validate_error("batch_size = 32", "batch_size = 32\nbatch_sise = 4");
    assert_names(
        &e,
        &[
            "case.toml",
            "line 22",
            "unknown field `batch_sise`",
            "expected one of",
        ],
    );
    let e = validate_error("[model]", "[modle]");
    assert_names(&e, &["unknown field `modle`"]);
}

#[test]
fn wrong_types() {
    let e = validate_error("lr = 0.05", "lr = \"fast\"");
    assert_names(&e, &["line 19", "invalid type", "`lr = \"fast\"`"]);
    let e = validate_error("hidden = [16]", "hidden = 16");
    assert_names(&e, &["line 15", "invalid type", "`hidden = 16`"]);
    let e = validate_error("seeds = [3]", "seeds = [\"three\"]");
    assert_names(&e, &["line 2", "invalid type"]);
}

#[test]
fn negative_or_zero_sizes() {
    let e = validate_error("tasks = 5", "tasks = -2");
    assert_names(
        &e,
        &["line 11", "invalid value: integer `-2`", "`tasks = -2`"],
    );
    for (from, to, key, line) in [
        ("tasks = 5", "tasks = 0", "`scenario.tasks`", ":11:"),
        (
            "classes_per_task = 2",
            "classes_per_task = 0",
            "`scenario.classes_per_task`",
            ":12:",
        ),
        (
            "batch_size = 32",
            "batch_size = 0",
            "`train.batch_size`",
            ":21:",
        ),
        ("epochs = 1", "epochs = 0", "`train.epochs`", ":20:"),
        (
            "hidden = [16]",
            "hidden = [16, 0]",
            "`model.hidden`",
            ":15:",
        ),
        ("lr = 0.05", "lr = -0.1", "`train.lr`", ":19:"),
        ("lr = 0.05", "lr = nan", "`train.lr`", ":19:"),
        (
            "test_fraction = 0.25",
            "test_fraction = 1.5",
            "`data.test_fraction`",
            ":7:",
        ),
    ] {
        let e = validate_error(from, to);
        assert_names(&e, &["case.toml", line, key]);
    }
}

#[test]
fn empty_scenarios() {
    let e = validate_error("seeds = [3]", "seeds = []");
    assert_names(&e, &["case.toml:2:", "`seeds`", "at least one"]);
    let e = validate_error("settings = [\"task-il\"]", "settings = []");
    assert_names(&e, &["case.toml:3:", "`settings`", "at least one"]);
    let e = validate_error("[[strategy]]\nname = \"finetune\"\n", "");
    assert_names(&e, &["case.toml", "missing field `strategy`"]);
}

#[test]
fn more_classes_per_task_than_the_data_set_has() {
    // Digits has 10 classes; 6 tasks of 2 need 12.
    let e = validate_error("tasks = 5", "tasks = 6");
    assert_names(
        &e,
        &[
            "case.toml:12:",
            "`scenario.classes_per_task`",
            "need 12 classes",
            "`digits` has 10",
        ],
    );
}

/// The error line of `clef validate` on BASE reading `dataset`/`path` from `data`.
fn data_error(dir: &Path, data: &str) -> String {
    let text = BASE.replace("dataset = \"digits\"", data);
    let cfg = write_config(dir, &text);
    let out = clef().arg("validate").arg(&cfg).output().expect("run clef");
    error_line(&out)
}

fn idx_header(magic: u8, dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, magic];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

#[test]
fn truncated_and_garbage_data_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    // CSV: ragged rows, a label out of range, garbage behind a gzip magic, a missing file.
    std::fs::write(d.join("ragged.csv"), "0,1,2,3\n1,2,3\n").unwrap();
    let e = data_error(d, "dataset = \"csv\"\npath = \"ragged.csv\"");
    assert_names(&e, &["ragged.csv", "line 2 has 3 fields, expected 4"]);
    std::fs::write(d.join("label.csv"), "0,1,2,3\n1,2,3,12\n").unwrap();
    let e = data_error(d, "dataset = \"csv\"\npath = \"label.csv\"");
    assert_names(&e, &["label.csv", "12"]);
    std::fs::write(d.join("garbage.csv.gz"), b"\x1f\x8b\x08garbage-garbage").unwrap();
    let e = data_error(d, "dataset = \"csv\"\npath = \"garbage.csv.gz\"");
    assert_names(&e, &["garbage.csv.gz", "corrupt or truncated gzip"]);
    let e = data_error(d, "dataset = \"csv\"\npath = \"absent.csv\"");
    assert_names(&e, &["absent.csv"]);
    // IDX: the training images end 3 bytes early.
    let idx = d.join("idx");
    std::fs::create_dir(&idx).unwrap();
    let mut images = idx_header(3, &[20, 2, 2]);
    images.extend(std::iter::repeat_n(7u8, 20 * 4 - 3));
    std::fs::write(idx.join("train-images-idx3-ubyte"), &images).unwrap();
    let mut labels = idx_header(1, &[20]);
    labels.extend((0..20).map(|i| (i % 10) as u8));
    std::fs::write(idx.join("train-labels-idx1-ubyte"), &labels).unwrap();
    let mut test_images = idx_header(3, &[10, 2, 2]);
    test_images.extend(std::iter::repeat_n(9u8, 40));
    std::fs::write(idx.join("t10k-images-idx3-ubyte"), &test_images).unwrap();
    let mut test_labels = idx_header(1, &[10]);
    test_labels.extend(0..10u8);
    std::fs::write(idx.join("t10k-labels-idx1-ubyte"), &test_labels).unwrap();
    let e = data_error(d, "dataset = \"idx\"\npath = \"idx\"");
    assert_names(&e, &["train-images-idx3-ubyte", "truncated"]);
    // A wrong magic number.
    std::fs::write(
        idx.join("train-images-idx3-ubyte"),
        b"not an idx file at all",
    )
    .unwrap();
    let e = data_error(d, "dataset = \"idx\"\npath = \"idx\"");
    assert_names(&e, &["train-images-idx3-ubyte"]);
}

#[test]
fn unreadable_configs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("binary.toml");
    std::fs::write(&bad, b"\xff\xfe\x00garbage").unwrap();
    let out = clef().arg("validate").arg(&bad).output().unwrap();
    assert_names(&error_line(&out), &["binary.toml", "valid UTF-8"]);
    let out = clef()
        .args(["validate", "/nonexistent/config.toml"])
        .output()
        .unwrap();
    assert_names(
        &error_line(&out),
        &[
            "cannot read config /nonexistent/config.toml",
            "No such file",
        ],
    );
}

#[test]
fn an_output_directory_that_cannot_be_created() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), BASE);
    // The parent of the output directory is a regular file (works as root too, unlike
    // permission bits).
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let out_dir = blocker.join("results");
    let out = clef()
        .arg("run")
        .arg(&cfg)
        .arg("--out")
        .arg(&out_dir)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert_names(
        &error_line(&out),
        &[&out_dir.display().to_string(), "Not a directory"],
    );
}

#[test]
fn a_full_disk_is_an_error_naming_the_file() {
    // Simulated with a file-size limit: writes past it fail with EFBIG ("File too large"),
    // as a full disk fails with ENOSPC. SIGXFSZ is ignored so the write returns the error.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(tmp.path(), BASE);
    let out_dir = tmp.path().join("out");
    let bin = env!("CARGO_BIN_EXE_clef");
    let script = format!(
        "trap '' XFSZ; ulimit -f 1; exec '{bin}' run '{}' --out '{}' --no-progress",
        cfg.display(),
        out_dir.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let e = error_line(&out);
    assert_names(&e, &[&out_dir.display().to_string(), "File too large"]);
    // Whatever was written is whole: every results line parses.
    if let Ok(text) = std::fs::read_to_string(out_dir.join("results.jsonl")) {
        for l in text.lines() {
            serde_json::from_str::<Value>(l).expect("a whole JSON record");
        }
    }
}
