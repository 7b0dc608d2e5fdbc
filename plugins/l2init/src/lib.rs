//! `l2init`: L2 Init (Kumar, Marklund & Van Roy 2023, "Maintaining Plasticity in Continual
//! Learning via Regenerative Regularization", arXiv 2308.11958), an isotropic pull towards the
//! initial weights.
//!
//! When the network is built (`on_model_built`) the plugin stores θ0, every parameter tensor
//! (weights, biases, conv kernels, norm scales and shifts). During every task, including the
//! first, it adds
//!
//! ```text
//! penalty(θ) = λ · ‖θ − θ0‖² = λ · Σ_i (θ_i − θ0_i)²        gradient: 2λ · (θ − θ0)
//! ```
//!
//! to the loss, by adding the gradient to the gradient buffers in `after_backward`. θ0 is the
//! initialisation of the whole run, never refreshed at task boundaries: the paper regularises
//! towards "the initial parameters" to keep them as a regenerative anchor for plasticity.
//! The penalty has no ½, as in the paper (`L_reg(θ) = L(θ) + λ‖θ − θ0‖²`).
//!
//! Hyperparameters and the source of the default: `docs/strategies.md` (Kumar et al. select λ
//! from {1e-2, 1e-3, 1e-4, 1e-5} and report 1e-2 as the best value across their problems).
//!
//! Buffers (batch norm's running statistics, role buffer) are stored with θ0, so that the
//! stored tensors keep the model's layout, but never pulled: they are not trained, and the
//! penalty is over the trainable parameters only.
//!
//! Stability: with SGD (learning rate η, momentum β) the penalty alone diverges once
//! `2·η·λ > 2(1 + β)`, i.e. `η·λ > 1 + β`.
//!
//! State: the whole strategy through serde; θ0 as raw floats.

use clef_sdk::anchor::{self, Anchor};
use clef_sdk::prelude::*;
use clef_sdk::Role;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// penalty strength λ in λ·Σ(θ−θ0)² (Kumar et al. 2023: best 1e-2)
    #[hparam(default = 0.01, range = 0.0..=1e12, log)]
    pub lambda: f64,
}

/// The L2 Init strategy.
#[derive(Debug, Serialize, Deserialize)]
pub struct L2Init {
    lambda: f32,
    /// Parameters at initialisation (`None` until the model is built).
    init: Option<Anchor>,
}

impl Strategy for L2Init {
    const NAME: &'static str = "l2init";
    const DESCRIPTION: &'static str =
        "L2 Init (Kumar et al. 2023): penalty lambda·||θ − θ0||² towards the initial weights";
    // Works on any parameter tensors; buffers are skipped.
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self {
            lambda: config.lambda as f32,
            init: None,
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.init = Some(Anchor::capture(ctx)?);
        info!("stored the initial parameters θ0");
        Ok(())
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        if self.init.is_none() {
            // Only when the host never reported the model as built: the best available θ0.
            warn!(
                task = task.task,
                "no on_model_built before this task: using the current weights as θ0"
            );
            self.init = Some(Anchor::capture(ctx)?);
        }
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        if self.lambda == 0.0 {
            return Ok(());
        }
        let Some(init) = &self.init else {
            bail!("θ0 is not stored (no on_model_built or on_task_start yet)");
        };
        // ∇ λ‖θ − θ0‖² = 2λ(θ − θ0), over every tensor but the buffers.
        let params = ctx.params()?;
        let init = init.tensors();
        ensure!(
            init.len() == params.len(),
            "θ0 has {} tensors but the model has {}",
            init.len(),
            params.len()
        );
        for (i, (p, a)) in params.iter().zip(init).enumerate() {
            if p.role == Role::Buffer {
                continue;
            }
            let (w, g) = ctx.values_and_grads(i)?;
            ensure!(
                w.len() == a.len() && g.len() == a.len(),
                "parameter {i} (`{}`) has {} values, θ0 {}",
                p.name,
                w.len(),
                a.len()
            );
            anchor::add_pull_grad(2.0 * self.lambda, w, a, g);
        }
        Ok(())
    }
}

clef_sdk::export_plugin!(L2Init);

#[cfg(test)]
mod tests;
