//! End-to-end cost of one trial of a shipped config: wall time (config, data loading, training,
//! evaluation after every task), training and evaluation throughput, and peak memory against the
//! size of the decoded data set.
//!
//! ```text
//! cargo run -p clef-benchmarks --release --bin end_to_end -- [--config configs/split-fmnist.toml]
//!     [--strategy finetune] [--setting class-il] [--seed 0] [--reps 3] [--plugin-dir DIR]
//! ```
//!
//! Each repetition starts from scratch: it parses the config, decodes the data set from disk,
//! builds the scenario, and runs one trial of the chosen strategy, setting and seed, exactly as
//! `clef run` does for each trial of the config (without writing results). The peak resident set
//! (`VmHWM` of `/proc/self/status`) covers the whole process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Parser;
use indicatif::ProgressBar;

use clef_data::scenario;
use clef_engine::trainer::{run_trial, TrialStatus};
use clef_experiment::config::{self, Setting};
use clef_experiment::runner::{load_data, StrategyProvider};
use clef_host::PluginStrategies;

#[derive(Parser)]
#[command(about = "End-to-end time, throughput and peak memory of one trial of a config")]
struct Args {
    /// The config to run.
    #[arg(long, default_value = "configs/split-fmnist.toml")]
    config: PathBuf,
    /// Which `[[strategy]]` of the config (its label or name).
    #[arg(long, default_value = "finetune")]
    strategy: String,
    /// Setting (task-il, class-il, domain-il); default: the config's first.
    #[arg(long)]
    setting: Option<String>,
    /// Seed of the trial.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Repetitions (each from scratch).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Where plugins are found (default: the directory of this executable, then the config's
    /// `plugin_dirs`).
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
}

/// One repetition's measurements.
struct Rep {
    total_s: f64,
    load_s: f64,
    train_s: f64,
    eval_s: f64,
    train_samples: u64,
    eval_samples: usize,
    data_bytes: usize,
    params: usize,
}

/// Peak resident set of this process in bytes (Linux), if known.
fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

fn run_once(args: &Args, dirs: &[PathBuf]) -> anyhow::Result<Rep> {
    let t0 = Instant::now();
    let cfg = config::load(&args.config)?;
    let scfg = cfg
        .strategy
        .iter()
        .find(|s| s.label.as_deref() == Some(&args.strategy) || s.name == args.strategy)
        .with_context(|| {
            format!(
                "{}: no [[strategy]] named or labelled `{}`",
                args.config.display(),
                args.strategy
            )
        })?
        .clone();
    let setting = match &args.setting {
        None => cfg.settings[0],
        Some(name) => [Setting::TaskIl, Setting::ClassIl, Setting::DomainIl]
            .into_iter()
            .find(|s| s.as_str() == name)
            .with_context(|| {
                format!("--setting: unknown setting `{name}` (task-il, class-il, domain-il)")
            })?,
    };
    let provider = PluginStrategies::for_config(&cfg.plugin_dirs, dirs);
    let data = Arc::new(load_data(&cfg.data)?);
    let data_bytes = [&data.train, &data.test]
        .iter()
        .map(|d| d.features.len() * 4 + d.labels.len() * 4)
        .sum();
    let sc = scenario::build(&cfg.scenario, data, setting, args.seed)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", args.config.display(), e.key, e.message))?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut strategy = provider.create(&scfg)?;
    let out = run_trial(
        cfg.trial_spec(),
        &sc,
        strategy.as_mut(),
        args.seed,
        &ProgressBar::hidden(),
    );
    let total_s = t0.elapsed().as_secs_f64();
    if out.status != TrialStatus::Completed {
        bail!("trial did not complete: {:?}", out.status);
    }
    // One pass over the test split of every task per row of the accuracy matrix, plus the
    // random-init row if it was recorded.
    let test_rows: usize = sc.tasks.iter().map(|t| t.test.len()).sum();
    let passes = out.measured.accuracy_matrix.len()
        + usize::from(!out.measured.random_init_accuracy.is_empty());
    Ok(Rep {
        total_s,
        load_s,
        train_s: out.measured.train_seconds,
        eval_s: out.measured.eval_seconds,
        train_samples: out.measured.samples_seen,
        eval_samples: passes * test_rows,
        data_bytes,
        params: out.num_params,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let exe_dir = std::env::current_exe()?
        .parent()
        .context("executable has no directory")?
        .to_path_buf();
    let dirs: Vec<PathBuf> = args.plugin_dir.iter().cloned().chain([exe_dir]).collect();
    println!(
        "{}: strategy {}, seed {}, rayon pool of {} threads, {} repetitions (each from scratch)",
        args.config.display(),
        args.strategy,
        args.seed,
        rayon::current_num_threads(),
        args.reps
    );
    println!("| rep | wall s | load s | train s | eval s | train samples/s | eval samples/s |");
    println!("|---|---|---|---|---|---|---|");
    let mut reps = Vec::new();
    for i in 0..args.reps.max(1) {
        let r = run_once(&args, &dirs)?;
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.0} |",
            i + 1,
            r.total_s,
            r.load_s,
            r.train_s,
            r.eval_s,
            r.train_samples as f64 / r.train_s,
            r.eval_samples as f64 / r.eval_s
        );
        reps.push(r);
    }
    let mut walls: Vec<f64> = reps.iter().map(|r| r.total_s).collect();
    walls.sort_by(f64::total_cmp);
    let last = reps.last().context("no repetition")?;
    println!(
        "median wall time {:.3} s ({} training samples, {} evaluated samples per trial)",
        walls[walls.len() / 2],
        last.train_samples,
        last.eval_samples
    );
    let model_bytes = last.params * 4;
    match clef_engine::memory::peak_rss_bytes() {
        Some(peak) => println!(
            "peak RSS {:.1} MiB = {:.2}x (decoded data {:.1} MiB + model {:.1} MiB)",
            mib(peak as f64),
            peak as f64 / (last.data_bytes + model_bytes) as f64,
            mib(last.data_bytes as f64),
            mib(model_bytes as f64)
        ),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
    Ok(())
}
