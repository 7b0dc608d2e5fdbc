//! Soak: hundreds of short trials through the sweep machinery (`--jobs 2`) end with every
//! trial stored exactly once, and the process's peak memory does not grow with the number of
//! trials (no per-trial leak).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clef_testkit::Cfg;
use serde_json::Value;

use common::{records, run_cfg, run_summary, show, stored_ids};

/// `trials` short digits trials (one per seed) of the built-in finetune; each trial holds a
/// 64-256-10 network with Adam state (about 80 KB per copy), so a leak per trial would show.
fn config(dir: &Path, trials: u64) -> PathBuf {
    Cfg::digits()
        .name("soak")
        .seed_count(trials)
        .hidden(&[256])
        .adam(0.001)
        .iterations(4)
        .strategy("finetune")
        .write(dir, &format!("soak-{trials}.toml"))
}

/// Runs `clef run --jobs 2`; returns the peak RSS (MiB) its `run.json` reports.
fn run(cfg: &Path, out: &Path) -> f64 {
    let o = run_cfg(cfg, out, "warn", &["--jobs", "2"]);
    assert!(o.status.success(), "{}", show(&o));
    let summary = run_summary(out);
    summary["peak_rss_mib"]
        .as_f64()
        .unwrap_or_else(|| panic!("no peak memory in run.json:\n{summary}"))
}

#[test]
fn two_hundred_trials_are_all_stored_once_with_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let small = run(&config(tmp.path(), 25), &tmp.path().join("small"));
    let out = tmp.path().join("soak");
    let big = run(&config(tmp.path(), 200), &out);

    assert_eq!(stored_ids(&out).len(), 200, "stored trial files");
    let recs: Vec<Value> = records(&out);
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
