//! Write clef strategy plugins in safe Rust.
//!
//! A clef strategy plugin is a shared library (`cdylib`) that the `clef` host loads at run time
//! through a versioned C ABI (the `clef-abi` crate, re-exported as [`abi`]). This crate hides
//! that ABI: declare your hyperparameters with `#[derive(HParams)]`, implement [`Strategy`],
//! say how your state is checkpointed (`type State`), and call [`export_plugin!`] once. Plugins
//! depend on this crate only, never on the host's crates, so they do not need the host's
//! `rustc` version. `docs/plugin-guide.md` walks through a plugin step by step.
//!
//! What the SDK does for you:
//!
//! * **Hyperparameters, declared once.** `#[derive(HParams)]` on your config struct generates
//!   the schema (name, type, default, range, log scale, choices, help from the doc comment)
//!   that the host validates configs against, builds search spaces from and lists in
//!   `clef plugins`; the SDK checks the values once more before [`Strategy::new`], so `new`
//!   never re-checks ranges. See [`HParams`].
//! * **State.** `type State = SerdeState` checkpoints the whole strategy struct through serde,
//!   in an envelope with the plugin's name, [`Strategy::STATE_VERSION`] and a checksum;
//!   [`NoState`], [`CustomState`] and [`NotCheckpointed`] are the alternatives (see
//!   [`checkpoint`]).
//! * **Errors.** Hooks return [`Result`]; an [`Error`] becomes `CLEF_ERROR` with the error's
//!   whole chain (`"outer: inner"`) as the message the host reports.
//! * **Panics.** Every exported function runs inside `catch_unwind`: a panic becomes
//!   `CLEF_PANIC` with `panicked at <file:line:col>: <message>` as the message, also sent to the
//!   host's log at error level; a quiet panic hook keeps it off stderr. The process never
//!   aborts (unless the plugin is built with `panic = "abort"`: don't).
//! * **Logging.** Use the [`tracing`] macros (re-exported): the SDK forwards events to the
//!   host's log as `"<plugin name>: <message> key=value ..."` (levels up to `debug`; set
//!   `CLEF_PLUGIN_LOG` to change that).
//! * **Host services.** Each hook gets a [`Ctx`]: parameter, gradient and optimizer-state views
//!   into host memory, `forward`, `features`, `vjp`, `ntk_gram` on inputs you choose, the
//!   training batch (`before_batch`), stored samples of past tasks, task masks, a seeded RNG
//!   ([`rng::SplitMix64`] on top of it), expert networks, and (ABI 1.6) the gradient of rows
//!   you choose, per-sample gradient powers, and a fresh network trained on your own rows at
//!   task boundaries. Host refusals become errors naming the service.
//! * **Your own loss and classifier** (ABI 1.6). `Strategy::CUSTOM_LOSS` with
//!   [`Strategy::loss`] replaces the training loss ([`loss`]: the batch's logits and the
//!   per-row pieces); `Strategy::PREDICTS` with [`Strategy::predict`] scores evaluation inputs.
//! * **Rehearsal memories.** [`memory`]: a sample store with an optional per-row payload,
//!   reservoir and class-balanced (GDumb) insertion, and iCaRL's herding, shared by the
//!   replay-family plugins.
//! * **Tests.** With the `testing` feature, `testing::MockHost` runs your plugin through its
//!   C entry points on a small linear model, and `standard_tests!` adds the tests every
//!   plugin needs (schema, defaults, out-of-range values refused, state round trip,
//!   determinism, the docs' table).
//!
//! # A complete plugin
//!
//! `Cargo.toml` (or run `clef new-plugin NAME`, which writes all of this):
//!
//! ```toml
//! [package]
//! name = "clef-plugin-l2-init"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib", "rlib"]   # cdylib for clef; rlib so `cargo test` can test it
//!
//! [dependencies]
//! clef-sdk = { path = "../../framework/sdk" }
//! serde = { version = "1", features = ["derive"] }
//!
//! [dev-dependencies]
//! clef-sdk = { path = "../../framework/sdk", features = ["testing"] }
//! ```
//!
//! `src/lib.rs`, an L2 penalty pulling the weights back to their initial values:
//!
//! ```
//! use clef_sdk::prelude::*;
//!
//! #[derive(HParams)]
//! pub struct Config {
//!     /// Penalty strength λ in (λ/2)·Σ(θ − θ0)².
//!     #[hparam(default = 0.01, range = 0.0..=1e3, log)]
//!     pub lambda: f64,
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct L2Init {
//!     lambda: f32,
//!     /// Initial values of every parameter tensor.
//!     #[serde(with = "clef_sdk::state::tensors")]
//!     init: Vec<Vec<f32>>,
//! }
//!
//! impl Strategy for L2Init {
//!     const NAME: &'static str = "l2-init";
//!     const DESCRIPTION: &'static str = "L2 penalty towards the initial weights";
//!     type Config = Config;
//!     type State = SerdeState;
//!
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Self { lambda: config.lambda as f32, init: Vec::new() })
//!     }
//!
//!     fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
//!         self.init = clef_sdk::anchor::capture(ctx)?;
//!         Ok(())
//!     }
//!
//!     fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
//!         clef_sdk::anchor::add_pull(ctx, &self.init, self.lambda, "θ0")
//!     }
//! }
//!
//! clef_sdk::export_plugin!(L2Init);
//!
//! // In `#[cfg(test)] mod tests { ... }`: schema, defaults, ranges, state, determinism.
//! // clef_sdk::standard_tests!(L2Init);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release`; point clef at `target/release/libclef_plugin_l2_init.so`.
//! Signatures and every host service: `cargo doc -p clef-sdk --open`.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// The derive macros name `::clef_sdk`; this makes that path work inside the SDK too.
extern crate self as clef_sdk;

pub mod anchor;
pub mod checkpoint;
mod ctx;
mod error;
mod export;
mod hparam;
#[cfg(any(test, feature = "testing"))]
pub mod kit;
mod logging;
pub mod loss;
pub mod memory;
pub mod rng;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod values;

pub use clef_abi as abi;
pub use clef_sdk_derive::{HParamChoice, HParams};
pub use tracing;

pub use checkpoint::{CustomState, NoState, NotCheckpointed, SerdeState};
pub use ctx::{Activation, BatchView, Ctx, LogLevel, ParamInfo, Role, Setting, Split, TaskInfo};
pub use error::{Context, Error, HostStatus, Result};
pub use hparam::{markdown_table, validate_schema, HParam, HParamKind};
pub use loss::LossBatch;
pub use values::{HParamChoice, HParams, NoConfig, Value, Values};

/// What a plugin's `lib.rs` usually needs: `use clef_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::tracing::{debug, info, warn};
    pub use crate::{
        bail, ensure, Context, Ctx, CustomState, HParamChoice, HParams, LossBatch, NoConfig,
        NoState, NotCheckpointed, Result, SerdeState, Setting, Strategy, TaskInfo,
    };
    pub use serde::{Deserialize, Serialize};
}

/// Implementation details used by [`export_plugin!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::export::*;
}

/// A continual-learning strategy, exported as a plugin with [`export_plugin!`].
///
/// The host calls the hooks of one instance from one thread at a time, in this order for
/// every task:
///
/// ```text
/// on_task_start ─► per batch: before_batch ─► (loss + backward) ─► after_backward
///               ─► optimizer step ─► after_step ─► ... ─► on_task_end
///               ─► per evaluated task: before_eval ─► (evaluation) ─► after_eval
/// ```
///
/// `on_model_built` runs after the network is built (and whenever it is re-initialised);
/// `save_state` / `load_state` around checkpoints. Every hook defaults to a no-op.
pub trait Strategy: Sized + Send + 'static {
    /// Name used in configs (`[a-z0-9_-]+`).
    const NAME: &'static str;
    /// Plugin version; `None` (the default) uses the plugin crate's `CARGO_PKG_VERSION`.
    const VERSION: Option<&'static str> = None;
    /// One-line description.
    const DESCRIPTION: &'static str = "";
    /// True if the strategy handles convolutional backbones (`convnet`, `resnet18`): it
    /// accepts weights of any rank (conv kernels `[out, in, kh, kw]`, norm scales `[c]`) and
    /// leaves [`Role::Buffer`] tensors (batch norm running statistics) alone. The default,
    /// false, makes the host refuse a config pairing the strategy with such a backbone before
    /// anything runs (ABI 1.4 `CLEF_BACKBONE_CONV`).
    const CONV_BACKBONES: bool = false;
    /// True if the strategy replaces the training loss with [`Strategy::loss`] (ABI 1.6
    /// `loss` hook). The default, false, exports no `loss` hook: the host trains on the masked
    /// softmax cross-entropy.
    const CUSTOM_LOSS: bool = false;
    /// True if the strategy scores evaluation inputs itself with [`Strategy::predict`] (ABI
    /// 1.6 `predict` hook, e.g. a nearest-mean-of-exemplars classifier). The default, false,
    /// evaluates the network's logits.
    const PREDICTS: bool = false;

    /// The hyperparameters: a struct deriving [`HParams`] (its schema is the plugin's), or
    /// [`NoConfig`] when there are none.
    type Config: HParams;

    /// How the state reaches checkpoints: [`SerdeState`], [`NoState`], [`CustomState`] or
    /// [`NotCheckpointed`] (see [`checkpoint`]).
    type State: checkpoint::StateMode<Self>;

    /// Version of the saved state's format; bump it when a change to the state would make
    /// older checkpoints load wrongly (they are then refused with a clear error).
    const STATE_VERSION: u32 = 1;

    /// Creates an instance (once per trial).
    fn new(config: Self::Config) -> Result<Self>;

    /// After the network is built or re-initialised: read shapes, store initial weights.
    fn on_model_built(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// Before the first batch of `task`.
    fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        Ok(())
    }

    /// Before the forward pass of each batch; may read the batch and append rows
    /// ([`Ctx::batch`], [`Ctx::append_rows`]).
    fn before_batch(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// After backward, before the optimizer step: the gradients hold d loss / d params of the
    /// batch; add terms, mask them, or call [`Ctx::vjp`].
    fn after_backward(&mut self, _ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
        Ok(())
    }

    /// With [`CUSTOM_LOSS`](Strategy::CUSTOM_LOSS): the training loss of the whole batch (the
    /// current task's rows and the rows appended in `before_batch`) from its training-mode
    /// logits. Write `d loss / d logits` into `cotangent` (`rows * num_outputs`, zeroed) and
    /// return the loss; the host back-propagates it (then `after_backward` runs as usual).
    /// [`LossBatch::default_loss`] is the loss it replaces; [`crate::loss`] has the pieces.
    fn loss(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _batch: &LossBatch<'_>,
        _cotangent: &mut [f32],
    ) -> Result<f32> {
        bail!(
            "`{}` sets CUSTOM_LOSS but does not implement loss",
            Self::NAME
        )
    }

    /// With [`PREDICTS`](Strategy::PREDICTS): one score per output unit for `rows` evaluation
    /// inputs `x` into `out` (`rows * num_outputs`); the host predicts the highest-scoring unit
    /// of the evaluation mask. `task` as in [`before_eval`](Strategy::before_eval). Called
    /// between `before_eval` and `after_eval` for the accuracy matrix.
    fn predict(
        &mut self,
        _ctx: &mut Ctx<'_>,
        _task: Option<usize>,
        _x: &[f32],
        _rows: usize,
        _out: &mut [f32],
    ) -> Result<()> {
        bail!(
            "`{}` sets PREDICTS but does not implement predict",
            Self::NAME
        )
    }

    /// After the optimizer step: masks, projections, pruning and regrowth.
    fn after_step(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// After the last batch of `task`, before it is evaluated.
    fn on_task_end(&mut self, _ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        Ok(())
    }

    /// Before evaluating a task: `Some(id)` in task-IL, `None` when the setting hides it.
    fn before_eval(&mut self, _ctx: &mut Ctx<'_>, _task: Option<usize>) -> Result<()> {
        Ok(())
    }

    /// After evaluating a task: undo what `before_eval` changed.
    fn after_eval(&mut self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }

    /// With `type State = CustomState`: the instance's private state for a checkpoint. Runs
    /// outside training: every host service but `log` is refused.
    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        bail!(
            "`{}` declares `type State = CustomState` but does not implement save_state",
            Self::NAME
        )
    }

    /// With `type State = CustomState`: restores what [`save_state`](Strategy::save_state)
    /// wrote, on a fresh instance (after `new`, before any other hook). Runs outside training:
    /// every host service but `log` is refused.
    fn load_state(&mut self, _ctx: &mut Ctx<'_>, _state: &[u8]) -> Result<()> {
        bail!(
            "`{}` declares `type State = CustomState` but does not implement load_state",
            Self::NAME
        )
    }
}

/// Exports a [`Strategy`] as a clef plugin: generates the C entry point
/// `clef_plugin_entry_v1`, whose descriptor (built once, never freed) points at panic-catching
/// `extern "C"` wrappers of every hook. Use it once per plugin crate, at the crate root.
///
/// ```ignore
/// clef_sdk::export_plugin!(MyStrategy);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($strategy:ty $(,)?) => {
        /// The clef plugin entry point (generated by `clef_sdk::export_plugin!`): returns the
        /// plugin's static descriptor.
        #[unsafe(no_mangle)]
        pub extern "C" fn clef_plugin_entry_v1() -> *const $crate::abi::ClefPluginDescriptor {
            static CELL: $crate::__private::DescriptorCell =
                $crate::__private::DescriptorCell::new();
            $crate::__private::entry::<$strategy>(&CELL, ::core::env!("CARGO_PKG_VERSION"))
        }
    };
}

/// The TOML `hparams` table with every hyperparameter at its default: what the host passes to
/// `create` when the config sets none.
pub fn default_config_toml<S: Strategy>() -> String {
    Values::defaults(&S::Config::schema()).to_toml()
}

/// Checks a strategy's static description: its name and schema (see [`validate_schema`]), and
/// that the schema's defaults build its [`Strategy::Config`]. `standard_tests!` (feature
/// `testing`) calls it.
pub fn validate<S: Strategy>() -> Result<()> {
    let schema = S::Config::schema();
    validate_schema(S::NAME, &schema)?;
    S::Config::from_values(&Values::defaults(&schema)).map_err(|e| {
        e.context(format!(
            "the schema defaults of `{}` do not build its Config",
            S::NAME
        ))
    })?;
    Ok(())
}
