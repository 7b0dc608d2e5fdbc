//! `l2`: (λ/2)·Σ(θ − θ*)² towards the weights θ* at the end of the previous task, no penalty in
//! the first task (Hsu et al. 2018's `L2` agent). Defaults and sources: `docs/strategies.md`.

use clef_sdk::anchor::{Anchor, MaybePull};
use clef_sdk::prelude::*;

#[derive(HParams, Serialize, Deserialize)]
pub struct Config {
    /// penalty strength λ in (λ/2)·Σ(θ−θ*)² (Hsu et al. 2018 split-MNIST TIL: 0.01)
    #[hparam(default = 0.01, range = 0.0..=1e12, log, needs_past_tasks)]
    pub lambda: f64,
}

#[derive(Serialize, Deserialize)]
pub struct L2 {
    cfg: Config,
    anchor: Option<Anchor>, // θ*, replaced at every task end
}

impl Strategy for L2 {
    const NAME: &'static str = "l2";
    const DESCRIPTION: &'static str = "L2 penalty (λ/2)·‖θ − θ*‖² towards the last task's weights";
    // Works on any parameter tensors (buffers get no gradient the optimizer would use).
    const CONV_BACKBONES: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(cfg: Config) -> Result<Self> {
        Ok(Self { cfg, anchor: None })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        self.anchor.pull(ctx, self.cfg.lambda as f32)
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        self.anchor = Some(Anchor::capture(ctx)?);
        Ok(())
    }
}

clef_sdk::export_plugin!(L2);

#[cfg(test)]
mod tests;
