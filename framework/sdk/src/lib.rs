//! Write clef strategy plugins in safe Rust.
//!
//! A clef strategy plugin is a shared library (`cdylib`) that the `clef` host loads at run time
//! through a versioned C ABI (the `clef-abi` crate, re-exported as [`abi`]). This crate hides
//! that ABI: implement [`Strategy`] and call [`export_plugin!`] once; the macro exports
//! `clef_plugin_entry_v1` with a descriptor (name, version, description, hyperparameter schema)
//! and one `extern "C"` function per hook. Plugins depend on this crate only, never on the
//! host's crates, so they do not need the host's `rustc` version.
//!
//! What the SDK does for you:
//!
//! * **Config.** The host validates the strategy's `hparams` table against
//!   [`Strategy::hparams`] (unknown key, wrong type, out of range), fills in defaults, and passes
//!   the complete table as TOML; the SDK deserialises it into [`Strategy::Config`] and calls
//!   [`Strategy::new`]. Mark your config `#[serde(deny_unknown_fields)]`.
//! * **Errors.** Hooks return [`Result`]; an [`Error`] becomes `CLEF_ERROR` with the error's
//!   whole chain (`"outer: inner"`) as the message the host reports.
//! * **Panics.** Every exported function runs inside `catch_unwind`: a panic becomes
//!   `CLEF_PANIC` with `panicked at <file:line:col>: <message>` as the message, also sent to the
//!   host's log at error level; a quiet panic hook keeps it off stderr. The process never
//!   aborts (unless the plugin is built with `panic = "abort"`: don't).
//! * **Logging.** Use the [`tracing`] macros (re-exported): the SDK installs, in the plugin's
//!   own copy of `tracing`, a subscriber that forwards events to the host's log as
//!   `"<plugin name>: <message> key=value ..."` (levels up to `debug`; set `CLEF_PLUGIN_LOG`
//!   to change that).
//! * **Host services.** Each hook gets a [`Ctx`]: parameter, gradient and optimizer-state views
//!   as `&mut [f32]` into host memory, `forward`, `features`, `vjp`, `ntk_gram` on inputs you
//!   choose, the training batch (`before_batch`), stored samples of past tasks, task masks, a
//!   seeded RNG, and expert networks. Host refusals become errors naming the service.
//!
//! # A complete plugin
//!
//! `Cargo.toml`:
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
//! ```
//!
//! `src/lib.rs` (an L2 penalty pulling the weights back to their values at the start of
//! training):
//!
//! ```
//! use clef_sdk::tracing::info;
//! use clef_sdk::{ensure, Ctx, HParam, Result, Strategy, TaskInfo};
//! use serde::Deserialize;
//!
//! /// The validated `hparams` table (every key of the schema is present).
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     lambda: f64,
//! }
//!
//! pub struct L2Init {
//!     lambda: f32,
//!     /// Initial values of every parameter tensor.
//!     init: Vec<Vec<f32>>,
//! }
//!
//! impl Strategy for L2Init {
//!     const NAME: &'static str = "l2-init";
//!     const DESCRIPTION: &'static str = "L2 penalty towards the initial weights";
//!     type Config = Config;
//!
//!     fn hparams() -> Vec<HParam> {
//!         vec![HParam::float("lambda", 0.01, 0.0, 1e3, "penalty strength").log_scale()]
//!     }
//!
//!     fn new(config: Config) -> Result<Self> {
//!         ensure!(config.lambda.is_finite(), "lambda must be finite");
//!         Ok(Self { lambda: config.lambda as f32, init: Vec::new() })
//!     }
//!
//!     fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
//!         self.init = (0..ctx.param_count()?)
//!             .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
//!             .collect::<Result<_>>()?;
//!         Ok(())
//!     }
//!
//!     fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
//!         info!(task = task.task, "starting");
//!         Ok(())
//!     }
//!
//!     fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
//!         for (i, w0) in self.init.iter().enumerate() {
//!             let (w, g) = ctx.values_and_grads(i)?;
//!             for ((g, w), w0) in g.iter_mut().zip(w).zip(w0) {
//!                 *g += self.lambda * (w - w0);
//!             }
//!         }
//!         Ok(())
//!     }
//!
//!     fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
//!         let mut out = Vec::new();
//!         for tensor in &self.init {
//!             out.extend((tensor.len() as u64).to_le_bytes());
//!             out.extend(tensor.iter().flat_map(|v| v.to_le_bytes()));
//!         }
//!         Ok(out)
//!     }
//!
//!     fn load_state(&mut self, _ctx: &mut Ctx<'_>, mut state: &[u8]) -> Result<()> {
//!         self.init.clear();
//!         while !state.is_empty() {
//!             ensure!(state.len() >= 8, "truncated state");
//!             let (len, rest) = state.split_at(8);
//!             let n = u64::from_le_bytes(len.try_into()?) as usize;
//!             ensure!(rest.len() >= 4 * n, "truncated state");
//!             let (values, rest) = rest.split_at(4 * n);
//!             self.init.push(
//!                 values.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
//!             );
//!             state = rest;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! clef_sdk::export_plugin!(L2Init);
//!
//! // A unit test worth having in every plugin: the schema is valid and its defaults
//! // deserialise into `Config`.
//! clef_sdk::validate::<L2Init>().unwrap();
//! ```
//!
//! Build it with `cargo build --release`; point clef at `target/release/libclef_plugin_l2_init.so`.
//!
//! # Testing a plugin
//!
//! With the `testing` feature (`clef-sdk = { ..., features = ["testing"] }` under
//! `[dev-dependencies]`), the `clef_sdk::testing` module provides an in-process mock host (a
//! linear model over `Vec` buffers) that drives your plugin through its C entry points; see
//! `plugins/finetune` and `plugins/fixtures/*` for examples.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod anchor;
mod ctx;
mod error;
mod export;
mod hparam;
mod logging;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;

pub use clef_abi as abi;
pub use tracing;

pub use ctx::{Activation, BatchView, Ctx, LogLevel, ParamInfo, Role, Setting, Split, TaskInfo};
pub use error::{Context, Error, HostStatus, Result};
pub use hparam::{validate_schema, HParam, HParamKind, NoConfig};

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

    /// The hyperparameters, deserialised from the validated `hparams` table (every key of
    /// [`hparams`](Strategy::hparams) present). Use `#[serde(deny_unknown_fields)]`, and
    /// [`NoConfig`] when there are none.
    type Config: DeserializeOwned;

    /// The hyperparameter schema (default: none).
    fn hparams() -> Vec<HParam> {
        Vec::new()
    }

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

    /// The instance's private state for a checkpoint (default: empty).
    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Restores state written by [`save_state`](Strategy::save_state).
    fn load_state(&mut self, _ctx: &mut Ctx<'_>, _state: &[u8]) -> Result<()> {
        Ok(())
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
    let mut table = toml::Table::new();
    for h in S::hparams() {
        let value = match h.kind() {
            HParamKind::Float { default, .. } => toml::Value::Float(*default),
            HParamKind::Int { default, .. } => toml::Value::Integer(*default),
            HParamKind::Bool { default } => toml::Value::Boolean(*default),
            HParamKind::Choice { default, .. } => toml::Value::String(default.clone()),
        };
        table.insert(h.name().to_owned(), value);
    }
    table.to_string()
}

/// Checks a strategy's static description: its name and schema (see [`validate_schema`]), and
/// that the schema's defaults deserialise into [`Strategy::Config`] (catching a config field
/// missing from the schema, or a mistyped name). Call it from a unit test.
pub fn validate<S: Strategy>() -> Result<()> {
    validate_schema(S::NAME, &S::hparams())?;
    let defaults = default_config_toml::<S>();
    toml::from_str::<S::Config>(&defaults).map_err(|e| {
        Error::msg(format!(
            "the schema defaults of `{}` do not deserialise into its Config: {}",
            S::NAME,
            e.message()
        ))
    })?;
    Ok(())
}
