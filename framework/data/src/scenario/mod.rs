//! Task streams built from a data set: class splits, permuted inputs, rotated inputs and
//! random-label tasks.
//!
//! Tasks do not copy the data: each holds indices into the shared [`TrainTest`], its labels
//! mapped to output units, and an input [`Transform`] (identity, pixel permutation or rotation)
//! applied when a batch is gathered. A ten-task permuted stream over Fashion-MNIST therefore costs
//! indices, not ten copies of the images.

mod build;
mod transform;

pub use build::build;
pub use transform::Transform;

use std::sync::Arc;

use crate::spec::Setting;
use crate::{Dataset, TrainTest};

/// One split (train or test) of a task.
#[derive(Debug, Clone)]
pub struct TaskSplit {
    /// Rows of the underlying data set, in order.
    pub indices: Vec<usize>,
    /// Target output unit of each row (already mapped for the setting).
    pub targets: Vec<usize>,
}

impl TaskSplit {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// One task of the stream.
#[derive(Debug, Clone)]
pub struct Task {
    /// 0-based position in the stream.
    pub id: usize,
    /// Short description, e.g. `classes 0,1` or `permutation 3`.
    pub name: String,
    /// Output units this task's labels use (its "head" in task-IL).
    pub units: Vec<usize>,
    /// Training samples (rows of `data.train`).
    pub train: TaskSplit,
    /// Test samples (rows of `data.test`, or of `data.train` for random-label tasks).
    pub test: TaskSplit,
    /// True if `test` indexes the training set (random-label tasks measure memorisation).
    pub test_from_train: bool,
    /// Input transform of this task.
    pub transform: Arc<Transform>,
}

/// A built task stream for one setting.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Description, e.g. `class-split(digits, 5x2)`.
    pub name: String,
    /// Evaluation/training setting.
    pub setting: Setting,
    /// The tasks in order.
    pub tasks: Vec<Task>,
    /// Number of logits of the network.
    pub num_outputs: usize,
    /// The shared data.
    pub data: Arc<TrainTest>,
}

impl Scenario {
    /// Features per sample.
    pub fn input_dim(&self) -> usize {
        self.data.train.dim
    }

    /// The image shape of the inputs, if the data set's samples are images. Every task's
    /// transform keeps it: a rotation turns each channel, a pixel permutation keeps the size
    /// (but a permuted image is no longer spatially meaningful).
    pub fn image_shape(&self) -> Option<crate::ImageShape> {
        self.data.train.image_shape
    }

    /// Class mask used for training on `task` (and for evaluating it after training `task`):
    /// task-IL: the task's units; class-IL: every unit of tasks `0..=task`; domain-IL: none.
    pub fn train_mask(&self, task: usize) -> Option<Vec<bool>> {
        match self.setting {
            Setting::TaskIl => Some(self.mask_of(self.tasks[task].units.iter().copied())),
            Setting::ClassIl => Some(
                self.mask_of(
                    self.tasks[..=task]
                        .iter()
                        .flat_map(|t| t.units.iter().copied()),
                ),
            ),
            Setting::DomainIl => None,
        }
    }

    /// Class mask for evaluating task `eval_task` after training through task `trained`
    /// (`None` = the untrained model): task-IL masks to the evaluated task's units; class-IL to
    /// every unit seen so far (all units for the untrained model); domain-IL none.
    pub fn eval_mask(&self, trained: Option<usize>, eval_task: usize) -> Option<Vec<bool>> {
        match (self.setting, trained) {
            (Setting::TaskIl, _) => Some(self.mask_of(self.tasks[eval_task].units.iter().copied())),
            (Setting::ClassIl, Some(t)) => self.train_mask(t),
            (Setting::ClassIl, None) | (Setting::DomainIl, _) => None,
        }
    }

    /// Mask of every unit of tasks `0..=task` (the joint reference trains on this in task-IL
    /// and class-IL); `None` in domain-IL.
    pub fn seen_mask(&self, task: usize) -> Option<Vec<bool>> {
        match self.setting {
            Setting::DomainIl => None,
            _ => Some(
                self.mask_of(
                    self.tasks[..=task]
                        .iter()
                        .flat_map(|t| t.units.iter().copied()),
                ),
            ),
        }
    }

    fn mask_of(&self, units: impl Iterator<Item = usize>) -> Vec<bool> {
        let mut m = vec![false; self.num_outputs];
        for u in units {
            m[u] = true;
        }
        m
    }

    /// The data set a task split indexes.
    pub fn source(&self, task: &Task, test: bool) -> &Dataset {
        if test && !task.test_from_train {
            &self.data.test
        } else {
            &self.data.train
        }
    }

    /// Gathers rows `rows` of a task split (positions within the split) into `x` (features after
    /// the task's transform) and `y` (targets), appending to both.
    pub fn gather(
        &self,
        task: &Task,
        test: bool,
        rows: &[usize],
        x: &mut Vec<f32>,
        y: &mut Vec<usize>,
    ) {
        let split = if test { &task.test } else { &task.train };
        let src = self.source(task, test);
        let dim = src.dim;
        let start = x.len();
        x.resize(start + rows.len() * dim, 0.0);
        for (k, &r) in rows.iter().enumerate() {
            let out = &mut x[start + k * dim..start + (k + 1) * dim];
            task.transform.apply(src.row(split.indices[r]), out);
            y.push(split.targets[r]);
        }
    }
}
