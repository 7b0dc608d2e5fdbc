//! Checkpoint and resume: a trial killed (SIGKILL) after its first task resumes from its
//! checkpoint to the records of the uninterrupted run, bit for bit (every field but timings):
//! EWC and replay on an MLP, every seed plugin on a convolutional backbone with batch norm (so
//! the running statistics, buffers, go through the checkpoint too), and a plugin without saved
//! state restarts its trial with a warning. PAR (its expert pool in the checkpoint) is in
//! `par_resume.rs`.

mod common;

use clef_testkit::Cfg;

use common::kill::{assert_kill_and_resume_is_bit_identical, results_without_timings, spawn_run};
use common::{plugins, run_cfg, show, text};

/// One seed, class-IL (task-IL for the task-IL-only strategies), five mnist-5k class-split
/// tasks on a small ConvNet with batch norm, long enough per task (about 0.3 s) to be killed
/// in the middle; the tests add one `[[strategy]]`.
fn killable_cnn(name: &str, setting: &str) -> Cfg {
    Cfg::digits()
        .name(name)
        .seeds(&[5])
        .settings(&[setting])
        .plugin_dirs(&[plugins()])
        .dataset("mnist-5k")
        .unset("model", "hidden")
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[4, 4, 8, 8]")
        .set("model", "norm", "\"batch\"")
        .adam(0.001)
        .batch_size(32)
        .iterations(60)
}

/// Kills and resumes a one-strategy run of `strategy` with `hparams`.
fn resumes(strategy: &str, setting: &str, hparams: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = killable_cnn(strategy, setting).strategy(strategy);
    if !hparams.is_empty() {
        cfg = cfg.hparams(hparams);
    }
    let cfg = cfg.write(tmp.path(), "cnn.toml");
    assert_kill_and_resume_is_bit_identical(&cfg, tmp.path(), 1);
}

#[test]
fn l2init_resumes_bit_identically_on_a_cnn() {
    resumes("l2init", "class-il", "lambda = 0.01");
}

#[test]
fn ewc_and_replay_resume_bit_identically_on_a_cnn() {
    // The classic stateful ones, with BN: the Fisher of BN scales, the buffer of rows.
    resumes("ewc", "class-il", "lambda = 50.0");
    resumes("replay", "class-il", "memory_size = 100");
}

#[test]
fn si_resumes_bit_identically_on_a_cnn() {
    // Ω, θ*, and the next task's path integral started from the restored parameters; BN
    // buffers skipped.
    resumes("si", "class-il", "c = 0.1");
}

#[test]
fn mas_and_agem_resume_bit_identically_on_a_cnn() {
    // MAS: Ω and θ* (per-sample importances through `sample_grads` on the conv net, BN
    // buffers skipped). A-GEM: the per-task episodic memory, projections from task 1 on.
    resumes("mas", "class-il", "lambda = 1.0, importance_samples = 200");
    resumes("agem", "task-il", "memory_size = 100");
}

#[test]
fn icarl_resumes_bit_identically_on_a_cnn() {
    // The exemplars and class means; the old network (BN buffers included) is copied again
    // at the next task's start from the restored parameters; NCM evaluation.
    resumes("icarl", "class-il", "memory_size = 100");
}

#[test]
fn gdumb_resumes_bit_identically_on_a_cnn() {
    // The class-balanced memory and the RNG's position: the learner is retrained from a fresh
    // initialisation at every task end (BN buffers included), the stream steps undone.
    resumes(
        "gdumb",
        "class-il",
        "memory_size = 100, epochs = 2, batch_size = 16",
    );
}

#[test]
fn der_derpp_and_er_ace_resume_bit_identically_on_a_cnn() {
    // The reservoir memories (DER's with the stored logits of every row) and their counters;
    // the replay draws and reservoir slots come from the host RNG, restored with the trial.
    resumes("der", "class-il", "memory_size = 60, alpha = 0.5");
    resumes(
        "derpp",
        "task-il",
        "memory_size = 60, alpha = 0.5, beta = 0.5",
    );
    resumes("er-ace", "class-il", "memory_size = 60");
}

#[test]
fn spectral_and_wasserstein_resume_bit_identically_on_a_cnn() {
    // Spectral keeps power-iteration vectors per layer (conv kernels reshaped, BN scales as
    // diagonals); Wasserstein keeps the sorted initial values per tensor.
    resumes("spectral", "class-il", "lambda = 0.01");
    resumes("wasserstein", "class-il", "lambda = 0.01");
}

#[test]
fn dst_resumes_bit_identically_on_a_cnn() {
    // Masks, frozen set, per-task norm tensors and BN statistics, θ0: task-IL only.
    resumes(
        "dst",
        "task-il",
        "sparsity = 0.8, task_steps = 60, update_every = 20",
    );
}

#[test]
fn sfr_resumes_bit_identically_on_a_cnn() {
    // The duals, inducing points and their stored kernel factors of every past task (from
    // the conv NTK), a small inducing set to keep the test short.
    resumes("sfr", "class-il", "tau = 0.1, inducing_points = 20");
}

// ---- MLP ----------------------------------------------------------------------------------

/// A config `dir/<name>.toml` of five mnist-5k class-split tasks of 600 steps each (long
/// enough to be killed in the middle), one seed, class-IL, with the workspace's plugins; the
/// tests set the optimizer and add their `[[strategy]]` tables.
fn killable(name: &str) -> Cfg {
    Cfg::digits()
        .name(name)
        .seeds(&[5])
        .settings(&["class-il"])
        .plugin_dirs(&[plugins()])
        .dataset("mnist-5k")
        .hidden(&[128, 128])
        .iterations(600)
}

#[test]
fn a_trial_killed_mid_stream_resumes_from_its_checkpoint_to_the_same_result() {
    // Two stateful strategies (EWC: Fisher and anchor; replay: its buffer and the RNG), one
    // trial at a time, tasks long enough (about 0.3 s each) to be killed in the middle.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = killable("resume")
        .adam(0.001)
        .strategy("ewc")
        .hparams("lambda = 50.0")
        .strategy("replay")
        .hparams("memory_size = 200")
        .write(tmp.path(), "resume.toml");
    assert_kill_and_resume_is_bit_identical(&cfg, tmp.path(), 1);
}

#[test]
fn a_killed_trial_of_a_plugin_without_saved_state_restarts_with_a_warning_and_the_same_result() {
    // `fixture-unsaved` keeps an anchor between tasks but declares `NotCheckpointed`: the SDK
    // exports no save_state, so the host must turn checkpoints off for the trial (with a
    // warning) instead of resuming it with the anchor silently gone.
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let cfg = killable("unsaved")
        .sgd(0.05)
        .strategy("fixture-unsaved")
        .hparams("lambda = 1.0")
        .write(tmp.path(), "unsaved.toml");
    let whole = tmp.path().join("whole");
    let o = run_cfg(&cfg, &whole, "warn", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let warning = "no more checkpoints for this trial";
    assert!(text(&o.stderr).contains(warning), "{}", show(&o));

    // Kill (SIGKILL) the trial right after its first task, when the host has given up on
    // checkpointing it.
    let killed = tmp.path().join("killed");
    let mut child = spawn_run(&cfg, &killed, true);
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(warning) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        seen.contains(warning),
        "no warning before the kill:\n{seen}"
    );
    assert!(
        seen.contains("does not save its state"),
        "the warning does not say why:\n{seen}"
    );
    assert_eq!(
        std::fs::read_dir(killed.join("trials")).map_or(0, |d| d.count()),
        0,
        "killed after the trial finished"
    );

    // The re-run starts the trial afresh (nothing to resume) and ends with the same record.
    let o = run_cfg(&cfg, &killed, "info", &[]);
    assert!(o.status.success(), "{}", show(&o));
    let log = text(&o.stderr);
    assert!(
        !log.contains("resuming the trial"),
        "resumed without state:\n{log}"
    );
    assert_eq!(
        results_without_timings(&killed),
        results_without_timings(&whole)
    );
}
