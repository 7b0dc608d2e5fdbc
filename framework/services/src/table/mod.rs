//! The `extern "C"` services and the [`ClefHost`] table, generic over the host's model.
//!
//! Each service builds its body as a closure (outside any `unsafe` block, so every unsafe
//! operation in it carries its own block and SAFETY note) and runs it through [`service`],
//! which catches panics and records failures. Checks run in the order the host always ran
//! them, so a call with several problems gets the same status as before.
//!
//! One file per service family, the same families (and file names) as the SDK's `Ctx` in
//! `clef-sdk/src/ctx/`: `task` (log, RNG, task info), `params` (parameter and gradient views,
//! optimizer state), `model` (forward, features, vjp, NTK), `data` (the batch, task samples and
//! masks), `experts` (the expert pool and per-task heads), `train` (gradients of plugin-chosen
//! rows, per-sample gradient powers, re-initialisation and training steps on plugin data) and
//! `report` (results, extensions).

use std::panic::{catch_unwind, AssertUnwindSafe};

use clef_abi::{ClefCtx, ClefHost, CLEF_ABI_MAJOR, CLEF_ABI_MINOR, CLEF_INVALID_ARGUMENT, CLEF_OK};

use crate::{HostCall, ServiceError, ServiceModel, ServiceResult};

mod data;
mod experts;
mod model;
mod params;
mod report;
mod task;
mod train;

/// The service table for model `M`, by value (e.g. for a `static` of the host).
pub const fn table<M: ServiceModel>() -> ClefHost {
    ClefHost {
        abi_major: CLEF_ABI_MAJOR,
        abi_minor: CLEF_ABI_MINOR,
        struct_size: std::mem::size_of::<ClefHost>() as u32,
        log: task::svc_log::<M>,
        rng_u64: task::svc_rng_u64::<M>,
        task_info: task::svc_task_info::<M>,
        param_count: params::svc_param_count::<M>,
        param_info: params::svc_param_info::<M>,
        param_values: params::svc_param_values::<M>,
        param_grads: params::svc_param_grads::<M>,
        optimizer_state: params::svc_optimizer_state::<M>,
        forward: model::svc_forward::<M>,
        features: model::svc_features::<M>,
        vjp: model::svc_vjp::<M>,
        ntk_gram: model::svc_ntk_gram::<M>,
        batch_get: data::svc_batch_get::<M>,
        batch_append: data::svc_batch_append::<M>,
        task_samples: data::svc_task_samples::<M>,
        task_mask: data::svc_task_mask::<M>,
        expert_add: experts::svc_expert_add::<M>,
        expert_select: experts::svc_expert_select::<M>,
        get_extension: report::svc_get_extension,
        report: report::svc_report::<M>,
        expert_freeze: experts::svc_expert_freeze::<M>,
        expert_params: experts::svc_expert_params::<M>,
        head_forward: experts::svc_head_forward::<M>,
        head_vjp: experts::svc_head_vjp::<M>,
        expert_add_conv: experts::svc_expert_add_conv::<M>,
        batch_grad: train::svc_batch_grad::<M>,
        sample_grads: train::svc_sample_grads::<M>,
        reinit: train::svc_reinit::<M>,
        train_step: train::svc_train_step::<M>,
    }
}

/// The service table for model `M` (one per model type, valid forever). Pass it to a plugin's
/// `create` and the pointer of a [`HostCall<M>`] as every hook's `ctx`.
///
/// A model type with lifetimes (one borrowing the host's state for a hook) is instantiated at
/// `'static`: the table's services only use a context while the hook that received it runs.
pub fn host_table<M: ServiceModel>() -> &'static ClefHost {
    const { &table::<M>() }
}

/// Runs a service body over the context: null context → `CLEF_INVALID_ARGUMENT`; a failure is
/// recorded in the context and returned as its code; a panic becomes `CLEF_ERROR`.
///
/// # Safety
/// `raw` must be null or the pointer of a live [`HostCall<M>`] passed to the running hook.
unsafe fn service<M: ServiceModel>(
    raw: *mut ClefCtx,
    name: &'static str,
    f: impl FnOnce(&mut HostCall<M>) -> ServiceResult,
) -> i32 {
    if raw.is_null() {
        return CLEF_INVALID_ARGUMENT;
    }
    // SAFETY: the ABI lets plugins call services only during a hook with that hook's ctx,
    // which is a live `HostCall<M>` owned by the host; hooks of one instance never run
    // concurrently, so this is the only reference while the service runs.
    let h = unsafe { &mut *raw.cast::<HostCall<M>>() };
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut *h)))
        .unwrap_or_else(|_| Err(ServiceError::error("the host panicked (a clef bug)")));
    match result {
        Ok(()) => CLEF_OK,
        Err(e) => {
            let _ = catch_unwind(AssertUnwindSafe(|| h.model.refused(name, &e)));
            h.service_error = Some(format!("{name}: {}", e.message));
            e.code
        }
    }
}
