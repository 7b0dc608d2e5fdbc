//! The ABI 1.6 training services in the conformance catalogue: `batch_grad`, `sample_grads`,
//! `train_step` (both hosts' linear models train alike) and `reinit` (last: the hosts draw
//! different initialisations, so only the status is compared).

use super::*;
use catalogue::{info_of, st, xs, EMPTY};

/// The calls that keep both models equal.
pub(super) fn calls() -> Vec<(&'static str, Call)> {
    vec![
        ("batch_grad", |h, c, e| {
            let x = xs(3, e.d);
            let t: Vec<i64> = (0..3).map(|r| first_unit(h, c, e) + r % 2).collect();
            let n = total_numel(h, c);
            let mut out = vec![7f32; n];
            let mut loss = 0f32;
            // SAFETY: buffers of the documented sizes (masks null: the training mask).
            let s = unsafe {
                (h.batch_grad)(
                    c,
                    x.as_ptr(),
                    3,
                    t.as_ptr(),
                    std::ptr::null(),
                    out.as_mut_ptr(),
                    n as i64,
                    &mut loss,
                )
            };
            let mut v: Vec<f64> = out.iter().map(|&g| f64::from(g)).collect();
            v.push(f64::from(loss));
            (st(s), v)
        }),
        ("batch_grad with masks", |h, c, e| {
            let x = xs(2, e.d);
            let t = [0i64, (e.k - 1) as i64];
            let masks = vec![1u8; 2 * e.k];
            let n = total_numel(h, c);
            let mut out = vec![0f32; n];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.batch_grad)(
                    c,
                    x.as_ptr(),
                    2,
                    t.as_ptr(),
                    masks.as_ptr(),
                    out.as_mut_ptr(),
                    n as i64,
                    std::ptr::null_mut(),
                )
            };
            (st(s), out.iter().map(|&g| f64::from(g)).collect())
        }),
        ("batch_grad out_len wrong", |h, c, e| {
            let x = xs(1, e.d);
            let t = [first_unit(h, c, e)];
            let mut out = vec![0f32; 3];
            // SAFETY: the host checks out_len before writing.
            let s = unsafe {
                (h.batch_grad)(
                    c,
                    x.as_ptr(),
                    1,
                    t.as_ptr(),
                    std::ptr::null(),
                    out.as_mut_ptr(),
                    3,
                    std::ptr::null_mut(),
                )
            };
            (st(s), vec![])
        }),
        ("batch_grad target outside the training mask", |h, c, e| {
            let x = xs(1, e.d);
            let t = [outside_unit(h, c, e)];
            let n = total_numel(h, c);
            let mut out = vec![0f32; n];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.batch_grad)(
                    c,
                    x.as_ptr(),
                    1,
                    t.as_ptr(),
                    std::ptr::null(),
                    out.as_mut_ptr(),
                    n as i64,
                    std::ptr::null_mut(),
                )
            };
            (st(s), vec![])
        }),
        ("param_grads untouched by batch_grad", |h, c, _| {
            grads_of(h, c)
        }),
        ("sample_grads power 2", |h, c, e| {
            zero_grads(h, c);
            let x = xs(3, e.d);
            let cot: Vec<f32> = (0..3 * e.k).map(|i| 0.3 - i as f32 * 0.1).collect();
            // SAFETY: buffers of the documented sizes.
            let s =
                unsafe { (h.sample_grads)(c, x.as_ptr(), 3, cot.as_ptr(), cot.len() as i64, 2) };
            let (_, g) = grads_of(h, c);
            (st(s), g)
        }),
        ("sample_grads power 1", |h, c, e| {
            zero_grads(h, c);
            let x = xs(2, e.d);
            let cot: Vec<f32> = (0..2 * e.k).map(|i| 0.2 * i as f32 - 0.5).collect();
            // SAFETY: buffers of the documented sizes.
            let s =
                unsafe { (h.sample_grads)(c, x.as_ptr(), 2, cot.as_ptr(), cot.len() as i64, 1) };
            let (_, g) = grads_of(h, c);
            (st(s), g)
        }),
        ("sample_grads power 3", |h, c, e| {
            let x = xs(1, e.d);
            let cot = vec![1f32; e.k];
            // SAFETY: the host refuses the power before reading the buffers.
            let s = unsafe { (h.sample_grads)(c, x.as_ptr(), 1, cot.as_ptr(), e.k as i64, 3) };
            (st(s), vec![])
        }),
        ("train_step", |h, c, e| {
            let x = xs(3, e.d);
            let t: Vec<i64> = (0..3).map(|r| first_unit(h, c, e) + r % 2).collect();
            let mut loss = 0f32;
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.train_step)(c, x.as_ptr(), 3, t.as_ptr(), std::ptr::null(), &mut loss)
            };
            let mut v = vec![f64::from(loss)];
            v.extend(values_of(h, c));
            (st(s), v)
        }),
        ("train_step no rows", |h, c, _| {
            // SAFETY: zero rows; the host refuses them.
            let s = unsafe {
                (h.train_step)(
                    c,
                    std::ptr::null(),
                    0,
                    std::ptr::null(),
                    std::ptr::null(),
                    std::ptr::null_mut(),
                )
            };
            (st(s), vec![])
        }),
    ]
}

/// The calls after which the models differ.
pub(super) fn last() -> Vec<(&'static str, Call)> {
    vec![
        // Last: the two hosts initialise differently, so only the status is compared.
        ("reinit", |h, c, _| {
            // SAFETY: the host's table and context.
            (st(unsafe { (h.reinit)(c) }), vec![])
        }),
    ]
}

/// The first unit of the current task's head (a target inside its training mask).
fn first_unit(h: &ClefHost, c: *mut ClefCtx, _e: Env) -> i64 {
    let (_, info) = info_of(h, c, std::mem::size_of::<ClefTaskInfo>() as u32);
    // `info_of` appends the units after the 11 scalars; with no context (load_state) there
    // are none: any unit will do, the call is refused first.
    info.get(11).map_or(0, |&u| u as i64)
}

/// A unit outside the current training mask (class-IL: a later task's; task-IL: another
/// task's); domain-IL has none, every unit is in (the call then succeeds on both hosts).
fn outside_unit(h: &ClefHost, c: *mut ClefCtx, e: Env) -> i64 {
    (first_unit(h, c, e) + 2).rem_euclid(e.k as i64)
}

/// The sum of every tensor's numel (0 without a training context).
fn total_numel(h: &ClefHost, c: *mut ClefCtx) -> usize {
    // SAFETY: the host's table and context.
    let n = unsafe { (h.param_count)(c) };
    (0..n.max(0))
        .map(|i| {
            // SAFETY: an all-zero param info is a valid value of the plain struct.
            let mut p: ClefParamInfo = unsafe { std::mem::zeroed() };
            // SAFETY: the host's table and context; a live out-struct.
            unsafe { (h.param_info)(c, i, &mut p) };
            p.numel.max(0) as usize
        })
        .sum()
}

/// Every gradient value, with the status of the last view.
fn grads_of(h: &ClefHost, c: *mut ClefCtx) -> (i64, Vec<f64>) {
    views(h, c, h.param_grads)
}

/// Every parameter value.
fn values_of(h: &ClefHost, c: *mut ClefCtx) -> Vec<f64> {
    views(h, c, h.param_values).1
}

type ViewFn = unsafe extern "C" fn(*mut ClefCtx, i64, *mut ClefTensor) -> i32;

fn views(h: &ClefHost, c: *mut ClefCtx, f: ViewFn) -> (i64, Vec<f64>) {
    let mut out = Vec::new();
    let mut code = 0;
    // SAFETY: the host's table and context.
    let n = unsafe { (h.param_count)(c) };
    for i in 0..n.max(0) {
        let mut t = EMPTY;
        // SAFETY: the host's table and context; a live out-struct.
        let s = unsafe { f(c, i, &mut t) };
        code = st(s);
        if s == CLEF_OK {
            // SAFETY: a view the host just handed out, valid during the hook.
            let v = unsafe { std::slice::from_raw_parts(t.data, t.numel as usize) };
            out.extend(v.iter().map(|&x| f64::from(x)));
        }
    }
    (code, out)
}

/// Zeroes every gradient through the views.
fn zero_grads(h: &ClefHost, c: *mut ClefCtx) {
    // SAFETY: the host's table and context.
    let n = unsafe { (h.param_count)(c) };
    for i in 0..n.max(0) {
        let mut t = EMPTY;
        // SAFETY: the host's table and context; a live out-struct; the view is writable.
        if unsafe { (h.param_grads)(c, i, &mut t) } == CLEF_OK {
            // SAFETY: `numel` writable floats during the hook.
            unsafe { std::slice::from_raw_parts_mut(t.data, t.numel as usize) }.fill(0.0);
        }
    }
}
