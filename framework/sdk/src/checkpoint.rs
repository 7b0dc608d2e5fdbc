//! How a strategy's state reaches clef's trial checkpoints: every [`Strategy`] declares it with
//! `type State = ...` (one of the four modes below), so a plugin can never lose its state on a
//! resumed trial without saying so.
//!
//! | `type State =` | exported hooks | on resume |
//! |---|---|---|
//! | [`SerdeState`] | `save_state`, `load_state` | the whole strategy struct, through serde ([`crate::state::encode`]) |
//! | [`NoState`] | `save_state`, `load_state` | nothing to restore: the strategy keeps nothing between hooks that a checkpoint would lose |
//! | [`CustomState`] | `save_state`, `load_state` | [`Strategy::save_state`] / [`Strategy::load_state`], hand-written bytes |
//! | [`NotCheckpointed`] | none | the host turns checkpoints off for the trial, with a warning; a killed trial restarts from task 0 |
//!
//! Whatever the mode, the SDK wraps the bytes in an envelope ([`crate::state::seal`]) with the
//! plugin's name, [`Strategy::STATE_VERSION`] and a checksum: loading another plugin's state,
//! another state version, or a corrupted blob is a clear error, never garbage.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ensure, Ctx, Result, Strategy};

/// A way of saving a strategy's state; see the [module docs](self). Implemented by the four
/// marker types of this module only.
pub trait StateMode<S>: 'static {
    /// Whether the plugin exports `save_state` / `load_state`.
    const EXPORTED: bool;
    /// The state's bytes (before the envelope).
    fn save(strategy: &mut S, ctx: &mut Ctx<'_>) -> Result<Vec<u8>>;
    /// Restores from [`save`](StateMode::save)'s bytes.
    fn load(strategy: &mut S, ctx: &mut Ctx<'_>, payload: &[u8]) -> Result<()>;
}

/// The whole strategy struct is the state, saved through serde (`#[derive(Serialize,
/// Deserialize)]` on it; `#[serde(skip)]` fields come back as their `Default`). Compact
/// encodings for big fields: [`crate::state::bits`], [`crate::state::tensors`].
pub enum SerdeState {}

/// The strategy keeps nothing between hooks that a checkpoint would lose (e.g. `finetune`, or
/// a strategy whose fields are all set from its config).
pub enum NoState {}

/// The strategy's own [`Strategy::save_state`] / [`Strategy::load_state`] (raw bytes).
pub enum CustomState {}

/// The strategy cannot be checkpointed: no `save_state` export, so the host turns checkpoints
/// off for its trials (with a warning) and a killed trial starts again from its first task.
pub enum NotCheckpointed {}

impl<S: Strategy + Serialize + DeserializeOwned> StateMode<S> for SerdeState {
    const EXPORTED: bool = true;

    fn save(strategy: &mut S, _: &mut Ctx<'_>) -> Result<Vec<u8>> {
        crate::state::encode(strategy)
    }

    fn load(strategy: &mut S, _: &mut Ctx<'_>, payload: &[u8]) -> Result<()> {
        *strategy = crate::state::decode(payload)?;
        Ok(())
    }
}

impl<S: Strategy> StateMode<S> for NoState {
    const EXPORTED: bool = true;

    fn save(_: &mut S, _: &mut Ctx<'_>) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    fn load(_: &mut S, _: &mut Ctx<'_>, payload: &[u8]) -> Result<()> {
        ensure!(
            payload.is_empty(),
            "the state holds {} bytes, but this strategy keeps no state",
            payload.len()
        );
        Ok(())
    }
}

impl<S: Strategy> StateMode<S> for CustomState {
    const EXPORTED: bool = true;

    fn save(strategy: &mut S, ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        strategy.save_state(ctx)
    }

    fn load(strategy: &mut S, ctx: &mut Ctx<'_>, payload: &[u8]) -> Result<()> {
        strategy.load_state(ctx, payload)
    }
}

impl<S: Strategy> StateMode<S> for NotCheckpointed {
    const EXPORTED: bool = false;

    fn save(_: &mut S, _: &mut Ctx<'_>) -> Result<Vec<u8>> {
        crate::bail!("`{}` declares `type State = NotCheckpointed`", S::NAME)
    }

    fn load(_: &mut S, _: &mut Ctx<'_>, _: &[u8]) -> Result<()> {
        crate::bail!("`{}` declares `type State = NotCheckpointed`", S::NAME)
    }
}
