//! Soak: hundreds of short trials through the sweep machinery (`--jobs 2`) end with every
//! trial stored exactly once, and the process's peak memory does not grow with the number of
//! trials (no per-trial leak).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `trials` short digits trials (one per seed) of the built-in finetune; each trial holds a
/// 64-256-10 network with Adam state (about 80 KB per copy), so a leak per trial would show.
fn config(dir: &Path, trials: usize) -> std::path::PathBuf {
    let seeds: Vec<String> = (0..trials).map(|s| s.to_string()).collect();
    let text = format!(
        r#"name = "soak"
seeds = [{}]
settings = ["task-il"]

[data]
dataset = "digits"

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2

[model]
hidden = [256]

[train]
optimizer = "adam"
lr = 0.001
iterations = 4
batch_size = 32

[[strategy]]
name = "finetune"
"#,
        seeds.join(", ")
    );
    let path = dir.join(format!("soak-{trials}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `clef run --jobs 2`; returns the peak RSS (MiB) it logged.
fn run(cfg: &Path, out: &Path) -> f64 {
    let o = Command::new(env!("CARGO_BIN_EXE_clef"))
        .env("RUST_LOG", "info")
        .env_remove("CLEF_PLUGIN_PATH")
        .args(["run", "--no-progress", "--jobs", "2", "--out"])
        .arg(out)
        .arg(cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("run finished"))
        .unwrap_or_else(|| panic!("no peak memory logged:\n{err}"));
    // `... peak_rss_mib="123.4" run finished` (with or without ANSI colours).
    let after = line
        .split("peak_rss_mib")
        .nth(1)
        .expect("peak_rss_mib field");
    let digits: String = after
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().expect("a number")
}

#[test]
fn two_hundred_trials_are_all_stored_once_with_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let small = run(&config(tmp.path(), 25), &tmp.path().join("small"));
    let out = tmp.path().join("soak");
    let big = run(&config(tmp.path(), 200), &out);

    let stored: Vec<String> = std::fs::read_dir(out.join("trials"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(stored.len(), 200, "stored trial files");
    let recs: Vec<Value> = std::fs::read_to_string(out.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 200);
    let ids: BTreeSet<&str> = recs
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 200, "duplicate trial ids");
    let seeds: BTreeSet<u64> = recs.iter().map(|r| r["seed"].as_u64().unwrap()).collect();
    assert_eq!(seeds, (0..200).collect(), "every seed exactly once");
    assert!(recs.iter().all(|r| r["status"] == "completed"));
    // No checkpoints left behind.
    assert_eq!(
        std::fs::read_dir(out.join("checkpoints")).map_or(0, |d| d.count()),
        0
    );
    // 8× the trials: the peak may grow by the stored records, not by trials' networks.
    assert!(
        big < small * 1.25 + 8.0,
        "peak RSS {small:.1} MiB for 25 trials, {big:.1} MiB for 200"
    );
}
