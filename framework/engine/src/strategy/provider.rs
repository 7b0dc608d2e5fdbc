//! Where strategies come from: the [`StrategyProvider`] interface the experiment asks for
//! schemas and instances, and [`BuiltinStrategies`] serving the built-ins (the plugin host's
//! provider serves plugins and falls back to it).

use anyhow::Context as _;
use clef_data::Invalid;

use super::hparams::HParamSpec;
use super::Strategy;
use crate::spec::StrategyConfig;

/// What a strategy declares about itself: its version and hyperparameter schema.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategySchema {
    /// Plugin version (`builtin` for built-in strategies); part of every trial's identity.
    pub version: String,
    /// Hash of the plugin's library file (`None` for built-ins); part of every trial's
    /// identity, so a rebuilt plugin's trials run again.
    pub library_hash: Option<String>,
    /// True if the strategy handles convolutional backbones (built-ins do; a plugin declares
    /// it in its descriptor, ABI 1.4).
    pub conv: bool,
    /// Hyperparameter schema (empty for built-ins).
    pub hparams: Vec<HParamSpec>,
}

/// Creates strategies by name and checks their config sections. Shared by the worker threads
/// of a parallel sweep, hence `Sync`.
pub trait StrategyProvider: Sync {
    /// Checks the `[[strategy]]` entry at position `index` (name known, hyperparameters valid)
    /// without running anything. Errors name the key, e.g. `strategy[1].hparams.lambda`.
    fn validate(&self, index: usize, cfg: &StrategyConfig) -> Result<(), Invalid>;

    /// Version and hyperparameter schema of entry `index`.
    fn schema(&self, index: usize, cfg: &StrategyConfig) -> Result<StrategySchema, Invalid>;

    /// The entry's full `hparams` table (defaults filled in, types normalised), checked.
    fn resolve_hparams(&self, index: usize, cfg: &StrategyConfig) -> Result<toml::Table, Invalid>;

    /// A fresh strategy instance for one trial.
    fn create(&self, cfg: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>>;
}

/// Provides the built-in strategies (`finetune`, `joint`), which take no hyperparameters.
/// [`PluginStrategies`] serves plugins too and falls back to these.
#[derive(Debug, Default, Clone, Copy)]
pub struct BuiltinStrategies;

impl StrategyProvider for BuiltinStrategies {
    fn validate(&self, index: usize, cfg: &StrategyConfig) -> Result<(), Invalid> {
        if super::builtin(&cfg.name).is_none() {
            return Err(Invalid::new(
                format!("strategy[{index}].name"),
                format!(
                    "unknown strategy `{}`; available: {}",
                    cfg.name,
                    super::builtin_names().join(", ")
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

    fn schema(&self, index: usize, cfg: &StrategyConfig) -> Result<StrategySchema, Invalid> {
        self.validate(index, cfg)?;
        Ok(StrategySchema {
            version: "builtin".into(),
            library_hash: None,
            conv: true,
            hparams: Vec::new(),
        })
    }

    fn resolve_hparams(&self, index: usize, cfg: &StrategyConfig) -> Result<toml::Table, Invalid> {
        self.validate(index, cfg)?;
        Ok(cfg.hparams.clone())
    }

    fn create(&self, cfg: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>> {
        super::builtin(&cfg.name).with_context(|| format!("unknown strategy `{}`", cfg.name))
    }
}
