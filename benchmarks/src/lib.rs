//! Helpers shared by the benchmark binaries in `src/bin/`.

use std::path::PathBuf;

use anyhow::Context as _;

/// The median of `xs` (the upper one for an even count); `xs` must not be empty.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Where the plugins are: `arg` if given, else the directory of the running executable
/// (`cargo build --release --workspace` puts the benchmarks and the plugins side by side).
pub fn plugin_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_path_buf()),
    }
}

/// The fastest of `xs` (`+inf` when empty).
pub fn fastest(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The stream the plugin-cost benchmarks share: embedded MNIST-5k (no download), 5 class-split
/// tasks of 2 classes, MLP 784-256-256-10, batch 128, `iterations` steps per task, seed 0.
/// `optimizer` holds the `[train]` optimizer lines, `strategies` the `[[strategy]]` tables.
pub fn mnist5k_config(
    name: &str,
    setting: &str,
    optimizer: &str,
    iterations: usize,
    strategies: &str,
) -> anyhow::Result<clef_experiment::config::Config> {
    let text = format!(
        "name = \"{name}\"\nseeds = [0]\nsettings = [\"{setting}\"]\n\n[data]\ndataset = \
         \"mnist-5k\"\n\n[scenario]\nkind = \"class-split\"\ntasks = 5\nclasses_per_task = 2\n\n\
         [model]\nhidden = [256, 256]\n\n[train]\n{optimizer}\niterations = {iterations}\n\
         batch_size = 128\n\n{strategies}"
    );
    Ok(clef_experiment::config::parse(
        &text,
        std::path::Path::new(&format!("{name}.toml")),
    )?)
}

/// The scenario of `cfg`'s first setting with seed 0.
pub fn scenario_of(
    cfg: &clef_experiment::config::Config,
) -> anyhow::Result<clef_data::scenario::Scenario> {
    let data = std::sync::Arc::new(clef_experiment::runner::load_data(&cfg.data)?);
    clef_data::scenario::build(&cfg.scenario, data, cfg.settings[0], 0)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))
}

/// Times whole trials of `variants` strategies side by side: one warm-up round, then `reps`
/// rounds in rotating order, every other round reversed, so drifts in machine load hit every
/// variant alike. `create(i)` builds variant `i` afresh. Returns seconds per optimizer step,
/// `reps` values per variant.
pub fn time_trials(
    cfg: &clef_experiment::config::Config,
    scenario: &clef_data::scenario::Scenario,
    variants: usize,
    reps: usize,
    mut create: impl FnMut(usize) -> anyhow::Result<Box<dyn clef_engine::strategy::Strategy>>,
) -> anyhow::Result<Vec<Vec<f64>>> {
    use clef_engine::trainer::{run_trial, TrialStatus};
    let mut per_step = vec![Vec::with_capacity(reps); variants];
    for round in 0..=reps {
        let mut order: Vec<usize> = (0..variants).map(|i| (i + round / 2) % variants).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let mut strategy = create(i)?;
            let out = run_trial(
                cfg.trial_spec(),
                scenario,
                strategy.as_mut(),
                0,
                &indicatif::ProgressBar::hidden(),
            );
            anyhow::ensure!(
                out.status == TrialStatus::Completed,
                "variant {i} ({}): trial failed: {:?}",
                strategy.name(),
                out.status
            );
            if round > 0 {
                per_step[i].push(out.measured.train_seconds / out.measured.steps as f64);
            }
        }
    }
    Ok(per_step)
}
