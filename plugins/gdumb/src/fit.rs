//! The learner's training at a task end: epochs of shuffled minibatches of the memory through
//! the host's `train_step`, then the fitted network's accuracy on the memory.

use clef_sdk::memory::ClassBalanced;
use clef_sdk::prelude::*;
use clef_sdk::rng::SplitMix64;

use crate::schedule::{factor, Schedule, StepScaler};

/// Rows per `forward` call when measuring the accuracy on the memory.
const EVAL_CHUNK: usize = 1024;

/// How to fit the memory.
pub(crate) struct Plan {
    /// Passes over the memory.
    pub epochs: usize,
    /// Rows per optimizer step (the last step of an epoch may have fewer).
    pub batch_size: usize,
    /// The trial's setting (which mask each row trains with).
    pub setting: Setting,
    /// The learning-rate schedule over the epochs (a factor on the trial's rate).
    pub schedule: Schedule,
    /// The schedule's lowest factor.
    pub min_factor: f64,
}

/// What fitting did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fitted {
    /// Optimizer steps taken.
    pub steps: usize,
    /// Mean per-row loss of the last epoch (each step's mean loss weighted by its rows).
    pub last_epoch_loss: f64,
    /// Fraction of the memory's rows the fitted network classifies right (argmax over each
    /// row's training mask).
    pub accuracy: f64,
}

/// Task `task`'s head mask, fetched once and cached.
pub(crate) fn cached_mask<'m>(
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

/// The mask every row shares outside task-IL: class-IL the current training mask (every class
/// seen so far), domain-IL every output. `None` in task-IL (each row has its own task's head).
fn shared_mask(ctx: &mut Ctx<'_>, setting: Setting) -> Result<Option<Vec<bool>>> {
    let info = ctx.task_info()?;
    match setting {
        Setting::TaskIl => Ok(None),
        Setting::ClassIl => {
            let mut mask = vec![false; info.num_outputs];
            for u in ctx.training_units(info.task)? {
                mask[u] = true;
            }
            Ok(Some(mask))
        }
        Setting::DomainIl => Ok(Some(vec![true; info.num_outputs])),
        Setting::Other(code) => bail!("GDumb: unsupported evaluation setting (code {code})"),
    }
}

/// Rows copied out of the memory: inputs, targets and (task-IL) per-row masks.
type Labelled = (Vec<f32>, Vec<usize>, Option<Vec<bool>>);

/// Inputs, targets and (task-IL) per-row masks of the memory rows `rows`.
fn gather(
    ctx: &mut Ctx<'_>,
    memory: &ClassBalanced,
    rows: &[usize],
    per_row_masks: bool,
    masks: &mut Vec<Option<Vec<bool>>>,
) -> Result<Labelled> {
    let got = memory.store().gather(rows);
    let row_masks = if per_row_masks {
        let mut m = Vec::new();
        for &task in &got.tasks {
            m.extend_from_slice(cached_mask(masks, ctx, task)?);
        }
        Some(m)
    } else {
        None
    };
    Ok((got.x, got.targets, row_masks))
}

/// Trains the network (re-initialised by the caller) on every row of `memory`: `plan.epochs`
/// epochs, each a fresh shuffle of the rows drawn from `rng` cut into minibatches of
/// `plan.batch_size`, one `train_step` per minibatch, its update scaled by the schedule's
/// factor for the epoch ([`crate::schedule`]). Task-IL rows carry their own task's
/// mask; class-IL and domain-IL rows use the host's training mask. Then measures the fitted
/// network's accuracy on the memory.
pub(crate) fn fit(
    ctx: &mut Ctx<'_>,
    memory: &ClassBalanced,
    plan: &Plan,
    masks: &mut Vec<Option<Vec<bool>>>,
    rng: &mut SplitMix64,
) -> Result<Fitted> {
    ensure!(plan.batch_size > 0, "GDumb: a batch size of 0 rows");
    let shared = shared_mask(ctx, plan.setting)?;
    let per_row = shared.is_none();
    let n = memory.len();
    let mut order: Vec<usize> = (0..n).collect();
    let (mut steps, mut last_epoch_loss) = (0usize, f64::NAN);
    let mut scaler = StepScaler::default();
    for epoch in 0..plan.epochs {
        rng.shuffle(&mut order);
        let s = factor(plan.schedule, epoch, plan.min_factor) as f32;
        let mut sum = 0.0f64;
        for chunk in order.chunks(plan.batch_size) {
            let (x, targets, row_masks) = gather(ctx, memory, chunk, per_row, masks)?;
            if s != 1.0 {
                scaler.remember(ctx)?;
            }
            let loss = ctx
                .train_step(&x, &targets, row_masks.as_deref())
                .with_context(|| {
                    format!("GDumb: training on the memory (epoch {epoch}, step {steps})")
                })?;
            if s != 1.0 {
                scaler.scale(ctx, s)?;
            }
            sum += f64::from(loss) * chunk.len() as f64;
            steps += 1;
        }
        last_epoch_loss = sum / n.max(1) as f64;
    }
    let accuracy = memory_accuracy(ctx, memory, shared.as_deref(), masks)?;
    Ok(Fitted {
        steps,
        last_epoch_loss,
        accuracy,
    })
}

/// The fraction of the memory's rows whose highest logit over their training mask (`shared`,
/// or in task-IL their own task's head) is their target; ties go to the lowest unit.
fn memory_accuracy(
    ctx: &mut Ctx<'_>,
    memory: &ClassBalanced,
    shared: Option<&[bool]>,
    masks: &mut Vec<Option<Vec<bool>>>,
) -> Result<f64> {
    let n = memory.len();
    if n == 0 {
        return Ok(0.0);
    }
    let k = ctx.task_info()?.num_outputs;
    let all: Vec<usize> = (0..n).collect();
    let mut correct = 0usize;
    for chunk in all.chunks(EVAL_CHUNK) {
        let (x, targets, row_masks) = gather(ctx, memory, chunk, shared.is_none(), masks)?;
        let logits = ctx.forward(&x, chunk.len())?;
        for (r, &target) in targets.iter().enumerate() {
            let mask = match (&row_masks, shared) {
                (Some(m), _) => &m[r * k..(r + 1) * k],
                (None, Some(s)) => s,
                (None, None) => bail!("GDumb: no mask for a memory row"),
            };
            if argmax_masked(&logits[r * k..(r + 1) * k], mask) == Some(target) {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / n as f64)
}

/// The unit with the highest logit among those `mask` allows (the lowest on ties), if any.
pub(crate) fn argmax_masked(logits: &[f32], mask: &[bool]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (u, (&z, &on)) in logits.iter().zip(mask).enumerate() {
        if on && best.is_none_or(|(_, b)| z > b) {
            best = Some((u, z));
        }
    }
    best.map(|(u, _)| u)
}
