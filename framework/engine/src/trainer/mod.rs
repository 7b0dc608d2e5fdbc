//! The training loop of one trial: stream the tasks through the network, call the strategy's
//! hooks, and evaluate every task after each one.
//!
//! The loop reads as the data flow of `docs/architecture.md`:
//!
//! - [`run_trial_resumable`] builds the trial's state ([`trial::Trial`]: network, optimizer,
//!   expert pool, strategy RNG, step counter, measurements) and runs it;
//! - `Trial::run` (module `trial`): `on_model_built`, the untrained network's accuracies, a
//!   resume from a checkpoint, then per task: the task boundary (`start_task`), the optimizer
//!   steps (`train_task`, module `steps`), `on_task_end`, the evaluation row (module
//!   `evaluate`), the diagnostics, the strategy's reports and a checkpoint (module `resume`).

mod evaluate;
mod resume;
mod steps;
mod trial;

use indicatif::ProgressBar;

use clef_backend::{build_network, Optimizer};
use clef_data::scenario::Scenario;
use clef_data::seed::derive_seed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use evaluate::argmax;

use crate::experts::Experts;
use crate::measurements::Measurements;
use crate::spec::{Budget, DiagnosticsConfig, ModelConfig, TrainConfig};
use crate::strategy::{DataMode, Strategy};

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialStatus {
    /// Every task trained and evaluated.
    Completed,
    /// The loss or a parameter became NaN or infinite.
    Diverged {
        /// Task during which it happened.
        task: usize,
        /// Optimizer step (within the trial) at which it happened.
        step: u64,
    },
    /// A strategy hook or the backend failed.
    Failed(String),
}

/// Everything measured in one trial, and how it ended.
#[derive(Debug, Clone)]
pub struct TrialOutcome {
    /// How the trial ended.
    pub status: TrialStatus,
    /// What it measured (on failure: up to the failure).
    pub measured: Measurements,
    /// Name of the backend that ran it.
    pub backend: String,
    /// Number of scalar parameters of the network (of the expert pool, when a strategy used it).
    pub num_params: usize,
}

impl TrialOutcome {
    /// Training throughput in rows per second: the rows trained on over the time of the
    /// training loops and the strategy's end-of-task work together.
    pub fn samples_per_second(&self) -> f64 {
        let m = &self.measured;
        let seconds = m.train_seconds + m.task_end_seconds;
        if seconds > 0.0 {
            m.samples_seen as f64 / seconds
        } else {
            0.0
        }
    }
}

/// What a trial runs with: the network, the training recipe and the diagnostics (the
/// `[model]`, `[train]` and `[diagnostics]` tables of a config).
#[derive(Debug, Clone, Copy)]
pub struct TrialSpec<'a> {
    /// The network.
    pub model: &'a ModelConfig,
    /// Optimizer, budget, batching.
    pub train: &'a TrainConfig,
    /// Loss-of-plasticity diagnostics.
    pub diagnostics: &'a DiagnosticsConfig,
}

/// Number of optimizer steps a task of `rows` training samples takes.
pub fn steps_for(budget: Budget, rows: usize, batch: usize) -> u64 {
    match budget {
        Budget::Epochs(e) => (e * rows.div_ceil(batch)) as u64,
        Budget::Iterations(i) => i as u64,
    }
}

/// Total optimizer steps of a trial (for progress bars).
pub fn total_steps(cfg: TrialSpec<'_>, scenario: &Scenario, mode: DataMode) -> u64 {
    let mut cumulative = 0;
    scenario
        .tasks
        .iter()
        .map(|t| {
            cumulative += t.train.len();
            let rows = match mode {
                DataMode::CurrentTask => t.train.len(),
                DataMode::Cumulative => cumulative,
            };
            steps_for(cfg.train.budget(), rows, cfg.train.batch_size)
        })
        .sum()
}

/// Runs one trial. Never panics on bad numbers or strategy errors: they end up in the status.
///
/// The trial runs on a thread of rayon's pool ([`clef_backend::pool::install`]), so that the
/// backend's and the optimizer's two-way splits are cheap work-stealing joins; strategy hooks
/// run on that thread too.
pub fn run_trial(
    cfg: TrialSpec<'_>,
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    seed: u64,
    progress: &ProgressBar,
) -> TrialOutcome {
    run_trial_resumable(cfg, scenario, strategy, seed, progress, None)
}

/// Where a trial keeps its checkpoint ([`crate::checkpoint`]) and which trial it is.
#[derive(Debug, Clone)]
pub struct CheckpointTarget {
    /// The checkpoint file.
    pub path: std::path::PathBuf,
    /// The trial's identity (its id in the store); a checkpoint of another trial is ignored.
    pub key: String,
}

/// [`run_trial`] with checkpoints: after every task but the last the trial's state goes to
/// `target` (atomically); if `target` already holds a checkpoint of this trial, the trial
/// resumes after its last finished task and ends with exactly the result of an
/// uninterrupted run. The caller removes the checkpoint ([`crate::checkpoint::remove`]) once
/// the trial's record is stored, so a kill in between costs a re-run of the last task, never
/// a result. A checkpoint that cannot be read is ignored with a warning (the trial starts
/// afresh); one that cannot be written (e.g. a strategy without `save_state` support) stops
/// further checkpoints of the trial with a warning, never the trial.
pub fn run_trial_resumable(
    cfg: TrialSpec<'_>,
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    seed: u64,
    progress: &ProgressBar,
    target: Option<&CheckpointTarget>,
) -> TrialOutcome {
    clef_backend::pool::install(|| run_trial_here(cfg, scenario, strategy, seed, progress, target))
}

/// [`run_trial_resumable`] on the calling thread.
fn run_trial_here(
    cfg: TrialSpec<'_>,
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    seed: u64,
    progress: &ProgressBar,
    target: Option<&CheckpointTarget>,
) -> TrialOutcome {
    let mut out = TrialOutcome {
        status: TrialStatus::Completed,
        measured: Measurements::default(),
        backend: String::new(),
        num_params: 0,
    };
    let spec = match cfg.model.model_spec(
        image_shape(scenario),
        scenario.input_dim(),
        scenario.num_outputs,
    ) {
        Ok(s) => s,
        Err(e) => {
            out.status = TrialStatus::Failed(format!("model: {e}"));
            return out;
        }
    };
    out.num_params = spec.num_params();
    // The expert pool (MLP experts on any backbone, ConvNet experts on a convolutional one).
    let experts = Experts::new(&spec, derive_seed(seed, "init"), scenario.tasks.len());
    let init_seed = derive_seed(seed, "init");
    let net = match build_network(&spec, init_seed) {
        Ok(n) => n,
        Err(e) => {
            out.status = TrialStatus::Failed(format!("building the network: {e}"));
            return out;
        }
    };
    out.backend = net.backend_name().to_string();
    let mut trial = trial::Trial {
        cfg,
        scenario,
        seed,
        init_seed,
        shuffle_seed: derive_seed(seed, "shuffle"),
        progress,
        target: target.cloned(),
        opt: Optimizer::new(cfg.train.optimizer_spec(), net.params()),
        net,
        experts,
        rng: ChaCha8Rng::seed_from_u64(derive_seed(seed, "strategy")),
        step: 0,
        measured: Measurements::default(),
        cotangent: Vec::new(),
    };
    if let Err(e) = trial.run(strategy) {
        out.status = e;
    }
    if trial.experts.enabled() {
        out.num_params = trial.experts.total_params(scenario);
    }
    out.measured = trial.measured;
    out
}

/// The image shape of the scenario's inputs, if they are images (the data set's
/// [`clef_data::ImageShape`] as the backend's).
pub fn image_shape(scenario: &Scenario) -> Option<clef_backend::ImageShape> {
    let s = scenario.image_shape()?;
    (s.len() == scenario.input_dim()).then_some(clef_backend::ImageShape {
        channels: s.channels,
        height: s.height,
        width: s.width,
    })
}

/// A hook failure, turned into a trial status: the strategy words the message
/// ([`Strategy::failure_message`]).
fn hook_err(strategy: &dyn Strategy, hook: &str, e: anyhow::Error) -> TrialStatus {
    TrialStatus::Failed(strategy.failure_message(hook, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_per_budget() {
        assert_eq!(steps_for(Budget::Epochs(2), 10, 4), 6);
        assert_eq!(steps_for(Budget::Iterations(7), 10, 4), 7);
    }
}
