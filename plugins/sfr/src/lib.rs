//! `sfr`: the function-space regulariser of SFR (Scannell, Mereu, Chang, Tamir, Pajarinen &
//! Solin, "Function-space Parameterization of Neural Networks for Sequential Learning", ICLR
//! 2024), following the official continual-learning code (`/work/shared/notes/methods.md` §4).
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
//! | key | default | range | meaning |
//! |---|---|---|---|
//! | `tau` | 1.0 | [0, 1e12], log | regulariser strength τ |
//! | `prior_precision` | 1e-4 | [1e-12, 1e12], log | δ in the kernel scaling `1/(δ N_t (t+1))` |
//! | `inducing_points` | 200 | [1, 100000] | M per task |
//! | `no_covariance` | false | bool | Λ = I (function-space L2 on stored logits) |
//! | `jitter` | 1e-6 | [0, 1] | diagonal added to `K_zz` before the Cholesky |
//! | `bu_jitter` | 1e-6 | [0, 1] | diagonal added to `B_u` in `Λ = K_zz⁻¹ (B_u + bu_jitter·I) K_zz⁻¹` (the official code adds its jitter; 0 = the paper's formula) |
//! | `dual_batch_size` | 1000 | [1, 10⁶] | rows per chunk when summing over the task's data |
//!
//! Defaults are the official code's split-FMNIST settings (τ = 1, δ = 1e-4, 200 points per task,
//! dual batch 1000, jitter 1e-6). The training objective of the paper also has `δ/2 ‖θ‖²`
//! (MAP); clef's `[train] weight_decay` adds exactly that gradient, so set it to δ. Without the
//! jitters `Λ` would not depend on the kernel scale; with them it does: `bu_jitter · K_zz⁻²`
//! penalises changes along the directions where `K_zz` is small, so the official kernel
//! scale `1/(δ N_t (t+1))` matters.
//!
//! State (`save_state`): every task summary (inducing inputs, old logits, `Λ` and the GP
//! summary per unit).

pub mod gp;

use std::time::Instant;

use clef_sdk::state::{Reader, Writer};
use clef_sdk::tracing::info;
use clef_sdk::{bail, ensure, Context, Ctx, HParam, Result, Setting, Split, Strategy, TaskInfo};
use serde::Deserialize;

use gp::{softmax_dual, OutputSummary};

/// The validated `hparams` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Regulariser strength τ.
    pub tau: f64,
    /// Prior precision δ (kernel scaling).
    pub prior_precision: f64,
    /// Inducing points per task (M).
    pub inducing_points: usize,
    /// Λ = I for every unit.
    pub no_covariance: bool,
    /// Cholesky jitter.
    pub jitter: f64,
    /// Diagonal added to `B_u` when forming `Λ`.
    pub bu_jitter: f64,
    /// Rows per chunk over the task's data.
    pub dual_batch_size: usize,
}

/// The summary of one finished task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    /// Task index.
    pub task: usize,
    /// Inducing inputs, `M × input_dim` row-major.
    pub z: Vec<f32>,
    /// Logits at `z` when the task ended, `M × num_outputs`.
    pub f_old: Vec<f32>,
    /// Kernel scale `1 / (δ N_t (t + 1))` applied to the NTK.
    pub scale: f64,
    /// Per output unit: `Λ` (`M × M` row-major) or `None` for the identity.
    pub lambda: Vec<Option<Vec<f64>>>,
    /// Per output unit: the GP summary (`None` for units outside the training softmax, and
    /// with `no_covariance`).
    pub gp: Vec<Option<OutputSummary>>,
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

/// Output units of task `task`'s training softmax (what the trainer's loss uses).
pub fn training_units(
    ctx: &mut Ctx<'_>,
    setting: Setting,
    task: usize,
    num_outputs: usize,
) -> Result<Vec<usize>> {
    let mask = match setting {
        Setting::TaskIl => ctx.task_mask(task)?,
        Setting::ClassIl => {
            let mut union = vec![false; num_outputs];
            for j in 0..=task {
                for (u, m) in union.iter_mut().zip(ctx.task_mask(j)?) {
                    *u |= m;
                }
            }
            union
        }
        Setting::DomainIl => vec![true; num_outputs],
        Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
    };
    Ok(mask
        .iter()
        .enumerate()
        .filter_map(|(u, &m)| m.then_some(u))
        .collect())
}

/// The SFR strategy.
#[derive(Debug)]
pub struct Sfr {
    config: Config,
    tasks: Vec<TaskSummary>,
    /// Inducing inputs of every stored task, concatenated (rebuilt when `tasks` changes).
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
        };
        if cfg.no_covariance {
            return Ok(summary);
        }
        let units = training_units(ctx, task.setting, task.task, k)?;
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
        let mut max_jitter: f64 = 0.0;
        for &u in &units {
            if let Some(gp) = &summary.gp[u] {
                let (l, j) = gp.lambda()?;
                max_jitter = max_jitter.max(j);
                summary.lambda[u] = Some(l);
            }
        }
        info!(
            task = task.task,
            units = units.len(),
            m,
            max_jitter,
            "SFR summary built"
        );
        Ok(summary)
    }
}

const MAGIC: &[u8; 8] = b"clefsfr\0";
const VERSION: u32 = 2;

fn f64s(w: &mut Writer, v: &[f64]) {
    w.usize(v.len());
    for x in v {
        w.u64(x.to_bits());
    }
}

fn read_f64s(r: &mut Reader<'_>) -> Result<Vec<f64>> {
    let n = r.usize()?;
    (0..n).map(|_| r.u64().map(f64::from_bits)).collect()
}

/// Encodes the stored summaries.
pub fn encode_state(tasks: &[TaskSummary]) -> Vec<u8> {
    let mut w = Writer::new(MAGIC, VERSION);
    w.usize(tasks.len());
    for s in tasks {
        w.usize(s.task);
        w.f32s(&s.z);
        w.f32s(&s.f_old);
        w.u64(s.scale.to_bits());
        w.usize(s.lambda.len());
        for (l, g) in s.lambda.iter().zip(&s.gp) {
            match l {
                None => w.u8(0),
                Some(l) => {
                    w.u8(1);
                    f64s(&mut w, l);
                }
            }
            match g {
                None => w.u8(0),
                Some(g) => {
                    w.u8(1);
                    w.usize(g.m);
                    f64s(&mut w, &g.kzz);
                    f64s(&mut w, &g.bu);
                    f64s(&mut w, &g.yu);
                    w.u64(g.jitter.to_bits());
                    w.u64(g.bu_jitter.to_bits());
                }
            }
        }
    }
    w.finish()
}

/// Decodes [`encode_state`]'s output.
pub fn decode_state(bytes: &[u8]) -> Result<Vec<TaskSummary>> {
    let mut r = Reader::new(bytes, MAGIC, VERSION)?;
    let n = r.usize()?;
    let mut tasks = Vec::new();
    for _ in 0..n {
        let task = r.usize()?;
        let z = r.f32s()?;
        let f_old = r.f32s()?;
        let scale = f64::from_bits(r.u64()?);
        let k = r.usize()?;
        ensure!(
            k > 0 && f_old.len() % k == 0,
            "inconsistent logits in the state"
        );
        let m = f_old.len() / k;
        ensure!(
            m > 0 && z.len() % m == 0,
            "inconsistent inducing inputs in the state"
        );
        let (mut lambda, mut gp) = (Vec::new(), Vec::new());
        for _ in 0..k {
            lambda.push(match r.u8()? {
                0 => None,
                1 => {
                    let l = read_f64s(&mut r)?;
                    ensure!(l.len() == m * m, "Λ of the wrong size in the state");
                    Some(l)
                }
                f => bail!("invalid flag {f} in the state"),
            });
            gp.push(match r.u8()? {
                0 => None,
                1 => {
                    let gm = r.usize()?;
                    let kzz = read_f64s(&mut r)?;
                    let bu = read_f64s(&mut r)?;
                    let yu = read_f64s(&mut r)?;
                    let jitter = f64::from_bits(r.u64()?);
                    let bu_jitter = f64::from_bits(r.u64()?);
                    ensure!(
                        gm == m && kzz.len() == m * m && bu.len() == m * m && yu.len() == m,
                        "GP summary of the wrong size in the state"
                    );
                    Some(OutputSummary {
                        m,
                        kzz,
                        bu,
                        yu,
                        jitter,
                        bu_jitter,
                    })
                }
                f => bail!("invalid flag {f} in the state"),
            });
        }
        tasks.push(TaskSummary {
            task,
            z,
            f_old,
            scale,
            lambda,
            gp,
        });
    }
    r.finish()?;
    Ok(tasks)
}

impl Strategy for Sfr {
    const NAME: &'static str = "sfr";
    const DESCRIPTION: &'static str =
        "SFR: function-space regulariser τ/2·Σ (1/M)(f(Z)−f_old(Z))ᵀΛ(f(Z)−f_old(Z)) with Λ from a sparse NTK-GP";
    type Config = Config;

    fn hparams() -> Vec<HParam> {
        vec![
            HParam::float(
                "tau",
                1.0,
                0.0,
                1e12,
                "regulariser strength τ (official split-FMNIST: 1.0)",
            )
            .log_scale(),
            HParam::float(
                "prior_precision",
                1e-4,
                1e-12,
                1e12,
                "prior precision δ: kernel scale 1/(δ N_t (t+1)) (official: 1e-4)",
            )
            .log_scale(),
            HParam::int(
                "inducing_points",
                200,
                1,
                100_000,
                "inducing points M per task (official: 200)",
            ),
            HParam::bool(
                "no_covariance",
                false,
                "Λ = I: function-space L2 on the stored logits (ablation)",
            ),
            HParam::float(
                "jitter",
                1e-6,
                0.0,
                1.0,
                "diagonal added to K_zz before the Cholesky (×4 on failure)",
            ),
            HParam::float(
                "bu_jitter",
                1e-6,
                0.0,
                1.0,
                "diagonal added to B_u in Λ = K_zz⁻¹ (B_u + bu_jitter·I) K_zz⁻¹ (official code: \
                 its jitter, 1e-6; the paper's formula: 0)",
            ),
            HParam::int(
                "dual_batch_size",
                1000,
                1,
                1_000_000,
                "rows per chunk when summing over the task's data",
            ),
        ]
    }

    fn new(config: Config) -> Result<Self> {
        ensure!(
            config.tau.is_finite() && config.tau >= 0.0,
            "sfr: `tau` must be finite and >= 0, got {}",
            config.tau
        );
        ensure!(
            config.prior_precision.is_finite() && config.prior_precision > 0.0,
            "sfr: `prior_precision` must be finite and > 0, got {}",
            config.prior_precision
        );
        ensure!(
            config.inducing_points > 0,
            "sfr: `inducing_points` must be >= 1, got 0"
        );
        ensure!(
            config.jitter.is_finite() && config.jitter >= 0.0,
            "sfr: `jitter` must be finite and >= 0, got {}",
            config.jitter
        );
        ensure!(
            config.bu_jitter.is_finite() && config.bu_jitter >= 0.0,
            "sfr: `bu_jitter` must be finite and >= 0, got {}",
            config.bu_jitter
        );
        ensure!(
            config.dual_batch_size > 0,
            "sfr: `dual_batch_size` must be >= 1, got 0"
        );
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
        self.tasks.push(summary);
        self.refresh();
        Ok(())
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(encode_state(&self.tasks))
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        self.tasks = if state.is_empty() {
            Vec::new()
        } else {
            decode_state(state)?
        };
        self.refresh();
        Ok(())
    }
}

clef_sdk::export_plugin!(Sfr);

#[cfg(test)]
mod tests;
