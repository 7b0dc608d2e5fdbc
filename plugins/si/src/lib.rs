//! `si`: Synaptic Intelligence (Zenke, Poole and Ganguli 2017, "Continual Learning Through
//! Synaptic Intelligence", ICML; official code <https://github.com/ganguli-lab/pathint>).
//!
//! # What it does
//!
//! Every parameter θ_k (weights and biases; batch-norm buffers, `Role::Buffer`, are skipped)
//! gets an importance Ω_k from the path its training took:
//!
//! * **during a task**, per step: in `after_backward`, *before* adding anything, the plugin
//!   copies the task loss's gradient `g` and the parameters θ before the step; in
//!   `after_step` it accumulates the path integral
//!   `ω_k += −g_k · (θ_k^after − θ_k^before)` (the update the optimizer actually made, so
//!   momentum and Adam are accounted for, as in the official code's `unreg_grads · deltas`);
//! * **at the end of the task** (`on_task_end`): with `Δ_k = θ_k^end − θ_k^start` the
//!   parameter's total change over the task,
//!   `Ω_k ← max(0, Ω_k + ω_k / (Δ_k² + ξ))` (the clamp at zero is the official code's
//!   `tf.nn.relu` on the accumulated importance; the paper's Eq. 5 has none), then `ω ← 0`
//!   and `θ* ← θ^end`;
//! * **during every later task**, `after_backward` adds the gradient of the surrogate loss
//!
//!   ```text
//!   penalty(θ) = c · Σ_k Ω_k (θ_k − θ*_k)²          ∇ = 2c · Ω ⊙ (θ − θ*)
//!   ```
//!
//!   (no ½, as in the paper's Eq. 4 and the official `quadratic_regularizer`). The path
//!   integral of that task still uses the task loss's gradient only: it is copied before the
//!   penalty's gradient is added.
//!
//! # Hyperparameters
//!
//! `c` (strength) and `xi` (ξ, damping): table in `docs/strategies.md`. Defaults: c = 1 and
//! ξ = 1e-3, the split-MNIST values of the paper (§5) and of the official split-MNIST notebook
//! (`PATH_INT_PROTOCOL(omega_decay='sum', xi=1e-3)`, `cvals = [0, 1.0]`). Both act only
//! through tasks that have ended (`needs_past_tasks`).
//!
//! Memory: six copies of the trainable parameters (Ω, θ*, ω, θ^start, and the step's `g` and
//! θ^before). State: the whole strategy through serde (Ω, θ*, ω, θ^start as raw floats); the
//! step's copies are scratch, filled and used within one step (`#[serde(skip)]`).

use clef_sdk::prelude::*;
use clef_sdk::Role;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// strength c in c·Σ Ω(θ−θ*)² (Zenke et al. 2017 split MNIST: 1)
    #[hparam(default = 1.0, range = 0.0..=1e12, log, needs_past_tasks)]
    pub c: f64,
    /// damping ξ in Ω += ω/(Δ² + ξ) (Zenke et al. 2017 split MNIST: 1e-3)
    #[hparam(default = 1e-3, range = 1e-12..=1e6, log, needs_past_tasks)]
    pub xi: f64,
}

/// One f32 vector per parameter tensor; empty for skipped tensors (`Role::Buffer`).
type PerTensor = Vec<Vec<f32>>;

/// The Synaptic Intelligence strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Si {
    c: f32,
    xi: f32,
    /// Consolidated importance Ω (empty before the first task ends).
    #[serde(with = "clef_sdk::state::tensors")]
    omega: PerTensor,
    /// Anchor θ*: the parameters at the end of the last task (empty before it ends).
    #[serde(with = "clef_sdk::state::tensors")]
    anchor: PerTensor,
    /// The running path integral ω of the current task.
    #[serde(with = "clef_sdk::state::tensors")]
    path: PerTensor,
    /// θ at the start of the current task.
    #[serde(with = "clef_sdk::state::tensors")]
    start: PerTensor,
    /// The step's task-loss gradient, copied in `after_backward`.
    #[serde(skip)]
    grad: PerTensor,
    /// The parameters before the step, copied in `after_backward`.
    #[serde(skip)]
    before: PerTensor,
    /// Whether `grad`/`before` hold the current step (set by `after_backward`, cleared by
    /// `after_step`).
    #[serde(skip)]
    pending: bool,
}

/// Which tensors SI tracks: every one but batch-norm buffers.
fn tracked(ctx: &Ctx<'_>) -> Result<Vec<bool>> {
    Ok(ctx
        .params()?
        .iter()
        .map(|p| p.role != Role::Buffer)
        .collect())
}

/// Copies of the tracked tensors' values (empty vectors for the others).
fn copy_values(ctx: &Ctx<'_>, tracked: &[bool]) -> Result<PerTensor> {
    tracked
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            Ok(if t {
                ctx.values_ref(i)?.to_vec()
            } else {
                Vec::new()
            })
        })
        .collect()
}

/// Checks that `stored` (named `what`) has the model's layout: one vector per tensor, of the
/// tensor's size or empty.
fn check_layout(ctx: &Ctx<'_>, stored: &PerTensor, what: &str) -> Result<()> {
    let n = ctx.param_count()?;
    ensure!(
        stored.len() == n,
        "SI's {what} has {} tensors but the model has {n}",
        stored.len()
    );
    for (i, s) in stored.iter().enumerate() {
        let numel = ctx.values_ref(i)?.len();
        ensure!(
            s.is_empty() || s.len() == numel,
            "SI's {what}: parameter {i} has {numel} values, the stored copy {}",
            s.len()
        );
    }
    Ok(())
}

impl Si {
    /// Starts the path integral of a task at the current parameters.
    fn begin_task(&mut self, ctx: &Ctx<'_>) -> Result<()> {
        let tracked = tracked(ctx)?;
        self.start = copy_values(ctx, &tracked)?;
        self.path = self.start.iter().map(|s| vec![0.0; s.len()]).collect();
        self.pending = false;
        Ok(())
    }
}

impl Strategy for Si {
    const NAME: &'static str = "si";
    const DESCRIPTION: &'static str =
        "Synaptic Intelligence: c·Σ Ω(θ−θ*)² with per-parameter path-integral importances Ω";
    // Works on any parameter tensors; batch-norm buffers are skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            c: config.c as f32,
            xi: config.xi as f32,
            omega: Vec::new(),
            anchor: Vec::new(),
            path: Vec::new(),
            start: Vec::new(),
            grad: Vec::new(),
            before: Vec::new(),
            pending: false,
        })
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        self.begin_task(ctx)
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.start.is_empty() {
            // A host that skipped on_task_start (e.g. a resumed trial mid-task): start here.
            self.begin_task(ctx)?;
        }
        check_layout(ctx, &self.start, "path integral")?;
        // 1. The task loss's gradient and θ before the step, before the penalty is added.
        self.grad.resize(self.start.len(), Vec::new());
        self.before.resize(self.start.len(), Vec::new());
        for (i, s) in self.start.iter().enumerate() {
            let (g, b) = (&mut self.grad[i], &mut self.before[i]);
            g.clear();
            b.clear();
            if !s.is_empty() {
                g.extend_from_slice(ctx.grads_ref(i)?);
                b.extend_from_slice(ctx.values_ref(i)?);
            }
        }
        self.pending = true;
        // 2. The penalty's gradient 2c·Ω(θ − θ*).
        if self.omega.is_empty() {
            return Ok(());
        }
        check_layout(ctx, &self.omega, "importance Ω")?;
        check_layout(ctx, &self.anchor, "anchor θ*")?;
        let coef = 2.0 * self.c;
        for (i, (om, a)) in self.omega.iter().zip(&self.anchor).enumerate() {
            ensure!(
                om.len() == a.len(),
                "SI's state: parameter {i} has {} importances but {} anchor values",
                om.len(),
                a.len()
            );
            if om.is_empty() {
                continue;
            }
            let (w, g) = ctx.values_and_grads(i)?;
            for (((g, &w), &om), &a) in g.iter_mut().zip(w).zip(om).zip(a) {
                *g += coef * om * (w - a);
            }
        }
        Ok(())
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if !self.pending {
            return Ok(());
        }
        self.pending = false;
        for (i, p) in self.path.iter_mut().enumerate() {
            if p.is_empty() {
                continue;
            }
            let after = ctx.values_ref(i)?;
            ensure!(
                after.len() == p.len(),
                "parameter {i} changed size during the step"
            );
            for (((p, &g), &b), &a) in p
                .iter_mut()
                .zip(&self.grad[i])
                .zip(&self.before[i])
                .zip(after)
            {
                *p -= g * (a - b);
            }
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.start.is_empty() {
            self.begin_task(ctx)?;
        }
        check_layout(ctx, &self.start, "path integral")?;
        let end = copy_values(ctx, &tracked(ctx)?)?;
        if self.omega.is_empty() {
            self.omega = end.iter().map(|e| vec![0.0; e.len()]).collect();
        }
        check_layout(ctx, &self.omega, "importance Ω")?;
        let xi = self.xi;
        let (mut sum, mut max, mut count) = (0.0f64, 0.0f32, 0usize);
        for (((om, p), s), e) in self
            .omega
            .iter_mut()
            .zip(&self.path)
            .zip(&self.start)
            .zip(&end)
        {
            ensure!(
                om.len() == e.len() && p.len() == e.len() && s.len() == e.len(),
                "the model's trainable tensors changed since the task started"
            );
            for (((om, &p), &s), &e) in om.iter_mut().zip(p).zip(s).zip(e) {
                let delta = e - s;
                *om = (*om + p / (delta * delta + xi)).max(0.0);
                sum += f64::from(*om);
                max = max.max(*om);
                count += 1;
            }
        }
        info!(
            task = task.task,
            mean_omega = sum / count.max(1) as f64,
            max_omega = max,
            "consolidated"
        );
        self.anchor = end.clone();
        self.path = end.iter().map(|e| vec![0.0; e.len()]).collect();
        self.start = end;
        self.pending = false;
        Ok(())
    }
}

clef_sdk::export_plugin!(Si);

#[cfg(test)]
mod tests;
