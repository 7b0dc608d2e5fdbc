//! clef's plugin host: strategy plugins, shared libraries loaded at run time through the C ABI
//! of `clef-abi`, served to the engine behind its `Strategy` trait.
//!
//! - [`discover`]: file naming (`{DLL_PREFIX}clef_plugin_{name}{DLL_SUFFIX}`) and the search
//!   path (explicit paths, the config's `plugin_dirs`, `$CLEF_PLUGIN_PATH`, the executable's
//!   directory);
//! - `load`: the handshake (`clef_plugin_entry_v1`, ABI version and descriptor size checked
//!   before anything else is read), the descriptor's schema as Rust types, and the process-wide
//!   registry (a library is loaded once and never unloaded);
//! - [`hparams`]: checking a `[[strategy]]` section against the schema before any training;
//! - [`PluginStrategy`]: an instance behind the core's [`clef_engine::strategy::Strategy`] trait;
//! - `host`: the host services over the trainer's context ([`HostCtx`], [`host_table`]): the
//!   real host's model of the shared service layer `clef-services` (checks, rules and
//!   marshalling are written once there, and shared with the SDK's `MockHost`);
//! - [`PluginStrategies`]: the [`crate::runner::StrategyProvider`] serving plugins and
//!   built-ins.
//!
//! A plugin that fails or panics in a hook fails only its trial, with a message naming the
//! plugin and the hook ("plugin `ewc` panicked in after_backward: ...").

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod discover;
mod host;
pub mod hparams;
mod instance;
pub mod load;
mod provider;

pub use clef_engine::strategy::{HParamKind, HParamSpec, HValue};
pub use discover::{file_name, is_fixture, show_fixtures, Found, PluginSearch};
pub use host::{host_table, Appended, HostCtx};
pub use instance::{PluginError, PluginStrategy};
pub use load::{load, LoadError, LoadedPlugin, PluginInfo};
pub use provider::{inspect, PluginStrategies, Resolved};
