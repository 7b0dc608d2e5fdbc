//! `replay`: experience replay from a reservoir-sampled episodic memory (Chaudhry et al. 2019,
//! "On tiny episodic memories in continual learning"; reservoir sampling: Vitter 1985,
//! Algorithm R).
//!
//! # What it does
//!
//! The plugin keeps a memory of at most `memory_size` training samples, each stored as it was
//! delivered in the batch (inputs after the task's transform, target unit, task id). In every
//! `before_batch`:
//!
//! 1. it draws `r` samples uniformly **without replacement** from the memory (`r =
//!    replay_batch_size`, or the batch's current-task row count when that is 0; fewer if the
//!    memory holds fewer) and appends them to the batch with `append_rows`. Each replayed row
//!    keeps its own task: in task-IL its class mask is its own task's head (`task_mask(task)`);
//!    in class-IL and domain-IL no mask is passed, so the row uses the current training mask
//!    (class-IL: every unit seen so far, which contains every stored target; domain-IL: all
//!    units);
//! 2. then it offers the batch's current-task rows (the first `current_rows`) to the memory
//!    with reservoir sampling: the first `memory_size` samples of the stream are stored; the
//!    `n`-th sample after that (0-based stream index `n`) replaces a uniformly chosen slot with
//!    probability `memory_size / (n + 1)`. At any time every sample seen so far is in the
//!    memory with the same probability, whatever its task.
//!
//! Replay is drawn before the update, so a batch never replays its own rows. The trainer's loss
//! averages over all rows of the batch (current and replayed alike), as in Chaudhry et al.'s
//! ER. Replay starts as soon as the memory holds a sample (also within the first task).
//!
//! # Hyperparameters
//!
//! `memory_size` and `replay_batch_size`: table in `docs/strategies.md`. Sources: Chaudhry et
//! al. 2019 sample the memory minibatch with the same size as the incoming batch (hence the
//! default 0 = "same size"); 500 is one of the standard buffer sizes of Buzzega et al. 2020
//! (200 / 500 / 5120) and of the same order as the split-MNIST memories of Hsu et al. 2018
//! ("Re-evaluating continual learning scenarios", 1100 samples) and van de Ven et al. 2022
//! ("Three types of incremental learning", 100 per class).
//!
//! The memory is the SDK's [`Reservoir`] (`clef_sdk::memory`, shared with the other replay
//! plugins), without payload.
//!
//! Memory cost: `memory_size × input_dim` floats plus two integers per sample. State: the
//! whole strategy through serde: the hyperparameters, the memory (inputs as raw floats) and
//! its reservoir counter; the task-mask cache and the copied batch are rebuilt
//! (`#[serde(skip)]`). State version 2: the memory's encoding changed when it moved to the
//! SDK (version 1 checkpoints are refused with a message naming both versions).

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

/// The experience-replay strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct Replay {
    memory_size: usize,
    replay_batch_size: usize,
    /// Created at the first batch (when the input width is known).
    memory: Option<Reservoir>,
    /// Task-IL class masks by task id (`task_mask` results; static for a trial, refetched
    /// after a resume).
    #[serde(skip)]
    masks: Vec<Option<Vec<bool>>>,
    /// The batch's current-task rows, copied out of the batch view.
    #[serde(skip)]
    incoming_x: Vec<f32>,
    #[serde(skip)]
    incoming_y: Vec<usize>,
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

impl Strategy for Replay {
    const NAME: &'static str = "replay";
    const DESCRIPTION: &'static str =
        "experience replay: append rows drawn from a reservoir-sampled memory to every batch";
    // Works on any parameter tensors (buffers get no gradient the optimizer would use).
    const CONV_BACKBONES: bool = true;
    // 2: the memory is `clef_sdk::memory::Reservoir` (its store carries a payload width).
    const STATE_VERSION: u32 = 2;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            memory_size: config.memory_size,
            replay_batch_size: config.replay_batch_size,
            memory: None,
            masks: Vec::new(),
            incoming_x: Vec::new(),
            incoming_y: Vec::new(),
        })
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let info = ctx.task_info()?;
        let (current, cols) = {
            let batch = ctx.batch()?;
            let (x, y) = batch.current()?;
            self.incoming_x.clear();
            self.incoming_x.extend_from_slice(x);
            self.incoming_y.clear();
            self.incoming_y.extend_from_slice(y);
            (batch.current_rows, batch.cols)
        };
        let memory = self
            .memory
            .get_or_insert_with(|| Reservoir::new(self.memory_size, cols, 0));
        ensure!(
            memory.store().dim() == cols,
            "the replay memory holds samples of {} features, the batch has {cols}",
            memory.store().dim()
        );

        // 1. Replay: rows drawn from the memory as it was before this batch.
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
                        m.extend_from_slice(cached_mask(&mut self.masks, ctx, task)?);
                    }
                    Some(m)
                }
                Setting::ClassIl | Setting::DomainIl => None,
                Setting::Other(code) => bail!("unsupported evaluation setting (code {code})"),
            };
            ctx.append_rows(&rows.x, &rows.targets, masks.as_deref())
                .context("appending the replayed rows")?;
        }

        // 2. Reservoir update with the batch's current-task rows.
        for r in 0..current {
            let x = &self.incoming_x[r * cols..(r + 1) * cols];
            memory.offer(Row::new(x, self.incoming_y[r], info.task), |n| {
                ctx.rng_below(n)
            })?;
        }
        Ok(())
    }

    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if let Some(m) = &self.memory {
            info!(
                task = task.task,
                held = m.len(),
                seen = m.seen(),
                per_task = ?m.store().per_task(),
                "replay memory"
            );
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(Replay);

#[cfg(test)]
mod tests;
