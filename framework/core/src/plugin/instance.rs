//! [`PluginStrategy`]: one plugin instance behind the core's [`Strategy`] trait.

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use clef_abi::{ClefCtx, ClefTaskInfo, CLEF_ERROR, CLEF_OK, CLEF_PANIC};

use crate::scenario::Task;
use crate::strategy::{Batch, Ctx, Strategy, StrategyResult};

use super::host::{CurrentPlugin, HostCtx, HOST};
use super::load::LoadedPlugin;

/// A plugin hook (or `create`) that failed: names the plugin and the hook.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin `{plugin}` {} in {hook}: {message}", if *.panicked { "panicked" } else { "failed" })]
pub struct PluginError {
    /// The plugin's name.
    pub plugin: String,
    /// The hook (`create`, `after_backward` ...).
    pub hook: &'static str,
    /// True if the plugin reported a caught panic (`CLEF_PANIC`).
    pub panicked: bool,
    /// The status the plugin returned.
    pub status: i32,
    /// The plugin's `last_error` message, plus the last refused host service if any.
    pub message: String,
}

/// A live instance of a plugin strategy. Destroyed (`destroy`) when dropped.
pub struct PluginStrategy {
    plugin: &'static LoadedPlugin,
    inst: *mut c_void,
    /// Values reported with the `report` service and not yet taken: `(task, key, value)`.
    reports: Vec<(usize, String, f64)>,
}

// SAFETY: the ABI allows an instance to be used from any thread as long as its calls never
// overlap; `PluginStrategy` needs `&mut self` for every hook and is not `Sync`, so calls are
// serialised by the borrow checker.
unsafe impl Send for PluginStrategy {}

impl std::fmt::Debug for PluginStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginStrategy")
            .field("plugin", &self.plugin.info.name)
            .field("path", &self.plugin.info.path)
            .finish()
    }
}

/// Copies a plugin's `last_error` message.
fn last_error(plugin: &'static LoadedPlugin, inst: *mut c_void) -> Option<String> {
    let f = plugin.desc.last_error?;
    // SAFETY: `last_error` takes an instance of this plugin (or null) and returns null or a
    // NUL-terminated string valid until the next call into the plugin on this thread; it is
    // copied at once.
    let p: *const c_char = unsafe { f(inst) };
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (ABI), copied before any other call.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn status_error(
    plugin: &'static LoadedPlugin,
    inst: *mut c_void,
    hook: &'static str,
    status: i32,
    service_error: Option<String>,
) -> PluginError {
    let mut message = last_error(plugin, inst).unwrap_or_else(|| "(no message)".into());
    if status != CLEF_ERROR && status != CLEF_PANIC {
        message.push_str(&format!(" (status {status})"));
    }
    if let Some(s) = service_error {
        message.push_str(&format!(" [last refused host service: {s}]"));
    }
    PluginError {
        plugin: plugin.info.name.clone(),
        hook,
        panicked: status == CLEF_PANIC,
        status,
        message,
    }
}

impl PluginStrategy {
    /// Creates an instance from the validated, complete `hparams` TOML document.
    pub fn create(plugin: &'static LoadedPlugin, config_toml: &str) -> Result<Self, PluginError> {
        let fail = |message: String| PluginError {
            plugin: plugin.info.name.clone(),
            hook: "create",
            panicked: false,
            status: CLEF_ERROR,
            message,
        };
        let Some(create) = plugin.desc.create else {
            return Err(fail("the plugin has no `create` function".into()));
        };
        let text = CString::new(config_toml)
            .map_err(|_| fail("the hparams table contains a NUL byte".into()))?;
        let mut inst: *mut c_void = std::ptr::null_mut();
        let _current = CurrentPlugin::enter(&plugin.info.name);
        // SAFETY: `HOST` is a static table valid forever; `text` is NUL-terminated and lives
        // for the call; `inst` is a writable out pointer. Plugins must not unwind (the SDK
        // catches panics).
        let status = unsafe { create(&HOST, text.as_ptr(), &mut inst) };
        if status != CLEF_OK {
            return Err(status_error(
                plugin,
                std::ptr::null_mut(),
                "create",
                status,
                None,
            ));
        }
        tracing::debug!(plugin = plugin.info.name, "created plugin instance");
        Ok(PluginStrategy {
            plugin,
            inst,
            reports: Vec::new(),
        })
    }

    /// What the plugin declares about itself.
    pub fn plugin(&self) -> &'static LoadedPlugin {
        self.plugin
    }

    /// Calls one hook: builds the host context, runs `call` (which returns `None` if the hook
    /// is absent), merges rows appended in `before_batch`, and turns a failure status into a
    /// [`PluginError`].
    fn run(
        &mut self,
        hook: &'static str,
        ctx: Option<&mut Ctx<'_>>,
        mut batch: Option<&mut Batch>,
        call: impl FnOnce(*mut c_void, *mut ClefCtx) -> Option<i32>,
    ) -> StrategyResult {
        let num_outputs = ctx.as_ref().map(|c| c.scenario.num_outputs);
        let task = ctx.as_ref().map(|c| c.task);
        let name: &'static str = &self.plugin.info.name;
        let mut host = HostCtx::new(name, ctx, batch.as_deref_mut());
        let raw = host.as_raw();
        let _current = CurrentPlugin::enter(name);
        let Some(status) = call(self.inst, raw) else {
            return Ok(());
        };
        if let Some(task) = task {
            self.reports.extend(
                host.take_reports()
                    .into_iter()
                    .map(|(key, value)| (task, key, value)),
            );
        }
        if status != CLEF_OK {
            let service_error = host.take_service_error();
            return Err(status_error(self.plugin, self.inst, hook, status, service_error).into());
        }
        let appended = host.take_appended();
        if let (Some(b), Some(c)) = (batch, num_outputs) {
            for (x, targets, masks) in appended {
                b.append_rows(&x, &targets, masks.as_deref(), c);
            }
        }
        Ok(())
    }

    fn task_info_hook(
        &mut self,
        hook: &'static str,
        ctx: &mut Ctx<'_>,
        f: Option<unsafe extern "C" fn(*mut c_void, *mut ClefCtx, *const ClefTaskInfo) -> i32>,
    ) -> StrategyResult {
        let Some(f) = f else { return Ok(()) };
        self.run(hook, Some(ctx), None, |inst, raw| {
            // SAFETY: `raw` points to the live `HostCtx` built by `run` for this call.
            let host = unsafe { &mut *raw.cast::<HostCtx>() };
            let info = match host.task_info() {
                Ok(i) => i,
                Err(e) => {
                    host.set_service_error(format!("task_info: {e:?}"));
                    return Some(CLEF_ERROR);
                }
            };
            // SAFETY: a hook of this plugin called with its instance, this call's ctx and a
            // task info (with `units` inside the ctx) valid for the call.
            Some(unsafe { f(inst, raw, &info) })
        })
    }
}

impl Drop for PluginStrategy {
    fn drop(&mut self) {
        if let Some(destroy) = self.plugin.desc.destroy {
            let _current = CurrentPlugin::enter(&self.plugin.info.name);
            let inst = self.inst;
            // SAFETY: `inst` came from this plugin's `create` and is destroyed exactly once;
            // no other call on it is running (we hold `&mut self`).
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { destroy(inst) }));
            if r.is_err() {
                tracing::error!(plugin = self.plugin.info.name, "destroy panicked");
            }
        }
    }
}

/// The host's sink for `save_state`: appends to a `Vec<u8>`.
///
/// # Safety
/// `writer` must be the `Vec<u8>` passed by [`PluginStrategy::save_state`]; `data` must hold
/// `len` readable bytes.
unsafe extern "C" fn write_sink(writer: *mut c_void, data: *const u8, len: usize) -> i32 {
    let body = || {
        if writer.is_null() || (data.is_null() && len > 0) {
            return clef_abi::CLEF_INVALID_ARGUMENT;
        }
        if len == 0 {
            return CLEF_OK;
        }
        // SAFETY: `writer` is the `Vec<u8>` save_state passed (caller).
        let out = unsafe { &mut *writer.cast::<Vec<u8>>() };
        // SAFETY: `len` readable bytes during the call (caller).
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(data, len) });
        CLEF_OK
    };
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(CLEF_ERROR)
}

impl Strategy for PluginStrategy {
    fn name(&self) -> &str {
        &self.plugin.info.name
    }

    fn take_reports(&mut self) -> Vec<(usize, String, f64)> {
        std::mem::take(&mut self.reports)
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> StrategyResult {
        let f = self.plugin.desc.on_model_built;
        self.run("on_model_built", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw) })
        })
    }

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, _task: &Task) -> StrategyResult {
        let f = self.plugin.desc.on_task_start;
        self.task_info_hook("on_task_start", ctx, f)
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>, batch: &mut Batch) -> StrategyResult {
        let f = self.plugin.desc.before_batch;
        self.run("before_batch", Some(ctx), Some(batch), |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw) })
        })
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, loss: f32) -> StrategyResult {
        let f = self.plugin.desc.after_backward;
        self.run("after_backward", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw, loss) })
        })
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> StrategyResult {
        let f = self.plugin.desc.after_step;
        self.run("after_step", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw) })
        })
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &Task) -> StrategyResult {
        let f = self.plugin.desc.on_task_end;
        self.task_info_hook("on_task_end", ctx, f)
    }

    fn before_eval(&mut self, ctx: &mut Ctx<'_>, task: Option<usize>) -> StrategyResult {
        let f = self.plugin.desc.before_eval;
        let task = task.map_or(-1, |t| t as i64);
        self.run("before_eval", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw, task) })
        })
    }

    fn after_eval(&mut self, ctx: &mut Ctx<'_>) -> StrategyResult {
        let f = self.plugin.desc.after_eval;
        self.run("after_eval", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance and this call's ctx.
            f.map(|f| unsafe { f(inst, raw) })
        })
    }

    /// Runs the plugin's `save_state` outside training: its ctx has no training context, so
    /// services other than `log` are refused with `CLEF_NOT_ALLOWED`.
    fn save_state(&self) -> StrategyResult<Vec<u8>> {
        let Some(f) = self.plugin.desc.save_state else {
            return Ok(Vec::new());
        };
        let name: &'static str = &self.plugin.info.name;
        let mut host = HostCtx::new(name, None, None);
        let raw = host.as_raw();
        let _current = CurrentPlugin::enter(name);
        let mut out: Vec<u8> = Vec::new();
        let writer = (&mut out as *mut Vec<u8>).cast::<c_void>();
        // SAFETY: this plugin's hook with its instance, a live ctx, and a sink valid for the
        // call. The ABI lets one instance be called by one thread at a time; `save_state` takes
        // `&self` but `PluginStrategy` is not `Sync`, so no other call can overlap.
        let status = unsafe { f(self.inst, raw, write_sink, writer) };
        if status != CLEF_OK {
            let service_error = host.take_service_error();
            return Err(
                status_error(self.plugin, self.inst, "save_state", status, service_error).into(),
            );
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &[u8]) -> StrategyResult {
        let Some(f) = self.plugin.desc.load_state else {
            return Ok(());
        };
        let name: &'static str = &self.plugin.info.name;
        let mut host = HostCtx::new(name, None, None);
        let raw = host.as_raw();
        let _current = CurrentPlugin::enter(name);
        // SAFETY: this plugin's hook with its instance, a live ctx, and `state` readable for
        // the call.
        let status = unsafe { f(self.inst, raw, state.as_ptr(), state.len()) };
        if status != CLEF_OK {
            let service_error = host.take_service_error();
            return Err(
                status_error(self.plugin, self.inst, "load_state", status, service_error).into(),
            );
        }
        Ok(())
    }
}
