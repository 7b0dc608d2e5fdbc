//! PAR resumes bit-identically: its experts (the host's expert pool) and its own state are in
//! the trial checkpoint, so a PAR trial killed after three of its five tasks (experts, several
//! heads on one expert, search experts in the pool) ends, once re-run, with exactly the records
//! of an uninterrupted run.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use clef_testkit::Cfg;
use serde_json::Value;

use common::{clef, plugins, records, show, text, without_timings};

/// Records of `dir` without the fields that measure time.
fn results(dir: &Path) -> Vec<Value> {
    records(dir).into_iter().map(without_timings).collect()
}

/// Five mnist-5k task-IL tasks of 400 steps (long enough to be killed between two
/// checkpoints), one seed, with the workspace's plugins and one `par` table of `hparams`.
fn par_cfg(dir: &Path, hparams: &str) -> std::path::PathBuf {
    mlp()
        .strategy("par")
        .hparams(hparams)
        .write(dir, "par.toml")
}

/// The MLP stream of [`par_cfg`], without a strategy.
fn mlp() -> Cfg {
    Cfg::digits()
        .name("par-resume")
        .seeds(&[7])
        .settings(&["task-il"])
        .plugin_dirs(&[plugins()])
        .dataset("mnist-5k")
        .hidden(&[64])
        .iterations(400)
        .momentum(0.9)
}

fn run(cfg: &Path, out: &Path) -> std::process::Output {
    common::run_cfg(cfg, out, "info", &["--jobs", "1"])
}

/// `tasks_done` of the checkpoint at `path` (read from its JSON metadata: magic, version, length,
/// then `{"key":..,"tasks_done":N,..}`), if it exists.
fn tasks_done(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(bytes.get(12..20)?.try_into().ok()?) as usize;
    let meta: Value = serde_json::from_slice(bytes.get(20..20 + n)?).ok()?;
    meta["tasks_done"].as_u64()
}

/// Runs `cfg` into `out` and kills it (SIGKILL) as soon as it has checkpointed `tasks` tasks.
fn run_and_kill_after_checkpoint(cfg: &Path, out: &Path, tasks: u64) {
    let ckpts = out.join("checkpoints");
    let mut child = clef()
        .args(["run", "--no-progress", "--jobs", "1", "--out"])
        .arg(out)
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
            child.try_wait().unwrap().is_none(),
            "the run ended before checkpointing {tasks} tasks"
        );
        assert!(Instant::now() < deadline, "no checkpoint written");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(out.join("trials")).map_or(0, |d| d.count()),
        0,
        "killed after the trial finished"
    );
}

fn killed_par_trial_resumes_to_the_same_records(hparams: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = par_cfg(tmp.path(), hparams);
    killed_trial_resumes_to_the_same_records(&cfg, tmp.path());
}

fn killed_trial_resumes_to_the_same_records(cfg: &Path, dir: &Path) {
    let cfg = cfg.to_path_buf();
    let whole = dir.join("whole");
    let o = run(&cfg, &whole);
    assert!(o.status.success(), "{}", show(&o));
    let log = text(&o.stderr);
    assert!(
        !log.contains("no more checkpoints"),
        "PAR's checkpoints were turned off:\n{log}"
    );
    let reference = results(&whole);
    assert_eq!(reference.len(), 1);
    // Experts exist from the first task on (PAR adds one per new task).
    let metrics = &reference[0]["strategy_metrics"];
    assert!(
        metrics[0]["experts"].as_f64().unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    let killed = dir.join("killed");
    // After three of the five tasks: experts hold several tasks' heads by then.
    run_and_kill_after_checkpoint(&cfg, &killed, 3);
    let o = run(&cfg, &killed);
    assert!(o.status.success(), "{}", show(&o));
    let log = text(&o.stderr);
    assert!(
        log.contains("resuming the trial from its checkpoint"),
        "no resume:\n{log}"
    );
    assert!(!log.contains("starts afresh"), "the resume failed:\n{log}");
    assert_eq!(results(&killed), reference);
    let left = std::fs::read_dir(killed.join("checkpoints")).map_or(0, |d| d.count());
    assert_eq!(left, 0, "checkpoints left behind");
}

#[test]
fn a_killed_par_trial_resumes_from_its_checkpoint_with_its_experts() {
    // PAR's rule with raw-pixel prototypes and a small search (the pool also holds the
    // search's unrouted experts).
    killed_par_trial_resumes_to_the_same_records(
        "search_epochs = 2, search_steps = 10, min_width = 16, max_width = 32, max_depth = 2",
    );
}

#[test]
fn a_killed_par_trial_sharing_one_expert_resumes_its_heads_and_teacher_state() {
    // alpha = beta = 1: every task after the first reuses (with distillation) the first
    // task's expert, so the pool stores several heads per expert; the first expert, frozen
    // after task 0, is the feature extractor in PAR's state.
    killed_par_trial_resumes_to_the_same_records(
        "alpha = 1.0, beta = 1.0, features = \"expert\", search_epochs = 2, \
         search_steps = 10, min_width = 16, max_width = 32, max_depth = 2",
    );
}

#[test]
fn a_killed_expert_per_task_trial_resumes_with_a_random_projection() {
    // One expert per task (the pool grows every task) and the projection in PAR's state.
    killed_par_trial_resumes_to_the_same_records(
        "policy = \"new-expert\", features = \"projection\", projection_dim = 16",
    );
}

#[test]
fn a_killed_par_trial_on_a_convnet_resumes_with_its_conv_experts() {
    // Convolutional experts (expert_add_conv) with batch norm: their running statistics are
    // buffers the pool must save too; a small conv search space.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = mlp()
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[4, 4]")
        .set("model", "norm", "\"batch\"")
        .hidden(&[])
        .iterations(150)
        .strategy("par")
        .hparams(
            "search_epochs = 2, search_steps = 5, max_conv_depth = 2, min_channels = 2, \
             max_channels = 4",
        )
        .write(tmp.path(), "par-cnn.toml");
    killed_trial_resumes_to_the_same_records(&cfg, tmp.path());
    let recs = results(&tmp.path().join("whole"));
    let m = &recs[0]["strategy_metrics"];
    assert_eq!(m[0]["arch.conv"].as_f64(), Some(1.0), "{m}");
}
