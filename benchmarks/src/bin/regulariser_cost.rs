//! Cost per training step of the regulariser plugins (`spectral`, `wasserstein`, `l2init`)
//! against the `finetune` plugin (a no-op through the same C ABI), side by side in one process
//! on the same trial. Lewandowski et al. (ICLR 2025) report spectral regularisation as about
//! 14% slower per step on a GPU.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/regulariser_cost [--plugin-dir target/release] [--reps 5]`.
//!
//! Two measurements:
//! 1. whole trials (MLP 784-256-256-10, batch 128, SGD), the four variants in a rotating order
//!    that alternates direction (ABCD, DCBA, BCDA, ADCB, ...) so drifts in machine load hit every
//!    variant; median and fastest training time per optimizer step, and their ratio to
//!    finetune (noisy at the few-percent level on a shared machine);
//! 2. the regulariser alone: `after_backward` (where all three do their work) called in a
//!    tight loop on a real training context (5 rounds, median and fastest round); its cost
//!    divided by finetune's step (median, resp. fastest) gives the overhead with much less
//!    noise than whole trials.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use clef_benchmarks::{fastest, median, mnist5k_config, scenario_of, time_trials};

use clef_engine::strategy::{Ctx, Strategy};
use clef_experiment::runner::StrategyProvider;
use clef_host::PluginStrategies;

#[derive(Parser)]
struct Args {
    /// Directory holding the plugins (default: next to this binary).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Repetitions of each variant (after one warm-up round).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Optimizer steps per task (5 tasks).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// `after_backward` calls per timing round of the hooks-alone measurement.
    #[arg(long, default_value_t = 1000)]
    hook_calls: usize,
}

const STRATEGIES: &str = r#"
[[strategy]]
name = "finetune"

[[strategy]]
name = "spectral"

[[strategy]]
name = "wasserstein"

[[strategy]]
name = "l2init"
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.reps > 0 && args.hook_calls > 0,
        "--reps and --hook-calls must be > 0"
    );
    let cfg = mnist5k_config(
        "regulariser-cost",
        "class-il",
        "optimizer = \"sgd\"\nlr = 0.05\nmomentum = 0.9",
        args.iterations,
        STRATEGIES,
    )?;
    let dir = clef_benchmarks::plugin_dir(args.plugin_dir)?;
    let plugins = PluginStrategies::for_config(&cfg.plugin_dirs, std::slice::from_ref(&dir));
    let create = |i: usize| -> anyhow::Result<Box<dyn Strategy>> {
        let scfg = &cfg.strategy[i];
        plugins
            .create(scfg)
            .with_context(|| format!("loading the `{}` plugin from {}", scfg.name, dir.display()))
    };
    let names: Vec<&str> = cfg.strategy.iter().map(|s| s.name.as_str()).collect();
    let n = names.len();
    let sc = scenario_of(&cfg)?;

    // 1. Whole trials side by side.
    let per_step = time_trials(&cfg, &sc, n, args.reps, &create)?;
    let base_med = median(per_step[0].clone());
    let base_min = fastest(&per_step[0]);
    println!(
        "Regulariser cost: MLP 784-256-256-10, batch 128, SGD, {} steps per trial, {} reps each",
        5 * args.iterations,
        args.reps
    );
    println!("| strategy | median ms/step | fastest ms/step | ratio (medians) | ratio (fastest) |");
    println!("|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let (m, f) = (median(per_step[i].clone()), fastest(&per_step[i]));
        println!(
            "| {name} | {:.4} | {:.4} | {:.3} | {:.3} |",
            m * 1e3,
            f * 1e3,
            m / base_med,
            f / base_min
        );
    }

    // 2. The regulariser alone: after_backward on a real context (weights at init).
    let spec = cfg.model.mlp_spec(sc.input_dim(), sc.num_outputs);
    let mut net = clef_backend::build_network(&spec, 0)?;
    let mut opt = clef_backend::Optimizer::new(cfg.train.optimizer_spec(), net.params());
    let mut experts = clef_engine::experts::Experts::new(&spec, 0, sc.tasks.len());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mut time_hook = |s: &mut dyn Strategy| -> anyhow::Result<(f64, f64)> {
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
        s.on_model_built(&mut ctx)?;
        let mut rounds = Vec::new();
        for _ in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..args.hook_calls {
                s.after_backward(&mut ctx, 0.0)?;
            }
            rounds.push(t.elapsed().as_secs_f64() / args.hook_calls as f64);
        }
        Ok((fastest(&rounds), median(rounds)))
    };
    let mut hook = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = create(i)?;
        hook.push(time_hook(s.as_mut())?);
    }
    println!();
    println!(
        "| strategy | after_backward µs/step (median) | fastest | extra vs finetune's median step | fastest vs fastest step |"
    );
    println!("|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let ((fmin, fmed), (bmin, bmed)) = (hook[i], hook[0]);
        println!(
            "| {name} | {:.1} | {:.1} | {:+.2}% | {:+.2}% |",
            fmed * 1e6,
            fmin * 1e6,
            (fmed - bmed) / base_med * 100.0,
            (fmin - bmin) / base_min * 100.0
        );
    }
    println!(
        "finetune step: median {:.4} ms, fastest {:.4} ms ({} parameters)",
        base_med * 1e3,
        base_min * 1e3,
        spec.num_params()
    );
    Ok(())
}
