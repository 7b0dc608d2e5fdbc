//! Cost of the `sfr` plugin on split Fashion-MNIST (class-IL, 5 x 2, MLP 784-256-256-10,
//! M = 200 inducing points per task), side by side in one process:
//!
//! 1. every task boundary (`on_task_end` through the plugin ABI: inducing points, NTK Grams
//!    `K_zz` and `K_zx` over the task's 12 000 training images for each seen class, dual
//!    parameters, Cholesky and `Λ`), and the Gram part alone (the same `ntk_gram` calls the
//!    host service makes, timed directly on the backend);
//! 2. a plain training step (batch 32, forward + backward + Adam) against the same step plus
//!    SFR's `after_backward` (forward and vjp over the stored inducing points) with 1 to 4 past
//!    tasks.
//!
//! Build the plugins first (`cargo build --release --workspace`), then
//! `target/release/sfr_cost [--plugin-dir target/release] [--steps 200]`.
//! Needs Fashion-MNIST (`apt-get install dataset-fashion-mnist`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use clef_benchmarks::median;

use clef_backend::{ntk, Inputs};
use clef_data::scenario;
use clef_engine::strategy::Ctx;
use clef_experiment::config;
use clef_experiment::runner::{load_data, StrategyProvider};
use clef_host::PluginStrategies;

#[derive(Parser)]
struct Args {
    /// Directory holding the plugins (default: next to this binary).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Training steps per timing round (5 rounds, median reported).
    #[arg(long, default_value_t = 200)]
    steps: usize,
}

const CONFIG: &str = r#"
name = "sfr-cost"
seeds = [0]
settings = ["class-il"]

[data]
dataset = "fashion-mnist"

[scenario]
kind = "class-split"
tasks = 5
classes_per_task = 2
class_order = "natural"

[model]
hidden = [256, 256]
activation = "relu"
init = "xavier-uniform"

[train]
optimizer = "adam"
lr = 0.0003
weight_decay = 0.0001
epochs = 5
batch_size = 32

[[strategy]]
name = "sfr"
hparams = { tau = 1.0, prior_precision = 0.0001, inducing_points = 200 }
"#;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.steps > 0, "--steps must be > 0");
    let cfg = config::parse(CONFIG, std::path::Path::new("sfr-cost.toml"))?;
    let dir = clef_benchmarks::plugin_dir(args.plugin_dir)?;
    let plugins = PluginStrategies::for_config(&cfg.plugin_dirs, std::slice::from_ref(&dir));
    let mut sfr = plugins
        .create(&cfg.strategy[0])
        .with_context(|| format!("loading the `sfr` plugin from {}", dir.display()))?;
    let data = std::sync::Arc::new(load_data(&cfg.data)?);
    let sc = scenario::build(&cfg.scenario, data, cfg.settings[0], 0)
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    let spec = cfg.model.mlp_spec(sc.input_dim(), sc.num_outputs);
    let mut net = clef_backend::build_network(&spec, 0)?;
    let mut opt = clef_backend::Optimizer::new(cfg.train.optimizer_spec(), net.params());
    let mut experts = clef_engine::experts::Experts::new(&spec, 0, sc.tasks.len());
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let d = sc.input_dim();
    let m = 200;
    let batch = 32;

    // A fixed batch of task 0 for the step timings.
    let (mut bx, mut by) = (Vec::new(), Vec::new());
    let rows: Vec<usize> = (0..batch).collect();
    sc.gather(&sc.tasks[0], false, &rows, &mut bx, &mut by);
    let mut logits = Vec::new();

    println!(
        "SFR cost: split Fashion-MNIST class-IL, MLP 784-256-256-10 ({} parameters), M = {m}, \
         rayon threads: {}",
        spec.num_params(),
        rayon::current_num_threads()
    );
    println!();
    println!("| boundary after task | classes | N | boundary total s | Gram alone s | rest (Cholesky, Λ, dual params) s |");
    println!("|---|---|---|---|---|---|");
    let mut step_rows = Vec::new();
    for t in 0..sc.tasks.len() {
        // Time plain and regularised steps with t past tasks stored.
        let mut plain = Vec::new();
        let mut reg = Vec::new();
        for _ in 0..5 {
            let mut ctx = Ctx {
                net: &mut net,
                experts: &mut experts,
                optimizer: &mut opt,
                scenario: &sc,
                rng: &mut rng,
                task: t,
                step: 0,
                seed: 0,
                boundary: None,
                reinits: 0,
            };
            let mask = sc.train_mask(t);
            for regularise in [false, true] {
                let start = Instant::now();
                for _ in 0..args.steps {
                    ctx.net.params_mut().zero_grads();
                    ctx.net.loss_backward(
                        Inputs::new(&bx, batch, d)?,
                        &by,
                        mask.as_deref(),
                        &mut logits,
                    )?;
                    if regularise {
                        sfr.after_backward(&mut ctx, 0.0)
                            .map_err(|e| anyhow::anyhow!("after_backward: {e}"))?;
                    }
                    ctx.optimizer.step(ctx.net.params_mut());
                }
                let per_step = start.elapsed().as_secs_f64() / args.steps as f64;
                if regularise {
                    reg.push(per_step);
                } else {
                    plain.push(per_step);
                }
            }
        }
        step_rows.push((t, median(plain), median(reg)));
        if t + 1 == sc.tasks.len() {
            break;
        }

        // The boundary through the plugin.
        let task = &sc.tasks[t];
        let n = task.train.len();
        let classes: usize = sc.tasks[..=t].iter().map(|k| k.units.len()).sum();
        let mut ctx = Ctx {
            net: &mut net,
            experts: &mut experts,
            optimizer: &mut opt,
            scenario: &sc,
            rng: &mut rng,
            task: t,
            step: 0,
            seed: 0,
            boundary: None,
            reinits: 0,
        };
        let start = Instant::now();
        sfr.on_task_end(&mut ctx, task)
            .map_err(|e| anyhow::anyhow!("on_task_end: {e}"))?;
        let total = start.elapsed().as_secs_f64();

        // The Gram part alone: K_zz and K_zx (chunks of 1000) for every seen class.
        let z_rows: Vec<usize> = (0..m).map(|i| (i * 7919) % n).collect();
        let (mut z, mut zy) = (Vec::new(), Vec::new());
        sc.gather(task, false, &z_rows, &mut z, &mut zy);
        let start = Instant::now();
        let zi = Inputs::new(&z, m, d)?;
        for c in 0..classes {
            let mut kzz = vec![0.0; m * m];
            ntk::ntk_gram(net.spec(), net.params(), zi, zi, c, &mut kzz)?;
            let mut s = 0;
            while s < n {
                let r = 1000.min(n - s);
                let idx: Vec<usize> = (s..s + r).collect();
                let (mut x, mut y) = (Vec::new(), Vec::new());
                sc.gather(task, false, &idx, &mut x, &mut y);
                let mut kzx = vec![0.0; m * r];
                ntk::ntk_gram(
                    net.spec(),
                    net.params(),
                    zi,
                    Inputs::new(&x, r, d)?,
                    c,
                    &mut kzx,
                )?;
                s += r;
            }
        }
        let gram = start.elapsed().as_secs_f64();
        println!(
            "| {t} | {classes} | {n} | {total:.2} | {gram:.2} | {:.2} |",
            (total - gram).max(0.0)
        );
    }
    println!();
    println!("| past tasks stored | inducing rows | plain step ms | regularised step ms | ratio |");
    println!("|---|---|---|---|---|");
    for (t, p, r) in step_rows {
        println!(
            "| {t} | {} | {:.3} | {:.3} | {:.2} |",
            t * m,
            p * 1e3,
            r * 1e3,
            r / p
        );
    }
    Ok(())
}
