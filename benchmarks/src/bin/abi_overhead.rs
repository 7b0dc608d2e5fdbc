//! Cost of going through the plugin ABI: the `finetune` plugin (a no-op strategy loaded from a
//! shared library, every hook called through the C ABI) against the built-in no-op strategy
//! (no plugin at all), side by side in one process on the same trial.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/abi_overhead [--plugin-dir target/release] [--reps 7]`.
//!
//! Two measurements, both side by side in one run:
//! 1. whole trials, alternating in ABBA order so drifts in machine load hit both variants;
//!    median and fastest training time per optimizer step (noisy at the 1-5% level on a shared
//!    machine);
//! 2. the hooks alone: the three per-step hooks (`before_batch`, `after_backward`,
//!    `after_step`) called in a tight loop on a real training context, plugin vs built-in. This
//!    isolates the ABI's cost per step precisely; the overhead is that cost divided by the
//!    measured training step.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use clef_benchmarks::median;
use indicatif::ProgressBar;

use clef_core::config;
use clef_core::plugin::PluginStrategies;
use clef_core::runner::{load_data, BuiltinStrategies, StrategyProvider};
use clef_core::scenario;
use clef_core::strategy::{Batch, Ctx, Strategy};
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = CONFIG.replace("ITERATIONS", &args.iterations.to_string());
    let cfg = config::parse(&text, std::path::Path::new("abi-overhead.toml"))?;
    let dir = clef_benchmarks::plugin_dir(args.plugin_dir)?;
    let plugins = PluginStrategies::for_config(&cfg, std::slice::from_ref(&dir));
    let scfg = &cfg.strategy[0];
    let data = std::sync::Arc::new(load_data(&cfg.data)?);
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    let (mut builtin, mut plugin) = (Vec::new(), Vec::new());
    // One warm-up run of each, then alternate.
    for rep in 0..=args.reps {
        // ABBA order: neither variant always runs first.
        let order = if rep % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for use_plugin in order {
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
    let (bmin, pmin) = (
        builtin.iter().copied().fold(f64::INFINITY, f64::min),
        plugin.iter().copied().fold(f64::INFINITY, f64::min),
    );
    let (b, p) = (median(builtin), median(plugin));
    println!(
        "ABI overhead: MLP 784-256-256-10, batch 128, {} steps per trial, {} reps each",
        5 * args.iterations,
        args.reps
    );
    println!("| variant | median ms/step | fastest ms/step |");
    println!("|---|---|---|");
    println!(
        "| built-in no-op strategy | {:.4} | {:.4} |",
        b * 1e3,
        bmin * 1e3
    );
    println!(
        "| finetune plugin (C ABI) | {:.4} | {:.4} |",
        p * 1e3,
        pmin * 1e3
    );
    println!(
        "whole trials: overhead per step {:+.2}% (medians), {:+.2}% (fastest runs)",
        (p / b - 1.0) * 100.0,
        (pmin / bmin - 1.0) * 100.0
    );

    // The hooks alone, on a real context.
    let mut builtin = BuiltinStrategies.create(scfg)?;
    let mut plugin = plugins.create(scfg)?;
    let spec = cfg.model.mlp_spec(sc.input_dim(), sc.num_outputs);
    let mut net = clef_backend::build_network(&spec, 0)?;
    let mut opt = clef_backend::Optimizer::new(cfg.train.optimizer_spec(), net.params());
    let mut experts = clef_core::experts::Experts::new(&spec, 0, sc.tasks.len());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut batch = Batch {
        x: vec![0.5; 128 * sc.input_dim()],
        targets: vec![0; 128],
        mask: sc.train_mask(0),
        row_masks: None,
        current_rows: 128,
    };
    let calls = 200_000;
    let mut time_hooks = |s: &mut dyn Strategy| -> anyhow::Result<f64> {
        let mut ctx = Ctx {
            net: &mut net,
            experts: &mut experts,
            optimizer: &mut opt,
            scenario: &sc,
            rng: &mut rng,
            task: 0,
            step: 0,
            seed: 0,
        };
        let t = std::time::Instant::now();
        for _ in 0..calls {
            s.before_batch(&mut ctx, &mut batch)?;
            s.after_backward(&mut ctx, 0.0)?;
            s.after_step(&mut ctx)?;
        }
        Ok(t.elapsed().as_secs_f64() / calls as f64)
    };
    let (mut hb, mut hp) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        hb.push(time_hooks(builtin.as_mut())?);
        hp.push(time_hooks(plugin.as_mut())?);
    }
    let (hb, hp) = (median(hb), median(hp));
    println!();
    println!("| per-step hooks (before_batch + after_backward + after_step) | ns per step |");
    println!("|---|---|");
    println!("| built-in no-op strategy | {:.1} |", hb * 1e9);
    println!("| finetune plugin (C ABI) | {:.1} |", hp * 1e9);
    println!(
        "hooks: ABI cost {:.1} ns per step = {:.4}% of the median training step ({:.4} ms)",
        (hp - hb) * 1e9,
        (hp - hb) / b * 100.0,
        b * 1e3
    );
    Ok(())
}
