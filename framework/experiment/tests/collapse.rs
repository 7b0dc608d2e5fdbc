//! The trainer's `collapsed` flag end to end (`docs/metrics.md`): plain SGD at lr 2 on the
//! digits stream kills the network (online accuracy ~0.5 and loss ~ln 2 on two-class task-IL
//! tasks) and the flag says so; the same stream at lr 0.05 learns every task (online accuracy
//! above 0.8) and is never flagged. Both train 4 epochs per task.

use std::path::Path;
use std::sync::Arc;

use clef_data::scenario;
use clef_engine::strategy::Strategy;
use clef_engine::trainer::{run_trial, TrialOutcome, TrialStatus};
use clef_experiment::config::{self, Config};
use indicatif::ProgressBar;

fn cfg(lr: f64) -> Config {
    let text = format!(
        r#"
name = "collapse"
seeds = [0]
settings = ["task-il"]
[data]
dataset = "digits"
[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2
[model]
hidden = [32]
[train]
optimizer = "sgd"
lr = {lr:?}
epochs = 4
batch_size = 32
[[strategy]]
name = "finetune"
"#
    );
    config::parse(&text, Path::new("collapse.toml")).unwrap()
}

/// No hooks: plain training.
struct Plain;

impl Strategy for Plain {
    fn name(&self) -> &str {
        "plain"
    }
}

fn run(lr: f64) -> TrialOutcome {
    let cfg = cfg(lr);
    let data = Arc::new(clef_data::load(&cfg.data).unwrap());
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0).unwrap();
    let out = run_trial(cfg.trial_spec(), &sc, &mut Plain, 0, &ProgressBar::hidden());
    assert!(
        matches!(out.status, TrialStatus::Completed),
        "{:?}",
        out.status
    );
    out
}

#[test]
fn a_dead_network_is_flagged_and_a_learning_one_is_not() {
    let dead = run(2.0);
    let m = &dead.measured;
    assert_eq!(m.collapsed.len(), 5);
    let flagged: Vec<usize> = (0..5).filter(|&t| m.collapsed[t]).collect();
    assert!(flagged.len() >= 3, "collapsed {:?}", m.collapsed);
    for &t in &flagged {
        // What the flag means, from the stored per-task numbers (whole task, not just the tail).
        assert!(
            m.online_accuracy[t] < 0.6,
            "task {t}: {:?}",
            m.online_accuracy
        );
        assert!(m.mean_loss[t] > 0.6, "task {t}: {:?}", m.mean_loss);
    }
    let ok = run(0.05);
    assert_eq!(ok.measured.collapsed, vec![false; 5]);
    assert!(
        ok.measured.online_accuracy.iter().all(|&a| a > 0.8),
        "{:?} {:?}",
        ok.measured.online_accuracy,
        ok.measured.mean_loss
    );
}
