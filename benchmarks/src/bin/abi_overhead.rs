//! Cost of going through the plugin ABI: the `finetune` plugin (a no-op strategy loaded from a
//! shared library, every hook called through the C ABI) against the built-in no-op strategy
//! (no plugin at all), side by side in one process on the same trial.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/abi_overhead [--plugin-dir target/release] [--reps 7]`.
//!
//! Trials alternate (built-in, plugin, built-in, ...) so drifts in machine load hit both; the
//! report gives the median training time per optimizer step of each and the overhead.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use indicatif::ProgressBar;

use clef_core::config;
use clef_core::plugin::PluginStrategies;
use clef_core::runner::{load_data, BuiltinStrategies, StrategyProvider};
use clef_core::scenario;
use clef_core::trainer::{run_trial, TrialStatus};

#[derive(Parser)]
struct Args {
    /// Directory holding libclef_plugin_finetune (default: next to this binary).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Repetitions of each variant.
    #[arg(long, default_value_t = 7)]
    reps: usize,
    /// Optimizer steps per task (5 tasks).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
}

const CONFIG: &str = r#"
name = "abi-overhead"
seeds = [0]
settings = ["class-il"]

[data]
dataset = "mnist-5k"

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2

[model]
hidden = [256, 256]

[train]
optimizer = "sgd"
lr = 0.05
momentum = 0.9
iterations = ITERATIONS
batch_size = 128

[[strategy]]
name = "finetune"
"#;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = CONFIG.replace("ITERATIONS", &args.iterations.to_string());
    let cfg = config::parse(&text, std::path::Path::new("abi-overhead.toml"))?;
    let dir = match args.plugin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_path_buf(),
    };
    let plugins = PluginStrategies::for_config(&cfg, &[dir.clone()]);
    let scfg = &cfg.strategy[0];
    let data = std::sync::Arc::new(load_data(&cfg.data)?);
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    let (mut builtin, mut plugin) = (Vec::new(), Vec::new());
    // One warm-up run of each, then alternate.
    for rep in 0..=args.reps {
        for use_plugin in [false, true] {
            let mut strategy = if use_plugin {
                plugins.create(scfg).with_context(|| {
                    format!("loading the finetune plugin from {}", dir.display())
                })?
            } else {
                BuiltinStrategies.create(scfg)?
            };
            let out = run_trial(&cfg, &sc, strategy.as_mut(), 0, &ProgressBar::hidden());
            anyhow::ensure!(
                out.status == TrialStatus::Completed,
                "trial failed: {:?}",
                out.status
            );
            let per_step = out.train_seconds / out.steps as f64;
            if rep > 0 {
                if use_plugin {
                    plugin.push(per_step)
                } else {
                    builtin.push(per_step)
                }
            }
        }
    }
    let (b, p) = (median(builtin), median(plugin));
    println!(
        "ABI overhead: MLP 784-256-256-10, batch 128, {} steps per trial, {} reps each",
        5 * args.iterations,
        args.reps
    );
    println!("| variant | median ms/step |");
    println!("|---|---|");
    println!("| built-in no-op strategy | {:.4} |", b * 1e3);
    println!("| finetune plugin (C ABI) | {:.4} |", p * 1e3);
    println!("overhead per step: {:+.2}%", (p / b - 1.0) * 100.0);
    Ok(())
}
