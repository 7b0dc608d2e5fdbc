//! PAR resumes bit-identically: its experts (the host's expert pool) and its own state are in
//! the trial checkpoint, so a PAR trial killed after three of its five tasks (experts, several
//! heads on one expert, search experts in the pool) ends, once re-run, with exactly the records
//! of an uninterrupted run.

mod common;

use std::path::Path;

use clef_testkit::Cfg;
use serde_json::Value;

use common::kill::assert_kill_and_resume_is_bit_identical;
use common::plugins;

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

fn killed_par_trial_resumes_to_the_same_records(hparams: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = par_cfg(tmp.path(), hparams);
    killed_trial_resumes_to_the_same_records(&cfg, tmp.path());
}

/// Kills `cfg`'s run after three of its five tasks (experts hold several tasks' heads by
/// then), resumes it and compares with the uninterrupted run; returns that run's one record.
fn killed_trial_resumes_to_the_same_records(cfg: &Path, dir: &Path) -> Value {
    let mut reference = assert_kill_and_resume_is_bit_identical(cfg, dir, 3);
    assert_eq!(reference.len(), 1);
    let (_, record) = reference.remove(0);
    // Experts exist from the first task on (PAR adds one per new task).
    let metrics = &record["strategy_metrics"];
    assert!(
        metrics[0]["experts"].as_f64().unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    record
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
    let record = killed_trial_resumes_to_the_same_records(&cfg, tmp.path());
    let m = &record["strategy_metrics"];
    assert_eq!(m[0]["arch.conv"].as_f64(), Some(1.0), "{m}");
}
