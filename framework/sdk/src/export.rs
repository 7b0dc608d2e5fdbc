//! The C entry points that [`export_plugin!`](crate::export_plugin) instantiates for a
//! [`Strategy`]: the descriptor, `create` / `destroy` / `last_error`, and one `extern "C"`
//! function per hook. Every function catches panics and turns errors into status codes and
//! `last_error` messages.
//!
//! The hook functions are generic over the strategy; the macro's entry point monomorphises
//! them in the plugin crate, so each plugin library gets its own copies.

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::{Once, OnceLock};

use clef_abi::{
    ClefCtx, ClefHost, ClefHparam, ClefLossInput, ClefPluginDescriptor, ClefTaskInfo, ClefWriteFn,
    CLEF_ABI_MAJOR, CLEF_ABI_MINOR, CLEF_ERROR, CLEF_HOST_SIZE_V1_0, CLEF_HPARAM_BOOL,
    CLEF_HPARAM_CHOICE, CLEF_HPARAM_FLOAT, CLEF_HPARAM_INT, CLEF_HPARAM_LOG_SCALE,
    CLEF_HPARAM_NEEDS_PAST_TASKS, CLEF_LOG_ERROR, CLEF_OK, CLEF_PANIC,
};

use crate::checkpoint::StateMode;
use crate::ctx::{Ctx, TaskInfo};
use crate::error::{Error, Result};
use crate::hparam::{validate_schema, HParamKind};
use crate::logging::{self, CallGuard, Current};
use crate::loss::LossBatch;
use crate::values::{HParams, Values};
use crate::Strategy;

// ---- descriptor ------------------------------------------------------------------------------

/// Storage for a plugin's descriptor; the export macro declares one `static` per plugin.
pub struct DescriptorCell(OnceLock<Exported>);

impl DescriptorCell {
    /// An empty cell (filled at the first call of the entry point).
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self(OnceLock::new())
    }
}

/// The descriptor. Its strings, schema and choice lists are leaked on purpose (built once per
/// plugin and needed for the life of the library): leaked allocations are never moved or
/// freed, so the raw pointers into them stay valid, which storing them in owned `CString`s
/// and `Vec`s that are then moved does not guarantee (Miri flags that under Stacked Borrows).
struct Exported {
    desc: ClefPluginDescriptor,
}

// SAFETY: `Exported` is immutable after construction; its raw pointers refer to leaked heap
// data that is never mutated or freed, so sharing it between threads is sound.
unsafe impl Send for Exported {}
// SAFETY: as above.
unsafe impl Sync for Exported {}

/// A C string for the descriptor; interior NUL bytes (rejected by `validate_schema`) are
/// replaced rather than panicking.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).unwrap_or_default()
}

/// Builds the descriptor of `S` (its schema, strings and hook pointers).
fn build<S: Strategy>(crate_version: &'static str) -> Exported {
    let keep = |s: &str| -> *const c_char { Box::leak(c_string(s).into_boxed_c_str()).as_ptr() };
    let name = keep(S::NAME);
    let version = keep(S::VERSION.unwrap_or(crate_version));
    let description = keep(S::DESCRIPTION);

    let schema = S::Config::schema();
    let mut hparams = Vec::with_capacity(schema.len());
    for h in &schema {
        let (kind, default_value, min, max, choices, n_choices) = match h.kind() {
            HParamKind::Float { default, min, max } => {
                (CLEF_HPARAM_FLOAT, *default, *min, *max, ptr::null(), 0)
            }
            HParamKind::Int { default, min, max } => {
                let bound = |v: i64, unbounded: f64| match v {
                    i64::MIN | i64::MAX => unbounded,
                    v => v as f64,
                };
                (
                    CLEF_HPARAM_INT,
                    *default as f64,
                    bound(*min, f64::NEG_INFINITY),
                    bound(*max, f64::INFINITY),
                    ptr::null(),
                    0,
                )
            }
            HParamKind::Bool { default } => (
                CLEF_HPARAM_BOOL,
                if *default { 1.0 } else { 0.0 },
                0.0,
                1.0,
                ptr::null(),
                0,
            ),
            HParamKind::Choice { default, choices } => {
                let index = choices.iter().position(|c| c == default).unwrap_or(0);
                let list: &'static [*const c_char] =
                    Box::leak(choices.iter().map(|c| keep(c)).collect());
                let (p, n) = (list.as_ptr(), list.len());
                (
                    CLEF_HPARAM_CHOICE,
                    index as f64,
                    0.0,
                    (n.max(1) - 1) as f64,
                    p,
                    n,
                )
            }
        };
        hparams.push(ClefHparam {
            name: keep(h.name()),
            kind,
            flags: if h.is_log_scale() {
                CLEF_HPARAM_LOG_SCALE
            } else {
                0
            } | if h.is_needs_past_tasks() {
                CLEF_HPARAM_NEEDS_PAST_TASKS
            } else {
                0
            },
            default_value,
            min,
            max,
            choices,
            n_choices,
            doc: keep(h.doc()),
        });
    }
    let n_hparams = hparams.len();
    let hparams: &'static [ClefHparam] = Box::leak(hparams.into_boxed_slice());
    let hparams_ptr = if hparams.is_empty() {
        ptr::null()
    } else {
        hparams.as_ptr()
    };

    let desc = ClefPluginDescriptor {
        abi_major: CLEF_ABI_MAJOR,
        abi_minor: CLEF_ABI_MINOR,
        struct_size: std::mem::size_of::<ClefPluginDescriptor>() as u32,
        name,
        version,
        description,
        hparams: hparams_ptr,
        n_hparams,
        create: Some(create::<S>),
        destroy: Some(destroy::<S>),
        last_error: Some(last_error::<S>),
        on_model_built: Some(on_model_built::<S>),
        on_task_start: Some(on_task_start::<S>),
        before_batch: Some(before_batch::<S>),
        after_backward: Some(after_backward::<S>),
        after_step: Some(after_step::<S>),
        on_task_end: Some(on_task_end::<S>),
        before_eval: Some(before_eval::<S>),
        after_eval: Some(after_eval::<S>),
        // Only a strategy that declares its state exports these: without them the host turns
        // checkpoints off for the trial (with a warning) instead of losing the state.
        save_state: if <S::State as StateMode<S>>::EXPORTED {
            Some(save_state::<S>)
        } else {
            None
        },
        load_state: if <S::State as StateMode<S>>::EXPORTED {
            Some(load_state::<S>)
        } else {
            None
        },
        create_typed: None,
        backbones: clef_abi::CLEF_BACKBONE_MLP
            | if S::CONV_BACKBONES {
                clef_abi::CLEF_BACKBONE_CONV
            } else {
                0
            },
        reserved: 0,
        loss: if S::CUSTOM_LOSS {
            Some(loss::<S>)
        } else {
            None
        },
        predict: if S::PREDICTS {
            Some(predict::<S>)
        } else {
            None
        },
    };
    Exported { desc }
}

/// The body of the generated `clef_plugin_entry_v1`: builds the descriptor once (in `cell`)
/// and returns it. `crate_version` is the plugin crate's `CARGO_PKG_VERSION`, used unless the
/// strategy sets [`Strategy::VERSION`]. Returns null if building the descriptor panicked.
pub fn entry<S: Strategy>(
    cell: &'static DescriptorCell,
    crate_version: &'static str,
) -> *const ClefPluginDescriptor {
    match panic::catch_unwind(|| &cell.0.get_or_init(|| build::<S>(crate_version)).desc) {
        Ok(desc) => desc,
        Err(payload) => {
            drop_payload(payload);
            ptr::null()
        }
    }
}

// ---- errors and panics -----------------------------------------------------------------------

thread_local! {
    /// `last_error(null)`: the message of a failed `create` (or a call with a null instance).
    static THREAD_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    /// The message the quiet panic hook recorded for the panic being caught on this thread.
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn set_thread_error(message: Option<String>) {
    let _ = THREAD_ERROR.try_with(|e| *e.borrow_mut() = message.map(|m| c_string(&m)));
}

/// The text of a panic payload (`&str` or `String`; anything else is "unknown payload").
fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-string panic payload)"
    }
}

/// Drops a caught panic payload without letting a panicking `Drop` escape.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(nested) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(nested);
    }
}

/// Installs (once per plugin library) a panic hook that stays quiet for panics inside plugin
/// calls: it records `panicked at <file:line:col>: <message>` for `last_error` and sends it to
/// the host's log at error level instead of printing to stderr. Other panics (e.g. on the
/// plugin's own threads) go to the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !logging::in_plugin_call() {
                previous(info);
                return;
            }
            let text = payload_text(info.payload());
            let message = match info.location() {
                Some(l) => format!(
                    "panicked at {}:{}:{}: {text}",
                    l.file(),
                    l.line(),
                    l.column()
                ),
                None => format!("panicked: {text}"),
            };
            logging::forward(CLEF_LOG_ERROR, &message);
            let _ = PANIC_MESSAGE.try_with(|m| *m.borrow_mut() = Some(message));
        }));
    });
}

/// Runs `f` as a plugin call: routes logs and panics for `current`, catches panics, and turns
/// the outcome into `Ok` or `(status, message)`.
fn guarded<T>(current: Current, f: impl FnOnce() -> Result<T>) -> Result<T, (i32, String)> {
    let _guard = CallGuard::enter(current);
    let _ = PANIC_MESSAGE.try_with(|m| m.borrow_mut().take());
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err((CLEF_ERROR, format!("{error:#}"))),
        Err(payload) => {
            let message = PANIC_MESSAGE
                .try_with(|m| m.borrow_mut().take())
                .ok()
                .flatten()
                .unwrap_or_else(|| format!("panicked: {}", payload_text(&*payload)));
            drop_payload(payload);
            Err((CLEF_PANIC, message))
        }
    }
}

// ---- instances -------------------------------------------------------------------------------

/// What `create` returns to the host (as `*mut c_void`).
struct Instance<S> {
    strategy: S,
    host: *const ClefHost,
    last_error: Option<CString>,
}

/// The strategy inside an instance (unit tests only).
///
/// # Safety
/// `inst` must be a live instance created by `create::<S>`, not used mutably meanwhile.
#[cfg(test)]
pub(crate) unsafe fn strategy_ref<'a, S: Strategy>(inst: *mut c_void) -> &'a S {
    // SAFETY: caller.
    unsafe { &(*inst.cast::<Instance<S>>()).strategy }
}

/// `create`: checks the host table, parses the config and builds the strategy.
///
/// # Safety
/// `host` must be null or a valid host table that outlives the instance; `config_toml` null or
/// a NUL-terminated string; `out` null or writable.
pub unsafe extern "C" fn create<S: Strategy>(
    host: *const ClefHost,
    config_toml: *const c_char,
    out: *mut *mut c_void,
) -> i32 {
    install_panic_hook();
    let current = Current {
        name: S::NAME,
        host: ptr::null(),
        ctx: ptr::null_mut(),
    };
    let result = guarded(current, || {
        if out.is_null() {
            return Err(Error::msg("create: the output pointer is null"));
        }
        if host.is_null() {
            return Err(Error::msg("create: the host table is null"));
        }
        // SAFETY: `host` is non-null and, by the ABI, a valid table whose first fields are
        // `{abi_major, abi_minor, struct_size}`; only those are read before they are checked.
        let (major, minor, size) =
            unsafe { ((*host).abi_major, (*host).abi_minor, (*host).struct_size) };
        if major != CLEF_ABI_MAJOR {
            return Err(Error::msg(format!(
                "strategy `{}` needs host ABI {CLEF_ABI_MAJOR}.x but the host speaks \
                 {major}.{minor}",
                S::NAME
            )));
        }
        // Services added after 1.0 (`report`) are optional: `Ctx` checks `struct_size`
        // before calling them, so a 1.0 host's table is enough.
        let needed = CLEF_HOST_SIZE_V1_0;
        if (size as usize) < needed {
            return Err(Error::msg(format!(
                "strategy `{}` was built against host ABI {CLEF_ABI_MAJOR}.{CLEF_ABI_MINOR} \
                 and needs at least the {needed}-byte service table of ABI 1.0, but the \
                 host's table has {size} bytes (ABI {major}.{minor})",
                S::NAME
            )));
        }
        logging::init(host, S::NAME);
        // From here on, logs (e.g. in `S::new`) reach the host.
        let _host_guard = CallGuard::enter(Current { host, ..current });

        let schema = S::Config::schema();
        validate_schema(S::NAME, &schema)?;
        if config_toml.is_null() {
            return Err(Error::msg("create: the config string is null"));
        }
        // SAFETY: non-null and NUL-terminated by the ABI; only borrowed during this call.
        let text = unsafe { CStr::from_ptr(config_toml) }
            .to_str()
            .map_err(|e| Error::msg(format!("the config is not valid UTF-8: {e}")))?;
        let config = Values::from_toml(&schema, text)
            .and_then(|values| S::Config::from_values(&values))
            .map_err(|e| e.context(format!("invalid hparams for strategy `{}`", S::NAME)))?;
        let strategy = S::new(config)?;
        let instance = Box::new(Instance {
            strategy,
            host,
            last_error: None,
        });
        // SAFETY: `out` is non-null and writable (ABI).
        unsafe { *out = Box::into_raw(instance).cast::<c_void>() };
        Ok(())
    });
    match result {
        Ok(()) => {
            set_thread_error(None);
            CLEF_OK
        }
        Err((status, message)) => {
            set_thread_error(Some(message));
            status
        }
    }
}

/// `destroy`: drops the instance (a panic in `Drop` is logged and swallowed).
///
/// # Safety
/// `inst` must be null or a pointer `create::<S>` returned, not yet destroyed, and no other
/// call on it may be running.
pub unsafe extern "C" fn destroy<S: Strategy>(inst: *mut c_void) {
    if inst.is_null() {
        return;
    }
    let inst = inst.cast::<Instance<S>>();
    // SAFETY: `inst` came from `Box::into_raw` in `create::<S>` and is destroyed only once.
    let host = unsafe { (*inst).host };
    let current = Current {
        name: S::NAME,
        host,
        ctx: ptr::null_mut(),
    };
    let _ = guarded(current, || {
        // SAFETY: as above; ownership returns to the Box, which drops the strategy.
        drop(unsafe { Box::from_raw(inst) });
        Ok(())
    });
}

/// `last_error`: the instance's last message, or this thread's for a null instance; null if
/// there is none. Valid until the next call into the plugin on this thread (or instance).
///
/// # Safety
/// `inst` must be null or a live instance of `S`, with no other call on it running.
pub unsafe extern "C" fn last_error<S: Strategy>(inst: *mut c_void) -> *const c_char {
    if inst.is_null() {
        return THREAD_ERROR
            .try_with(|e| e.borrow().as_ref().map_or(ptr::null(), |m| m.as_ptr()))
            .unwrap_or(ptr::null());
    }
    // SAFETY: a live instance created by `create::<S>`, not used concurrently (ABI).
    let instance = unsafe { &*inst.cast::<Instance<S>>() };
    instance
        .last_error
        .as_ref()
        .map_or(ptr::null(), |m| m.as_ptr())
}

/// Runs one hook on an instance: builds the [`Ctx`], catches panics, records the message.
///
/// # Safety
/// `inst` must be null or a live instance of `S` not used concurrently; `ctx` the context the
/// host passed to this hook.
unsafe fn hook<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    f: impl FnOnce(&mut S, &mut Ctx<'_>) -> Result<()>,
) -> i32 {
    if inst.is_null() {
        set_thread_error(Some(format!(
            "strategy `{}`: hook called with a null instance",
            S::NAME
        )));
        return CLEF_ERROR;
    }
    // SAFETY: `inst` came from `create::<S>` and the host never runs two calls on one
    // instance at once (ABI threading rules), so this is the only reference.
    let instance = unsafe { &mut *inst.cast::<Instance<S>>() };
    if ctx.is_null() {
        instance.last_error = Some(c_string("hook called with a null context"));
        return CLEF_ERROR;
    }
    let host = instance.host;
    let strategy = &mut instance.strategy;
    let current = Current {
        name: S::NAME,
        host,
        ctx,
    };
    let result = guarded(current, || {
        // SAFETY: `host` was checked non-null at `create` and is valid for the life of the
        // instance (ABI); `ctx` is this hook's context; the Ctx is dropped before we return.
        let mut c = unsafe { Ctx::new(&*host, ctx) };
        f(strategy, &mut c)
    });
    match result {
        Ok(()) => {
            instance.last_error = None;
            CLEF_OK
        }
        Err((status, message)) => {
            instance.last_error = Some(c_string(&message));
            status
        }
    }
}

/// Copies a host task info argument.
///
/// # Safety
/// `task` must be null or a valid task info for the duration of the hook.
unsafe fn task_arg(task: *const ClefTaskInfo) -> Result<TaskInfo> {
    if task.is_null() {
        return Err(Error::msg("the host passed a null task info"));
    }
    // SAFETY: non-null and valid during the hook (caller).
    unsafe { TaskInfo::from_raw(&*task) }
}

/// `on_model_built` hook.
///
/// # Safety
/// As for every hook: `inst` from `create::<S>`, `ctx` the hook's context (ABI rules).
pub unsafe extern "C" fn on_model_built<S: Strategy>(inst: *mut c_void, ctx: *mut ClefCtx) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.on_model_built(c)) }
}

/// `on_task_start` hook.
///
/// # Safety
/// As for every hook; `task` valid during the call.
pub unsafe extern "C" fn on_task_start<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    task: *const ClefTaskInfo,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        // SAFETY: `task` is valid during the hook (caller).
        let task = unsafe { task_arg(task) }?;
        s.on_task_start(c, &task)
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}

/// `before_batch` hook.
///
/// # Safety
/// As for every hook.
pub unsafe extern "C" fn before_batch<S: Strategy>(inst: *mut c_void, ctx: *mut ClefCtx) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.before_batch(c)) }
}

/// `after_backward` hook.
///
/// # Safety
/// As for every hook.
pub unsafe extern "C" fn after_backward<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    loss: f32,
) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.after_backward(c, loss)) }
}

/// `after_step` hook.
///
/// # Safety
/// As for every hook.
pub unsafe extern "C" fn after_step<S: Strategy>(inst: *mut c_void, ctx: *mut ClefCtx) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.after_step(c)) }
}

/// `on_task_end` hook.
///
/// # Safety
/// As for every hook; `task` valid during the call.
pub unsafe extern "C" fn on_task_end<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    task: *const ClefTaskInfo,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        // SAFETY: `task` is valid during the hook (caller).
        let task = unsafe { task_arg(task) }?;
        s.on_task_end(c, &task)
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}

/// `before_eval` hook (`task < 0` means the setting hides the task id).
///
/// # Safety
/// As for every hook.
pub unsafe extern "C" fn before_eval<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    task: i64,
) -> i32 {
    let task = usize::try_from(task).ok();
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.before_eval(c, task)) }
}

/// `after_eval` hook.
///
/// # Safety
/// As for every hook.
pub unsafe extern "C" fn after_eval<S: Strategy>(inst: *mut c_void, ctx: *mut ClefCtx) -> i32 {
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, |s, c| s.after_eval(c)) }
}

/// `loss` hook (ABI 1.6): the strategy's loss over the batch.
///
/// # Safety
/// As for every hook; `input` a valid loss input, `cotangent` `rows * num_outputs` writable
/// floats and `loss_out` a writable float, during the call.
pub unsafe extern "C" fn loss<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    input: *const ClefLossInput,
    cotangent: *mut f32,
    loss_out: *mut f32,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        if input.is_null() || loss_out.is_null() {
            return Err(Error::msg("loss: the host passed a null input or loss_out"));
        }
        // SAFETY: non-null, valid during the hook (caller).
        let input = unsafe { &*input };
        // SAFETY: the input's arrays are valid during the hook (caller).
        let batch = unsafe { LossBatch::from_raw(input) }?;
        let n = batch.rows * batch.num_outputs;
        let cot: &mut [f32] = if n == 0 {
            &mut []
        } else if cotangent.is_null() {
            return Err(Error::msg("loss: the host passed a null cotangent"));
        } else {
            // SAFETY: `rows * num_outputs` writable floats, host-owned, valid during the hook.
            unsafe { std::slice::from_raw_parts_mut(cotangent, n) }
        };
        let value = s.loss(c, &batch, cot)?;
        // SAFETY: non-null and writable (caller).
        unsafe { loss_out.write(value) };
        Ok(())
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}

/// `predict` hook (ABI 1.6): the strategy's scores for evaluation inputs.
///
/// # Safety
/// As for every hook; `x` `rows * input_dim` readable floats and `out` `out_len` writable
/// floats during the call.
pub unsafe extern "C" fn predict<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    task: i64,
    x: *const f32,
    rows: i64,
    out: *mut f32,
    out_len: i64,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        let info = c.task_info()?;
        let (Ok(rows), Ok(len)) = (usize::try_from(rows), usize::try_from(out_len)) else {
            return Err(Error::msg("predict: negative rows or out_len"));
        };
        if len != rows * info.num_outputs {
            return Err(Error::msg(format!(
                "predict: out_len {len} is not rows ({rows}) * num_outputs ({})",
                info.num_outputs
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        if x.is_null() || out.is_null() {
            return Err(Error::msg("predict: the host passed a null buffer"));
        }
        // SAFETY: `rows * input_dim` readable inputs during the hook (caller).
        let xs = unsafe { std::slice::from_raw_parts(x, rows * info.input_dim) };
        // SAFETY: `out_len` writable floats during the hook (caller).
        let dst = unsafe { std::slice::from_raw_parts_mut(out, len) };
        s.predict(c, usize::try_from(task).ok(), xs, rows, dst)
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}

/// `save_state` hook: passes the strategy's state, in the SDK's envelope
/// ([`crate::state::seal`]), to `write(writer, ..)` in one call.
///
/// # Safety
/// As for every hook; `write` and `writer` valid during the call.
pub unsafe extern "C" fn save_state<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    write: ClefWriteFn,
    writer: *mut c_void,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        let payload = <S::State as StateMode<S>>::save(s, c)?;
        let bytes = crate::state::seal(S::NAME, S::STATE_VERSION, &payload);
        // SAFETY: the host's writer callback and sink are valid during the hook; `bytes`
        // is live for the call.
        let status = unsafe { write(writer, bytes.as_ptr(), bytes.len()) };
        if status != CLEF_OK {
            return Err(Error::msg(format!(
                "the host's state writer failed (status {status}) on {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}

/// `load_state` hook: opens the SDK's envelope and restores the declared state; an empty state
/// is the ABI's "fresh instance" (nothing is loaded).
///
/// # Safety
/// As for every hook; `data` null with `len == 0`, or `len` readable bytes, during the call.
pub unsafe extern "C" fn load_state<S: Strategy>(
    inst: *mut c_void,
    ctx: *mut ClefCtx,
    data: *const u8,
    len: usize,
) -> i32 {
    let f = move |s: &mut S, c: &mut Ctx<'_>| {
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if data.is_null() {
            return Err(Error::msg(format!(
                "load_state: the host passed a null buffer of {len} bytes"
            )));
        } else {
            // SAFETY: `len` readable bytes, host-owned, valid during the hook (caller).
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        if bytes.is_empty() {
            // The ABI's "fresh instance": there is nothing to restore.
            return Ok(());
        }
        let payload = crate::state::open(S::NAME, S::STATE_VERSION, bytes)?;
        <S::State as StateMode<S>>::load(s, c, payload)
    };
    // SAFETY: forwarded from the caller.
    unsafe { hook::<S>(inst, ctx, f) }
}
