//! The training loop of one trial: stream the tasks through the network, call the strategy's
//! hooks, and evaluate every task after each one.

use std::collections::BTreeMap;
use std::time::Instant;

use indicatif::ProgressBar;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_backend::{build_network, Inputs, Network, Optimizer};

use crate::config::{Budget, Config, Setting};
use crate::experts::Experts;
use crate::plasticity::{self, TaskDiagnostics};
use crate::scenario::Scenario;
use crate::seed::derive_seed;
use crate::strategy::{Batch, Ctx, DataMode, Strategy};

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

/// Number of optimizer steps a task of `rows` training samples takes.
pub fn steps_for(budget: Budget, rows: usize, batch: usize) -> u64 {
    match budget {
        Budget::Epochs(e) => (e * rows.div_ceil(batch)) as u64,
        Budget::Iterations(i) => i as u64,
    }
}

/// Total optimizer steps of a trial (for progress bars).
pub fn total_steps(cfg: &Config, scenario: &Scenario, mode: DataMode) -> u64 {
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
    cfg: &Config,
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    seed: u64,
    progress: &ProgressBar,
) -> TrialOutcome {
    clef_backend::pool::install(|| run_trial_here(cfg, scenario, strategy, seed, progress))
}

/// [`run_trial`] on the calling thread.
fn run_trial_here(
    cfg: &Config,
    scenario: &Scenario,
    strategy: &mut dyn Strategy,
    seed: u64,
    progress: &ProgressBar,
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
    cfg: &'a Config,
    scenario: &'a Scenario,
    shuffle_seed: u64,
    init_seed: u64,
    seed: u64,
}

/// A hook failure, turned into a trial status. Plugin errors already name the plugin and the
/// hook (`plugin `x` panicked in after_backward: ...`) and are kept as they are.
fn hook_err(strategy: &dyn Strategy, hook: &str, e: anyhow::Error) -> TrialStatus {
    if let Some(pe) = e.downcast_ref::<crate::plugin::PluginError>() {
        return TrialStatus::Failed(pe.to_string());
    }
    TrialStatus::Failed(format!(
        "strategy `{}` failed in {hook}: {e:#}",
        strategy.name()
    ))
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

        let mode = strategy.data_mode();
        let mut batch = Batch::default();
        let mut logits = Vec::new();
        let mut pool: Vec<(usize, usize)> = Vec::new();
        for (ti, task) in sc.tasks.iter().enumerate() {
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
        }
        Ok(())
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
