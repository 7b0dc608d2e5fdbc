//! Dark Experience Replay (Buzzega, Boschini, Porrello, Abati and Calderara 2020, "Dark
//! Experience for General Continual Learning: a Strong, Simple Baseline", NeurIPS; official
//! code: Mammoth, github.com/aimagelab/mammoth, `models/der.py` and `models/derpp.py`): the
//! part the `der` and `derpp` plugins share, written once.
//!
//! [`Dark`] keeps a reservoir memory ([`Reservoir`], Algorithm R) of training samples, each
//! with the network's **logits at insertion time** as its payload: the training-mode logits of
//! the step that saw the row, as Mammoth stores `outputs.data` after the optimizer step. Per
//! batch:
//!
//! * `before_batch` ([`Dark::before_batch`]) draws `r` rows uniformly without replacement
//!   (`r = replay_batch_size`, or the batch's current-task row count when that is 0) for the
//!   logit term, and, for DER++ (`beta > 0`), a second, independent draw of `r` rows for the
//!   label term; both are appended to the batch in that order (task-IL: each row with its own
//!   task's head as its mask; class-IL and domain-IL: the current training mask).
//! * the `loss` hook ([`Dark::loss`]) computes
//!   `L = CE(current rows) + α · MSE(z(x'), ẑ') + β · CE(replayed rows of the second draw)`:
//!   the first and last terms are mean masked softmax cross-entropies over their own rows,
//!   the middle one the mean squared error over every element (rows × output units) of the
//!   first draw's logits against the stored ones (`F.mse_loss`'s mean, as Mammoth computes
//!   it, so Mammoth's α carries over). Then the batch's current-task rows are offered to the
//!   reservoir with their logits.
//!
//! Replay starts as soon as the memory holds a row (also within the first task), as in
//! Mammoth (`if not self.buffer.is_empty()`); a batch never replays its own rows.

use clef_sdk::loss::{cross_entropy, squared_error};
use clef_sdk::memory::{Reservoir, Row};
use clef_sdk::prelude::*;

/// The hyperparameters of DER (`beta = 0`) and DER++.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DarkConfig {
    /// Reservoir capacity in samples.
    pub memory_size: usize,
    /// Rows per replayed draw; 0 = the batch's current-task row count.
    pub replay_batch_size: usize,
    /// Weight α of the logit-matching (MSE) term.
    pub alpha: f64,
    /// Weight β of the replayed cross-entropy term; 0 disables it and its draw (DER).
    pub beta: f64,
}

/// What `before_batch` appended, for the `loss` hook of the same step (never checkpointed:
/// both run within one training step).
#[derive(Debug, Clone, Default, PartialEq)]
struct Pending {
    /// The current task (the task id the batch's rows are stored with).
    task: usize,
    /// Rows of the first draw (logit term), right after the current rows.
    logit_rows: usize,
    /// Their stored logits, `logit_rows × num_outputs`.
    stored: Vec<f32>,
    /// Rows of the second draw (label term, DER++), after the first draw.
    label_rows: usize,
}

/// The strategy state shared by `der` and `derpp` (serde: the hyperparameters and the memory;
/// the mask cache and the step's pending draw are rebuilt).
#[derive(Debug, Serialize, Deserialize)]
pub struct Dark {
    memory_size: usize,
    replay_batch_size: usize,
    alpha: f64,
    beta: f64,
    /// Created at the first batch (when the input and output widths are known).
    memory: Option<Reservoir>,
    /// Task-IL heads by task id (`task_mask`), fetched once.
    #[serde(skip)]
    masks: Vec<Option<Vec<bool>>>,
    #[serde(skip)]
    pending: Option<Pending>,
}

/// The value and parts of a [`Dark::loss`] (each already a mean, unweighted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DarkTerms {
    /// Mean cross-entropy of the current rows.
    pub current: f64,
    /// Mean squared logit error over the first draw's elements (0 without rows).
    pub logits: f64,
    /// Mean cross-entropy of the second draw's rows (0 without rows).
    pub labels: f64,
}

impl Dark {
    /// A strategy with an empty memory.
    pub fn new(config: DarkConfig) -> Self {
        Self {
            memory_size: config.memory_size,
            replay_batch_size: config.replay_batch_size,
            alpha: config.alpha,
            beta: config.beta,
            memory: None,
            masks: Vec::new(),
            pending: None,
        }
    }

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

    /// Draws the replayed rows and appends them (the logit draw, then for `beta > 0` the
    /// label draw), remembering which is which for [`Dark::loss`].
    pub fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.pending = None;
        let info = ctx.task_info()?;
        let (current, cols) = {
            let batch = ctx.batch()?;
            (batch.current_rows, batch.cols)
        };
        let (capacity, outputs) = (self.memory_size, info.num_outputs);
        let memory = self
            .memory
            .get_or_insert_with(|| Reservoir::new(capacity, cols, outputs));
        ensure!(
            memory.store().dim() == cols && memory.store().width() == outputs,
            "the DER memory holds samples of {} features with {} logits, the batch has {cols} \
             features and the network {outputs} outputs",
            memory.store().dim(),
            memory.store().width()
        );
        let wanted = if self.replay_batch_size == 0 {
            current
        } else {
            self.replay_batch_size
        };
        let first = memory.store().sample(wanted, |n| ctx.rng_below(n));
        let second = if self.beta > 0.0 {
            memory.store().sample(wanted, |n| ctx.rng_below(n))
        } else {
            Vec::new()
        };
        let a = memory.store().gather(&first);
        let b = memory.store().gather(&second);
        let pending = Pending {
            task: info.task,
            logit_rows: first.len(),
            stored: a.payload,
            label_rows: second.len(),
        };
        if first.is_empty() && second.is_empty() {
            self.pending = Some(pending);
            return Ok(());
        }
        let mut x = a.x;
        x.extend_from_slice(&b.x);
        let mut targets = a.targets;
        targets.extend_from_slice(&b.targets);
        let masks = match info.setting {
            Setting::TaskIl => {
                let mut m = Vec::with_capacity(targets.len() * outputs);
                for &task in a.tasks.iter().chain(&b.tasks) {
                    m.extend_from_slice(self.head(ctx, task)?);
                }
                Some(m)
            }
            Setting::ClassIl | Setting::DomainIl => None,
            Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
        };
        ctx.append_rows(&x, &targets, masks.as_deref())
            .context("appending the replayed rows")?;
        self.pending = Some(pending);
        Ok(())
    }

    /// The loss of the batch [`Dark::before_batch`] prepared (see the module docs), its
    /// gradient written into `cotangent`; then the current rows go to the reservoir with their
    /// logits. Returns the total and its parts.
    pub fn loss(
        &mut self,
        ctx: &mut Ctx<'_>,
        batch: &LossBatch<'_>,
        cotangent: &mut [f32],
    ) -> Result<(f32, DarkTerms)> {
        let pending = self.pending.take().unwrap_or_default();
        let (c, k) = (batch.current_rows, batch.num_outputs);
        let (na, nb) = (pending.logit_rows, pending.label_rows);
        ensure!(
            batch.rows == c + na + nb,
            "the loss batch has {} rows; DER expected {c} current + {na} replayed for the \
             logit term + {nb} for the label term (rows appended by another strategy?)",
            batch.rows
        );
        ensure!(
            cotangent.len() == batch.rows * k,
            "the cotangent has {} values for {} rows of {k} outputs",
            cotangent.len(),
            batch.rows
        );
        let row_ce = |r: usize, scale: f64, cot: &mut [f32]| {
            let mask = batch.mask_of(r);
            cross_entropy(
                batch.logits_of(r),
                batch.target(r),
                |u| mask[u] != 0,
                scale,
                &mut cot[r * k..(r + 1) * k],
            )
        };
        let mut terms = DarkTerms {
            current: 0.0,
            logits: 0.0,
            labels: 0.0,
        };
        for r in 0..c {
            terms.current += row_ce(r, 1.0 / c as f64, cotangent);
        }
        if c > 0 {
            terms.current /= c as f64;
        }
        if na > 0 {
            let n = (na * k) as f64;
            for i in 0..na {
                let r = c + i;
                terms.logits += squared_error(
                    batch.logits_of(r),
                    &pending.stored[i * k..(i + 1) * k],
                    self.alpha / n,
                    &mut cotangent[r * k..(r + 1) * k],
                );
            }
            terms.logits /= n;
        }
        if nb > 0 {
            for r in c + na..batch.rows {
                terms.labels += row_ce(r, self.beta / nb as f64, cotangent);
            }
            terms.labels /= nb as f64;
        }
        let total = terms.current + self.alpha * terms.logits + self.beta * terms.labels;

        // The current rows enter the reservoir with the logits of this step.
        if let Some(memory) = self.memory.as_mut() {
            for r in 0..c {
                let row = Row::new(batch.x_of(r), batch.target(r), pending.task)
                    .with_payload(batch.logits_of(r));
                memory.offer(row, |n| ctx.rng_below(n))?;
            }
        }
        Ok((total as f32, terms))
    }

    /// Logs the memory's contents at a task's end.
    pub fn on_task_end(&self, name: &str, task: &TaskInfo) {
        if let Some(m) = &self.memory {
            info!(
                strategy = name,
                task = task.task,
                held = m.len(),
                seen = m.seen(),
                per_task = ?m.store().per_task(),
                "DER memory"
            );
        }
    }
}
