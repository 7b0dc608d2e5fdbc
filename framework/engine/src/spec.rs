//! The `[model]`, `[train]`, `[diagnostics]` and `[[strategy]]` tables of a config, owned by the
//! crate that runs them; `clef-experiment's `Config` composes them. Every table denies unknown
//! keys.

use std::path::PathBuf;

use clef_backend::{
    Activation, ConvNetSpec, ConvPool, ImageShape, Init, MlpSpec, ModelSpec, Norm, OptimizerSpec,
    ResNetSpec,
};
use clef_data::augment::Augment;
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
    /// The network family (default `mlp`).
    #[serde(default, skip_serializing_if = "Backbone::is_mlp")]
    pub backbone: Backbone,
    /// `mlp`: hidden-layer widths (required). `convnet`: widths of the dense layers after the
    /// convolutions (default none). Not used by `resnet18`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<usize>>,
    /// `convnet`: output channels of each 3x3 convolution, a 2x2 max-pool after every second
    /// one (default `[32, 32, 64, 64]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<usize>>,
    /// `resnet18`: channels of the stem and the first stage (default 64; 20 is the "reduced"
    /// ResNet-18 of GEM and Mammoth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// `resnet18`: BasicBlocks per stage (default `[2, 2, 2, 2]`, ResNet-18; smaller for
    /// smoke tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<[usize; 4]>,
    /// Normalisation after every convolution (`convnet` default `none`, `resnet18` default
    /// `batch`): `batch` (BatchNorm2d, running statistics in evaluation), `group`, `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<NormKind>,
    /// Channel groups of `norm = "group"` (required then; must divide every channel count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<usize>,
    /// `convnet`: how the last feature map reaches the dense layers and the head: `flatten`
    /// (default, `c * h * w` values) or `avg` (global average pooling, `c` values). Experts
    /// added with `expert_add_conv` inherit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<ConvPool>,
    /// Hidden non-linearity (MLP and the ConvNet; the ResNet uses ReLU).
    #[serde(default = "default_activation")]
    pub activation: Activation,
    /// Weight initialisation (`torch-default` is PyTorch's default for linear and conv layers).
    #[serde(default = "default_init")]
    pub init: Init,
}

/// The network families of `[model] backbone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backbone {
    /// A fully connected network (`hidden`).
    #[default]
    Mlp,
    /// The small CNN of the CL literature (`channels`, `hidden`, `norm`).
    Convnet,
    /// The CIFAR ResNet-18 (`width`, `blocks`, `norm`).
    Resnet18,
}

impl Backbone {
    /// True for the default, `mlp` (left out of a trial's identity, so MLP trial ids stay).
    pub fn is_mlp(&self) -> bool {
        *self == Backbone::Mlp
    }

    /// The name used in configs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Backbone::Mlp => "mlp",
            Backbone::Convnet => "convnet",
            Backbone::Resnet18 => "resnet18",
        }
    }
}

/// `[model] norm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// `torch.nn.BatchNorm2d`.
    Batch,
    /// `torch.nn.GroupNorm(groups, channels)`.
    Group,
    /// No normalisation.
    None,
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
    /// Augmentations of the training rows of image data, in order (default none; left out of
    /// the serialised table when empty, so trial ids without augmentation do not change).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub augment: Vec<Augment>,
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
    /// The MLP for `input` features and `output` logits (`hidden` of any backbone; the expert
    /// pool builds MLPs only).
    pub fn mlp_spec(&self, input: usize, output: usize) -> MlpSpec {
        MlpSpec {
            input,
            hidden: self.hidden.clone().unwrap_or_default(),
            output,
            activation: self.activation,
            init: self.init,
        }
    }

    /// The network for inputs of `input` features (images of shape `image`, if the data has
    /// one) and `output` logits. The error says what is missing or does not fit (a
    /// convolutional backbone on data without an image shape, an image shrunk below 1x1, groups
    /// that do not divide the channels); the caller names the `[model]` key.
    pub fn model_spec(
        &self,
        image: Option<ImageShape>,
        input: usize,
        output: usize,
    ) -> Result<ModelSpec, String> {
        let image = || {
            image.ok_or_else(|| {
                format!(
                    "`{}` needs image inputs, but the data has no image shape (digits, MNIST, \
                     Fashion-MNIST and CIFAR have one; a CSV file needs `image_shape`)",
                    self.backbone.as_str()
                )
            })
        };
        let norm = |default: Norm| -> Result<Norm, String> {
            Ok(match self.norm {
                None => default,
                Some(NormKind::Batch) => Norm::Batch,
                Some(NormKind::None) => Norm::None,
                Some(NormKind::Group) => Norm::Group {
                    groups: self
                        .groups
                        .ok_or("`norm = \"group\"` needs `groups` (channel groups)")?,
                },
            })
        };
        let spec = match self.backbone {
            Backbone::Mlp => ModelSpec::Mlp(self.mlp_spec(input, output)),
            Backbone::Convnet => ModelSpec::ConvNet(ConvNetSpec {
                input: image()?,
                channels: self
                    .channels
                    .clone()
                    .unwrap_or_else(|| vec![32, 32, 64, 64]),
                hidden: self.hidden.clone().unwrap_or_default(),
                output,
                norm: norm(Norm::None)?,
                activation: self.activation,
                init: self.init,
                pool: self.pool.unwrap_or_default(),
            }),
            Backbone::Resnet18 => ModelSpec::ResNet(ResNetSpec {
                input: image()?,
                width: self.width.unwrap_or(64),
                blocks: self.blocks.unwrap_or([2, 2, 2, 2]),
                output,
                norm: norm(Norm::Batch)?,
                init: self.init,
            }),
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }
}
