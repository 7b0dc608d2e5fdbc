//! Cost of going through the plugin ABI: the `finetune` plugin (a no-op strategy loaded from a
//! shared library, every hook called through the C ABI) against the built-in no-op strategy
//! (no plugin at all), side by side in one process on the same trial.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/abi_overhead [--plugin-dir target/release] [--reps 7]`.
//!
//! Two measurements, both side by side in one run:
//! 1. whole trials, alternating order (`clef_benchmarks::time_trials`) so drifts in machine load hit both variants;
//!    median and fastest training time per optimizer step (noisy at the 1-5% level on a shared
//!    machine);
//! 2. the hooks alone: the three per-step hooks (`before_batch`, `after_backward`,
//!    `after_step`) called in a tight loop on a real training context, plugin vs built-in. This
//!    isolates the ABI's cost per step precisely; the overhead is that cost divided by the
//!    measured training step.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use clef_benchmarks::{fastest, median, mnist5k_config, scenario_of, time_trials};

use clef_engine::strategy::{Batch, Ctx, Strategy};
use clef_experiment::runner::{BuiltinStrategies, StrategyProvider};
use clef_host::PluginStrategies;

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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.reps >= 1, "--reps must be at least 1");
    let cfg = mnist5k_config(
        "abi-overhead",
        "class-il",
        "optimizer = \"sgd\"\nlr = 0.05\nmomentum = 0.9",
        args.iterations,
        "[[strategy]]\nname = \"finetune\"\n",
    )?;
    let dir = clef_benchmarks::plugin_dir(args.plugin_dir)?;
    let plugins = PluginStrategies::for_config(&cfg.plugin_dirs, std::slice::from_ref(&dir));
    let scfg = &cfg.strategy[0];
    let sc = scenario_of(&cfg)?;
    // Variant 0: the built-in no-op strategy; 1: the finetune plugin through the C ABI.
    let times = time_trials(&cfg, &sc, 2, args.reps, |i| {
        if i == 1 {
            plugins
                .create(scfg)
                .with_context(|| format!("loading the finetune plugin from {}", dir.display()))
        } else {
            BuiltinStrategies.create(scfg)
        }
    })?;
    let (builtin, plugin) = (times[0].clone(), times[1].clone());
    let (bmin, pmin) = (fastest(&builtin), fastest(&plugin));
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
    let mut experts = clef_engine::experts::Experts::new(&spec, 0, sc.tasks.len());
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
            boundary: None,
            reinits: 0,
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
