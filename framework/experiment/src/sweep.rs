//! Executing planned trials: a deterministic shard of them, skipping those already stored, on
//! `jobs` worker threads, each trial's parallel work confined to its own rayon pool so that
//! concurrent trials do not fight over the cores. Each finished trial is stored at once.
//!
//! Results do not depend on `jobs`: a trial's randomness comes from its seed only, and the
//! backend's parallel splits are fixed, not sized by the thread count.

use std::collections::VecDeque;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Config, Setting};
use crate::protocol::{Plan, PlannedTrial};
use clef_data::scenario::{self, Scenario};
use clef_engine::strategy::StrategyProvider;
use clef_engine::trainer::{self, TrialStatus};
use clef_report::metrics;
use clef_report::results::TrialRecord;
use clef_report::store::TrialStore;

/// A slice `index` of `count` (0-based) of a sweep: trial `k` of a phase's plan belongs to
/// shard `k % count`, so the shards are disjoint, cover every trial, and each gets a mix of
/// strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, `0..count`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    /// Parses `i/n` (0 <= i < n), e.g. `$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected `i/n` with 0 <= i < n (e.g. `0/4`), got `{s}`");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// The whole sweep.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// The trials of `plan` in this shard, in plan order.
    pub fn select<T: Clone>(&self, plan: &[T]) -> Vec<T> {
        plan.iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

/// How to execute.
#[derive(Debug, Clone, Copy)]
pub struct ExecOptions {
    /// Trials run at once (>= 1).
    pub jobs: usize,
    /// Slice of the sweep to run.
    pub shard: Shard,
    /// Draw progress bars.
    pub progress: bool,
}

/// What an execution did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// Trials of the shard.
    pub in_shard: usize,
    /// Trials of the shard found already stored (skipped).
    pub skipped: usize,
    /// Trials run now.
    pub ran: usize,
}

/// Threads each trial's pool gets when `jobs` trials share the machine.
pub fn threads_per_trial(jobs: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / jobs.max(1)).max(1)
}

/// Runs the trials of `trials` in `opts.shard` that `store` lacks, storing each record as soon
/// as its trial ends.
pub fn execute(
    plan: &Plan<'_>,
    provider: &dyn StrategyProvider,
    trials: &[PlannedTrial],
    store: &TrialStore,
    opts: ExecOptions,
) -> anyhow::Result<ExecStats> {
    let mine = opts.shard.select(trials);
    let todo: VecDeque<PlannedTrial> = mine
        .iter()
        .filter(|t| !store.contains(&t.id))
        .cloned()
        .collect();
    let stats = ExecStats {
        in_shard: mine.len(),
        skipped: mine.len() - todo.len(),
        ran: todo.len(),
    };
    if stats.skipped > 0 {
        tracing::info!(
            skipped = stats.skipped,
            "trials already in the store are not run again"
        );
    }
    if todo.is_empty() {
        return Ok(stats);
    }
    let jobs = opts.jobs.max(1).min(todo.len());
    let threads = threads_per_trial(jobs);
    tracing::info!(
        trials = todo.len(),
        jobs,
        threads_per_trial = threads,
        "running trials"
    );
    let multi = MultiProgress::with_draw_target(if opts.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let overall = multi.add(ProgressBar::new(todo.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("trials {bar:30} {pos}/{len} [{elapsed_precise}] eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let queue = Mutex::new(todo);
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let pool = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
                    Ok(p) => p,
                    Err(e) => {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(anyhow::anyhow!("cannot start a trial thread pool: {e}"));
                        return;
                    }
                };
                loop {
                    if failure.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        return;
                    }
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(t) = next else { return };
                    let ckpt = trainer::CheckpointTarget {
                        path: store.checkpoint_path(&t.id),
                        key: t.id.clone(),
                    };
                    let rec = pool.install(|| run_one(plan, provider, &t, &multi, &ckpt));
                    let stored = rec.and_then(|r| {
                        log_outcome(&r);
                        store.put(&r).map_err(anyhow::Error::from)
                    });
                    if stored.is_ok() {
                        clef_engine::checkpoint::remove(&ckpt.path);
                    }
                    if let Err(e) = stored {
                        *failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        return;
                    }
                    overall.inc(1);
                }
            });
        }
    });
    overall.finish_and_clear();
    // Drop the checkpoint directory once no trial needs it (it stays while it holds any).
    if let Some(dir) = store.checkpoint_path("").parent() {
        let _ = std::fs::remove_dir(dir);
    }
    match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

fn log_outcome(r: &TrialRecord) {
    if let Some(line) = r.collapse_warning() {
        tracing::warn!("trial completed with a collapsed network: {line}");
    }
    match r.status.as_str() {
        "completed" => tracing::info!(
            phase = r.phase,
            strategy = r.strategy,
            setting = r.setting,
            seed = r.seed,
            acc = r.metrics.as_ref().map(|m| m.acc),
            "trial finished"
        ),
        _ => tracing::error!(
            phase = r.phase,
            strategy = r.strategy,
            setting = r.setting,
            seed = r.seed,
            "trial {}: {}",
            r.status,
            r.error.as_deref().unwrap_or("")
        ),
    }
}

/// Runs one trial and builds its record (a strategy that cannot be created gives a failed
/// record; only a scenario that cannot be built, which validation rules out, is an error).
fn run_one(
    plan: &Plan<'_>,
    provider: &dyn StrategyProvider,
    t: &PlannedTrial,
    multi: &MultiProgress,
    ckpt: &trainer::CheckpointTarget,
) -> anyhow::Result<TrialRecord> {
    let cfg = plan.cfg;
    let scenario = scenario::build(
        &t.scenario,
        plan.data(t.data).data.clone(),
        t.setting,
        t.seed,
    )
    .map_err(|inv| anyhow::anyhow!("`{}` {}", inv.key, inv.message))?;
    let mut rec = base_record(plan, t, &scenario);
    let mut strategy = match provider.create(&t.strategy) {
        Ok(s) => s,
        Err(e) => {
            rec.status = "failed".into();
            rec.error = Some(format!("{e:#}"));
            return Ok(rec);
        }
    };
    let bar = multi.add(ProgressBar::new(trainer::total_steps(
        cfg.trial_spec(),
        &scenario,
        strategy.data_mode(),
    )));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>32} {bar:30} {pos}/{len} steps {rate}")
            .map(|s| {
                s.with_key(
                    "rate",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&format_rate(st.per_sec()));
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!(
        "{} {} {} s{}",
        t.phase.as_str(),
        t.setting.as_str(),
        t.strategy.label(),
        t.seed
    ));
    let outcome = trainer::run_trial_resumable(
        cfg.trial_spec(),
        &scenario,
        strategy.as_mut(),
        t.seed,
        &bar,
        Some(ckpt),
    );
    bar.finish_and_clear();
    multi.remove(&bar);
    fill(&mut rec, outcome, t.setting);
    Ok(rec)
}

/// A rate for people: `317/s`, `4.2/s`, `1.2k/s`, `46k/s`, `1.5M/s` (three significant
/// digits at most; `0/s` for a rate not measured yet).
pub fn format_rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return "0/s".into();
    }
    let short = |x: f64, unit: &str| {
        if x < 9.95 {
            format!("{x:.1}{unit}/s")
        } else {
            format!("{x:.0}{unit}/s")
        }
    };
    if per_sec < 999.5 {
        short(per_sec, "")
    } else if per_sec < 999_500.0 {
        short(per_sec / 1e3, "k")
    } else {
        short(per_sec / 1e6, "M")
    }
}

fn base_record(plan: &Plan<'_>, t: &PlannedTrial, scenario: &Scenario) -> TrialRecord {
    let cfg: &Config = plan.cfg;
    TrialRecord {
        trial_id: t.id.clone(),
        config: cfg.name().to_string(),
        strategy: t.strategy.label().to_string(),
        strategy_name: t.strategy.name.clone(),
        scenario: scenario.name.clone(),
        dataset: scenario.data.train.name.clone(),
        setting: t.setting.as_str().to_string(),
        seed: t.seed,
        phase: t.phase.as_str().to_string(),
        data_fingerprint: plan.data(t.data).fingerprint.clone(),
        strategy_version: t.version.clone(),
        strategy_library_hash: t.library_hash.clone(),
        hparams: serde_json::to_value(&t.strategy.hparams).unwrap_or_default(),
        status: "completed".into(),
        error: None,
        tasks: scenario.tasks.iter().map(|t| t.name.clone()).collect(),
        accuracy_matrix: Vec::new(),
        random_init_accuracy: Vec::new(),
        online_accuracy: Vec::new(),
        mean_loss: Vec::new(),
        metrics: None,
        train_seconds: 0.0,
        eval_seconds: 0.0,
        task_end_seconds: 0.0,
        samples_per_second: 0.0,
        steps: 0,
        backend: String::new(),
        num_params: 0,
        clef_version: env!("CARGO_PKG_VERSION").to_string(),
        strategy_metrics: Vec::new(),
        diagnostics: Vec::new(),
        collapsed: Vec::new(),
    }
}

/// Fills a record from a trial's outcome. Intransigence needs the joint reference of the same
/// stream, which may run in another shard: it is added when the views are derived
/// ([`clef_report::with_joint_metrics`]).
fn fill(r: &mut TrialRecord, o: trainer::TrialOutcome, setting: Setting) {
    let samples_per_second = o.samples_per_second();
    let m = o.measured;
    match &o.status {
        TrialStatus::Completed => {
            // FWT is undefined in class-IL: a future task's classes are outside the mask.
            let b = (setting != Setting::ClassIl).then_some(m.random_init_accuracy.as_slice());
            r.metrics = Some(metrics::compute(
                &m.accuracy_matrix,
                b,
                None,
                Some(&m.online_accuracy),
            ));
        }
        TrialStatus::Diverged { task, step } => {
            r.status = "diverged".into();
            r.error = Some(format!(
                "loss or parameters became NaN/infinite in task {task} at step {step}"
            ));
        }
        TrialStatus::Failed(msg) => {
            r.status = "failed".into();
            r.error = Some(msg.clone());
        }
    }
    r.accuracy_matrix = m.accuracy_matrix;
    r.random_init_accuracy = m.random_init_accuracy;
    r.online_accuracy = m.online_accuracy;
    r.mean_loss = m.mean_loss;
    r.train_seconds = m.train_seconds;
    r.eval_seconds = m.eval_seconds;
    r.task_end_seconds = m.task_end_seconds;
    r.samples_per_second = samples_per_second;
    r.steps = m.steps;
    r.backend = o.backend;
    r.num_params = o.num_params;
    r.strategy_metrics = m.strategy_metrics;
    r.diagnostics = m.diagnostics;
    r.collapsed = m.collapsed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_disjoint_and_cover_everything() {
        let plan: Vec<usize> = (0..23).collect();
        for n in 1..6 {
            let mut all: Vec<usize> = (0..n)
                .flat_map(|i| Shard { index: i, count: n }.select(&plan))
                .collect();
            assert_eq!(all.len(), plan.len(), "n = {n}");
            all.sort();
            assert_eq!(all, plan);
        }
    }

    #[test]
    fn rates_are_short() {
        for (x, s) in [
            (316.8059, "317/s"),
            (4.237, "4.2/s"),
            (0.0, "0/s"),
            (f64::NAN, "0/s"),
            (999.4, "999/s"),
            (999.7, "1.0k/s"),
            (1234.5, "1.2k/s"),
            (45_678.0, "46k/s"),
            (1.5e6, "1.5M/s"),
        ] {
            assert_eq!(format_rate(x), s, "{x}");
        }
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
