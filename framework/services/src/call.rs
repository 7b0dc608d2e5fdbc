//! [`HostCall`]: what `*mut ClefCtx` points to, and the checks shared by the services.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::sync::{Mutex, OnceLock};

use clef_abi::{ClefCtx, ClefTaskInfo, ClefTensor, CLEF_SETTING_TASK_IL};

use crate::{Access, ServiceError, ServiceModel, ServiceResult};

/// The per-call host context behind `*mut ClefCtx`: the host's model plus the call's scratch
/// buffers (whose pointers stay valid while the hook runs) and its last refused service.
///
/// A host builds one per hook call (or keeps one, like the SDK's mock) and passes
/// [`as_raw`](HostCall::as_raw) to the plugin with the table from
/// [`host_table::<M>()`](crate::host_table).
#[derive(Debug)]
pub struct HostCall<M> {
    pub(crate) model: M,
    /// `units` of the task info handed out (replaced only when the units change, so earlier
    /// pointers stay valid for the hook).
    pub(crate) units: Vec<i64>,
    /// Targets of the batch view (`i64` as the ABI wants them).
    pub(crate) targets: Vec<i64>,
    /// Output buffer of forward / features / head_forward.
    pub(crate) scratch: Vec<f32>,
    /// Inputs and targets gathered by `task_samples`.
    pub(crate) gathered_x: Vec<f32>,
    pub(crate) gathered_y: Vec<usize>,
    /// The last service failure, `service: detail`.
    pub(crate) service_error: Option<String>,
}

impl<M: ServiceModel> HostCall<M> {
    /// A context over `model`.
    pub fn new(model: M) -> Self {
        HostCall {
            model,
            units: Vec::new(),
            targets: Vec::new(),
            scratch: Vec::new(),
            gathered_x: Vec::new(),
            gathered_y: Vec::new(),
            service_error: None,
        }
    }

    /// The opaque pointer handed to the plugin: valid while `self` is neither moved nor
    /// dropped, for services of the table [`host_table::<M>()`](crate::host_table).
    pub fn as_raw(&mut self) -> *mut ClefCtx {
        (self as *mut Self).cast::<ClefCtx>()
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// The last refused or failed service of this context (`service: detail`), taken.
    pub fn take_service_error(&mut self) -> Option<String> {
        self.service_error.take()
    }

    /// Records a failure (e.g. of a task info the host built itself) as the last service
    /// error.
    pub fn set_service_error(&mut self, message: String) {
        self.service_error = Some(message);
    }

    /// The current task's info as the hooks `on_task_start`/`on_task_end` receive it and the
    /// `task_info` service writes it; `units` points into this context.
    pub fn task_info(&mut self) -> ServiceResult<ClefTaskInfo> {
        let m = training(&mut self.model)?;
        let f = m.facts();
        if f.task >= f.num_tasks {
            return Err(ServiceError::error(format!(
                "current task {} does not exist",
                f.task
            )));
        }
        let t = m.task_facts(f.task);
        let units: Vec<i64> = t.units.iter().map(|&u| u as i64).collect();
        if self.units != units {
            self.units = units;
        }
        Ok(ClefTaskInfo {
            struct_size: std::mem::size_of::<ClefTaskInfo>() as u32,
            setting: f.setting,
            task: f.task as i64,
            num_tasks: f.num_tasks as i64,
            train_samples: t.train_samples as i64,
            test_samples: t.test_samples as i64,
            input_dim: f.input_dim as i64,
            num_outputs: f.num_outputs as i64,
            feature_dim: f.feature_dim as i64,
            units: self.units.as_ptr(),
            n_units: self.units.len() as i64,
            num_threads: f.num_threads,
            seed: f.seed,
        })
    }
}

/// The model, if the running hook has a training context.
pub(crate) fn training<M: ServiceModel>(model: &mut M) -> ServiceResult<&mut M> {
    if model.access() == Access::NoTraining {
        return Err(ServiceError::not_allowed(
            "not available in save_state/load_state (no training context)",
        ));
    }
    Ok(model)
}

/// The batch services' rule.
pub(crate) fn before_batch<M: ServiceModel>(model: &M) -> ServiceResult {
    if model.access() == Access::BeforeBatch {
        Ok(())
    } else {
        Err(ServiceError::not_allowed("only available in before_batch"))
    }
}

/// The rule of `reinit` and `train_step`: task boundaries only.
pub(crate) fn boundary<M: ServiceModel>(model: &M) -> ServiceResult {
    if model.access() == Access::Boundary {
        Ok(())
    } else {
        Err(ServiceError::not_allowed(
            "only available in on_task_start and on_task_end",
        ))
    }
}

/// The expert-pool rule: evaluation routes each task to its expert by task id.
pub(crate) fn require_task_il<M: ServiceModel>(model: &M) -> ServiceResult {
    if model.facts().setting == CLEF_SETTING_TASK_IL {
        Ok(())
    } else {
        Err(ServiceError::not_allowed(
            "expert pools need the task-IL setting (evaluation routes by task id)",
        ))
    }
}

/// `head_forward`/`head_vjp`: `task` must be routed to the selected expert.
pub(crate) fn require_routed<M: ServiceModel>(model: &M, task: usize) -> ServiceResult {
    let active = model.active_expert();
    if model.route_of(task) == Some(active) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "task {task} is not routed to the selected expert {active}"
        )))
    }
}

/// Checks a plugin-given count.
pub(crate) fn count(what: &str, v: i64) -> ServiceResult<usize> {
    usize::try_from(v).map_err(|_| ServiceError::invalid(format!("{what} is negative ({v})")))
}

/// Checks a plugin-given index against `0..len`.
pub(crate) fn index(what: &str, v: i64, len: usize) -> ServiceResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| ServiceError::invalid(format!("{what} {v} is out of range 0..{len}")))
}

/// `a * b`, or an error naming the product.
pub(crate) fn product(a: usize, b: usize, what: &str) -> ServiceResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| ServiceError::invalid(format!("{what} overflows")))
}

/// `out_len == expected`, or an error naming both factors.
pub(crate) fn expect_len(
    what: &str,
    got: usize,
    expected: usize,
    factors: std::fmt::Arguments<'_>,
) -> ServiceResult {
    if got == expected {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "{what} is {got}, expected {factors} = {expected}"
        )))
    }
}

/// Borrows `len` plugin-owned values.
///
/// # Safety
/// `p` must be null (then `len` must be 0, or the call is refused) or point to `len` readable
/// values valid during the call.
pub(crate) unsafe fn slice<'x, T>(p: *const T, len: usize, what: &str) -> ServiceResult<&'x [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(ServiceError::invalid(format!(
            "{what} is null or misaligned"
        )));
    }
    // SAFETY: non-null, aligned, `len` readable values (caller).
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Borrows `len` plugin-owned writable values.
///
/// # Safety
/// As [`slice`], writable, and not aliased by host memory.
pub(crate) unsafe fn slice_mut<'x, T>(
    p: *mut T,
    len: usize,
    what: &str,
) -> ServiceResult<&'x mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() || !p.is_aligned() {
        return Err(ServiceError::invalid(format!(
            "{what} is null or misaligned"
        )));
    }
    // SAFETY: non-null, aligned, `len` writable values (caller), not aliased by host data.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Checks a plugin-given out pointer before anything is computed for it.
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> ServiceResult {
    if out.is_null() || !out.is_aligned() {
        return Err(ServiceError::invalid(format!(
            "{what} is null or misaligned"
        )));
    }
    Ok(())
}

/// Writes `value` through a plugin-given out pointer.
///
/// # Safety
/// `out` must be null or valid for writes of a `T` during the call.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T, what: &str) -> ServiceResult {
    check_out(out, what)?;
    // SAFETY: non-null, aligned, writable (caller).
    unsafe { out.write(value) };
    Ok(())
}

/// Parameter names as C strings that live for the whole process (a handful of distinct names
/// such as `layers.0.weight`), so `param_info` names never dangle.
pub(crate) fn interned(name: &str) -> *const c_char {
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

/// A shape as the ABI's `(ndim, [i64; 4])`.
pub(crate) fn shape4(shape: &[usize]) -> ServiceResult<(i32, [i64; 4])> {
    if shape.is_empty() || shape.len() > 4 {
        return Err(ServiceError::error(format!(
            "parameter has {} dimensions (the ABI allows 1..=4)",
            shape.len()
        )));
    }
    let mut s = [1i64; 4];
    for (d, &v) in s.iter_mut().zip(shape) {
        *d = v as i64;
    }
    Ok((shape.len() as i32, s))
}

/// A writable view of a host buffer.
pub(crate) fn tensor(data: crate::View, shape: &[usize]) -> ServiceResult<ClefTensor> {
    let (ndim, shape) = shape4(shape)?;
    Ok(ClefTensor {
        data: data.cast::<f32>(),
        numel: data.len() as i64,
        ndim,
        writable: 1,
        shape,
    })
}
