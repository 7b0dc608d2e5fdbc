//! The trainer records the loss-of-plasticity diagnostics of every task when `[diagnostics]`
//! is enabled, and nothing when it is not.

use std::path::Path;
use std::sync::Arc;

use clef_data::scenario;
use clef_engine::trainer::{run_trial, TrialOutcome, TrialStatus};
use clef_experiment::config;
use clef_experiment::runner::{load_data, BuiltinStrategies, StrategyProvider};
use indicatif::ProgressBar;

/// A random-label stream on 200 digits: every task relabels the same images at random, and
/// 30 epochs of small batches are enough to fit most of them.
fn config(diagnostics: &str) -> config::Config {
    let text = clef_testkit::Cfg::digits()
        .settings(&["domain-il"])
        .set("scenario", "kind", "\"random-labels\"")
        .tasks(4)
        .unset("scenario", "classes_per_task")
        .set("scenario", "samples", "200")
        .hidden(&[64, 32])
        .adam(0.003)
        .epochs(30)
        .batch_size(16)
        .strategy("finetune")
        .raw("diagnostics", diagnostics)
        .toml();
    config::parse(&text, Path::new("diag.toml")).unwrap()
}

fn run(cfg: &config::Config) -> TrialOutcome {
    let data = Arc::new(load_data(&cfg.data).unwrap());
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0).unwrap();
    let mut strategy = BuiltinStrategies.create(&cfg.strategy[0]).unwrap();
    let out = run_trial(
        cfg.trial_spec(),
        &sc,
        strategy.as_mut(),
        0,
        &ProgressBar::hidden(),
    );
    assert_eq!(out.status, TrialStatus::Completed);
    out
}

#[test]
fn diagnostics_are_recorded_per_task_when_enabled() {
    let cfg = config("enabled = true\nprobe_size = 150");
    let out = run(&cfg);
    assert_eq!(out.measured.diagnostics.len(), 4, "one entry per task");
    for (t, d) in out.measured.diagnostics.iter().enumerate() {
        // Random labels over 10 classes: chance is 0.1; a 64-32 MLP fits most of 200 samples.
        assert!(
            d.train_accuracy > 0.5 && d.train_accuracy <= 1.0,
            "task {t}: {d:?}"
        );
        assert!((0.0..=1.0).contains(&d.dormant_fraction), "task {t}: {d:?}");
        assert!((1..=32).contains(&d.feature_srank), "task {t}: {d:?}");
        assert!(
            d.feature_effective_rank >= 1.0 && d.feature_effective_rank <= 32.0,
            "task {t}: {d:?}"
        );
        assert_eq!(d.sigma_max.len(), 3, "three weight matrices");
        assert_eq!(d.mean_abs_weight.len(), 3);
        assert!(d.sigma_max.iter().all(|s| *s > 0.0 && s.is_finite()));
        // σ_max ≥ the RMS of a matrix's entries times sqrt(min dim) ≥ mean |w| (loosely).
        for (s, m) in d.sigma_max.iter().zip(&d.mean_abs_weight) {
            assert!(s > m, "task {t}: sigma_max {s} <= mean |w| {m}");
        }
    }
    // Training on random labels grows the weights.
    let first = &out.measured.diagnostics[0];
    let last = &out.measured.diagnostics[3];
    assert!(
        last.mean_abs_weight[0] > first.mean_abs_weight[0],
        "{first:?} vs {last:?}"
    );
    // Same config and seed, same diagnostics.
    assert_eq!(run(&cfg).measured.diagnostics, out.measured.diagnostics);
}

/// On a ConvNet whose features are its last conv map (conv3x3 3-4, 2x2 max-pool: 4 channels of
/// 4x4 positions on the 8x8 digits), dormancy counts channels (ReDO's per-channel score after
/// pooling |h| over positions) and the ranks are those of the 64-wide flattened map.
#[test]
fn conv_features_count_dormant_channels_and_rank_the_flattened_map() {
    let text = clef_testkit::Cfg::digits()
        .settings(&["domain-il"])
        .set("scenario", "kind", "\"random-labels\"")
        .tasks(2)
        .unset("scenario", "classes_per_task")
        .set("scenario", "samples", "200")
        .set("model", "backbone", "\"convnet\"")
        .set("model", "channels", "[3, 4]")
        .unset("model", "hidden")
        .adam(0.003)
        .epochs(3)
        .batch_size(16)
        .strategy("finetune")
        // τ = 1: below-average channels count, so the fraction is rarely 0 or 1.
        .raw(
            "diagnostics",
            "enabled = true\nprobe_size = 150\ndormant_threshold = 1.0",
        )
        .toml();
    let cfg = config::parse(&text, Path::new("diag-cnn.toml")).unwrap();
    let out = run(&cfg);
    assert_eq!(out.measured.diagnostics.len(), 2);
    let mut quarters_strictly_inside = 0;
    for (t, d) in out.measured.diagnostics.iter().enumerate() {
        // Per channel: a multiple of 1/4 (per position it would be k/64).
        let k = d.dormant_fraction * 4.0;
        assert!((k - k.round()).abs() < 1e-12, "task {t}: {d:?}");
        quarters_strictly_inside += usize::from(k > 0.5 && k < 3.5);
        // Ranks of the 150 x 64 map: above the 4 channels a pooled matrix could reach.
        assert!(
            (5..=64).contains(&d.feature_srank) && d.feature_effective_rank > 4.0,
            "task {t}: {d:?}"
        );
        // Two conv kernels and the head.
        assert_eq!(d.sigma_max.len(), 3, "task {t}: {d:?}");
    }
    assert!(
        quarters_strictly_inside > 0,
        "{:?}",
        out.measured.diagnostics
    );
}

#[test]
fn diagnostics_are_off_by_default_and_checked() {
    assert!(run(&config("")).measured.diagnostics.is_empty());
    let e = config::parse(
        "seeds = [0]\nsettings = [\"domain-il\"]\n[data]\ndataset = \"digits\"\n\
         [scenario]\nkind = \"permuted\"\ntasks = 2\n[model]\nhidden = [8]\n\
         [train]\noptimizer = \"sgd\"\nlr = 0.1\nepochs = 1\nbatch_size = 8\n[[strategy]]\nname = \"finetune\"\n\
         [diagnostics]\nenabled = true\nsrank_delta = 1.5\n",
        Path::new("bad.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("diagnostics.srank_delta") && e.contains("(0, 1)"),
        "{e}"
    );
}
