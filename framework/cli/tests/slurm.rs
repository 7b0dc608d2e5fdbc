//! A sweep as a real Slurm job array: one shard per array task, merged with `clef merge`, must
//! hold exactly the trials (and results) of the same sweep run locally.
//!
//! Needs a single-node Slurm cluster: `.ci/run` installs and starts one
//! (`.ci/slurm-single-node.sh`); when Slurm's daemons are installed but not running and we are
//! root, the test starts them itself (and stops them after). Without Slurm it prints
//! `skipped: <why>` and passes, except under CI (`CI` set), where that is a failure.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use clef_testkit::Cfg;

use common::{clef, repo_root, results_by_id};

fn sh(cmd: &str, args: &[&str]) -> Option<Output> {
    Command::new(cmd).args(args).output().ok()
}

fn node_ready() -> bool {
    sh("sinfo", &["-h", "-o", "%T"]).is_some_and(|o| {
        let s = String::from_utf8_lossy(&o.stdout);
        o.status.success()
            && s.lines()
                .any(|l| ["idle", "mixed", "allocated"].contains(&l.trim()))
    })
}

/// `None` if the cluster answers (started by us: `Some(true)`), else why not.
fn cluster() -> Result<bool, String> {
    for tool in ["sbatch", "squeue", "sinfo", "slurmctld", "slurmd"] {
        if sh("which", &[tool]).is_none_or(|o| !o.status.success()) {
            return Err(format!(
                "Slurm is not installed (`{tool}` not found); `.ci/slurm-single-node.sh install` installs it"
            ));
        }
    }
    if node_ready() {
        return Ok(false);
    }
    let script = repo_root().join(".ci/slurm-single-node.sh");
    let up = Command::new("bash")
        .arg(&script)
        .arg("up")
        .output()
        .map_err(|e| e.to_string())?;
    if up.status.success() && node_ready() {
        Ok(true)
    } else {
        Err(format!(
            "no Slurm node is up and `{} up` failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&up.stdout),
            String::from_utf8_lossy(&up.stderr)
        ))
    }
}

fn config(dir: &Path) -> PathBuf {
    Cfg::digits()
        .name("slurm-sweep")
        .seeds(&[0, 1, 2])
        .settings(&["task-il", "class-il"])
        .shuffled_classes()
        .epochs(2)
        .strategy("finetune")
        .strategy("joint")
        .write(dir, "slurm.toml")
}

struct Down(bool);

impl Drop for Down {
    fn drop(&mut self) {
        if self.0 {
            let _ = Command::new("bash")
                .arg(repo_root().join(".ci/slurm-single-node.sh"))
                .arg("down")
                .status();
        }
    }
}

#[test]
fn job_array_shards_merge_to_the_local_sweep() {
    let started = match cluster() {
        Ok(s) => s,
        Err(why) => {
            clef_testkit::require_resource(false, why);
            return;
        }
    };
    let _down = Down(started);
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let out = tmp.path().join("array");
    let script = repo_root().join("scripts/clef-sweep.sbatch");
    let shards = 4;
    let sub = Command::new("sbatch")
        .args(["--parsable", &format!("--array=0-{}", shards - 1), "-o"])
        .arg(tmp.path().join("%A_%a.out"))
        .env("CLEF", env!("CARGO_BIN_EXE_clef"))
        .arg(&script)
        .arg(&cfg)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        sub.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&sub.stderr)
    );
    let job = String::from_utf8_lossy(&sub.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let start = Instant::now();
    loop {
        let q = sh("squeue", &["-h", "-j", &job]).unwrap();
        if q.status.success() && q.stdout.iter().all(u8::is_ascii_whitespace) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "job {job} still queued/running"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut dirs = Vec::new();
    let mut union = BTreeSet::new();
    for i in 0..shards {
        let log =
            std::fs::read_to_string(tmp.path().join(format!("{job}_{i}.out"))).unwrap_or_default();
        let d = out.join(format!("shard-{i}"));
        assert!(
            d.join("trials").is_dir(),
            "array task {i} wrote no store; its log:\n{log}"
        );
        let ids: BTreeSet<String> = std::fs::read_dir(d.join("trials"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .trim_end_matches(".json")
                    .to_string()
            })
            .collect();
        assert!(union.is_disjoint(&ids), "array task {i} overlaps another");
        union.extend(ids);
        dirs.push(d);
    }
    let merged = tmp.path().join("merged");
    let m = clef()
        .arg("merge")
        .arg("--into")
        .arg(&merged)
        .args(&dirs)
        .output()
        .unwrap();
    assert!(
        m.status.success(),
        "merge: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let local = tmp.path().join("local");
    let l = clef()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--no-progress",
            "--out",
            local.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        l.status.success(),
        "local run: {}",
        String::from_utf8_lossy(&l.stderr)
    );
    let (a, b) = (results_by_id(&merged), results_by_id(&local));
    assert_eq!(a.len(), 3 * 2 * 2);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert_eq!(a, b, "merged array results differ from the local sweep");
    println!(
        "slurm job {job}: {shards} array tasks merged into {} trials",
        a.len()
    );
}
