//! The `[protocol]` table: which evaluation protocols a config runs and how hyperparameters
//! are searched (see `docs/protocols.md`).

use serde::{Deserialize, Serialize};

use super::schema::Config;
use super::validate::validate_data_table;
use super::DataConfig;
use super::Invalid;

/// An evaluation protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    /// Fixed hyperparameters (the `[[strategy]]` `hparams`), no tuning.
    Run,
    /// GTEP (Cha & Cho): tune on scenarios built from `[protocol.tune_data]`, then evaluate
    /// the chosen values, frozen, on the same scenario configuration built from `[data]`.
    TuneThenEvaluate,
    /// Tune and report on the same stream (`[data]`): the optimistic protocol of most papers.
    Conventional,
    /// Tune on the first `tune_tasks` task(s) of the `[data]` stream only, then evaluate on
    /// the whole stream.
    FirstTask,
}

impl ProtocolKind {
    /// The kebab-case name used in configs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::Run => "run",
            ProtocolKind::TuneThenEvaluate => "tune-then-evaluate",
            ProtocolKind::Conventional => "conventional",
            ProtocolKind::FirstTask => "first-task",
        }
    }

    /// True if the protocol has a tuning phase.
    pub fn tunes(self) -> bool {
        self != ProtocolKind::Run
    }
}

/// The metric a tuning phase maximises (mean over the tuning seeds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionMetric {
    /// Final average accuracy ACC = `(1/T) Σ_j R[T][j]`.
    #[default]
    Acc,
    /// Average incremental accuracy Ā = (1/T) Σ_k A_k.
    AvgIncrementalAccuracy,
}

impl SelectionMetric {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SelectionMetric::Acc => "acc",
            SelectionMetric::AvgIncrementalAccuracy => "avg-incremental-accuracy",
        }
    }
}

/// How the search space is explored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchKind {
    /// Every combination of the listed values (ranges: `grid_points` values each).
    #[default]
    Grid,
    /// `budget` random draws (uniform, or log-uniform for log-scale ranges).
    Random,
}

/// The `[protocol]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Protocols to run (default `["run"]`).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<ProtocolKind>,
    /// Metric the tuning phase maximises (default `acc`).
    #[serde(default)]
    pub selection_metric: SelectionMetric,
    /// Search kind (default `grid`).
    #[serde(default)]
    pub search: SearchKind,
    /// Random search: candidates per strategy.
    #[serde(default)]
    pub budget: Option<usize>,
    /// Grid search: values per range dimension (default 3).
    #[serde(default)]
    pub grid_points: Option<usize>,
    /// Seed of the random search draws (default 0).
    #[serde(default)]
    pub search_seed: u64,
    /// Seeds of the tuning phase (default: the config's `seeds`). The config's `seeds` are the
    /// evaluation seeds.
    #[serde(default)]
    pub tune_seeds: Option<Vec<u64>>,
    /// `first-task`: number of leading tasks tuned on (default 1).
    #[serde(default)]
    pub tune_tasks: Option<usize>,
    /// `tune-then-evaluate`: D_tune, a data table like `[data]` (D_eval), sharing no sample
    /// with it.
    #[serde(default)]
    pub tune_data: Option<DataConfig>,
}

fn default_kinds() -> Vec<ProtocolKind> {
    vec![ProtocolKind::Run]
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            kinds: default_kinds(),
            selection_metric: SelectionMetric::default(),
            search: SearchKind::default(),
            budget: None,
            grid_points: None,
            search_seed: 0,
            tune_seeds: None,
            tune_tasks: None,
            tune_data: None,
        }
    }
}

impl ProtocolConfig {
    /// True if any protocol tunes.
    pub fn tunes(&self) -> bool {
        self.kinds.iter().any(|k| k.tunes())
    }

    /// Values per range dimension of a grid.
    pub fn grid_points(&self) -> usize {
        self.grid_points.unwrap_or(3)
    }

    /// `first-task`: leading tasks tuned on.
    pub fn tune_tasks(&self) -> usize {
        self.tune_tasks.unwrap_or(1)
    }
}

fn check(ok: bool, key: &str, message: impl Into<String>) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(key, message))
    }
}

/// Checks the `[protocol]` table against the rest of the config. Errors name the key.
pub fn validate_protocol(cfg: &Config) -> Result<(), Invalid> {
    let p = &cfg.protocol;
    check(
        !p.kinds.is_empty(),
        "protocol.kinds",
        "must list at least one protocol",
    )?;
    for (i, k) in p.kinds.iter().enumerate() {
        check(
            !p.kinds[..i].contains(k),
            "protocol.kinds",
            format!("lists `{}` twice", k.as_str()),
        )?;
    }
    let has = |k| p.kinds.contains(&k);
    let tte = has(ProtocolKind::TuneThenEvaluate);
    match &p.tune_data {
        Some(d) if tte => validate_data_table(d, "protocol.tune_data")?,
        Some(_) => {
            return Err(Invalid::new(
                "protocol.tune_data",
                "applies only to protocol `tune-then-evaluate`",
            ))
        }
        None => check(
            !tte,
            "protocol.kinds",
            "`tune-then-evaluate` needs a [protocol.tune_data] table (D_tune, disjoint from \
             [data])",
        )?,
    }
    let random = p.search == SearchKind::Random;
    match p.budget {
        Some(b) => {
            check(
                random,
                "protocol.budget",
                "applies only to search = \"random\"",
            )?;
            check(b >= 1, "protocol.budget", "must be >= 1")?;
        }
        None => check(
            !random || !p.tunes(),
            "protocol.budget",
            "is required for search = \"random\" (candidates per strategy)",
        )?,
    }
    if let Some(g) = p.grid_points {
        check(
            !random,
            "protocol.grid_points",
            "applies only to search = \"grid\"",
        )?;
        check(g >= 2, "protocol.grid_points", "must be >= 2")?;
    }
    if let Some(seeds) = &p.tune_seeds {
        check(
            !seeds.is_empty(),
            "protocol.tune_seeds",
            "must list at least one seed",
        )?;
        for (i, s) in seeds.iter().enumerate() {
            check(
                !seeds[..i].contains(s),
                "protocol.tune_seeds",
                format!("lists seed {s} twice"),
            )?;
        }
    }
    if let Some(t) = p.tune_tasks {
        check(
            has(ProtocolKind::FirstTask),
            "protocol.tune_tasks",
            "applies only to protocol `first-task`",
        )?;
        check(
            t >= 1 && t <= cfg.scenario.tasks,
            "protocol.tune_tasks",
            format!(
                "must be in [1, scenario.tasks = {}], got {t}",
                cfg.scenario.tasks
            ),
        )?;
    }
    if !p.tunes() {
        for (i, s) in cfg.strategy.iter().enumerate() {
            if let Some(k) = s.search.keys().next() {
                return Err(Invalid::new(
                    format!("strategy[{i}].search.{k}"),
                    "applies only to tuning protocols (protocol.kinds has only `run`)",
                ));
            }
        }
    }
    for (i, s) in cfg.strategy.iter().enumerate() {
        if let Some(k) = s.search.keys().find(|k| s.hparams.contains_key(*k)) {
            return Err(Invalid::new(
                format!("strategy[{i}].search.{k}"),
                "is also fixed in `hparams`; give it in one place only",
            ));
        }
    }
    Ok(())
}
