//! The real host's model behind the shared service layer (`clef-services`): the per-call
//! context behind `*mut ClefCtx` and the [`HOST`] service table.
//!
//! Every hook call builds a [`HostCtx`] on the stack over the core's [`Ctx`] (and the batch in
//! `before_batch`; no training context in `save_state`/`load_state`) and passes its address as
//! the opaque `ClefCtx`. The argument checks, the "allowed in" rules, the marshalling and the
//! panic catching of every service are `clef-services`' (shared with the SDK's `MockHost`);
//! this module only says what the services mean on the trainer's network, optimizer, scenario
//! and expert pool ([`CoreModel`], a [`ServiceModel`]). A refused service is logged at debug
//! level and kept as the call's last service error, which the host appends to the plugin's
//! own message if the hook then fails.

use std::borrow::Cow;
use std::cell::Cell;

use rand::RngCore;

use clef_abi::{
    ClefCtx, ClefHost, ClefTaskInfo, CLEF_LOG_DEBUG, CLEF_LOG_ERROR, CLEF_LOG_INFO, CLEF_LOG_TRACE,
    CLEF_LOG_WARN, CLEF_ROLE_BIAS, CLEF_ROLE_BUFFER, CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL,
    CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL,
};
use clef_backend::{Inputs, Network, ParamRole};
use clef_services::{
    Access, Activation, BatchRef, Facts, HostCall, ParamFacts, Rows, ServiceError, ServiceModel,
    ServiceResult, TaskFacts, View,
};

use clef_data::Setting;
use clef_engine::strategy::{Batch, Ctx};

/// One `batch_append` call: inputs, targets, and per-row masks (if given).
pub type Appended = (Vec<f32>, Vec<usize>, Option<Vec<bool>>);

/// The service table handed to every plugin's `create` (one static instance, valid forever).
///
/// Instantiated at `'static` lifetimes: a [`HostCtx`] borrows the trainer's state for one hook
/// only, and the services use a context only while the hook that received it runs.
pub(crate) static HOST: ClefHost = clef_services::table::<CoreModel<'static, 'static>>();

/// The real host's service table: what a plugin's `create` receives (one static table, valid forever).
pub fn host_table() -> &'static ClefHost {
    &HOST
}

/// What `*mut ClefCtx` points to during one hook call: the shared layer's per-call context over
/// the core's model (`repr(transparent)`, so the pointer is the [`HostCall`]'s, which the
/// services of [`host_table`] expect). The plugin hooks build one per call; it is public so
/// tests can call the real host's services as a plugin would (`tests/service_conformance/`).
#[repr(transparent)]
pub struct HostCtx<'a, 'c>(HostCall<CoreModel<'a, 'c>>);

impl<'a, 'c> HostCtx<'a, 'c> {
    /// A context over the core's `ctx` (none in `save_state`/`load_state`) and the batch in
    /// `before_batch`. The batch is only read during the hook: rows the plugin appends are kept
    /// aside ([`HostCtx::take_appended`]) so the view `batch_get` handed out stays valid.
    pub fn new(
        plugin: &'static str,
        ctx: Option<&'a mut Ctx<'c>>,
        batch: Option<&'a mut Batch>,
    ) -> Self {
        HostCtx(HostCall::new(CoreModel {
            plugin,
            ctx,
            batch: batch.map(|b| &*b),
            pending: Vec::new(),
            reports: Vec::new(),
        }))
    }

    /// The opaque pointer handed to the plugin (valid while `self` is neither moved nor
    /// dropped).
    pub fn as_raw(&mut self) -> *mut ClefCtx {
        self.0.as_raw()
    }

    /// The task info of the current task; `units` points into this context.
    pub(crate) fn task_info(&mut self) -> Result<ClefTaskInfo, ServiceError> {
        self.0.task_info()
    }

    /// The last refused service of this call (`service: detail`), taken.
    pub fn take_service_error(&mut self) -> Option<String> {
        self.0.take_service_error()
    }

    /// Records a failure of the host itself as the call's last service error.
    pub(crate) fn set_service_error(&mut self, message: String) {
        self.0.set_service_error(message);
    }

    /// Values the plugin reported in this call (`report`), in call order, taken.
    pub fn take_reports(&mut self) -> Vec<(String, f64)> {
        std::mem::take(&mut self.0.model_mut().reports)
    }

    /// Rows the plugin appended in this call (`batch_append`), taken: merge them into the
    /// batch after the hook returns.
    pub fn take_appended(&mut self) -> Vec<Appended> {
        std::mem::take(&mut self.0.model_mut().pending)
    }

    /// The core's context (tests).
    #[cfg(test)]
    fn core(&mut self) -> &mut Ctx<'c> {
        self.0.model_mut().ctx_mut()
    }
}

/// The real host's model: the trainer's context of one hook call.
pub(crate) struct CoreModel<'a, 'c> {
    /// Name of the plugin being called (for logs).
    plugin: &'static str,
    /// The core's context; `None` in `save_state` / `load_state`, which run outside training
    /// (the service layer then refuses every service but `log`).
    ctx: Option<&'a mut Ctx<'c>>,
    /// The batch; `None` outside `before_batch`.
    batch: Option<&'a Batch>,
    /// Rows appended in this call.
    pending: Vec<Appended>,
    /// Values reported in this call.
    reports: Vec<(String, f64)>,
}

/// The service layer only asks for training data when the hook has a training context.
const NO_CTX: &str =
    "a host service used the training context in save_state/load_state (a clef bug)";

impl<'c> CoreModel<'_, 'c> {
    fn ctx(&self) -> &Ctx<'c> {
        self.ctx.as_deref().expect(NO_CTX)
    }

    fn ctx_mut(&mut self) -> &mut Ctx<'c> {
        self.ctx.as_deref_mut().expect(NO_CTX)
    }
}

fn setting_code(s: Setting) -> i32 {
    match s {
        Setting::TaskIl => CLEF_SETTING_TASK_IL,
        Setting::ClassIl => CLEF_SETTING_CLASS_IL,
        Setting::DomainIl => CLEF_SETTING_DOMAIN_IL,
    }
}

/// A [`Ctx`] service's failure as the service layer's status.
fn ctx_service(e: clef_engine::strategy::ServiceError) -> ServiceError {
    match e {
        clef_engine::strategy::ServiceError::NotAllowed(m) => ServiceError::not_allowed(m),
        clef_engine::strategy::ServiceError::Failed(m) => ServiceError::error(m),
    }
}

fn backend(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::error(e.to_string())
}

fn inputs(x: &[f32], rows: usize, dim: usize) -> ServiceResult<Inputs<'_>> {
    Inputs::new(x, rows, dim).map_err(|e| ServiceError::invalid(e.to_string()))
}

fn emit(plugin: &str, level: i32, text: &str) {
    match level {
        CLEF_LOG_ERROR => tracing::error!(target: "plugin", plugin, "{text}"),
        CLEF_LOG_WARN => tracing::warn!(target: "plugin", plugin, "{text}"),
        CLEF_LOG_DEBUG => tracing::debug!(target: "plugin", plugin, "{text}"),
        CLEF_LOG_TRACE => tracing::trace!(target: "plugin", plugin, "{text}"),
        CLEF_LOG_INFO => tracing::info!(target: "plugin", plugin, "{text}"),
        _ => tracing::info!(target: "plugin", plugin, level, "{text}"),
    }
}

impl ServiceModel for CoreModel<'_, '_> {
    // task: access, logs, facts, task info, RNG
    fn access(&self) -> Access {
        match (&self.ctx, &self.batch) {
            (None, _) => Access::NoTraining,
            (Some(_), Some(_)) => Access::BeforeBatch,
            (Some(c), None) if c.boundary.is_some() => Access::Boundary,
            (Some(_), None) => Access::Training,
        }
    }

    fn log(&mut self, level: i32, message: &str) {
        emit(self.plugin, level, message);
    }

    fn log_without_ctx(level: i32, message: &str) {
        emit(
            CURRENT_PLUGIN.with(Cell::get).unwrap_or("?"),
            level,
            message,
        );
    }

    fn refused(&mut self, service: &'static str, error: &ServiceError) {
        tracing::debug!(
            target: "plugin",
            plugin = self.plugin,
            service,
            code = error.code,
            "host service refused: {}",
            error.message
        );
    }

    fn facts(&self) -> Facts {
        let c = self.ctx();
        let sc = c.scenario;
        Facts {
            setting: setting_code(sc.setting),
            task: c.task,
            num_tasks: sc.tasks.len(),
            input_dim: sc.input_dim(),
            num_outputs: sc.num_outputs,
            feature_dim: c.net.spec().feature_dim(),
            num_threads: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(0),
            seed: c.seed,
        }
    }

    fn task_facts(&self, task: usize) -> TaskFacts<'_> {
        let t = &self.ctx().scenario.tasks[task];
        TaskFacts {
            units: &t.units,
            train_samples: t.train.len(),
            test_samples: t.test.len(),
        }
    }

    fn rng_u64(&mut self) -> u64 {
        self.ctx_mut().rng.next_u64()
    }

    // params: parameter and gradient views, optimizer state
    fn param_count(&self) -> usize {
        self.ctx().net.params().len()
    }

    fn param_info(&self, index: usize) -> ParamFacts<'_> {
        let info = &self.ctx().net.params().infos()[index];
        ParamFacts {
            name: &info.name,
            shape: &info.shape,
            role: match info.role {
                ParamRole::Weight => CLEF_ROLE_WEIGHT,
                ParamRole::Bias => CLEF_ROLE_BIAS,
                ParamRole::Buffer => CLEF_ROLE_BUFFER,
            },
            layer: info.layer,
            numel: info.numel(),
        }
    }

    fn param_values(&mut self, index: usize) -> View {
        self.ctx_mut().net.params_mut().value_mut(index)
    }

    fn param_grads(&mut self, index: usize) -> View {
        self.ctx_mut().net.params_mut().grad_mut(index)
    }

    fn optimizer_slots(&self) -> Vec<&'static str> {
        self.ctx().optimizer.state_names().to_vec()
    }

    fn optimizer_state(&mut self, slot: &str, index: usize) -> Option<View> {
        self.ctx_mut()
            .optimizer
            .state_mut(slot, index)
            .map(|s| s as View)
    }

    // model: forward, features, vjp, NTK Grams
    fn forward(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        let c = self.ctx_mut();
        let dim = c.scenario.input_dim();
        c.net.forward(inputs(x, rows, dim)?, out).map_err(backend)
    }

    fn features(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        let c = self.ctx_mut();
        let dim = c.scenario.input_dim();
        c.net.features(inputs(x, rows, dim)?, out).map_err(backend)
    }

    fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> ServiceResult {
        let c = self.ctx_mut();
        let dim = c.scenario.input_dim();
        c.net.vjp(inputs(x, rows, dim)?, cotangent).map_err(backend)
    }

    fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        output: usize,
        out: &mut [f64],
    ) -> ServiceResult {
        let c = self.ctx_mut();
        let dim = c.scenario.input_dim();
        let (ia, ib) = (inputs(a, rows_a, dim)?, inputs(b, rows_b, dim)?);
        c.net.ntk_gram(ia, ib, output, out).map_err(backend)
    }

    // data: the batch, appended rows, task samples
    fn batch(&self) -> Option<BatchRef<'_>> {
        self.batch.map(|b| BatchRef {
            x: &b.x,
            targets: &b.targets,
            current_rows: b.current_rows,
            mask: b.mask.as_deref().map(Cow::Borrowed),
        })
    }

    fn append_rows(&mut self, rows: Rows) {
        self.pending.push((rows.x, rows.targets, rows.masks));
    }

    fn task_samples(
        &mut self,
        task: usize,
        start: usize,
        rows: usize,
        x: &mut Vec<f32>,
        targets: &mut Vec<usize>,
    ) -> ServiceResult {
        let sc = self.ctx().scenario;
        let positions: Vec<usize> = (start..start + rows).collect();
        sc.gather(&sc.tasks[task], false, &positions, x, targets);
        Ok(())
    }

    // train: gradients of plugin rows, per-sample powers, re-initialisation, training steps
    fn batch_grad(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
        out: &mut [f32],
    ) -> ServiceResult<f32> {
        self.ctx_mut()
            .batch_grad(x, rows, targets, masks, out)
            .map_err(ctx_service)
    }

    fn sample_grads(
        &mut self,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
        power: u32,
    ) -> ServiceResult {
        self.ctx_mut()
            .sample_grads(x, rows, cotangent, power)
            .map_err(ctx_service)
    }

    fn reinit(&mut self) -> ServiceResult {
        self.ctx_mut().reinit_network().map_err(ctx_service)
    }

    fn train_step(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> ServiceResult<f32> {
        self.ctx_mut()
            .train_step(x, rows, targets, masks)
            .map_err(ctx_service)
    }

    // report: numbers for the trial's record
    fn report(&mut self, key: String, value: f64) {
        self.reports.push((key, value));
    }

    // experts: the expert pool and per-task heads
    fn expert_count(&self) -> usize {
        self.ctx().experts.len()
    }

    fn active_expert(&self) -> usize {
        self.ctx().experts.active()
    }

    fn route_of(&self, task: usize) -> Option<usize> {
        self.ctx().experts.route_of(task)
    }

    fn expert_add(&mut self, hidden: Vec<usize>, activation: Activation) -> ServiceResult<usize> {
        let act = match activation {
            Activation::Relu => clef_backend::Activation::Relu,
            Activation::Tanh => clef_backend::Activation::Tanh,
            Activation::Sigmoid => clef_backend::Activation::Sigmoid,
        };
        let c = self.ctx_mut();
        c.experts
            .add(hidden, act, c.optimizer)
            .map_err(ServiceError::error)
    }

    fn conv_experts(&self) -> bool {
        self.ctx().experts.conv_experts()
    }

    fn expert_add_conv(
        &mut self,
        channels: Vec<usize>,
        hidden: Vec<usize>,
    ) -> ServiceResult<usize> {
        let c = self.ctx_mut();
        c.experts
            .add_conv(channels, hidden, c.optimizer)
            .map_err(ServiceError::error)
    }

    fn expert_select(&mut self, id: usize) -> ServiceResult {
        let c = self.ctx_mut();
        c.experts
            .select(c.task, id, c.net, c.optimizer)
            .map_err(ServiceError::error)
    }

    fn expert_freeze(&mut self, id: usize, frozen: bool) -> ServiceResult {
        let c = self.ctx_mut();
        c.experts
            .freeze(id, frozen, &**c.net)
            .map_err(ServiceError::error)
    }

    fn expert_params(&mut self, id: Option<usize>) -> ServiceResult<usize> {
        let c = self.ctx();
        match id {
            None if c.experts.enabled() => Ok(c.experts.total_params(c.scenario)),
            None => Ok(c.net.spec().num_params()),
            Some(id) => c
                .experts
                .params_of(id, c.scenario)
                .ok_or_else(|| ServiceError::invalid(format!("expert {id} does not exist"))),
        }
    }

    fn head_forward(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
    ) -> ServiceResult {
        let c = self.ctx_mut();
        let xs = inputs(x, rows, c.scenario.input_dim())?;
        with_head(c, task, false, |net| net.forward(xs, out).map_err(backend))
    }

    fn head_vjp(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
    ) -> ServiceResult {
        let c = self.ctx_mut();
        let xs = inputs(x, rows, c.scenario.input_dim())?;
        with_head(c, task, true, |net| net.vjp(xs, cotangent).map_err(backend))
    }
}

/// Runs `f` on the selected expert with task `task`'s head in its output layer, then puts the
/// loaded head back bit for bit. With `keep_head_grads`, the output layer's gradients are
/// restored too (the head is held fixed).
fn with_head<R>(
    c: &mut Ctx<'_>,
    task: usize,
    keep_head_grads: bool,
    f: impl FnOnce(&mut dyn Network) -> ServiceResult<R>,
) -> ServiceResult<R> {
    let head = c
        .experts
        .head_of(task, &**c.net)
        .map_err(ServiceError::invalid)?;
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

#[cfg(test)]
mod tests;
