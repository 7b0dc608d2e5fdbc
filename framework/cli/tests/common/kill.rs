//! Killing a run in the middle of a trial and resuming it: the reliability tests' procedure
//! (`resume.rs`: the MLP strategies and every seed plugin on a CNN; `par_resume.rs`).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{clef, records, run_cfg, show, text, without_timings};

/// `clef run --jobs 1` on `cfg` into `out` in the background; its stderr piped to the test
/// (which must then read it) or discarded.
pub fn spawn_run(cfg: &Path, out: &Path, pipe_stderr: bool) -> Child {
    let stderr = if pipe_stderr {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    clef()
        .args(["run", "--no-progress", "--jobs", "1", "--out"])
        .arg(out)
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn clef")
}

/// The records of `dir` by strategy label, without the fields that measure time.
pub fn results_without_timings(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = records(dir)
        .into_iter()
        .map(|r| {
            let r = without_timings(r);
            (r["strategy"].as_str().unwrap_or_default().to_string(), r)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `tasks_done` of the checkpoint at `path` (read from its JSON metadata: magic, version,
/// length, then `{"key":..,"tasks_done":N,..}`), if it exists and is readable.
pub fn tasks_done(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?) as usize;
    let meta: Value = serde_json::from_slice(bytes.get(20..20 + n)?).ok()?;
    meta["tasks_done"].as_u64()
}

/// Runs `cfg` (one trial at a time) into `out` and kills it (SIGKILL) as soon as a trial has
/// checkpointed `tasks` tasks; no trial may have finished by then.
pub fn run_and_kill_after_checkpoint(cfg: &Path, out: &Path, tasks: u64) {
    let ckpts = out.join("checkpoints");
    let mut child = spawn_run(cfg, out, false);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let written = std::fs::read_dir(&ckpts)
            .map(|d| {
                d.filter_map(Result::ok).any(|e| {
                    e.path().extension().is_some_and(|x| x == "ckpt")
                        && tasks_done(&e.path()).is_some_and(|n| n >= tasks)
                })
            })
            .unwrap_or(false);
        if written {
            break;
        }
        assert!(
            child.try_wait().expect("poll clef").is_none(),
            "the run ended before checkpointing {tasks} tasks"
        );
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("kill clef");
    child.wait().expect("reap clef");
    assert_eq!(
        std::fs::read_dir(out.join("trials")).map_or(0, |d| d.count()),
        0,
        "killed after a trial finished"
    );
}

/// Runs `cfg` (one trial at a time) into `tmp/whole`; runs it again into `tmp/killed`, kills
/// that run (SIGKILL) as soon as its first trial has checkpointed `after_tasks` tasks, re-runs
/// it and checks that the re-run resumed from the checkpoint (no fresh start), ends with the
/// uninterrupted run's records (every field but timings) and leaves no checkpoint behind.
/// Returns the uninterrupted run's records, for the caller's own checks.
pub fn assert_kill_and_resume_is_bit_identical(
    cfg: &Path,
    tmp: &Path,
    after_tasks: u64,
) -> Vec<(String, Value)> {
    let whole = tmp.join("whole");
    let o = run_cfg(cfg, &whole, "warn", &["--jobs", "1"]);
    assert!(o.status.success(), "{}", show(&o));
    let warned = text(&o.stderr);
    assert!(
        !warned.contains("no more checkpoints"),
        "the uninterrupted run turned checkpoints off:\n{warned}"
    );

    let killed = tmp.join("killed");
    run_and_kill_after_checkpoint(cfg, &killed, after_tasks);
    let o = run_cfg(cfg, &killed, "info", &["--jobs", "1"]);
    assert!(o.status.success(), "{}", show(&o));
    let log = text(&o.stderr);
    assert!(
        log.contains("resuming the trial from its checkpoint"),
        "no resume:\n{log}"
    );
    assert!(!log.contains("starts afresh"), "the resume failed:\n{log}");
    let reference = results_without_timings(&whole);
    assert_eq!(results_without_timings(&killed), reference);
    // Checkpoints are removed once their trials are stored.
    let left = std::fs::read_dir(killed.join("checkpoints")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "checkpoints left behind");
    reference
}
