//! The host side of the ABI: the per-call context behind `*mut ClefCtx` and the [`HOST`]
//! service table.
//!
//! Every hook call builds a [`HostCtx`] on the stack (the core's [`Ctx`], the batch in
//! `before_batch`, scratch buffers whose pointers stay valid for the whole hook) and passes
//! its address as the opaque `ClefCtx`. Services cast it back. Every service catches panics
//! (a host bug must not unwind into plugin code) and reports failures as status codes; the
//! detail of the last failure is kept in the context and appended to the plugin's own error
//! message if the hook then fails.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

use rand::RngCore;

use clef_abi::{
    ClefBatch, ClefCtx, ClefHost, ClefParamInfo, ClefTaskInfo, ClefTensor, CLEF_ABI_MAJOR,
    CLEF_ABI_MINOR, CLEF_ERROR, CLEF_INVALID_ARGUMENT, CLEF_LOG_DEBUG, CLEF_LOG_ERROR,
    CLEF_LOG_INFO, CLEF_LOG_TRACE, CLEF_LOG_WARN, CLEF_NOT_ALLOWED, CLEF_OK, CLEF_ROLE_BIAS,
    CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL,
    CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN, CLEF_UNSUPPORTED,
};
use clef_backend::{Inputs, ParamRole};

use crate::config::Setting;
use crate::strategy::{Batch, Ctx};

/// Rows a plugin appended during `before_batch`; merged into the batch after the hook returns,
/// so the view `batch_get` handed out stays valid for the whole hook.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) chunks: Vec<Appended>,
}

/// One `batch_append` call: inputs, targets, and per-row masks (if given).
pub(crate) type Appended = (Vec<f32>, Vec<usize>, Option<Vec<bool>>);

/// What `*mut ClefCtx` points to during one hook call.
pub(crate) struct HostCtx {
    /// Name of the plugin being called (for logs).
    pub(crate) plugin: &'static str,
    /// The core's context; null in `save_state` / `load_state`, which run outside training.
    core: *mut Ctx<'static>,
    /// The batch; null outside `before_batch`.
    batch: *mut Batch,
    /// Rows appended in this call.
    pub(crate) pending: Pending,
    /// `units` of the task info handed out in this call (stable for the whole call).
    units: Option<Vec<i64>>,
    /// Targets of the batch view (`i64` as the ABI wants them).
    targets: Vec<i64>,
    /// Output buffer of forward / features.
    scratch: Vec<f32>,
    /// Inputs and targets gathered by `task_samples`.
    gathered_x: Vec<f32>,
    gathered_y: Vec<usize>,
    /// The last service failure of this call, `service: detail`.
    pub(crate) service_error: Option<String>,
    /// Values the plugin reported in this call (`report`), in call order.
    pub(crate) reports: Vec<(String, f64)>,
}

impl HostCtx {
    /// A context over the core's `ctx` (and the batch in `before_batch`). The pointers must
    /// stay valid while the context is used, which [`super::PluginStrategy`] ensures by keeping
    /// the context on the stack of the hook call that borrows them.
    pub(crate) fn new(
        plugin: &'static str,
        ctx: Option<&mut Ctx<'_>>,
        batch: Option<&mut Batch>,
    ) -> Self {
        HostCtx {
            plugin,
            core: ctx.map_or(std::ptr::null_mut(), |c| {
                (c as *mut Ctx<'_>).cast::<Ctx<'static>>()
            }),
            batch: batch.map_or(std::ptr::null_mut(), |b| b as *mut Batch),
            pending: Pending::default(),
            units: None,
            targets: Vec::new(),
            scratch: Vec::new(),
            gathered_x: Vec::new(),
            gathered_y: Vec::new(),
            service_error: None,
            reports: Vec::new(),
        }
    }

    /// The opaque pointer handed to the plugin.
    pub(crate) fn as_raw(&mut self) -> *mut ClefCtx {
        (self as *mut HostCtx).cast::<ClefCtx>()
    }

    fn core(&mut self) -> Result<&mut Ctx<'static>, SvcErr> {
        if self.core.is_null() {
            return Err(SvcErr::not_allowed(
                "not available in save_state/load_state (no training context)",
            ));
        }
        // SAFETY: non-null pointers come from a live `&mut Ctx` that outlives this context
        // (see `new`); the returned borrow is tied to `&mut self`, so no two exist at once.
        Ok(unsafe { &mut *self.core })
    }

    /// The task info of the current task; `units` points into this context.
    pub(crate) fn task_info(&mut self) -> Result<ClefTaskInfo, SvcErr> {
        let (
            task,
            num_tasks,
            train,
            test,
            input_dim,
            num_outputs,
            feature_dim,
            setting,
            seed,
            units,
        ) = {
            let c = self.core()?;
            let sc = c.scenario;
            let t = sc.tasks.get(c.task).ok_or_else(|| {
                SvcErr::new(
                    CLEF_ERROR,
                    format!("current task {} does not exist", c.task),
                )
            })?;
            (
                c.task,
                sc.tasks.len(),
                t.train.len(),
                t.test.len(),
                sc.input_dim(),
                sc.num_outputs,
                c.net.spec().feature_dim(),
                sc.setting,
                c.seed,
                t.units.iter().map(|&u| u as i64).collect::<Vec<i64>>(),
            )
        };
        let units = self.units.get_or_insert(units);
        Ok(ClefTaskInfo {
            struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
            setting: setting_code(setting),
            task: task as i64,
            num_tasks: num_tasks as i64,
            train_samples: train as i64,
            test_samples: test as i64,
            input_dim: input_dim as i64,
            num_outputs: num_outputs as i64,
            feature_dim: feature_dim as i64,
            units: units.as_ptr(),
            n_units: units.len() as i64,
            num_threads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(0),
            seed,
        })
    }
}

fn setting_code(s: Setting) -> i32 {
    match s {
        Setting::TaskIl => CLEF_SETTING_TASK_IL,
        Setting::ClassIl => CLEF_SETTING_CLASS_IL,
        Setting::DomainIl => CLEF_SETTING_DOMAIN_IL,
    }
}

/// A service failure: status code and detail.
#[derive(Debug)]
pub(crate) struct SvcErr {
    code: i32,
    message: String,
}

impl SvcErr {
    fn new(code: i32, message: impl Into<String>) -> Self {
        SvcErr {
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(CLEF_INVALID_ARGUMENT, message)
    }
    fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(CLEF_NOT_ALLOWED, message)
    }
    fn unsupported(message: impl Into<String>) -> Self {
        Self::new(CLEF_UNSUPPORTED, message)
    }
}

thread_local! {
    /// The plugin the host is calling on this thread (names log lines sent with a null ctx,
    /// e.g. during `create`).
    static CURRENT_PLUGIN: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Marks `plugin` as the plugin being called on this thread until dropped.
pub(crate) struct CurrentPlugin(Option<&'static str>);

impl CurrentPlugin {
    pub(crate) fn enter(plugin: &'static str) -> Self {
        CurrentPlugin(CURRENT_PLUGIN.with(|c| c.replace(Some(plugin))))
    }
}

impl Drop for CurrentPlugin {
    fn drop(&mut self) {
        let prev = self.0;
        CURRENT_PLUGIN.with(|c| c.set(prev));
    }
}

/// Runs a service body over the context: null context → `CLEF_INVALID_ARGUMENT`; a failure is
/// recorded in the context and returned as its code; a panic becomes `CLEF_ERROR`.
///
/// # Safety
/// `raw` must be null or the pointer the host passed to the running hook.
unsafe fn service(
    raw: *mut ClefCtx,
    name: &'static str,
    f: impl FnOnce(&mut HostCtx) -> Result<(), SvcErr>,
) -> i32 {
    if raw.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: the ABI lets plugins call services only during a hook with that hook's ctx,
    // which is a live `HostCtx` on the host's stack; hooks of one instance never run
    // concurrently, so this is the only reference while the service runs.
    let h = unsafe { &mut *raw.cast::<HostCtx>() };
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut *h)))
        .unwrap_or_else(|_| Err(SvcErr::new(CLEF_ERROR, "the host panicked (a clef bug)")));
    match result {
        Ok(()) => CLEF_OK,
        Err(e) => {
            tracing::debug!(
                target: "plugin",
                plugin = h.plugin,
                service = name,
                code = e.code,
                "host service refused: {}",
                e.message
            );
            h.service_error = Some(format!("{name}: {}", e.message));
            e.code
        }
    }
}

/// Checks a plugin-given count.
fn count(what: &str, v: i64) -> Result<usize, SvcErr> {
    usize::try_from(v).map_err(|_| SvcErr::invalid(format!("{what} is negative ({v})")))
}

fn index(what: &str, v: i64, len: usize) -> Result<usize, SvcErr> {
    usize::try_from(v)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| SvcErr::invalid(format!("{what} {v} is out of range 0..{len}")))
}

fn product(a: usize, b: usize, what: &str) -> Result<usize, SvcErr> {
    a.checked_mul(b)
        .ok_or_else(|| SvcErr::invalid(format!("{what} overflows")))
}

/// Borrows `len` plugin-owned values.
///
/// # Safety
/// `p` must be null (then `len` must be 0) or point to `len` readable values valid during the
/// call.
unsafe fn slice<'x, T>(p: *const T, len: usize, what: &str) -> Result<&'x [T], SvcErr> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(SvcErr::invalid(format!("{what} is null or misaligned")));
    }
    // SAFETY: non-null, aligned, `len` readable values (caller).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Borrows `len` plugin-owned writable values.
///
/// # Safety
/// As [`slice`], writable.
unsafe fn slice_mut<'x, T>(p: *mut T, len: usize, what: &str) -> Result<&'x mut [T], SvcErr> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(SvcErr::invalid(format!("{what} is null or misaligned")));
    }
    // SAFETY: non-null, aligned, `len` writable values (caller), not aliased by host data.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Writes `value` through a plugin-given out pointer.
///
/// # Safety
/// `out` must be null or valid for writes of a `T` during the call.
unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> Result<(), SvcErr> {
    if out.is_null() || !out.is_aligned() {
        return Err(SvcErr::invalid(format!("{what} is null or misaligned")));
    }
    // SAFETY: non-null, aligned, writable (caller).
    unsafe { out.write(value) };
    Ok(())
}

/// Parameter names as C strings that live for the whole process (a handful of distinct names
/// such as `layers.0.weight`), so `param_info` names never dangle.
fn interned(name: &str) -> *const c_char {
    static NAMES: OnceLock<Mutex<HashMap<String, &'static CStr>>> = OnceLock::new();
    let mut map = NAMES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(s) = map.get(name) {
        return s.as_ptr();
    }
    let c: &'static CStr = Box::leak(
        CString::new(name.replace('\0', "?"))
            .unwrap_or_default()
            .into_boxed_c_str(),
    );
    map.insert(name.to_owned(), c);
    c.as_ptr()
}

fn shape4(shape: &[usize]) -> Result<(i32, [i64; 4]), SvcErr> {
    if shape.is_empty() || shape.len() > 4 {
        return Err(SvcErr::new(
            CLEF_ERROR,
            format!(
                "parameter has {} dimensions (the ABI allows 1..=4)",
                shape.len()
            ),
        ));
    }
    let mut s = [1i64; 4];
    for (d, &v) in s.iter_mut().zip(shape) {
        *d = v as i64;
    }
    Ok((shape.len() as i32, s))
}

fn tensor(data: &mut [f32], shape: &[usize]) -> Result<ClefTensor, SvcErr> {
    let (ndim, shape) = shape4(shape)?;
    Ok(ClefTensor {
        data: data.as_mut_ptr(),
        numel: data.len() as i64,
        ndim,
        writable: 1,
        shape,
    })
}

// ---- services ---------------------------------------------------------------------------------
//
// Each service builds its body as a closure (outside any `unsafe` block, so every unsafe
// operation in it carries its own block and SAFETY note) and runs it through `service`.

unsafe extern "C" fn svc_log(raw: *mut ClefCtx, level: i32, msg: *const c_char) {
    let body = || {
        if msg.is_null() {
            return;
        }
        let plugin = if raw.is_null() {
            CURRENT_PLUGIN.with(Cell::get).unwrap_or("?")
        } else {
            // SAFETY: a non-null ctx is the running hook's `HostCtx` (ABI); only its plugin
            // name is read.
            unsafe { (*raw.cast::<HostCtx>()).plugin }
        };
        // SAFETY: non-null, NUL-terminated, valid during the call (ABI).
        let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        match level {
            CLEF_LOG_ERROR => tracing::error!(target: "plugin", plugin, "{text}"),
            CLEF_LOG_WARN => tracing::warn!(target: "plugin", plugin, "{text}"),
            CLEF_LOG_DEBUG => tracing::debug!(target: "plugin", plugin, "{text}"),
            CLEF_LOG_TRACE => tracing::trace!(target: "plugin", plugin, "{text}"),
            CLEF_LOG_INFO => tracing::info!(target: "plugin", plugin, "{text}"),
            _ => tracing::info!(target: "plugin", plugin, level, "{text}"),
        }
    };
    let _ = catch_unwind(body);
}

unsafe extern "C" fn svc_rng_u64(raw: *mut ClefCtx) -> u64 {
    let mut v = 0u64;
    let body = |h: &mut HostCtx| {
        v = h.core()?.rng.next_u64();
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "rng_u64", body) };
    v
}

unsafe extern "C" fn svc_task_info(raw: *mut ClefCtx, out: *mut ClefTaskInfo) -> i32 {
    let body = |h: &mut HostCtx| {
        let info = h.task_info()?;
        // The caller states how large its struct is (ABI: out-structs with a `struct_size`); a
        // struct older than this host's would be overrun, so it is refused. (A later minor
        // version writes only the first `struct_size` bytes.)
        if out.is_null() || !out.is_aligned() {
            return Err(SvcErr::invalid("out is null or misaligned"));
        }
        // SAFETY: non-null, aligned, and at least the 4-byte `struct_size` field is readable
        // in any version of the struct (it is the first field).
        let caller = unsafe { (*out).struct_size } as usize;
        if caller < std::mem::size_of::<ClefTaskInfo>() {
            return Err(SvcErr::invalid(format!(
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

unsafe extern "C" fn svc_param_count(raw: *mut ClefCtx) -> i64 {
    let mut n = 0i64;
    let body = |h: &mut HostCtx| {
        n = h.core()?.net.params().len() as i64;
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    let status = unsafe { service(raw, "param_count", body) };
    if status == CLEF_OK {
        n
    } else {
        status as i64
    }
}

unsafe extern "C" fn svc_param_info(raw: *mut ClefCtx, idx: i64, out: *mut ClefParamInfo) -> i32 {
    let body = |h: &mut HostCtx| {
        let params = h.core()?.net.params();
        let i = index("parameter index", idx, params.len())?;
        let info = &params.infos()[i];
        let (ndim, shape) = shape4(&info.shape)?;
        let value = ClefParamInfo {
            name: interned(&info.name),
            ndim,
            role: match info.role {
                ParamRole::Weight => CLEF_ROLE_WEIGHT,
                ParamRole::Bias => CLEF_ROLE_BIAS,
            },
            shape,
            numel: info.numel() as i64,
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
unsafe fn param_view(
    raw: *mut ClefCtx,
    name: &'static str,
    grads: bool,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let params = h.core()?.net.params_mut();
        let i = index("parameter index", idx, params.len())?;
        let shape = params.infos()[i].shape.clone();
        let buf = if grads {
            params.grad_mut(i)
        } else {
            params.value_mut(i)
        };
        let t = tensor(buf, &shape)?;
        // SAFETY: `out` is the plugin's writable tensor (caller).
        unsafe { write_out(out, t, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (caller).
    unsafe { service(raw, name, body) }
}

unsafe extern "C" fn svc_param_values(raw: *mut ClefCtx, idx: i64, out: *mut ClefTensor) -> i32 {
    // SAFETY: the ABI's contract for `param_values` is `param_view`'s.
    unsafe { param_view(raw, "param_values", false, idx, out) }
}

unsafe extern "C" fn svc_param_grads(raw: *mut ClefCtx, idx: i64, out: *mut ClefTensor) -> i32 {
    // SAFETY: the ABI's contract for `param_grads` is `param_view`'s.
    unsafe { param_view(raw, "param_grads", true, idx, out) }
}

unsafe extern "C" fn svc_optimizer_state(
    raw: *mut ClefCtx,
    slot: *const c_char,
    idx: i64,
    out: *mut ClefTensor,
) -> i32 {
    let body = |h: &mut HostCtx| {
        if slot.is_null() {
            return Err(SvcErr::invalid("slot name is null"));
        }
        // SAFETY: non-null, NUL-terminated, valid during the call (ABI).
        let name = unsafe { CStr::from_ptr(slot) }
            .to_string_lossy()
            .into_owned();
        let c = h.core()?;
        let n = c.net.params().len();
        let i = index("parameter index", idx, n)?;
        let shape = c.net.params().infos()[i].shape.clone();
        let names = c.optimizer.state_names();
        match c.optimizer.state_mut(&name, i) {
            Some(buf) => {
                let t = tensor(buf, &shape)?;
                // SAFETY: `out` is the plugin's writable tensor (ABI).
                unsafe { write_out(out, t, "out") }
            }
            None => Err(SvcErr::unsupported(format!(
                "the optimizer has no state slot {name:?} (it has: {})",
                names.join(", ")
            ))),
        }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "optimizer_state", body) }
}

/// Which network output a row-wise service computes.
#[derive(Clone, Copy)]
enum Output {
    Logits,
    Features,
}

/// `forward` and `features`.
///
/// # Safety
/// `raw` null or this hook's ctx; `x` `rows * input_dim` readable floats; `out` `out_len`
/// writable floats (as the ABI documents both services).
unsafe fn rows_service(
    raw: *mut ClefCtx,
    name: &'static str,
    which: Output,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let rows = count("rows", rows)?;
        let out_len = count("out_len", out_len)?;
        let c = h.core()?;
        let dim = c.scenario.input_dim();
        let (width, what) = match which {
            Output::Logits => (c.scenario.num_outputs, "num_outputs"),
            Output::Features => (c.net.spec().feature_dim(), "feature_dim"),
        };
        let expected = product(rows, width, "rows * width")?;
        if out_len != expected {
            return Err(SvcErr::invalid(format!(
                "out_len is {out_len}, expected rows ({rows}) * {what} ({width}) = {expected}"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let n_in = product(rows, dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` inputs readable during the call (caller).
        let xs = unsafe { slice(x, n_in, "x") }?;
        // SAFETY: `out_len` writable floats during the call (caller), plugin memory that no
        // host buffer aliases.
        let dst = unsafe { slice_mut(out, out_len, "out") }?;
        let inputs = Inputs::new(xs, rows, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        let mut buf = std::mem::take(&mut h.scratch);
        let r = h.core().and_then(|c| {
            match which {
                Output::Logits => c.net.forward(inputs, &mut buf),
                Output::Features => c.net.features(inputs, &mut buf),
            }
            .map_err(|e| SvcErr::new(CLEF_ERROR, e.to_string()))
        });
        let r = r.and_then(|()| {
            if buf.len() == dst.len() {
                dst.copy_from_slice(&buf);
                Ok(())
            } else {
                Err(SvcErr::new(
                    CLEF_ERROR,
                    format!(
                        "the backend produced {} values, expected {}",
                        buf.len(),
                        dst.len()
                    ),
                ))
            }
        });
        h.scratch = buf;
        r
    };
    // SAFETY: `raw` is null or this hook's ctx (caller).
    unsafe { service(raw, name, body) }
}

unsafe extern "C" fn svc_forward(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: the ABI's contract for `forward` is `rows_service`'s.
    unsafe { rows_service(raw, "forward", Output::Logits, x, rows, out, out_len) }
}

unsafe extern "C" fn svc_features(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    // SAFETY: the ABI's contract for `features` is `rows_service`'s.
    unsafe { rows_service(raw, "features", Output::Features, x, rows, out, out_len) }
}

unsafe extern "C" fn svc_vjp(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let rows = count("rows", rows)?;
        let len = count("cotangent_len", cotangent_len)?;
        let c = h.core()?;
        let (dim, outs) = (c.scenario.input_dim(), c.scenario.num_outputs);
        let expected = product(rows, outs, "rows * num_outputs")?;
        if len != expected {
            return Err(SvcErr::invalid(format!(
                "cotangent_len is {len}, expected rows ({rows}) * num_outputs ({outs}) = {expected}"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let n_in = product(rows, dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` inputs readable during the call (ABI).
        let xs = unsafe { slice(x, n_in, "x") }?;
        // SAFETY: `cotangent_len` floats readable during the call (ABI).
        let cot = unsafe { slice(cotangent, len, "cotangent") }?;
        let inputs = Inputs::new(xs, rows, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        c.net
            .vjp(inputs, cot)
            .map_err(|e| SvcErr::new(CLEF_ERROR, e.to_string()))
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "vjp", body) }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn svc_ntk_gram(
    raw: *mut ClefCtx,
    a: *const f32,
    rows_a: i64,
    b: *const f32,
    rows_b: i64,
    output: i64,
    out: *mut f64,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let rows_a = count("rows_a", rows_a)?;
        let rows_b = count("rows_b", rows_b)?;
        let out_len = count("out_len", out_len)?;
        let c = h.core()?;
        let (dim, outs) = (c.scenario.input_dim(), c.scenario.num_outputs);
        let output = index("output", output, outs)?;
        let expected = product(rows_a, rows_b, "rows_a * rows_b")?;
        if out_len != expected {
            return Err(SvcErr::invalid(format!(
                "out_len is {out_len}, expected rows_a ({rows_a}) * rows_b ({rows_b}) = {expected}"
            )));
        }
        if expected == 0 {
            return Ok(());
        }
        // SAFETY: `rows_a * input_dim` inputs readable during the call (ABI).
        let xa = unsafe { slice(a, product(rows_a, dim, "rows_a * input_dim")?, "a") }?;
        // SAFETY: `rows_b * input_dim` inputs readable during the call (ABI).
        let xb = unsafe { slice(b, product(rows_b, dim, "rows_b * input_dim")?, "b") }?;
        // SAFETY: `out_len` writable f64s during the call (ABI), plugin memory that no host
        // buffer aliases.
        let dst = unsafe { slice_mut(out, out_len, "out") }?;
        let ia = Inputs::new(xa, rows_a, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        let ib = Inputs::new(xb, rows_b, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        clef_backend::ntk::ntk_gram(c.net.spec(), c.net.params(), ia, ib, output, dst)
            .map_err(|e| SvcErr::new(CLEF_ERROR, e.to_string()))
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "ntk_gram", body) }
}

unsafe extern "C" fn svc_batch_get(raw: *mut ClefCtx, out: *mut ClefBatch) -> i32 {
    let body = |h: &mut HostCtx| {
        if h.batch.is_null() {
            return Err(SvcErr::not_allowed("only available in before_batch"));
        }
        let dim = h.core()?.scenario.input_dim() as i64;
        // SAFETY: non-null: the live batch of this `before_batch` call (see HostCtx::new).
        // Appended rows go to `pending`, so the batch is not modified during the hook and the
        // view stays valid until the hook returns.
        let batch = unsafe { &*h.batch };
        if h.targets.len() != batch.targets.len() {
            h.targets = batch.targets.iter().map(|&t| t as i64).collect();
        }
        let view = ClefBatch {
            x: batch.x.as_ptr(),
            targets: h.targets.as_ptr(),
            rows: batch.rows() as i64,
            cols: dim,
            current_rows: batch.current_rows as i64,
        };
        // SAFETY: `out` is the plugin's writable batch struct (ABI).
        unsafe { write_out(out, view, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "batch_get", body) }
}

unsafe extern "C" fn svc_batch_append(
    raw: *mut ClefCtx,
    x: *const f32,
    rows: i64,
    targets: *const i64,
    masks: *const u8,
) -> i32 {
    let body = |h: &mut HostCtx| {
        if h.batch.is_null() {
            return Err(SvcErr::not_allowed("only available in before_batch"));
        }
        let rows = count("rows", rows)?;
        let c = h.core()?;
        let (dim, outs) = (c.scenario.input_dim(), c.scenario.num_outputs);
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
        // SAFETY: non-null: this `before_batch` call's batch, only read here.
        let shared = unsafe { &(*h.batch).mask };
        let mut tv = Vec::with_capacity(rows);
        for (r, &t) in ts.iter().enumerate() {
            let t = index(&format!("target of row {r}"), t, outs)?;
            let allowed = match (&masks, shared) {
                (Some(m), _) => m[r * outs + t],
                (None, Some(s)) => s[t],
                (None, None) => true,
            };
            if !allowed {
                return Err(SvcErr::invalid(format!(
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
        h.pending.chunks.push((xs.to_vec(), tv, masks));
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "batch_append", body) }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn svc_task_samples(
    raw: *mut ClefCtx,
    task: i64,
    split: i32,
    start: i64,
    rows: i64,
    x_out: *mut f32,
    targets_out: *mut i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let (mut gx, mut gy) = (
            std::mem::take(&mut h.gathered_x),
            std::mem::take(&mut h.gathered_y),
        );
        let c = h.core()?;
        let sc = c.scenario;
        let t = index("task", task, sc.tasks.len())?;
        if t > c.task {
            return Err(SvcErr::not_allowed(format!(
                "task {t} is in the future (current task: {})",
                c.task
            )));
        }
        // Test data is for evaluation only: a strategy that trained on it would leak the
        // evaluation set (and break tune-then-evaluate), so the host refuses it.
        let test = match split {
            CLEF_SPLIT_TRAIN => false,
            CLEF_SPLIT_TEST => {
                return Err(SvcErr::not_allowed(
                    "test samples are reserved for evaluation; strategies may read training samples only",
                ))
            }
            other => return Err(SvcErr::invalid(format!("unknown split {other}"))),
        };
        let (start, rows) = (count("start", start)?, count("rows", rows)?);
        let task_ref = &sc.tasks[t];
        let len = if test {
            task_ref.test.len()
        } else {
            task_ref.train.len()
        };
        let end = start
            .checked_add(rows)
            .filter(|&e| e <= len)
            .ok_or_else(|| {
                SvcErr::invalid(format!(
                    "samples {start}..{start}+{rows} exceed the split's {len} samples"
                ))
            })?;
        let n_in = product(rows, sc.input_dim(), "rows * input_dim")?;
        // SAFETY: `rows * input_dim` writable floats during the call (ABI), plugin memory.
        let xo = unsafe { slice_mut(x_out, n_in, "x_out") }?;
        // SAFETY: `rows` writable targets during the call (ABI), plugin memory.
        let yo = unsafe { slice_mut(targets_out, rows, "targets_out") }?;
        let positions: Vec<usize> = (start..end).collect();
        gx.clear();
        gy.clear();
        sc.gather(task_ref, test, &positions, &mut gx, &mut gy);
        xo.copy_from_slice(&gx);
        for (o, &y) in yo.iter_mut().zip(&gy) {
            *o = y as i64;
        }
        h.gathered_x = gx;
        h.gathered_y = gy;
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "task_samples", body) }
}

unsafe extern "C" fn svc_task_mask(raw: *mut ClefCtx, task: i64, out: *mut u8, len: i64) -> i32 {
    let body = |h: &mut HostCtx| {
        // Any task, future ones included: a head's units are the layout of the output layer,
        // not data (docs/abi.md: "allowed in hooks").
        let sc = h.core()?.scenario;
        let t = index("task", task, sc.tasks.len())?;
        let len = count("len", len)?;
        if len != sc.num_outputs {
            return Err(SvcErr::invalid(format!(
                "len is {len}, expected num_outputs ({})",
                sc.num_outputs
            )));
        }
        // SAFETY: `len` writable bytes during the call (ABI), plugin memory.
        let dst = unsafe { slice_mut(out, len, "out") }?;
        match sc.setting {
            Setting::DomainIl => dst.fill(1),
            Setting::TaskIl | Setting::ClassIl => {
                dst.fill(0);
                for &u in &sc.tasks[t].units {
                    if let Some(d) = dst.get_mut(u) {
                        *d = 1;
                    }
                }
            }
        }
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "task_mask", body) }
}

/// The pool services are task-IL only: evaluation routes each task to its expert by task id.
fn require_task_il(c: &Ctx<'_>) -> Result<(), SvcErr> {
    if c.scenario.setting == Setting::TaskIl {
        Ok(())
    } else {
        Err(SvcErr::not_allowed(
            "expert pools need the task-IL setting (evaluation routes by task id)",
        ))
    }
}

unsafe extern "C" fn svc_expert_add(
    raw: *mut ClefCtx,
    hidden: *const i64,
    n_hidden: i64,
    activation: i32,
    out_id: *mut i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let n = count("n_hidden", n_hidden)?;
        // SAFETY: `n_hidden` readable values during the call (ABI).
        let widths = unsafe { slice(hidden, n, "hidden") }?;
        let widths = widths
            .iter()
            .map(|&w| {
                usize::try_from(w)
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| SvcErr::invalid(format!("hidden width {w} is not positive")))
            })
            .collect::<Result<Vec<usize>, _>>()?;
        let act = match activation {
            0 => clef_backend::Activation::Relu,
            1 => clef_backend::Activation::Tanh,
            2 => clef_backend::Activation::Sigmoid,
            other => {
                return Err(SvcErr::invalid(format!(
                    "activation {other} (0 relu, 1 tanh, 2 sigmoid)"
                )))
            }
        };
        let c = h.core()?;
        require_task_il(c)?;
        let id = c
            .experts
            .add(widths, act, c.optimizer)
            .map_err(|e| SvcErr::new(CLEF_ERROR, e))?;
        // SAFETY: `out_id` is null or writable during the call (ABI).
        unsafe { write_out(out_id, id as i64, "out_id") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_add", body) }
}

unsafe extern "C" fn svc_expert_select(raw: *mut ClefCtx, id: i64) -> i32 {
    let body = |h: &mut HostCtx| {
        let c = h.core()?;
        require_task_il(c)?;
        let id = index("expert id", id, c.experts.len())?;
        c.experts
            .select(c.task, id, c.net, c.optimizer)
            .map_err(|e| SvcErr::new(CLEF_ERROR, e))
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_select", body) }
}

unsafe extern "C" fn svc_expert_freeze(raw: *mut ClefCtx, id: i64, frozen: i32) -> i32 {
    let body = |h: &mut HostCtx| {
        let c = h.core()?;
        require_task_il(c)?;
        let id = index("expert id", id, c.experts.len())?;
        c.experts
            .freeze(id, frozen != 0, &**c.net)
            .map_err(|e| SvcErr::new(CLEF_ERROR, e))
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_freeze", body) }
}

unsafe extern "C" fn svc_expert_params(raw: *mut ClefCtx, id: i64, out: *mut i64) -> i32 {
    let body = |h: &mut HostCtx| {
        let c = h.core()?;
        let n = if id == -1 {
            if c.experts.enabled() {
                c.experts.total_params(c.scenario)
            } else {
                c.net.spec().num_params()
            }
        } else {
            let id = index("expert id", id, c.experts.len())?;
            c.experts
                .params_of(id, c.scenario)
                .ok_or_else(|| SvcErr::invalid(format!("expert {id} does not exist")))?
        };
        // SAFETY: `out` is null or writable during the call (ABI).
        unsafe { write_out(out, n as i64, "out") }
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "expert_params", body) }
}

/// Runs `f` on the selected expert with task `task`'s head in its output layer, then puts the
/// loaded head back bit for bit. With `keep_head_grads`, the output layer's gradients are
/// restored too (the head is held fixed).
fn with_head<R>(
    c: &mut Ctx<'_>,
    task: usize,
    keep_head_grads: bool,
    f: impl FnOnce(&mut dyn clef_backend::Network) -> Result<R, SvcErr>,
) -> Result<R, SvcErr> {
    let head = c.experts.head_of(task, &**c.net).map_err(SvcErr::invalid)?;
    let p = c.net.params_mut();
    let (wi, bi) = (p.len() - 2, p.len() - 1);
    let saved_w = p.value(wi).to_vec();
    let saved_b = p.value(bi).to_vec();
    let grads = keep_head_grads.then(|| (p.grad(wi).to_vec(), p.grad(bi).to_vec()));
    p.value_mut(wi).copy_from_slice(&head.weight);
    p.value_mut(bi).copy_from_slice(&head.bias);
    let r = f(&mut **c.net);
    let p = c.net.params_mut();
    p.value_mut(wi).copy_from_slice(&saved_w);
    p.value_mut(bi).copy_from_slice(&saved_b);
    if let Some((gw, gb)) = grads {
        p.grad_mut(wi).copy_from_slice(&gw);
        p.grad_mut(bi).copy_from_slice(&gb);
    }
    r
}

unsafe extern "C" fn svc_head_forward(
    raw: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let rows = count("rows", rows)?;
        let out_len = count("out_len", out_len)?;
        let c = h.core()?;
        require_task_il(c)?;
        let task = index("task", task, c.scenario.tasks.len())?;
        let (dim, outs) = (c.scenario.input_dim(), c.scenario.num_outputs);
        let expected = product(rows, outs, "rows * num_outputs")?;
        if out_len != expected {
            return Err(SvcErr::invalid(format!(
                "out_len is {out_len}, expected rows ({rows}) * num_outputs ({outs}) = {expected}"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let n_in = product(rows, dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` inputs readable during the call (ABI).
        let xs = unsafe { slice(x, n_in, "x") }?;
        // SAFETY: `out_len` writable floats during the call (ABI), plugin memory.
        let dst = unsafe { slice_mut(out, out_len, "out") }?;
        let inputs = Inputs::new(xs, rows, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        let mut buf = Vec::new();
        with_head(c, task, false, |net| {
            net.forward(inputs, &mut buf)
                .map_err(|e| SvcErr::new(CLEF_ERROR, e.to_string()))
        })?;
        if buf.len() != dst.len() {
            return Err(SvcErr::new(
                CLEF_ERROR,
                format!(
                    "the backend produced {} values, expected {}",
                    buf.len(),
                    dst.len()
                ),
            ));
        }
        dst.copy_from_slice(&buf);
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "head_forward", body) }
}

unsafe extern "C" fn svc_head_vjp(
    raw: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    cotangent: *const f32,
    cotangent_len: i64,
) -> i32 {
    let body = |h: &mut HostCtx| {
        let rows = count("rows", rows)?;
        let len = count("cotangent_len", cotangent_len)?;
        let c = h.core()?;
        require_task_il(c)?;
        let task = index("task", task, c.scenario.tasks.len())?;
        let (dim, outs) = (c.scenario.input_dim(), c.scenario.num_outputs);
        let expected = product(rows, outs, "rows * num_outputs")?;
        if len != expected {
            return Err(SvcErr::invalid(format!(
                "cotangent_len is {len}, expected rows ({rows}) * num_outputs ({outs}) = {expected}"
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        let n_in = product(rows, dim, "rows * input_dim")?;
        // SAFETY: `rows * input_dim` inputs readable during the call (ABI).
        let xs = unsafe { slice(x, n_in, "x") }?;
        // SAFETY: `cotangent_len` floats readable during the call (ABI).
        let cot = unsafe { slice(cotangent, len, "cotangent") }?;
        let inputs = Inputs::new(xs, rows, dim).map_err(|e| SvcErr::invalid(e.to_string()))?;
        with_head(c, task, true, |net| {
            net.vjp(inputs, cot)
                .map_err(|e| SvcErr::new(CLEF_ERROR, e.to_string()))
        })
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "head_vjp", body) }
}

unsafe extern "C" fn svc_get_extension(_raw: *mut ClefCtx, _name: *const c_char) -> *const c_void {
    std::ptr::null()
}

/// Longest key `report` accepts.
pub(crate) const MAX_REPORT_KEY: usize = 128;

unsafe extern "C" fn svc_report(raw: *mut ClefCtx, key: *const c_char, value: f64) -> i32 {
    let body = |h: &mut HostCtx| {
        // Only hooks with a training context: the value belongs to the current task.
        h.core()?;
        if key.is_null() {
            return Err(SvcErr::invalid("key is null"));
        }
        // SAFETY: non-null and NUL-terminated, valid during the call (ABI).
        let bytes = unsafe { CStr::from_ptr(key) }.to_bytes();
        if bytes.is_empty()
            || bytes.len() > MAX_REPORT_KEY
            || !bytes.iter().all(u8::is_ascii_graphic)
        {
            return Err(SvcErr::invalid(format!(
                "key {:?} must be 1 to {MAX_REPORT_KEY} printable ASCII characters without \
                 spaces",
                String::from_utf8_lossy(bytes)
            )));
        }
        let key = String::from_utf8_lossy(bytes).into_owned();
        if !value.is_finite() {
            return Err(SvcErr::invalid(format!(
                "value of `{key}` is {value} (must be finite)"
            )));
        }
        h.reports.push((key, value));
        Ok(())
    };
    // SAFETY: `raw` is null or this hook's ctx (ABI).
    unsafe { service(raw, "report", body) }
}

/// The service table handed to every plugin's `create` (one static instance, valid forever).
pub(crate) static HOST: ClefHost = ClefHost {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use clef_backend::{
        build_network, Activation, Init, MlpSpec, Network, Optimizer, OptimizerSpec,
    };

    use super::*;
    use crate::config::{ScenarioConfig, ScenarioKind};
    use crate::scenario::Scenario;

    const DIM: usize = 5;

    fn scenario(setting: Setting) -> Scenario {
        let data = Arc::new(crate::data::synthetic::gaussian_blobs(4, DIM, 6, 3, 1.0, 0));
        let cfg = ScenarioConfig {
            kind: ScenarioKind::ClassSplit,
            tasks: 2,
            classes_per_task: Some(2),
            class_order: None,
            seed: None,
            max_degrees: None,
            samples: None,
            permuted_tasks: None,
        };
        crate::scenario::build(&cfg, data, setting, 0).unwrap()
    }

    struct World {
        sc: Scenario,
        net: Box<dyn Network>,
        experts: crate::experts::Experts,
        opt: Optimizer,
        rng: ChaCha8Rng,
    }

    fn world(setting: Setting) -> World {
        let sc = scenario(setting);
        let spec = MlpSpec {
            input: DIM,
            hidden: vec![3],
            output: sc.num_outputs,
            activation: Activation::Relu,
            init: Init::KaimingUniform,
        };
        let net = build_network(&spec, 1).unwrap();
        let opt = Optimizer::new(
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
            },
            net.params(),
        );
        World {
            experts: crate::experts::Experts::new(&spec, 3, sc.tasks.len()),
            sc,
            net,
            opt,
            rng: ChaCha8Rng::seed_from_u64(7),
        }
    }

    fn with_ctx<R>(w: &mut World, task: usize, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let mut ctx = Ctx {
            net: &mut w.net,
            experts: &mut w.experts,
            optimizer: &mut w.opt,
            scenario: &w.sc,
            rng: &mut w.rng,
            task,
            step: 0,
            seed: 42,
        };
        f(&mut ctx)
    }

    const EMPTY_TENSOR: ClefTensor = ClefTensor {
        data: std::ptr::null_mut(),
        numel: 0,
        ndim: 0,
        writable: 0,
        shape: [0; 4],
    };

    #[test]
    fn task_info_and_parameters() {
        let mut w = world(Setting::TaskIl);
        with_ctx(&mut w, 1, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            // SAFETY (whole test): `raw` is a live HostCtx over a live Ctx, and every out
            // pointer is a live local.
            unsafe {
                let mut info = std::mem::zeroed::<ClefTaskInfo>();
                // A caller that does not state its struct size is refused ...
                assert_eq!((HOST.task_info)(raw, &mut info), CLEF_INVALID_ARGUMENT);
                // ... one that does gets the task.
                info.struct_size = std::mem::size_of::<ClefTaskInfo>() as u32;
                assert_eq!((HOST.task_info)(raw, &mut info), CLEF_OK);
                assert_eq!(
                    (info.task, info.num_tasks, info.input_dim),
                    (1, 2, DIM as i64)
                );
                assert_eq!((info.num_outputs, info.feature_dim, info.seed), (4, 3, 42));
                assert_eq!(info.setting, CLEF_SETTING_TASK_IL);
                let units = std::slice::from_raw_parts(info.units, info.n_units as usize);
                assert_eq!(units.len(), 2);

                assert_eq!((HOST.param_count)(raw), 4);
                let mut pi = std::mem::zeroed::<ClefParamInfo>();
                assert_eq!((HOST.param_info)(raw, 0, &mut pi), CLEF_OK);
                assert_eq!(CStr::from_ptr(pi.name).to_str().unwrap(), "layers.0.weight");
                assert_eq!(
                    (pi.ndim, pi.role, pi.shape, pi.numel),
                    (2, CLEF_ROLE_WEIGHT, [3, 5, 1, 1], 15)
                );
                assert_eq!((HOST.param_info)(raw, 4, &mut pi), CLEF_INVALID_ARGUMENT);
                assert!(h.service_error.take().unwrap().contains("out of range"));

                let mut g = EMPTY_TENSOR;
                assert_eq!((HOST.param_grads)(raw, 1, &mut g), CLEF_OK);
                assert_eq!((g.numel, g.writable), (3, 1));
                *g.data.add(2) = 5.0;
                let mut v = EMPTY_TENSOR;
                assert_eq!((HOST.param_values)(raw, 0, &mut v), CLEF_OK);
                assert_eq!(v.numel, 15);

                let mut m = EMPTY_TENSOR;
                assert_eq!(
                    (HOST.optimizer_state)(raw, c"momentum".as_ptr(), 0, &mut m),
                    CLEF_OK
                );
                assert_eq!(m.numel, 15);
                assert_eq!(
                    (HOST.optimizer_state)(raw, c"exp_avg".as_ptr(), 0, &mut m),
                    CLEF_UNSUPPORTED
                );
                let a = (HOST.rng_u64)(raw);
                assert_ne!(a, (HOST.rng_u64)(raw));
            }
        });
        assert_eq!(w.net.params().grad(1)[2], 5.0);
    }

    /// The expert services through the C table (task-IL, 2 tasks x 2 classes, DIM inputs):
    /// add and select route the task, counts are exact, `head_forward` of the loaded head is
    /// `forward`, another task's head gives other logits and is put back bit for bit, and
    /// `head_vjp` adds into the body's gradients only.
    #[test]
    fn expert_services_route_count_and_keep_heads_fixed() {
        let mut w = world(Setting::TaskIl);
        let x: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.1 - 0.3).collect();
        let outs = w.sc.num_outputs;
        let hidden = [4i64];
        with_ctx(&mut w, 0, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            let mut id = -1i64;
            let mut n = 0i64;
            // SAFETY: live ctx; buffers of the documented sizes.
            unsafe {
                assert_eq!(
                    (HOST.expert_add)(raw, hidden.as_ptr(), 1, 0, &mut id),
                    CLEF_OK
                );
                assert_eq!(id, 1);
                assert_eq!(
                    (HOST.expert_add)(raw, [0i64].as_ptr(), 1, 0, &mut id),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!(
                    (HOST.expert_add)(raw, hidden.as_ptr(), 1, 7, &mut id),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!((HOST.expert_select)(raw, 9), CLEF_INVALID_ARGUMENT);
                assert_eq!((HOST.expert_select)(raw, 1), CLEF_OK);
                assert_eq!((HOST.param_count)(raw), 4);
                // Body 5·4 + 4 = 24, one 2-unit head 2·(4 + 1) = 10.
                assert_eq!((HOST.expert_params)(raw, 1, &mut n), CLEF_OK);
                assert_eq!(n, 34);
                assert_eq!((HOST.expert_params)(raw, -1, &mut n), CLEF_OK);
                assert_eq!(n, 34);
                let mut a = vec![0.0f32; 2 * outs];
                let mut b = vec![0.0f32; 2 * outs];
                assert_eq!(
                    (HOST.forward)(raw, x.as_ptr(), 2, a.as_mut_ptr(), a.len() as i64),
                    CLEF_OK
                );
                assert_eq!(
                    (HOST.head_forward)(raw, 0, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                    CLEF_OK
                );
                assert_eq!(a, b);
                // Task 1 is not routed yet.
                assert_eq!(
                    (HOST.head_forward)(raw, 1, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!((HOST.expert_freeze)(raw, 1, 1), CLEF_OK);
            }
        });
        with_ctx(&mut w, 1, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            let mut n = 0i64;
            // SAFETY: live ctx; buffers of the documented sizes.
            unsafe {
                assert_eq!((HOST.expert_select)(raw, 1), CLEF_OK);
                assert_eq!((HOST.expert_params)(raw, -1, &mut n), CLEF_OK);
                assert_eq!(n, 44);
            }
            let c = h.core().unwrap();
            let before: Vec<Vec<f32>> = c.net.params().values().to_vec();
            c.net.params_mut().zero_grads();
            let mut a = vec![0.0f32; 2 * outs];
            let mut b = vec![0.0f32; 2 * outs];
            // SAFETY: as above.
            unsafe {
                assert_eq!(
                    (HOST.forward)(raw, x.as_ptr(), 2, a.as_mut_ptr(), a.len() as i64),
                    CLEF_OK
                );
                assert_eq!(
                    (HOST.head_forward)(raw, 0, x.as_ptr(), 2, b.as_mut_ptr(), b.len() as i64),
                    CLEF_OK
                );
                assert_ne!(a, b, "task 0's head differs from task 1's fresh head");
                let cot = vec![1.0f32; 2 * outs];
                assert_eq!(
                    (HOST.head_vjp)(raw, 0, x.as_ptr(), 2, cot.as_ptr(), cot.len() as i64),
                    CLEF_OK
                );
            }
            let c = h.core().unwrap();
            assert_eq!(
                c.net.params().values(),
                &before[..],
                "values put back bit for bit"
            );
            let g = c.net.params().grads();
            assert!(g[0].iter().any(|&v| v != 0.0), "body gradients");
            assert!(
                g[2].iter().chain(&g[3]).all(|&v| v == 0.0),
                "no output-layer gradients"
            );
        });
    }

    #[test]
    fn forward_features_and_vjp_check_sizes() {
        let mut w = world(Setting::ClassIl);
        let x: Vec<f32> = (0..2 * DIM).map(|i| i as f32 * 0.1).collect();
        let mut expected = Vec::new();
        w.net
            .forward(Inputs::new(&x, 2, DIM).unwrap(), &mut expected)
            .unwrap();
        with_ctx(&mut w, 0, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            let mut out = vec![0.0f32; 8];
            // SAFETY: live ctx; buffers of the documented sizes (or deliberately wrong sizes,
            // which the host checks before touching them).
            unsafe {
                assert_eq!(
                    (HOST.forward)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 8),
                    CLEF_OK
                );
                assert_eq!(out, expected);
                assert_eq!(
                    (HOST.forward)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 7),
                    CLEF_INVALID_ARGUMENT
                );
                assert!(h.service_error.take().unwrap().contains("out_len is 7"));
                assert_eq!(
                    (HOST.features)(raw, x.as_ptr(), 2, out.as_mut_ptr(), 6),
                    CLEF_OK
                );
                let cot = [1.0f32; 8];
                assert_eq!(
                    (HOST.vjp)(raw, x.as_ptr(), 2, cot.as_ptr(), 6),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!((HOST.vjp)(raw, x.as_ptr(), 2, cot.as_ptr(), 8), CLEF_OK);
                assert_eq!(
                    (HOST.forward)(raw, std::ptr::null(), 2, out.as_mut_ptr(), 8),
                    CLEF_INVALID_ARGUMENT
                );
                let mut gram = [0.0f64; 4];
                assert_eq!(
                    (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 0, gram.as_mut_ptr(), 4),
                    CLEF_OK
                );
                assert!(gram[0] > 0.0 && (gram[1] - gram[2]).abs() <= 1e-9 * gram[1].abs());
                assert_eq!(
                    (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 0, gram.as_mut_ptr(), 3),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!(
                    (HOST.ntk_gram)(raw, x.as_ptr(), 2, x.as_ptr(), 2, 99, gram.as_mut_ptr(), 4),
                    CLEF_INVALID_ARGUMENT
                );
                // Expert pools are task-IL only (this world is not).
                let mut id = 0i64;
                assert_eq!(
                    (HOST.expert_add)(raw, std::ptr::null(), 0, 0, &mut id),
                    CLEF_NOT_ALLOWED
                );
                assert_eq!((HOST.expert_select)(raw, 0), CLEF_NOT_ALLOWED);
                assert!((HOST.get_extension)(raw, c"clef.x.v1".as_ptr()).is_null());
            }
        });
        assert!(w.net.params().grads().iter().flatten().any(|&g| g != 0.0));
    }

    #[test]
    fn task_data_is_only_for_tasks_seen_so_far() {
        let mut w = world(Setting::TaskIl);
        let units1 = w.sc.tasks[0].units.clone();
        with_ctx(&mut w, 0, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            let mut x = vec![0.0f32; 2 * DIM];
            let mut y = vec![0i64; 2];
            let mut mask = vec![0u8; 4];
            // SAFETY: live ctx; buffers of the documented sizes.
            unsafe {
                assert_eq!(
                    (HOST.task_samples)(
                        raw,
                        0,
                        CLEF_SPLIT_TRAIN,
                        1,
                        2,
                        x.as_mut_ptr(),
                        y.as_mut_ptr()
                    ),
                    CLEF_OK
                );
                assert!(y.iter().all(|&t| units1.contains(&(t as usize))));
                assert!(x.iter().any(|&v| v != 0.0));
                assert_eq!(
                    (HOST.task_samples)(
                        raw,
                        1,
                        CLEF_SPLIT_TRAIN,
                        0,
                        2,
                        x.as_mut_ptr(),
                        y.as_mut_ptr()
                    ),
                    CLEF_NOT_ALLOWED
                );
                assert_eq!(
                    (HOST.task_samples)(
                        raw,
                        0,
                        CLEF_SPLIT_TEST,
                        0,
                        2,
                        x.as_mut_ptr(),
                        y.as_mut_ptr()
                    ),
                    CLEF_NOT_ALLOWED,
                    "test samples are for evaluation only"
                );
                assert_eq!(
                    (HOST.task_samples)(raw, 0, 9, 0, 2, x.as_mut_ptr(), y.as_mut_ptr()),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!((HOST.task_mask)(raw, 0, mask.as_mut_ptr(), 4), CLEF_OK);
                assert_eq!(mask.iter().filter(|&&b| b == 1).count(), 2);
                assert_eq!((HOST.task_mask)(raw, 1, mask.as_mut_ptr(), 4), CLEF_OK);
                assert_eq!(mask.iter().filter(|&&b| b == 1).count(), 2);
                assert_eq!(
                    (HOST.task_mask)(raw, 0, mask.as_mut_ptr(), 3),
                    CLEF_INVALID_ARGUMENT
                );
                let mut b = std::mem::zeroed::<ClefBatch>();
                assert_eq!((HOST.batch_get)(raw, &mut b), CLEF_NOT_ALLOWED);
                assert_eq!(
                    (HOST.batch_append)(raw, x.as_ptr(), 1, y.as_ptr(), std::ptr::null()),
                    CLEF_NOT_ALLOWED
                );
                assert!(h
                    .service_error
                    .take()
                    .unwrap()
                    .contains("only available in before_batch"));
            }
        });
    }

    #[test]
    fn batch_append_checks_masks_and_keeps_the_view_valid() {
        let mut w = world(Setting::TaskIl);
        let t0 = w.sc.tasks[0].units.clone();
        let t1 = w.sc.tasks[1].units.clone();
        let mut batch = Batch {
            x: vec![0.5; 2 * DIM],
            targets: vec![t1[0], t1[1]],
            mask: w.sc.train_mask(1),
            row_masks: None,
            current_rows: 2,
        };
        let x = [1.0f32; DIM];
        with_ctx(&mut w, 1, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), Some(&mut batch));
            let raw = h.as_raw();
            // SAFETY: live ctx and batch; buffers of the documented sizes.
            unsafe {
                let mut view = std::mem::zeroed::<ClefBatch>();
                assert_eq!((HOST.batch_get)(raw, &mut view), CLEF_OK);
                assert_eq!(
                    (view.rows, view.cols, view.current_rows),
                    (2, DIM as i64, 2)
                );
                // A row of task 0 without a mask: its target is outside task 1's head.
                let target = [t0[0] as i64];
                assert_eq!(
                    (HOST.batch_append)(raw, x.as_ptr(), 1, target.as_ptr(), std::ptr::null()),
                    CLEF_INVALID_ARGUMENT
                );
                // With its own head it is accepted.
                let mut m = [0u8; 4];
                for &u in &t0 {
                    m[u] = 1;
                }
                assert_eq!(
                    (HOST.batch_append)(raw, x.as_ptr(), 1, target.as_ptr(), m.as_ptr()),
                    CLEF_OK
                );
                let same = [t1[1] as i64];
                assert_eq!(
                    (HOST.batch_append)(raw, x.as_ptr(), 1, same.as_ptr(), std::ptr::null()),
                    CLEF_OK
                );
                // The view still shows the original rows (appends are merged after the hook).
                let mut again = std::mem::zeroed::<ClefBatch>();
                assert_eq!((HOST.batch_get)(raw, &mut again), CLEF_OK);
                assert_eq!((again.rows, again.x), (2, view.x));
            }
            for (x, t, m) in std::mem::take(&mut h.pending.chunks) {
                batch.append_rows(&x, &t, m.as_deref(), 4);
            }
        });
        assert_eq!(batch.rows(), 4);
        let row_masks = batch.row_masks.as_ref().unwrap();
        assert_eq!(row_masks.len(), 16);
        assert!(batch.row_mask(2, 4).unwrap()[t0[0]]);
        assert_eq!(batch.row_mask(3, 4), batch.mask.as_deref());
        assert_eq!(batch.row_mask(0, 4), batch.mask.as_deref());
    }

    #[test]
    fn report_checks_key_and_value_and_keeps_the_values() {
        let mut w = world(Setting::TaskIl);
        with_ctx(&mut w, 1, |ctx| {
            let mut h = HostCtx::new("t", Some(ctx), None);
            let raw = h.as_raw();
            let long = CString::new("k".repeat(MAX_REPORT_KEY + 1)).unwrap();
            // SAFETY: a live HostCtx over a live Ctx; NUL-terminated keys.
            unsafe {
                assert_eq!((HOST.report)(raw, c"density.total".as_ptr(), 0.25), CLEF_OK);
                assert_eq!((HOST.report)(raw, c"free".as_ptr(), 7.0), CLEF_OK);
                assert_eq!(
                    (HOST.report)(raw, c"a b".as_ptr(), 1.0),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!((HOST.report)(raw, c"".as_ptr(), 1.0), CLEF_INVALID_ARGUMENT);
                assert_eq!(
                    (HOST.report)(raw, long.as_ptr(), 1.0),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!(
                    (HOST.report)(raw, std::ptr::null(), 1.0),
                    CLEF_INVALID_ARGUMENT
                );
                assert_eq!(
                    (HOST.report)(raw, c"x".as_ptr(), f64::NAN),
                    CLEF_INVALID_ARGUMENT
                );
                assert!(h.service_error.take().unwrap().contains("must be finite"));
            }
            assert_eq!(
                h.reports,
                vec![
                    ("density.total".to_string(), 0.25),
                    ("free".to_string(), 7.0)
                ]
            );
        });
        let mut h = HostCtx::new("t", None, None);
        // SAFETY: a live HostCtx without a training context.
        let code = unsafe { (HOST.report)(h.as_raw(), c"x".as_ptr(), 1.0) };
        assert_eq!(code, CLEF_NOT_ALLOWED);
    }

    #[test]
    fn contexts_without_training_refuse_services() {
        let mut h = HostCtx::new("t", None, None);
        let raw = h.as_raw();
        // SAFETY: a live HostCtx; null ctx is allowed and must be refused.
        unsafe {
            assert_eq!((HOST.param_count)(raw), CLEF_NOT_ALLOWED as i64);
            assert_eq!(
                (HOST.param_count)(std::ptr::null_mut()),
                CLEF_INVALID_ARGUMENT as i64
            );
            (HOST.log)(std::ptr::null_mut(), CLEF_LOG_INFO, c"hello".as_ptr());
            (HOST.log)(raw, 99, std::ptr::null());
        }
        assert!(h.service_error.unwrap().contains("save_state/load_state"));
    }
}
