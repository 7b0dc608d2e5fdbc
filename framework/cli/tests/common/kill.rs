//! Killing a run in the middle of a trial and resuming it: the reliability tests' procedure
//! (`plugins.rs` for the MLP strategies, `cnn_resume.rs` for every seed plugin on a CNN).

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

/// Runs `cfg` (one trial at a time) into `tmp/whole`; runs it again into `tmp/killed`, kills
/// that run (SIGKILL) as soon as its first trial has checkpointed its first task, re-runs it
/// and checks that the re-run resumed from the checkpoint, ends with the uninterrupted run's
/// records (every field but timings) and leaves no checkpoint behind.
pub fn assert_kill_and_resume_is_bit_identical(cfg: &Path, tmp: &Path) {
    let whole = tmp.join("whole");
    let o = run_cfg(cfg, &whole, "warn", &["--jobs", "1"]);
    assert!(o.status.success(), "{}", show(&o));
    let warned = text(&o.stderr);
    assert!(
        !warned.contains("no more checkpoints"),
        "the uninterrupted run turned checkpoints off:\n{warned}"
    );

    let killed = tmp.join("killed");
    let ckpts = killed.join("checkpoints");
    let mut child = spawn_run(cfg, &killed, false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let written = std::fs::read_dir(&ckpts)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
            })
            .unwrap_or(false);
        if written {
            break;
        }
        assert!(
            child.try_wait().expect("poll clef").is_none(),
            "the run ended before writing a checkpoint"
        );
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill clef");
    child.wait().expect("reap clef");
    assert_eq!(
        std::fs::read_dir(killed.join("trials")).map_or(0, |d| d.count()),
        0,
        "killed after its first trial finished"
    );

    // The re-run resumes the killed trial from its checkpoint and ends with the same records.
    let o = run_cfg(cfg, &killed, "info", &["--jobs", "1"]);
    assert!(o.status.success(), "{}", show(&o));
    let log = text(&o.stderr);
    assert!(
        log.contains("resuming the trial from its checkpoint"),
        "no resume:\n{log}"
    );
    assert_eq!(
        results_without_timings(&killed),
        results_without_timings(&whole)
    );
    // Checkpoints are removed once their trials are stored.
    let left = std::fs::read_dir(&ckpts).map_or(0, |d| d.count());
    assert_eq!(left, 0, "checkpoints left behind");
}
