//! `er-ace`: experience replay with the asymmetric cross-entropy (Caccia, Aljundi, Asadi,
//! Tuytelaars, Pineau and Belilovsky 2022, "New Insights on Reducing Abrupt Representation
//! Change in Online Continual Learning", ICLR; official code github.com/pclucas14/AML,
//! `methods/er_ace.py`, and Mammoth, github.com/aimagelab/mammoth, `models/er_ace.py`).
//!
//! # What it does
//!
//! A reservoir memory (the SDK's [`Reservoir`], as `replay`) of the training stream. The loss
//! (the ABI 1.6 `loss` hook) is the sum of two mean cross-entropies, each over its own rows:
//!
//! * **current rows**: from the second task on, the softmax covers only the classes present
//!   among the batch's current rows (Mammoth: `mask[:, present] = 1`, masked only when
//!   `self.task > 0`), intersected with the row's training mask; in the first task the row's
//!   training mask. The reference also unmasks every unit from the largest label seen so far
//!   upwards (classes not seen yet, under its ordered labels); clef's training mask never
//!   contains an unseen class, so the intersection drops them;
//! * **replayed rows** (from the second task on, as Mammoth's `if self.task > 0`): `r` rows drawn
//!   uniformly without replacement from the memory (`r = replay_batch_size`, or the batch's
//!   current-task row count when that is 0), their softmax over the row's training mask
//!   (class-IL: every class seen so far; task-IL: the row's own task head).
//!
//! After the loss, the batch's current rows are offered to the reservoir (every task, the
//! first included, as Mammoth's `buffer.add_data` after each step).

use clef_sdk::loss::cross_entropy;
use clef_sdk::memory::{Reservoir, Row};
use clef_sdk::prelude::*;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// capacity of the replay memory in samples (reservoir sampling)
    #[hparam(default = 500, range = 0..=100_000_000)]
    pub memory_size: usize,
    /// replayed rows per batch; 0 = as many as the batch's current-task rows
    #[hparam(default = 0, range = 0..=1_000_000)]
    pub replay_batch_size: usize,
}

/// What `before_batch` appended, for the `loss` hook of the same step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Pending {
    task: usize,
    replayed: usize,
}

/// The ER-ACE strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErAce {
    memory_size: usize,
    replay_batch_size: usize,
    /// Created at the first batch (when the input width is known).
    memory: Option<Reservoir>,
    /// Task-IL heads by task id (`task_mask`), fetched once.
    #[serde(skip)]
    masks: Vec<Option<Vec<bool>>>,
    #[serde(skip)]
    pending: Option<Pending>,
}

impl ErAce {
    /// The memory (`None` before the first batch).
    pub fn memory(&self) -> Option<&Reservoir> {
        self.memory.as_ref()
    }

    /// Task `task`'s head mask, fetched once.
    fn head(&mut self, ctx: &mut Ctx<'_>, task: usize) -> Result<&[bool]> {
        if self.masks.len() <= task {
            self.masks.resize(task + 1, None);
        }
        let slot = &mut self.masks[task];
        if slot.is_none() {
            *slot = Some(ctx.task_mask(task)?);
        }
        Ok(slot.as_deref().unwrap_or_default())
    }
}

impl Strategy for ErAce {
    const NAME: &'static str = "er-ace";
    const DESCRIPTION: &'static str =
        "ER-ACE: replay with the asymmetric cross-entropy (current rows over the batch's classes)";
    // The loss is on logits only; the memory stores inputs of any shape.
    const CONV_BACKBONES: bool = true;
    const CUSTOM_LOSS: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            memory_size: config.memory_size,
            replay_batch_size: config.replay_batch_size,
            memory: None,
            masks: Vec::new(),
            pending: None,
        })
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.pending = None;
        let info = ctx.task_info()?;
        let (current, cols) = {
            let batch = ctx.batch()?;
            (batch.current_rows, batch.cols)
        };
        let capacity = self.memory_size;
        let memory = self
            .memory
            .get_or_insert_with(|| Reservoir::new(capacity, cols, 0));
        ensure!(
            memory.store().dim() == cols,
            "the ER-ACE memory holds samples of {} features, the batch has {cols}",
            memory.store().dim()
        );
        let mut pending = Pending {
            task: info.task,
            replayed: 0,
        };
        if info.task > 0 {
            let wanted = if self.replay_batch_size == 0 {
                current
            } else {
                self.replay_batch_size
            };
            let picks = memory.store().sample(wanted, |n| ctx.rng_below(n));
            if !picks.is_empty() {
                let rows = memory.store().gather(&picks);
                let masks = match info.setting {
                    Setting::TaskIl => {
                        let mut m = Vec::with_capacity(picks.len() * info.num_outputs);
                        for &task in &rows.tasks {
                            m.extend_from_slice(self.head(ctx, task)?);
                        }
                        Some(m)
                    }
                    Setting::ClassIl | Setting::DomainIl => None,
                    Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
                };
                ctx.append_rows(&rows.x, &rows.targets, masks.as_deref())
                    .context("appending the replayed rows")?;
                pending.replayed = picks.len();
            }
        }
        self.pending = Some(pending);
        Ok(())
    }

    fn loss(&mut self, ctx: &mut Ctx<'_>, batch: &LossBatch<'_>, cot: &mut [f32]) -> Result<f32> {
        let pending = self.pending.take().unwrap_or_default();
        let (c, k, nr) = (batch.current_rows, batch.num_outputs, pending.replayed);
        ensure!(
            batch.rows == c + nr,
            "the loss batch has {} rows; ER-ACE expected {c} current + {nr} replayed (rows \
             appended by another strategy?)",
            batch.rows
        );
        ensure!(
            cot.len() == batch.rows * k,
            "the cotangent has {} values for {} rows of {k} outputs",
            cot.len(),
            batch.rows
        );
        let (value, _) = asymmetric_ce(batch, nr, pending.task > 0, cot);
        if let Some(memory) = self.memory.as_mut() {
            for r in 0..c {
                let row = Row::new(batch.x_of(r), batch.target(r), pending.task);
                memory.offer(row, |n| ctx.rng_below(n))?;
            }
        }
        Ok(value as f32)
    }

    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if let Some(m) = &self.memory {
            info!(
                task = task.task,
                held = m.len(),
                seen = m.seen(),
                per_task = ?m.store().per_task(),
                "ER-ACE memory"
            );
        }
        Ok(())
    }
}

/// The asymmetric cross-entropy of a batch whose last `replayed` rows are replayed: the mean
/// CE of the current rows (masked to the classes present among them when `mask_present`,
/// within each row's training mask) plus the mean CE of the replayed rows (each over its
/// training mask); the gradient is added into `cot`. Returns `(loss, units of the current
/// rows' softmax)`.
pub fn asymmetric_ce(
    batch: &LossBatch<'_>,
    replayed: usize,
    mask_present: bool,
    cot: &mut [f32],
) -> (f64, Vec<bool>) {
    let k = batch.num_outputs;
    let c = batch.current_rows;
    let mut present = vec![!mask_present; k];
    if mask_present {
        for r in 0..c {
            present[batch.target(r)] = true;
        }
    }
    let mut current = 0.0;
    for r in 0..c {
        let mask = batch.mask_of(r);
        current += cross_entropy(
            batch.logits_of(r),
            batch.target(r),
            |u| mask[u] != 0 && present[u],
            1.0 / c as f64,
            &mut cot[r * k..(r + 1) * k],
        );
    }
    let mut replay = 0.0;
    for r in c..c + replayed {
        let mask = batch.mask_of(r);
        replay += cross_entropy(
            batch.logits_of(r),
            batch.target(r),
            |u| mask[u] != 0,
            1.0 / replayed as f64,
            &mut cot[r * k..(r + 1) * k],
        );
    }
    let mean = |s: f64, n: usize| if n == 0 { 0.0 } else { s / n as f64 };
    (mean(current, c) + mean(replay, replayed), present)
}

clef_sdk::export_plugin!(ErAce);

#[cfg(test)]
mod tests;
