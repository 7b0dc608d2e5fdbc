//! The training loop of one trial: stream the tasks through the network, call the strategy's
//! hooks, and evaluate every task after each one.

use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_backend::{build_network, Inputs, Network, Optimizer};

use crate::checkpoint;
use clef_data::Setting;

use crate::experts::Experts;
use crate::plasticity::{self, TaskDiagnostics};
use crate::spec::{Budget, DiagnosticsConfig, ModelConfig, TrainConfig};
use crate::strategy::{Batch, Ctx, DataMode, Strategy};
use clef_data::scenario::Scenario;
use clef_data::seed::derive_seed;

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

/// Everything measured in one trial. On failure the matrix holds the rows finished before it.
#[derive(Debug, Clone)]
pub struct TrialOutcome {
    /// How the trial ended.
    pub status: TrialStatus,
    /// `accuracy_matrix[i][j]`: accuracy on task `j` after training task `i`.
    pub accuracy_matrix: Vec<Vec<f64>>,
    /// Accuracy on each task of the untrained network (for FWT).
    pub random_init_accuracy: Vec<f64>,
    /// Per task: mean accuracy on incoming batches before their update.
    pub online_accuracy: Vec<f64>,
    /// Per task: loss averaged over the task's steps.
    pub mean_loss: Vec<f64>,
    /// Seconds spent in the training loops (evaluation excluded).
    pub train_seconds: f64,
    /// Seconds spent evaluating.
    pub eval_seconds: f64,
    /// Training rows processed (including rows a strategy added).
    pub samples_seen: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// Name of the backend that ran it.
    pub backend: String,
    /// Number of scalar parameters of the network.
    pub num_params: usize,
    /// Per trained task: the numbers the strategy reported during it (key → value; see
    /// [`Strategy::take_reports`]). Empty maps when the strategy reports nothing.
    pub strategy_metrics: Vec<BTreeMap<String, f64>>,
    /// Per trained task: loss-of-plasticity diagnostics (empty unless `[diagnostics]` is
    /// enabled).
    pub diagnostics: Vec<TaskDiagnostics>,
}

impl TrialOutcome {
    /// Training throughput in rows per second.
    pub fn samples_per_second(&self) -> f64 {
        if self.train_seconds > 0.0 {
            self.samples_seen as f64 / self.train_seconds
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
    let t = scenario.tasks.len();
    let spec = cfg
        .model
        .mlp_spec(scenario.input_dim(), scenario.num_outputs);
    let mut out = TrialOutcome {
        status: TrialStatus::Completed,
        accuracy_matrix: Vec::with_capacity(t),
        random_init_accuracy: Vec::new(),
        online_accuracy: Vec::with_capacity(t),
        mean_loss: Vec::with_capacity(t),
        train_seconds: 0.0,
        eval_seconds: 0.0,
        samples_seen: 0,
        steps: 0,
        backend: String::new(),
        num_params: spec.num_params(),
        strategy_metrics: Vec::new(),
        diagnostics: Vec::new(),
    };
    let init_seed = derive_seed(seed, "init");
    let mut net = match build_network(&spec, init_seed) {
        Ok(n) => n,
        Err(e) => {
            out.status = TrialStatus::Failed(format!("building the network: {e}"));
            return out;
        }
    };
    out.backend = net.backend_name().to_string();
    let mut opt = Optimizer::new(cfg.train.optimizer_spec(), net.params());
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, "strategy"));
    let mut experts = Experts::new(&spec, init_seed, t);
    let mut loop_state = Loop {
        cfg,
        scenario,
        shuffle_seed: derive_seed(seed, "shuffle"),
        init_seed,
        seed,
        target: target.cloned(),
    };
    if let Err(e) = loop_state.run(
        &mut net,
        &mut opt,
        &mut experts,
        &mut rng,
        strategy,
        progress,
        &mut out,
    ) {
        out.status = e;
    }
    if experts.enabled() {
        out.num_params = experts.total_params(scenario);
    }
    out
}

struct Loop<'a> {
    cfg: TrialSpec<'a>,
    scenario: &'a Scenario,
    shuffle_seed: u64,
    init_seed: u64,
    seed: u64,
    /// Where checkpoints go (`None`: no checkpoints, or writing them failed).
    target: Option<CheckpointTarget>,
}

/// A hook failure, turned into a trial status. Plugin errors already name the plugin and the
/// hook (`plugin `x` panicked in after_backward: ...`) and are kept as they are.
fn hook_err(strategy: &dyn Strategy, hook: &str, e: anyhow::Error) -> TrialStatus {
    TrialStatus::Failed(strategy.failure_message(hook, &e))
}

impl Loop<'_> {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
        experts: &mut Experts,
        rng: &mut ChaCha8Rng,
        strategy: &mut dyn Strategy,
        progress: &ProgressBar,
        out: &mut TrialOutcome,
    ) -> Result<(), TrialStatus> {
        let sc = self.scenario;
        let seed = self.seed;
        let mut step: u64 = 0;
        macro_rules! ctx {
            ($task:expr) => {
                Ctx {
                    net: &mut *net,
                    experts: &mut *experts,
                    optimizer: &mut *opt,
                    scenario: sc,
                    rng: &mut *rng,
                    task: $task,
                    step,
                    seed,
                }
            };
        }
        strategy
            .on_model_built(&mut ctx!(0))
            .map_err(|e| hook_err(strategy, "on_model_built", e))?;
        // Accuracy of the untrained network, for forward transfer.
        let t0 = Instant::now();
        out.random_init_accuracy = (0..sc.tasks.len())
            .map(|j| self.evaluate(&mut **net, None, j))
            .collect::<Result<_, _>>()?;
        out.eval_seconds += t0.elapsed().as_secs_f64();

        let resume_at = match self.resume(net, opt, rng, strategy, out) {
            Ok(Some((tasks_done, at_step))) => {
                step = at_step;
                tasks_done
            }
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!("{e}; the trial starts afresh");
                0
            }
        };
        let mode = strategy.data_mode();
        let mut batch = Batch::default();
        let mut logits = Vec::new();
        let mut pool: Vec<(usize, usize)> = Vec::new();
        for (ti, task) in sc.tasks.iter().enumerate() {
            if ti < resume_at {
                // Done before the checkpoint: only the training pool of the joint reference
                // and the progress bar need it.
                if mode == DataMode::Cumulative {
                    pool.extend((0..task.train.len()).map(|p| (ti, p)));
                }
                let rows = if mode == DataMode::Cumulative {
                    pool.len()
                } else {
                    task.train.len()
                };
                progress.inc(steps_for(
                    self.cfg.train.budget(),
                    rows,
                    self.cfg.train.batch_size,
                ));
                continue;
            }
            if mode == DataMode::Cumulative && ti > 0 {
                // Fresh start on the union of all tasks so far.
                let fresh = clef_backend::ParamStore::init_mlp(net.spec(), self.init_seed);
                net.params_mut().copy_values_from(&fresh);
                opt.reset();
                strategy
                    .on_model_built(&mut ctx!(ti))
                    .map_err(|e| hook_err(strategy, "on_model_built", e))?;
            } else if self.cfg.train.reset_optimizer {
                opt.reset();
            }
            if experts.enabled() {
                // The task starts on the selected expert with a head of its own.
                experts
                    .start_task(ti, net, opt)
                    .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
            }
            strategy
                .on_task_start(&mut ctx!(ti), task)
                .map_err(|e| hook_err(strategy, "on_task_start", e))?;
            // Training pool: (task, position) pairs.
            if mode == DataMode::CurrentTask {
                pool.clear();
            }
            pool.extend((0..task.train.len()).map(|p| (ti, p)));
            // The joint reference trains on several tasks at once, so in task-IL it uses the
            // union of their heads (evaluation still masks to each task's own head).
            let mask = match mode {
                DataMode::CurrentTask => sc.train_mask(ti),
                DataMode::Cumulative => sc.seen_mask(ti),
            };
            let budget = self.cfg.train.budget();
            let bs = self.cfg.train.batch_size;
            let steps = steps_for(budget, pool.len(), bs);
            let mut order: Vec<usize> = Vec::new();
            let mut cursor = 0usize;
            let mut epoch = 0u64;
            let (mut correct, mut seen, mut loss_sum) = (0u64, 0u64, 0f64);
            let t_start = Instant::now();
            for _ in 0..steps {
                if cursor >= order.len() {
                    order = (0..pool.len()).collect();
                    let mut srng = ChaCha8Rng::seed_from_u64(derive_seed(
                        self.shuffle_seed,
                        &format!("task-{ti}-epoch-{epoch}"),
                    ));
                    order.shuffle(&mut srng);
                    cursor = 0;
                    epoch += 1;
                }
                let end = (cursor + bs).min(order.len());
                // One batch value reused across steps: its buffers keep their capacity.
                batch.x.clear();
                batch.targets.clear();
                batch.mask.clone_from(&mask);
                batch.row_masks = None;
                batch.current_rows = end - cursor;
                for &k in &order[cursor..end] {
                    let (tj, p) = pool[k];
                    sc.gather(&sc.tasks[tj], false, &[p], &mut batch.x, &mut batch.targets);
                }
                cursor = end;
                strategy
                    .before_batch(&mut ctx!(ti), &mut batch)
                    .map_err(|e| hook_err(strategy, "before_batch", e))?;
                net.params_mut().zero_grads();
                let rows = batch.rows();
                let inputs = Inputs::new(&batch.x, rows, sc.input_dim())
                    .map_err(|e| TrialStatus::Failed(format!("batch: {e}")))?;
                let loss = net
                    .loss_backward(inputs, &batch.targets, batch.loss_mask(), &mut logits)
                    .map_err(|e| TrialStatus::Failed(format!("backward: {e}")))?;
                if !loss.is_finite() {
                    return Err(TrialStatus::Diverged { task: ti, step });
                }
                // Online accuracy: the current task's rows, before the update, each with its
                // own mask.
                let c = sc.num_outputs;
                for r in 0..batch.current_rows {
                    let pred = argmax(&logits[r * c..(r + 1) * c], batch.row_mask(r, c));
                    correct += (pred == batch.targets[r]) as u64;
                }
                seen += batch.current_rows as u64;
                loss_sum += loss as f64;
                strategy
                    .after_backward(&mut ctx!(ti), loss)
                    .map_err(|e| hook_err(strategy, "after_backward", e))?;
                opt.step(net.params_mut());
                if experts.enabled() {
                    experts.after_step(&mut **net);
                }
                step += 1;
                strategy
                    .after_step(&mut ctx!(ti))
                    .map_err(|e| hook_err(strategy, "after_step", e))?;
                out.samples_seen += rows as u64;
                progress.inc(1);
            }
            if !net.params().all_finite() {
                return Err(TrialStatus::Diverged { task: ti, step });
            }
            out.train_seconds += t_start.elapsed().as_secs_f64();
            out.steps = step;
            out.online_accuracy.push(if seen > 0 {
                correct as f64 / seen as f64
            } else {
                0.0
            });
            out.mean_loss.push(if steps > 0 {
                loss_sum / steps as f64
            } else {
                0.0
            });
            strategy
                .on_task_end(&mut ctx!(ti), task)
                .map_err(|e| hook_err(strategy, "on_task_end", e))?;
            let t_eval = Instant::now();
            let mut row = Vec::with_capacity(sc.tasks.len());
            let routed = experts.enabled() && sc.setting == Setting::TaskIl;
            for j in 0..sc.tasks.len() {
                let id = (sc.setting == Setting::TaskIl).then_some(j);
                if routed {
                    experts
                        .for_eval(j, net, opt)
                        .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
                }
                strategy
                    .before_eval(&mut ctx!(ti), id)
                    .map_err(|e| hook_err(strategy, "before_eval", e))?;
                row.push(self.evaluate(&mut **net, Some(ti), j)?);
                strategy
                    .after_eval(&mut ctx!(ti))
                    .map_err(|e| hook_err(strategy, "after_eval", e))?;
            }
            if routed {
                // Back to the expert and head the current task trained.
                experts
                    .for_eval(ti, net, opt)
                    .map_err(|e| TrialStatus::Failed(format!("expert pool: {e}")))?;
            }
            out.eval_seconds += t_eval.elapsed().as_secs_f64();
            tracing::debug!(task = ti, ?row, "evaluated");
            out.accuracy_matrix.push(row);
            if self.cfg.diagnostics.enabled {
                // The network as the strategy evaluates the task just trained.
                let id = (sc.setting == Setting::TaskIl).then_some(ti);
                strategy
                    .before_eval(&mut ctx!(ti), id)
                    .map_err(|e| hook_err(strategy, "before_eval", e))?;
                let d = self.diagnose(&mut **net, ti)?;
                strategy
                    .after_eval(&mut ctx!(ti))
                    .map_err(|e| hook_err(strategy, "after_eval", e))?;
                tracing::debug!(task = ti, ?d, "diagnostics");
                out.diagnostics.push(d);
            }
            out.strategy_metrics.resize_with(ti + 1, BTreeMap::new);
            for (task, key, value) in strategy.take_reports() {
                // Reports name the task whose hook made them (never a later one).
                if let Some(m) = out.strategy_metrics.get_mut(task) {
                    m.insert(key, value);
                }
            }
            if ti + 1 < sc.tasks.len() {
                self.checkpoint(ti + 1, step, &**net, opt, experts, rng, strategy, out);
            }
        }
        Ok(())
    }

    /// Restores the checkpoint at `self.target`, if it holds one of this trial: returns the
    /// number of finished tasks and the step counter.
    fn resume(
        &self,
        net: &mut Box<dyn Network>,
        opt: &mut Optimizer,
        rng: &mut ChaCha8Rng,
        strategy: &mut dyn Strategy,
        out: &mut TrialOutcome,
    ) -> Result<Option<(usize, u64)>, String> {
        let Some(target) = &self.target else {
            return Ok(None);
        };
        let Some(c) = checkpoint::load(&target.path, &target.key).map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let p = &c.progress;
        let params = net.params_mut();
        if c.params.len() != params.len()
            || (0..params.len()).any(|i| params.value_mut(i).len() != c.params[i].len())
        {
            return Err(format!(
                "checkpoint {}: its parameters do not match the model",
                target.path.display()
            ));
        }
        let word_pos: u128 = p.rng_word_pos.parse().map_err(|_| {
            format!(
                "checkpoint {}: bad RNG position {:?}",
                target.path.display(),
                p.rng_word_pos
            )
        })?;
        for (name, slots) in &c.optimizer {
            for (i, v) in slots.iter().enumerate() {
                match opt.state_mut(name, i) {
                    Some(dst) if dst.len() == v.len() => dst.copy_from_slice(v),
                    _ => {
                        return Err(format!(
                            "checkpoint {}: optimizer state `{name}` does not match the optimizer",
                            target.path.display()
                        ))
                    }
                }
            }
        }
        strategy.load_state(&c.strategy_state).map_err(|e| {
            format!(
                "checkpoint {}: the strategy refused its state: {e:#}",
                target.path.display()
            )
        })?;
        for (i, v) in c.params.iter().enumerate() {
            params.value_mut(i).copy_from_slice(v);
        }
        opt.set_steps(p.optimizer_steps);
        rng.set_word_pos(word_pos);
        out.accuracy_matrix.clone_from(&p.accuracy_matrix);
        out.random_init_accuracy.clone_from(&p.random_init_accuracy);
        out.online_accuracy.clone_from(&p.online_accuracy);
        out.mean_loss.clone_from(&p.mean_loss);
        out.train_seconds = p.train_seconds;
        out.eval_seconds = p.eval_seconds;
        out.samples_seen = p.samples_seen;
        out.steps = p.step;
        out.strategy_metrics.clone_from(&p.strategy_metrics);
        out.diagnostics.clone_from(&p.diagnostics);
        tracing::info!(
            tasks_done = p.tasks_done,
            path = %target.path.display(),
            "resuming the trial from its checkpoint"
        );
        Ok(Some((p.tasks_done, p.step)))
    }

    /// Writes the trial's state after `tasks_done` tasks to `self.target`. A strategy on the
    /// expert pool, one whose `save_state` fails, or a write error turns checkpoints off for
    /// the rest of the trial (with a warning); the trial itself goes on.
    #[allow(clippy::too_many_arguments)]
    fn checkpoint(
        &mut self,
        tasks_done: usize,
        step: u64,
        net: &dyn Network,
        opt: &Optimizer,
        experts: &Experts,
        rng: &ChaCha8Rng,
        strategy: &mut dyn Strategy,
        out: &TrialOutcome,
    ) {
        let Some(target) = &self.target else { return };
        let stop = |why: String| {
            tracing::warn!(path = %target.path.display(), "no more checkpoints for this trial: {why}");
        };
        if experts.enabled() {
            stop("the strategy uses the expert pool, which checkpoints do not hold".into());
            self.target = None;
            return;
        }
        let strategy_state = match strategy.save_state() {
            Ok(b) => b,
            Err(e) => {
                stop(format!("the strategy cannot save its state: {e:#}"));
                self.target = None;
                return;
            }
        };
        let params = net.params();
        let optimizer = opt
            .state_names()
            .iter()
            .map(|name| {
                let slots = (0..params.len())
                    .map(|i| opt.state(name, i).map(<[f32]>::to_vec).unwrap_or_default())
                    .collect();
                (name.to_string(), slots)
            })
            .collect();
        let c = checkpoint::Checkpoint {
            progress: checkpoint::Progress {
                key: target.key.clone(),
                tasks_done,
                step,
                rng_word_pos: rng.get_word_pos().to_string(),
                optimizer_steps: opt.steps(),
                accuracy_matrix: out.accuracy_matrix.clone(),
                random_init_accuracy: out.random_init_accuracy.clone(),
                online_accuracy: out.online_accuracy.clone(),
                mean_loss: out.mean_loss.clone(),
                train_seconds: out.train_seconds,
                eval_seconds: out.eval_seconds,
                samples_seen: out.samples_seen,
                strategy_metrics: out.strategy_metrics.clone(),
                diagnostics: out.diagnostics.clone(),
            },
            params: params.values().to_vec(),
            optimizer,
            strategy_state,
        };
        if let Err(e) = checkpoint::save(&c, &target.path) {
            stop(e.to_string());
            self.target = None;
        }
    }

    /// Loss-of-plasticity diagnostics at the end of task `ti` on a probe of its first
    /// training samples (see [`crate::plasticity`]).
    fn diagnose(&self, net: &mut dyn Network, ti: usize) -> Result<TaskDiagnostics, TrialStatus> {
        let d = &self.cfg.diagnostics;
        let sc = self.scenario;
        let task = &sc.tasks[ti];
        let n = task.train.len().min(d.probe_size);
        let fail = |what: &str, e: String| TrialStatus::Failed(format!("diagnostics: {what}: {e}"));
        let rows: Vec<usize> = (0..n).collect();
        let (mut x, mut y, mut logits, mut feats) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        sc.gather(task, false, &rows, &mut x, &mut y);
        let inputs =
            Inputs::new(&x, n, sc.input_dim()).map_err(|e| fail("probe", e.to_string()))?;
        net.forward(inputs, &mut logits)
            .map_err(|e| fail("forward", e.to_string()))?;
        let mask = sc.eval_mask(Some(ti), ti);
        let c = sc.num_outputs;
        let correct = y
            .iter()
            .enumerate()
            .filter(|&(r, &t)| argmax(&logits[r * c..(r + 1) * c], mask.as_deref()) == t)
            .count();
        net.features(inputs, &mut feats)
            .map_err(|e| fail("features", e.to_string()))?;
        let units = feats.len() / n.max(1);
        let sv = plasticity::singular_values(&feats, n, units).map_err(|e| fail("features", e))?;
        let weights = plasticity::weight_stats(net.params()).map_err(|e| fail("weights", e))?;
        Ok(TaskDiagnostics {
            train_accuracy: correct as f64 / n.max(1) as f64,
            dormant_fraction: plasticity::dormant_fraction(&feats, n, units, d.dormant_threshold),
            feature_srank: plasticity::srank(&sv, d.srank_delta),
            feature_effective_rank: plasticity::effective_rank(&sv),
            sigma_max: weights.iter().map(|w| w.0).collect(),
            mean_abs_weight: weights.iter().map(|w| w.1).collect(),
        })
    }

    /// Accuracy on task `j`'s test split after training through `trained`.
    fn evaluate(
        &self,
        net: &mut dyn Network,
        trained: Option<usize>,
        j: usize,
    ) -> Result<f64, TrialStatus> {
        let sc = self.scenario;
        let task = &sc.tasks[j];
        let mask = sc.eval_mask(trained, j);
        let n = task.test.len();
        let bs = self.cfg.train.eval_batch_size;
        let c = sc.num_outputs;
        let (mut x, mut y, mut logits) = (Vec::new(), Vec::new(), Vec::new());
        let mut correct = 0usize;
        let rows: Vec<usize> = (0..n).collect();
        for chunk in rows.chunks(bs) {
            x.clear();
            y.clear();
            sc.gather(task, true, chunk, &mut x, &mut y);
            let inputs = Inputs::new(&x, chunk.len(), sc.input_dim())
                .map_err(|e| TrialStatus::Failed(format!("evaluation batch: {e}")))?;
            net.forward(inputs, &mut logits)
                .map_err(|e| TrialStatus::Failed(format!("evaluation forward: {e}")))?;
            for (r, &target) in y.iter().enumerate() {
                correct +=
                    (argmax(&logits[r * c..(r + 1) * c], mask.as_deref()) == target) as usize;
            }
        }
        Ok(correct as f64 / n.max(1) as f64)
    }
}

/// Index of the largest logit among the units allowed by `mask` (ties: the first). NaN logits
/// never win.
pub fn argmax(logits: &[f32], mask: Option<&[bool]>) -> usize {
    let mut best = usize::MAX;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if mask.is_some_and(|m| !m[i]) {
            continue;
        }
        if best == usize::MAX || v > best_v {
            best = i;
            best_v = if v.is_nan() { f32::NEG_INFINITY } else { v };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_respects_the_mask() {
        let l = [0.1, 5.0, 0.3, 0.2];
        assert_eq!(argmax(&l, None), 1);
        assert_eq!(argmax(&l, Some(&[true, false, true, true])), 2);
        assert_eq!(argmax(&[f32::NAN, 1.0], None), 1);
    }

    #[test]
    fn steps_per_budget() {
        assert_eq!(steps_for(Budget::Epochs(2), 10, 4), 6);
        assert_eq!(steps_for(Budget::Iterations(7), 10, 4), 7);
    }
}
