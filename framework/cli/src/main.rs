//! `clef`: run continual-learning experiments from TOML configs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clef_core::config;
use clef_core::results::{results_table, ResultsDir};
use clef_core::runner::{self, BuiltinStrategies, RunOptions};

#[derive(Parser)]
#[command(
    name = "clef",
    version,
    about = "Continual-learning evaluation framework"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every (strategy x setting x seed) trial of a config and write the results.
    Run {
        /// The TOML config.
        config: PathBuf,
        /// Results directory (default: results/<config name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Check a config (keys, types, ranges, strategies, data, scenarios) without training.
    Validate {
        /// The TOML config.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            out,
            no_progress,
        } => run(&config, out, !no_progress),
        Command::Validate { config } => {
            let cfg = config::load(&config)?;
            let v = runner::validate(&cfg, &BuiltinStrategies)?;
            println!(
                "{}: ok ({} trials; {} training and {} test samples)",
                config.display(),
                v.trials.len(),
                v.data.train.len(),
                v.data.test.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(config_path: &Path, out: Option<PathBuf>, progress: bool) -> anyhow::Result<ExitCode> {
    let cfg = config::load(config_path)?;
    let out = out.unwrap_or_else(|| Path::new("results").join(cfg.name()));
    let dir = ResultsDir::create(&out)?;
    let records = runner::run(&cfg, &BuiltinStrategies, &dir, RunOptions { progress })?;
    println!("{}", results_table(&records));
    println!(
        "results: {}  summary: {}",
        dir.jsonl_path().display(),
        dir.path().join("summary.md").display()
    );
    let failed = records.iter().filter(|r| r.status != "completed").count();
    if failed > 0 {
        eprintln!("{failed} trial(s) did not complete; see summary.md");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
