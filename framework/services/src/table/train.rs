//! Training arithmetic on plugin-chosen rows (ABI 1.6): the gradient of a second batch
//! (`batch_grad`), per-sample gradient powers (`sample_grads`), and, at task boundaries, a fresh
//! network (`reinit`) and optimizer steps on the plugin's own data (`train_step`).

use clef_abi::{ClefCtx, CLEF_SETTING_DOMAIN_IL};

use super::data::{checked_targets, row_masks};
use super::model::vjp_args;
use super::service;
use crate::call::{boundary, count, expect_len, product, slice, slice_mut, training, write_out};
use crate::{training_units, HostCall, ServiceError, ServiceModel, ServiceResult};

/// Labelled rows a plugin passed: inputs, checked targets and per-row masks (`None`: the
/// current task's training mask, against which the targets were checked).
struct Labelled<'x> {
    x: &'x [f32],
    rows: usize,
    targets: Vec<usize>,
    masks: Option<Vec<bool>>,
}

/// The current task's training mask as the trainer builds it (`None` in domain-IL: every unit).
fn training_mask<M: ServiceModel>(m: &M) -> Option<Vec<bool>> {
    let f = m.facts();
    if f.setting == CLEF_SETTING_DOMAIN_IL {
        return None;
    }
    let units = training_units(f.setting, f.task, f.num_outputs, |j| m.task_facts(j).units)?;
    let mut mask = vec![false; f.num_outputs];
    for u in units {
        mask[u] = true;
    }
    Some(mask)
}

/// The checks shared by `batch_grad` and `train_step`.
///
/// # Safety
/// `x` `rows * input_dim` readable floats, `targets` `rows` readable values, `masks` null or
/// `rows * num_outputs` readable bytes, all valid during the call.
unsafe fn labelled<'x, M: ServiceModel>(
    m: &M,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
) -> ServiceResult<Labelled<'x>> {
    let rows = count("rows", rows)?;
    let f = m.facts();
    let n_in = product(rows, f.input_dim, "rows * input_dim")?;
    // SAFETY: `rows * input_dim` inputs readable during the call (caller).
    let xs = unsafe { slice(x, n_in, "x") }?;
    // SAFETY: `rows` targets readable during the call (caller).
    let ts = unsafe { slice(targets, rows, "targets") }?;
    // SAFETY: null or `rows * num_outputs` bytes readable during the call (caller).
    let masks = unsafe { row_masks(masks, rows, f.num_outputs) }?;
    let shared = if masks.is_none() {
        training_mask(m)
    } else {
        None
    };
    let targets = checked_targets(ts, f.num_outputs, masks.as_deref(), shared.as_deref())?;
    // The model gets explicit masks for every row whenever the training mask applies, so it
    // never has to rebuild it.
    let masks = match (masks, shared) {
        (Some(m), _) => Some(m),
        (None, Some(s)) => Some(s.repeat(rows)),
        (None, None) => None,
    };
    Ok(Labelled {
        x: xs,
        rows,
        targets,
        masks,
    })
}

/// The total number of scalars over every tensor, in `param_info` order.
fn total_numel<M: ServiceModel>(m: &M) -> ServiceResult<usize> {
    (0..m.param_count()).try_fold(0usize, |acc, i| {
        acc.checked_add(m.param_info(i).numel)
            .ok_or_else(|| ServiceError::error("the parameter count overflows"))
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) unsafe extern "C" fn svc_batch_grad<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
    out: *mut f32,
    out_len: i64,
    loss_out: *mut f32,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let out_len = count("out_len", out_len)?;
        let m = training(&mut h.model)?;
        let total = total_numel(m)?;
        expect_len(
            "out_len",
            out_len,
            total,
            format_args!("the sum of every tensor's numel"),
        )?;
        // SAFETY: the buffers as the ABI documents `batch_grad` (plugin memory).
        let rows = unsafe { labelled(m, x, rows, targets, masks) }?;
        // SAFETY: `out_len` writable floats during the call (ABI), plugin memory.
        let dst = unsafe { slice_mut(out, out_len, "out") }?;
        let loss = if rows.rows == 0 {
            dst.fill(0.0);
            0.0
        } else {
            m.batch_grad(rows.x, rows.rows, &rows.targets, rows.masks.as_deref(), dst)?
        };
        if !loss_out.is_null() {
            // SAFETY: a non-null `loss_out` is a writable f32 (ABI).
            unsafe { write_out(loss_out, loss, "loss_out") }?;
        }
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "batch_grad", body) }
}

pub(super) unsafe extern "C" fn svc_sample_grads<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
    power: i32,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let rows = count("rows", rows)?;
        let len = count("cotangent_len", cotangent_len)?;
        let m = training(&mut h.model)?;
        let power = match power {
            1 => 1,
            2 => 2,
            p => {
                return Err(ServiceError::invalid(format!(
                    "power is {p}, expected 1 or 2"
                )))
            }
        };
        let f = m.facts();
        // SAFETY: the buffers as the ABI documents `sample_grads` (plugin memory).
        match unsafe { vjp_args(rows, len, f.input_dim, f.num_outputs, x, cotangent) }? {
            Some((xs, cot)) => m.sample_grads(xs, rows, cot, power),
            None => Ok(()),
        }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "sample_grads", body) }
}

pub(super) unsafe extern "C" fn svc_reinit<M: ServiceModel>(raw: *mut ClefCtx) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        boundary(m)?;
        m.reinit()
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "reinit", body) }
}

pub(super) unsafe extern "C" fn svc_train_step<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
    loss_out: *mut f32,
) -> i32 {
    let body = |h: &mut HostCall<M>| {
        let m = training(&mut h.model)?;
        boundary(m)?;
        // SAFETY: the buffers as the ABI documents `train_step` (plugin memory).
        let rows = unsafe { labelled(m, x, rows, targets, masks) }?;
        if rows.rows == 0 {
            return Err(ServiceError::invalid(
                "rows is 0: a training step needs rows",
            ));
        }
        let loss = m.train_step(rows.x, rows.rows, &rows.targets, rows.masks.as_deref())?;
        if !loss_out.is_null() {
            // SAFETY: a non-null `loss_out` is a writable f32 (ABI).
            unsafe { write_out(loss_out, loss, "loss_out") }?;
        }
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "train_step", body) }
}
