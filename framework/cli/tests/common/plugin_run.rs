//! What the plugin tests share: a small digits config with plugin directories, running it,
//! the built-in `finetune` on the same config, and comparing records field by field.

use std::path::{Path, PathBuf};
use std::process::Output;

use clef_testkit::Cfg;
use serde_json::Value;

use clef_experiment::runner::{self, BuiltinStrategies, RunOptions};
use clef_report::results::ResultsDir;

use super::{lines, records};

/// A small digits config (two settings, one seed) with plugin directories `plugin_dirs` (the
/// `plugin_dirs` line is written even when empty); the tests add their `[[strategy]]` tables.
pub fn base(plugin_dirs: &[&Path]) -> Cfg {
    Cfg::digits()
        .name("plugins")
        .seeds(&[3])
        .settings(&["task-il", "class-il"])
        .plugin_dirs(plugin_dirs)
        .test_fraction(0.25)
        .shuffled_classes()
        .momentum(0.9)
}

/// Writes `cfg` as `dir/plugins.toml`.
pub fn write(cfg: Cfg, dir: &Path) -> PathBuf {
    cfg.write(dir, "plugins.toml")
}

/// Runs `clef run` on `cfg`; returns the output and the records.
pub fn run(cfg: &Path, out: &Path, log: &str) -> (Output, Vec<Value>) {
    let o = super::run_cfg(cfg, out, log, &[]);
    let recs = if out.join("results.jsonl").exists() {
        records(out)
    } else {
        Vec::new()
    };
    (o, recs)
}

/// `results.jsonl` lines of the built-in `finetune` on the same config, run in this process
/// (the CLI may find a `finetune` plugin next to `clef`, which would take precedence).
pub fn builtin_finetune(cfg_path: &Path, tmp: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(cfg_path).unwrap();
    let start = text.find("[[strategy]]").unwrap();
    let builtin = format!("{}[[strategy]]\nname = \"finetune\"\n", &text[..start]);
    let path = tmp.join("builtin.toml");
    std::fs::write(&path, builtin).unwrap();
    let cfg = clef_experiment::config::load(&path).unwrap();
    let out = tmp.join("builtin-out");
    let dir = ResultsDir::create(&out).unwrap();
    runner::run(&cfg, &BuiltinStrategies, &dir, RunOptions::default()).unwrap();
    lines(&out)
}

/// The `results.jsonl` line of `strategy` in `setting`.
pub fn line<'a>(lines: &'a [String], strategy: &str, setting: &str) -> &'a str {
    lines
        .iter()
        .find(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["strategy"] == strategy && v["setting"] == setting
        })
        .unwrap_or_else(|| panic!("no record for {strategy}/{setting}"))
}

/// The raw JSON text of top-level field `key` of a record line. Numbers are written as the
/// shortest text that round-trips, so equal text means bit-identical values (parsing them
/// back with serde_json is not exact in the last bit).
pub fn raw_field<'a>(line: &'a str, key: &str) -> &'a str {
    let pat = format!("\"{key}\":");
    let start = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pat.len();
    let bytes = line.as_bytes();
    let mut depth = 0i32;
    let mut end = start;
    while end < bytes.len() {
        match bytes[end] {
            b'[' | b'{' => depth += 1,
            b']' | b'}' if depth > 0 => depth -= 1,
            b',' | b'}' if depth == 0 => break,
            _ => {}
        }
        end += 1;
    }
    &line[start..end]
}

/// Asserts that two records trained identically (every number bit for bit).
pub fn assert_same_training(a: &str, b: &str) {
    for key in [
        "accuracy_matrix",
        "random_init_accuracy",
        "online_accuracy",
        "mean_loss",
        "steps",
    ] {
        assert_eq!(raw_field(a, key), raw_field(b, key), "{key} differs");
    }
    assert_eq!(raw_field(a, "status"), "\"completed\"");
}

/// The `strategy_metrics` value `key` of task `task` in record `r`.
pub fn metric(r: &Value, task: usize, key: &str) -> f64 {
    r["strategy_metrics"][task][key]
        .as_f64()
        .unwrap_or_else(|| panic!("no strategy_metrics[{task}].{key} in {r}"))
}
