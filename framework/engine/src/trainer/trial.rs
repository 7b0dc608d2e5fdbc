//! The trial's state and its walk through the task stream: the task boundaries, in order.

use std::collections::BTreeMap;

use indicatif::ProgressBar;
use rand_chacha::ChaCha8Rng;

use clef_backend::{Network, Optimizer};
use clef_data::scenario::{Scenario, Task};

use super::steps::TrainingPool;
use super::{hook_err, steps_for, CheckpointTarget, TrialSpec, TrialStatus};
use crate::experts::Experts;
use crate::measurements::Measurements;
use crate::strategy::{Boundary, Ctx, DataMode, Strategy};

/// Everything one trial holds while it runs: what it was given (spec, stream, seeds, where its
/// checkpoints go) and what it changes (network, optimizer, expert pool, strategy RNG, step
/// counter, measurements). The strategy is passed to each phase, not held, so that a hook's
/// [`Ctx`] can borrow the state while the strategy is borrowed too.
pub(super) struct Trial<'a> {
    /// The `[model]`, `[train]` and `[diagnostics]` tables.
    pub cfg: TrialSpec<'a>,
    /// The task stream.
    pub scenario: &'a Scenario,
    /// The trial seed.
    pub seed: u64,
    /// Seed of the network's initialisation (the joint reference re-initialises from it).
    pub init_seed: u64,
    /// Seed of the batch order (per task and epoch).
    pub shuffle_seed: u64,
    /// Advanced by one per optimizer step.
    pub progress: &'a ProgressBar,
    /// Where checkpoints go (`None`: no checkpoints, or writing them failed).
    pub target: Option<CheckpointTarget>,
    /// The selected network (expert).
    pub net: Box<dyn Network>,
    /// Its optimizer.
    pub opt: Optimizer,
    /// The expert pool (inactive until a strategy uses it).
    pub experts: Experts,
    /// The strategy's RNG stream.
    pub rng: ChaCha8Rng,
    /// Optimizer steps taken in the trial.
    pub step: u64,
    /// What the trial measured so far.
    pub measured: Measurements,
    /// The cotangent buffer of a strategy's own loss (reused across steps).
    pub cotangent: Vec<f32>,
}

impl Trial<'_> {
    /// What a hook of task `task` may touch.
    pub fn ctx(&mut self, task: usize) -> Ctx<'_> {
        Ctx {
            net: &mut self.net,
            experts: &mut self.experts,
            optimizer: &mut self.opt,
            scenario: self.scenario,
            rng: &mut self.rng,
            task,
            step: self.step,
            seed: self.seed,
            boundary: None,
            reinits: 0,
        }
    }

    /// The context of `on_task_start` / `on_task_end` of task `task`.
    pub fn boundary_ctx(&mut self, task: usize, at: Boundary) -> Ctx<'_> {
        Ctx {
            boundary: Some(at),
            ..self.ctx(task)
        }
    }

    /// The whole trial: the model is built, the untrained network evaluated, a checkpoint
    /// resumed if there is one, then every task is trained, evaluated and checkpointed.
    pub fn run(&mut self, strategy: &mut dyn Strategy) -> Result<(), TrialStatus> {
        strategy
            .on_model_built(&mut self.ctx(0))
            .map_err(|e| hook_err(strategy, "on_model_built", e))?;
        self.evaluate_untrained()?;
        let resume_at = match self.resume(strategy) {
            Ok(Some(tasks_done)) => tasks_done,
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!("{e}; the trial starts afresh");
                0
            }
        };
        let sc = self.scenario;
        let mut pool = TrainingPool::new(strategy.data_mode());
        for (ti, task) in sc.tasks.iter().enumerate() {
            if ti < resume_at {
                // Done before the checkpoint: only the training pool of the joint reference
                // and the progress bar need it.
                pool.enter(ti, task);
                self.progress.inc(steps_for(
                    self.cfg.train.budget(),
                    pool.len(),
                    self.cfg.train.batch_size,
                ));
                continue;
            }
            self.start_task(ti, task, pool.mode(), strategy)?;
            pool.enter(ti, task);
            self.train_task(ti, &pool, strategy)?;
            self.end_task(ti, task, strategy)?;
            if ti + 1 < sc.tasks.len() {
                self.checkpoint(ti + 1, strategy);
            }
        }
        Ok(())
    }

    /// The task boundary before task `ti`: the joint reference restarts from a fresh network,
    /// the optimizer resets (if configured), the expert pool gives the task its expert and a
    /// fresh head, and the strategy's `on_task_start` runs.
    fn start_task(
        &mut self,
        ti: usize,
        task: &Task,
        mode: DataMode,
        strategy: &mut dyn Strategy,
    ) -> Result<(), TrialStatus> {
        if mode == DataMode::Cumulative && ti > 0 {
            // Fresh start on the union of all tasks so far.
            let fresh = clef_backend::ParamStore::init(self.net.spec(), self.init_seed);
            self.net.params_mut().copy_values_from(&fresh);
            self.opt.reset();
            strategy
                .on_model_built(&mut self.ctx(ti))
                .map_err(|e| hook_err(strategy, "on_model_built", e))?;
        } else if self.cfg.train.reset_optimizer {
            self.opt.reset();
        }
        if self.experts.enabled() {
            // The task starts on the selected expert with a head of its own.
            self.experts
                .start_task(ti, &mut self.net, &mut self.opt)
                .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
        }
        strategy
            .on_task_start(&mut self.boundary_ctx(ti, Boundary::Start), task)
            .map_err(|e| hook_err(strategy, "on_task_start", e))
    }

    /// The task boundary after task `ti` has trained: `on_task_end`, the accuracy-matrix row,
    /// the diagnostics (if enabled) and the strategy's reports of the task.
    fn end_task(
        &mut self,
        ti: usize,
        task: &Task,
        strategy: &mut dyn Strategy,
    ) -> Result<(), TrialStatus> {
        let t_end = std::time::Instant::now();
        strategy
            .on_task_end(&mut self.boundary_ctx(ti, Boundary::End), task)
            .map_err(|e| hook_err(strategy, "on_task_end", e))?;
        self.measured.task_end_seconds += t_end.elapsed().as_secs_f64();
        let row = self.evaluate_row(ti, strategy)?;
        tracing::debug!(task = ti, ?row, "evaluated");
        self.measured.accuracy_matrix.push(row);
        if self.cfg.diagnostics.enabled {
            let d = self.diagnose(ti, strategy)?;
            tracing::debug!(task = ti, ?d, "diagnostics");
            self.measured.diagnostics.push(d);
        }
        let reports = &mut self.measured.strategy_metrics;
        reports.resize_with(ti + 1, BTreeMap::new);
        for (task, key, value) in strategy.take_reports() {
            // Reports name the task whose hook made them (never a later one).
            if let Some(m) = reports.get_mut(task) {
                m.insert(key, value);
            }
        }
        Ok(())
    }
}
