//! The `extern "C"` services and the [`ClefHost`] table, generic over the host's model.
//!
//! Each service builds its body as a closure (outside any `unsafe` block, so every unsafe
//! operation in it carries its own block and SAFETY note) and runs it through [`service`],
//! which catches panics and records failures. Checks run in the order the host always ran
//! them, so a call with several problems gets the same status as before.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use clef_abi::{
    ClefBatch, ClefCtx, ClefHost, ClefParamInfo, ClefTaskInfo, ClefTensor, CLEF_ABI_MAJOR,
    CLEF_ABI_MINOR, CLEF_INVALID_ARGUMENT, CLEF_OK, CLEF_SETTING_DOMAIN_IL, CLEF_SPLIT_TEST,
    CLEF_SPLIT_TRAIN,
};

use crate::call::{
    before_batch, check_out, count, expect_len, index, interned, product, require_routed,
    require_task_il, shape4, slice, slice_mut, tensor, training, write_out,
};
use crate::{
    valid_report_key, Activation, HostCall, Rows, ServiceError, ServiceModel, ServiceResult,
    MAX_REPORT_KEY,
};

/// The service table for model `M`, by value (e.g. for a `static` of the host).
pub const fn table<M: ServiceModel>() -> ClefHost {
    ClefHost {
        abi_major: CLEF_ABI_MAJOR,
        abi_minor: CLEF_ABI_MINOR,
        struct_size: std::mem::size_of::<ClefHost>() as u32,
        log: svc_log::<M>,
        rng_u64: svc_rng_u64::<M>,
        task_info: svc_task_info::<M>,
        param_count: svc_param_count::<M>,
        param_info: svc_param_info::<M>,
        param_values: svc_param_values::<M>,
        param_grads: svc_param_grads::<M>,
        optimizer_state: svc_optimizer_state::<M>,
        forward: svc_forward::<M>,
        features: svc_features::<M>,
        vjp: svc_vjp::<M>,
        ntk_gram: svc_ntk_gram::<M>,
        batch_get: svc_batch_get::<M>,
        batch_append: svc_batch_append::<M>,
        task_samples: svc_task_samples::<M>,
        task_mask: svc_task_mask::<M>,
        expert_add: svc_expert_add::<M>,
        expert_select: svc_expert_select::<M>,
        get_extension: svc_get_extension,
        report: svc_report::<M>,
        expert_freeze: svc_expert_freeze::<M>,
        expert_params: svc_expert_params::<M>,
        head_forward: svc_head_forward::<M>,
        head_vjp: svc_head_vjp::<M>,
    }
}

/// The service table for model `M` (one per model type, valid forever). Pass it to a plugin's
/// `create` and the pointer of a [`HostCall<M>`] as every hook's `ctx`.
///
/// A model type with lifetimes (one borrowing the host's state for a hook) is instantiated at
/// `'static`: the table's services only use a context while the hook that received it runs.
pub fn host_table<M: ServiceModel>() -> &'static ClefHost {
    const { &table::<M>() }
}

/// Runs a service body over the context: null context → `CLEF_INVALID_ARGUMENT`; a failure is
/// recorded in the context and returned as its code; a panic becomes `CLEF_ERROR`.
///
/// # Safety
/// `raw` must be null or the pointer of a live [`HostCall<M>`] passed to the running hook.
unsafe fn service<M: ServiceModel>(
    raw: *mut ClefCtx,
    name: &'static str,
    f: impl FnOnce(&mut HostCall<M>) -> ServiceResult,
) -> i32 {
    if raw.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: the ABI lets plugins call services only during a hook with that hook's ctx,
    // which is a live `HostCall<M>` owned by the host; hooks of one instance never run
    // concurrently, so this is the only reference while the service runs.
    let h = unsafe { &mut *raw.cast::<HostCall<M>>() };
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut *h)))
        .unwrap_or_else(|_| Err(ServiceError::error("the host panicked (a clef bug)")));
    match result {
        Ok(()) => CLEF_OK,
        Err(e) => {
            let _ = catch_unwind(AssertUnwindSafe(|| h.model.refused(name, &e)));
            h.service_error = Some(format!("{name}: {}", e.message));
            e.code
        }
    }
}

// ---- logging, RNG, task ------------------------------------------------------------------

unsafe extern "C" fn svc_log<M: ServiceModel>(raw: *mut ClefCtx, level: i32, msg: *const c_char) {
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

unsafe extern "C" fn svc_rng_u64<M: ServiceModel>(raw: *mut ClefCtx) -> u64 {
    let mut v = 0u64;
    let body = |h: &mut HostCall<M>| {
        v = training(&mut h.model)?.rng_u64();
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "rng_u64", body) };
    v
}

unsafe extern "C" fn svc_task_info<M: ServiceModel>(
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

// ---- parameters ---------------------------------------------------------------------------

unsafe extern "C" fn svc_param_count<M: ServiceModel>(raw: *mut ClefCtx) -> i64 {
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

unsafe extern "C" fn svc_param_info<M: ServiceModel>(
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

unsafe extern "C" fn svc_param_values<M: ServiceModel>(
    raw: *mut ClefCtx,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    // SAFETY: the ABI's contract for `param_values` is `param_view`'s.
    unsafe { param_view::<M>(raw, "param_values", false, idx, out) }
}

unsafe extern "C" fn svc_param_grads<M: ServiceModel>(
    raw: *mut ClefCtx,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    // SAFETY: the ABI's contract for `param_grads` is `param_view`'s.
    unsafe { param_view::<M>(raw, "param_grads", true, idx, out) }
}

unsafe extern "C" fn svc_optimizer_state<M: ServiceModel>(
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
        let shape = m.param_info(i).shape.to_vec();
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

// ---- model evaluation ---------------------------------------------------------------------

/// Which network output a row-wise service computes.
#[derive(Clone, Copy)]
enum Output {
    Logits,
    Features,
}

/// Copies what the model produced into the plugin's buffer.
fn deliver(produced: &[f32], dst: &mut [f32]) -> ServiceResult {
    if produced.len() == dst.len() {
        dst.copy_from_slice(produced);
        Ok(())
    } else {
        Err(ServiceError::error(format!(
            "the backend produced {} values, expected {}",
            produced.len(),
            dst.len()
        )))
    }
}

/// The checks of `forward`, `features` and `head_forward`: `out_len` must be `rows * width`
/// (`what` names the width); then `(inputs, output)`, or `None` for zero rows.
///
/// # Safety
/// `x` `rows * input_dim` readable floats; `out` `out_len` writable floats that no host buffer
/// aliases.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_args<'x>(
    rows: usize,
    out_len: usize,
    input_dim: usize,
    width: usize,
    what: &str,
    x: *const f32,
    out: *mut f32,
) -> ServiceResult<Option<(&'x [f32], &'x mut [f32])>> {
    let expected = product(rows, width, "rows * width")?;
    expect_len(
        "out_len",
        out_len,
        expected,
        format_args!("rows ({rows}) * {what} ({width})"),
    )?;
    if rows == 0 {
        return Ok(None);
    }
    let n_in = product(rows, input_dim, "rows * input_dim")?;
    // SAFETY: `rows * input_dim` inputs readable during the call (caller).
    let xs = unsafe { slice(x, n_in, "x") }?;
    // SAFETY: `out_len` writable floats during the call (caller), plugin memory.
    let dst = unsafe { slice_mut(out, out_len, "out") }?;
    Ok(Some((xs, dst)))
}

/// `forward` and `features`.
///
/// # Safety
/// `raw` null or this hook's ctx; `x` `rows * input_dim` readable floats; `out` `out_len`
/// writable floats (as the ABI documents both services).
unsafe fn rows_service<M: ServiceModel>(
    raw: *mut ClefCtx,
    name: &'static str,
    which: Output,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows = count("rows", rows)?;
        let out_len = count("out_len", out_len)?;
        let m = training(&mut h.model)?;
        let f = m.facts();
        let (width, what) = match which {
            Output::Logits => (f.num_outputs, "num_outputs"),
            Output::Features => (f.feature_dim, "feature_dim"),
        };
        // SAFETY: the buffers as the ABI documents `forward` / `features` (caller).
        let Some((xs, dst)) =
            unsafe { rows_args(rows, out_len, f.input_dim, width, what, x, out) }?
        else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut h.scratch);
        let r = match which {
            Output::Logits => h.model.forward(xs, rows, &mut buf),
            Output::Features => h.model.features(xs, rows, &mut buf),
        }
        .and_then(|()| deliver(&buf, dst));
        h.scratch = buf;
        r
    };
    // SAFETY: `raw` is null or this hook's ctx (caller).
    unsafe { service(raw, name, body) }
}

unsafe extern "C" fn svc_forward<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: the ABI's contract for `forward` is `rows_service`'s.
    unsafe { rows_service::<M>(raw, "forward", Output::Logits, x, rows, out, out_len) }
}

unsafe extern "C" fn svc_features<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: the ABI's contract for `features` is `rows_service`'s.
    unsafe { rows_service::<M>(raw, "features", Output::Features, x, rows, out, out_len) }
}

/// The checks of `vjp` and `head_vjp`: `(rows, inputs, cotangent)`, or `None` for zero rows.
///
/// # Safety
/// `x` `rows * input_dim` readable floats; `cotangent` `cotangent_len` readable floats.
unsafe fn vjp_args<'x>(
    rows: usize,
    len: usize,
    input_dim: usize,
    num_outputs: usize,
    x: *const f32,
    cotangent: *const f32,
) -> ServiceResult<Option<(&'x [f32], &'x [f32])>> {
    let expected = product(rows, num_outputs, "rows * num_outputs")?;
    expect_len(
        "cotangent_len",
        len,
        expected,
        format_args!("rows ({rows}) * num_outputs ({num_outputs})"),
    )?;
    if rows == 0 {
        return Ok(None);
    }
    let n_in = product(rows, input_dim, "rows * input_dim")?;
    // SAFETY: `rows * input_dim` inputs readable during the call (caller).
    let xs = unsafe { slice(x, n_in, "x") }?;
    // SAFETY: `cotangent_len` floats readable during the call (caller).
    let cot = unsafe { slice(cotangent, len, "cotangent") }?;
    Ok(Some((xs, cot)))
}

unsafe extern "C" fn svc_vjp<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows = count("rows", rows)?;
        let len = count("cotangent_len", cotangent_len)?;
        let m = training(&mut h.model)?;
        let f = m.facts();
        // SAFETY: the buffers as the ABI documents `vjp` (plugin memory, valid for the call).
        match unsafe { vjp_args(rows, len, f.input_dim, f.num_outputs, x, cotangent) }? {
            Some((xs, cot)) => m.vjp(xs, rows, cot),
            None => Ok(()),
        }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "vjp", body) }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn svc_ntk_gram<M: ServiceModel>(
    raw: *mut ClefCtx,
    a: *const f32,
    rows_a: i64,
    b: *const f32,
    rows_b: i64,
    output: i64,
    out: *mut f64,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows_a = count("rows_a", rows_a)?;
        let rows_b = count("rows_b", rows_b)?;
        let out_len = count("out_len", out_len)?;
        let m = training(&mut h.model)?;
        let f = m.facts();
        let output = index("output", output, f.num_outputs)?;
        let expected = product(rows_a, rows_b, "rows_a * rows_b")?;
        expect_len(
            "out_len",
            out_len,
            expected,
            format_args!("rows_a ({rows_a}) * rows_b ({rows_b})"),
        )?;
        if expected == 0 {
            return Ok(());
        }
        let dim = f.input_dim;
        // SAFETY: `rows_a * input_dim` inputs readable during the call (ABI).
        let xa = unsafe { slice(a, product(rows_a, dim, "rows_a * input_dim")?, "a") }?;
        // SAFETY: `rows_b * input_dim` inputs readable during the call (ABI).
        let xb = unsafe { slice(b, product(rows_b, dim, "rows_b * input_dim")?, "b") }?;
        // SAFETY: `out_len` writable f64s during the call (ABI), plugin memory that no host
        // buffer aliases.
        let dst = unsafe { slice_mut(out, out_len, "out") }?;
        m.ntk_gram(xa, rows_a, xb, rows_b, output, dst)
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "ntk_gram", body) }
}

// ---- data ---------------------------------------------------------------------------------

unsafe extern "C" fn svc_batch_get<M: ServiceModel>(raw: *mut ClefCtx, out: *mut ClefBatch) -> i32 {
    let body = |h: &mut HostCall<M>| {
        before_batch(&h.model)?;
        let m = training(&mut h.model)?;
        let dim = m.facts().input_dim as i64;
        let batch = m
            .batch()
            .ok_or_else(|| ServiceError::error("no batch in before_batch (a host bug)"))?;
        let targets: Vec<i64> = batch.targets.iter().map(|&t| t as i64).collect();
        if h.targets != targets {
            h.targets = targets;
        }
        // The batch does not move during the hook (appended rows are kept aside by the
        // model), so the view stays valid until the hook returns.
        let view = ClefBatch {
            x: batch.x.as_ptr(),
            targets: h.targets.as_ptr(),
            rows: batch.targets.len() as i64,
            cols: dim,
            current_rows: batch.current_rows as i64,
        };
        // SAFETY: `out` is the plugin's writable batch struct (ABI).
        unsafe { write_out(out, view, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "batch_get", body) }
}

unsafe extern "C" fn svc_batch_append<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        before_batch(&h.model)?;
        let rows = count("rows", rows)?;
        let m = training(&mut h.model)?;
        let f = m.facts();
        let (dim, outs) = (f.input_dim, f.num_outputs);
        let n_in = product(rows, dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` inputs readable during the call (ABI).
        let xs = unsafe { slice(x, n_in, "x") }?;
        // SAFETY: `rows` targets readable during the call (ABI).
        let ts = unsafe { slice(targets, rows, "targets") }?;
        let masks: Option<Vec<bool>> = if masks.is_null() {
            None
        } else {
            let n = product(rows, outs, "rows * num_outputs")?;
            // SAFETY: `rows * num_outputs` bytes readable during the call (ABI).
            let m = unsafe { slice(masks, n, "masks") }?;
            Some(m.iter().map(|&b| b != 0).collect())
        };
        let batch = m
            .batch()
            .ok_or_else(|| ServiceError::error("no batch in before_batch (a host bug)"))?;
        let shared = batch.mask.as_deref();
        let mut tv = Vec::with_capacity(rows);
        for (r, &t) in ts.iter().enumerate() {
            let t = index(&format!("target of row {r}"), t, outs)?;
            let allowed = match (&masks, shared) {
                (Some(m), _) => m[r * outs + t],
                (None, Some(s)) => s.get(t).copied().unwrap_or(false),
                (None, None) => true,
            };
            if !allowed {
                return Err(ServiceError::invalid(format!(
                    "target {t} of row {r} is not in the row's class mask{}",
                    if masks.is_none() {
                        " (the current task's training mask; pass masks for rows of other tasks)"
                    } else {
                        ""
                    }
                )));
            }
            tv.push(t);
        }
        if rows > 0 {
            m.append_rows(Rows {
                x: xs.to_vec(),
                targets: tv,
                masks,
            });
        }
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "batch_append", body) }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn svc_task_samples<M: ServiceModel>(
    raw: *mut ClefCtx,
    task: i64,
    split: i32,
    start: i64,
    rows: i64,
    x_out: *mut f32,
    targets_out: *mut i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        let f = m.facts();
        let t = index("task", task, f.num_tasks)?;
        if t > f.task {
            return Err(ServiceError::not_allowed(format!(
                "task {t} is in the future (current task: {})",
                f.task
            )));
        }
        // Test data is for evaluation only: a strategy that trained on it would leak the
        // evaluation set (and break tune-then-evaluate), so the host refuses it.
        match split {
            CLEF_SPLIT_TRAIN => {}
            CLEF_SPLIT_TEST => {
                return Err(ServiceError::not_allowed(
                    "test samples are reserved for evaluation; strategies may read training samples only",
                ))
            }
            other => return Err(ServiceError::invalid(format!("unknown split {other}"))),
        }
        let (start, rows) = (count("start", start)?, count("rows", rows)?);
        let len = m.task_facts(t).train_samples;
        start
            .checked_add(rows)
            .filter(|&e| e <= len)
            .ok_or_else(|| {
                ServiceError::invalid(format!(
                    "samples {start}..{start}+{rows} exceed the split's {len} samples"
                ))
            })?;
        let n_in = product(rows, f.input_dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` writable floats during the call (ABI), plugin memory.
        let xo = unsafe { slice_mut(x_out, n_in, "x_out") }?;
        // SAFETY: `rows` writable targets during the call (ABI), plugin memory.
        let yo = unsafe { slice_mut(targets_out, rows, "targets_out") }?;
        if rows == 0 {
            return Ok(());
        }
        let (mut gx, mut gy) = (
            std::mem::take(&mut h.gathered_x),
            std::mem::take(&mut h.gathered_y),
        );
        gx.clear();
        gy.clear();
        let r = h
            .model
            .task_samples(t, start, rows, &mut gx, &mut gy)
            .and_then(|()| {
                if gx.len() != n_in || gy.len() != rows {
                    return Err(ServiceError::error(format!(
                        "the host gathered {} inputs and {} targets, expected {n_in} and {rows}",
                        gx.len(),
                        gy.len()
                    )));
                }
                xo.copy_from_slice(&gx);
                for (o, &y) in yo.iter_mut().zip(&gy) {
                    *o = y as i64;
                }
                Ok(())
            });
        h.gathered_x = gx;
        h.gathered_y = gy;
        r
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "task_samples", body) }
}

unsafe extern "C" fn svc_task_mask<M: ServiceModel>(
    raw: *mut ClefCtx,
    task: i64,
    out: *mut u8,
    len: i64,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        // Any task, future ones included: a head's units are the layout of the output layer,
        // not data (docs/abi.md: "allowed in hooks").
        let m = training(&mut h.model)?;
        let f = m.facts();
        let t = index("task", task, f.num_tasks)?;
        let len = count("len", len)?;
        if len != f.num_outputs {
            return Err(ServiceError::invalid(format!(
                "len is {len}, expected num_outputs ({})",
                f.num_outputs
            )));
        }
        // SAFETY: `len` writable bytes during the call (ABI), plugin memory.
        let dst = unsafe { slice_mut(out, len, "out") }?;
        if f.setting == CLEF_SETTING_DOMAIN_IL {
            dst.fill(1);
        } else {
            dst.fill(0);
            for &u in m.task_facts(t).units {
                if let Some(d) = dst.get_mut(u) {
                    *d = 1;
                }
            }
        }
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "task_mask", body) }
}

// ---- expert pool --------------------------------------------------------------------------

unsafe extern "C" fn svc_expert_add<M: ServiceModel>(
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

unsafe extern "C" fn svc_expert_select<M: ServiceModel>(raw: *mut ClefCtx, id: i64) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        require_task_il(m)?;
        let id = index("expert id", id, m.expert_count())?;
        m.expert_select(id)
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_select", body) }
}

unsafe extern "C" fn svc_expert_freeze<M: ServiceModel>(
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

unsafe extern "C" fn svc_expert_params<M: ServiceModel>(
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

unsafe extern "C" fn svc_head_forward<M: ServiceModel>(
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

unsafe extern "C" fn svc_head_vjp<M: ServiceModel>(
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

// ---- extensions, results ------------------------------------------------------------------

unsafe extern "C" fn svc_get_extension(_raw: *mut ClefCtx, _name: *const c_char) -> *const c_void {
    std::ptr::null()
}

unsafe extern "C" fn svc_report<M: ServiceModel>(
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
