//! `der`: Dark Experience Replay (Buzzega, Boschini, Porrello, Abati and Calderara 2020, "Dark
//! Experience for General Continual Learning: a Strong, Simple Baseline", NeurIPS; official
//! code: Mammoth, github.com/aimagelab/mammoth, `models/der.py`).
//!
//! A reservoir memory of training samples with the logits the network gave them when they
//! were seen; the loss is `CE(current rows) + α · MSE(logits of replayed rows, stored
//! logits)`. The memory and the loss are `clef_der_core::Dark`, shared with `derpp` (DER++,
//! the same with a second replayed draw under cross-entropy); `docs/strategies.md` has the
//! formulas, the defaults and their sources.

use clef_der_core::{Dark, DarkConfig};
use clef_sdk::prelude::*;

/// The `hparams` table.
#[derive(HParams)]
pub struct Config {
    /// capacity of the memory in samples (reservoir sampling)
    #[hparam(default = 500, range = 0..=100_000_000)]
    pub memory_size: usize,
    /// replayed rows per batch; 0 = as many as the batch's current-task rows
    #[hparam(default = 0, range = 0..=1_000_000)]
    pub replay_batch_size: usize,
    /// weight α of the MSE between the replayed rows' logits and their stored logits
    #[hparam(default = 1.0, range = 0.0..=1e6)]
    pub alpha: f64,
}

/// The DER strategy.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Der(Dark);

impl Der {
    /// The shared state (tests read the memory through it).
    pub fn dark(&self) -> &Dark {
        &self.0
    }
}

impl Strategy for Der {
    const NAME: &'static str = "der";
    const DESCRIPTION: &'static str =
        "dark experience replay: match the logits stored with reservoir-sampled rows (MSE)";
    // The loss is on logits only; the memory stores inputs of any shape.
    const CONV_BACKBONES: bool = true;
    const CUSTOM_LOSS: bool = true;
    type Config = Config;
    type State = SerdeState;

    fn new(config: Config) -> Result<Self> {
        Ok(Self(Dark::new(DarkConfig {
            memory_size: config.memory_size,
            replay_batch_size: config.replay_batch_size,
            alpha: config.alpha,
            beta: 0.0,
        })))
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.0.before_batch(ctx)
    }

    fn loss(&mut self, ctx: &mut Ctx<'_>, batch: &LossBatch<'_>, cot: &mut [f32]) -> Result<f32> {
        Ok(self.0.loss(ctx, batch, cot)?.0)
    }

    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        self.0.on_task_end(Self::NAME, task);
        Ok(())
    }
}

clef_sdk::export_plugin!(Der);

#[cfg(test)]
mod tests;
