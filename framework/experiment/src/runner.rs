//! Running a whole config: load and fingerprint the data, plan the protocols' trials, run the
//! tuning phase, select hyperparameters, run the evaluation phase, and derive the views.
//!
//! Every trial is stored as soon as it ends ([`clef_report::store`]); a re-run skips stored trials,
//! so a killed sweep resumes where it stopped.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{Config, Invalid, ProtocolKind, StrategyConfig};
use crate::protocol::{self, LoadedData, Plan, PlannedTrial, Selection, StrategyPlan};
use crate::sweep::{self, ExecOptions, ExecStats, Shard};
use clef_data::scenario;
use clef_data::TrainTest;
use clef_report::results::{ResultsDir, TrialRecord};
use clef_report::store::TrialStore;

/// The provider that also serves strategy plugins (see [`clef_host`]).
pub use clef_host::PluginStrategies;

pub use clef_data::load as load_data;
pub use clef_engine::strategy::{BuiltinStrategies, StrategyProvider, StrategySchema};

/// A config that cannot run: a config problem (with its key, for locating it in the file),
/// or anything else (data files, plugins).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A key of the config is at fault.
    #[error("`{}` {}", .0.key, .0.message)]
    Config(Invalid),
    /// Another failure.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<Invalid> for RunError {
    fn from(inv: Invalid) -> Self {
        RunError::Config(inv)
    }
}

impl From<clef_data::DataError> for RunError {
    fn from(e: clef_data::DataError) -> Self {
        RunError::Other(e.into())
    }
}

fn loaded(d: TrainTest) -> LoadedData {
    let fingerprint = clef_data::fingerprint::fingerprint(&d);
    LoadedData {
        data: Arc::new(d),
        fingerprint,
    }
}

/// Checks the config against the strategies and the data without training: loads and
/// fingerprints the data sets, builds every scenario of every phase, builds the search spaces
/// and candidates, and refuses a tune-then-evaluate whose tuning phase would read a D_eval
/// sample.
pub fn prepare<'a>(cfg: &'a Config, provider: &dyn StrategyProvider) -> Result<Plan<'a>, RunError> {
    let mut strategies = Vec::with_capacity(cfg.strategy.len());
    for (i, s) in cfg.strategy.iter().enumerate() {
        provider.validate(i, s)?;
        let schema = provider.schema(i, s)?;
        if !cfg.model.backbone.is_mlp() && !schema.conv {
            return Err(RunError::Config(Invalid::new(
                format!("strategy[{i}].name"),
                format!(
                    "strategy `{}` handles MLP backbones only (its plugin does not declare \
                     convolutional backbones), and `model.backbone` is `{}`",
                    s.name,
                    cfg.model.backbone.as_str()
                ),
            )));
        }
        let space = protocol::search::space(i, s, &schema.hparams)?;
        refuse_untunable_first_task(cfg, i, s, &schema)?;
        let fixed = provider.resolve_hparams(i, s)?;
        let mut candidates = Vec::new();
        for c in protocol::search::candidates(&cfg.protocol, s, &space) {
            let mut entry = s.clone();
            entry.hparams = c;
            candidates.push(provider.resolve_hparams(i, &entry)?);
        }
        strategies.push(StrategyPlan {
            version: schema.version,
            library_hash: schema.library_hash,
            fixed,
            candidates,
        });
    }
    let eval_data = loaded(load_data(&cfg.data)?);
    let tune_data = match &cfg.protocol.tune_data {
        Some(d) => Some(loaded(
            load_data(d).with_context(|| "loading [protocol.tune_data]")?,
        )),
        None => None,
    };
    let plan = Plan {
        cfg,
        eval_data,
        tune_data,
        strategies,
    };
    for &setting in &cfg.settings {
        let eval = scenario::build(
            &cfg.scenario,
            plan.eval_data.data.clone(),
            setting,
            cfg.seeds[0],
        )?;
        // The network must fit the data (an image backbone needs images large enough).
        cfg.model
            .model_spec(
                clef_engine::trainer::image_shape(&eval),
                eval.input_dim(),
                eval.num_outputs,
            )
            .map_err(|e| Invalid::new("model.backbone", e))?;
        for &kind in cfg.protocol.kinds.iter().filter(|k| k.tunes()) {
            let (role, sc) = plan.tune_stream(kind);
            let mut tune_scenarios = Vec::new();
            for seed in plan.tune_seeds() {
                let built = scenario::build(&sc, plan.data(role).data.clone(), setting, seed)
                    .map_err(|mut inv| {
                        if role == protocol::DataRole::Tune {
                            inv.message = format!(
                                "{} (building the tuning stream from [protocol.tune_data])",
                                inv.message
                            );
                        }
                        inv
                    })?;
                tune_scenarios.push(built);
            }
            if kind == ProtocolKind::TuneThenEvaluate {
                protocol::leakage::check_disjoint(
                    &tune_scenarios,
                    &plan.eval_data.data,
                    &plan.eval_data.data.train.name,
                )?;
            }
        }
    }
    Ok(plan)
}

/// Refuses a `first-task` search, on one tuning task, of a hyperparameter that only acts once
/// a task has ended (its schema entry has `needs_past_tasks`): every candidate would give the
/// same result, so the search could not choose.
fn refuse_untunable_first_task(
    cfg: &Config,
    index: usize,
    s: &StrategyConfig,
    schema: &StrategySchema,
) -> Result<(), Invalid> {
    if !cfg.protocol.kinds.contains(&ProtocolKind::FirstTask) || cfg.protocol.tune_tasks() != 1 {
        return Ok(());
    }
    for k in s.search.keys() {
        if schema
            .hparams
            .iter()
            .any(|h| &h.name == k && h.needs_past_tasks)
        {
            return Err(Invalid::new(
                format!("strategy[{index}].search.{k}"),
                format!(
                    "`{k}` of strategy `{}` only acts once a task has ended (e.g. a penalty \
                     towards past tasks), so protocol `first-task` tuning on 1 task \
                     (protocol.tune_tasks = 1, the default) cannot tune it: every candidate \
                     would give the same result. Set protocol.tune_tasks >= 2, or drop \
                     `first-task` from protocol.kinds",
                    s.label()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the config without training (see [`prepare`]); a config problem names the file,
/// the key and its line ([`Config::invalid`]).
pub fn validate<'a>(cfg: &'a Config, provider: &dyn StrategyProvider) -> anyhow::Result<Plan<'a>> {
    prepare(cfg, provider).map_err(|e| match e {
        RunError::Config(inv) => cfg.invalid(inv).into(),
        RunError::Other(e) => e,
    })
}

/// Options of [`run`].
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Draw progress bars on stderr (when it is a terminal).
    pub progress: bool,
    /// Trials run at once.
    pub jobs: usize,
    /// Slice of the sweep to run.
    pub shard: Shard,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: false,
            jobs: 1,
            shard: Shard::ALL,
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// Tuning phase execution.
    pub tune: ExecStats,
    /// Evaluation phase execution (zero while the tuning phase is incomplete).
    pub eval: ExecStats,
    /// Tuning trials of the whole sweep not stored yet (other shards still running): the
    /// evaluation phase waits for them. 0 when the run is complete.
    pub pending_tune_trials: usize,
    /// The selections (complete when `pending_tune_trials` is 0).
    pub selections: Vec<Selection>,
    /// Records of the evaluation trials of this config (all shards) found in the store.
    pub records: Vec<TrialRecord>,
}

/// Runs the config: the tuning trials of this shard, then (once every tuning trial of the
/// sweep is stored) the selections and this shard's evaluation trials; then rewrites the views
/// (`results.jsonl`, `selections.json`, `summary.md`, report tables and plots).
pub fn run(
    cfg: &Config,
    provider: &dyn StrategyProvider,
    out: &ResultsDir,
    opts: RunOptions,
) -> anyhow::Result<RunOutcome> {
    let plan = prepare(cfg, provider).map_err(|e| anyhow::anyhow!("{e}"))?;
    run_plan(&plan, provider, out, opts)
}

/// [`run`] for a plan already [`prepare`]d.
pub fn run_plan(
    plan: &Plan<'_>,
    provider: &dyn StrategyProvider,
    out: &ResultsDir,
    opts: RunOptions,
) -> anyhow::Result<RunOutcome> {
    let cfg = plan.cfg;
    let store = TrialStore::open(out.path())?;
    store.clean_temporaries(std::time::Duration::from_secs(60));
    let exec = ExecOptions {
        jobs: opts.jobs,
        shard: opts.shard,
        progress: opts.progress,
    };
    let tune_trials = plan.tune_trials();
    tracing::info!(
        config = cfg.name(),
        protocols = ?cfg.protocol.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
        tune_trials = tune_trials.len(),
        data = %plan.eval_data.fingerprint,
        shard = format!("{}/{}", opts.shard.index, opts.shard.count),
        "starting run"
    );
    let mut outcome = RunOutcome {
        tune: sweep::execute(plan, provider, &tune_trials, &store, exec)?,
        ..Default::default()
    };
    let stored = store.load_all()?;
    let (mut selections, missing) = plan.select(&stored);
    outcome.pending_tune_trials = missing;
    if missing == 0 {
        for sel in &selections {
            for w in &sel.warnings {
                tracing::warn!(
                    "protocol `{}`, {}, strategy `{}`: {w}",
                    sel.protocol,
                    sel.setting,
                    sel.strategy
                );
            }
        }
    }
    if missing > 0 {
        tracing::warn!(
            missing,
            "the tuning phase is incomplete (other shards have not finished): the evaluation \
             phase runs when this command is repeated after they have"
        );
        clef_report::write_views(out, Some(cfg.name()), None)?;
        return Ok(outcome);
    }
    let eval_trials: Vec<PlannedTrial> = plan.eval_trials(&mut selections);
    tracing::info!(eval_trials = eval_trials.len(), "evaluation phase");
    outcome.eval = sweep::execute(plan, provider, &eval_trials, &store, exec)?;
    let stored = store.load_all()?;
    outcome.records = eval_trials
        .iter()
        .filter_map(|t| stored.get(&t.id).cloned())
        .collect();
    outcome.records = clef_report::with_joint_metrics(&outcome.records);
    outcome.selections = selections;
    clef_report::write_views(out, Some(cfg.name()), Some(&outcome.selections))?;
    Ok(outcome)
}
