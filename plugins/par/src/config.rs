//! PAR's hyperparameters ([`Config`]) and their choice types; the table, defaults and sources
//! are in `docs/strategies.md` (`par`).

use clef_sdk::prelude::*;
use clef_sdk::Activation;

use crate::relatedness::Aggregate;

/// PAR's decision rule, or the expert-per-task reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Policy {
    /// Relatedness-driven reuse, transfer or allocation.
    Par,
    /// A new expert with the configured architecture for every task.
    NewExpert,
}

/// The fixed feature extractor of the prototypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Features {
    /// The raw inputs.
    Raw,
    /// A fixed Gaussian random projection to `projection_dim` dimensions.
    Projection,
    /// The penultimate features of the first task's expert, frozen after task 0.
    Expert,
}

/// Activation of the new-expert policy's experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum BaseActivation {
    /// ReLU.
    Relu,
    /// tanh.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
}

impl BaseActivation {
    /// The SDK's activation.
    pub fn activation(self) -> Activation {
        match self {
            BaseActivation::Relu => Activation::Relu,
            BaseActivation::Tanh => Activation::Tanh,
            BaseActivation::Sigmoid => Activation::Sigmoid,
        }
    }
}

/// The hyperparameters (table and sources: `docs/strategies.md`). Those marked
/// `needs_past_tasks` only act from the second task on (relatedness to old tasks,
/// distillation towards old heads): the first task always runs the search (or, with
/// `policy = "new-expert"`, the base architecture).
#[derive(Debug, Clone, HParams, Serialize, Deserialize)]
pub struct Config {
    /// PAR's decision rule, or a new base-architecture expert for every task
    #[hparam(default = "par")]
    pub policy: Policy,
    /// fixed feature extractor of the prototypes: raw inputs, a Gaussian random projection, or
    /// the first expert frozen after task 0
    #[hparam(default = "raw", needs_past_tasks)]
    pub features: Features,
    /// width of the random projection
    #[hparam(default = 64, range = 1..=65_536, needs_past_tasks)]
    pub projection_dim: usize,
    /// fraction of a task's training samples used for prototypes (PAR: a 10% validation split)
    #[hparam(default = 0.1, range = 1e-6..=1.0, needs_past_tasks)]
    pub proto_fraction: f64,
    /// regularisation threshold on the relatedness score S
    #[hparam(default = 0.5, range = 0.0..=1.0, needs_past_tasks)]
    pub alpha: f64,
    /// reuse-architecture threshold (alpha < S <= beta)
    #[hparam(default = 0.75, range = 0.0..=1.0, needs_past_tasks)]
    pub beta: f64,
    /// expert score from its tasks' scores
    #[hparam(default = "mean", needs_past_tasks)]
    pub aggregate: Aggregate,
    /// direct reuse (head only) below this fraction of the expert's largest task
    #[hparam(default = 0.5, range = 0.0..=1e6, needs_past_tasks)]
    pub reuse_ratio: f64,
    /// weight of each old head's distillation term
    #[hparam(default = 1.0, range = 0.0..=1e6, needs_past_tasks)]
    pub kd_weight: f64,
    /// distillation temperature
    #[hparam(default = 2.0, range = 0.01..=100.0, needs_past_tasks)]
    pub kd_temperature: f64,
    /// architecture search rounds (sampled architectures)
    #[hparam(default = 8, range = 1..=100_000)]
    pub search_epochs: usize,
    /// SGD steps per search round
    #[hparam(default = 50, range = 0..=10_000_000)]
    pub search_steps: usize,
    /// rows per search step
    #[hparam(default = 64, range = 1..=1_000_000)]
    pub search_batch: usize,
    /// SGD learning rate of the search
    #[hparam(default = 0.05, range = 0.0..=100.0)]
    pub search_lr: f64,
    /// MdeNAS learning rate of the option probabilities
    #[hparam(default = 0.01, range = 0.0..=100.0)]
    pub lr_search: f64,
    /// training samples the search uses (half train, half validation)
    #[hparam(default = 2000, range = 2..=100_000_000)]
    pub search_subset: usize,
    /// depths 1..=max_depth
    #[hparam(default = 3, range = 1..=16)]
    pub max_depth: usize,
    /// smallest width (powers of two up to max_width)
    #[hparam(default = 64, range = 1..=65_536)]
    pub min_width: usize,
    /// largest width
    #[hparam(default = 256, range = 1..=65_536)]
    pub max_width: usize,
    /// activation of the new-expert policy's experts
    #[hparam(default = "relu")]
    pub base_activation: BaseActivation,
    /// convolutional backbones: numbers of 3x3 convolutions 1..=max_conv_depth
    #[hparam(default = 4, range = 1..=16)]
    pub max_conv_depth: usize,
    /// convolutional backbones: smallest channel count (powers of two up to max_channels)
    #[hparam(default = 8, range = 1..=4096)]
    pub min_channels: usize,
    /// convolutional backbones: largest channel count
    #[hparam(default = 32, range = 1..=4096)]
    pub max_channels: usize,
}

/// Powers of two from `lo` up to `hi`.
pub(crate) fn doublings(lo: usize, hi: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut w = lo;
    while w <= hi {
        out.push(w);
        w *= 2;
    }
    out
}
