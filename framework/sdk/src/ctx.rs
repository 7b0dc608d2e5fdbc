//! [`Ctx`]: safe access to the host's services during a hook.

use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use clef_abi::{
    ClefBatch, ClefCtx, ClefHost, ClefParamInfo, ClefTaskInfo, ClefTensor, CLEF_HOST_SIZE_V1_1,
    CLEF_HOST_SIZE_V1_2, CLEF_LOG_DEBUG, CLEF_LOG_ERROR, CLEF_LOG_INFO, CLEF_LOG_TRACE,
    CLEF_LOG_WARN, CLEF_OK, CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL,
    CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL, CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN,
    CLEF_UNSUPPORTED,
};

use crate::error::{Error, Result};

/// The evaluation setting of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Task-incremental: the task id is known; logits are masked to the task's units.
    TaskIl,
    /// Class-incremental: argmax over every unit seen so far.
    ClassIl,
    /// Domain-incremental: one shared head.
    DomainIl,
    /// A setting this SDK does not know (a newer host).
    Other(i32),
}

impl Setting {
    fn from_raw(raw: i32) -> Self {
        match raw {
            CLEF_SETTING_TASK_IL => Self::TaskIl,
            CLEF_SETTING_CLASS_IL => Self::ClassIl,
            CLEF_SETTING_DOMAIN_IL => Self::DomainIl,
            other => Self::Other(other),
        }
    }
}

/// The current task and the shape of the problem (an owned copy of the host's
/// `ClefTaskInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    /// Evaluation setting.
    pub setting: Setting,
    /// 0-based index of the current task.
    pub task: usize,
    /// Number of tasks in the stream.
    pub num_tasks: usize,
    /// Training samples of the current task.
    pub train_samples: usize,
    /// Test samples of the current task.
    pub test_samples: usize,
    /// Features per sample.
    pub input_dim: usize,
    /// Logits of the network.
    pub num_outputs: usize,
    /// Width of the penultimate representation (what [`Ctx::features`] returns per row).
    pub feature_dim: usize,
    /// Output units of this task's head.
    pub units: Vec<usize>,
    /// Threads the plugin may use for its own parallel work (0 = no hint).
    pub num_threads: usize,
    /// The trial seed (draw randomness from [`Ctx::rng_u64`] instead).
    pub seed: u64,
}

impl TaskInfo {
    /// Copies a host task info.
    ///
    /// # Safety
    /// `raw.units` must point to `raw.n_units` readable `i64`s (or be null with `n_units == 0`).
    pub(crate) unsafe fn from_raw(raw: &ClefTaskInfo) -> Result<Self> {
        let n_units = count("task_info", "n_units", raw.n_units)?;
        let units = if n_units == 0 {
            Vec::new()
        } else {
            if raw.units.is_null() {
                return Err(Error::msg(
                    "host task info: `units` is null but `n_units` is positive",
                ));
            }
            // SAFETY: the host guarantees `units` holds `n_units` values for the call (caller).
            let units = unsafe { std::slice::from_raw_parts(raw.units, n_units) };
            units
                .iter()
                .map(|&u| count("task_info", "units", u))
                .collect::<Result<_>>()?
        };
        Ok(Self {
            setting: Setting::from_raw(raw.setting),
            task: count("task_info", "task", raw.task)?,
            num_tasks: count("task_info", "num_tasks", raw.num_tasks)?,
            train_samples: count("task_info", "train_samples", raw.train_samples)?,
            test_samples: count("task_info", "test_samples", raw.test_samples)?,
            input_dim: count("task_info", "input_dim", raw.input_dim)?,
            num_outputs: count("task_info", "num_outputs", raw.num_outputs)?,
            feature_dim: count("task_info", "feature_dim", raw.feature_dim)?,
            units,
            num_threads: raw.num_threads as usize,
            seed: raw.seed,
        })
    }
}

/// What a parameter tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A dense layer's weight matrix `[out, in]`, row-major.
    Weight,
    /// A dense layer's bias `[out]`.
    Bias,
    /// A role this SDK does not know (a newer host).
    Other(i32),
}

/// Name, shape and role of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Stable name, e.g. `layers.0.weight`.
    pub name: String,
    /// Sizes of the dimensions (1 to 4 of them).
    pub shape: Vec<usize>,
    /// Weight or bias.
    pub role: Role,
    /// Index of the layer the tensor belongs to.
    pub layer: usize,
    /// Number of scalars (the product of `shape`).
    pub numel: usize,
}

/// Which part of a task's data [`Ctx::task_samples`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// Activation of an expert network added with [`Ctx::expert_add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `tanh(x)`.
    Tanh,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
}

/// Log level of [`Ctx::log`] (prefer the `tracing` macros, which the SDK forwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// Debugging detail.
    Debug,
    /// Very verbose detail.
    Trace,
}

impl LogLevel {
    pub(crate) fn code(self) -> i32 {
        match self {
            Self::Error => CLEF_LOG_ERROR,
            Self::Warn => CLEF_LOG_WARN,
            Self::Info => CLEF_LOG_INFO,
            Self::Debug => CLEF_LOG_DEBUG,
            Self::Trace => CLEF_LOG_TRACE,
        }
    }
}

/// The training batch as `before_batch` sees it (before any rows are appended). Borrows the
/// [`Ctx`], so it must be dropped before [`Ctx::append_rows`].
#[derive(Debug, Clone)]
pub struct BatchView<'c> {
    /// `rows * cols` inputs, row-major (host memory).
    pub x: &'c [f32],
    /// Target output unit of each row.
    pub targets: Vec<usize>,
    /// Rows in the batch.
    pub rows: usize,
    /// Features per row.
    pub cols: usize,
    /// Rows from the current task's stream (the first `current_rows`).
    pub current_rows: usize,
}

impl BatchView<'_> {
    /// The inputs of row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.x[r * self.cols..(r + 1) * self.cols]
    }
}

/// Problem dimensions, fetched once per hook.
#[derive(Debug, Clone, Copy)]
struct Dims {
    input_dim: usize,
    num_outputs: usize,
    feature_dim: usize,
}

/// The host's services for the duration of one hook.
///
/// Every method calls into the host through the ABI's service table with the hook's context.
/// Slices returned by [`values`](Ctx::values), [`grads`](Ctx::grads) and friends point into
/// host memory; they borrow the `Ctx` (mutably for writable views) so safe code can neither
/// hold two aliasing mutable views nor keep a view across another service call. When you
/// need a parameter's values and gradients at once, use
/// [`values_and_grads`](Ctx::values_and_grads).
///
/// Host refusals become [`Error`]s naming the service and the reason, e.g. ``host service
/// `task_samples` refused: not allowed in this hook (status -5)``; see
/// [`Error::host_status`].
///
/// A `Ctx` is neither `Send` nor `Sync`: host services may only be called on the hook's
/// thread.
pub struct Ctx<'a> {
    host: &'a ClefHost,
    raw: *mut ClefCtx,
    dims: Option<Dims>,
    /// Keeps `Ctx` `!Send + !Sync` and ties it to the hook.
    _not_send: PhantomData<*mut ClefCtx>,
}

/// Converts a host count to `usize`, rejecting negatives.
fn count(service: &str, what: &str, value: i64) -> Result<usize> {
    usize::try_from(value).map_err(|_| {
        Error::msg(format!(
            "host service `{service}` returned a negative `{what}` ({value})"
        ))
    })
}

/// Maps a service status to `Ok` or a descriptive error.
fn check(service: &str, status: i32) -> Result<()> {
    if status == CLEF_OK {
        Ok(())
    } else {
        Err(Error::host(service, status))
    }
}

fn to_i64(value: usize) -> i64 {
    // usize is at most 64 bits on every supported target; values this large never occur.
    i64::try_from(value).unwrap_or(i64::MAX)
}

const EMPTY_TENSOR: ClefTensor = ClefTensor {
    data: ptr::null_mut(),
    numel: 0,
    ndim: 0,
    writable: 0,
    shape: [0; 4],
};

impl<'a> Ctx<'a> {
    /// Wraps the host table and the hook's context.
    ///
    /// # Safety
    /// `host` must be the table the plugin was created with and `raw` the context of the
    /// running hook; the `Ctx` must not outlive the hook and must stay on its thread.
    pub(crate) unsafe fn new(host: &'a ClefHost, raw: *mut ClefCtx) -> Self {
        Self {
            host,
            raw,
            dims: None,
            _not_send: PhantomData,
        }
    }

    /// The raw host table and context, to call services the SDK does not wrap (e.g. an
    /// extension from [`Ctx::extension`]). Only valid during this hook, on this thread.
    pub fn raw_parts(&mut self) -> (*const ClefHost, *mut ClefCtx) {
        (self.host, self.raw)
    }

    // ---- logging, RNG, task ------------------------------------------------------------

    /// Sends one line to the host's log with this hook's context. Prefer `tracing::info!`
    /// and friends, which the SDK forwards with the plugin's name as prefix.
    pub fn log(&self, level: LogLevel, message: &str) {
        let msg = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: the host table is valid during the hook and `raw` is its context (Ctx::new);
        // `msg` is NUL-terminated and outlives the call.
        unsafe { (self.host.log)(self.raw, level.code(), msg.as_ptr()) }
    }

    /// The next value of the instance's seeded random stream (reproducible per trial seed).
    ///
    /// The service has no status: where the host refuses it (`save_state`/`load_state`, which
    /// run without a training context) the value is 0. Draw randomness in training hooks.
    pub fn rng_u64(&mut self) -> u64 {
        // SAFETY: see `Ctx::new`: valid table and context, on the hook's thread.
        unsafe { (self.host.rng_u64)(self.raw) }
    }

    /// A uniform `f64` in `[0, 1)` (53 random bits from [`rng_u64`](Ctx::rng_u64)).
    pub fn rng_f64(&mut self) -> f64 {
        (self.rng_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn rng_below(&mut self, n: usize) -> usize {
        assert!(n > 0, "rng_below(0): empty range");
        let n = n as u64;
        // Lemire's multiply-shift with rejection: the low word below `2^64 mod n` is biased.
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.rng_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// The current task and the problem's shape.
    pub fn task_info(&mut self) -> Result<TaskInfo> {
        let raw = self.raw_task_info()?;
        // SAFETY: the host filled `raw`; its `units` stay valid during the hook.
        let info = unsafe { TaskInfo::from_raw(&raw) }?;
        self.dims = Some(Dims {
            input_dim: info.input_dim,
            num_outputs: info.num_outputs,
            feature_dim: info.feature_dim,
        });
        Ok(info)
    }

    fn raw_task_info(&mut self) -> Result<ClefTaskInfo> {
        let mut raw = ClefTaskInfo {
            struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
            setting: 0,
            task: 0,
            num_tasks: 0,
            train_samples: 0,
            test_samples: 0,
            input_dim: 0,
            num_outputs: 0,
            feature_dim: 0,
            units: ptr::null(),
            n_units: 0,
            num_threads: 0,
            seed: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefTaskInfo.
        check("task_info", unsafe {
            (self.host.task_info)(self.raw, &mut raw)
        })?;
        Ok(raw)
    }

    fn dims(&mut self) -> Result<Dims> {
        if let Some(dims) = self.dims {
            return Ok(dims);
        }
        let raw = self.raw_task_info()?;
        let dims = Dims {
            input_dim: count("task_info", "input_dim", raw.input_dim)?,
            num_outputs: count("task_info", "num_outputs", raw.num_outputs)?,
            feature_dim: count("task_info", "feature_dim", raw.feature_dim)?,
        };
        self.dims = Some(dims);
        Ok(dims)
    }

    // ---- parameters ----------------------------------------------------------------------

    /// Number of parameter tensors. Fails where the host refuses it (e.g. in
    /// `save_state`/`load_state`, which run without a training context).
    pub fn param_count(&self) -> Result<usize> {
        // SAFETY: valid table and context (Ctx::new).
        let n = unsafe { (self.host.param_count)(self.raw) };
        if n >= 0 {
            return count("param_count", "count", n);
        }
        // A negative count is a status code (the service's contract).
        let status = i32::try_from(n).unwrap_or(clef_abi::CLEF_ERROR);
        Err(Error::host("param_count", status))
    }

    /// Name, shape and role of parameter tensor `index`.
    pub fn param_info(&self, index: usize) -> Result<ParamInfo> {
        let mut raw = ClefParamInfo {
            name: ptr::null(),
            ndim: 0,
            role: 0,
            shape: [0; 4],
            numel: 0,
            layer: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefParamInfo.
        check("param_info", unsafe {
            (self.host.param_info)(self.raw, to_i64(index), &mut raw)
        })?;
        if raw.name.is_null() {
            return Err(Error::msg(format!(
                "host service `param_info` returned a null name for parameter {index}"
            )));
        }
        // SAFETY: the host returned a non-null, NUL-terminated name valid during the hook.
        let name = unsafe { CStr::from_ptr(raw.name) }
            .to_string_lossy()
            .into_owned();
        let ndim = usize::try_from(raw.ndim)
            .ok()
            .filter(|n| (1..=4).contains(n))
            .ok_or_else(|| {
                Error::msg(format!(
                    "host service `param_info` returned ndim {} for `{name}`",
                    raw.ndim
                ))
            })?;
        let shape = raw.shape[..ndim]
            .iter()
            .map(|&s| count("param_info", "shape", s))
            .collect::<Result<Vec<_>>>()?;
        let role = match raw.role {
            CLEF_ROLE_WEIGHT => Role::Weight,
            CLEF_ROLE_BIAS => Role::Bias,
            other => Role::Other(other),
        };
        Ok(ParamInfo {
            name,
            shape,
            role,
            layer: count("param_info", "layer", raw.layer)?,
            numel: count("param_info", "numel", raw.numel)?,
        })
    }

    /// Every parameter tensor's info, in index order.
    pub fn params(&self) -> Result<Vec<ParamInfo>> {
        (0..self.param_count()?)
            .map(|i| self.param_info(i))
            .collect()
    }

    /// Fetches a tensor view from a service.
    fn view(
        &self,
        service: &str,
        call: impl FnOnce(&ClefHost, *mut ClefCtx, &mut ClefTensor) -> i32,
    ) -> Result<ClefTensor> {
        let mut tensor = EMPTY_TENSOR;
        check(service, call(self.host, self.raw, &mut tensor))?;
        Self::check_tensor(service, tensor)
    }

    /// Rejects malformed views (negative size, null data).
    fn check_tensor(service: &str, tensor: ClefTensor) -> Result<ClefTensor> {
        if tensor.numel < 0 || (tensor.numel > 0 && tensor.data.is_null()) {
            return Err(Error::msg(format!(
                "host service `{service}` returned an invalid view (numel {}, data {:?})",
                tensor.numel, tensor.data
            )));
        }
        Ok(tensor)
    }

    /// A writable view as `&mut [f32]`.
    ///
    /// # Safety
    /// `tensor` must come from [`Ctx::view`] during this hook, and the returned slice must be
    /// tied to a mutable borrow of `self`, which prevents any other view or service call while
    /// it lives.
    unsafe fn slice_mut<'s>(service: &str, tensor: ClefTensor) -> Result<&'s mut [f32]> {
        if tensor.writable == 0 {
            return Err(Error::msg(format!(
                "host service `{service}` returned a read-only view here (use the `_ref` \
                 variant to read it)"
            )));
        }
        if tensor.numel == 0 {
            return Ok(&mut []);
        }
        // SAFETY: the host guarantees `data` points to `numel` f32s valid, and not aliased by
        // any other mutable view, until the hook returns; the caller ties the slice to a
        // mutable borrow of the Ctx.
        Ok(unsafe { std::slice::from_raw_parts_mut(tensor.data, tensor.numel as usize) })
    }

    /// A read-only view as `&[f32]` (a shared slice, never a `&mut`, so several read-only
    /// views of one tensor may coexist).
    ///
    /// # Safety
    /// `tensor` must come from [`Ctx::view`] during this hook, and the returned slice must be
    /// tied to a shared borrow of `self`, which prevents any mutable view while it lives.
    unsafe fn slice_ref<'s>(tensor: ClefTensor) -> &'s [f32] {
        if tensor.numel == 0 {
            return &[];
        }
        // SAFETY: the host guarantees `data` points to `numel` f32s valid until the hook
        // returns; no mutable view can coexist with the shared borrow of the Ctx the caller
        // ties this slice to.
        unsafe { std::slice::from_raw_parts(tensor.data.cast_const(), tensor.numel as usize) }
    }

    /// The values of parameter tensor `index`, writable (edits take effect at the next
    /// forward pass).
    pub fn values(&mut self, index: usize) -> Result<&mut [f32]> {
        let t = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("param_values", t) }
    }

    /// The values of parameter tensor `index`, read-only.
    pub fn values_ref(&self, index: usize) -> Result<&[f32]> {
        let t = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice is shared and borrows `self`, so no mutable view (which needs
        // `&mut self`) can coexist with it (see `slice_ref`).
        Ok(unsafe { Self::slice_ref(t) })
    }

    /// The gradient of parameter tensor `index` (d loss / d param of the current batch),
    /// writable in `after_backward`: add terms or mask it there.
    pub fn grads(&mut self, index: usize) -> Result<&mut [f32]> {
        let t = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("param_grads", t) }
    }

    /// The gradient of parameter tensor `index`, read-only (e.g. in `after_step`, where the
    /// host may hand out read-only gradient views).
    pub fn grads_ref(&self, index: usize) -> Result<&[f32]> {
        let t = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: the slice is shared and borrows `self`, so no mutable view (which needs
        // `&mut self`) can coexist with it (see `slice_ref`).
        Ok(unsafe { Self::slice_ref(t) })
    }

    /// The values (read-only) and the gradient (writable) of parameter tensor `index` at
    /// once, e.g. to add `lambda * (w - w0)` to the gradient.
    pub fn values_and_grads(&mut self, index: usize) -> Result<(&[f32], &mut [f32])> {
        let values = self.view("param_values", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_values)(c, to_i64(index), out) }
        })?;
        let grads = self.view("param_grads", |h, c, out| {
            // SAFETY: valid table and context (Ctx::new); `out` is a live ClefTensor.
            unsafe { (h.param_grads)(c, to_i64(index), out) }
        })?;
        // SAFETY: values and gradients are distinct host buffers (the host guarantees that no
        // two mutable views alias); both slices borrow `self` mutably for their lifetime, and
        // the values are only read (a shared slice).
        let values = unsafe { Self::slice_ref(values) };
        // SAFETY: as above.
        let grads = unsafe { Self::slice_mut("param_grads", grads) }?;
        Ok((values, grads))
    }

    /// Optimizer state `slot` of parameter tensor `index` (`"momentum"` for SGD,
    /// `"exp_avg"` / `"exp_avg_sq"` for Adam), writable; `None` if the optimizer has no such
    /// slot.
    pub fn optimizer_state(&mut self, slot: &str, index: usize) -> Result<Option<&mut [f32]>> {
        let slot_c = CString::new(slot)
            .map_err(|_| Error::msg(format!("optimizer slot {slot:?} contains a NUL byte")))?;
        let mut tensor = EMPTY_TENSOR;
        // SAFETY: valid table and context (Ctx::new); `slot_c` is NUL-terminated and outlives
        // the call; `tensor` is a live ClefTensor.
        let status = unsafe {
            (self.host.optimizer_state)(self.raw, slot_c.as_ptr(), to_i64(index), &mut tensor)
        };
        if status == CLEF_UNSUPPORTED {
            return Ok(None);
        }
        check("optimizer_state", status)?;
        let t = Self::check_tensor("optimizer_state", tensor)?;
        // SAFETY: the slice borrows `self` mutably (see `slice_mut`).
        unsafe { Self::slice_mut("optimizer_state", t) }.map(Some)
    }

    // ---- model evaluation -------------------------------------------------------------------

    fn check_rows(&mut self, service: &str, what: &str, len: usize, rows: usize) -> Result<Dims> {
        let dims = self.dims()?;
        if rows.checked_mul(dims.input_dim) != Some(len) {
            return Err(Error::msg(format!(
                "`{service}`: {what} has {len} values, expected rows ({rows}) * input_dim ({})",
                dims.input_dim
            )));
        }
        Ok(dims)
    }

    /// The logits of `rows` inputs (`x.len() == rows * input_dim`), `rows * num_outputs`
    /// values, row-major. Gradients are not touched.
    pub fn forward(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let dims = self.check_rows("forward", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.num_outputs];
        self.forward_into(x, rows, &mut out)?;
        Ok(out)
    }

    /// Like [`forward`](Ctx::forward), into a caller buffer of `rows * num_outputs` values.
    pub fn forward_into(&mut self, x: &[f32], rows: usize, out: &mut [f32]) -> Result<()> {
        self.check_rows("forward", "x", x.len(), rows)?;
        // SAFETY: valid table and context (Ctx::new); `x` and `out` are live buffers of the
        // lengths passed; the host checks `out_len`.
        check("forward", unsafe {
            (self.host.forward)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })
    }

    /// The penultimate activations of `rows` inputs: `rows * feature_dim` values.
    pub fn features(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let dims = self.check_rows("features", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.feature_dim];
        // SAFETY: valid table and context (Ctx::new); `x` and `out` are live buffers of the
        // lengths passed.
        check("features", unsafe {
            (self.host.features)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }

    /// Adds `J(x)^T * cotangent` into the parameter gradients, where `cotangent` is
    /// d (your loss) / d (logits at `x`), `rows * num_outputs` values: the gradient of any loss
    /// on the outputs at inputs you choose (distillation, function-space regularisers).
    pub fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> Result<()> {
        let dims = self.check_rows("vjp", "x", x.len(), rows)?;
        if cotangent.len() != rows * dims.num_outputs {
            return Err(Error::msg(format!(
                "`vjp`: cotangent has {} values, expected rows ({rows}) * num_outputs ({})",
                cotangent.len(),
                dims.num_outputs
            )));
        }
        // SAFETY: valid table and context (Ctx::new); both buffers are live with the lengths
        // passed.
        check("vjp", unsafe {
            (self.host.vjp)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                cotangent.as_ptr(),
                to_i64(cotangent.len()),
            )
        })
    }

    /// The neural-tangent-kernel Gram matrix of output unit `output` between `a` (`rows_a`
    /// inputs) and `b` (`rows_b` inputs): `out[i * rows_b + j] = <d f(a_i)/d params,
    /// d f(b_j)/d params>`. Fails with [`HostStatus::Unsupported`](crate::HostStatus) if the
    /// backend cannot compute it.
    pub fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        output: usize,
    ) -> Result<Vec<f64>> {
        self.check_rows("ntk_gram", "a", a.len(), rows_a)?;
        self.check_rows("ntk_gram", "b", b.len(), rows_b)?;
        let mut out = vec![0.0f64; rows_a * rows_b];
        // SAFETY: valid table and context (Ctx::new); all buffers are live with the lengths
        // passed.
        check("ntk_gram", unsafe {
            (self.host.ntk_gram)(
                self.raw,
                a.as_ptr(),
                to_i64(rows_a),
                b.as_ptr(),
                to_i64(rows_b),
                to_i64(output),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }

    // ---- data ------------------------------------------------------------------------------

    /// The current training batch (only in `before_batch`).
    pub fn batch(&mut self) -> Result<BatchView<'_>> {
        let mut raw = ClefBatch {
            x: ptr::null(),
            targets: ptr::null(),
            rows: 0,
            cols: 0,
            current_rows: 0,
        };
        // SAFETY: valid table and context (Ctx::new); `raw` is a live, writable ClefBatch.
        check("batch_get", unsafe {
            (self.host.batch_get)(self.raw, &mut raw)
        })?;
        let rows = count("batch_get", "rows", raw.rows)?;
        let cols = count("batch_get", "cols", raw.cols)?;
        let current_rows = count("batch_get", "current_rows", raw.current_rows)?;
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::msg("host service `batch_get` returned an oversized batch"))?;
        if (n > 0 && raw.x.is_null()) || (rows > 0 && raw.targets.is_null()) {
            return Err(Error::msg(
                "host service `batch_get` returned a null buffer",
            ));
        }
        let x: &[f32] = if n == 0 {
            &[]
        } else {
            // SAFETY: the host's batch holds `rows * cols` inputs valid during the hook; the
            // view borrows `self` mutably, so no service (e.g. `batch_append`, which may move
            // the batch) can be called while it lives.
            unsafe { std::slice::from_raw_parts(raw.x, n) }
        };
        let targets: &[i64] = if rows == 0 {
            &[]
        } else {
            // SAFETY: as above, `rows` targets.
            unsafe { std::slice::from_raw_parts(raw.targets, rows) }
        };
        let targets = targets
            .iter()
            .map(|&t| count("batch_get", "targets", t))
            .collect::<Result<_>>()?;
        Ok(BatchView {
            x,
            targets,
            rows,
            cols,
            current_rows,
        })
    }

    /// Appends rows to the current batch (only in `before_batch`): `x` holds
    /// `targets.len() * input_dim` inputs. `masks` is `None` (the rows use the current task's
    /// training mask) or `targets.len() * num_outputs` flags (`true` = the unit is in the
    /// row's softmax), e.g. a replayed row's own task-IL head.
    pub fn append_rows(
        &mut self,
        x: &[f32],
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> Result<()> {
        let rows = targets.len();
        let dims = self.check_rows("batch_append", "x", x.len(), rows)?;
        let targets: Vec<i64> = targets.iter().map(|&t| to_i64(t)).collect();
        let masks: Option<Vec<u8>> = match masks {
            None => None,
            Some(m) => {
                if m.len() != rows * dims.num_outputs {
                    return Err(Error::msg(format!(
                        "`batch_append`: masks has {} flags, expected rows ({rows}) * \
                         num_outputs ({})",
                        m.len(),
                        dims.num_outputs
                    )));
                }
                Some(m.iter().map(|&b| u8::from(b)).collect())
            }
        };
        let masks_ptr = masks.as_ref().map_or(ptr::null(), |m| m.as_ptr());
        // SAFETY: valid table and context (Ctx::new); the buffers are live with the lengths the
        // service documents (checked above); `masks_ptr` is null or `rows * num_outputs` bytes.
        check("batch_append", unsafe {
            (self.host.batch_append)(
                self.raw,
                x.as_ptr(),
                to_i64(rows),
                targets.as_ptr(),
                masks_ptr,
            )
        })
    }

    /// Copies samples `start..start + rows` of task `task`'s `split` (after the task's input
    /// transform): `(rows * input_dim inputs, rows targets)`. Only tasks up to the current one.
    pub fn task_samples(
        &mut self,
        task: usize,
        split: Split,
        start: usize,
        rows: usize,
    ) -> Result<(Vec<f32>, Vec<usize>)> {
        let dims = self.dims()?;
        let mut x = vec![0.0f32; rows * dims.input_dim];
        let mut targets = vec![0i64; rows];
        let split = match split {
            Split::Train => CLEF_SPLIT_TRAIN,
            Split::Test => CLEF_SPLIT_TEST,
        };
        // SAFETY: valid table and context (Ctx::new); `x` holds `rows * input_dim` and
        // `targets` `rows` values, as the service documents.
        check("task_samples", unsafe {
            (self.host.task_samples)(
                self.raw,
                to_i64(task),
                split,
                to_i64(start),
                to_i64(rows),
                x.as_mut_ptr(),
                targets.as_mut_ptr(),
            )
        })?;
        let targets = targets
            .into_iter()
            .map(|t| count("task_samples", "targets", t))
            .collect::<Result<_>>()?;
        Ok((x, targets))
    }

    /// The class mask of task `task`'s head: `num_outputs` flags, `true` = unit in the head.
    pub fn task_mask(&mut self, task: usize) -> Result<Vec<bool>> {
        let dims = self.dims()?;
        let mut out = vec![0u8; dims.num_outputs];
        // SAFETY: valid table and context (Ctx::new); `out` holds `num_outputs` bytes.
        check("task_mask", unsafe {
            (self.host.task_mask)(self.raw, to_i64(task), out.as_mut_ptr(), to_i64(out.len()))
        })?;
        Ok(out.into_iter().map(|b| b != 0).collect())
    }

    /// The output units of task `task`'s training softmax as the trainer uses them: task-IL
    /// the task's units; class-IL the units of tasks `0..=task`; domain-IL every output (in
    /// ascending order, without duplicates). E.g. the classes a Fisher or a function-space
    /// regulariser of task `task` sums over.
    pub fn training_units(&mut self, task: usize) -> Result<Vec<usize>> {
        let info = self.task_info()?;
        let k = info.num_outputs;
        let mask = match info.setting {
            Setting::TaskIl => self.task_mask(task)?,
            Setting::ClassIl => {
                let mut union = vec![false; k];
                for j in 0..=task {
                    for (u, m) in union.iter_mut().zip(self.task_mask(j)?) {
                        *u |= m;
                    }
                }
                union
            }
            Setting::DomainIl => vec![true; k],
            Setting::Other(code) => {
                return Err(Error::msg(format!(
                    "training_units: unknown evaluation setting (code {code})"
                )))
            }
        };
        Ok(mask
            .iter()
            .enumerate()
            .filter_map(|(u, &m)| m.then_some(u))
            .collect())
    }

    // ---- architecture ----------------------------------------------------------------------

    /// Adds an expert network with the given hidden widths and activation to the trial's pool;
    /// returns its id (the configured network is expert 0). Task-IL only. Fails with
    /// [`HostStatus::Unsupported`](crate::HostStatus) on a host without an expert pool.
    pub fn expert_add(&mut self, hidden: &[usize], activation: Activation) -> Result<usize> {
        let hidden: Vec<i64> = hidden.iter().map(|&h| to_i64(h)).collect();
        let activation = match activation {
            Activation::Relu => clef_abi::CLEF_ACTIVATION_RELU,
            Activation::Tanh => clef_abi::CLEF_ACTIVATION_TANH,
            Activation::Sigmoid => clef_abi::CLEF_ACTIVATION_SIGMOID,
        };
        let mut id = 0i64;
        // SAFETY: valid table and context (Ctx::new); `hidden` is live with the length passed
        // and `id` is writable.
        check("expert_add", unsafe {
            (self.host.expert_add)(
                self.raw,
                hidden.as_ptr(),
                to_i64(hidden.len()),
                activation,
                &mut id,
            )
        })?;
        // The model changed: the problem dimensions may have too.
        self.dims = None;
        count("expert_add", "id", id)
    }

    /// Routes the current task to expert `id` with a head of its own (fresh the first time):
    /// training, views, forward/features/vjp and the task's evaluation use that expert, and
    /// later tasks start on it. Resets the expert's optimizer state; invalidates views.
    pub fn expert_select(&mut self, id: usize) -> Result<()> {
        // SAFETY: valid table and context (Ctx::new).
        check("expert_select", unsafe {
            (self.host.expert_select)(self.raw, to_i64(id))
        })?;
        self.dims = None;
        Ok(())
    }

    /// Whether the host offers the ABI 1.2 expert services ([`expert_freeze`](Ctx::expert_freeze),
    /// [`expert_params`](Ctx::expert_params), [`head_forward`](Ctx::head_forward),
    /// [`head_vjp`](Ctx::head_vjp)).
    pub fn can_use_experts(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_2
    }

    fn require_experts(&self, service: &'static str) -> Result<()> {
        if self.can_use_experts() {
            Ok(())
        } else {
            Err(Error::host(service, CLEF_UNSUPPORTED))
        }
    }

    /// Freezes (or unfreezes) expert `id`'s body: every layer but the output layer stays
    /// bitwise unchanged while frozen; per-task heads still train (ABI 1.2).
    pub fn expert_freeze(&mut self, id: usize, frozen: bool) -> Result<()> {
        self.require_experts("expert_freeze")?;
        // SAFETY: the table's `struct_size` covers the 1.2 services (checked); valid context.
        check("expert_freeze", unsafe {
            (self.host.expert_freeze)(self.raw, to_i64(id), i32::from(frozen))
        })
    }

    /// Scalar parameters of expert `id` (body plus one head per routed task), or of the whole
    /// pool with `None` (ABI 1.2).
    pub fn expert_params(&mut self, id: Option<usize>) -> Result<usize> {
        self.require_experts("expert_params")?;
        let mut n = 0i64;
        // SAFETY: 1.2 table (checked); valid context; `n` is writable.
        check("expert_params", unsafe {
            (self.host.expert_params)(self.raw, id.map_or(-1, to_i64), &mut n)
        })?;
        count("expert_params", "count", n)
    }

    /// Logits of the selected expert through task `task`'s head (a task routed to the selected
    /// expert), `rows * num_outputs` values; no gradients (ABI 1.2).
    pub fn head_forward(&mut self, task: usize, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.require_experts("head_forward")?;
        let dims = self.check_rows("head_forward", "x", x.len(), rows)?;
        let mut out = vec![0.0f32; rows * dims.num_outputs];
        // SAFETY: 1.2 table (checked); valid context; live buffers of the lengths passed.
        check("head_forward", unsafe {
            (self.host.head_forward)(
                self.raw,
                to_i64(task),
                x.as_ptr(),
                to_i64(rows),
                out.as_mut_ptr(),
                to_i64(out.len()),
            )
        })?;
        Ok(out)
    }

    /// Adds `J(x)^T * cotangent` through task `task`'s (fixed) head into the selected expert's
    /// body gradients; the output layer's gradients are unchanged (ABI 1.2).
    pub fn head_vjp(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
    ) -> Result<()> {
        self.require_experts("head_vjp")?;
        let dims = self.check_rows("head_vjp", "x", x.len(), rows)?;
        if cotangent.len() != rows * dims.num_outputs {
            return Err(Error::msg(format!(
                "`head_vjp`: cotangent has {} values, expected rows ({rows}) * num_outputs ({})",
                cotangent.len(),
                dims.num_outputs
            )));
        }
        // SAFETY: 1.2 table (checked); valid context; live buffers of the lengths passed.
        check("head_vjp", unsafe {
            (self.host.head_vjp)(
                self.raw,
                to_i64(task),
                x.as_ptr(),
                to_i64(rows),
                cotangent.as_ptr(),
                to_i64(cotangent.len()),
            )
        })
    }

    // ---- results ---------------------------------------------------------------------------

    /// Whether the host offers [`report`](Ctx::report) (ABI 1.1 hosts and later).
    pub fn can_report(&self) -> bool {
        self.host.struct_size as usize >= CLEF_HOST_SIZE_V1_1
    }

    /// Records `value` under `key` in the trial's results for the current task (the record's
    /// `strategy_metrics[task][key]` in `results.jsonl`); reporting a key again in the same
    /// task replaces the value. `key`: 1 to 128 printable ASCII characters without spaces,
    /// e.g. `density.total`; `value`: finite. Not available in `save_state`/`load_state`.
    ///
    /// Fails with [`HostStatus::Unsupported`](crate::HostStatus) on a host older than ABI 1.1
    /// (check [`can_report`](Ctx::can_report) to skip reporting there).
    pub fn report(&mut self, key: &str, value: f64) -> Result<()> {
        if !self.can_report() {
            return Err(Error::host("report", CLEF_UNSUPPORTED));
        }
        let key_c = CString::new(key)
            .map_err(|_| Error::msg(format!("report key {key:?} contains a NUL byte")))?;
        // SAFETY: the table's `struct_size` covers `report` (checked above), so the field is
        // part of the host's table; valid context (Ctx::new); `key_c` is NUL-terminated and
        // outlives the call.
        check("report", unsafe {
            (self.host.report)(self.raw, key_c.as_ptr(), value)
        })
        .map_err(|e| e.context(format!("reporting `{key}` = {value}")))
    }

    /// A named host extension table (e.g. a future `clef.xyz.v1`), or `None` if the host
    /// lacks it. Interpreting the table is up to the caller.
    pub fn extension(&mut self, name: &str) -> Option<NonNull<c_void>> {
        let name = CString::new(name).ok()?;
        // SAFETY: valid table and context (Ctx::new); `name` is NUL-terminated and outlives
        // the call.
        let table = unsafe { (self.host.get_extension)(self.raw, name.as_ptr()) };
        NonNull::new(table.cast_mut())
    }
}
