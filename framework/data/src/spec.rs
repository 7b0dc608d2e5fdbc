//! The `[data]` and `[scenario]` tables of a config (and the setting), owned by the crate that
//! reads them; `clef-experiment's `Config` composes them. Every table denies unknown keys.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ImageShape;

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
    /// CIFAR-10 binary files (`data_batch_{1..5}.bin`, `test_batch.bin`) in directory `path`.
    #[serde(rename = "cifar10")]
    Cifar10,
    /// CIFAR-100 binary files (`train.bin`, `test.bin`) in directory `path`.
    #[serde(rename = "cifar100")]
    Cifar100,
}

impl DatasetKind {
    /// The image shape every sample of this kind has, known from the config alone (`csv`:
    /// from `image_shape`; `synthetic`: none). `None` also when `image_shape` is malformed.
    pub fn image_shape(self, cfg: &DataConfig) -> Option<ImageShape> {
        match self {
            DatasetKind::Digits => Some(ImageShape::grey(8, 8)),
            DatasetKind::Mnist5k | DatasetKind::FashionMnist => Some(ImageShape::grey(28, 28)),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some(ImageShape::new(3, 32, 32)),
            // The header gives the size; IDX images are grey-scale.
            DatasetKind::Idx => None,
            DatasetKind::Csv => cfg.csv_image_shape().ok().flatten(),
            DatasetKind::Synthetic => None,
        }
    }

    /// True if every data set of this kind (with this config) has an image shape.
    pub fn has_image_shape(self, cfg: &DataConfig) -> bool {
        self == DatasetKind::Idx || self.image_shape(cfg).is_some()
    }

    /// Channels of the samples (1 for every non-image data set: normalisation then treats all
    /// features as one channel).
    pub fn channels(self, cfg: &DataConfig) -> usize {
        self.image_shape(cfg).map_or(1, |s| s.channels)
    }
}

/// Which CIFAR-100 label becomes the class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CifarLabel {
    /// The 100 fine classes.
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// The `normalize` key: off, per-channel statistics of the training split, or given values.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum NormalizeSpec {
    /// `false` (the default): features as loaded, in [0, 1].
    #[default]
    Off,
    /// `true`: mean and standard deviation per channel computed on the training split.
    Computed,
    /// `{ mean = [...], std = [...] }`: one value per channel each.
    Given {
        /// Per-channel mean.
        mean: Vec<f32>,
        /// Per-channel standard deviation (each > 0).
        std: Vec<f32>,
    },
}

impl NormalizeSpec {
    /// True for the default (`false`).
    pub fn is_off(&self) -> bool {
        *self == NormalizeSpec::Off
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GivenStats {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Serialize for NormalizeSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NormalizeSpec::Off => s.serialize_bool(false),
            NormalizeSpec::Computed => s.serialize_bool(true),
            NormalizeSpec::Given { mean, std } => GivenStats {
                mean: mean.clone(),
                std: std.clone(),
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for NormalizeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = NormalizeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or a table { mean = [...], std = [...] }")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(if v {
                    NormalizeSpec::Computed
                } else {
                    NormalizeSpec::Off
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let g = GivenStats::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(NormalizeSpec::Given {
                    mean: g.mean,
                    std: g.std,
                })
            }
        }
        d.deserialize_any(V)
    }
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
    /// Shape of csv images: `[height, width]` (one channel) or `[channels, height, width]`.
    #[serde(default)]
    pub image_shape: Option<Vec<usize>>,
    /// CIFAR-100: `fine` (100 classes, the default) or `coarse` (20 superclasses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<CifarLabel>,
    /// Per-channel standardisation applied once at load (default off).
    #[serde(default, skip_serializing_if = "NormalizeSpec::is_off")]
    pub normalize: NormalizeSpec,
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

impl DataConfig {
    /// `image_shape` as an [`ImageShape`]: `[h, w]` is one channel, `[c, h, w]` is `c`; an error
    /// (naming `data.image_shape`) for any other length or a zero size.
    pub fn csv_image_shape(&self) -> Result<Option<ImageShape>, crate::Invalid> {
        let Some(dims) = &self.image_shape else {
            return Ok(None);
        };
        let shape = match dims[..] {
            [h, w] => ImageShape::grey(h, w),
            [c, h, w] => ImageShape::new(c, h, w),
            _ => {
                return Err(crate::Invalid::new(
                    "data.image_shape",
                    format!(
                        "must be [height, width] or [channels, height, width], got {} sizes",
                        dims.len()
                    ),
                ))
            }
        };
        if dims.contains(&0) {
            return Err(crate::Invalid::new(
                "data.image_shape",
                format!("sizes must be positive, got {dims:?}"),
            ));
        }
        Ok(Some(shape))
    }
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
