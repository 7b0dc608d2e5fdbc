//! The expert pool and per-task heads: `expert_add`, `expert_select`, (ABI 1.2)
//! `expert_freeze`, `expert_params`, `head_forward`, `head_vjp`, and (ABI 1.5)
//! `expert_add_conv`.

use clef_abi::ClefCtx;

use super::model::{deliver, rows_args, vjp_args};
use super::service;
use crate::call::{
    check_out, count, index, require_routed, require_task_il, slice, training, write_out,
};
use crate::{Activation, HostCall, ServiceError, ServiceModel};

pub(super) unsafe extern "C" fn svc_expert_add<M: ServiceModel>(
    raw: *mut ClefCtx,
    hidden: *const i64,
    n_hidden: i64,
    activation: i32,
    out_id: *mut i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let n = count("n_hidden", n_hidden)?;
        // SAFETY: `n_hidden` readable values during the call (ABI).
        let widths = unsafe { slice(hidden, n, "hidden") }?;
        let widths = widths
            .iter()
            .map(|&w| {
                usize::try_from(w).ok().filter(|&w| w > 0).ok_or_else(|| {
                    ServiceError::invalid(format!("hidden width {w} is not positive"))
                })
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let act = Activation::from_code(activation).ok_or_else(|| {
            ServiceError::invalid(format!(
                "activation {activation} (0 relu, 1 tanh, 2 sigmoid)"
            ))
        })?;
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        // Checked before the pool changes: a refused call adds nothing.
        check_out(out_id, "out_id")?;
        let id = m.expert_add(widths, act)?;
        // SAFETY: `out_id` is writable during the call (ABI; checked non-null and aligned).
        unsafe { write_out(out_id, id as i64, "out_id") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_add", body) }
}

/// Positive widths from `n` plugin values at `p` (`what` names them in errors).
///
/// # Safety
/// `p` points to `n` readable values during the call, or `n == 0`.
unsafe fn widths(
    p: *const i64,
    n: i64,
    count_name: &str,
    what: &str,
) -> Result<Vec<usize>, ServiceError> {
    let n = count(count_name, n)?;
    // SAFETY: `n` readable values during the call (caller).
    let ws = unsafe { slice(p, n, what) }?;
    ws.iter()
        .map(|&w| {
            usize::try_from(w)
                .ok()
                .filter(|&w| w > 0)
                .ok_or_else(|| ServiceError::invalid(format!("{what} width {w} is not positive")))
        })
        .collect()
}

pub(super) unsafe extern "C" fn svc_expert_add_conv<M: ServiceModel>(
    raw: *mut ClefCtx,
    channels: *const i64,
    n_channels: i64,
    hidden: *const i64,
    n_hidden: i64,
    out_id: *mut i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        // SAFETY: `n_channels` and `n_hidden` readable values during the call (ABI).
        let chans = unsafe { widths(channels, n_channels, "n_channels", "channels") }?;
        if chans.is_empty() {
            return Err(ServiceError::invalid(
                "n_channels is 0: a convolutional expert needs at least one convolution",
            ));
        }
        // SAFETY: as above.
        let dense = unsafe { widths(hidden, n_hidden, "n_hidden", "hidden") }?;
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        if !m.conv_experts() {
            return Err(ServiceError::not_allowed(
                "convolutional experts need a convolutional backbone (`model.backbone` \
                 \"convnet\" or \"resnet18\"); use expert_add on an MLP",
            ));
        }
        // Checked before the pool changes: a refused call adds nothing.
        check_out(out_id, "out_id")?;
        let id = m.expert_add_conv(chans, dense)?;
        // SAFETY: `out_id` is writable during the call (ABI; checked non-null and aligned).
        unsafe { write_out(out_id, id as i64, "out_id") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_add_conv", body) }
}

pub(super) unsafe extern "C" fn svc_expert_select<M: ServiceModel>(
    raw: *mut ClefCtx,
    id: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        let id = index("expert id", id, m.expert_count())?;
        m.expert_select(id)
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_select", body) }
}

pub(super) unsafe extern "C" fn svc_expert_freeze<M: ServiceModel>(
    raw: *mut ClefCtx,
    id: i64,
    frozen: i32,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        let id = index("expert id", id, m.expert_count())?;
        m.expert_freeze(id, frozen != 0)
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_freeze", body) }
}

pub(super) unsafe extern "C" fn svc_expert_params<M: ServiceModel>(
    raw: *mut ClefCtx,
    id: i64,
    out: *mut i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        let id = if id == -1 {
            None
        } else {
            Some(index("expert id", id, m.expert_count())?)
        };
        let n = m.expert_params(id)?;
        // SAFETY: `out` is null or writable during the call (ABI).
        unsafe { write_out(out, n as i64, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_params", body) }
}

pub(super) unsafe extern "C" fn svc_head_forward<M: ServiceModel>(
    raw: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows = count("rows", rows)?;
        let out_len = count("out_len", out_len)?;
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        let f = m.facts();
        let task = index("task", task, f.num_tasks)?;
        let (dim, outs) = (f.input_dim, f.num_outputs);
        // SAFETY: the buffers as the ABI documents `head_forward` (plugin memory, valid for
        // the call).
        let Some((xs, dst)) =
            unsafe { rows_args(rows, out_len, dim, outs, "num_outputs", x, out) }?
        else {
            return Ok(());
        };
        require_routed(m, task)?;
        let mut buf = std::mem::take(&mut h.scratch);
        let r = h
            .model
            .head_forward(task, xs, rows, &mut buf)
            .and_then(|()| deliver(&buf, dst));
        h.scratch = buf;
        r
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "head_forward", body) }
}

pub(super) unsafe extern "C" fn svc_head_vjp<M: ServiceModel>(
    raw: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows = count("rows", rows)?;
        let len = count("cotangent_len", cotangent_len)?;
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        let f = m.facts();
        let task = index("task", task, f.num_tasks)?;
        // SAFETY: the buffers as the ABI documents `head_vjp` (plugin memory, valid for the
        // call).
        match unsafe { vjp_args(rows, len, f.input_dim, f.num_outputs, x, cotangent) }? {
            Some((xs, cot)) => {
                require_routed(m, task)?;
                m.head_vjp(task, xs, rows, cot)
            }
            None => Ok(()),
        }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "head_vjp", body) }
}
