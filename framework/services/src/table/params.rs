//! Parameters, gradients and optimizer state: `param_count`, `param_info`, `param_values`,
//! `param_grads`, `optimizer_state`.

use std::ffi::{c_char, CStr};

use clef_abi::{ClefCtx, ClefParamInfo, ClefTensor, CLEF_OK};

use super::service;
use crate::call::{index, interned, shape4, tensor, training, write_out};
use crate::{HostCall, ServiceError, ServiceModel};

pub(super) unsafe extern "C" fn svc_param_count<M: ServiceModel>(raw: *mut ClefCtx) -> i64 {
    let mut n = 0i64;
    let body = |h: &mut HostCall<M>| {
        n = training(&mut h.model)?.param_count() as i64;
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    let status = unsafe { service(raw, "param_count", body) };
    if status == CLEF_OK {
        n
    } else {
        i64::from(status)
    }
}

pub(super) unsafe extern "C" fn svc_param_info<M: ServiceModel>(
    raw: *mut ClefCtx,
    idx: i64,
    out: *mut ClefParamInfo,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        let i = index("parameter index", idx, m.param_count())?;
        let info = m.param_info(i);
        let (ndim, shape) = shape4(info.shape)?;
        let value = ClefParamInfo {
            name: interned(info.name),
            ndim,
            role: info.role,
            shape,
            numel: info.numel as i64,
            layer: info.layer as i64,
        };
        // SAFETY: `out` is the plugin's writable param info (ABI).
        unsafe { write_out(out, value, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "param_info", body) }
}

/// `param_values` and `param_grads`: a writable view of a parameter's values or gradient.
///
/// # Safety
/// `raw` null or this hook's ctx; `out` null or a writable tensor struct.
unsafe fn param_view<M: ServiceModel>(
    raw: *mut ClefCtx,
    name: &'static str,
    grads: bool,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        let i = index("parameter index", idx, m.param_count())?;
        let shape = m.param_info(i).shape.to_vec();
        let buf = if grads {
            m.param_grads(i)
        } else {
            m.param_values(i)
        };
        let t = tensor(buf, &shape)?;
        // SAFETY: `out` is the plugin's writable tensor (caller).
        unsafe { write_out(out, t, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (caller).
    unsafe { service(raw, name, body) }
}

pub(super) unsafe extern "C" fn svc_param_values<M: ServiceModel>(
    raw: *mut ClefCtx,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    // SAFETY: the ABI's contract for `param_values` is `param_view`'s.
    unsafe { param_view::<M>(raw, "param_values", false, idx, out) }
}

pub(super) unsafe extern "C" fn svc_param_grads<M: ServiceModel>(
    raw: *mut ClefCtx,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    // SAFETY: the ABI's contract for `param_grads` is `param_view`'s.
    unsafe { param_view::<M>(raw, "param_grads", true, idx, out) }
}

pub(super) unsafe extern "C" fn svc_optimizer_state<M: ServiceModel>(
    raw: *mut ClefCtx,
    slot: *const c_char,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        if slot.is_null() {
            return Err(ServiceError::invalid("slot name is null"));
        }
        // SAFETY: non-null, NUL-terminated, valid during the call (ABI).
        let name = unsafe { CStr::from_ptr(slot) }
            .to_string_lossy()
            .into_owned();
        let m = training(&mut h.model)?;
        let i = index("parameter index", idx, m.param_count())?;
        let info = m.param_info(i);
        if info.role == clef_abi::CLEF_ROLE_BUFFER {
            return Err(ServiceError::unsupported(format!(
                "tensor {i} (`{}`) is a buffer (CLEF_ROLE_BUFFER): the optimizer keeps no state \
                 for it",
                info.name
            )));
        }
        let shape = info.shape.to_vec();
        let names = m.optimizer_slots();
        match m.optimizer_state(&name, i) {
            Some(buf) => {
                let t = tensor(buf, &shape)?;
                // SAFETY: `out` is the plugin's writable tensor (ABI).
                unsafe { write_out(out, t, "out") }
            }
            None => Err(ServiceError::unsupported(format!(
                "the optimizer has no state slot {name:?} (it has: {})",
                names.join(", ")
            ))),
        }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "optimizer_state", body) }
}
