//! An in-process mock host for unit-testing plugins through their C entry points (feature
//! `testing`).
//!
//! [`MockHost`] implements every host service over `Vec` buffers. Its model is a single
//! linear layer, `logits = W x + b` with `W = params[0]` (`[num_outputs, input_dim]`) and
//! `b = params[1]`, so `forward`, `features` (the identity: `feature_dim == input_dim`), `vjp`
//! and `ntk_gram` give exact, checkable answers. It enforces the real host's rules: the batch
//! services only in `before_batch`, `task_samples` only for tasks up to the current one;
//! gradients are writable and `vjp` is allowed in every hook (as in the real host).
//!
//! Expert pools are bookkeeping over the one linear model ([`MockState::experts`]): `expert_add`
//! records the architecture, `expert_select` routes the current task, `expert_freeze` marks it,
//! and `expert_params` counts exactly as the real host (body plus `n_units * (feature_dim + 1)`
//! per routed task; expert 0 is the linear model, whose body is empty). `head_forward` is
//! `forward` and `head_vjp` adds nothing (the linear model has no body), after the same routing
//! checks as the real host.
//!
//! [`MockPlugin`] creates an instance from a descriptor and calls its hooks against a
//! `MockHost`, turning non-zero statuses into [`HookError`]s with the plugin's `last_error`.
//!
//! ```
//! use clef_sdk::testing::{MockHost, MockPlugin};
//! use clef_sdk::{Ctx, NoConfig, Result, Strategy};
//!
//! struct Decay;
//! impl Strategy for Decay {
//!     const NAME: &'static str = "decay";
//!     type Config = NoConfig;
//!     type State = clef_sdk::NoState;
//!     fn new(_: NoConfig) -> Result<Self> {
//!         Ok(Decay)
//!     }
//!     fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
//!         let (w, g) = ctx.values_and_grads(0)?;
//!         g.iter_mut().zip(w).for_each(|(g, w)| *g += 0.5 * w);
//!         Ok(())
//!     }
//! }
//!
//! let mut host = MockHost::new(3, 4, 2);
//! let mut plugin = MockPlugin::create::<Decay>("").unwrap();
//! plugin.after_backward(&mut host, 1.0).unwrap();
//! let state = host.state();
//! assert_eq!(state.params[0].grads[1], 0.5 * state.params[0].values[1]);
//! ```

use std::any::TypeId;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::ptr;
use std::sync::Mutex;

use clef_abi::{
    ClefBatch, ClefCtx, ClefHost, ClefParamInfo, ClefPluginDescriptor, ClefTaskInfo, ClefTensor,
    CLEF_ABI_MAJOR, CLEF_ABI_MINOR, CLEF_ERROR, CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_OK,
    CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT, CLEF_SETTING_TASK_IL, CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN,
    CLEF_UNSUPPORTED,
};

use crate::export::{entry, DescriptorCell};
use crate::Strategy;

/// The hook a [`MockPlugin`] is running (the mock host's services check it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No hook is running.
    Idle,
    /// `on_model_built`.
    ModelBuilt,
    /// `on_task_start`.
    TaskStart,
    /// `before_batch`.
    BeforeBatch,
    /// `after_backward`.
    AfterBackward,
    /// `after_step`.
    AfterStep,
    /// `on_task_end`.
    TaskEnd,
    /// `before_eval`.
    BeforeEval,
    /// `after_eval`.
    AfterEval,
    /// `save_state`.
    SaveState,
    /// `load_state`.
    LoadState,
}

/// One parameter tensor of the mock model.
#[derive(Debug, Clone)]
pub struct MockParam {
    /// Name returned by `param_info`.
    pub name: CString,
    /// Shape (1 to 4 dimensions).
    pub shape: Vec<usize>,
    /// `CLEF_ROLE_WEIGHT` or `CLEF_ROLE_BIAS`.
    pub role: i32,
    /// Layer index.
    pub layer: usize,
    /// Values (`param_values`).
    pub values: Vec<f32>,
    /// Gradient (`param_grads`).
    pub grads: Vec<f32>,
    /// The `"momentum"` optimizer slot (SGD), if any.
    pub momentum: Option<Vec<f32>>,
    /// The `"exp_avg"` optimizer slot (Adam), if any.
    pub exp_avg: Option<Vec<f32>>,
    /// The `"exp_avg_sq"` optimizer slot (Adam), if any.
    pub exp_avg_sq: Option<Vec<f32>>,
}

/// One task of the mock scenario.
#[derive(Debug, Clone)]
pub struct MockTask {
    /// Output units of the task's head.
    pub units: Vec<usize>,
    /// Training inputs, `train_y.len() * input_dim`.
    pub train_x: Vec<f32>,
    /// Training targets.
    pub train_y: Vec<usize>,
    /// Test inputs.
    pub test_x: Vec<f32>,
    /// Test targets.
    pub test_y: Vec<usize>,
}

/// Rows a plugin appended with `batch_append`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendedRows {
    /// Inputs.
    pub x: Vec<f32>,
    /// Targets.
    pub targets: Vec<usize>,
    /// Per-row unit masks (`rows * num_outputs`), if given.
    pub masks: Option<Vec<bool>>,
}

/// Everything the mock host holds; public so tests can set up and inspect it.
#[derive(Debug)]
pub struct MockState {
    /// Parameter tensors; `params[0]` and `params[1]` are the linear model's weight and bias.
    pub params: Vec<MockParam>,
    /// `CLEF_SETTING_*`.
    pub setting: i32,
    /// Index of the current task.
    pub task: usize,
    /// The tasks.
    pub tasks: Vec<MockTask>,
    /// Features per sample.
    pub input_dim: usize,
    /// Logits.
    pub num_outputs: usize,
    /// `num_threads` hint.
    pub num_threads: u32,
    /// Trial seed (also seeds the RNG stream).
    pub seed: u64,
    /// The current batch's inputs (`before_batch`).
    pub batch_x: Vec<f32>,
    /// The current batch's targets.
    pub batch_targets: Vec<usize>,
    /// Rows of the batch from the current task's stream.
    pub batch_current_rows: usize,
    /// Rows appended by the plugin.
    pub appended: Vec<AppendedRows>,
    /// Log lines received with this host's context: `(CLEF_LOG_* level, message)`.
    pub logs: Vec<(i32, String)>,
    /// Whether `ntk_gram` is supported (default true).
    pub ntk_supported: bool,
    /// Values received by `report`: `(task, key, value)` in call order.
    pub reports: Vec<(usize, String, f64)>,
    /// The running hook.
    pub phase: Phase,
    /// Expert pool: `(hidden widths, activation code, frozen)` per expert; expert 0 is the
    /// linear model (no hidden layer).
    pub experts: Vec<(Vec<usize>, i32, bool)>,
    /// The selected expert.
    pub active_expert: usize,
    /// Expert each task is routed to.
    pub routes: Vec<Option<usize>>,
    rng: u64,
    units_scratch: Vec<i64>,
    targets_scratch: Vec<i64>,
}

/// A host implemented over `Vec` buffers; see the [module docs](self).
pub struct MockHost {
    state: Box<MockState>,
}

/// Deterministic pseudo-random values in `[-1, 1)`.
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

impl MockHost {
    /// A linear model `input_dim -> num_outputs` (small deterministic weights, zero gradients,
    /// zero momentum), and `num_tasks` task-IL tasks splitting the output units evenly, each
    /// with 8 training and 4 test samples. The current task is 0; the batch is the first 4
    /// training samples of task 0.
    pub fn new(input_dim: usize, num_outputs: usize, num_tasks: usize) -> Self {
        let num_tasks = num_tasks.max(1);
        let weight: Vec<f32> = (0..num_outputs * input_dim)
            .map(|i| 0.1 * noise(i as u64))
            .collect();
        let bias: Vec<f32> = (0..num_outputs).map(|o| 0.01 * o as f32).collect();
        let params = vec![
            MockParam {
                name: CString::new("layers.0.weight").unwrap_or_default(),
                shape: vec![num_outputs, input_dim],
                role: CLEF_ROLE_WEIGHT,
                layer: 0,
                grads: vec![0.0; weight.len()],
                momentum: Some(vec![0.0; weight.len()]),
                exp_avg: None,
                exp_avg_sq: None,
                values: weight,
            },
            MockParam {
                name: CString::new("layers.0.bias").unwrap_or_default(),
                shape: vec![num_outputs],
                role: CLEF_ROLE_BIAS,
                layer: 0,
                grads: vec![0.0; num_outputs],
                momentum: Some(vec![0.0; num_outputs]),
                exp_avg: None,
                exp_avg_sq: None,
                values: bias,
            },
        ];
        let per_task = (num_outputs / num_tasks).max(1);
        let tasks: Vec<MockTask> = (0..num_tasks)
            .map(|t| {
                let units: Vec<usize> =
                    (t * per_task..((t + 1) * per_task).min(num_outputs)).collect();
                let units = if units.is_empty() { vec![0] } else { units };
                let make = |rows: usize, salt: u64| {
                    let x: Vec<f32> = (0..rows * input_dim)
                        .map(|i| noise(salt * 1_000_003 + t as u64 * 10_007 + i as u64))
                        .collect();
                    let y: Vec<usize> = (0..rows).map(|r| units[r % units.len()]).collect();
                    (x, y)
                };
                let (train_x, train_y) = make(8, 1);
                let (test_x, test_y) = make(4, 2);
                MockTask {
                    units,
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                }
            })
            .collect();
        let batch_x = tasks[0].train_x[..4 * input_dim].to_vec();
        let batch_targets = tasks[0].train_y[..4].to_vec();
        Self {
            state: Box::new(MockState {
                params,
                setting: CLEF_SETTING_TASK_IL,
                task: 0,
                tasks,
                input_dim,
                num_outputs,
                num_threads: 1,
                seed: 42,
                batch_x,
                batch_targets,
                batch_current_rows: 4,
                appended: Vec::new(),
                logs: Vec::new(),
                ntk_supported: true,
                reports: Vec::new(),
                phase: Phase::Idle,
                experts: vec![(Vec::new(), 0, false)],
                active_expert: 0,
                routes: vec![None; num_tasks],
                rng: 42,
                units_scratch: Vec::new(),
                targets_scratch: Vec::new(),
            }),
        }
    }

    /// Switches every parameter's optimizer state from SGD's `momentum` to Adam's `exp_avg`
    /// and `exp_avg_sq` (zeros), as the real host does with `optimizer = "adam"`.
    pub fn use_adam(&mut self) {
        for p in &mut self.state.params {
            p.momentum = None;
            p.exp_avg = Some(vec![0.0; p.values.len()]);
            p.exp_avg_sq = Some(vec![0.0; p.values.len()]);
        }
    }

    /// The last value reported for `key` in `task`, if any.
    pub fn reported(&self, task: usize, key: &str) -> Option<f64> {
        self.state
            .reports
            .iter()
            .rev()
            .find(|(t, k, _)| *t == task && k == key)
            .map(|r| r.2)
    }

    /// The host's state, to inspect.
    pub fn state(&self) -> &MockState {
        &self.state
    }

    /// The host's state, to set up (params, current task, batch, ...).
    pub fn state_mut(&mut self) -> &mut MockState {
        &mut self.state
    }

    /// The service table (shared by every mock host) and this host's context, to call
    /// services directly.
    pub fn raw(&mut self) -> (*const ClefHost, *mut ClefCtx) {
        (&HOST_TABLE, self.ctx())
    }

    fn ctx(&mut self) -> *mut ClefCtx {
        (&mut *self.state as *mut MockState).cast()
    }

    /// A copy of every parameter tensor's values.
    pub fn values(&self) -> Vec<Vec<f32>> {
        self.state.params.iter().map(|p| p.values.clone()).collect()
    }

    /// A copy of every parameter tensor's gradient.
    pub fn grads(&self) -> Vec<Vec<f32>> {
        self.state.params.iter().map(|p| p.grads.clone()).collect()
    }

    /// Sets deterministic non-zero gradients, `0.01·((7i + 3j) mod 5) − 0.02` for entry `j` of
    /// tensor `i` (so a test checks that a plugin *adds* to them, not overwrites them).
    pub fn seed_grads(&mut self) {
        for (i, p) in self.state.params.iter_mut().enumerate() {
            for (j, g) in p.grads.iter_mut().enumerate() {
                *g = 0.01 * ((i * 7 + j * 3) % 5) as f32 - 0.02;
            }
        }
    }

    /// Moves every parameter deterministically: entry `j` of tensor `i` by
    /// `scale·((13i + 5j) mod 7 − 3)`.
    pub fn perturb(&mut self, scale: f32) {
        for (i, p) in self.state.params.iter_mut().enumerate() {
            for (j, v) in p.values.iter_mut().enumerate() {
                *v += scale * (((i * 13 + j * 5) % 7) as f32 - 3.0);
            }
        }
    }

    /// The current task's info as the host passes it to `on_task_start` (its `units` point
    /// into this host and stay valid until the next call).
    fn task_info_raw(&mut self) -> ClefTaskInfo {
        fill_task_info(&mut self.state)
    }
}

/// Log lines received with a null context (from any mock host), `(level, message)`.
pub fn global_logs() -> Vec<(i32, String)> {
    GLOBAL_LOGS.lock().map(|l| l.clone()).unwrap_or_default()
}

static GLOBAL_LOGS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

fn fill_task_info(s: &mut MockState) -> ClefTaskInfo {
    let task = &s.tasks[s.task.min(s.tasks.len() - 1)];
    let units: Vec<i64> = task.units.iter().map(|&u| u as i64).collect();
    // Keep the buffer (and pointers handed out earlier in the hook) when nothing changed.
    if s.units_scratch != units {
        s.units_scratch = units;
    }
    ClefTaskInfo {
        struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
        setting: s.setting,
        task: s.task as i64,
        num_tasks: s.tasks.len() as i64,
        train_samples: task.train_y.len() as i64,
        test_samples: task.test_y.len() as i64,
        input_dim: s.input_dim as i64,
        num_outputs: s.num_outputs as i64,
        feature_dim: s.input_dim as i64,
        units: s.units_scratch.as_ptr(),
        n_units: s.units_scratch.len() as i64,
        num_threads: s.num_threads,
        seed: s.seed,
    }
}

// ---- the service table -----------------------------------------------------------------------

/// # Safety
/// `ctx` must be the context of a live `MockHost` (what [`MockHost::raw`] returns), with no
/// other reference to its state in use.
unsafe fn state<'a>(ctx: *mut ClefCtx) -> &'a mut MockState {
    // SAFETY: the caller passes a context made from `&mut MockState` by `MockHost::ctx`.
    unsafe { &mut *ctx.cast::<MockState>() }
}

fn usize_arg(v: i64) -> Option<usize> {
    usize::try_from(v).ok()
}

unsafe extern "C" fn svc_log(ctx: *mut ClefCtx, level: i32, msg: *const c_char) {
    let text = if msg.is_null() {
        String::new()
    } else {
        // SAFETY: the plugin passes a NUL-terminated string valid for the call.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    };
    if ctx.is_null() {
        if let Ok(mut logs) = GLOBAL_LOGS.lock() {
            logs.push((level, text));
        }
    } else {
        // SAFETY: a non-null ctx is a live mock host's (services are only called in hooks).
        unsafe { state(ctx) }.logs.push((level, text));
    }
}

unsafe extern "C" fn svc_rng_u64(ctx: *mut ClefCtx) -> u64 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    // splitmix64
    s.rng = s.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = s.rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

unsafe extern "C" fn svc_task_info(ctx: *mut ClefCtx, out: *mut ClefTaskInfo) -> i32 {
    if out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook); `out` is non-null and writable.
    unsafe { *out = fill_task_info(state(ctx)) };
    CLEF_OK
}

unsafe extern "C" fn svc_param_count(ctx: *mut ClefCtx) -> i64 {
    // SAFETY: live mock host context (hook).
    unsafe { state(ctx) }.params.len() as i64
}

unsafe extern "C" fn svc_param_info(ctx: *mut ClefCtx, index: i64, out: *mut ClefParamInfo) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let Some(p) = usize_arg(index).and_then(|i| s.params.get(i)) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if out.is_null() || p.shape.is_empty() || p.shape.len() > 4 {
        return CLEF_INVALID_ARGUMENT;
    }
    let mut shape = [1i64; 4];
    for (d, &n) in shape.iter_mut().zip(&p.shape) {
        *d = n as i64;
    }
    // SAFETY: `out` is non-null and writable.
    unsafe {
        *out = ClefParamInfo {
            name: p.name.as_ptr(),
            ndim: p.shape.len() as i32,
            role: p.role,
            shape,
            numel: p.values.len() as i64,
            layer: p.layer as i64,
        };
    }
    CLEF_OK
}

/// A view of `buf` (made with `Vec::as_mut_ptr`, which creates no intermediate reference, so
/// views the plugin already holds stay valid).
fn tensor(buf: &mut Vec<f32>, shape: &[usize], writable: bool) -> ClefTensor {
    let mut s = [1i64; 4];
    for (d, &n) in s.iter_mut().zip(shape) {
        *d = n as i64;
    }
    ClefTensor {
        data: buf.as_mut_ptr(),
        numel: buf.len() as i64,
        ndim: shape.len().clamp(1, 4) as i32,
        writable: i32::from(writable),
        shape: s,
    }
}

unsafe extern "C" fn svc_param_values(ctx: *mut ClefCtx, index: i64, out: *mut ClefTensor) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let Some(p) = usize_arg(index).and_then(|i| s.params.get_mut(i)) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: `out` is non-null and writable.
    unsafe { *out = tensor(&mut p.values, &p.shape, true) };
    CLEF_OK
}

unsafe extern "C" fn svc_param_grads(ctx: *mut ClefCtx, index: i64, out: *mut ClefTensor) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    // Like the real host: gradients are writable in every hook (they hold the batch gradient
    // in `after_backward`; elsewhere strategies may use them as scratch, e.g. EWC's Fisher).
    let writable = true;
    let Some(p) = usize_arg(index).and_then(|i| s.params.get_mut(i)) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: `out` is non-null and writable.
    unsafe { *out = tensor(&mut p.grads, &p.shape, writable) };
    CLEF_OK
}

unsafe extern "C" fn svc_optimizer_state(
    ctx: *mut ClefCtx,
    slot: *const c_char,
    index: i64,
    out: *mut ClefTensor,
) -> i32 {
    if slot.is_null() || out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: NUL-terminated slot name valid for the call.
    let slot = unsafe { CStr::from_ptr(slot) };
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let Some(p) = usize_arg(index).and_then(|i| s.params.get_mut(i)) else {
        return CLEF_INVALID_ARGUMENT;
    };
    let buf = match slot.to_bytes() {
        b"momentum" => p.momentum.as_mut(),
        b"exp_avg" => p.exp_avg.as_mut(),
        b"exp_avg_sq" => p.exp_avg_sq.as_mut(),
        _ => None,
    };
    match buf {
        Some(m) => {
            // SAFETY: `out` is non-null and writable.
            unsafe { *out = tensor(m, &p.shape, true) };
            CLEF_OK
        }
        None => CLEF_UNSUPPORTED,
    }
}

/// The linear model's weight and bias, if `params` has that shape.
fn linear(s: &MockState) -> Option<(&[f32], &[f32])> {
    let (w, b) = (s.params.first()?, s.params.get(1)?);
    (w.values.len() == s.num_outputs * s.input_dim && b.values.len() == s.num_outputs)
        .then_some((&w.values, &b.values))
}

unsafe extern "C" fn svc_forward(
    ctx: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let (d, k) = (s.input_dim, s.num_outputs);
    let Some(rows) = usize_arg(rows) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if x.is_null() || out.is_null() || usize_arg(out_len) != Some(rows * k) {
        return CLEF_INVALID_ARGUMENT;
    }
    let Some((w, b)) = linear(s) else {
        return CLEF_UNSUPPORTED;
    };
    // SAFETY: the plugin passes `rows * input_dim` inputs and `rows * num_outputs` outputs.
    let (x, out) = unsafe {
        (
            std::slice::from_raw_parts(x, rows * d),
            std::slice::from_raw_parts_mut(out, rows * k),
        )
    };
    for r in 0..rows {
        for o in 0..k {
            let dot: f32 = (0..d).map(|i| w[o * d + i] * x[r * d + i]).sum();
            out[r * k + o] = dot + b[o];
        }
    }
    CLEF_OK
}

unsafe extern "C" fn svc_features(
    ctx: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let d = unsafe { state(ctx) }.input_dim;
    let Some(rows) = usize_arg(rows) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if x.is_null() || out.is_null() || usize_arg(out_len) != Some(rows * d) {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: `rows * input_dim` values each; distinct buffers owned by the plugin.
    unsafe { ptr::copy_nonoverlapping(x, out, rows * d) };
    CLEF_OK
}

unsafe extern "C" fn svc_vjp(
    ctx: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let (d, k) = (s.input_dim, s.num_outputs);
    let Some(rows) = usize_arg(rows) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if x.is_null() || cotangent.is_null() || usize_arg(cotangent_len) != Some(rows * k) {
        return CLEF_INVALID_ARGUMENT;
    }
    if linear(s).is_none() {
        return CLEF_UNSUPPORTED;
    }
    // SAFETY: the plugin passes `rows * input_dim` inputs and `rows * num_outputs` cotangents.
    let (x, c) = unsafe {
        (
            std::slice::from_raw_parts(x, rows * d),
            std::slice::from_raw_parts(cotangent, rows * k),
        )
    };
    for r in 0..rows {
        for o in 0..k {
            let co = c[r * k + o];
            for i in 0..d {
                s.params[0].grads[o * d + i] += co * x[r * d + i];
            }
            s.params[1].grads[o] += co;
        }
    }
    CLEF_OK
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn svc_ntk_gram(
    ctx: *mut ClefCtx,
    a: *const f32,
    rows_a: i64,
    b: *const f32,
    rows_b: i64,
    output: i64,
    out: *mut f64,
    out_len: i64,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if !s.ntk_supported {
        return CLEF_UNSUPPORTED;
    }
    let d = s.input_dim;
    let (Some(ra), Some(rb), Some(o)) = (usize_arg(rows_a), usize_arg(rows_b), usize_arg(output))
    else {
        return CLEF_INVALID_ARGUMENT;
    };
    if a.is_null() || b.is_null() || out.is_null() || o >= s.num_outputs {
        return CLEF_INVALID_ARGUMENT;
    }
    if usize_arg(out_len) != Some(ra * rb) {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: buffers of the documented sizes, owned by the plugin.
    let (a, b, out) = unsafe {
        (
            std::slice::from_raw_parts(a, ra * d),
            std::slice::from_raw_parts(b, rb * d),
            std::slice::from_raw_parts_mut(out, ra * rb),
        )
    };
    // For a linear model, d f_o / d W[o, :] = x and d f_o / d b[o] = 1.
    for i in 0..ra {
        for j in 0..rb {
            let dot: f64 = (0..d)
                .map(|t| f64::from(a[i * d + t]) * f64::from(b[j * d + t]))
                .sum();
            out[i * rb + j] = dot + 1.0;
        }
    }
    CLEF_OK
}

unsafe extern "C" fn svc_batch_get(ctx: *mut ClefCtx, out: *mut ClefBatch) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if s.phase != Phase::BeforeBatch {
        return CLEF_NOT_ALLOWED;
    }
    if out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    let targets: Vec<i64> = s.batch_targets.iter().map(|&t| t as i64).collect();
    if s.targets_scratch != targets {
        s.targets_scratch = targets;
    }
    // SAFETY: `out` is non-null and writable.
    unsafe {
        *out = ClefBatch {
            x: s.batch_x.as_ptr(),
            targets: s.targets_scratch.as_ptr(),
            rows: s.batch_targets.len() as i64,
            cols: s.input_dim as i64,
            current_rows: s.batch_current_rows as i64,
        };
    }
    CLEF_OK
}

unsafe extern "C" fn svc_batch_append(
    ctx: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if s.phase != Phase::BeforeBatch {
        return CLEF_NOT_ALLOWED;
    }
    let Some(rows) = usize_arg(rows) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if rows == 0 {
        return CLEF_OK;
    }
    if x.is_null() || targets.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    let (d, k) = (s.input_dim, s.num_outputs);
    // SAFETY: the plugin passes `rows * input_dim` inputs, `rows` targets and (if non-null)
    // `rows * num_outputs` mask bytes.
    let (x, t) = unsafe {
        (
            std::slice::from_raw_parts(x, rows * d),
            std::slice::from_raw_parts(targets, rows),
        )
    };
    let Some(t) = t
        .iter()
        .map(|&v| usize_arg(v).filter(|&u| u < k))
        .collect::<Option<Vec<usize>>>()
    else {
        return CLEF_INVALID_ARGUMENT;
    };
    let masks = (!masks.is_null()).then(|| {
        // SAFETY: see above.
        unsafe { std::slice::from_raw_parts(masks, rows * k) }
            .iter()
            .map(|&m| m != 0)
            .collect()
    });
    s.appended.push(AppendedRows {
        x: x.to_vec(),
        targets: t,
        masks,
    });
    CLEF_OK
}

unsafe extern "C" fn svc_task_samples(
    ctx: *mut ClefCtx,
    task: i64,
    split: i32,
    start: i64,
    rows: i64,
    x_out: *mut f32,
    targets_out: *mut i64,
) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let (Some(task), Some(start), Some(rows)) =
        (usize_arg(task), usize_arg(start), usize_arg(rows))
    else {
        return CLEF_INVALID_ARGUMENT;
    };
    if task > s.task {
        return CLEF_NOT_ALLOWED;
    }
    let Some(t) = s.tasks.get(task) else {
        return CLEF_INVALID_ARGUMENT;
    };
    let (x, y) = match split {
        CLEF_SPLIT_TRAIN => (&t.train_x, &t.train_y),
        CLEF_SPLIT_TEST => (&t.test_x, &t.test_y),
        _ => return CLEF_INVALID_ARGUMENT,
    };
    let d = s.input_dim;
    if start + rows > y.len() || (rows > 0 && (x_out.is_null() || targets_out.is_null())) {
        return CLEF_INVALID_ARGUMENT;
    }
    if rows == 0 {
        return CLEF_OK;
    }
    // SAFETY: the plugin passes `rows * input_dim` and `rows` writable values.
    unsafe {
        ptr::copy_nonoverlapping(x[start * d..].as_ptr(), x_out, rows * d);
        for (r, &target) in y[start..start + rows].iter().enumerate() {
            *targets_out.add(r) = target as i64;
        }
    }
    CLEF_OK
}

unsafe extern "C" fn svc_task_mask(ctx: *mut ClefCtx, task: i64, out: *mut u8, len: i64) -> i32 {
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let Some(t) = usize_arg(task).and_then(|t| s.tasks.get(t)) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if out.is_null() || usize_arg(len) != Some(s.num_outputs) {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: `num_outputs` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(out, s.num_outputs) };
    out.fill(0);
    for &u in &t.units {
        out[u] = 1;
    }
    CLEF_OK
}

unsafe extern "C" fn svc_expert_add(
    ctx: *mut ClefCtx,
    hidden: *const i64,
    n_hidden: i64,
    activation: i32,
    out_id: *mut i64,
) -> i32 {
    if ctx.is_null() || out_id.is_null() || !(0..=2).contains(&activation) {
        return CLEF_INVALID_ARGUMENT;
    }
    let Some(n) = usize_arg(n_hidden) else {
        return CLEF_INVALID_ARGUMENT;
    };
    if n > 0 && hidden.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if s.setting != CLEF_SETTING_TASK_IL {
        return CLEF_NOT_ALLOWED;
    }
    let widths: Vec<i64> = if n == 0 {
        Vec::new()
    } else {
        // SAFETY: the plugin passes `n_hidden` readable values.
        unsafe { std::slice::from_raw_parts(hidden, n) }.to_vec()
    };
    if widths.iter().any(|&w| w <= 0) {
        return CLEF_INVALID_ARGUMENT;
    }
    s.experts.push((
        widths.iter().map(|&w| w as usize).collect(),
        activation,
        false,
    ));
    // SAFETY: non-null, writable for the call (ABI).
    unsafe { out_id.write((s.experts.len() - 1) as i64) };
    CLEF_OK
}

unsafe extern "C" fn svc_expert_select(ctx: *mut ClefCtx, id: i64) -> i32 {
    if ctx.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if s.setting != CLEF_SETTING_TASK_IL {
        return CLEF_NOT_ALLOWED;
    }
    match usize_arg(id).filter(|&i| i < s.experts.len()) {
        Some(i) => {
            s.active_expert = i;
            if let Some(r) = s.routes.get_mut(s.task) {
                *r = Some(i);
            }
            CLEF_OK
        }
        None => CLEF_INVALID_ARGUMENT,
    }
}

unsafe extern "C" fn svc_expert_freeze(ctx: *mut ClefCtx, id: i64, frozen: i32) -> i32 {
    if ctx.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    match usize_arg(id).and_then(|i| s.experts.get_mut(i)) {
        Some(e) => {
            e.2 = frozen != 0;
            CLEF_OK
        }
        None => CLEF_INVALID_ARGUMENT,
    }
}

/// Parameters of mock expert `id`, counted like the real host.
fn mock_expert_params(s: &MockState, id: usize) -> usize {
    let hidden = &s.experts[id].0;
    let mut widths = vec![s.input_dim];
    widths.extend_from_slice(hidden);
    let body: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let feat = widths.last().copied().unwrap_or(s.input_dim);
    let heads: usize = s
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Some(id))
        .map(|(t, _)| s.tasks[t].units.len() * (feat + 1))
        .sum();
    body + heads
}

unsafe extern "C" fn svc_expert_params(ctx: *mut ClefCtx, id: i64, out: *mut i64) -> i32 {
    if ctx.is_null() || out.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    let n = if id == -1 {
        (0..s.experts.len())
            .filter(|&e| s.routes.contains(&Some(e)))
            .map(|e| mock_expert_params(s, e))
            .sum()
    } else {
        match usize_arg(id).filter(|&i| i < s.experts.len()) {
            Some(i) => mock_expert_params(s, i),
            None => return CLEF_INVALID_ARGUMENT,
        }
    };
    // SAFETY: non-null, writable for the call (ABI).
    unsafe { out.write(n as i64) };
    CLEF_OK
}

/// The routing check of `head_forward`/`head_vjp`: `task` must be routed to the selected
/// expert.
fn mock_head_ok(s: &MockState, task: i64) -> bool {
    usize_arg(task)
        .and_then(|t| s.routes.get(t).copied().flatten())
        .is_some_and(|e| e == s.active_expert)
}

unsafe extern "C" fn svc_head_forward(
    ctx: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    if ctx.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    if !mock_head_ok(unsafe { state(ctx) }, task) {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: same contract as `forward`.
    unsafe { svc_forward(ctx, x, rows, out, out_len) }
}

unsafe extern "C" fn svc_head_vjp(
    ctx: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    if ctx.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if !mock_head_ok(s, task) {
        return CLEF_INVALID_ARGUMENT;
    }
    let ok = usize_arg(rows).is_some_and(|r| {
        !x.is_null() && !cotangent.is_null() && usize_arg(cotangent_len) == Some(r * s.num_outputs)
    });
    if ok {
        CLEF_OK
    } else {
        CLEF_INVALID_ARGUMENT
    }
}

unsafe extern "C" fn svc_get_extension(_ctx: *mut ClefCtx, _name: *const c_char) -> *const c_void {
    ptr::null()
}

/// Whether `key` is a valid `report` key (the real host's rule): 1 to 128 printable ASCII
/// characters, no spaces.
pub fn valid_report_key(key: &[u8]) -> bool {
    (1..=128).contains(&key.len()) && key.iter().all(|b| b.is_ascii_graphic())
}

unsafe extern "C" fn svc_report(ctx: *mut ClefCtx, key: *const c_char, value: f64) -> i32 {
    if ctx.is_null() || key.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: live mock host context (hook).
    let s = unsafe { state(ctx) };
    if matches!(s.phase, Phase::SaveState | Phase::LoadState) {
        return CLEF_NOT_ALLOWED;
    }
    // SAFETY: the plugin passes a NUL-terminated string valid for the call.
    let key = unsafe { CStr::from_ptr(key) }.to_bytes();
    if !valid_report_key(key) || !value.is_finite() {
        return CLEF_INVALID_ARGUMENT;
    }
    let key = String::from_utf8_lossy(key).into_owned();
    s.reports.push((s.task, key, value));
    CLEF_OK
}

/// The mock host's service table.
static HOST_TABLE: ClefHost = ClefHost {
    abi_major: CLEF_ABI_MAJOR,
    abi_minor: CLEF_ABI_MINOR,
    struct_size: std::mem::size_of::<ClefHost>() as u32,
    log: svc_log,
    rng_u64: svc_rng_u64,
    task_info: svc_task_info,
    param_count: svc_param_count,
    param_info: svc_param_info,
    param_values: svc_param_values,
    param_grads: svc_param_grads,
    optimizer_state: svc_optimizer_state,
    forward: svc_forward,
    features: svc_features,
    vjp: svc_vjp,
    ntk_gram: svc_ntk_gram,
    batch_get: svc_batch_get,
    batch_append: svc_batch_append,
    task_samples: svc_task_samples,
    task_mask: svc_task_mask,
    expert_add: svc_expert_add,
    expert_select: svc_expert_select,
    get_extension: svc_get_extension,
    report: svc_report,
    expert_freeze: svc_expert_freeze,
    expert_params: svc_expert_params,
    head_forward: svc_head_forward,
    head_vjp: svc_head_vjp,
};

/// The mock host's service table (e.g. to call a descriptor's `create` by hand).
pub fn host_table() -> &'static ClefHost {
    &HOST_TABLE
}

// ---- descriptors -----------------------------------------------------------------------------

/// The descriptor `export_plugin!(S)` would export, built through the same code (with
/// version `S::VERSION` or `"0.0.0"`). Lets one test binary drive several strategies.
pub fn descriptor_of<S: Strategy>() -> &'static ClefPluginDescriptor {
    static CELLS: Mutex<Option<HashMap<TypeId, &'static DescriptorCell>>> = Mutex::new(None);
    let cell = {
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        *cells
            .get_or_insert_with(HashMap::new)
            .entry(TypeId::of::<S>())
            .or_insert_with(|| Box::leak(Box::new(DescriptorCell::new())))
    };
    let desc = entry::<S>(cell, "0.0.0");
    assert!(
        !desc.is_null(),
        "building the descriptor of `{}` panicked",
        S::NAME
    );
    // SAFETY: `entry` returns a pointer into a leaked, never-freed cell.
    unsafe { &*desc }
}

/// A hyperparameter as read back from a descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamInfo {
    /// Key.
    pub name: String,
    /// `CLEF_HPARAM_*` kind.
    pub kind: u32,
    /// `CLEF_HPARAM_LOG_SCALE` ...
    pub flags: u32,
    /// Default (float, int, bool 0/1, or choice index).
    pub default_value: f64,
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// Choices (for `CLEF_HPARAM_CHOICE`).
    pub choices: Vec<String>,
    /// Description.
    pub doc: String,
}

/// A descriptor read back into Rust values.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// ABI major.
    pub abi_major: u16,
    /// ABI minor.
    pub abi_minor: u16,
    /// Descriptor size.
    pub struct_size: u32,
    /// Strategy name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Schema.
    pub hparams: Vec<HParamInfo>,
}

/// # Safety
/// `p` must be null or a NUL-terminated string.
unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Reads a descriptor's strings and schema.
///
/// # Safety
/// `desc` must point to a valid descriptor (as a plugin's entry point returns).
pub unsafe fn describe(desc: *const ClefPluginDescriptor) -> PluginInfo {
    // SAFETY: valid descriptor (caller).
    let d = unsafe { &*desc };
    let raw: &[clef_abi::ClefHparam] = if d.n_hparams == 0 || d.hparams.is_null() {
        &[]
    } else {
        // SAFETY: `n_hparams` entries (descriptor contract).
        unsafe { std::slice::from_raw_parts(d.hparams, d.n_hparams) }
    };
    let hparams = raw
        .iter()
        .map(|h| {
            let choices = if h.choices.is_null() {
                Vec::new()
            } else {
                // SAFETY: `n_choices` C strings (descriptor contract).
                unsafe { std::slice::from_raw_parts(h.choices, h.n_choices) }
                    .iter()
                    // SAFETY: each is a NUL-terminated string.
                    .map(|&c| unsafe { string(c) })
                    .collect()
            };
            HParamInfo {
                // SAFETY: NUL-terminated strings (descriptor contract).
                name: unsafe { string(h.name) },
                kind: h.kind,
                flags: h.flags,
                default_value: h.default_value,
                min: h.min,
                max: h.max,
                choices,
                // SAFETY: as above.
                doc: unsafe { string(h.doc) },
            }
        })
        .collect();
    PluginInfo {
        abi_major: d.abi_major,
        abi_minor: d.abi_minor,
        struct_size: d.struct_size,
        // SAFETY: NUL-terminated strings (descriptor contract).
        name: unsafe { string(d.name) },
        // SAFETY: as above.
        version: unsafe { string(d.version) },
        // SAFETY: as above.
        description: unsafe { string(d.description) },
        hparams,
    }
}

// ---- plugin instances --------------------------------------------------------------------------

/// A non-zero status from a plugin function, with its `last_error` message.
#[derive(Clone, PartialEq, Eq)]
pub struct HookError {
    /// The status (`CLEF_ERROR`, `CLEF_PANIC`, ...).
    pub status: i32,
    /// The plugin's `last_error` (empty if it returned null).
    pub message: String,
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {}: {}", self.status, self.message)
    }
}

impl fmt::Debug for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A plugin instance driven against a [`MockHost`]. Destroyed on drop.
pub struct MockPlugin {
    desc: &'static ClefPluginDescriptor,
    inst: *mut c_void,
}

unsafe extern "C" fn write_to_vec(writer: *mut c_void, data: *const u8, len: usize) -> i32 {
    if writer.is_null() || (data.is_null() && len > 0) {
        return CLEF_INVALID_ARGUMENT;
    }
    if len > 0 {
        // SAFETY: `writer` is the `Vec<u8>` `MockPlugin::save_state` passes; `data` holds
        // `len` bytes for the call.
        unsafe {
            (*writer.cast::<Vec<u8>>()).extend_from_slice(std::slice::from_raw_parts(data, len))
        };
    }
    CLEF_OK
}

impl MockPlugin {
    /// Creates an instance of `S` (through [`descriptor_of`]) with the given `hparams` TOML.
    pub fn create<S: Strategy>(config_toml: &str) -> Result<Self, HookError> {
        // SAFETY: `descriptor_of` returns a valid, static descriptor built by the SDK.
        unsafe { Self::from_descriptor(descriptor_of::<S>(), config_toml) }
    }

    /// Creates an instance from a plugin's descriptor (e.g. what its
    /// `clef_plugin_entry_v1()` returns) with the given `hparams` TOML.
    ///
    /// # Safety
    /// `desc` must be a valid descriptor that lives for the rest of the process.
    pub unsafe fn from_descriptor(
        desc: *const ClefPluginDescriptor,
        config_toml: &str,
    ) -> Result<Self, HookError> {
        // SAFETY: valid, static descriptor (caller).
        let desc: &'static ClefPluginDescriptor = unsafe { &*desc };
        let config = CString::new(config_toml).map_err(|_| HookError {
            status: CLEF_INVALID_ARGUMENT,
            message: "config contains a NUL byte".into(),
        })?;
        let create = desc.create.ok_or_else(|| HookError {
            status: CLEF_ERROR,
            message: "the descriptor has no `create`".into(),
        })?;
        let mut inst = ptr::null_mut();
        // SAFETY: a valid host table, a NUL-terminated config and a writable out pointer.
        let status = unsafe { create(&HOST_TABLE, config.as_ptr(), &mut inst) };
        if status != CLEF_OK {
            return Err(HookError {
                status,
                // SAFETY: `last_error(null)` reads the thread's message right after `create`.
                message: unsafe { Self::error_of(desc, ptr::null_mut()) },
            });
        }
        Ok(Self { desc, inst })
    }

    /// # Safety
    /// `inst` null or a live instance of `desc`'s plugin.
    unsafe fn error_of(desc: &ClefPluginDescriptor, inst: *mut c_void) -> String {
        match desc.last_error {
            // SAFETY: caller; the returned string is valid until the next call.
            Some(f) => unsafe { string(f(inst)) },
            None => String::new(),
        }
    }

    /// The plugin's descriptor.
    pub fn descriptor(&self) -> &'static ClefPluginDescriptor {
        self.desc
    }

    /// The raw instance pointer.
    pub fn instance(&self) -> *mut c_void {
        self.inst
    }

    fn run(
        &mut self,
        host: &mut MockHost,
        phase: Phase,
        call: impl FnOnce(*mut c_void, *mut ClefCtx) -> Option<i32>,
    ) -> Result<(), HookError> {
        host.state.phase = phase;
        let ctx = host.ctx();
        let status = call(self.inst, ctx).unwrap_or(CLEF_OK);
        host.state.phase = Phase::Idle;
        if status == CLEF_OK {
            Ok(())
        } else {
            Err(HookError {
                status,
                // SAFETY: our live instance, right after the failing call.
                message: unsafe { Self::error_of(self.desc, self.inst) },
            })
        }
    }

    /// Calls `on_model_built`.
    pub fn on_model_built(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.on_model_built;
        // SAFETY: our live instance and the host's context, on this thread.
        self.run(host, Phase::ModelBuilt, |i, c| {
            f.map(|f| unsafe { f(i, c) })
        })
    }

    /// Calls `on_task_start` with the host's current task.
    pub fn on_task_start(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.on_task_start;
        let info = host.task_info_raw();
        // SAFETY: our live instance, the host's context, and a task info whose units live in
        // the host (unchanged during the call).
        self.run(host, Phase::TaskStart, |i, c| {
            f.map(|f| unsafe { f(i, c, &info) })
        })
    }

    /// Calls `before_batch` (the batch is `state().batch_x` / `batch_targets`).
    pub fn before_batch(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.before_batch;
        // SAFETY: our live instance and the host's context.
        self.run(host, Phase::BeforeBatch, |i, c| {
            f.map(|f| unsafe { f(i, c) })
        })
    }

    /// Calls `after_backward`.
    pub fn after_backward(&mut self, host: &mut MockHost, loss: f32) -> Result<(), HookError> {
        let f = self.desc.after_backward;
        // SAFETY: our live instance and the host's context.
        self.run(host, Phase::AfterBackward, |i, c| {
            f.map(|f| unsafe { f(i, c, loss) })
        })
    }

    /// Calls `after_step`.
    pub fn after_step(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.after_step;
        // SAFETY: our live instance and the host's context.
        self.run(host, Phase::AfterStep, |i, c| f.map(|f| unsafe { f(i, c) }))
    }

    /// Calls `on_task_end` with the host's current task.
    pub fn on_task_end(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.on_task_end;
        let info = host.task_info_raw();
        // SAFETY: as in `on_task_start`.
        self.run(host, Phase::TaskEnd, |i, c| {
            f.map(|f| unsafe { f(i, c, &info) })
        })
    }

    /// Calls `before_eval` (`None` passes -1: task id hidden).
    pub fn before_eval(
        &mut self,
        host: &mut MockHost,
        task: Option<usize>,
    ) -> Result<(), HookError> {
        let f = self.desc.before_eval;
        let task = task.map_or(-1, |t| t as i64);
        // SAFETY: our live instance and the host's context.
        self.run(host, Phase::BeforeEval, |i, c| {
            f.map(|f| unsafe { f(i, c, task) })
        })
    }

    /// Calls `after_eval`.
    pub fn after_eval(&mut self, host: &mut MockHost) -> Result<(), HookError> {
        let f = self.desc.after_eval;
        // SAFETY: our live instance and the host's context.
        self.run(host, Phase::AfterEval, |i, c| f.map(|f| unsafe { f(i, c) }))
    }

    /// Calls `save_state` and returns the bytes written.
    pub fn save_state(&mut self, host: &mut MockHost) -> Result<Vec<u8>, HookError> {
        let f = self.desc.save_state;
        let mut bytes: Vec<u8> = Vec::new();
        let writer = (&mut bytes as *mut Vec<u8>).cast::<c_void>();
        // SAFETY: our live instance and the host's context; `writer` is a live Vec<u8> that
        // `write_to_vec` appends to.
        self.run(host, Phase::SaveState, |i, c| {
            f.map(|f| unsafe { f(i, c, write_to_vec, writer) })
        })?;
        Ok(bytes)
    }

    /// Calls `load_state` with `bytes`.
    pub fn load_state(&mut self, host: &mut MockHost, bytes: &[u8]) -> Result<(), HookError> {
        let f = self.desc.load_state;
        // SAFETY: our live instance and the host's context; `bytes` lives for the call.
        self.run(host, Phase::LoadState, |i, c| {
            f.map(|f| unsafe { f(i, c, bytes.as_ptr(), bytes.len()) })
        })
    }
}

impl fmt::Debug for MockPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: the descriptor is valid (checked at creation).
        let name = unsafe { string(self.desc.name) };
        f.debug_struct("MockPlugin")
            .field("name", &name)
            .field("inst", &self.inst)
            .finish()
    }
}

impl fmt::Debug for MockHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHost")
            .field("state", &self.state)
            .finish()
    }
}

impl Drop for MockPlugin {
    fn drop(&mut self) {
        if let Some(destroy) = self.desc.destroy {
            // SAFETY: our instance, destroyed once.
            unsafe { destroy(self.inst) };
        }
    }
}
