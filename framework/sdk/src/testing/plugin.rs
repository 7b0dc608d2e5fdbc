//! [`MockPlugin`]: a plugin instance whose hooks run against a [`MockHost`].

use std::ffi::{c_void, CString};
use std::fmt;
use std::ptr;

use clef_abi::{
    ClefCtx, ClefLossInput, ClefPluginDescriptor, CLEF_ERROR, CLEF_INVALID_ARGUMENT, CLEF_OK,
};

use super::descriptor::{descriptor_of, string};
use super::host::{task_info_of, MockHost, HOST_TABLE};
use super::state::Phase;
use super::step::{batch_rows, linear_logits, linear_vjp};
use crate::Strategy;

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
        host.state_mut().phase = phase;
        let ctx = host.ctx();
        let status = call(self.inst, ctx).unwrap_or(CLEF_OK);
        host.state_mut().phase = Phase::Idle;
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
        let info = task_info_of(host)?;
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

    /// One training step as the trainer runs it: `before_batch` → the gradient of the batch's
    /// loss ([`MockHost::loss_backward`]: gradients zeroed, then the mean softmax
    /// cross-entropy of the linear model over the mock's batch plus the rows this
    /// `before_batch` appended) → `after_backward(loss)` → one optimizer step
    /// ([`MockHost::step`]) → `after_step`. Returns the loss. Use it to test logic that runs
    /// after the optimizer (masks re-applied after the step, projections, pruning).
    ///
    /// A plugin with a `loss` hook (ABI 1.6) gets the batch's logits instead and its cotangent
    /// is back-propagated ([`MockPlugin::loss`]).
    pub fn train_step(&mut self, host: &mut MockHost) -> Result<f32, HookError> {
        let first = host.state().appended.len();
        self.before_batch(host)?;
        let loss = if self.desc.loss.is_some() {
            self.loss(host, first)?
        } else {
            host.loss_backward(first)?
        };
        self.after_backward(host, loss)?;
        host.step();
        self.after_step(host)?;
        Ok(loss)
    }

    /// The `loss` hook (ABI 1.6) on the mock's batch and the rows appended since
    /// `appended[first_appended..]`, as the trainer runs it: gradients zeroed, the linear
    /// model's logits and every row's mask handed to the hook, its cotangent back-propagated
    /// (added into the gradients). Returns the hook's loss.
    pub fn loss(&mut self, host: &mut MockHost, first_appended: usize) -> Result<f32, HookError> {
        let Some(f) = self.desc.loss else {
            return Err(HookError {
                status: CLEF_ERROR,
                message: "the plugin has no loss hook".into(),
            });
        };
        let (x, targets, masks) = batch_rows(host.state(), first_appended);
        let (rows, k) = (targets.len(), host.state().num_outputs);
        for p in &mut host.state_mut().params {
            p.grads.fill(0.0);
        }
        let logits = linear_logits(host.state(), &x, rows)?;
        let t: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
        let m: Vec<u8> = match &masks {
            Some(m) => m.iter().map(|&b| u8::from(b)).collect(),
            None => vec![1; rows * k],
        };
        let input = ClefLossInput {
            struct_size: std::mem::size_of::<ClefLossInput>() as u32,
            reserved: 0,
            rows: rows as i64,
            num_outputs: k as i64,
            input_dim: host.state().input_dim as i64,
            current_rows: host.state().batch_current_rows as i64,
            x: x.as_ptr(),
            logits: logits.as_ptr(),
            targets: t.as_ptr(),
            masks: m.as_ptr(),
        };
        let mut cot = vec![0.0f32; rows * k];
        let mut loss = f32::NAN;
        let (cp, lp) = (cot.as_mut_ptr(), &mut loss as *mut f32);
        // SAFETY: our live instance, the host's context, an input whose arrays outlive the
        // call, a writable cotangent of `rows * num_outputs` floats and a writable loss.
        self.run(host, Phase::Loss, |i, c| {
            Some(unsafe { f(i, c, &input, cp, lp) })
        })?;
        linear_vjp(host.state_mut(), &x, rows, &cot);
        Ok(loss)
    }

    /// The `predict` hook (ABI 1.6): the plugin's scores for `rows` inputs `x` (`task` as
    /// `before_eval` gets it), `rows * num_outputs` values.
    pub fn predict(
        &mut self,
        host: &mut MockHost,
        task: Option<usize>,
        x: &[f32],
        rows: usize,
    ) -> Result<Vec<f32>, HookError> {
        let Some(f) = self.desc.predict else {
            return Err(HookError {
                status: CLEF_ERROR,
                message: "the plugin has no predict hook".into(),
            });
        };
        let task = task.map_or(-1, |t| t as i64);
        let mut out = vec![0.0f32; rows * host.state().num_outputs];
        let (p, len) = (out.as_mut_ptr(), out.len() as i64);
        // SAFETY: our live instance, the host's context, `rows * input_dim` readable inputs
        // and `len` writable scores, valid during the call.
        self.run(host, Phase::Predict, |i, c| {
            Some(unsafe { f(i, c, task, x.as_ptr(), rows as i64, p, len) })
        })?;
        Ok(out)
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
        let info = task_info_of(host)?;
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

impl Drop for MockPlugin {
    fn drop(&mut self) {
        if let Some(destroy) = self.desc.destroy {
            // SAFETY: our instance, destroyed once.
            unsafe { destroy(self.inst) };
        }
    }
}
