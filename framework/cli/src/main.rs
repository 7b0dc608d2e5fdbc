//! `clef`: run continual-learning experiments from TOML configs.

mod new_plugin;
mod run_summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use clef_engine::strategy;
use clef_experiment::config::{self, Config};
use clef_experiment::runner::{self, RunOptions, StrategyProvider};
use clef_experiment::sweep::Shard;
use clef_host::{is_fixture, HParamKind, PluginSearch, PluginStrategies};
use clef_report::results::{results_table, write_atomic, ResultsDir};
use clef_report::store::TrialStore;

#[derive(Parser)]
#[command(
    name = "clef",
    version,
    about = "Continual-learning evaluation framework",
    after_help = "Logging: warnings and errors by default (plus progress bars and tables); -v \
                  shows info lines (per-trial and plugin logs), -vv debug, -vvv trace. \
                  RUST_LOG (e.g. RUST_LOG=clef_engine=debug) overrides -v."
)]
struct Cli {
    /// More log lines on stderr: -v info, -vv debug, -vvv trace (default: warnings only;
    /// RUST_LOG, when set, takes precedence).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Exit status of `clef run` when evaluation trials did not complete (failed or diverged):
/// their records and the views are written all the same.
const EXIT_TRIALS_INCOMPLETE: u8 = 2;

#[derive(Subcommand)]
enum Command {
    /// Run every trial of a config's protocols and write the results. Trials already in the
    /// results directory's store are skipped, so a killed run resumes where it stopped.
    ///
    /// Exit status: 0 when every evaluation trial completed; 2 when some evaluation trial
    /// failed or diverged (its record, results.jsonl and summary.md are written all the same,
    /// so scripts and Slurm notice); 1 on an error (bad config, unwritable output ...). A
    /// tuning candidate that fails or diverges is a normal outcome of a search and does not
    /// change the status.
    Run {
        /// The TOML config.
        config: PathBuf,
        /// Results directory (default: results/NAME, NAME = the config's name).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Trials run at once; each gets cores/N threads (default 1).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        jobs: u32,
        /// Run only slice `i/n` (0 <= i < n) of each phase's trials, e.g.
        /// `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`; combine stores with `clef merge`.
        #[arg(long, value_name = "i/n")]
        shard: Option<Shard>,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
        /// Also search this directory (or load this library) for strategy plugins, before the
        /// config's `plugin_dirs`, $CLEF_PLUGIN_PATH and the directory of `clef` (repeatable).
        #[arg(long, value_name = "PATH")]
        plugin_dir: Vec<PathBuf>,
    },
    /// Check a config (keys, types, ranges, strategies and their hyperparameters, data,
    /// scenarios) without training.
    Validate {
        /// The TOML config.
        config: PathBuf,
        /// Also search this directory (or load this library) for strategy plugins (repeatable).
        #[arg(long, value_name = "PATH")]
        plugin_dir: Vec<PathBuf>,
    },
    /// Rewrite the views of a results directory from its trial store: `results.jsonl`,
    /// `summary.md` (per-protocol tables, rankings, Kendall's tau, paired tests), `report/*.csv`
    /// and `plots/*.svg` (`clef run` does this itself at the end of a run).
    Report {
        /// The results directory (the `--out` of `clef run`).
        dir: PathBuf,
    },
    /// Merge the trial stores of several results directories (e.g. the shards of a Slurm job
    /// array) into one, then rewrite its views. Trials are identified by their id, so merging
    /// twice, or stores that overlap, adds nothing twice.
    Merge {
        /// The results directory to merge into (created if needed).
        #[arg(long)]
        into: PathBuf,
        /// Results directories to merge from.
        #[arg(required = true)]
        from: Vec<PathBuf>,
    },
    /// List the strategy plugins found (name, version, ABI, file, hooks, hyperparameters).
    ///
    /// Searched: --plugin-dir paths, $CLEF_PLUGIN_PATH, then the directory of the `clef`
    /// executable. clef's own test fixtures (`fixture-*` plugins, broken on purpose for its
    /// tests, which a workspace build puts next to `clef`) are hidden unless --all is given or
    /// CLEF_SHOW_FIXTURES=1.
    Plugins {
        /// Also search this directory, or load this library file (repeatable).
        #[arg(long = "plugin-dir", alias = "dir", value_name = "PATH")]
        plugin_dir: Vec<PathBuf>,
        /// Also list clef's test fixtures (`fixture-*`).
        #[arg(long)]
        all: bool,
    },
    /// Create a new strategy plugin crate (a cdylib on the clef SDK) from a template.
    NewPlugin {
        /// Strategy name (`[a-z][a-z0-9_-]*`); the crate is `clef-plugin-<name>`.
        name: String,
        /// Parent directory of the new crate (default: the current directory); the crate goes
        /// into `<dir>/<name>`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Path of the clef SDK crate (`framework/sdk` of a clef checkout); default: the SDK
        /// of the source tree this `clef` was built from.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
}

/// The log filter: `RUST_LOG` if set, else warnings, or more with `-v`.
fn log_filter(verbose: u8) -> tracing_subscriber::EnvFilter {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&v).unwrap_or_else(|e| {
                eprintln!("warning: ignoring RUST_LOG={v:?} ({e}); logging {level}");
                tracing_subscriber::EnvFilter::new(level)
            })
        }
        _ => tracing_subscriber::EnvFilter::new(level),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(cli.verbose))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
            jobs,
            shard,
            no_progress,
            plugin_dir,
        } => run(
            &config,
            out,
            RunOptions {
                progress: !no_progress,
                jobs: jobs as usize,
                shard: shard.unwrap_or(Shard::ALL),
            },
            &plugin_dir,
        ),
        Command::Validate { config, plugin_dir } => {
            let (cfg, provider) = load_config(&config, &plugin_dir)?;
            let plan = runner::validate(&cfg, &provider)?;
            let tune = plan.tune_trials().len();
            // Evaluation trials: one per protocol, setting, strategy and seed (protocols that
            // choose the same values share theirs, so with tuning this is an upper bound).
            let eval = cfg.protocol.kinds.len()
                * cfg.settings.len()
                * cfg.strategy.len()
                * cfg.seeds.len();
            // Only strategies with a search space have candidates to compare.
            let searched: Vec<usize> = plan
                .strategies
                .iter()
                .map(|s| s.candidates.len())
                .filter(|&n| n > 1)
                .collect();
            let search = match (cfg.protocol.tunes(), searched.len()) {
                (false, _) => "no hyperparameter search (protocol `run`)".to_string(),
                (true, 0) => {
                    "no hyperparameter search (no strategy has two or more values to try)".into()
                }
                (true, 1) => format!("{} search candidates for 1 strategy", searched[0]),
                (true, n) => format!(
                    "{} search candidates for {n} strategies",
                    searched.iter().sum::<usize>()
                ),
            };
            println!(
                "{}: ok ({} trials: {} tuning, {}{} evaluation; protocols {}; {}; data {} with \
                 {} training and {} test samples, fingerprint {})",
                config.display(),
                tune + eval,
                tune,
                if cfg.protocol.tunes() { "up to " } else { "" },
                eval,
                cfg.protocol
                    .kinds
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                search,
                plan.eval_data.data.train.name,
                plan.eval_data.data.train.len(),
                plan.eval_data.data.test.len(),
                plan.eval_data.fingerprint,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { dir } => {
            anyhow::ensure!(
                dir.join("results.jsonl").is_file() || TrialStore::existing(&dir).is_some(),
                "{}: no trials/ store and no results.jsonl (expected the --out directory of \
                 `clef run`)",
                dir.display()
            );
            let out = ResultsDir::create(&dir)?;
            for p in clef_report::write_views(&out, None, None)? {
                println!("wrote {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Merge { into, from } => {
            let out = ResultsDir::create(&into)?;
            let target = TrialStore::open(&into)?;
            for dir in &from {
                let src = TrialStore::existing(dir).ok_or_else(|| {
                    anyhow::anyhow!("{}: no trials/ store to merge", dir.display())
                })?;
                let st = target.merge_from(&src)?;
                println!(
                    "{}: {} trial(s) added, {} already present",
                    dir.display(),
                    st.added,
                    st.already_present
                );
            }
            // Keep the selections of the first source that has them (the same config gives the
            // same selections once every tuning trial is stored).
            let selections = from
                .iter()
                .find_map(|d| clef_report::read_selections(d).ok().flatten());
            clef_report::write_views(&out, None, selections.as_deref())?;
            println!(
                "merged into {} ({} trials)",
                into.display(),
                target.ids()?.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins { plugin_dir, all } => {
            list_plugins(
                &PluginSearch::standard(&plugin_dir, &[]),
                all || clef_host::show_fixtures(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::NewPlugin { name, dir, sdk } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let created = new_plugin::create(&name, &dir, sdk.as_deref())?;
            println!("created {}", created.display());
            println!(
                "build it with `cargo build --release --manifest-path {}`; clef finds \
                 target/release/{} through --plugin-dir, `plugin_dirs` or $CLEF_PLUGIN_PATH",
                created.join("Cargo.toml").display(),
                clef_host::file_name(&name)
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads the config, builds the plugin-aware provider for it, and checks every
/// `[[strategy]]` entry (name, hyperparameters) so errors carry the file and line.
fn load_config(path: &Path, plugin_dirs: &[PathBuf]) -> anyhow::Result<(Config, PluginStrategies)> {
    let cfg = config::load(path)?;
    let provider = PluginStrategies::for_config(&cfg.plugin_dirs, plugin_dirs);
    for (i, s) in cfg.strategy.iter().enumerate() {
        provider.validate(i, s).map_err(|inv| cfg.invalid(inv))?;
    }
    Ok((cfg, provider))
}

fn run(
    config_path: &Path,
    out: Option<PathBuf>,
    opts: RunOptions,
    plugin_dirs: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let (shard, jobs) = ((opts.shard.index, opts.shard.count), opts.jobs);
    let (cfg, provider) = load_config(config_path, plugin_dirs)?;
    let plan = runner::validate(&cfg, &provider)?;
    let out = out.unwrap_or_else(|| Path::new("results").join(cfg.name()));
    let dir = ResultsDir::create(&out)?;
    let outcome = runner::run_plan(&plan, &provider, &dir, opts)?;
    // `run.json` at the end, whatever the exit status (docs/protocols.md).
    let summary = |exit_code: u8| -> anyhow::Result<()> {
        let s = run_summary::RunSummary {
            config: config_path.display().to_string(),
            shard,
            jobs,
            tune: run_summary::PhaseCounts {
                planned: outcome.tune.in_shard,
                run: outcome.tune.ran,
                skipped: outcome.tune.skipped,
            },
            pending_tune_trials: outcome.pending_tune_trials,
            eval: run_summary::PhaseCounts {
                planned: outcome.eval.in_shard,
                run: outcome.eval.ran,
                skipped: outcome.eval.skipped,
            },
            eval_statuses: outcome.records.iter().map(|r| r.status.clone()).collect(),
            wall_seconds: started.elapsed().as_secs_f64(),
            peak_rss_bytes: clef_engine::memory::peak_rss_bytes(),
            exit_code,
        };
        Ok(write_atomic(
            &dir.path().join("run.json"),
            s.to_json().as_bytes(),
        )?)
    };
    println!(
        "trials: tuning {} run, {} already stored; evaluation {} run, {} already stored",
        outcome.tune.ran, outcome.tune.skipped, outcome.eval.ran, outcome.eval.skipped
    );
    if let Some(b) = clef_engine::memory::peak_rss_bytes() {
        tracing::info!(
            peak_rss_mib = format!("{:.1}", b as f64 / (1024.0 * 1024.0)),
            "run finished"
        );
    }
    if outcome.pending_tune_trials > 0 {
        println!(
            "the tuning phase is incomplete: {} tuning trial(s) of other shards are not in {} \
             yet; run this command again once they are (or `clef merge` their stores into it)",
            outcome.pending_tune_trials,
            dir.path().display()
        );
        summary(0)?;
        return Ok(ExitCode::SUCCESS);
    }
    let records = &outcome.records;
    if cfg.protocol.tunes() {
        // One table per protocol: a strategy's records differ between protocols.
        let by_id = records.iter().map(|r| (r.trial_id.as_str(), r)).collect();
        let cmp = clef_report::compare(&outcome.selections, &by_id);
        println!("{}", clef_report::markdown(&cmp));
    } else {
        println!("{}", results_table(&outcome.selections, records));
    }
    println!(
        "results: {}  summary: {}",
        dir.jsonl_path().display(),
        dir.path().join("summary.md").display()
    );
    // Only evaluation trials count: a tuning candidate that diverges is a result of the search.
    let failed = records.iter().filter(|r| r.status != "completed").count();
    if failed > 0 {
        eprintln!(
            "{failed} trial(s) did not complete (of {} evaluation trial(s)); see summary.md \
             (exit status {EXIT_TRIALS_INCOMPLETE})",
            records.len()
        );
        summary(EXIT_TRIALS_INCOMPLETE)?;
        return Ok(ExitCode::from(EXIT_TRIALS_INCOMPLETE));
    }
    summary(0)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints every plugin of `search`; clef's test fixtures only with `fixtures` (or when given
/// as explicit files).
fn list_plugins(search: &PluginSearch, fixtures: bool) {
    let found = search.list();
    let mut shown = 0;
    let mut hidden = 0;
    for f in &found {
        let explicit = search.files.contains(&f.path);
        if !fixtures && !explicit && is_fixture(&f.path, f.plugin.as_ref().ok().copied()) {
            hidden += 1;
            continue;
        }
        let p = match &f.plugin {
            Ok(p) => p,
            Err(e) => {
                println!("! {}\n    {e}\n", f.path.display());
                continue;
            }
        };
        shown += 1;
        let info = &p.info;
        println!(
            "{} {} (ABI {}.{}){}",
            info.name,
            info.version,
            info.abi.0,
            info.abi.1,
            if f.shadowed {
                "  [shadowed by an earlier plugin of the same name]"
            } else {
                ""
            }
        );
        if !info.description.is_empty() {
            println!("    {}", info.description);
        }
        println!("    file:   {}", info.path.display());
        println!(
            "    backbones: {}",
            if info.conv {
                "mlp, convnet, resnet18"
            } else {
                "mlp only"
            }
        );
        println!(
            "    hooks:  {}",
            if info.hooks.is_empty() {
                "(none)".to_string()
            } else {
                info.hooks.join(", ")
            }
        );
        if info.hparams.is_empty() {
            println!("    hparams: (none)");
        } else {
            println!("    hparams:");
            let width = info.hparams.iter().map(|h| h.name.len()).max().unwrap_or(0);
            for h in &info.hparams {
                let range = match h.kind {
                    HParamKind::Bool => String::new(),
                    HParamKind::Choice(_) => format!("one of {}", h.range_text()),
                    _ => format!("range {}", h.range_text()),
                };
                println!(
                    "      {:<width$}  {:<6} default {:<10} {}{}{}{}",
                    h.name,
                    h.kind.as_str(),
                    h.default.to_string(),
                    range,
                    if h.log_scale { ", log scale" } else { "" },
                    if h.needs_past_tasks {
                        ", acts once a task has ended"
                    } else {
                        ""
                    },
                    if h.doc.is_empty() {
                        String::new()
                    } else {
                        format!("  -- {}", h.doc)
                    },
                );
            }
        }
        println!();
    }
    if shown == 0 {
        println!("no plugins found");
    }
    if hidden > 0 {
        println!(
            "{hidden} test fixture(s) hidden (`fixture-*` plugins, broken on purpose for clef's \
             tests); list them with --all or CLEF_SHOW_FIXTURES=1"
        );
    }
    println!("searched: {}", search.describe());
    println!(
        "built-in strategies: {} (a plugin of the same name takes precedence, except `joint`)",
        strategy::builtin_names().join(", ")
    );
}
