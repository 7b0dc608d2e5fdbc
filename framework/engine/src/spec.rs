//! The `[model]`, `[train]`, `[diagnostics]` and `[[strategy]]` tables of a config, owned by the
//! crate that runs them; `clef-experiment's `Config` composes them. Every table denies unknown
//! keys.

use std::path::PathBuf;

use clef_backend::{Activation, Init, MlpSpec, OptimizerSpec};
use serde::{Deserialize, Serialize};

/// The `[diagnostics]` table: per-task loss-of-plasticity diagnostics
/// ([`crate::plasticity`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Record the diagnostics (default false: they cost SVDs and extra forward passes).
    #[serde(default)]
    pub enabled: bool,
    /// Training samples of the task (its first ones) used for the end-of-task training
    /// accuracy and the feature statistics (default 1000).
    #[serde(default = "default_probe_size")]
    pub probe_size: usize,
    /// ReDO threshold τ: a unit whose normalised mean |activation| is at most τ is dormant
    /// (default 0.1; 0 counts only dead units).
    #[serde(default = "default_dormant_threshold")]
    pub dormant_threshold: f64,
    /// δ of the feature srank (default 0.01).
    #[serde(default = "default_srank_delta")]
    pub srank_delta: f64,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig {
            enabled: false,
            probe_size: default_probe_size(),
            dormant_threshold: default_dormant_threshold(),
            srank_delta: default_srank_delta(),
        }
    }
}

fn default_probe_size() -> usize {
    1000
}

fn default_dormant_threshold() -> f64 {
    0.1
}

fn default_srank_delta() -> f64 {
    0.01
}

/// The `[model]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Hidden-layer widths.
    pub hidden: Vec<usize>,
    /// Hidden non-linearity.
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Weight initialisation.
    #[serde(default = "default_init")]
    pub init: Init,
}

fn default_activation() -> Activation {
    Activation::Relu
}

fn default_init() -> Init {
    Init::KaimingUniform
}

/// Optimizer names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    /// SGD with optional momentum.
    Sgd,
    /// Adam.
    Adam,
}

/// The `[train]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f32,
    /// SGD momentum (default 0).
    #[serde(default)]
    pub momentum: Option<f32>,
    /// SGD Nesterov momentum (default false).
    #[serde(default)]
    pub nesterov: Option<bool>,
    /// Adam beta1 (default 0.9).
    #[serde(default)]
    pub beta1: Option<f32>,
    /// Adam beta2 (default 0.999).
    #[serde(default)]
    pub beta2: Option<f32>,
    /// Adam epsilon (default 1e-8).
    #[serde(default)]
    pub eps: Option<f32>,
    /// L2 weight decay (default 0).
    #[serde(default)]
    pub weight_decay: f32,
    /// Passes over each task's training data (exclusive with `iterations`).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Optimizer steps per task (exclusive with `epochs`).
    #[serde(default)]
    pub iterations: Option<usize>,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Zero the optimizer state at every task boundary (default true).
    #[serde(default = "default_true")]
    pub reset_optimizer: bool,
    /// Rows per forward pass during evaluation (default 1024).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
}

fn default_true() -> bool {
    true
}

fn default_eval_batch() -> usize {
    1024
}

/// How long each task trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Passes over the task's data.
    Epochs(usize),
    /// Optimizer steps.
    Iterations(usize),
}

/// One `[[strategy]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyConfig {
    /// Strategy (plugin) name, e.g. `finetune`, `joint`.
    pub name: String,
    /// Label in results (default: the name); must be unique in the config.
    #[serde(default)]
    pub label: Option<String>,
    /// Strategy hyperparameters, checked against the strategy's schema.
    #[serde(default)]
    pub hparams: toml::Table,
    /// Load the plugin from this shared library instead of searching for `name` (relative
    /// paths are relative to the config file). The library's plugin must be called `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Search space of the tuning protocols: hyperparameter name → explicit values
    /// (`[1, 10]`), a range (`{ min = 0.1, max = 10, log = true }`) or `"schema"` (the
    /// plugin's own range). Keys not listed stay at `hparams` (or the default).
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub search: toml::Table,
}

impl StrategyConfig {
    /// The label shown in results.
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

impl TrainConfig {
    /// The training budget per task.
    pub fn budget(&self) -> Budget {
        match (self.epochs, self.iterations) {
            (_, Some(i)) => Budget::Iterations(i),
            (Some(e), None) => Budget::Epochs(e),
            (None, None) => Budget::Epochs(1),
        }
    }

    /// The backend optimizer specification.
    pub fn optimizer_spec(&self) -> OptimizerSpec {
        match self.optimizer {
            OptimizerKind::Sgd => OptimizerSpec::Sgd {
                lr: self.lr,
                momentum: self.momentum.unwrap_or(0.0),
                weight_decay: self.weight_decay,
                nesterov: self.nesterov.unwrap_or(false),
            },
            OptimizerKind::Adam => OptimizerSpec::Adam {
                lr: self.lr,
                beta1: self.beta1.unwrap_or(0.9),
                beta2: self.beta2.unwrap_or(0.999),
                eps: self.eps.unwrap_or(1e-8),
                weight_decay: self.weight_decay,
            },
        }
    }
}

impl ModelConfig {
    /// The MLP for `input` features and `output` logits.
    pub fn mlp_spec(&self, input: usize, output: usize) -> MlpSpec {
        MlpSpec {
            input,
            hidden: self.hidden.clone(),
            output,
            activation: self.activation,
            init: self.init,
        }
    }
}
