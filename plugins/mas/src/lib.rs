//! `mas`: Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach and Tuytelaars 2018,
//! "Memory Aware Synapses: Learning what (not) to forget", ECCV; official code
//! <https://github.com/rahafaljundi/MAS-Memory-Aware-Synapses>).
//!
//! # What it does
//!
//! Every parameter θ_k (weights and biases; batch-norm buffers, `Role::Buffer`, are skipped)
//! gets an importance Ω_k: how much the squared L2 norm of the network's output moves when θ_k
//! moves, averaged **per sample** over the task's training data.
//!
//! * **At the end of task `t`** (`on_task_end`): with `f(x)` the logits of the task's training
//!   units (task-IL: the task's own head; class-IL: every class seen so far; domain-IL: all
//!   outputs; the same units as the trainer's softmax and EWC's Fisher), over `n` training
//!   samples of the task (all of them when `importance_samples = 0`, else a uniform subset
//!   drawn with the plugin RNG):
//!
//!   ```text
//!   Ω_t,k = (1/n) Σ_x | ∂‖f(x)‖²₂ / ∂θ_k | = (1/n) Σ_x | (J(x)ᵀ 2f(x))_k |
//!   Ω ← Ω + Ω_t          θ* ← θ (the parameters at the end of the task)
//!   ```
//!
//!   The per-sample magnitudes come from the host's `sample_grads` service (ABI 1.6, power 1,
//!   cotangent `2f(x)` on the units, zero elsewhere; evaluation mode), one call per chunk of
//!   256 samples; `per_sample = "vjp"` computes the same sum with one `vjp` per sample (the
//!   only way before ABI 1.6; kept as the reference the `sample_grads` path is tested and timed
//!   against).
//! * **While training every later task** (`after_backward`) it adds the gradient of
//!
//!   ```text
//!   penalty(θ) = λ · Σ_k Ω_k (θ_k − θ*_k)²          ∇ = 2λ · Ω ⊙ (θ − θ*)
//!   ```
//!
//!   (paper Eq. 6; the official `Weight_Regularized_SGD` adds `2·reg_lambda·omega·(θ − θ*)`).
//!
//! Sources: the per-sample average is the paper's Eq. 3 and the official code's
//! `MAS_Omega_Acuumelation(b1=True)` (importance batch size 1, a running mean of `|∂‖f‖²/∂θ|`
//! over the task's training set, the model in `eval()` mode); the accumulation `Ω ← Ω + Ω_t`
//! is the same function's `accumelate_reg_params` (the new importance added to the stored
//! one); λ = 1 is the official code's `reg_lambda` default ("in object recognition it was set
//! to 1"). The official code is multi-head (task-IL): `f` is the previous task's head; for
//! class-IL and domain-IL we use the trainer's training units (a choice: the reference code has
//! no single-head case; Avalanche's `MAS` uses the whole output of its model).
//!
//! State: the whole strategy through serde (Ω and θ* as raw floats, the number of tasks
//! folded in).

use clef_sdk::prelude::*;
use clef_sdk::rng::choose_subset;
use clef_sdk::{Role, Split};

/// How the per-sample gradient magnitudes are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum PerSample {
    /// One `sample_grads` call per chunk of samples (ABI 1.6).
    SampleGrads,
    /// One `vjp` call per sample (the reference; slower).
    Vjp,
}

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// strength λ in λ·Σ Ω(θ−θ*)² (official code: reg_lambda = 1)
    #[hparam(default = 1.0, range = 0.0..=1e12, log, needs_past_tasks)]
    pub lambda: f64,
    /// training samples per task for the importance (0 = all, as the official code)
    #[hparam(default = 0, range = 0..=1_000_000_000, needs_past_tasks)]
    pub importance_samples: usize,
    /// how per-sample gradients are computed: one sample_grads call per chunk, or one vjp
    /// per sample (reference)
    #[hparam(default = "sample-grads", needs_past_tasks)]
    pub per_sample: PerSample,
}

/// One f32 vector per parameter tensor; empty for skipped tensors (`Role::Buffer`).
type PerTensor = Vec<Vec<f32>>;

/// The Memory Aware Synapses strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Mas {
    lambda: f32,
    importance_samples: usize,
    per_sample: PerSample,
    /// Tasks folded into `omega`.
    tasks: u64,
    /// Accumulated importance Ω (empty before the first task ends).
    #[serde(with = "clef_sdk::state::tensors")]
    omega: PerTensor,
    /// Anchor θ*: the parameters at the end of the last task (empty before it ends).
    #[serde(with = "clef_sdk::state::tensors")]
    anchor: PerTensor,
}

/// Samples fetched, forwarded and sent to `sample_grads` at once.
const CHUNK: usize = 256;

/// Adds `|g|` of every tracked tensor's gradient into `acc` (f64) and zeroes every gradient.
fn drain_abs(ctx: &mut Ctx<'_>, tracked: &[bool], acc: &mut [Vec<f64>]) -> Result<()> {
    for (i, (a, &t)) in acc.iter_mut().zip(tracked).enumerate() {
        let g = ctx.grads(i)?;
        if t {
            ensure!(
                g.len() == a.len(),
                "parameter {i} changed size during the importance estimate"
            );
            for (a, g) in a.iter_mut().zip(g.iter()) {
                *a += f64::from(g.abs());
            }
        }
        g.fill(0.0);
    }
    Ok(())
}

/// The training inputs `picks` of `task` (one `task_samples` call per run of consecutive
/// indices), appended to `xs`.
fn gather(ctx: &mut Ctx<'_>, task: usize, picks: &[usize], xs: &mut Vec<f32>) -> Result<()> {
    let mut start = 0;
    while start < picks.len() {
        let mut end = start + 1;
        while end < picks.len() && picks[end] == picks[end - 1] + 1 {
            end += 1;
        }
        let (x, _) = ctx.task_samples(task, Split::Train, picks[start], end - start)?;
        xs.extend_from_slice(&x);
        start = end;
    }
    Ok(())
}

impl Mas {
    /// The importance `Ω_t` of the task that just ended (empty vectors for buffers) and the
    /// number of samples used.
    fn task_importance(
        &mut self,
        ctx: &mut Ctx<'_>,
        task: &TaskInfo,
    ) -> Result<(Vec<Vec<f64>>, usize)> {
        let tracked: Vec<bool> = ctx
            .params()?
            .iter()
            .map(|p| p.role != Role::Buffer)
            .collect();
        let mut acc: Vec<Vec<f64>> = ctx
            .params()?
            .iter()
            .zip(&tracked)
            .map(|(p, &t)| vec![0.0; if t { p.numel } else { 0 }])
            .collect();
        let (k, d) = (task.num_outputs, task.input_dim);
        let units = ctx.training_units(task.task)?;
        ensure!(
            !units.is_empty(),
            "task {} has an empty training mask",
            task.task
        );
        let n_total = task.train_samples;
        let picks = if self.importance_samples == 0 {
            (0..n_total).collect()
        } else {
            choose_subset(n_total, self.importance_samples, |n| ctx.rng_below(n))
        };
        if picks.is_empty() {
            return Ok((acc, 0));
        }
        for i in 0..tracked.len() {
            ctx.grads(i)?.fill(0.0);
        }
        let mut xs = Vec::with_capacity(CHUNK * d);
        for chunk in picks.chunks(CHUNK) {
            xs.clear();
            gather(ctx, task.task, chunk, &mut xs)?;
            let rows = chunk.len();
            // The cotangent 2 f(x) on the training units: J(x)ᵀ c = ∂‖f(x)‖²/∂θ.
            let logits = ctx.forward(&xs, rows)?;
            let mut cot = vec![0.0f32; rows * k];
            for r in 0..rows {
                for &u in &units {
                    cot[r * k + u] = 2.0 * logits[r * k + u];
                }
            }
            match self.per_sample {
                PerSample::SampleGrads => {
                    ctx.sample_grads(&xs, rows, &cot, 1)?;
                    drain_abs(ctx, &tracked, &mut acc)?;
                }
                PerSample::Vjp => {
                    for r in 0..rows {
                        ctx.vjp(&xs[r * d..(r + 1) * d], 1, &cot[r * k..(r + 1) * k])?;
                        drain_abs(ctx, &tracked, &mut acc)?;
                    }
                }
            }
        }
        let scale = 1.0 / picks.len() as f64;
        for a in &mut acc {
            a.iter_mut().for_each(|v| *v *= scale);
        }
        Ok((acc, picks.len()))
    }
}

impl Strategy for Mas {
    const NAME: &'static str = "mas";
    const DESCRIPTION: &'static str =
        "Memory Aware Synapses: λ·Σ Ω(θ−θ*)² with Ω the per-sample mean |∂‖f(x)‖²/∂θ|, summed over tasks";
    // Works on any parameter tensors; batch-norm buffers are skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            lambda: config.lambda as f32,
            importance_samples: config.importance_samples,
            per_sample: config.per_sample,
            tasks: 0,
            omega: Vec::new(),
            anchor: Vec::new(),
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.omega.is_empty() {
            return Ok(());
        }
        let n = ctx.param_count()?;
        ensure!(
            self.omega.len() == n && self.anchor.len() == n,
            "MAS's stored importance has {} tensors (anchor {}) but the model has {n}",
            self.omega.len(),
            self.anchor.len()
        );
        let coef = 2.0 * self.lambda;
        for (i, (om, a)) in self.omega.iter().zip(&self.anchor).enumerate() {
            if om.is_empty() {
                continue;
            }
            let (w, g) = ctx.values_and_grads(i)?;
            ensure!(
                w.len() == om.len() && a.len() == om.len(),
                "parameter {i} has {} values, MAS's stored importance {} and anchor {}",
                w.len(),
                om.len(),
                a.len()
            );
            for (((g, &w), &om), &a) in g.iter_mut().zip(w).zip(om).zip(a) {
                *g += coef * om * (w - a);
            }
        }
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        let (omega_t, used) = self
            .task_importance(ctx, task)
            .with_context(|| format!("computing the MAS importance of task {}", task.task))?;
        if used == 0 {
            warn!(
                task = task.task,
                "the task has no training samples: its importance is zero"
            );
        }
        if self.omega.is_empty() {
            self.omega = omega_t.iter().map(|t| vec![0.0; t.len()]).collect();
        }
        ensure!(
            self.omega.len() == omega_t.len()
                && self
                    .omega
                    .iter()
                    .zip(&omega_t)
                    .all(|(a, b)| a.len() == b.len()),
            "the model's parameter shapes changed since the previous task"
        );
        let (mut sum, mut max, mut count) = (0.0f64, 0.0f32, 0usize);
        for (om, new) in self.omega.iter_mut().zip(&omega_t) {
            for (o, &v) in om.iter_mut().zip(new) {
                *o = (f64::from(*o) + v) as f32;
                sum += f64::from(*o);
                max = max.max(*o);
                count += 1;
            }
        }
        self.anchor = self
            .omega
            .iter()
            .enumerate()
            .map(|(i, om)| {
                Ok(if om.is_empty() {
                    Vec::new()
                } else {
                    ctx.values_ref(i)?.to_vec()
                })
            })
            .collect::<Result<_>>()?;
        self.tasks += 1;
        info!(
            task = task.task,
            samples = used,
            mean_omega = sum / count.max(1) as f64,
            max_omega = max,
            "consolidated"
        );
        Ok(())
    }
}

clef_sdk::export_plugin!(Mas);

#[cfg(test)]
mod tests;
