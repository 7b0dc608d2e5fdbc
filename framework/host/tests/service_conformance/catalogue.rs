//! The catalogue of calls the conformance test runs against both hosts: every service with
//! good and bad arguments, each returning its status and the numbers it produced.

use super::*;

pub(super) fn xs(rows: usize, d: usize) -> Vec<f32> {
    (0..rows * d).map(|i| (i as f32 * 0.37).sin()).collect()
}

pub(super) fn st(code: i32) -> i64 {
    i64::from(code)
}

pub(super) const EMPTY: ClefTensor = ClefTensor {
    data: std::ptr::null_mut(),
    numel: 0,
    ndim: 0,
    writable: 0,
    shape: [0; 4],
};

fn tensor_data(t: &ClefTensor) -> Vec<f64> {
    let mut v = vec![t.numel as f64, f64::from(t.ndim), f64::from(t.writable)];
    v.extend(t.shape.iter().map(|&s| s as f64));
    if !t.data.is_null() {
        // SAFETY: a view the host just handed out, `numel` floats valid during the hook.
        let s = unsafe { std::slice::from_raw_parts(t.data, t.numel as usize) };
        v.extend(s.iter().map(|&x| f64::from(x)));
    }
    v
}

pub(super) fn info_of(host: &ClefHost, ctx: *mut ClefCtx, size: u32) -> (i64, Vec<f64>) {
    // SAFETY: an all-zero task info is a valid value of the plain struct.
    let mut info: ClefTaskInfo = unsafe { std::mem::zeroed() };
    info.struct_size = size;
    // SAFETY: the host's table and context; a live out-struct.
    let s = unsafe { (host.task_info)(ctx, &mut info) };
    let mut v = vec![
        f64::from(info.setting),
        info.task as f64,
        info.num_tasks as f64,
        info.train_samples as f64,
        info.test_samples as f64,
        info.input_dim as f64,
        info.num_outputs as f64,
        info.feature_dim as f64,
        info.n_units as f64,
        f64::from(info.num_threads),
        info.seed as f64,
    ];
    if s == CLEF_OK {
        // SAFETY: `units` holds `n_units` values during the hook.
        let u = unsafe { std::slice::from_raw_parts(info.units, info.n_units as usize) };
        v.extend(u.iter().map(|&u| u as f64));
    }
    (st(s), v)
}

/// Every service with good and bad arguments, in an order that keeps both sides' models
/// equal until the expert calls at the end (which load fresh heads in the real host).
pub(super) fn catalogue() -> Vec<(&'static str, Call)> {
    let mut calls: Vec<(&'static str, Call)> = vec![
        ("task_info", |h, c, _| {
            info_of(h, c, std::mem::size_of::<ClefTaskInfo>() as u32)
        }),
        ("task_info struct_size 0", |h, c, _| info_of(h, c, 0)),
        ("task_info null", |h, c, _| {
            // SAFETY: a null out pointer, which the host refuses.
            (
                st(unsafe { (h.task_info)(c, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("param_count", |h, c, _| {
            // SAFETY: the host's table and context.
            (unsafe { (h.param_count)(c) }, vec![])
        }),
        ("param_info", |h, c, _| {
            let mut out = Vec::new();
            let mut status = Vec::new();
            for i in [0i64, 1, 2, -1] {
                // SAFETY: an all-zero param info is a valid value of the plain struct.
                let mut pi: ClefParamInfo = unsafe { std::mem::zeroed() };
                // SAFETY: the host's table and context; a live out-struct.
                let s = unsafe { (h.param_info)(c, i, &mut pi) };
                status.push(s);
                if s == CLEF_OK {
                    // SAFETY: a name the host keeps for the process.
                    let name = unsafe { CStr::from_ptr(pi.name) }.to_bytes();
                    out.extend(name.iter().map(|&b| f64::from(b)));
                    out.extend([f64::from(pi.ndim), f64::from(pi.role), pi.numel as f64]);
                    out.extend(pi.shape.iter().map(|&s| s as f64));
                    out.push(pi.layer as f64);
                }
            }
            // SAFETY: a null out pointer, which the host refuses.
            status.push(unsafe { (h.param_info)(c, 0, std::ptr::null_mut()) });
            (status.iter().fold(0, |a, &s| a * 8 - i64::from(s)), out)
        }),
        ("param_values / param_grads", |h, c, _| {
            let mut out = Vec::new();
            let mut code = 0i64;
            for i in [0i64, 1, 5] {
                let (mut v, mut g) = (EMPTY, EMPTY);
                // SAFETY: the host's table and context; live out-structs.
                let (a, b) = unsafe {
                    (
                        (h.param_values)(c, i, &mut v),
                        (h.param_grads)(c, i, &mut g),
                    )
                };
                code = code * 64 - i64::from(a) * 8 - i64::from(b);
                if a == CLEF_OK && b == CLEF_OK {
                    out.extend(tensor_data(&v));
                    out.extend(tensor_data(&g));
                }
            }
            // SAFETY: a null out pointer, which the host refuses.
            let s = unsafe { (h.param_values)(c, 0, std::ptr::null_mut()) };
            (code * 8 - i64::from(s), out)
        }),
        ("optimizer_state momentum", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: the host's table and context; a live out-struct.
            let s = unsafe { (h.optimizer_state)(c, c"momentum".as_ptr(), 1, &mut t) };
            (
                st(s),
                if s == CLEF_OK {
                    tensor_data(&t)
                } else {
                    vec![]
                },
            )
        }),
        ("optimizer_state exp_avg", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: as above.
            (
                st(unsafe { (h.optimizer_state)(c, c"exp_avg".as_ptr(), 0, &mut t) }),
                vec![],
            )
        }),
        ("optimizer_state null slot", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: a null slot, which the host refuses.
            (
                st(unsafe { (h.optimizer_state)(c, std::ptr::null(), 0, &mut t) }),
                vec![],
            )
        }),
        ("optimizer_state index 9", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: as above.
            (
                st(unsafe { (h.optimizer_state)(c, c"momentum".as_ptr(), 9, &mut t) }),
                vec![],
            )
        }),
        ("forward", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe { (h.forward)(c, x.as_ptr(), 3, out.as_mut_ptr(), out.len() as i64) };
            (st(s), out.iter().map(|&v| f64::from(v)).collect())
        }),
        ("forward out_len wrong", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: the host checks `out_len` before touching the buffer.
            (
                st(unsafe { (h.forward)(c, x.as_ptr(), 3, out.as_mut_ptr(), 5) }),
                vec![],
            )
        }),
        ("forward rows negative", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: the host refuses a negative count.
            (
                st(unsafe { (h.forward)(c, x.as_ptr(), -1, out.as_mut_ptr(), 3) }),
                vec![],
            )
        }),
        ("forward x null", |h, c, e| {
            let mut out = vec![0f32; 2 * e.k];
            let n = out.len() as i64;
            // SAFETY: the host refuses a null input.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), 2, out.as_mut_ptr(), n) }),
                vec![],
            )
        }),
        ("forward zero rows", |h, c, _| {
            // SAFETY: nothing is read or written.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), 0, std::ptr::null_mut(), 0) }),
                vec![],
            )
        }),
        ("forward rows overflow", |h, c, _| {
            let mut out = [0f32; 1];
            // SAFETY: the host refuses the overflowing product before reading.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), i64::MAX, out.as_mut_ptr(), 1) }),
                vec![],
            )
        }),
        ("features", |h, c, e| {
            let x = xs(2, e.d);
            let mut out = vec![0f32; 2 * e.d];
            // SAFETY: buffers of the documented sizes (feature_dim == input_dim here).
            let s = unsafe { (h.features)(c, x.as_ptr(), 2, out.as_mut_ptr(), out.len() as i64) };
            (st(s), out.iter().map(|&v| f64::from(v)).collect())
        }),
        ("features out_len wrong", |h, c, e| {
            let x = xs(2, e.d);
            let mut out = vec![0f32; 2 * e.k];
            // SAFETY: the host checks `out_len` first.
            (
                st(unsafe { (h.features)(c, x.as_ptr(), 2, out.as_mut_ptr(), 2 * e.k as i64 + 1) }),
                vec![],
            )
        }),
        ("vjp", |h, c, e| {
            let x = xs(2, e.d);
            let cot: Vec<f32> = (0..2 * e.k).map(|i| 0.5 - i as f32 * 0.25).collect();
            // SAFETY: buffers of the documented sizes.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, cot.as_ptr(), cot.len() as i64) }),
                vec![],
            )
        }),
        ("vjp cotangent_len wrong", |h, c, e| {
            let x = xs(2, e.d);
            let cot = vec![1f32; 2 * e.k];
            // SAFETY: the host checks the length first.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, cot.as_ptr(), 3) }),
                vec![],
            )
        }),
        ("vjp cotangent null", |h, c, e| {
            let x = xs(2, e.d);
            // SAFETY: the host refuses a null cotangent.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, std::ptr::null(), 2 * e.k as i64) }),
                vec![],
            )
        }),
        ("param_grads after vjp", |h, c, _| {
            let mut out = Vec::new();
            let mut code = 0i64;
            for i in 0..2 {
                let mut g = EMPTY;
                // SAFETY: the host's table and context; a live out-struct.
                let s = unsafe { (h.param_grads)(c, i, &mut g) };
                code = code * 8 - i64::from(s);
                if s == CLEF_OK {
                    out.extend(tensor_data(&g));
                }
            }
            (code, out)
        }),
        ("ntk_gram", |h, c, e| {
            let (a, b) = (xs(2, e.d), xs(3, e.d));
            let mut out = vec![0f64; 6];
            // SAFETY: buffers of the documented sizes.
            let s =
                unsafe { (h.ntk_gram)(c, a.as_ptr(), 2, b.as_ptr(), 3, 1, out.as_mut_ptr(), 6) };
            (st(s), out)
        }),
        ("ntk_gram out_len wrong", |h, c, e| {
            let a = xs(2, e.d);
            let mut out = vec![0f64; 6];
            // SAFETY: the host checks `out_len` first.
            (
                st(unsafe {
                    (h.ntk_gram)(c, a.as_ptr(), 2, a.as_ptr(), 2, 0, out.as_mut_ptr(), 6)
                }),
                vec![],
            )
        }),
        ("ntk_gram output 99", |h, c, e| {
            let a = xs(2, e.d);
            let mut out = vec![0f64; 4];
            // SAFETY: the host checks `output` first.
            (
                st(unsafe {
                    (h.ntk_gram)(c, a.as_ptr(), 2, a.as_ptr(), 2, 99, out.as_mut_ptr(), 4)
                }),
                vec![],
            )
        }),
        ("batch_get", |h, c, _| {
            // SAFETY: an all-zero batch is a valid value of the plain struct.
            let mut b: ClefBatch = unsafe { std::mem::zeroed() };
            // SAFETY: the host's table and context; a live out-struct.
            let s = unsafe { (h.batch_get)(c, &mut b) };
            let mut v = vec![b.rows as f64, b.cols as f64, b.current_rows as f64];
            if s == CLEF_OK {
                // SAFETY: the batch view holds `rows * cols` inputs and `rows` targets.
                unsafe {
                    v.extend(
                        std::slice::from_raw_parts(b.x, (b.rows * b.cols) as usize)
                            .iter()
                            .map(|&x| f64::from(x)),
                    );
                    v.extend(
                        std::slice::from_raw_parts(b.targets, b.rows as usize)
                            .iter()
                            .map(|&t| t as f64),
                    );
                }
            }
            (st(s), v)
        }),
        ("batch_append in the training mask", |h, c, e| {
            let x = xs(1, e.d);
            let t = [1i64];
            // SAFETY: one row, its target, no masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append outside the training mask", |h, c, e| {
            let x = xs(1, e.d);
            let t = [e.k as i64 - 1];
            // SAFETY: one row, its target, no masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append with masks", |h, c, e| {
            let x = xs(2, e.d);
            let t = [e.k as i64 - 1, 0];
            let mut m = vec![0u8; 2 * e.k];
            m[e.k - 1] = 1;
            m[e.k] = 1;
            // SAFETY: two rows, their targets and masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 2, t.as_ptr(), m.as_ptr()) }),
                vec![],
            )
        }),
        ("batch_append target 99", |h, c, e| {
            let x = xs(1, e.d);
            let t = [99i64];
            // SAFETY: the host checks the target before keeping anything.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append rows negative", |h, c, _| {
            // SAFETY: the host refuses a negative count.
            (
                st(unsafe {
                    (h.batch_append)(c, std::ptr::null(), -2, std::ptr::null(), std::ptr::null())
                }),
                vec![],
            )
        }),
        ("task_samples", |h, c, e| {
            let mut x = vec![0f32; 3 * e.d];
            let mut y = vec![0i64; 3];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.task_samples)(c, 0, CLEF_SPLIT_TRAIN, 2, 3, x.as_mut_ptr(), y.as_mut_ptr())
            };
            let mut v: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            v.extend(y.iter().map(|&t| t as f64));
            (st(s), v)
        }),
        ("task_samples of task 1", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.task_samples)(c, 1, CLEF_SPLIT_TRAIN, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
            };
            let mut v: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            v.push(y[0] as f64);
            (st(s), v)
        }),
        ("task_samples test split", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host refuses the test split.
            (
                st(unsafe {
                    (h.task_samples)(c, 0, CLEF_SPLIT_TEST, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
                }),
                vec![],
            )
        }),
        ("task_samples split 9", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host refuses an unknown split.
            (
                st(unsafe { (h.task_samples)(c, 0, 9, 0, 1, x.as_mut_ptr(), y.as_mut_ptr()) }),
                vec![],
            )
        }),
        ("task_samples past the end", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host checks the range first.
            (
                st(unsafe {
                    (h.task_samples)(
                        c,
                        0,
                        CLEF_SPLIT_TRAIN,
                        1_000_000,
                        1,
                        x.as_mut_ptr(),
                        y.as_mut_ptr(),
                    )
                }),
                vec![],
            )
        }),
        ("task_samples task 7", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host checks the task first.
            (
                st(unsafe {
                    (h.task_samples)(c, 7, CLEF_SPLIT_TRAIN, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
                }),
                vec![],
            )
        }),
        ("task_mask", |h, c, e| {
            let mut v = Vec::new();
            let mut code = 0i64;
            for t in 0..e.tasks as i64 {
                let mut m = vec![7u8; e.k];
                // SAFETY: `num_outputs` bytes.
                let s = unsafe { (h.task_mask)(c, t, m.as_mut_ptr(), e.k as i64) };
                code = code * 8 - i64::from(s);
                v.extend(m.iter().map(|&b| f64::from(b)));
            }
            (code, v)
        }),
        ("task_mask len wrong", |h, c, e| {
            let mut m = vec![0u8; e.k + 1];
            // SAFETY: the host checks `len` first.
            (
                st(unsafe { (h.task_mask)(c, 0, m.as_mut_ptr(), e.k as i64 + 1) }),
                vec![],
            )
        }),
        ("task_mask task 7", |h, c, e| {
            let mut m = vec![0u8; e.k];
            // SAFETY: the host checks the task first.
            (
                st(unsafe { (h.task_mask)(c, 7, m.as_mut_ptr(), e.k as i64) }),
                vec![],
            )
        }),
        ("report", |h, c, _| {
            // SAFETY: NUL-terminated keys.
            (
                st(unsafe { (h.report)(c, c"density.total".as_ptr(), 0.25) }),
                vec![],
            )
        }),
        ("report key with a space", |h, c, _| {
            // SAFETY: as above.
            (st(unsafe { (h.report)(c, c"a b".as_ptr(), 1.0) }), vec![])
        }),
        ("report empty key", |h, c, _| {
            // SAFETY: as above.
            (st(unsafe { (h.report)(c, c"".as_ptr(), 1.0) }), vec![])
        }),
        ("report null key", |h, c, _| {
            // SAFETY: the host refuses a null key.
            (st(unsafe { (h.report)(c, std::ptr::null(), 1.0) }), vec![])
        }),
        ("report NaN", |h, c, _| {
            // SAFETY: as above.
            (
                st(unsafe { (h.report)(c, c"x".as_ptr(), f64::NAN) }),
                vec![],
            )
        }),
        ("rng_u64", |h, c, _| {
            // SAFETY: the host's table and context. (The streams differ: only refusals are
            // compared, through the service error.)
            let _ = unsafe { (h.rng_u64)(c) };
            (0, vec![])
        }),
        ("log and get_extension", |h, c, _| {
            // SAFETY: NUL-terminated strings.
            let ext = unsafe {
                (h.log)(c, CLEF_LOG_INFO, c"conformance".as_ptr());
                (h.log)(c, 99, std::ptr::null::<c_char>());
                (h.get_extension)(c, c"clef.x.v1".as_ptr())
            };
            (i64::from(!ext.is_null()), vec![])
        }),
    ];
    // The ABI 1.6 training services (`train.rs`), before the expert calls change the model.
    calls.extend(train::calls());
    calls.extend::<Vec<(&'static str, Call)>>(vec![
        ("expert_params -1 before the pool is used", |h, c, _| {
            let mut n = -7i64;
            // SAFETY: a live out value.
            let s = unsafe { (h.expert_params)(c, -1, &mut n) };
            (st(s), vec![n as f64])
        }),
        ("expert_params null out", |h, c, _| {
            // SAFETY: the host refuses a null out pointer.
            (
                st(unsafe { (h.expert_params)(c, 0, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("head_forward of an unrouted task", |h, c, e| {
            let x = xs(1, e.d);
            let mut out = vec![0f32; e.k];
            // SAFETY: buffers of the documented sizes.
            (
                st(unsafe { (h.head_forward)(c, 0, x.as_ptr(), 1, out.as_mut_ptr(), e.k as i64) }),
                vec![],
            )
        }),
        ("head_vjp zero rows", |h, c, _| {
            // SAFETY: nothing is read.
            (
                st(unsafe { (h.head_vjp)(c, 0, std::ptr::null(), 0, std::ptr::null(), 0) }),
                vec![],
            )
        }),
        ("expert_add bad activation", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: one width, a live out value.
            (
                st(unsafe { (h.expert_add)(c, [4i64].as_ptr(), 1, 7, &mut id) }),
                vec![],
            )
        }),
        ("expert_add width 0", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe { (h.expert_add)(c, [0i64].as_ptr(), 1, 0, &mut id) }),
                vec![],
            )
        }),
        ("expert_add null out_id", |h, c, _| {
            // SAFETY: the host refuses a null out pointer before adding.
            (
                st(unsafe { (h.expert_add)(c, [4i64].as_ptr(), 1, 0, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("expert_add_conv on an MLP trial", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: one channel count, no hidden widths, a live out value.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64].as_ptr(), 1, std::ptr::null(), 0, &mut id)
                }),
                vec![id as f64],
            )
        }),
        ("expert_add_conv channel 0", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64, 0].as_ptr(), 2, [8i64].as_ptr(), 1, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv no convolution", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: nothing is read from the empty arrays.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, std::ptr::null(), 0, std::ptr::null(), 0, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv hidden width -1", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64].as_ptr(), 1, [-1i64].as_ptr(), 1, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv null channels", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: the host refuses a null array of positive length before reading it.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, std::ptr::null(), 2, std::ptr::null(), 0, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_select 9", |h, c, _| {
            // SAFETY: the host's table and context.
            (st(unsafe { (h.expert_select)(c, 9) }), vec![])
        }),
        ("expert_freeze 9", |h, c, _| {
            // SAFETY: the host's table and context.
            (st(unsafe { (h.expert_freeze)(c, 9, 1) }), vec![])
        }),
        ("expert_add, select, freeze, count", |h, c, e| {
            let mut id = -1i64;
            let (mut n1, mut all) = (-1i64, -1i64);
            let x = xs(1, e.d);
            let mut out = vec![0f32; e.k];
            let cot = vec![0.5f32; e.k];
            // SAFETY: live buffers of the documented sizes.
            let codes = unsafe {
                [
                    (h.expert_add)(c, [3i64].as_ptr(), 1, 1, &mut id),
                    (h.expert_select)(c, 1),
                    (h.expert_freeze)(c, 1, 1),
                    (h.expert_params)(c, 1, &mut n1),
                    (h.expert_params)(c, -1, &mut all),
                    (h.head_forward)(
                        c,
                        e.tasks as i64 - 1,
                        x.as_ptr(),
                        1,
                        out.as_mut_ptr(),
                        e.k as i64,
                    ),
                    (h.head_vjp)(
                        c,
                        e.tasks as i64 - 1,
                        x.as_ptr(),
                        1,
                        cot.as_ptr(),
                        e.k as i64,
                    ),
                ]
            };
            let code = codes.iter().fold(0i64, |a, &s| a * 8 - i64::from(s));
            (code, vec![id as f64, n1 as f64, all as f64])
        }),
    ]);
    calls.extend(train::last());
    calls
}
