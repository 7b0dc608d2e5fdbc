//! [`PluginStrategy`]: one plugin instance behind the core's [`Strategy`] trait.

use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use clef_abi::{
    ClefCtx, ClefHparamValue, ClefLossInput, ClefTaskInfo, CLEF_ERROR, CLEF_INVALID_ARGUMENT,
    CLEF_NOT_ALLOWED, CLEF_OK, CLEF_PANIC, CLEF_UNSUPPORTED,
};

use clef_data::scenario::Task;
use clef_engine::strategy::{Batch, Ctx, Strategy, StrategyResult};

use super::host::{CurrentPlugin, HostCtx, HOST};
use super::load::LoadedPlugin;
use clef_engine::strategy::HParamKind;

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
    /// The `loss` hook's targets and row masks, reused across steps (no allocation per step).
    loss_targets: Vec<i64>,
    loss_masks: Vec<u8>,
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

/// The `CLEF_*` name of a status code.
fn status_name(status: i32) -> &'static str {
    match status {
        CLEF_OK => "CLEF_OK",
        CLEF_ERROR => "CLEF_ERROR",
        CLEF_PANIC => "CLEF_PANIC",
        CLEF_INVALID_ARGUMENT => "CLEF_INVALID_ARGUMENT",
        CLEF_UNSUPPORTED => "CLEF_UNSUPPORTED",
        CLEF_NOT_ALLOWED => "CLEF_NOT_ALLOWED",
        _ => "not a CLEF_* status",
    }
}

fn status_error(
    plugin: &'static LoadedPlugin,
    inst: *mut c_void,
    hook: &'static str,
    status: i32,
    service_error: Option<String>,
) -> PluginError {
    let code = format!("status {status} {}", status_name(status));
    let mut message = match last_error(plugin, inst) {
        Some(m) if !m.trim().is_empty() => {
            if status != CLEF_ERROR && status != CLEF_PANIC {
                format!("{m} ({code})")
            } else {
                m
            }
        }
        // No message: say so, with the status and where the message was looked for.
        got => {
            let call = if inst.is_null() {
                "last_error(NULL)"
            } else {
                "last_error(inst)"
            };
            let returned = match (plugin.desc.last_error.is_some(), got) {
                (false, _) => "the plugin exports no last_error".to_string(),
                (true, None) => format!("{call} returned NULL"),
                (true, Some(_)) => format!("{call} returned an empty message"),
            };
            let hint = if hook == "create" {
                "; a failing create must leave its message for last_error(NULL)"
            } else {
                ""
            };
            format!("no message ({code}; {returned}{hint})")
        }
    };
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

/// The hyperparameters of `config_toml` (the validated table, every key of the schema) as
/// `create_typed` receives them, in schema order, and the choice strings they point to (which
/// must outlive the call).
fn typed_values(
    plugin: &'static LoadedPlugin,
    config_toml: &str,
) -> Result<(Vec<ClefHparamValue>, Vec<CString>), String> {
    let table: toml::Table = toml::from_str(config_toml)
        .map_err(|e| format!("the resolved hparams table is not valid TOML: {e}"))?;
    let mut values = Vec::with_capacity(plugin.info.hparams.len());
    let mut texts = Vec::new();
    for spec in &plugin.info.hparams {
        let v = table
            .get(&spec.name)
            .ok_or_else(|| format!("hyperparameter `{}` is missing", spec.name))?;
        let wrong = || {
            format!(
                "hyperparameter `{}`: {v} is not a {} value",
                spec.name,
                spec.kind.as_str()
            )
        };
        let number = match (&spec.kind, v) {
            (HParamKind::Float, toml::Value::Float(f)) => *f,
            (HParamKind::Float | HParamKind::Int, toml::Value::Integer(i)) => {
                if i.unsigned_abs() > 1 << 53 {
                    return Err(format!(
                        "hyperparameter `{}`: {i} is beyond 2^53 and cannot be passed exactly \
                         as a typed value",
                        spec.name
                    ));
                }
                *i as f64
            }
            (HParamKind::Int, toml::Value::Float(f)) if f.fract() == 0.0 => *f,
            (HParamKind::Bool, toml::Value::Boolean(b)) => f64::from(u8::from(*b)),
            (HParamKind::Choice(choices), toml::Value::String(s)) => {
                let i = choices.iter().position(|c| c == s).ok_or_else(wrong)?;
                let text = CString::new(s.as_str()).map_err(|_| wrong())?;
                values.push(ClefHparamValue {
                    number: i as f64,
                    text: text.as_ptr(),
                });
                // The pointer stays valid when the `CString` moves (its bytes are on the heap).
                texts.push(text);
                continue;
            }
            _ => return Err(wrong()),
        };
        values.push(ClefHparamValue {
            number,
            text: std::ptr::null(),
        });
    }
    Ok((values, texts))
}

impl PluginStrategy {
    /// Creates an instance from the validated, complete `hparams` TOML document: through the
    /// plugin's `create_typed` (ABI 1.3) with the values also typed in schema order when it has
    /// one, else through `create`.
    pub fn create(plugin: &'static LoadedPlugin, config_toml: &str) -> Result<Self, PluginError> {
        let fail = |message: String| PluginError {
            plugin: plugin.info.name.clone(),
            hook: "create",
            panicked: false,
            status: CLEF_ERROR,
            message,
        };
        let text = CString::new(config_toml)
            .map_err(|_| fail("the hparams table contains a NUL byte".into()))?;
        let mut inst: *mut c_void = std::ptr::null_mut();
        let status = if let Some(create_typed) = plugin.desc.create_typed {
            // ABI 1.3: the values typed, in schema order, besides the TOML text.
            let (values, _texts) = typed_values(plugin, config_toml).map_err(fail)?;
            let ptr = if values.is_empty() {
                std::ptr::null()
            } else {
                values.as_ptr()
            };
            let _current = CurrentPlugin::enter(&plugin.info.name);
            // SAFETY: as for `create` below; `ptr` is null or `values.len()` entries whose
            // choice strings (`_texts`) live until the end of this block.
            unsafe { create_typed(&HOST, text.as_ptr(), ptr, values.len(), &mut inst) }
        } else if let Some(create) = plugin.desc.create {
            let _current = CurrentPlugin::enter(&plugin.info.name);
            // SAFETY: `HOST` is a static table valid forever; `text` is NUL-terminated and
            // lives for the call; `inst` is a writable out pointer. Plugins must not unwind
            // (the SDK catches panics).
            unsafe { create(&HOST, text.as_ptr(), &mut inst) }
        } else {
            return Err(fail(
                "the plugin has no `create` function (nor `create_typed`)".into(),
            ));
        };
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
            loss_targets: Vec::new(),
            loss_masks: Vec::new(),
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

    /// A [`PluginError`] already names the plugin and the hook: kept as it is.
    fn failure_message(&self, hook: &str, e: &anyhow::Error) -> String {
        match e.downcast_ref::<PluginError>() {
            Some(pe) => pe.to_string(),
            None => format!("strategy `{}` failed in {hook}: {e:#}", self.name()),
        }
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

    fn custom_loss(&self) -> bool {
        self.plugin.desc.loss.is_some()
    }

    /// The plugin's `loss` (ABI 1.6) over the whole batch: the host materialises every row's
    /// mask and the `i64` targets, the plugin fills the cotangent and the loss (NaN unless it
    /// writes one, which the trainer then reports as a diverged trial).
    fn loss(
        &mut self,
        ctx: &mut Ctx<'_>,
        batch: &Batch,
        logits: &[f32],
        cotangent: &mut [f32],
    ) -> StrategyResult<f32> {
        let Some(f) = self.plugin.desc.loss else {
            anyhow::bail!("plugin `{}` has no loss hook", self.name())
        };
        let c = ctx.scenario.num_outputs;
        let rows = batch.rows();
        let mut targets = std::mem::take(&mut self.loss_targets);
        targets.clear();
        targets.extend(batch.targets.iter().map(|&t| t as i64));
        let mut masks = std::mem::take(&mut self.loss_masks);
        masks.clear();
        for r in 0..rows {
            match batch.row_mask(r, c) {
                Some(m) => masks.extend(m.iter().map(|&b| u8::from(b))),
                None => masks.extend(std::iter::repeat_n(1u8, c)),
            }
        }
        let input = ClefLossInput {
            struct_size: std::mem::size_of::<ClefLossInput>() as u32,
            reserved: 0,
            rows: rows as i64,
            num_outputs: c as i64,
            input_dim: ctx.scenario.input_dim() as i64,
            current_rows: batch.current_rows as i64,
            x: batch.x.as_ptr(),
            logits: logits.as_ptr(),
            targets: targets.as_ptr(),
            masks: masks.as_ptr(),
        };
        let mut loss = f32::NAN;
        let (cot, loss_out) = (cotangent.as_mut_ptr(), &mut loss as *mut f32);
        let result = self.run("loss", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance, this call's ctx, an input whose
            // arrays (batch, logits, targets, masks) outlive the call, a cotangent of `rows *
            // num_outputs` writable floats and a writable loss.
            Some(unsafe { f(inst, raw, &input, cot, loss_out) })
        });
        self.loss_targets = targets;
        self.loss_masks = masks;
        result.map(|()| loss)
    }

    fn predicts(&self) -> bool {
        self.plugin.desc.predict.is_some()
    }

    fn predict(
        &mut self,
        ctx: &mut Ctx<'_>,
        task: Option<usize>,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
    ) -> StrategyResult {
        let Some(f) = self.plugin.desc.predict else {
            anyhow::bail!("plugin `{}` has no predict hook", self.name())
        };
        let task = task.map_or(-1, |t| t as i64);
        let (len, dst) = (out.len() as i64, out.as_mut_ptr());
        self.run("predict", Some(ctx), None, |inst, raw| {
            // SAFETY: this plugin's hook, with its instance, this call's ctx, `rows *
            // input_dim` readable inputs and `len` writable scores, valid for the call.
            Some(unsafe { f(inst, raw, task, x.as_ptr(), rows as i64, dst, len) })
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
    /// services other than `log` are refused with `CLEF_NOT_ALLOWED`. A plugin without
    /// `save_state` cannot be checkpointed: an error (the trainer then turns checkpoints off
    /// for the trial with a warning) rather than an empty state that would resume the trial
    /// with the plugin's state silently gone.
    fn save_state(&self) -> StrategyResult<Vec<u8>> {
        let Some(f) = self.plugin.desc.save_state else {
            return Err(anyhow::anyhow!(
                "plugin `{}` does not save its state (no save_state export): checkpoints are \
                 off for this trial",
                self.plugin.info.name
            ));
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

    /// Runs the plugin's `load_state` (like `save_state`, without a training context). A
    /// non-empty state for a plugin without `load_state` is refused rather than dropped.
    fn load_state(&mut self, state: &[u8]) -> StrategyResult {
        let Some(f) = self.plugin.desc.load_state else {
            if state.is_empty() {
                return Ok(());
            }
            return Err(anyhow::anyhow!(
                "plugin `{}` has no load_state export: it cannot restore its {} saved bytes",
                self.plugin.info.name,
                state.len()
            ));
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::ffi::c_char;
    use std::path::PathBuf;

    use clef_abi::{ClefHost, ClefPluginDescriptor, CLEF_ABI_MAJOR, CLEF_ABI_MINOR};

    use super::*;
    use crate::load::PluginInfo;
    use clef_engine::strategy::{HParamSpec, HValue};

    /// What the fake `create_typed` received: (TOML, [(number, text)]).
    type Received = Option<(String, Vec<(f64, Option<String>)>)>;

    thread_local! {
        static RECEIVED: RefCell<Received> = const { RefCell::new(None) };
        /// What the fake `last_error` returns: `None` = NULL.
        static ERROR_TEXT: RefCell<Option<&'static CStr>> = const { RefCell::new(None) };
    }

    /// A non-null instance pointer the fakes never dereference.
    fn dummy_inst() -> *mut c_void {
        std::ptr::NonNull::<u64>::dangling().as_ptr().cast()
    }

    unsafe extern "C" fn fake_create(
        _host: *const ClefHost,
        _toml: *const c_char,
        out: *mut *mut c_void,
    ) -> i32 {
        // SAFETY: the host passes a writable out pointer.
        unsafe { *out = dummy_inst() };
        CLEF_OK
    }

    unsafe extern "C" fn failing_create(
        _host: *const ClefHost,
        _toml: *const c_char,
        _out: *mut *mut c_void,
    ) -> i32 {
        CLEF_ERROR
    }

    unsafe extern "C" fn recording_create_typed(
        _host: *const ClefHost,
        toml: *const c_char,
        values: *const ClefHparamValue,
        n: usize,
        out: *mut *mut c_void,
    ) -> i32 {
        // SAFETY: the host passes a NUL-terminated TOML text and `n` values whose strings are
        // NUL-terminated, all valid during the call.
        let (text, vals) = unsafe {
            let text = CStr::from_ptr(toml).to_string_lossy().into_owned();
            let vals = std::slice::from_raw_parts(values, n)
                .iter()
                .map(|v| {
                    let t = (!v.text.is_null())
                        .then(|| CStr::from_ptr(v.text).to_string_lossy().into_owned());
                    (v.number, t)
                })
                .collect();
            (text, vals)
        };
        RECEIVED.with(|r| *r.borrow_mut() = Some((text, vals)));
        // SAFETY: writable out pointer.
        unsafe { *out = dummy_inst() };
        CLEF_OK
    }

    unsafe extern "C" fn fake_last_error(_inst: *mut c_void) -> *const c_char {
        ERROR_TEXT.with(|e| e.borrow().map_or(std::ptr::null(), CStr::as_ptr))
    }

    fn descriptor() -> ClefPluginDescriptor {
        ClefPluginDescriptor {
            abi_major: CLEF_ABI_MAJOR,
            abi_minor: CLEF_ABI_MINOR,
            struct_size: std::mem::size_of::<ClefPluginDescriptor>() as u32,
            name: std::ptr::null(),
            version: std::ptr::null(),
            description: std::ptr::null(),
            hparams: std::ptr::null(),
            n_hparams: 0,
            create: Some(fake_create),
            destroy: None,
            last_error: Some(fake_last_error),
            on_model_built: None,
            on_task_start: None,
            before_batch: None,
            after_backward: None,
            after_step: None,
            on_task_end: None,
            before_eval: None,
            after_eval: None,
            save_state: None,
            load_state: None,
            create_typed: None,
            backbones: 0,
            reserved: 0,
            loss: None,
            predict: None,
        }
    }

    fn spec(name: &str, kind: HParamKind, default: HValue) -> HParamSpec {
        HParamSpec {
            name: name.into(),
            kind,
            log_scale: false,
            needs_past_tasks: false,
            default,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
            doc: String::new(),
        }
    }

    fn plugin(desc: ClefPluginDescriptor) -> &'static LoadedPlugin {
        let info = PluginInfo {
            name: "fake".into(),
            version: "0.0.0".into(),
            description: String::new(),
            path: PathBuf::from("fake"),
            abi: (CLEF_ABI_MAJOR, CLEF_ABI_MINOR),
            conv: false,
            hparams: vec![
                spec("lambda", HParamKind::Float, HValue::Float(0.0)),
                spec("samples", HParamKind::Int, HValue::Int(1)),
                spec("on", HParamKind::Bool, HValue::Bool(false)),
                spec(
                    "mode",
                    HParamKind::Choice(vec!["a".into(), "bb".into(), "c".into()]),
                    HValue::Choice("a".into()),
                ),
            ],
            hooks: Vec::new(),
        };
        Box::leak(Box::new(LoadedPlugin {
            info,
            library_hash: "0000000000000000".into(),
            desc: Box::leak(Box::new(desc)),
        }))
    }

    const TOML: &str = "lambda = 0.25\nsamples = 7\non = true\nmode = \"bb\"\n";

    #[test]
    fn create_typed_gets_the_values_in_schema_order() {
        let mut d = descriptor();
        // `create` may be absent when `create_typed` is set.
        d.create = None;
        d.create_typed = Some(recording_create_typed);
        let p = plugin(d);
        // The table's key order differs from the schema's: values follow the schema.
        let toml = "mode = \"bb\"\non = true\nsamples = 7\nlambda = 0.25\n";
        RECEIVED.with(|r| *r.borrow_mut() = None);
        PluginStrategy::create(p, toml).expect("create_typed succeeds");
        let (text, vals) = RECEIVED.with(|r| r.borrow_mut().take()).expect("called");
        assert_eq!(text, toml);
        assert_eq!(
            vals,
            vec![
                (0.25, None),
                (7.0, None),
                (1.0, None),
                (1.0, Some("bb".to_string()))
            ]
        );
        // A value that does not fit its kind is an error naming the key, not a wrong number.
        let e = PluginStrategy::create(p, "lambda = 1.0\nsamples = 2.5\non = true\nmode = \"a\"")
            .unwrap_err();
        assert!(e.message.contains("`samples`") && e.hook == "create", "{e}");
        let e = PluginStrategy::create(p, "lambda = 1.0\non = true\nmode = \"a\"").unwrap_err();
        assert!(e.message.contains("`samples` is missing"), "{e}");
    }

    #[test]
    fn without_create_typed_the_host_calls_create() {
        let p = plugin(descriptor());
        RECEIVED.with(|r| *r.borrow_mut() = None);
        let s = PluginStrategy::create(p, TOML).expect("create succeeds");
        assert_eq!(s.inst, dummy_inst());
        assert!(RECEIVED.with(|r| r.borrow().is_none()));
    }

    #[test]
    fn a_create_failure_without_message_names_status_and_hint() {
        let mut d = descriptor();
        d.create = Some(failing_create);
        let p = plugin(d);
        for (text, returned) in [
            (None, "last_error(NULL) returned NULL"),
            (Some(c" "), "last_error(NULL) returned an empty message"),
        ] {
            ERROR_TEXT.with(|e| *e.borrow_mut() = text);
            let e = PluginStrategy::create(p, TOML).unwrap_err().to_string();
            assert!(
                e.starts_with("plugin `fake` failed in create: no message (status -1 CLEF_ERROR; ")
                    && e.contains(returned)
                    && e.contains("must leave its message for last_error(NULL)"),
                "{e}"
            );
        }
        // With a message, the message alone (as before).
        ERROR_TEXT.with(|e| *e.borrow_mut() = Some(c"bad lambda"));
        let e = PluginStrategy::create(p, TOML).unwrap_err().to_string();
        assert_eq!(e, "plugin `fake` failed in create: bad lambda");
        ERROR_TEXT.with(|e| *e.borrow_mut() = None);
    }

    #[test]
    fn a_plugin_without_save_state_cannot_be_checkpointed() {
        let p = plugin(descriptor());
        let mut s = PluginStrategy::create(p, TOML).expect("create succeeds");
        let e = s.save_state().unwrap_err().to_string();
        assert_eq!(
            e,
            "plugin `fake` does not save its state (no save_state export): checkpoints are off \
             for this trial"
        );
        // Nothing to restore is fine; bytes it cannot restore are refused.
        s.load_state(&[])
            .expect("an empty state needs no load_state");
        let e = s.load_state(&[1, 2, 3]).unwrap_err().to_string();
        assert!(
            e.contains("no load_state export") && e.contains("3 saved bytes"),
            "{e}"
        );
    }
}
