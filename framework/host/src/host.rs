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
    CLEF_LOG_WARN, CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT, CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL,
    CLEF_SETTING_TASK_IL,
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
/// tests can call the real host's services as a plugin would (`tests/service_conformance.rs`).
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
    fn access(&self) -> Access {
        match (&self.ctx, &self.batch) {
            (None, _) => Access::NoTraining,
            (Some(_), Some(_)) => Access::BeforeBatch,
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
        let c = self.ctx();
        let dim = c.scenario.input_dim();
        let (ia, ib) = (inputs(a, rows_a, dim)?, inputs(b, rows_b, dim)?);
        clef_backend::ntk::ntk_gram(c.net.spec(), c.net.params(), ia, ib, output, out)
            .map_err(backend)
    }

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

    fn report(&mut self, key: String, value: f64) {
        self.reports.push((key, value));
    }

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
mod tests {
    use std::sync::Arc;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use clef_backend::{
        build_network, Activation, Init, MlpSpec, Network, Optimizer, OptimizerSpec,
    };

    use std::ffi::{CStr, CString};

    use clef_abi::{
        ClefBatch, ClefParamInfo, ClefTensor, CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_OK,
        CLEF_SPLIT_TEST, CLEF_SPLIT_TRAIN, CLEF_UNSUPPORTED,
    };
    use clef_services::MAX_REPORT_KEY;

    use super::*;
    use clef_data::scenario::Scenario;
    use clef_data::spec::{ScenarioConfig, ScenarioKind};

    const DIM: usize = 5;

    fn scenario(setting: Setting) -> Scenario {
        let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, DIM, 6, 3, 1.0, 0));
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
        clef_data::scenario::build(&cfg, data, setting, 0).unwrap()
    }

    struct World {
        sc: Scenario,
        net: Box<dyn Network>,
        experts: clef_engine::experts::Experts,
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
            experts: clef_engine::experts::Experts::new(&spec, 3, sc.tasks.len()),
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
                assert!(h.take_service_error().unwrap().contains("out of range"));

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
            let c = h.core();
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
            let c = h.core();
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
                assert!(h.take_service_error().unwrap().contains("out_len is 7"));
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
                    .take_service_error()
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
            for (x, t, m) in h.take_appended() {
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
                assert!(h.take_service_error().unwrap().contains("must be finite"));
            }
            assert_eq!(
                h.take_reports(),
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
        assert!(h
            .take_service_error()
            .unwrap()
            .contains("save_state/load_state"));
    }
}
