//! `train.augment` through the trainer: augmented training rows are crops/flips of the task's
//! own rows, drawn from a seed per (trial seed, task, step) so the same seed gives the same
//! batches, and without augmentation the batches are the gathered rows themselves.

use std::path::Path;
use std::sync::Arc;

use clef_data::augment::{crop, hflip};
use clef_data::scenario::{self, Scenario};
use clef_engine::strategy::{Batch, Ctx, Strategy, StrategyResult};
use clef_engine::trainer::{run_trial, TrialOutcome, TrialStatus};
use clef_experiment::config::{self, Config};
use indicatif::ProgressBar;

fn cfg(augment: &str) -> Config {
    let text = format!(
        r#"
name = "augment"
seeds = [0]
settings = ["class-il"]
[data]
dataset = "digits"
[scenario]
kind = "class-split"
tasks = 2
classes_per_task = 2
[model]
hidden = [8]
[train]
optimizer = "sgd"
lr = 0.05
iterations = 6
batch_size = 8
{augment}
[[strategy]]
name = "finetune"
"#
    );
    config::parse(&text, Path::new("augment.toml")).unwrap()
}

fn scenario(cfg: &Config) -> Scenario {
    let data = Arc::new(clef_data::load(&cfg.data).unwrap());
    scenario::build(&cfg.scenario, data, cfg.settings[0], 0).unwrap()
}

/// Records the current task's rows of every training batch.
#[derive(Default)]
struct Recorder {
    batches: Vec<(usize, Vec<f32>)>,
}

impl Strategy for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn before_batch(&mut self, ctx: &mut Ctx<'_>, batch: &mut Batch) -> StrategyResult {
        let d = ctx.scenario.input_dim();
        self.batches
            .push((ctx.task, batch.x[..batch.current_rows * d].to_vec()));
        Ok(())
    }
}

fn run(cfg: &Config, sc: &Scenario, seed: u64) -> (Recorder, TrialOutcome) {
    let mut r = Recorder::default();
    let out = run_trial(cfg.trial_spec(), sc, &mut r, seed, &ProgressBar::hidden());
    assert!(
        matches!(out.status, TrialStatus::Completed),
        "{:?}",
        out.status
    );
    (r, out)
}

/// Every training row of task `t`, as gathered.
fn task_rows(sc: &Scenario, t: usize) -> Vec<Vec<f32>> {
    let task = &sc.tasks[t];
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let all: Vec<usize> = (0..task.train.len()).collect();
    sc.gather(task, false, &all, &mut x, &mut y);
    x.chunks(sc.input_dim()).map(<[f32]>::to_vec).collect()
}

#[test]
fn augmented_rows_are_crops_and_flips_of_the_task_rows_and_seeded() {
    let cfg = cfg(r#"augment = ["crop:2", "hflip"]"#);
    let sc = scenario(&cfg);
    let shape = sc.image_shape().unwrap();
    let (a, out_a) = run(&cfg, &sc, 0);
    let (b, out_b) = run(&cfg, &sc, 0);
    assert_eq!(a.batches, b.batches, "same seed, same batches");
    assert_eq!(
        out_a.measured.accuracy_matrix,
        out_b.measured.accuracy_matrix
    );
    assert_eq!(out_a.measured.mean_loss, out_b.measured.mean_loss);
    let (c, _) = run(&cfg, &sc, 1);
    assert_ne!(a.batches, c.batches, "another seed, other batches");

    let d = sc.input_dim();
    let mut changed = 0;
    let mut total = 0;
    for (t, x) in &a.batches {
        let sources = task_rows(&sc, *t);
        for row in x.chunks(d) {
            let found = sources.iter().any(|src| {
                (0..25).any(|k| {
                    let mut out = vec![0.0; d];
                    crop(src, shape, 2, k / 5, k % 5, &[0.0], &mut out);
                    let same = out == row;
                    hflip(&mut out, shape);
                    same || out == row
                })
            });
            assert!(found, "task {t}: a row is no crop/flip of a training row");
            changed += usize::from(!sources.iter().any(|s| s == row));
            total += 1;
        }
    }
    assert!(
        changed * 2 > total,
        "only {changed} of {total} rows augmented"
    );
}

#[test]
fn without_augmentation_batches_are_the_gathered_rows() {
    let plain = cfg("");
    let empty = cfg("augment = []");
    assert!(plain.train.augment.is_empty());
    // An empty list is left out of the serialised table, so trial ids do not change.
    let json = serde_json::to_value(&empty.train).unwrap();
    assert!(json.get("augment").is_none(), "{json}");
    let sc = scenario(&plain);
    let (a, out_a) = run(&plain, &sc, 3);
    let (b, out_b) = run(&empty, &sc, 3);
    assert_eq!(a.batches, b.batches);
    assert_eq!(
        out_a.measured.accuracy_matrix,
        out_b.measured.accuracy_matrix
    );
    let d = sc.input_dim();
    for (t, x) in &a.batches {
        let sources = task_rows(&sc, *t);
        for row in x.chunks(d) {
            assert!(sources.iter().any(|s| s == row));
        }
    }
    // Augmented training starts from the same rows but trains on other inputs.
    let aug = cfg(r#"augment = ["hflip"]"#);
    let (c, _) = run(&aug, &sc, 3);
    assert_eq!(c.batches.len(), a.batches.len());
    assert_ne!(c.batches, a.batches);
}

#[test]
fn augmentation_on_data_without_images_fails_the_trial() {
    // Past validation (which refuses it with a located error), the trainer refuses it too.
    let cfg = cfg(r#"augment = ["hflip"]"#);
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, 16, 10, 4, 1.0, 0));
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0).unwrap();
    let mut r = Recorder::default();
    let out = run_trial(cfg.trial_spec(), &sc, &mut r, 0, &ProgressBar::hidden());
    match out.status {
        TrialStatus::Failed(m) => assert!(
            m.contains("train.augment") && m.contains("blobs") && m.contains("no image shape"),
            "{m}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}
