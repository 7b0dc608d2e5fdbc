//! The config file's tables and their validation rules.

use std::path::PathBuf;

use clef_backend::{Activation, Init, MlpSpec, OptimizerSpec};
use serde::{Deserialize, Serialize};

use super::Invalid;

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

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// Evaluation (and training) setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Setting {
    /// Task id known: logits masked to the task's classes in training and evaluation.
    TaskIl,
    /// Task id unknown: argmax over every class seen so far.
    ClassIl,
    /// One shared head; the label space is the same in every task.
    DomainIl,
}

impl Setting {
    /// The kebab-case name used in configs and results.
    pub fn as_str(self) -> &'static str {
        match self {
            Setting::TaskIl => "task-il",
            Setting::ClassIl => "class-il",
            Setting::DomainIl => "domain-il",
        }
    }
}

/// Which data set to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// UCI handwritten digits, 8x8 (embedded in the binary).
    Digits,
    /// 5000 MNIST training images, 28x28 (embedded in the binary).
    #[serde(rename = "mnist-5k")]
    Mnist5k,
    /// Fashion-MNIST IDX files from `path` or `/usr/share/datasets/fashion-mnist`.
    FashionMnist,
    /// Any IDX data set (MNIST naming: `train-images-idx3-ubyte[.gz]` ...) in directory `path`.
    Idx,
    /// A (gzip) CSV file at `path`: pixels, then the integer label.
    Csv,
    /// Seeded Gaussian blobs (for tests and smoke runs).
    Synthetic,
}

/// The `[data]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Which data set.
    pub dataset: DatasetKind,
    /// File (csv) or directory (idx, fashion-mnist).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Test share of each class for data sets without a test split (csv, digits, mnist-5k).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the train/test split (fixed across trials so every trial sees the same split).
    #[serde(default)]
    pub split_seed: u64,
    /// Largest raw pixel value of a csv file (pixels are divided by it).
    #[serde(default)]
    pub pixel_max: Option<f32>,
    /// Number of classes of a csv/idx/synthetic data set (default 10).
    #[serde(default)]
    pub num_classes: Option<usize>,
    /// `[height, width]` of csv images (needed for rotations).
    #[serde(default)]
    pub image_shape: Option<[usize; 2]>,
    /// Synthetic data: features per sample.
    #[serde(default)]
    pub synthetic_dim: Option<usize>,
    /// Synthetic data: training samples per class.
    #[serde(default)]
    pub synthetic_train_per_class: Option<usize>,
    /// Synthetic data: test samples per class.
    #[serde(default)]
    pub synthetic_test_per_class: Option<usize>,
}

fn default_test_fraction() -> f64 {
    0.2
}

/// How classes are assigned to tasks in a class split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ClassOrder {
    /// `"natural"` (0, 1, 2, ...) or `"shuffled"` (seeded permutation).
    Named(ClassOrderName),
    /// An explicit list of class labels, cut into consecutive tasks.
    Explicit(Vec<usize>),
}

/// Named class orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassOrderName {
    /// 0, 1, 2, ...
    Natural,
    /// A permutation drawn from the scenario seed.
    Shuffled,
}

/// Kind of task stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// Disjoint groups of classes per task.
    ClassSplit,
    /// The same classes, a fixed random pixel permutation per task.
    Permuted,
    /// The same classes, images rotated by a task-specific angle.
    Rotated,
    /// A fixed training subset relabelled at random for every task (plasticity).
    RandomLabels,
}

/// The `[scenario]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// Kind of stream.
    pub kind: ScenarioKind,
    /// Number of tasks.
    pub tasks: usize,
    /// Class split: classes per task.
    #[serde(default)]
    pub classes_per_task: Option<usize>,
    /// Class split: class order (default natural).
    #[serde(default)]
    pub class_order: Option<ClassOrder>,
    /// Seed of the stream's randomness (class order, permutations, random labels). Default:
    /// the trial seed, so every seed sees a different stream.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Rotated: largest angle in degrees; task t is rotated by t * max / (tasks - 1).
    #[serde(default)]
    pub max_degrees: Option<f32>,
    /// Random labels: number of training samples (a fixed subset reused by every task).
    #[serde(default)]
    pub samples: Option<usize>,
    /// Class split: tasks (0-based) whose inputs get a fixed random pixel permutation of their
    /// own, e.g. a permuted copy of an earlier task's classes (an explicit `class_order` may
    /// repeat classes). Default none.
    #[serde(default)]
    pub permuted_tasks: Option<Vec<usize>>,
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

fn check(ok: bool, key: &str, message: impl Into<String>) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(key, message))
    }
}

impl Config {
    /// The config's name (set from the file stem when loading).
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("clef")
    }

    /// Range and consistency checks that serde cannot express. Data-dependent checks (more
    /// classes per task than the data set has) happen when the scenario is built.
    pub fn validate(&self) -> Result<(), Invalid> {
        check(
            !self.seeds.is_empty(),
            "seeds",
            "must list at least one seed",
        )?;
        check(
            !self.settings.is_empty(),
            "settings",
            "must list at least one setting",
        )?;
        for (i, s) in self.settings.iter().enumerate() {
            check(
                !self.settings[..i].contains(s),
                "settings",
                format!("lists `{}` twice", s.as_str()),
            )?;
        }
        for (i, s) in self.seeds.iter().enumerate() {
            check(
                !self.seeds[..i].contains(s),
                "seeds",
                format!("lists seed {s} twice"),
            )?;
        }
        self.validate_data()?;
        self.validate_scenario()?;
        super::validate_protocol(self)?;
        self.validate_model()?;
        self.validate_train()?;
        let d = &self.diagnostics;
        check(
            d.probe_size >= 1,
            "diagnostics.probe_size",
            "must be at least 1",
        )?;
        check(
            d.dormant_threshold.is_finite() && d.dormant_threshold >= 0.0,
            "diagnostics.dormant_threshold",
            format!("must be a number >= 0, got {}", d.dormant_threshold),
        )?;
        check(
            d.srank_delta > 0.0 && d.srank_delta < 1.0,
            "diagnostics.srank_delta",
            format!("must be in (0, 1), got {}", d.srank_delta),
        )?;
        check(
            !self.strategy.is_empty(),
            "strategy",
            "must have at least one [[strategy]] table",
        )?;
        for (i, s) in self.strategy.iter().enumerate() {
            check(
                !s.name.trim().is_empty(),
                &format!("strategy[{i}].name"),
                "must not be empty",
            )?;
            let dup = self.strategy[..i].iter().any(|o| o.label() == s.label());
            check(
                !dup,
                &format!("strategy[{i}].name"),
                format!(
                    "label `{}` is used twice; give one of them a distinct `label`",
                    s.label()
                ),
            )?;
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), Invalid> {
        validate_data_table(&self.data, "data")
    }

    fn validate_scenario(&self) -> Result<(), Invalid> {
        let s = &self.scenario;
        check(s.tasks >= 1, "scenario.tasks", "must be >= 1")?;
        let only = |ok: bool, key: &str, kind: &str| {
            check(
                ok,
                key,
                format!("applies only to scenario.kind = \"{kind}\""),
            )
        };
        let is = |k: ScenarioKind| s.kind == k;
        only(
            s.classes_per_task.is_none() || is(ScenarioKind::ClassSplit),
            "scenario.classes_per_task",
            "class-split",
        )?;
        only(
            s.class_order.is_none() || is(ScenarioKind::ClassSplit),
            "scenario.class_order",
            "class-split",
        )?;
        only(
            s.max_degrees.is_none() || is(ScenarioKind::Rotated),
            "scenario.max_degrees",
            "rotated",
        )?;
        only(
            s.samples.is_none() || is(ScenarioKind::RandomLabels),
            "scenario.samples",
            "random-labels",
        )?;
        match s.kind {
            ScenarioKind::ClassSplit => {
                let cpt = s.classes_per_task.ok_or_else(|| {
                    Invalid::new("scenario.classes_per_task", "is required for class-split")
                })?;
                check(cpt >= 1, "scenario.classes_per_task", "must be >= 1")?;
                if let Some(ClassOrder::Explicit(order)) = &s.class_order {
                    check(
                        order.len() >= s.tasks * cpt,
                        "scenario.class_order",
                        format!(
                            "lists {} classes but {} tasks x {} classes need {}",
                            order.len(),
                            s.tasks,
                            cpt,
                            s.tasks * cpt
                        ),
                    )?;
                    // Task-IL gives every task its own head, so a class may come back in a
                    // later task (e.g. a permuted copy, `permuted_tasks`); never twice in one
                    // task, and never in the other settings (one unit per class).
                    let til_only = self.settings.iter().all(|&st| st == Setting::TaskIl);
                    for (i, c) in order.iter().enumerate() {
                        let task_start = i - i % cpt.max(1);
                        let again = if til_only {
                            order[task_start..i].contains(c)
                        } else {
                            order[..i].contains(c)
                        };
                        check(
                            !again,
                            "scenario.class_order",
                            if til_only {
                                format!("lists class {c} twice in one task")
                            } else {
                                format!(
                                    "lists class {c} twice (a class may repeat in later tasks \
                                     only with settings = [\"task-il\"])"
                                )
                            },
                        )?;
                    }
                }
            }
            ScenarioKind::Permuted | ScenarioKind::Rotated | ScenarioKind::RandomLabels => {
                for st in &self.settings {
                    check(
                        *st == Setting::DomainIl,
                        "settings",
                        format!(
                            "`{}` is not available for a {:?} stream: every task shares the label space, use \"domain-il\"",
                            st.as_str(),
                            s.kind
                        ),
                    )?;
                }
            }
        }
        if let Some(m) = s.max_degrees {
            check(
                m.is_finite() && m.abs() <= 360.0,
                "scenario.max_degrees",
                format!("must be within [-360, 360], got {m}"),
            )?;
        }
        if let Some(n) = s.samples {
            check(n >= 1, "scenario.samples", "must be >= 1")?;
        }
        Ok(())
    }

    fn validate_model(&self) -> Result<(), Invalid> {
        for (i, w) in self.model.hidden.iter().enumerate() {
            check(
                *w > 0,
                "model.hidden",
                format!("layer {i} has width 0; every width must be positive"),
            )?;
        }
        Ok(())
    }

    fn validate_train(&self) -> Result<(), Invalid> {
        let t = &self.train;
        check(
            t.lr.is_finite() && t.lr > 0.0,
            "train.lr",
            format!("must be a positive number, got {}", t.lr),
        )?;
        check(t.batch_size >= 1, "train.batch_size", "must be >= 1")?;
        check(
            t.eval_batch_size >= 1,
            "train.eval_batch_size",
            "must be >= 1",
        )?;
        check(
            t.weight_decay.is_finite() && t.weight_decay >= 0.0,
            "train.weight_decay",
            format!("must be >= 0, got {}", t.weight_decay),
        )?;
        check(
            !(t.epochs.is_some() && t.iterations.is_some()),
            "train.iterations",
            "set either `epochs` or `iterations`, not both",
        )?;
        if let Some(e) = t.epochs {
            check(e >= 1, "train.epochs", "must be >= 1")?;
        }
        if let Some(i) = t.iterations {
            check(i >= 1, "train.iterations", "must be >= 1")?;
        }
        let sgd = t.optimizer == OptimizerKind::Sgd;
        let only = |present: bool, key: &str, opt: &str| {
            check(
                !present,
                key,
                format!("applies only to train.optimizer = \"{opt}\""),
            )
        };
        only(!sgd && t.momentum.is_some(), "train.momentum", "sgd")?;
        only(!sgd && t.nesterov.is_some(), "train.nesterov", "sgd")?;
        only(sgd && t.beta1.is_some(), "train.beta1", "adam")?;
        only(sgd && t.beta2.is_some(), "train.beta2", "adam")?;
        only(sgd && t.eps.is_some(), "train.eps", "adam")?;
        if let Some(m) = t.momentum {
            check(
                (0.0..1.0).contains(&m),
                "train.momentum",
                format!("must be in [0, 1), got {m}"),
            )?;
        }
        for (key, b) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if let Some(b) = b {
                check(
                    (0.0..1.0).contains(&b),
                    key,
                    format!("must be in [0, 1), got {b}"),
                )?;
            }
        }
        if let Some(e) = t.eps {
            check(e > 0.0, "train.eps", format!("must be > 0, got {e}"))?;
        }
        Ok(())
    }
}

/// Checks a data table (`[data]` or `[protocol.tune_data]`); keys are named under `prefix`.
pub fn validate_data_table(d: &DataConfig, prefix: &str) -> Result<(), Invalid> {
    check(
        d.test_fraction > 0.0 && d.test_fraction < 1.0,
        &format!("{prefix}.test_fraction"),
        format!("must be in (0, 1), got {}", d.test_fraction),
    )?;
    match d.dataset {
        DatasetKind::Csv | DatasetKind::Idx => check(
            d.path.is_some(),
            &format!("{prefix}.path"),
            "is required for this dataset (a csv file or an idx directory)",
        )?,
        _ => {}
    }
    if let Some(p) = d.pixel_max {
        check(
            p > 0.0,
            &format!("{prefix}.pixel_max"),
            format!("must be > 0, got {p}"),
        )?;
    }
    if let Some(c) = d.num_classes {
        check(
            c >= 2,
            &format!("{prefix}.num_classes"),
            format!("must be >= 2, got {c}"),
        )?;
    }
    if let Some([h, w]) = d.image_shape {
        check(
            h > 0 && w > 0,
            &format!("{prefix}.image_shape"),
            "must be two positive sizes",
        )?;
    }
    for (key, v) in [
        (&format!("{prefix}.synthetic_dim"), d.synthetic_dim),
        (
            &format!("{prefix}.synthetic_train_per_class"),
            d.synthetic_train_per_class,
        ),
        (
            &format!("{prefix}.synthetic_test_per_class"),
            d.synthetic_test_per_class,
        ),
    ] {
        if let Some(v) = v {
            check(v > 0, key, "must be > 0")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DatasetKind;

    #[test]
    fn dataset_names_are_the_documented_ones() {
        #[derive(serde::Deserialize)]
        struct D {
            dataset: DatasetKind,
        }
        for (name, kind) in [
            ("digits", DatasetKind::Digits),
            ("mnist-5k", DatasetKind::Mnist5k),
            ("fashion-mnist", DatasetKind::FashionMnist),
            ("idx", DatasetKind::Idx),
            ("csv", DatasetKind::Csv),
            ("synthetic", DatasetKind::Synthetic),
        ] {
            let d: D = toml::from_str(&format!("dataset = \"{name}\"")).unwrap();
            assert_eq!(d.dataset, kind, "{name}");
        }
    }

    /// A class may come back in a later task only in task-IL, and never twice in one task.
    #[test]
    fn repeated_classes_need_task_il() {
        let cfg = |settings: &str, order: &str| {
            format!(
                "name = \"x\"\nseeds = [0]\nsettings = [{settings}]\n[data]\ndataset = \"digits\"\n\
                 [scenario]\nkind = \"class-split\"\ntasks = 2\nclasses_per_task = 2\n\
                 class_order = {order}\npermuted_tasks = [1]\n[model]\nhidden = [4]\n\
                 [train]\noptimizer = \"sgd\"\nlr = 0.1\niterations = 1\nbatch_size = 4\n\
                 [[strategy]]\nname = \"finetune\"\n"
            )
        };
        let p = std::path::Path::new("x.toml");
        assert!(crate::config::parse(&cfg("\"task-il\"", "[0, 1, 0, 1]"), p).is_ok());
        let e = crate::config::parse(&cfg("\"task-il\", \"class-il\"", "[0, 1, 0, 1]"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class_order") && e.contains("task-il"), "{e}");
        let e = crate::config::parse(&cfg("\"task-il\"", "[0, 0, 1, 2]"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice in one task"), "{e}");
    }
}
