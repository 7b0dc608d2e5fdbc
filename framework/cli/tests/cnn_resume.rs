//! Checkpoint and resume on a convolutional backbone, for every seed plugin: a trial killed
//! (SIGKILL) after its first task resumes from its checkpoint to the records of the
//! uninterrupted run, bit for bit (every field but timings). The CNN has batch norm, so the
//! running statistics (buffers) go through the checkpoint too. PAR on a ConvNet (its expert
//! pool in the checkpoint) is in `par_resume.rs`.

mod common;

use clef_testkit::Cfg;

use common::kill::assert_kill_and_resume_is_bit_identical;
use common::plugins;

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
