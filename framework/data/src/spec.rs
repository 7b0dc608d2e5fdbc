//! The `[data]` and `[scenario]` tables of a config (and the setting), owned by the crate that
//! reads them; `clef-experiment's `Config` composes them. Every table denies unknown keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

impl ScenarioConfig {
    /// A stream of `tasks` tasks of `kind` with every optional key unset (their defaults).
    pub fn new(kind: ScenarioKind, tasks: usize) -> Self {
        ScenarioConfig {
            kind,
            tasks,
            classes_per_task: None,
            class_order: None,
            seed: None,
            max_degrees: None,
            samples: None,
            permuted_tasks: None,
        }
    }

    /// A class split of `tasks` tasks of `classes_per_task` classes each, in natural order.
    pub fn class_split(tasks: usize, classes_per_task: usize) -> Self {
        ScenarioConfig {
            classes_per_task: Some(classes_per_task),
            ..Self::new(ScenarioKind::ClassSplit, tasks)
        }
    }
}
