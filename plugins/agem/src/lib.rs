//! `agem`: Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach and Elhoseiny 2019,
//! "Efficient Lifelong Learning with A-GEM", ICLR; official code
//! <https://github.com/facebookresearch/agem>; Mammoth's `models/agem.py`).
//!
//! # What it does
//!
//! * **Episodic memory** (the paper's per-task memory): at the end of task `t`
//!   (`on_task_end`), `m = memory_size / num_tasks` (integer division, as Mammoth's
//!   `samples_per_task = buffer_size // N_TASKS`) training samples of the task, drawn uniformly
//!   without replacement with the plugin RNG, are stored with their target and task (inputs as
//!   `task_samples` returns them: after the task's transform, never augmented). The memory
//!   never holds samples of the task being trained, so there is no constraint during the first
//!   task.
//! * **Projection** (`after_backward`, from the second task on): the gradient buffers hold the
//!   batch loss's gradient `g`. The plugin draws `s` rows of the memory uniformly without
//!   replacement (`s = sample_size`, or the batch's current-task row count when it is 0),
//!   computes the reference gradient `g_ref` of their mean masked cross-entropy with the
//!   host's `batch_grad` service (ABI 1.6: the gradient buffers, parameters and optimizer
//!   state are untouched; in task-IL every row uses its own task's head, in class-IL the
//!   classes seen so far, in domain-IL all outputs) and, if `g·g_ref < 0`, replaces
//!
//!   ```text
//!   g ← g − (g·g_ref / g_ref·g_ref) · g_ref
//!   ```
//!
//!   over every trainable tensor at once (batch-norm buffers, `Role::Buffer`, are neither in
//!   the dot products nor changed). Then `g·g_ref = 0 ≥ 0`: to first order the step does not
//!   increase the memory's loss (paper Eq. 11). Dot products are summed in f64.
//!
//! # Hyperparameters
//!
//! `memory_size` (total slots; the name `replay` uses) and `sample_size` (rows of the
//! reference batch): table in `docs/strategies.md`. Defaults: 500 is one of Buzzega et al.
//! 2020's buffer sizes (200 / 500 / 5120), the same default as `replay` so the two compare at
//! equal memory; `sample_size = 0` (as many rows as the batch's current rows) is our choice,
//! the rule `replay` uses for its replayed rows (Mammoth's `minibatch_size` is a free
//! argument).
//!
//! State: the whole strategy through serde (the memory's inputs as raw floats); the task-mask
//! cache and the batch size seen in `before_batch` are rebuilt (`#[serde(skip)]`).

use clef_sdk::memory::{Row, SampleStore};
use clef_sdk::prelude::*;
use clef_sdk::rng::choose_subset;
use clef_sdk::{Role, Split};

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// capacity of the episodic memory in samples, split evenly over the tasks
    #[hparam(default = 500, range = 0..=100_000_000, needs_past_tasks)]
    pub memory_size: usize,
    /// memory rows of the reference gradient per step; 0 = as many as the batch's
    /// current-task rows
    #[hparam(default = 0, range = 0..=1_000_000, needs_past_tasks)]
    pub sample_size: usize,
}

/// The A-GEM strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Agem {
    memory_size: usize,
    sample_size: usize,
    /// Created at the first task end (when the input width is known).
    memory: Option<SampleStore>,
    /// Steps of the current task, and how many of them were projected (for the log).
    steps: u64,
    projected: u64,
    /// The current batch's current-task rows (read in `before_batch`).
    #[serde(skip)]
    current_rows: usize,
    /// Task-IL class masks by task id (static for a trial, refetched after a resume).
    #[serde(skip)]
    masks: Vec<Option<Vec<bool>>>,
}

/// A-GEM's projection (paper Eq. 11) of the gradient `grads` (one slice per tensor) against
/// `g_ref` (flat, the tensors in the same order): if `g·g_ref < 0`,
/// `g ← g − (g·g_ref / g_ref·g_ref) g_ref`; tensors with `tracked[i] == false` take part in
/// neither the dot products nor the update. Returns `g·g_ref` (before any change), or `None`
/// when `g_ref` is zero on the tracked tensors (nothing to project on).
pub fn project(grads: &mut [&mut [f32]], g_ref: &[f32], tracked: &[bool]) -> Result<Option<f64>> {
    let total: usize = grads.iter().map(|g| g.len()).sum();
    ensure!(
        total == g_ref.len() && tracked.len() == grads.len(),
        "A-GEM: the reference gradient has {} values for {} tensors of {total} values",
        g_ref.len(),
        grads.len()
    );
    let (mut dot, mut norm2) = (0.0f64, 0.0f64);
    let mut off = 0;
    for (g, &t) in grads.iter().zip(tracked) {
        let r = &g_ref[off..off + g.len()];
        if t {
            for (&g, &r) in g.iter().zip(r) {
                dot += f64::from(g) * f64::from(r);
                norm2 += f64::from(r) * f64::from(r);
            }
        }
        off += g.len();
    }
    if norm2 == 0.0 {
        return Ok(None);
    }
    if dot < 0.0 {
        let c = dot / norm2;
        let mut off = 0;
        for (g, &t) in grads.iter_mut().zip(tracked) {
            let r = &g_ref[off..off + g.len()];
            if t {
                for (g, &r) in g.iter_mut().zip(r) {
                    *g = (f64::from(*g) - c * f64::from(r)) as f32;
                }
            }
            off += g.len();
        }
    }
    Ok(Some(dot))
}

/// Task `task`'s head mask, fetched once and cached.
fn cached_mask<'m>(
    masks: &'m mut Vec<Option<Vec<bool>>>,
    ctx: &mut Ctx<'_>,
    task: usize,
) -> Result<&'m [bool]> {
    if masks.len() <= task {
        masks.resize(task + 1, None);
    }
    let slot = &mut masks[task];
    if slot.is_none() {
        *slot = Some(ctx.task_mask(task)?);
    }
    Ok(slot.as_deref().unwrap_or_default())
}

impl Agem {
    /// The reference gradient of `s` memory rows and the current gradients, projected.
    fn constrain(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let Some(memory) = &self.memory else {
            return Ok(());
        };
        if memory.is_empty() {
            return Ok(());
        }
        let info = ctx.task_info()?;
        let wanted = if self.sample_size == 0 {
            self.current_rows.max(1)
        } else {
            self.sample_size
        };
        let picks = memory.sample(wanted, |n| ctx.rng_below(n));
        let rows = memory.gather(&picks);
        let masks = match info.setting {
            Setting::TaskIl => {
                let mut m = Vec::with_capacity(picks.len() * info.num_outputs);
                for &task in &rows.tasks {
                    m.extend_from_slice(cached_mask(&mut self.masks, ctx, task)?);
                }
                Some(m)
            }
            Setting::ClassIl | Setting::DomainIl => None,
            Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
        };
        let (g_ref, _loss) = ctx
            .batch_grad(&rows.x, &rows.targets, masks.as_deref())
            .context("the reference gradient of the episodic memory")?;
        let tracked: Vec<bool> = ctx
            .params()?
            .iter()
            .map(|p| p.role != Role::Buffer)
            .collect();
        // The gradients as one list of slices (copied out and back: the host lends one
        // writable view at a time).
        let mut grads: Vec<Vec<f32>> = (0..tracked.len())
            .map(|i| ctx.grads_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        let dot = {
            let mut views: Vec<&mut [f32]> = grads.iter_mut().map(Vec::as_mut_slice).collect();
            project(&mut views, &g_ref, &tracked)?
        };
        self.steps += 1;
        if dot.is_some_and(|d| d < 0.0) {
            self.projected += 1;
            for (i, g) in grads.iter().enumerate() {
                if tracked[i] {
                    ctx.grads(i)?.copy_from_slice(g);
                }
            }
        }
        Ok(())
    }
}

impl Strategy for Agem {
    const NAME: &'static str = "agem";
    const DESCRIPTION: &'static str =
        "A-GEM: project the gradient when it conflicts with the reference gradient of an episodic memory";
    // Works on any parameter tensors; batch-norm buffers are skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            memory_size: config.memory_size,
            sample_size: config.sample_size,
            memory: None,
            steps: 0,
            projected: 0,
            current_rows: 0,
            masks: Vec::new(),
        })
    }

    fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        self.steps = 0;
        self.projected = 0;
        Ok(())
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.current_rows = ctx.batch()?.current_rows;
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        self.constrain(ctx)
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.steps > 0 {
            info!(
                task = task.task,
                steps = self.steps,
                projected = self.projected,
                "A-GEM projections"
            );
        }
        let per_task = self.memory_size / task.num_tasks.max(1);
        if per_task == 0 {
            warn!(
                memory_size = self.memory_size,
                tasks = task.num_tasks,
                "the memory has less than one slot per task: nothing is stored"
            );
            return Ok(());
        }
        let picks = choose_subset(task.train_samples, per_task, |n| ctx.rng_below(n));
        let memory = self
            .memory
            .get_or_insert_with(|| SampleStore::new(task.input_dim, 0));
        ensure!(
            memory.dim() == task.input_dim,
            "the episodic memory holds samples of {} features, the task has {}",
            memory.dim(),
            task.input_dim
        );
        let mut start = 0;
        while start < picks.len() {
            let mut end = start + 1;
            while end < picks.len() && picks[end] == picks[end - 1] + 1 {
                end += 1;
            }
            let (x, y) = ctx.task_samples(task.task, Split::Train, picks[start], end - start)?;
            for (r, &target) in y.iter().enumerate() {
                let row = &x[r * task.input_dim..(r + 1) * task.input_dim];
                memory.push(Row::new(row, target, task.task))?;
            }
            start = end;
        }
        info!(
            task = task.task,
            stored = picks.len(),
            held = memory.len(),
            "episodic memory"
        );
        Ok(())
    }
}

clef_sdk::export_plugin!(Agem);

#[cfg(test)]
mod tests;
