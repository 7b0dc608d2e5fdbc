//! [`Ctx`]: safe access to the host's services during a hook.
//!
//! One file per service family, the same families (and file names) as the service layer's
//! `clef-services/src/table/`: `task` (log, RNG, task info), `params` (parameter and
//! gradient views, optimizer state), `model` (forward, features, vjp, NTK), `data` (the
//! batch, task samples and masks), `experts` (the expert pool and per-task heads), `train`
//! (gradients of chosen rows, per-sample gradient powers, re-initialisation and training steps)
//! and `report` (results, extensions).

use std::marker::PhantomData;

use clef_abi::{ClefCtx, ClefHost, CLEF_OK};

use crate::error::{Error, Result};

mod data;
mod experts;
mod model;
mod params;
mod report;
mod task;
mod train;

pub use data::{BatchView, Split};
pub use experts::Activation;
pub use params::{ParamInfo, Role};
pub use task::{LogLevel, Setting, TaskInfo};

/// Problem dimensions, fetched once per hook.
#[derive(Debug, Clone, Copy)]
struct Dims {
    input_dim: usize,
    num_outputs: usize,
    feature_dim: usize,
}

/// The host's services for the duration of one hook.
///
/// Every method calls into the host through the ABI's service table with the hook's context.
/// Slices returned by [`values`](Ctx::values), [`grads`](Ctx::grads) and friends point into
/// host memory; they borrow the `Ctx` (mutably for writable views) so safe code can neither
/// hold two aliasing mutable views nor keep a view across another service call. When you
/// need a parameter's values and gradients at once, use
/// [`values_and_grads`](Ctx::values_and_grads).
///
/// Host refusals become [`Error`]s naming the service and the reason, e.g. ``host service
/// `task_samples` refused: not allowed in this hook (status -5)``; see
/// [`Error::host_status`].
///
/// A `Ctx` is neither `Send` nor `Sync`: host services may only be called on the hook's
/// thread.
pub struct Ctx<'a> {
    host: &'a ClefHost,
    raw: *mut ClefCtx,
    dims: Option<Dims>,
    /// Keeps `Ctx` `!Send + !Sync` and ties it to the hook.
    _not_send: PhantomData<*mut ClefCtx>,
}

/// Converts a host count to `usize`, rejecting negatives.
fn count(service: &str, what: &str, value: i64) -> Result<usize> {
    usize::try_from(value).map_err(|_| {
        Error::msg(format!(
            "host service `{service}` returned a negative `{what}` ({value})"
        ))
    })
}

/// Maps a service status to `Ok` or a descriptive error.
fn check(service: &str, status: i32) -> Result<()> {
    if status == CLEF_OK {
        Ok(())
    } else {
        Err(Error::host(service, status))
    }
}

fn to_i64(value: usize) -> i64 {
    // usize is at most 64 bits on every supported target; values this large never occur.
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl<'a> Ctx<'a> {
    /// Wraps the host table and the hook's context.
    ///
    /// # Safety
    /// `host` must be the table the plugin was created with and `raw` the context of the
    /// running hook; the `Ctx` must not outlive the hook and must stay on its thread.
    pub(crate) unsafe fn new(host: &'a ClefHost, raw: *mut ClefCtx) -> Self {
        Self {
            host,
            raw,
            dims: None,
            _not_send: PhantomData,
        }
    }

    /// The raw host table and context, to call services the SDK does not wrap (e.g. an
    /// extension from [`Ctx::extension`]). Only valid during this hook, on this thread.
    pub fn raw_parts(&mut self) -> (*const ClefHost, *mut ClefCtx) {
        (self.host, self.raw)
    }
}
