//! Model evaluation on inputs the plugin chooses: `forward`, `features`, `vjp`, `ntk_gram`
//! (and the checks `head_forward` and `head_vjp` share with them).

use clef_abi::ClefCtx;

use super::service;
use crate::call::{count, expect_len, index, product, slice, slice_mut, training};
use crate::{HostCall, ServiceError, ServiceModel, ServiceResult};

/// Which network output a row-wise service computes.
#[derive(Clone, Copy)]
enum Output {
    Logits,
    Features,
}

/// Copies what the model produced into the plugin's buffer.
pub(super) fn deliver(produced: &[f32], dst: &mut [f32]) -> ServiceResult {
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
pub(super) unsafe fn rows_args<'x>(
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

pub(super) unsafe extern "C" fn svc_forward<M: ServiceModel>(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: the ABI's contract for `forward` is `rows_service`'s.
    unsafe { rows_service::<M>(raw, "forward", Output::Logits, x, rows, out, out_len) }
}

pub(super) unsafe extern "C" fn svc_features<M: ServiceModel>(
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
pub(super) unsafe fn vjp_args<'x>(
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

pub(super) unsafe extern "C" fn svc_vjp<M: ServiceModel>(
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
pub(super) unsafe extern "C" fn svc_ntk_gram<M: ServiceModel>(
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
