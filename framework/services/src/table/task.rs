//! Logging, RNG, task: `log`, `rng_u64`, `task_info`.

use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use clef_abi::{ClefCtx, ClefTaskInfo};

use super::service;
use crate::call::{check_out, training, write_out};
use crate::{HostCall, ServiceError, ServiceModel};

pub(super) unsafe extern "C" fn svc_log<M: ServiceModel>(
    raw: *mut ClefCtx,
    level: i32,
    msg: *const c_char,
) {
    let body = || {
        if msg.is_null() {
            return;
        }
        // SAFETY: non-null, NUL-terminated, valid during the call (ABI).
        let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        if raw.is_null() {
            M::log_without_ctx(level, &text);
        } else {
            // SAFETY: a non-null ctx is the running hook's `HostCall<M>` (ABI), used by this
            // call only.
            let h = unsafe { &mut *raw.cast::<HostCall<M>>() };
            h.model.log(level, &text);
        }
    };
    let _ = catch_unwind(AssertUnwindSafe(body));
}

pub(super) unsafe extern "C" fn svc_rng_u64<M: ServiceModel>(raw: *mut ClefCtx) -> u64 {
    let mut v = 0u64;
    let body = |h: &mut HostCall<M>| {
        v = training(&mut h.model)?.rng_u64();
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "rng_u64", body) };
    v
}

pub(super) unsafe extern "C" fn svc_task_info<M: ServiceModel>(
    raw: *mut ClefCtx,
    out: *mut ClefTaskInfo,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let info = h.task_info()?;
        // The caller states how large its struct is (ABI: out-structs with a `struct_size`); a
        // struct older than this host's would be overrun, so it is refused. (A later minor
        // version writes only the first `struct_size` bytes.)
        check_out(out, "out")?;
        // SAFETY: non-null, aligned, and at least the 4-byte `struct_size` field is readable
        // in any version of the struct (it is the first field).
        let caller = unsafe { (*out).struct_size } as usize;
        if caller < std::mem::size_of::<ClefTaskInfo>() {
            return Err(ServiceError::invalid(format!(
                "out.struct_size is {caller}, expected at least {} (set it to sizeof(clef_task_info))",
                std::mem::size_of::<ClefTaskInfo>()
            )));
        }
        // SAFETY: `out` is the plugin's writable task info of at least our size (checked).
        unsafe { write_out(out, info, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "task_info", body) }
}
