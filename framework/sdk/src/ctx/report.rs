//! Results and extensions: `report` (ABI 1.1) and `get_extension`.

use std::ffi::{c_void, CString};
use std::ptr::NonNull;

use clef_abi::{CLEF_HOST_SIZE_V1_1, CLEF_UNSUPPORTED};

use super::{check, Ctx};
use crate::error::{Error, Result};

impl Ctx<'_> {
    /// Whether the host offers [`report`](Ctx::report) (ABI 1.1 hosts and later).
    pub fn can_report(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_1
    }

    /// Records `value` under `key` in the trial's results for the current task (the record's
    /// `strategy_metrics[task][key]` in `results.jsonl`); reporting a key again in the same
    /// task replaces the value. `key`: 1 to 128 printable ASCII characters without spaces,
    /// e.g. `density.total`; `value`: finite. Not available in `save_state`/`load_state`.
    ///
    /// Fails with [`HostStatus::Unsupported`](crate::HostStatus) on a host older than ABI 1.1
    /// (check [`can_report`](Ctx::can_report) to skip reporting there).
    pub fn report(&mut self, key: &str, value: f64) -> Result<()> {
        if !self.can_report() {
            return Err(Error::host("report", CLEF_UNSUPPORTED));
        }
        let key_c = CString::new(key)
            .map_err(|_| Error::msg(format!("report key {key:?} contains a NUL byte")))?;
        // SAFETY: the table's `struct_size` covers `report` (checked above), so the field is
        // part of the host's table; valid context (Ctx::new); `key_c` is NUL-terminated and
        // outlives the call.
        check("report", unsafe {
            (self.host.report)(self.raw, key_c.as_ptr(), value)
        })
        .map_err(|e| e.context(format!("reporting `{key}` = {value}")))
    }

    /// A named host extension table (e.g. a future `clef.xyz.v1`), or `None` if the host
    /// lacks it. Interpreting the table is up to the caller.
    pub fn extension(&mut self, name: &str) -> Option<NonNull<c_void>> {
        let name = CString::new(name).ok()?;
        // SAFETY: valid table and context (Ctx::new); `name` is NUL-terminated and outlives
        // the call.
        let table = unsafe { (self.host.get_extension)(self.raw, name.as_ptr()) };
        NonNull::new(table.cast_mut())
    }
}
