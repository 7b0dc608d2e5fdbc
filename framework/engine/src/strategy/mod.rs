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
//! The plugin ABI exposes exactly these hooks to dynamically loaded strategies
//! (`clef_host::PluginStrategy` adapts a loaded plugin to this trait); built-in
//! strategies (`finetune`, `joint`) implement the trait directly.

mod builtin;
pub mod hparams;
mod provider;
mod services;

pub use builtin::{builtin, builtin_names, Finetune, Joint};
pub use hparams::{HParamKind, HParamSpec, HValue};
pub use provider::{BuiltinStrategies, StrategyProvider, StrategySchema};
pub use services::ServiceError;

use rand_chacha::ChaCha8Rng;

use clef_backend::{Network, Optimizer};

use crate::experts::Experts;
use clef_data::scenario::{Scenario, Task};

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
    /// The selected network (expert): parameters, gradients, forward, features, vjp. Boxed so
    /// that selecting another expert of [`Ctx::experts`] can swap it in place.
    pub net: &'a mut Box<dyn Network>,
    /// The trial's pool of expert networks (inactive until a strategy uses it).
    pub experts: &'a mut Experts,
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
    /// The trial seed (strategies should draw randomness from `rng`).
    pub seed: u64,
    /// The task boundary the hook runs at (`on_task_start` / `on_task_end`), `None` in every
    /// other hook: [`Ctx::reinit_network`] and [`Ctx::train_step`] need one.
    pub boundary: Option<Boundary>,
    /// Re-initialisations done with this context (each draws a fresh seed).
    pub reinits: u64,
}

/// The task boundary a hook runs at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// `on_task_start`.
    Start,
    /// `on_task_end`.
    End,
}

/// A training mini-batch as the loss will see it.
///
/// Class masks: every row drawn from the task stream uses the batch's training mask
/// ([`Batch::mask`], shared by those rows). Rows appended with their own masks (e.g. replayed
/// samples keeping their own task-IL head) switch the batch to per-row masks
/// ([`Batch::row_masks`]), which then override `mask` for every row. Use
/// [`Batch::append_rows`] to add rows so the two stay consistent.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `rows * dim` inputs.
    pub x: Vec<f32>,
    /// One target output unit per row.
    pub targets: Vec<usize>,
    /// The training mask over the output units (`None` = all units): the mask of the current
    /// task's rows, and of appended rows that bring no mask of their own.
    pub mask: Option<Vec<bool>>,
    /// Per-row masks (`rows * num_outputs`, row-major) once rows with masks of their own were
    /// appended; when set, the loss uses these instead of `mask`.
    pub row_masks: Option<Vec<bool>>,
    /// Rows drawn from the current task's stream (the first `current_rows`); rows after them
    /// were added by the strategy (e.g. replay).
    pub current_rows: usize,
}

impl Batch {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.targets.len()
    }

    /// The mask the loss uses: per-row masks if any row brought its own, else the shared mask.
    pub fn loss_mask(&self) -> Option<&[bool]> {
        self.row_masks.as_deref().or(self.mask.as_deref())
    }

    /// The class mask of row `r` (`None` = all units).
    pub fn row_mask(&self, r: usize, num_outputs: usize) -> Option<&[bool]> {
        match &self.row_masks {
            Some(m) => m.get(r * num_outputs..(r + 1) * num_outputs),
            None => self.mask.as_deref(),
        }
    }

    /// Appends rows: `x` holds `targets.len()` rows of inputs; `masks` is `None` (the rows use
    /// the training mask [`Batch::mask`]) or `targets.len() * num_outputs` flags, one mask per
    /// row.
    ///
    /// With masks, the batch switches to per-row masks: earlier rows keep the mask they had.
    /// In an unmasked batch (domain-IL, `mask == None`) masks that enable every unit change
    /// nothing; any other mask is honoured (earlier rows get an all-`true` mask).
    ///
    /// # Panics
    /// If `masks` has the wrong length (callers check it first).
    pub fn append_rows(
        &mut self,
        x: &[f32],
        targets: &[usize],
        masks: Option<&[bool]>,
        num_outputs: usize,
    ) {
        let rows = targets.len();
        self.x.extend_from_slice(x);
        let masks = match masks {
            Some(m) => {
                assert_eq!(m.len(), rows * num_outputs, "append_rows: mask length");
                let redundant = self.row_masks.is_none()
                    && match &self.mask {
                        None => m.iter().all(|&b| b),
                        Some(shared) => m
                            .chunks(num_outputs.max(1))
                            .all(|row| row == shared.as_slice()),
                    };
                (!redundant).then_some(m)
            }
            None => None,
        };
        if masks.is_some() && self.row_masks.is_none() {
            // Switch to per-row masks: every existing row keeps the mask it had.
            let existing = self.targets.len();
            let mut per_row = Vec::with_capacity((existing + rows) * num_outputs);
            for _ in 0..existing {
                match &self.mask {
                    Some(m) => per_row.extend_from_slice(m),
                    None => per_row.extend(std::iter::repeat_n(true, num_outputs)),
                }
            }
            self.row_masks = Some(per_row);
        }
        if let Some(per_row) = &mut self.row_masks {
            match masks {
                Some(m) => per_row.extend_from_slice(m),
                None => {
                    for _ in 0..rows {
                        match &self.mask {
                            Some(m) => per_row.extend_from_slice(m),
                            None => per_row.extend(std::iter::repeat_n(true, num_outputs)),
                        }
                    }
                }
            }
        }
        self.targets.extend_from_slice(targets);
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

    /// True if the strategy replaces the training loss ([`Strategy::loss`]).
    fn custom_loss(&self) -> bool {
        false
    }

    /// The training loss of `batch` (only called when [`Strategy::custom_loss`]): given the
    /// batch's training-mode `logits` (`rows * num_outputs`), write `d loss / d logits` into
    /// `cotangent` (same length, zeroed) and return the loss; the trainer back-propagates it.
    fn loss(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _batch: &Batch,
        _logits: &[f32],
        _cotangent: &mut [f32],
    ) -> StrategyResult<f32> {
        anyhow::bail!("strategy `{}` declares no loss", self.name())
    }

    /// True if the strategy scores evaluation inputs itself ([`Strategy::predict`]).
    fn predicts(&self) -> bool {
        false
    }

    /// Scores of `rows` evaluation inputs `x` (one per output unit, into `out`, `rows *
    /// num_outputs`; the highest-scoring unit of the evaluation mask is the prediction). Only
    /// called when [`Strategy::predicts`], between `before_eval` and `after_eval`; `task` as in
    /// [`Strategy::before_eval`].
    fn predict(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _task: Option<usize>,
        _x: &[f32],
        _rows: usize,
        _out: &mut [f32],
    ) -> StrategyResult {
        anyhow::bail!("strategy `{}` does not predict", self.name())
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

    /// Numbers the strategy reported since the last call, as `(task, key, value)` in report
    /// order (plugins report them with the `report` host service). The trainer stores them in
    /// the trial's `strategy_metrics`; a later value of the same key and task replaces an
    /// earlier one.
    fn take_reports(&mut self) -> Vec<(usize, String, f64)> {
        Vec::new()
    }

    /// The trial's failure message for error `e` of hook `hook`. The default names the
    /// strategy and the hook; an adapter whose errors already name both (the plugin host's:
    /// "plugin `ewc` panicked in after_backward: ...") returns them as they are.
    fn failure_message(&self, hook: &str, e: &anyhow::Error) -> String {
        format!("strategy `{}` failed in {hook}: {e:#}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(mask: Option<Vec<bool>>) -> Batch {
        Batch {
            x: vec![0.0; 4],
            targets: vec![0, 1],
            mask,
            row_masks: None,
            current_rows: 2,
        }
    }

    #[test]
    fn rows_without_masks_keep_the_shared_mask() {
        let mut b = batch(Some(vec![true, true, false]));
        b.append_rows(&[1.0, 1.0], &[1], None, 3);
        assert_eq!(b.rows(), 3);
        assert!(b.row_masks.is_none());
        assert_eq!(b.loss_mask(), Some(&[true, true, false][..]));
        // A mask equal to the shared one changes nothing either.
        b.append_rows(&[1.0, 1.0], &[0], Some(&[true, true, false]), 3);
        assert!(b.row_masks.is_none());
    }

    #[test]
    fn rows_with_their_own_masks_switch_to_per_row_masks() {
        let mut b = batch(Some(vec![true, true, false]));
        b.append_rows(&[1.0, 1.0], &[2], Some(&[false, false, true]), 3);
        b.append_rows(&[1.0, 1.0], &[0], None, 3);
        assert_eq!(b.rows(), 4);
        let m = b.loss_mask().unwrap();
        assert_eq!(m.len(), 12);
        assert_eq!(b.row_mask(0, 3), Some(&[true, true, false][..]));
        assert_eq!(b.row_mask(2, 3), Some(&[false, false, true][..]));
        assert_eq!(b.row_mask(3, 3), Some(&[true, true, false][..]));
        assert_eq!(b.x.len(), 8);
    }

    #[test]
    fn unmasked_batches_ignore_all_true_masks_and_honour_others() {
        let mut b = batch(None);
        b.append_rows(&[1.0, 1.0], &[2], Some(&[true, true, true]), 3);
        assert!(b.loss_mask().is_none());
        b.append_rows(&[1.0, 1.0], &[2], Some(&[false, false, true]), 3);
        assert_eq!(b.row_mask(0, 3), Some(&[true, true, true][..]));
        assert_eq!(b.row_mask(3, 3), Some(&[false, false, true][..]));
        assert_eq!(b.loss_mask().unwrap().len(), 12);
    }
}
