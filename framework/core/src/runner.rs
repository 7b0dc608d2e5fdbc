//! Running a whole config: load the data, enumerate the trials (strategy x setting x seed), run
//! them, compute metrics and write each record as soon as its trial ends.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Config, DataConfig, DatasetKind, Invalid, Setting, StrategyConfig};
use crate::data::{self, TrainTest};
use crate::metrics;
use crate::results::{ResultsDir, TrialRecord};
use crate::scenario::{self, Scenario};
use crate::strategy::{self, DataMode, Strategy};
use crate::trainer::{self, TrialStatus};

/// The provider that also serves strategy plugins (see [`crate::plugin`]).
pub use crate::plugin::PluginStrategies;

/// Creates strategies by name and checks their config sections.
pub trait StrategyProvider {
    /// Checks the `[[strategy]]` entry at position `index` (name known, hyperparameters valid)
    /// without running anything. Errors name the key, e.g. `strategy[1].hparams.lambda`.
    fn validate(&self, index: usize, cfg: &StrategyConfig) -> Result<(), Invalid>;

    /// A fresh strategy instance for one trial.
    fn create(&self, cfg: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>>;
}

/// Provides the built-in strategies (`finetune`, `joint`), which take no hyperparameters.
/// [`PluginStrategies`] serves plugins too and falls back to these.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinStrategies;

impl StrategyProvider for BuiltinStrategies {
    fn validate(&self, index: usize, cfg: &StrategyConfig) -> Result<(), Invalid> {
        if strategy::builtin(&cfg.name).is_none() {
            return Err(Invalid::new(
                format!("strategy[{index}].name"),
                format!(
                    "unknown strategy `{}`; available: {}",
                    cfg.name,
                    strategy::builtin_names().join(", ")
                ),
            ));
        }
        if let Some(key) = cfg.hparams.keys().next() {
            return Err(Invalid::new(
                format!("strategy[{index}].hparams.{key}"),
                format!("unknown hyperparameter: strategy `{}` has none", cfg.name),
            ));
        }
        Ok(())
    }

    fn create(&self, cfg: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>> {
        strategy::builtin(&cfg.name).with_context(|| format!("unknown strategy `{}`", cfg.name))
    }
}

/// Loads the data set named by the `[data]` table.
pub fn load_data(cfg: &DataConfig) -> Result<TrainTest, data::DataError> {
    let classes = cfg.num_classes.unwrap_or(10);
    let split = |ds| data::split::stratified_split(&ds, cfg.test_fraction, cfg.split_seed);
    match cfg.dataset {
        DatasetKind::Digits => split(data::embedded::digits()?),
        DatasetKind::Mnist5k => split(data::embedded::mnist_5k()?),
        DatasetKind::FashionMnist => data::fashion::fashion_mnist(cfg.path.as_deref()),
        DatasetKind::Idx => {
            let dir = cfg.path.as_deref().unwrap_or(Path::new("."));
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "idx".into());
            data::fashion::idx_dataset(dir, &name, classes)
        }
        DatasetKind::Csv => {
            let path = cfg.path.as_deref().unwrap_or(Path::new(""));
            split(data::csv::load_csv_gz(
                path,
                cfg.pixel_max.unwrap_or(255.0),
                classes,
                cfg.image_shape,
            )?)
        }
        DatasetKind::Synthetic => Ok(data::synthetic::gaussian_blobs(
            classes,
            cfg.synthetic_dim.unwrap_or(16),
            cfg.synthetic_train_per_class.unwrap_or(100),
            cfg.synthetic_test_per_class.unwrap_or(30),
            1.0,
            cfg.split_seed,
        )),
    }
}

/// One trial to run.
#[derive(Debug, Clone)]
pub struct TrialSpec {
    /// Index of the `[[strategy]]` entry.
    pub strategy_index: usize,
    /// Setting.
    pub setting: Setting,
    /// Seed.
    pub seed: u64,
}

/// Trials of a config in run order: per setting and seed, `joint` first (so the others can
/// report intransigence against it), then the strategies in config order.
pub fn plan(cfg: &Config) -> Vec<TrialSpec> {
    let mut order: Vec<usize> = (0..cfg.strategy.len()).collect();
    order.sort_by_key(|&i| (cfg.strategy[i].name != "joint") as u8);
    let mut out = Vec::new();
    for &setting in &cfg.settings {
        for &seed in &cfg.seeds {
            for &i in &order {
                out.push(TrialSpec {
                    strategy_index: i,
                    setting,
                    seed,
                });
            }
        }
    }
    out
}

/// Checks the config against the strategies and the data (loads the data and builds every
/// scenario) without training.
pub fn validate(cfg: &Config, provider: &dyn StrategyProvider) -> anyhow::Result<ValidatedRun> {
    for (i, s) in cfg.strategy.iter().enumerate() {
        provider.validate(i, s).map_err(|inv| cfg.invalid(inv))?;
    }
    let data = Arc::new(load_data(&cfg.data)?);
    for &setting in &cfg.settings {
        scenario::build(&cfg.scenario, data.clone(), setting, cfg.seeds[0])
            .map_err(|inv| cfg.invalid(inv))?;
    }
    Ok(ValidatedRun {
        data,
        trials: plan(cfg),
    })
}

/// A config whose strategies, data and scenarios were checked.
pub struct ValidatedRun {
    /// The loaded data.
    pub data: Arc<TrainTest>,
    /// The trials in run order.
    pub trials: Vec<TrialSpec>,
}

/// Options of [`run`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Draw progress bars on stderr (when it is a terminal).
    pub progress: bool,
}

/// Runs every trial of `cfg`, appending each record to `out/results.jsonl` as it finishes, then
/// writes `out/summary.md`. Returns the records of this run.
pub fn run(
    cfg: &Config,
    provider: &dyn StrategyProvider,
    out: &ResultsDir,
    opts: RunOptions,
) -> anyhow::Result<Vec<TrialRecord>> {
    let validated = validate(cfg, provider)?;
    let data = validated.data;
    let trials = validated.trials;
    tracing::info!(
        config = cfg.name(),
        trials = trials.len(),
        train = data.train.len(),
        test = data.test.len(),
        "starting run"
    );
    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(trials.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("trials {bar:30} {pos}/{len} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut records: Vec<TrialRecord> = Vec::new();
    for spec in &trials {
        let scfg = &cfg.strategy[spec.strategy_index];
        let scenario = scenario::build(&cfg.scenario, data.clone(), spec.setting, spec.seed)
            .map_err(|inv| cfg.invalid(inv))?;
        let mut strategy = match provider.create(scfg) {
            Ok(s) => s,
            Err(e) => {
                let rec = failed_record(cfg, scfg, &scenario, spec, format!("{e:#}"));
                out.append(&rec)?;
                records.push(rec);
                overall.inc(1);
                continue;
            }
        };
        let mode = strategy.data_mode();
        let bar = multi.add(ProgressBar::new(trainer::total_steps(cfg, &scenario, mode)));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>28} {bar:30} {pos}/{len} steps {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!(
            "{} {} s{}",
            spec.setting.as_str(),
            scfg.label(),
            spec.seed
        ));
        let outcome = trainer::run_trial(cfg, &scenario, strategy.as_mut(), spec.seed, &bar);
        bar.finish_and_clear();
        multi.remove(&bar);
        let joint = (mode == DataMode::CurrentTask)
            .then(|| {
                records.iter().find(|r| {
                    r.strategy_name == "joint"
                        && r.setting == spec.setting.as_str()
                        && r.seed == spec.seed
                        && r.status == "completed"
                })
            })
            .flatten()
            .map(|r| r.accuracy_matrix.clone());
        let rec = record(cfg, scfg, &scenario, spec, outcome, joint.as_deref());
        match rec.status.as_str() {
            "completed" => tracing::info!(
                strategy = scfg.label(),
                setting = spec.setting.as_str(),
                seed = spec.seed,
                acc = rec.metrics.as_ref().map(|m| m.acc),
                samples_per_second = rec.samples_per_second as u64,
                "trial finished"
            ),
            _ => tracing::error!(
                strategy = scfg.label(),
                setting = spec.setting.as_str(),
                seed = spec.seed,
                "trial {}: {}",
                rec.status,
                rec.error.as_deref().unwrap_or("")
            ),
        }
        out.append(&rec)?;
        records.push(rec);
        overall.inc(1);
    }
    overall.finish_and_clear();
    crate::plots::write_report(out, Some(cfg.name()))?;
    Ok(records)
}

/// A stable hash (hex) of everything that defines a trial.
pub fn trial_id(cfg: &Config, scfg: &StrategyConfig, setting: Setting, seed: u64) -> String {
    let def = serde_json::json!({
        "data": cfg.data,
        "scenario": cfg.scenario,
        "model": cfg.model,
        "train": cfg.train,
        "strategy": scfg.name,
        "hparams": scfg.hparams,
        "setting": setting,
        "seed": seed,
    });
    format!("{:016x}", crate::seed::fnv1a(def.to_string().as_bytes()))
}

fn base_record(
    cfg: &Config,
    scfg: &StrategyConfig,
    scenario: &Scenario,
    spec: &TrialSpec,
) -> TrialRecord {
    TrialRecord {
        trial_id: trial_id(cfg, scfg, spec.setting, spec.seed),
        config: cfg.name().to_string(),
        strategy: scfg.label().to_string(),
        strategy_name: scfg.name.clone(),
        scenario: scenario.name.clone(),
        dataset: scenario.data.train.name.clone(),
        setting: spec.setting.as_str().to_string(),
        seed: spec.seed,
        hparams: serde_json::to_value(&scfg.hparams).unwrap_or_default(),
        status: "completed".into(),
        error: None,
        tasks: scenario.tasks.iter().map(|t| t.name.clone()).collect(),
        accuracy_matrix: Vec::new(),
        random_init_accuracy: Vec::new(),
        online_accuracy: Vec::new(),
        mean_loss: Vec::new(),
        metrics: None,
        train_seconds: 0.0,
        eval_seconds: 0.0,
        samples_per_second: 0.0,
        steps: 0,
        backend: String::new(),
        num_params: 0,
        clef_version: env!("CARGO_PKG_VERSION").to_string(),
        strategy_metrics: Vec::new(),
        diagnostics: Vec::new(),
    }
}

fn failed_record(
    cfg: &Config,
    scfg: &StrategyConfig,
    scenario: &Scenario,
    spec: &TrialSpec,
    error: String,
) -> TrialRecord {
    let mut r = base_record(cfg, scfg, scenario, spec);
    r.status = "failed".into();
    r.error = Some(error);
    r
}

fn record(
    cfg: &Config,
    scfg: &StrategyConfig,
    scenario: &Scenario,
    spec: &TrialSpec,
    o: trainer::TrialOutcome,
    joint: Option<&[Vec<f64>]>,
) -> TrialRecord {
    let mut r = base_record(cfg, scfg, scenario, spec);
    let samples_per_second = o.samples_per_second();
    match &o.status {
        TrialStatus::Completed => {
            // FWT is undefined in class-IL: a future task's classes are outside the mask.
            let b = (spec.setting != Setting::ClassIl).then_some(o.random_init_accuracy.as_slice());
            r.metrics = Some(metrics::compute(
                &o.accuracy_matrix,
                b,
                joint,
                Some(&o.online_accuracy),
            ));
        }
        TrialStatus::Diverged { task, step } => {
            r.status = "diverged".into();
            r.error = Some(format!(
                "loss or parameters became NaN/infinite in task {task} at step {step}"
            ));
        }
        TrialStatus::Failed(msg) => {
            r.status = "failed".into();
            r.error = Some(msg.clone());
        }
    }
    r.accuracy_matrix = o.accuracy_matrix;
    r.random_init_accuracy = o.random_init_accuracy;
    r.online_accuracy = o.online_accuracy;
    r.mean_loss = o.mean_loss;
    r.train_seconds = o.train_seconds;
    r.eval_seconds = o.eval_seconds;
    r.samples_per_second = samples_per_second;
    r.steps = o.steps;
    r.backend = o.backend;
    r.num_params = o.num_params;
    r.strategy_metrics = o.strategy_metrics;
    r.diagnostics = o.diagnostics;
    r
}
