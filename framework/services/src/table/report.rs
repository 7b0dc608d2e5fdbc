//! Results and extensions: `report` (ABI 1.1) and `get_extension`.

use std::ffi::{c_char, c_void, CStr};

use clef_abi::ClefCtx;

use super::service;
use crate::call::training;
use crate::{valid_report_key, HostCall, ServiceError, ServiceModel, MAX_REPORT_KEY};

pub(super) unsafe extern "C" fn svc_get_extension(
    _raw: *mut ClefCtx,
    _name: *const c_char,
) -> *const c_void {
    std::ptr::null()
}

pub(super) unsafe extern "C" fn svc_report<M: ServiceModel>(
    raw: *mut ClefCtx,
    key: *const c_char,
    value: f64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        // Only hooks with a training context: the value belongs to the current task.
        let m = training(&mut h.model)?;
        if key.is_null() {
            return Err(ServiceError::invalid("key is null"));
        }
        // SAFETY: non-null and NUL-terminated, valid during the call (ABI).
        let bytes = unsafe { CStr::from_ptr(key) }.to_bytes();
        if !valid_report_key(bytes) {
            return Err(ServiceError::invalid(format!(
                "key {:?} must be 1 to {MAX_REPORT_KEY} printable ASCII characters without \
                 spaces",
                String::from_utf8_lossy(bytes)
            )));
        }
        let key = String::from_utf8_lossy(bytes).into_owned();
        if !value.is_finite() {
            return Err(ServiceError::invalid(format!(
                "value of `{key}` is {value} (must be finite)"
            )));
        }
        m.report(key, value);
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "report", body) }
}
