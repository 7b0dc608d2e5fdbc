//! `sfr`: the function-space regulariser of SFR (Scannell, Mereu, Chang, Tamir, Pajarinen &
//! Solin, "Function-space Parameterization of Neural Networks for Sequential Learning", ICLR
//! 2024, arXiv 2403.10929), following the official continual-learning code
//! (`github.com/AaltoML/sfr-experiments`, `experiments/cl/models/sfr.py`, built on Mammoth; the
//! clean library is `github.com/AaltoML/sfr`, `sfr.py`).
//!
//! # What it does
//!
//! At the end of every task `t` except the last (`on_task_end`):
//!
//! 1. `Z_t`: `M = inducing_points` training inputs of the task drawn uniformly **with
//!    replacement** with the plugin RNG (read with `task_samples`), and their logits
//!    `f_old(Z_t)` (all units);
//! 2. the kernel of output `c` is the NTK from the host's `ntk_gram` service, scaled:
//!    `k_c = J_c Jᵀ_c / (δ · N_t · (t + 1))` (`δ = prior_precision`, `N_t` the task's training
//!    samples, `t` 0-based);
//! 3. for every unit `c` of the task's training softmax (class-IL: every unit seen so far), over
//!    all `N_t` training samples in chunks of `dual_batch_size`: the dual parameters of the
//!    masked softmax cross-entropy (`β̂ = max(p(1 − p), 1e-7)`, `ỹ = onehot − p + β̂ f`), then
//!    `B_u = Σ_i k(Z, x_i) β̂_i k(x_i, Z)`, `ỹ_u = Σ_i k(Z, x_i) ỹ_i`, and
//!    `Λ_{t,c} = K_zz⁻¹ (B_u + bu_jitter·I) K_zz⁻¹` in f64 (`K_zz` symmetrised, Cholesky with `jitter`, ×4 on
//!    failure; see [`gp`]);
//! 4. units outside the training softmax get `Λ = I` (the code's "classes not yet seen"); with
//!    `no_covariance` every `Λ = I` and no kernel is computed (the paper's ablation).
//!
//! While training later tasks (`after_backward`) it adds the gradient of
//!
//! ```text
//! R(θ) = τ/2 · Σ_{s<t} (1/M) Σ_c (f_c(Z_s) − f_old,c(Z_s))ᵀ Λ_{s,c} (f_c(Z_s) − f_old,c(Z_s))
//! ```
//!
//! with one `forward` and one `vjp` over the stored inducing points of all past tasks
//! (cotangent `τ/M · Λ_{s,c} (f_c − f_old,c)`).
//!
//! The same summary is a sparse GP posterior over each output: [`TaskSummary::predict`] (mean
//! and variance) and [`TaskSummary::dual_update`] (fold new data into `B_u`, `ỹ_u` without
//! retraining) are public, and so is the f64 math on kernel matrices in [`gp`].
//!
//! # Hyperparameters
//!
//! [`Config`]; the table, defaults and their sources are in `docs/strategies.md` (`sfr`).
//! Defaults are the official code's split-FMNIST settings (τ = 1, δ = 1e-4, 200 points per task,
//! dual batch 1000, jitter 1e-6). The training objective of the paper also has `δ/2 ‖θ‖²`
//! (MAP); clef's `[train] weight_decay` adds exactly that gradient, so set it to δ. Without the
//! jitters `Λ` would not depend on the kernel scale; with them it does: `bu_jitter · K_zz⁻²`
//! penalises changes along the directions where `K_zz` is small, so the official kernel
//! scale `1/(δ N_t (t+1))` matters.
//!
//! # State
//!
//! `type State = SerdeState`: the config and every task summary (inducing inputs, old logits,
//! kernel scale, `Λ` and the GP summary per unit, every float bit for bit). The concatenation
//! of the inducing inputs is a cache, rebuilt from the summaries by the next `after_backward`.

pub mod gp;

use std::time::Instant;

use clef_sdk::prelude::*;
use clef_sdk::Split;

use gp::{softmax_dual, OutputSummary};

/// The hyperparameters (table and sources: `docs/strategies.md`). Every one acts only through
/// the summaries built at task ends: nothing happens during the first task.
#[derive(Debug, Clone, HParams, Serialize, Deserialize)]
pub struct Config {
    /// regulariser strength τ (official split-FMNIST: 1.0)
    #[hparam(default = 1.0, range = 0.0..=1e12, log, needs_past_tasks)]
    pub tau: f64,
    /// prior precision δ: kernel scale 1/(δ N_t (t+1)) (official: 1e-4)
    #[hparam(default = 1e-4, range = 1e-12..=1e12, log, needs_past_tasks)]
    pub prior_precision: f64,
    /// inducing points M per task (official: 200)
    #[hparam(default = 200, range = 1..=100_000, needs_past_tasks)]
    pub inducing_points: usize,
    /// Λ = I: function-space L2 on the stored logits (ablation)
    #[hparam(default = false, needs_past_tasks)]
    pub no_covariance: bool,
    /// diagonal added to K_zz before the Cholesky (×4 on failure)
    #[hparam(default = 1e-6, range = 0.0..=1.0, needs_past_tasks)]
    pub jitter: f64,
    /// diagonal added to B_u in Λ = K_zz⁻¹ (B_u + bu_jitter·I) K_zz⁻¹ (official code: its
    /// jitter, 1e-6; the paper's formula: 0)
    #[hparam(default = 1e-6, range = 0.0..=1.0, needs_past_tasks)]
    pub bu_jitter: f64,
    /// rows per chunk when summing over the task's data
    #[hparam(default = 1000, range = 1..=1_000_000, needs_past_tasks)]
    pub dual_batch_size: usize,
}

/// The summary of one finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// Task index.
    pub task: usize,
    /// Inducing inputs, `M × input_dim` row-major.
    #[serde(with = "clef_sdk::state::tensor")]
    pub z: Vec<f32>,
    /// Logits at `z` when the task ended, `M × num_outputs`.
    #[serde(with = "clef_sdk::state::tensor")]
    pub f_old: Vec<f32>,
    /// Kernel scale `1 / (δ N_t (t + 1))` applied to the NTK.
    pub scale: f64,
    /// Per output unit: `Λ` (`M × M` row-major) or `None` for the identity.
    pub lambda: Vec<Option<Vec<f64>>>,
    /// Per output unit: the GP summary (`None` for units outside the training softmax, and
    /// with `no_covariance`).
    pub gp: Vec<Option<OutputSummary>>,
    /// `τ/M · max_c λ_max(Λ_c Q_c)` ([`OutputSummary::curvature`]): the regulariser's stiffest
    /// curvature in parameter space for one unit of this task (0 with `no_covariance`).
    #[serde(default)]
    pub curvature: f64,
}

impl TaskSummary {
    /// Number of inducing points.
    pub fn m(&self) -> usize {
        self.f_old.len() / self.lambda.len().max(1)
    }

    /// Scaled kernel `k_c(A, B)` from the host's NTK service.
    fn kernel(
        &self,
        ctx: &mut Ctx<'_>,
        a: &[f32],
        ra: usize,
        b: &[f32],
        rb: usize,
        c: usize,
    ) -> Result<Vec<f64>> {
        let mut k = ctx.ntk_gram(a, ra, b, rb, c)?;
        k.iter_mut().for_each(|v| *v *= self.scale);
        Ok(k)
    }

    /// Predictive mean and variance of output `unit` at `rows` inputs `x` under this task's
    /// sparse GP (the linearised network at the weights the kernel is evaluated at: call it
    /// while the network still has the weights the summary was built with, e.g. in
    /// `on_task_end`). Fails for units without a GP summary.
    pub fn predict(
        &self,
        ctx: &mut Ctx<'_>,
        x: &[f32],
        rows: usize,
        unit: usize,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let gp = self.unit_gp(unit)?;
        let post = gp.posterior()?;
        let m = gp.m;
        let kxz = self.kernel(ctx, x, rows, &self.z, m, unit)?;
        let mut kxx = Vec::with_capacity(rows);
        let d = x.len() / rows.max(1);
        for r in 0..rows {
            let xr = &x[r * d..(r + 1) * d];
            kxx.push(self.kernel(ctx, xr, 1, xr, 1, unit)?[0]);
        }
        Ok((post.mean(&kxz, rows)?, post.variance(&kxz, &kxx)?))
    }

    /// The dual update: adds labelled data (`rows` inputs `x` with `targets`) to the GP
    /// summaries of every unit in `units` (the softmax the targets belong to) without
    /// retraining, at the network's current weights. `Λ` is recomputed. The kernel scale
    /// stays the one of the task (as in the official code).
    pub fn dual_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        units: &[usize],
    ) -> Result<()> {
        ensure!(
            targets.len() == rows,
            "dual update: {} targets for {rows} rows",
            targets.len()
        );
        let logits = ctx.forward(x, rows)?;
        let k = logits.len() / rows.max(1);
        let (mut betas, mut ys) = (
            vec![Vec::with_capacity(rows); units.len()],
            vec![Vec::with_capacity(rows); units.len()],
        );
        for r in 0..rows {
            let (b, y) = softmax_dual(&logits[r * k..(r + 1) * k], units, targets[r])?;
            for j in 0..units.len() {
                betas[j].push(b[j]);
                ys[j].push(y[j]);
            }
        }
        for (j, &u) in units.iter().enumerate() {
            let m = self.unit_gp(u)?.m;
            let kzx = self.kernel(ctx, &self.z, m, x, rows, u)?;
            let gp = self.gp[u].as_mut().context("no GP summary")?;
            gp.accumulate(&kzx, rows, &betas[j], &ys[j])?;
            self.lambda[u] = Some(gp.lambda()?.0);
        }
        Ok(())
    }

    fn unit_gp(&self, unit: usize) -> Result<&OutputSummary> {
        self.gp.get(unit).and_then(Option::as_ref).with_context(|| {
            format!(
                "task {} has no GP summary for output unit {unit}",
                self.task
            )
        })
    }
}

/// The regulariser `R` and its gradient with respect to the logits at the stored inducing
/// points of `tasks` (concatenated in task order): `f_new` holds the current logits there
/// (`Σ M_s × k` values). Returns `(R, cotangent)`.
pub fn penalty_and_cotangent(
    tasks: &[TaskSummary],
    f_new: &[f32],
    k: usize,
    tau: f64,
) -> Result<(f64, Vec<f32>)> {
    let mut cot = vec![0.0f32; f_new.len()];
    let mut value = 0.0;
    let mut row0 = 0;
    for s in tasks {
        let m = s.f_old.len() / k;
        ensure!(
            (row0 + m) * k <= f_new.len(),
            "fewer new logits than stored inducing points"
        );
        let w = tau / m as f64;
        for c in 0..k {
            let diff: Vec<f64> = (0..m)
                .map(|r| f64::from(f_new[(row0 + r) * k + c]) - f64::from(s.f_old[r * k + c]))
                .collect();
            let ld: Vec<f64> = match s.lambda.get(c).and_then(Option::as_ref) {
                None => diff.clone(),
                Some(l) => (0..m)
                    .map(|r| {
                        l[r * m..(r + 1) * m]
                            .iter()
                            .zip(&diff)
                            .map(|(a, b)| a * b)
                            .sum()
                    })
                    .collect(),
            };
            value += 0.5 * w * diff.iter().zip(&ld).map(|(a, b)| a * b).sum::<f64>();
            for r in 0..m {
                cot[(row0 + r) * k + c] = (w * ld[r]) as f32;
            }
        }
        row0 += m;
    }
    ensure!(
        row0 * k == f_new.len(),
        "more new logits than stored inducing points"
    );
    Ok((value, cot))
}

/// The SFR strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sfr {
    config: Config,
    tasks: Vec<TaskSummary>,
    /// Inducing inputs of every stored task, concatenated: a cache of `tasks`, rebuilt by
    /// [`Sfr::refresh`] (and by `after_backward` when it is stale, e.g. after a resume).
    #[serde(skip)]
    z_all: Vec<f32>,
}

impl Sfr {
    /// The stored task summaries, oldest first.
    pub fn summaries(&self) -> &[TaskSummary] {
        &self.tasks
    }

    /// Mutable summaries (e.g. for [`TaskSummary::dual_update`]); call
    /// [`Sfr::refresh`] after adding or removing summaries.
    pub fn summaries_mut(&mut self) -> &mut Vec<TaskSummary> {
        &mut self.tasks
    }

    /// Rebuilds the cached concatenation of the inducing inputs.
    pub fn refresh(&mut self) {
        self.z_all = self
            .tasks
            .iter()
            .flat_map(|s| s.z.iter().copied())
            .collect();
    }

    /// Builds the summary of the task described by `task` (usually the one that just ended):
    /// inducing points, old logits and, unless `no_covariance`, `Λ` and the GP per unit.
    pub fn summarise(&self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<TaskSummary> {
        let cfg = &self.config;
        let (n, d, k) = (task.train_samples, task.input_dim, task.num_outputs);
        ensure!(n > 0, "task {} has no training samples", task.task);
        let m = cfg.inducing_points;
        let mut z = Vec::with_capacity(m * d);
        for _ in 0..m {
            let i = ctx.rng_below(n);
            let (x, _) = ctx.task_samples(task.task, Split::Train, i, 1)?;
            z.extend_from_slice(&x);
        }
        let f_old = ctx.forward(&z, m)?;
        let scale = 1.0 / (cfg.prior_precision * n as f64 * (task.task + 1) as f64);
        let mut summary = TaskSummary {
            task: task.task,
            z,
            f_old,
            scale,
            lambda: vec![None; k],
            gp: vec![None; k],
            curvature: 0.0,
        };
        if cfg.no_covariance {
            return Ok(summary);
        }
        let units = ctx.training_units(task.task)?;
        ensure!(
            !units.is_empty(),
            "task {} has an empty training mask",
            task.task
        );
        for &u in &units {
            let kzz = summary.kernel(ctx, &summary.z, m, &summary.z, m, u)?;
            summary.gp[u] =
                Some(OutputSummary::new(&kzz, m, cfg.jitter)?.with_bu_jitter(cfg.bu_jitter));
        }
        let chunk = cfg.dual_batch_size.max(1);
        let mut start = 0;
        while start < n {
            let rows = chunk.min(n - start);
            let (x, y) = ctx.task_samples(task.task, Split::Train, start, rows)?;
            let logits = ctx.forward(&x, rows)?;
            let mut betas = vec![Vec::with_capacity(rows); units.len()];
            let mut ys = vec![Vec::with_capacity(rows); units.len()];
            for r in 0..rows {
                let (b, yt) = softmax_dual(&logits[r * k..(r + 1) * k], &units, y[r])
                    .with_context(|| {
                        format!("training sample {} of task {}", start + r, task.task)
                    })?;
                for j in 0..units.len() {
                    betas[j].push(b[j]);
                    ys[j].push(yt[j]);
                }
            }
            for (j, &u) in units.iter().enumerate() {
                let kzx = summary.kernel(ctx, &summary.z, m, &x, rows, u)?;
                if let Some(gp) = summary.gp[u].as_mut() {
                    gp.accumulate(&kzx, rows, &betas[j], &ys[j])?;
                }
            }
            start += rows;
        }
        let (mut max_jitter, mut curvature): (f64, f64) = (0.0, 0.0);
        for &u in &units {
            if let Some(gp) = &summary.gp[u] {
                let (l, j) = gp.lambda()?;
                max_jitter = max_jitter.max(j);
                curvature = curvature.max(gp.curvature(&l, summary.scale)?);
                summary.lambda[u] = Some(l);
            }
        }
        let curvature = cfg.tau / m as f64 * curvature;
        info!(
            task = task.task,
            units = units.len(),
            m,
            max_jitter,
            curvature,
            "SFR summary built (curvature: the regulariser's largest Hessian eigenvalue per unit; \
             SGD with momentum μ diverges when lr · curvature summed over the summaries exceeds 2(1 + μ))"
        );
        summary.curvature = curvature;
        Ok(summary)
    }
}

impl Strategy for Sfr {
    const NAME: &'static str = "sfr";
    const DESCRIPTION: &'static str =
        "SFR: function-space regulariser τ/2·Σ (1/M)(f(Z)−f_old(Z))ᵀΛ(f(Z)−f_old(Z)) with Λ from a sparse NTK-GP";
    type Config = Config;
    type State = SerdeState;
    /// Backbone-agnostic: it needs only `forward`, `vjp` and `ntk_gram`, which the host
    /// offers for every backbone (the conv NTK with batch norm in evaluation mode).
    const CONV_BACKBONES: bool = true;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            config,
            tasks: Vec::new(),
            z_all: Vec::new(),
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.tasks.is_empty() || self.config.tau == 0.0 {
            return Ok(());
        }
        if self.z_all.len() != self.tasks.iter().map(|s| s.z.len()).sum::<usize>() {
            self.refresh(); // a resumed instance: the cache is not part of the state
        }
        let rows: usize = self.tasks.iter().map(|s| s.f_old.len()).sum::<usize>();
        let k = self.tasks[0].lambda.len();
        let rows = rows / k;
        let f = ctx.forward(&self.z_all, rows)?;
        ensure!(
            f.len() == rows * k,
            "the model has {} outputs, the stored logits {k}",
            f.len() / rows.max(1)
        );
        let (_, cot) = penalty_and_cotangent(&self.tasks, &f, k, self.config.tau)?;
        ctx.vjp(&self.z_all, rows, &cot)
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if task.task + 1 >= task.num_tasks {
            return Ok(()); // no later task to regularise
        }
        let start = Instant::now();
        let summary = self
            .summarise(ctx, task)
            .with_context(|| format!("building the SFR summary of task {}", task.task))?;
        info!(
            task = task.task,
            seconds = start.elapsed().as_secs_f64(),
            "task boundary"
        );
        if ctx.can_report() && !self.config.no_covariance {
            ctx.report("sfr.curvature", summary.curvature)?;
        }
        self.tasks.push(summary);
        self.refresh();
        Ok(())
    }
}

clef_sdk::export_plugin!(Sfr);

#[cfg(test)]
mod tests;
