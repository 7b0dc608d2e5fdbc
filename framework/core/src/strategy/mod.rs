//! The internal strategy interface: hooks the training loop calls, and the built-in strategies.
//!
//! A strategy sees the network (parameters, gradients, forward, features, vjp), the optimizer
//! state, the scenario and its own seeded RNG through [`Ctx`], and may edit the training batch.
//! The hook order for every task is:
//!
//! ```text
//! on_task_start ─► per batch: before_batch ─► (loss + backward) ─► after_backward
//!               ─► optimizer step ─► after_step ─► ... ─► on_task_end
//!               ─► per evaluated task: before_eval ─► (evaluation) ─► after_eval
//! ```
//!
//! The plugin ABI exposes exactly these hooks to dynamically loaded strategies; built-in
//! strategies (`finetune`, `joint`) implement the trait directly.

mod builtin;

pub use builtin::{builtin, builtin_names, Finetune, Joint};

use rand_chacha::ChaCha8Rng;

use clef_backend::{Network, Optimizer};

use crate::scenario::{Scenario, Task};

/// Error type of strategy hooks.
pub type StrategyResult<T = ()> = Result<T, anyhow::Error>;

/// Which training data a task sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// Only the current task's training data (the continual-learning setting).
    CurrentTask,
    /// The union of the training data of every task so far, with the network re-initialised at
    /// every task (the `joint` upper-bound reference).
    Cumulative,
}

/// What a hook may read and change.
pub struct Ctx<'a> {
    /// The network: parameters, gradients, forward, features, vjp.
    pub net: &'a mut dyn Network,
    /// The optimizer and its state buffers.
    pub optimizer: &'a mut Optimizer,
    /// The task stream (all tasks, their data and masks).
    pub scenario: &'a Scenario,
    /// The strategy's own RNG stream, seeded from the trial seed.
    pub rng: &'a mut ChaCha8Rng,
    /// Index of the current task.
    pub task: usize,
    /// Optimizer steps taken so far in the trial.
    pub step: u64,
}

/// A training mini-batch as the loss will see it.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `rows * dim` inputs.
    pub x: Vec<f32>,
    /// One target output unit per row.
    pub targets: Vec<usize>,
    /// Class mask over the output units shared by every row (`None` = all units).
    pub mask: Option<Vec<bool>>,
    /// Rows drawn from the current task's stream (the first `current_rows`); rows after them
    /// were added by the strategy (e.g. replay).
    pub current_rows: usize,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.targets.len()
    }
}

/// A continual-learning strategy. Every hook has a no-op default.
pub trait Strategy: Send {
    /// Name used in logs and results.
    fn name(&self) -> &str;

    /// Which data the trainer streams (default: the current task only).
    fn data_mode(&self) -> DataMode {
        DataMode::CurrentTask
    }

    /// Called once after the network is built (and again whenever it is re-initialised).
    fn on_model_built(&mut self, _ctx: &mut Ctx<'_>) -> StrategyResult {
        Ok(())
    }

    /// Called before the first batch of `task`.
    fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, _task: &Task) -> StrategyResult {
        Ok(())
    }

    /// Called with each batch before the forward pass; may append rows (replay).
    fn before_batch(&mut self, _ctx: &mut Ctx<'_>, _batch: &mut Batch) -> StrategyResult {
        Ok(())
    }

    /// Called after the loss gradient is in the gradient buffers, before the optimizer step:
    /// add gradient terms, mask gradients, or call `vjp` for output-space losses.
    fn after_backward(&mut self, _ctx: &mut Ctx<'_>, _loss: f32) -> StrategyResult {
        Ok(())
    }

    /// Called after the optimizer step: masks, projections, pruning.
    fn after_step(&mut self, _ctx: &mut Ctx<'_>) -> StrategyResult {
        Ok(())
    }

    /// Called after the last batch of `task`, before it is evaluated.
    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, _task: &Task) -> StrategyResult {
        Ok(())
    }

    /// Called before evaluating a task; `task` is its id when the setting reveals it
    /// (task-IL), `None` otherwise.
    fn before_eval(&mut self, _ctx: &mut Ctx<'_>, _task: Option<usize>) -> StrategyResult {
        Ok(())
    }

    /// Called after evaluating a task (undo what `before_eval` changed).
    fn after_eval(&mut self, _ctx: &mut Ctx<'_>) -> StrategyResult {
        Ok(())
    }

    /// The strategy's private state for checkpoints.
    fn save_state(&self) -> StrategyResult<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restores state written by [`Strategy::save_state`].
    fn load_state(&mut self, _state: &[u8]) -> StrategyResult {
        Ok(())
    }
}
