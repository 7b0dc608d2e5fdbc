//! `gdumb`: GDumb, a greedy class-balanced sampler and a "dumb" learner retrained from scratch
//! on the memory only (Prabhu, Torr and Dokania 2020, "GDumb: A Simple Approach that
//! Questions Our Progress in Continual Learning", ECCV; official code
//! <https://github.com/drimpossible/GDumb>; Mammoth's `models/gdumb.py`).
//!
//! # What it does
//!
//! * **Sampler** (`before_batch`): every current-task row of the stream (the first
//!   `current_rows` of the batch, as delivered: after the task's transform, augmented if
//!   `[train] augment` is set) is offered to the SDK's [`ClassBalanced`] memory of
//!   `memory_size` rows (the paper's Algorithm 1): while the memory is not full the row is
//!   stored; once full, a row of class `y` is stored only if `y` holds fewer than
//!   `memory_size / |Y|` rows (`Y`: the classes seen so far), replacing a uniformly drawn row of
//!   the largest class.
//! * **Learner** (`on_task_end`, before the task's evaluation): `reinit` (a fresh seeded draw
//!   of the network's initialisation, optimizer state reset), then `epochs` passes over the
//!   whole memory in minibatches of `batch_size` rows (a fresh shuffle per epoch from a
//!   [`SplitMix64`] seeded by one draw of the plugin's RNG; the last minibatch of an epoch
//!   may be smaller), one `train_step` of the trial's optimizer per minibatch. Each row keeps
//!   its own task: task-IL rows train with their own task's head (`task_mask(task)`),
//!   class-IL rows with the current training mask (every class seen so far), domain-IL rows
//!   with every output.
//! * **The stream never trains GDumb's learner.** By default (`train_on_stream = true`) the
//!   trainer's steps on the stream go through — plain fine-tuning, which the next `reinit`
//!   throws away — so the accuracy matrix is GDumb's while the record's online accuracy and
//!   `collapsed` flag describe that discarded network. With `train_on_stream = false` the
//!   network is frozen between task ends instead. The first `before_batch` after a task end (or after a resume)
//!   copies every tensor (batch-norm buffers included); every `after_step` writes that copy
//!   back, undoing the optimizer's step on the stream batch. So the network the trainer runs
//!   on the stream is always the learner GDumb last fitted (at random initialisation during
//!   the first task), and the record's online accuracy is that learner's accuracy on the
//!   incoming rows before it has been retrained on them (in class-IL 0 on every task after
//!   the first: its new classes were never trained). The record's `collapsed` flag, which
//!   watches the stream's training, is then set on every task: by design, not a failure
//!   (`fit_accuracy` below is the learner's own check). With `train_on_stream = true` the
//!   steps go through (plain fine-tuning, thrown away by the next `reinit`): the same
//!   accuracy matrix, but online accuracy and `collapsed` describe that discarded network.
//!
//! After fitting, it reports `memory_rows` (rows held), `fit_loss` (mean `train_step` loss of
//! the last epoch) and `fit_accuracy` (the fitted network's accuracy on the memory, argmax
//! over each row's training mask) for the task.
//!
//! # Hyperparameters and sources
//!
//! `memory_size` (500: the replay plugin's default and one of Buzzega et al. 2020's buffer
//! sizes; the paper's split-MNIST runs use 300, 500 and 4400), `epochs` (the paper uses 128
//! passes for MNIST and 256 elsewhere; clef's default, 16, keeps a zoo trial within seconds,
//! `docs/strategies.md` has the measurement), `batch_size` (16, the paper's), `schedule` and
//! `min_lr_factor` (the official code's warm-up epoch at 0.1·lr, then cosine annealing with
//! warm restarts, `T_0 = 1`, `T_mult = 2`, down to 0.0005/0.05 = 0.01·lr; applied as a factor
//! on the trial's rate by scaling each `train_step` update, [`schedule`]). The trial's
//! optimizer is used; no cutmix, no gradient clipping (the paper's MNIST runs use no cutmix
//! either).
//!
//! State: the whole strategy through serde (the hyperparameters and the memory, inputs as raw
//! floats); the task-mask cache, the batch copy and the frozen copy of the network are
//! rebuilt (`#[serde(skip)]`; checkpoints are written at task boundaries, where the network
//! is the fitted learner).

mod fit;
pub mod schedule;

use clef_sdk::memory::{ClassBalanced, Row};
use clef_sdk::prelude::*;
use clef_sdk::rng::SplitMix64;
use schedule::Schedule;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// capacity of the class-balanced memory in samples (Prabhu et al. 2020 split MNIST: 300, 500, 4400)
    #[hparam(default = 500, range = 1..=100_000_000)]
    pub memory_size: usize,
    /// passes over the memory when retraining at each task end (Prabhu et al. 2020: 128 on MNIST, 256 elsewhere)
    #[hparam(default = 16, range = 1..=100_000)]
    pub epochs: usize,
    /// rows per optimizer step when retraining on the memory (Prabhu et al. 2020: 16)
    #[hparam(default = 16, range = 1..=1_000_000)]
    pub batch_size: usize,
    /// learning-rate schedule of the fit, a factor on the trial's rate (Prabhu et al. 2020: warm-up, cosine with warm restarts)
    #[hparam(default = "cosine-restarts")]
    pub schedule: Schedule,
    /// lowest factor of the cosine schedule (Prabhu et al. 2020: 0.0005 / 0.05)
    #[hparam(default = 0.01, range = 0.0..=1.0)]
    pub min_lr_factor: f64,
    /// let the stream's optimizer steps train the network (discarded at the task end); false undoes them
    #[hparam(default = true)]
    pub train_on_stream: bool,
}

/// The GDumb strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct GDumb {
    memory_size: usize,
    epochs: usize,
    batch_size: usize,
    schedule: Schedule,
    min_lr_factor: f64,
    train_on_stream: bool,
    /// Created at the first batch (when the input width is known).
    memory: Option<ClassBalanced>,
    /// Task-IL class masks by task id (static for a trial, refetched after a resume).
    #[serde(skip)]
    masks: Vec<Option<Vec<bool>>>,
    /// The batch's current-task rows, copied out of the batch view.
    #[serde(skip)]
    incoming_x: Vec<f32>,
    #[serde(skip)]
    incoming_y: Vec<usize>,
    /// Every tensor of the fitted learner, written back after every stream step.
    #[serde(skip)]
    frozen: Option<Vec<Vec<f32>>>,
}

impl GDumb {
    /// The memory as it stands (`None` before the first batch).
    pub fn memory(&self) -> Option<&ClassBalanced> {
        self.memory.as_ref()
    }
}

impl Strategy for GDumb {
    const NAME: &'static str = "gdumb";
    const DESCRIPTION: &'static str =
        "GDumb: a greedy class-balanced memory; the network is retrained from scratch on it at \
         every task end";
    // Re-initialisation and training work on any backbone; the freeze copies every tensor.
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            memory_size: config.memory_size,
            epochs: config.epochs,
            batch_size: config.batch_size,
            schedule: config.schedule,
            min_lr_factor: config.min_lr_factor,
            train_on_stream: config.train_on_stream,
            memory: None,
            masks: Vec::new(),
            incoming_x: Vec::new(),
            incoming_y: Vec::new(),
            frozen: None,
        })
    }

    fn on_model_built(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        self.frozen = None;
        Ok(())
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if !self.train_on_stream && self.frozen.is_none() {
            self.frozen = Some(clef_sdk::anchor::capture(ctx)?);
        }
        let task = ctx.task_info()?.task;
        let (current, cols) = {
            let batch = ctx.batch()?;
            let (x, y) = batch.current()?;
            self.incoming_x.clear();
            self.incoming_x.extend_from_slice(x);
            self.incoming_y.clear();
            self.incoming_y.extend_from_slice(y);
            (batch.current_rows, batch.cols)
        };
        let memory = self
            .memory
            .get_or_insert_with(|| ClassBalanced::new(self.memory_size, cols, 0));
        ensure!(
            memory.store().dim() == cols,
            "the GDumb memory holds samples of {} features, the batch has {cols}",
            memory.store().dim()
        );
        for r in 0..current {
            let x = &self.incoming_x[r * cols..(r + 1) * cols];
            memory.offer(Row::new(x, self.incoming_y[r], task), |n| ctx.rng_below(n))?;
        }
        Ok(())
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let Some(frozen) = &self.frozen else {
            return Ok(());
        };
        ensure!(
            frozen.len() == ctx.param_count()?,
            "the network has {} tensors, GDumb's frozen copy {}",
            ctx.param_count()?,
            frozen.len()
        );
        for (i, v) in frozen.iter().enumerate() {
            let values = ctx.values(i)?;
            ensure!(
                values.len() == v.len(),
                "tensor {i} has {} values, GDumb's frozen copy {}",
                values.len(),
                v.len()
            );
            values.copy_from_slice(v);
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        self.frozen = None;
        ctx.reinit().context("re-initialising the network")?;
        let Some(memory) = self.memory.as_ref().filter(|m| !m.is_empty()) else {
            warn!(
                task = task.task,
                "the memory is empty: the network stays at its fresh initialisation"
            );
            return Ok(());
        };
        let mut rng = SplitMix64::from_ctx(ctx);
        let plan = fit::Plan {
            epochs: self.epochs,
            batch_size: self.batch_size,
            setting: task.setting,
            schedule: self.schedule,
            min_factor: self.min_lr_factor,
        };
        let fitted = fit::fit(ctx, memory, &plan, &mut self.masks, &mut rng)?;
        info!(
            task = task.task,
            rows = memory.len(),
            per_class = ?memory.store().per_class(),
            steps = fitted.steps,
            fit_loss = fitted.last_epoch_loss,
            fit_accuracy = fitted.accuracy,
            "retrained on the memory"
        );
        if ctx.can_report() {
            ctx.report("memory_rows", memory.len() as f64)?;
            ctx.report("fit_loss", fitted.last_epoch_loss)?;
            ctx.report("fit_accuracy", fitted.accuracy)?;
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(GDumb);

#[cfg(test)]
mod tests;
