//! Cost of a masked (DST) training step against a dense one, side by side in one run.
//!
//! The dense step is the built-in `finetune` strategy (no hooks); the masked step is the `dst`
//! plugin (loaded through the C ABI like any plugin): after every optimizer step it writes
//! back every weight the task may not train and masks the optimizer state, and every
//! `update_every` steps it drops and regrows weights. Both train the same MLP 784-256-256-10
//! (batch 128, Adam) on the embedded MNIST-5k stream, so the time per step is the whole
//! training step (forward, backward, optimizer, hooks), topology updates included.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/dst_step [--plugin-dir target/release] [--reps 5]`.
//! Trials run in rotating, alternating order so drifts in machine load hit every variant; the table shows
//! the median and the fastest run per variant and their ratios to dense (target: < 1.3).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use clef_benchmarks::{fastest, median, mnist5k_config, scenario_of, time_trials};

use clef_experiment::runner::{BuiltinStrategies, StrategyProvider};
use clef_host::PluginStrategies;

#[derive(Parser)]
struct Args {
    /// Directory holding libclef_plugin_dst (default: next to this binary).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Repetitions of each variant (after one warm-up run each).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Optimizer steps per task (5 tasks).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
}

const STRATEGIES: &str = r#"
[[strategy]]
name = "finetune"

[[strategy]]
name = "dst"
label = "dst-erk-random-90"
hparams = { sparsity = 0.9, init = "erk", growth = "random", update_every = 50, task_steps = ITERATIONS }

[[strategy]]
name = "dst"
label = "dst-erk-gradient-90"
hparams = { sparsity = 0.9, init = "erk", growth = "gradient", update_every = 50, task_steps = ITERATIONS }

[[strategy]]
name = "dst"
label = "dst-uniform-momentum-90"
hparams = { sparsity = 0.9, init = "uniform", growth = "momentum", update_every = 50, task_steps = ITERATIONS }
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let cfg = mnist5k_config(
        "dst-step",
        "task-il",
        "optimizer = \"adam\"\nlr = 0.001",
        args.iterations,
        &STRATEGIES.replace("ITERATIONS", &args.iterations.to_string()),
    )?;
    let dir = clef_benchmarks::plugin_dir(args.plugin_dir)?;
    let plugins = PluginStrategies::for_config(&cfg.plugin_dirs, std::slice::from_ref(&dir));
    let sc = scenario_of(&cfg)?;
    let times = time_trials(&cfg, &sc, cfg.strategy.len(), args.reps, |i| {
        let scfg = &cfg.strategy[i];
        if i == 0 {
            BuiltinStrategies.create(scfg)
        } else {
            plugins
                .create(scfg)
                .with_context(|| format!("loading the dst plugin from {}", dir.display()))
        }
    })?;
    let (dense_med, dense_min) = (median(times[0].clone()), fastest(&times[0]));
    println!(
        "DST masked step vs dense step: MLP 784-256-256-10, batch 128, Adam, {} steps per \
         trial (update every 50), {} reps each, {} threads",
        5 * args.iterations,
        args.reps,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| variant | median ms/step | fastest ms/step | ratio (medians) | ratio (fastest) |");
    println!("|---|---|---|---|---|");
    for (i, t) in times.iter().enumerate() {
        let label = if i == 0 {
            "dense (built-in finetune)".to_string()
        } else {
            format!("masked: {}", cfg.strategy[i].label())
        };
        let (m, f) = (median(t.clone()), fastest(t));
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} |",
            m * 1e3,
            f * 1e3,
            m / dense_med,
            f / dense_min
        );
    }
    Ok(())
}
