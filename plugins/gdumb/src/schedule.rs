//! GDumb's learning-rate schedule, applied on top of the host's `train_step` by scaling each
//! step's parameter update.
//!
//! Every optimizer clef has (SGD with or without (Nesterov) momentum and L2 decay, Adam) moves
//! the parameters by the learning rate times a direction that does not depend on it (PyTorch's
//! rules: momentum and moment buffers accumulate gradients, not updates). So a step taken at the
//! trial's rate `lr` and then scaled, `θ ← θ_before + s·(θ_after − θ_before)`, is the step the
//! same optimizer would take at rate `s·lr`, with the same optimizer state afterwards.

use clef_sdk::prelude::*;
use clef_sdk::{Ctx, Role};

/// The learning-rate schedule of the fit on the memory (`schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, HParamChoice, Serialize, Deserialize)]
pub enum Schedule {
    /// The official code's: epoch 0 at 0.1·lr (warm-up), epoch 1 at lr, then cosine annealing
    /// with warm restarts (`CosineAnnealingWarmRestarts(T_0 = 1, T_mult = 2)`, stepped per
    /// epoch) between lr and `min_lr_factor`·lr.
    CosineRestarts,
    /// The trial's learning rate throughout.
    Constant,
}

/// The factor on the trial's learning rate in epoch `epoch` (0-based).
///
/// `CosineRestarts`, with `f` = `min_factor`: 0.1 in epoch 0, 1 in epoch 1, and for `e ≥ 2`,
/// with `T = 2^⌊log2 e⌋` (the cycle starting at epoch `T` lasts `T` epochs):
/// `f + (1 − f)·(1 + cos(π·(e − T)/T))/2`: what the official code's loop gives (its scheduler,
/// created with the base rate lr, is first stepped in epoch 2, which restarts a cycle).
pub fn factor(schedule: Schedule, epoch: usize, min_factor: f64) -> f64 {
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::CosineRestarts => match epoch {
            0 => 0.1,
            1 => 1.0,
            e => {
                let t = 1usize << e.ilog2();
                let phase = (e - t) as f64 / t as f64;
                min_factor + (1.0 - min_factor) * (1.0 + (std::f64::consts::PI * phase).cos()) / 2.0
            }
        },
    }
}

/// The trainable tensors' values before a step, to scale the step's update afterwards.
#[derive(Debug, Default)]
pub struct StepScaler {
    before: Vec<Option<Vec<f32>>>,
}

impl StepScaler {
    /// Copies every trainable tensor (batch-norm buffers are not updates of the optimizer:
    /// they are left as the step's forward pass set them).
    pub fn remember(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let n = ctx.param_count()?;
        self.before.resize(n, None);
        for i in 0..n {
            let slot = &mut self.before[i];
            if ctx.param_info(i)?.role == Role::Buffer {
                *slot = None;
                continue;
            }
            let v = ctx.values_ref(i)?;
            let copy = slot.get_or_insert_with(Vec::new);
            copy.clear();
            copy.extend_from_slice(v);
        }
        Ok(())
    }

    /// Scales the update since [`StepScaler::remember`] by `s`: `θ ← θ_before + s·(θ − θ_before)`.
    pub fn scale(&self, ctx: &mut Ctx<'_>, s: f32) -> Result<()> {
        for (i, before) in self.before.iter().enumerate() {
            let Some(before) = before else { continue };
            let values = ctx.values(i)?;
            ensure!(
                values.len() == before.len(),
                "tensor {i} changed size during a step"
            );
            for (v, &b) in values.iter_mut().zip(before) {
                *v = b + s * (*v - b);
            }
        }
        Ok(())
    }
}
