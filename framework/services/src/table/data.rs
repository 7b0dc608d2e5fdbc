//! Data: the training batch (`batch_get`, `batch_append`), stored samples of past tasks
//! (`task_samples`) and task heads (`task_mask`).

use clef_abi::{ClefBatch, ClefCtx, CLEF_SETTING_DOMAIN_IL, CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN};

use super::service;
use crate::call::{before_batch, count, index, product, slice, slice_mut, training, write_out};
use crate::{HostCall, Rows, ServiceError, ServiceModel};

pub(super) unsafe extern "C" fn svc_batch_get<M: ServiceModel>(
    raw: *mut ClefCtx,
    out: *mut ClefBatch,
) -> i32 {
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

pub(super) unsafe extern "C" fn svc_batch_append<M: ServiceModel>(
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
        // SAFETY: null or `rows * num_outputs` bytes readable during the call (ABI).
        let masks = unsafe { row_masks(masks, rows, outs) }?;
        let batch = m
            .batch()
            .ok_or_else(|| ServiceError::error("no batch in before_batch (a host bug)"))?;
        let tv = checked_targets(ts, outs, masks.as_deref(), batch.mask.as_deref())?;
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

/// Row masks a plugin passed (`rows * num_outputs` bytes, non-zero = in the row's softmax),
/// or `None` for a null pointer.
///
/// # Safety
/// `masks` null or `rows * outs` readable bytes valid during the call.
pub(super) unsafe fn row_masks(
    masks: *const u8,
    rows: usize,
    outs: usize,
) -> crate::ServiceResult<Option<Vec<bool>>> {
    if masks.is_null() {
        return Ok(None);
    }
    let n = product(rows, outs, "rows * num_outputs")?;
    // SAFETY: `rows * num_outputs` bytes readable during the call (caller).
    let m = unsafe { slice(masks, n, "masks") }?;
    Ok(Some(m.iter().map(|&b| b != 0).collect()))
}

/// The targets of plugin-given rows, each checked to be an output unit inside its row's mask:
/// `masks` (`rows * outs` flags) if given, else `shared` (`None` = every unit).
pub(super) fn checked_targets(
    ts: &[i64],
    outs: usize,
    masks: Option<&[bool]>,
    shared: Option<&[bool]>,
) -> crate::ServiceResult<Vec<usize>> {
    let mut tv = Vec::with_capacity(ts.len());
    for (r, &t) in ts.iter().enumerate() {
        let t = index(&format!("target of row {r}"), t, outs)?;
        let allowed = match (masks, shared) {
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
    Ok(tv)
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn svc_task_samples<M: ServiceModel>(
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

pub(super) unsafe extern "C" fn svc_task_mask<M: ServiceModel>(
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
