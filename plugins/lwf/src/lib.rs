//! `lwf`: Learning without Forgetting (Li & Hoiem 2017), with Hinton et al.'s (2015)
//! temperature-scaled distillation.
//!
//! # What it does
//!
//! At the start of every task `t ≥ 1` the plugin copies every parameter tensor: the *old
//! model* (teacher) is the network as it was when task `t − 1` ended. It also fixes the *old
//! heads*, the softmax groups of the tasks before `t`:
//!
//! * task-IL: one head per old task `j < t` (`task_mask(j)`), each with its own softmax;
//! * class-IL: one head, the union of the units of all tasks `< t`;
//! * domain-IL: one head, every unit (the shared head).
//!
//! In `before_batch` it copies the inputs `x` of the batch's current-task rows (the first
//! `current_rows`; `batch()` is only available there). In `after_backward` it computes the
//! teacher's logits on `x` **by temporarily writing the old parameters into the parameter views,
//! calling `forward`, and writing the current parameters back bit for bit** (forward never
//! touches the gradient buffers, so the batch gradient is unaffected, and the restore happens
//! even if `forward` fails), then the current (student) logits with `forward`, and adds the
//! gradient of the distillation loss with one `vjp`:
//!
//! ```text
//! L_distill = α · c_T · (1/B) · Σ_{rows b} Σ_{old heads H} KD_T(b, H)
//! KD_T(b, H) = −Σ_{u∈H} softmax(z_old[b,H]/T)_u · log softmax(z_new[b,H]/T)_u
//! c_T = T² if t_squared else 1
//! d L_distill / d z_new[b,u] = α · c_T / (B·T) · (softmax(z_new/T)_u − softmax(z_old/T)_u)
//! ```
//!
//! where `B` is the number of current-task rows. The trainer's own loss on the batch (the
//! masked cross-entropy of the new task) is unchanged, so the total objective is
//! `L_new + L_distill`. Nothing happens during the first task.
//!
//! # Hyperparameters
//!
//! `alpha`, `temperature` and `t_squared`: table and sources in `docs/strategies.md`. The
//! defaults reproduce Li & Hoiem's loss: the plain cross-entropy at T = 2 with weight 1 and
//! no T² factor. van de Ven et al.'s code (Three types of incremental learning, Nature
//! Machine Intelligence 2022; github.com/GMvandeVen/continual-learning) does the same: its
//! `loss_fn_kd` multiplies by T² only with `norm=True`, which its callers do not pass.
//! `t_squared = true` gives Hinton et al.'s scaling, which keeps the gradient magnitude
//! independent of T (useful when searching T). Summing (not averaging) over old heads follows
//! Li & Hoiem's multi-task formulation.
//!
//! State: the whole strategy through serde: the hyperparameters, the old model (raw floats)
//! and the old heads; the copied batch and the loss log are transient (`#[serde(skip)]`).

pub mod kd;

use clef_sdk::prelude::*;
use clef_sdk::Error;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// weight α of the distillation loss (Li & Hoiem 2017: 1)
    #[hparam(default = 1.0, range = 0.0..=1e6, log, needs_past_tasks)]
    pub alpha: f64,
    /// distillation temperature T (Li & Hoiem 2017: 2)
    #[hparam(default = 2.0, range = 0.01..=100.0, needs_past_tasks)]
    pub temperature: f64,
    /// multiply the distillation loss by T² (Hinton et al. 2015; Li & Hoiem 2017: no)
    #[hparam(default = false, needs_past_tasks)]
    pub t_squared: bool,
}

/// The old model: parameters and heads at the start of the current task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Teacher {
    /// The task whose training it regularises (the old model is from the end of `task − 1`).
    pub task: u64,
    /// Every parameter tensor of the old model.
    #[serde(with = "clef_sdk::state::tensors")]
    pub params: Vec<Vec<f32>>,
    /// The old heads (sets of output units), one softmax each.
    pub heads: Vec<Vec<usize>>,
}

/// The LwF strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Lwf {
    alpha: f64,
    temperature: f64,
    t_squared: bool,
    teacher: Option<Teacher>,
    /// Inputs of the current-task rows of the batch (copied in `before_batch`).
    #[serde(skip)]
    x: Vec<f32>,
    #[serde(skip)]
    rows: usize,
    /// The current parameters while the teacher's are in the views.
    #[serde(skip)]
    stash: Vec<Vec<f32>>,
    /// Distillation loss summed over the task's steps, and the step count (for the log).
    #[serde(skip)]
    loss_sum: f64,
    #[serde(skip)]
    steps: u64,
}

/// The softmax groups of the tasks before `task` (see the crate docs).
pub fn old_heads(
    ctx: &mut Ctx<'_>,
    setting: Setting,
    task: usize,
    num_outputs: usize,
) -> Result<Vec<Vec<usize>>> {
    let units = |mask: &[bool]| -> Vec<usize> {
        mask.iter()
            .enumerate()
            .filter_map(|(u, &m)| m.then_some(u))
            .collect()
    };
    let heads = match setting {
        Setting::TaskIl => (0..task)
            .map(|j| ctx.task_mask(j).map(|m| units(&m)))
            .collect::<Result<Vec<_>>>()?,
        Setting::ClassIl => {
            let mut union = vec![false; num_outputs];
            for j in 0..task {
                for (u, m) in union.iter_mut().zip(ctx.task_mask(j)?) {
                    *u |= m;
                }
            }
            vec![units(&union)]
        }
        Setting::DomainIl => vec![(0..num_outputs).collect()],
        Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
    };
    // A head with no units (an empty task) has no softmax to distil.
    Ok(heads.into_iter().filter(|h| !h.is_empty()).collect())
}

impl Lwf {
    /// The teacher's logits on `self.x`: swap the old parameters into the views, forward,
    /// swap the current ones back (always, bit for bit).
    fn teacher_logits(&mut self, ctx: &mut Ctx<'_>) -> Result<Vec<f32>> {
        let Some(teacher) = &self.teacher else {
            bail!("no old model");
        };
        let n = teacher.params.len();
        ensure!(
            n == ctx.param_count()?,
            "the old model has {n} tensors but the model has {}",
            ctx.param_count()?
        );
        for (i, old) in teacher.params.iter().enumerate() {
            let len = ctx.values_ref(i)?.len();
            ensure!(
                len == old.len(),
                "parameter {i} has {len} values, the old model {}",
                old.len()
            );
        }
        self.stash.resize_with(n, Vec::new);
        let mut swapped = 0;
        let mut result: Result<Vec<f32>> = Ok(Vec::new());
        for (i, old) in teacher.params.iter().enumerate() {
            match ctx.values(i) {
                Ok(v) => {
                    self.stash[i].clear();
                    self.stash[i].extend_from_slice(v);
                    v.copy_from_slice(old);
                    swapped += 1;
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            result = ctx.forward(&self.x, self.rows);
        }
        // Restore the current parameters whatever happened above.
        let mut restore_error: Option<Error> = None;
        for i in 0..swapped {
            match ctx.values(i) {
                Ok(v) => v.copy_from_slice(&self.stash[i]),
                Err(e) => {
                    restore_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = restore_error {
            return Err(e.context("restoring the current parameters after the old model's forward"));
        }
        result.context("forward pass of the old model")
    }
}

impl Strategy for Lwf {
    const NAME: &'static str = "lwf";
    const DESCRIPTION: &'static str =
        "Learning without Forgetting: distil the previous model's old-head outputs on the new data";
    // Works on any parameter tensors (buffers get no gradient the optimizer would use).
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            alpha: config.alpha,
            temperature: config.temperature,
            t_squared: config.t_squared,
            teacher: None,
            x: Vec::new(),
            rows: 0,
            stash: Vec::new(),
            loss_sum: 0.0,
            steps: 0,
        })
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        self.loss_sum = 0.0;
        self.steps = 0;
        self.rows = 0;
        if task.task == 0 {
            self.teacher = None;
            return Ok(());
        }
        let params = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<Vec<_>>>()?;
        let heads = old_heads(ctx, task.setting, task.task, task.num_outputs)?;
        info!(
            task = task.task,
            heads = heads.len(),
            "stored the old model for distillation"
        );
        self.teacher = Some(Teacher {
            task: task.task as u64,
            params,
            heads,
        });
        Ok(())
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.rows = 0;
        if self.teacher.is_none() {
            return Ok(());
        }
        let batch = ctx.batch()?;
        let (x, _) = batch.current()?;
        self.x.clear();
        self.x.extend_from_slice(x);
        self.rows = batch.current_rows;
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        if rows == 0 || self.alpha == 0.0 {
            return Ok(());
        }
        let Some(heads) = self.teacher.as_ref().map(|t| t.heads.clone()) else {
            return Ok(());
        };
        if heads.is_empty() {
            return Ok(());
        }
        self.rows = rows;
        let old = self.teacher_logits(ctx);
        self.rows = 0;
        let old = old?;
        let new = ctx.forward(&self.x, rows)?;
        let outputs = new.len() / rows;
        let t = self.temperature;
        let scale = self.alpha * if self.t_squared { t * t } else { 1.0 } / rows as f64;
        let mut cot = vec![0.0f32; new.len()];
        let kd = kd::Distillation {
            heads: &heads,
            temperature: t,
            scale,
        };
        let loss = kd.apply(&old, &new, rows, outputs, &mut cot)?;
        ctx.vjp(&self.x, rows, &cot)?;
        self.loss_sum += loss;
        self.steps += 1;
        Ok(())
    }

    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.steps > 0 {
            info!(
                task = task.task,
                mean_distillation_loss = self.loss_sum / self.steps as f64,
                "task done"
            );
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(Lwf);

#[cfg(test)]
mod tests;
