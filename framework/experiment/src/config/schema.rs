//! The config file: [`Config`] composes the tables the other crates own (`[data]`,
//! `[scenario]`, `[model]`, `[train]`, `[diagnostics]`, `[[strategy]]`) with the run's own keys
//! (name, seeds, settings, plugin directories, protocols). Its checks are in `validate`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{
    DataConfig, DiagnosticsConfig, ModelConfig, ScenarioConfig, Setting, StrategyConfig,
    TrainConfig,
};

/// A whole run configuration (one TOML file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name used in results and reports; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Seeds; every (strategy, setting) runs once per seed.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Evaluation settings to run; each is a separate trial (training differs too).
    pub settings: Vec<Setting>,
    /// Where the data comes from.
    pub data: DataConfig,
    /// How the data is cut into a task stream.
    pub scenario: ScenarioConfig,
    /// The network.
    pub model: ModelConfig,
    /// Optimisation and batching.
    pub train: TrainConfig,
    /// Strategies to compare.
    pub strategy: Vec<StrategyConfig>,
    /// Extra directories searched for strategy plugins (before `$CLEF_PLUGIN_PATH` and the
    /// directory of the `clef` executable); relative paths are relative to the config file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_dirs: Vec<PathBuf>,
    /// Loss-of-plasticity diagnostics recorded at the end of every task (off by default).
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// Which protocols to run (default: `run`, fixed hyperparameters); see
    /// `docs/protocols.md`.
    #[serde(default)]
    pub protocol: super::ProtocolConfig,
    /// The file and text this config was parsed from (set by [`super::parse`]), so checks
    /// that need the data or the plugins can still name the key's line.
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// Where a [`Config`] came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigSource {
    /// The config file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

impl Config {
    /// What the engine's trainer needs of this config: `[model]`, `[train]`, `[diagnostics]`.
    pub fn trial_spec(&self) -> clef_engine::trainer::TrialSpec<'_> {
        clef_engine::trainer::TrialSpec {
            model: &self.model,
            train: &self.train,
            diagnostics: &self.diagnostics,
        }
    }

    /// The config's name (set from the file stem when loading).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("clef")
    }
}
