//! An in-process mock host for unit-testing plugins through their C entry points (feature
//! `testing`).
//!
//! [`MockHost`] is a model of the `clef-services` service layer, the same layer the real host
//! uses: every argument check, every "allowed in" rule (no training context in
//! `save_state`/`load_state`, the batch services only in `before_batch`, `task_samples` only
//! for tasks up to the current one and only from the training split, the expert services only
//! in task-IL, ...), every error message and status code is the real host's by construction.
//! `framework/core/tests/service_conformance.rs` runs the same calls against both.
//!
//! Its model is a single linear layer, `logits = W x + b` with `W = params[0]`
//! (`[num_outputs, input_dim]`) and `b = params[1]`, so `forward`, `features` (the identity:
//! `feature_dim == input_dim`), `vjp` and `ntk_gram` give exact, checkable answers (the real
//! host with an MLP without hidden layer gives the same numbers). Tests may replace
//! [`MockState::params`] by any tensors (e.g. a deeper model's shapes): the views then work
//! on them, `features` stays the identity, and `forward`, `vjp`, `ntk_gram` and the loss of
//! [`MockPlugin::train_step`] answer `CLEF_UNSUPPORTED`.
//!
//! Expert pools are bookkeeping over the one linear model ([`MockState::experts`]): `expert_add`
//! records the architecture, `expert_select` routes the current task (and resets the optimizer
//! state, as the real host does), `expert_freeze` marks it, and `expert_params` counts exactly
//! as the real host (body plus `n_units * (feature_dim + 1)` per routed task; expert 0 is the
//! linear model, whose body is empty; before the pool is used, the model's parameter count).
//! `head_forward` is `forward` and `head_vjp` adds nothing (the linear model has no body).
//!
//! [`MockHost::step`] applies one optimizer step (SGD, or Adam after [`MockHost::use_adam`],
//! with the update rules of the real host's optimizer), and [`MockPlugin::train_step`] runs a
//! whole training step through the plugin's hooks, so `after_step` logic can be unit-tested.
//!
//! [`MockPlugin`] creates an instance from a descriptor and calls its hooks against a
//! `MockHost`, turning non-zero statuses into [`HookError`]s with the plugin's `last_error`.
//!
//! ```
//! use clef_sdk::testing::{MockHost, MockPlugin};
//! use clef_sdk::{Ctx, NoConfig, Result, Strategy};
//!
//! struct Decay;
//! impl Strategy for Decay {
//!     const NAME: &'static str = "decay";
//!     type Config = NoConfig;
//!     type State = clef_sdk::NoState;
//!     fn new(_: NoConfig) -> Result<Self> {
//!         Ok(Decay)
//!     }
//!     fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
//!         let (w, g) = ctx.values_and_grads(0)?;
//!         g.iter_mut().zip(w).for_each(|(g, w)| *g += 0.5 * w);
//!         Ok(())
//!     }
//! }
//!
//! let mut host = MockHost::new(3, 4, 2);
//! let mut plugin = MockPlugin::create::<Decay>("").unwrap();
//! plugin.after_backward(&mut host, 1.0).unwrap();
//! let state = host.state();
//! assert_eq!(state.params[0].grads[1], 0.5 * state.params[0].values[1]);
//! ```

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::ptr;
use std::sync::Mutex;

use clef_abi::{
    ClefCtx, ClefHost, ClefPluginDescriptor, ClefTaskInfo, CLEF_ERROR, CLEF_INVALID_ARGUMENT,
    CLEF_OK, CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT, CLEF_SETTING_TASK_IL, CLEF_UNSUPPORTED,
};
use clef_services::{
    Access, Activation, BatchRef, Facts, HostCall, ParamFacts, Rows, ServiceError, ServiceModel,
    ServiceResult, TaskFacts, View, ViewOf,
};

use crate::export::{entry, DescriptorCell};
use crate::Strategy;

/// The hook a [`MockPlugin`] is running (the service layer's rules depend on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No hook is running (services called directly through [`MockHost::raw`] behave as in a
    /// training hook such as `after_backward`).
    Idle,
    /// `on_model_built`.
    ModelBuilt,
    /// `on_task_start`.
    TaskStart,
    /// `before_batch`.
    BeforeBatch,
    /// `after_backward`.
    AfterBackward,
    /// `after_step`.
    AfterStep,
    /// `on_task_end`.
    TaskEnd,
    /// `before_eval`.
    BeforeEval,
    /// `after_eval`.
    AfterEval,
    /// `save_state`.
    SaveState,
    /// `load_state`.
    LoadState,
}

impl Phase {
    /// What the service layer allows in this phase.
    fn access(self) -> Access {
        match self {
            Phase::SaveState | Phase::LoadState => Access::NoTraining,
            Phase::BeforeBatch => Access::BeforeBatch,
            _ => Access::Training,
        }
    }
}

/// One parameter tensor of the mock model.
#[derive(Debug, Clone)]
pub struct MockParam {
    /// Name returned by `param_info`.
    pub name: CString,
    /// Shape (1 to 4 dimensions).
    pub shape: Vec<usize>,
    /// `CLEF_ROLE_WEIGHT` or `CLEF_ROLE_BIAS`.
    pub role: i32,
    /// Layer index.
    pub layer: usize,
    /// Values (`param_values`).
    pub values: Vec<f32>,
    /// Gradient (`param_grads`).
    pub grads: Vec<f32>,
    /// The `"momentum"` optimizer slot (SGD), if any.
    pub momentum: Option<Vec<f32>>,
    /// The `"exp_avg"` optimizer slot (Adam), if any.
    pub exp_avg: Option<Vec<f32>>,
    /// The `"exp_avg_sq"` optimizer slot (Adam), if any.
    pub exp_avg_sq: Option<Vec<f32>>,
}

/// One task of the mock scenario.
#[derive(Debug, Clone)]
pub struct MockTask {
    /// Output units of the task's head.
    pub units: Vec<usize>,
    /// Training inputs, `train_y.len() * input_dim`.
    pub train_x: Vec<f32>,
    /// Training targets.
    pub train_y: Vec<usize>,
    /// Test inputs.
    pub test_x: Vec<f32>,
    /// Test targets.
    pub test_y: Vec<usize>,
}

/// Rows a plugin appended with `batch_append`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendedRows {
    /// Inputs.
    pub x: Vec<f32>,
    /// Targets.
    pub targets: Vec<usize>,
    /// Per-row unit masks (`rows * num_outputs`), if given.
    pub masks: Option<Vec<bool>>,
}

/// The mock's optimizer ([`MockHost::step`]): the real host's update rules (PyTorch's
/// `torch.optim.SGD` with dampening 0, `torch.optim.Adam` with L2 weight decay added to the
/// gradient).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MockOptimizer {
    /// SGD with optional (Nesterov) momentum; state slot `momentum`.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum coefficient (0 = plain SGD).
        momentum: f32,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// Adam; state slots `exp_avg`, `exp_avg_sq`.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator epsilon.
        eps: f32,
        /// L2 weight decay added to the gradient.
        weight_decay: f32,
    },
}

impl MockOptimizer {
    /// The default of a new mock host: SGD, `lr = 0.1`, `momentum = 0.9`.
    pub const SGD: MockOptimizer = MockOptimizer::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    /// What [`MockHost::use_adam`] selects: Adam with PyTorch's defaults (`lr = 1e-3`,
    /// betas `(0.9, 0.999)`, `eps = 1e-8`).
    pub const ADAM: MockOptimizer = MockOptimizer::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
}

/// Everything the mock host holds; public so tests can set up and inspect it.
#[derive(Debug)]
pub struct MockState {
    /// Parameter tensors; `params[0]` and `params[1]` are the linear model's weight and bias.
    pub params: Vec<MockParam>,
    /// `CLEF_SETTING_*`.
    pub setting: i32,
    /// Index of the current task.
    pub task: usize,
    /// The tasks.
    pub tasks: Vec<MockTask>,
    /// Features per sample.
    pub input_dim: usize,
    /// Logits.
    pub num_outputs: usize,
    /// `num_threads` hint.
    pub num_threads: u32,
    /// Trial seed (also seeds the RNG stream).
    pub seed: u64,
    /// The current batch's inputs (`before_batch`).
    pub batch_x: Vec<f32>,
    /// The current batch's targets.
    pub batch_targets: Vec<usize>,
    /// Rows of the batch from the current task's stream.
    pub batch_current_rows: usize,
    /// Rows appended by the plugin.
    pub appended: Vec<AppendedRows>,
    /// Log lines received with this host's context: `(CLEF_LOG_* level, message)`.
    pub logs: Vec<(i32, String)>,
    /// Whether `ntk_gram` is supported (default true).
    pub ntk_supported: bool,
    /// Values received by `report`: `(task, key, value)` in call order.
    pub reports: Vec<(usize, String, f64)>,
    /// The running hook.
    pub phase: Phase,
    /// Expert pool: `(hidden widths, activation code, frozen)` per expert; expert 0 is the
    /// linear model (no hidden layer).
    pub experts: Vec<(Vec<usize>, i32, bool)>,
    /// The selected expert.
    pub active_expert: usize,
    /// Expert each task is routed to.
    pub routes: Vec<Option<usize>>,
    /// The optimizer [`MockHost::step`] applies.
    pub optimizer: MockOptimizer,
    /// Optimizer steps since the start or the last `expert_select` (Adam's bias correction
    /// and SGD's first momentum step depend on it).
    pub steps: u64,
    /// True once a plugin used the expert pool (`expert_params(-1)` then counts the pool).
    pool_used: bool,
    rng: u64,
}

/// A host implemented over `Vec` buffers; see the [module docs](self).
pub struct MockHost {
    call: Box<HostCall<MockModel>>,
}

/// The mock's [`ServiceModel`]: the state, and nothing but the model's arithmetic.
struct MockModel {
    state: MockState,
}

/// The mock host's service table: the shared layer over [`MockModel`].
static HOST_TABLE: ClefHost = clef_services::table::<MockModel>();

/// Deterministic pseudo-random values in `[-1, 1)`.
fn noise(i: u64) -> f32 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

impl MockHost {
    /// A linear model `input_dim -> num_outputs` (small deterministic weights, zero gradients,
    /// zero momentum), and `num_tasks` task-IL tasks splitting the output units evenly, each
    /// with 8 training and 4 test samples. The current task is 0; the batch is the first 4
    /// training samples of task 0. The optimizer is [`MockOptimizer::SGD`].
    pub fn new(input_dim: usize, num_outputs: usize, num_tasks: usize) -> Self {
        let num_tasks = num_tasks.max(1);
        let weight: Vec<f32> = (0..num_outputs * input_dim)
            .map(|i| 0.1 * noise(i as u64))
            .collect();
        let bias: Vec<f32> = (0..num_outputs).map(|o| 0.01 * o as f32).collect();
        let params = vec![
            MockParam {
                name: CString::new("layers.0.weight").unwrap_or_default(),
                shape: vec![num_outputs, input_dim],
                role: CLEF_ROLE_WEIGHT,
                layer: 0,
                grads: vec![0.0; weight.len()],
                momentum: Some(vec![0.0; weight.len()]),
                exp_avg: None,
                exp_avg_sq: None,
                values: weight,
            },
            MockParam {
                name: CString::new("layers.0.bias").unwrap_or_default(),
                shape: vec![num_outputs],
                role: CLEF_ROLE_BIAS,
                layer: 0,
                grads: vec![0.0; num_outputs],
                momentum: Some(vec![0.0; num_outputs]),
                exp_avg: None,
                exp_avg_sq: None,
                values: bias,
            },
        ];
        let per_task = (num_outputs / num_tasks).max(1);
        let tasks: Vec<MockTask> = (0..num_tasks)
            .map(|t| {
                let units: Vec<usize> =
                    (t * per_task..((t + 1) * per_task).min(num_outputs)).collect();
                let units = if units.is_empty() { vec![0] } else { units };
                let make = |rows: usize, salt: u64| {
                    let x: Vec<f32> = (0..rows * input_dim)
                        .map(|i| noise(salt * 1_000_003 + t as u64 * 10_007 + i as u64))
                        .collect();
                    let y: Vec<usize> = (0..rows).map(|r| units[r % units.len()]).collect();
                    (x, y)
                };
                let (train_x, train_y) = make(8, 1);
                let (test_x, test_y) = make(4, 2);
                MockTask {
                    units,
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                }
            })
            .collect();
        let batch_x = tasks[0].train_x[..4 * input_dim].to_vec();
        let batch_targets = tasks[0].train_y[..4].to_vec();
        let state = MockState {
            params,
            setting: CLEF_SETTING_TASK_IL,
            task: 0,
            tasks,
            input_dim,
            num_outputs,
            num_threads: 1,
            seed: 42,
            batch_x,
            batch_targets,
            batch_current_rows: 4,
            appended: Vec::new(),
            logs: Vec::new(),
            ntk_supported: true,
            reports: Vec::new(),
            phase: Phase::Idle,
            experts: vec![(Vec::new(), 0, false)],
            active_expert: 0,
            routes: vec![None; num_tasks],
            optimizer: MockOptimizer::SGD,
            steps: 0,
            pool_used: false,
            rng: 42,
        };
        Self {
            call: Box::new(HostCall::new(MockModel { state })),
        }
    }

    /// Switches to Adam ([`MockOptimizer::ADAM`]): every parameter's optimizer state changes
    /// from SGD's `momentum` to Adam's `exp_avg` and `exp_avg_sq` (zeros), as the real host
    /// does with `optimizer = "adam"`.
    pub fn use_adam(&mut self) {
        let s = self.state_mut();
        s.optimizer = MockOptimizer::ADAM;
        s.steps = 0;
        for p in &mut s.params {
            p.momentum = None;
            p.exp_avg = Some(vec![0.0; p.values.len()]);
            p.exp_avg_sq = Some(vec![0.0; p.values.len()]);
        }
    }

    /// The last value reported for `key` in `task`, if any.
    pub fn reported(&self, task: usize, key: &str) -> Option<f64> {
        self.state()
            .reports
            .iter()
            .rev()
            .find(|(t, k, _)| *t == task && k == key)
            .map(|r| r.2)
    }

    /// The host's state, to inspect.
    pub fn state(&self) -> &MockState {
        &self.call.model().state
    }

    /// The host's state, to set up (params, current task, batch, ...).
    pub fn state_mut(&mut self) -> &mut MockState {
        &mut self.call.model_mut().state
    }

    /// The service table (shared by every mock host) and this host's context, to call
    /// services directly (they then run with the rules of [`MockState::phase`]).
    pub fn raw(&mut self) -> (*const ClefHost, *mut ClefCtx) {
        (&HOST_TABLE, self.ctx())
    }

    fn ctx(&mut self) -> *mut ClefCtx {
        self.call.as_raw()
    }

    /// The last service this host refused or failed (`service: detail`), taken: the message
    /// the real host appends to a failing hook's error.
    pub fn take_service_error(&mut self) -> Option<String> {
        self.call.take_service_error()
    }

    /// A copy of every parameter tensor's values.
    pub fn values(&self) -> Vec<Vec<f32>> {
        self.state()
            .params
            .iter()
            .map(|p| p.values.clone())
            .collect()
    }

    /// A copy of every parameter tensor's gradient.
    pub fn grads(&self) -> Vec<Vec<f32>> {
        self.state()
            .params
            .iter()
            .map(|p| p.grads.clone())
            .collect()
    }

    /// Sets deterministic non-zero gradients, `0.01·((7i + 3j) mod 5) − 0.02` for entry `j` of
    /// tensor `i` (so a test checks that a plugin *adds* to them, not overwrites them).
    pub fn seed_grads(&mut self) {
        for (i, p) in self.state_mut().params.iter_mut().enumerate() {
            for (j, g) in p.grads.iter_mut().enumerate() {
                *g = 0.01 * ((i * 7 + j * 3) % 5) as f32 - 0.02;
            }
        }
    }

    /// Moves every parameter deterministically: entry `j` of tensor `i` by
    /// `scale·((13i + 5j) mod 7 − 3)`.
    pub fn perturb(&mut self, scale: f32) {
        for (i, p) in self.state_mut().params.iter_mut().enumerate() {
            for (j, v) in p.values.iter_mut().enumerate() {
                *v += scale * (((i * 13 + j * 5) % 7) as f32 - 3.0);
            }
        }
    }

    /// Sets every gradient to zero (what the trainer does before each batch's loss).
    pub fn zero_grads(&mut self) {
        for p in &mut self.state_mut().params {
            p.grads.fill(0.0);
        }
    }

    /// One optimizer step on every parameter tensor from its current gradient, with
    /// [`MockState::optimizer`]'s rule (the real host's: PyTorch's SGD with dampening 0 —
    /// the first momentum step stores the gradient itself — and Adam with bias correction).
    /// A missing state slot starts at zero.
    pub fn step(&mut self) {
        let s = self.state_mut();
        s.steps += 1;
        let t = s.steps;
        match s.optimizer {
            MockOptimizer::Sgd {
                lr,
                momentum,
                weight_decay,
                nesterov,
            } => {
                for p in &mut s.params {
                    if momentum == 0.0 {
                        for (w, &g) in p.values.iter_mut().zip(&p.grads) {
                            *w -= lr * (g + weight_decay * *w);
                        }
                        continue;
                    }
                    let n = p.values.len();
                    let m = p.momentum.get_or_insert_with(|| vec![0.0; n]);
                    for ((w, &g), b) in p.values.iter_mut().zip(&p.grads).zip(m.iter_mut()) {
                        let d = g + weight_decay * *w;
                        *b = if t == 1 { d } else { momentum * *b + d };
                        let step = if nesterov { d + momentum * *b } else { *b };
                        *w -= lr * step;
                    }
                }
            }
            MockOptimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let ti = t.min(i32::MAX as u64) as i32;
                let (bc1, bc2) = (1.0 - beta1.powi(ti), 1.0 - beta2.powi(ti));
                for p in &mut s.params {
                    let n = p.values.len();
                    let m = p.exp_avg.get_or_insert_with(|| vec![0.0; n]);
                    let v = p.exp_avg_sq.get_or_insert_with(|| vec![0.0; n]);
                    for (((w, &g), m), v) in p
                        .values
                        .iter_mut()
                        .zip(&p.grads)
                        .zip(m.iter_mut())
                        .zip(v.iter_mut())
                    {
                        let gk = g + weight_decay * *w;
                        *m = beta1 * *m + (1.0 - beta1) * gk;
                        *v = beta2 * *v + (1.0 - beta2) * gk * gk;
                        let denom = (*v / bc2).sqrt() + eps;
                        *w -= lr * (*m / bc1) / denom;
                    }
                }
            }
        }
    }

    /// Zeroes the gradients and adds the gradient of the batch's loss, as the trainer does
    /// before `after_backward`: the mean softmax cross-entropy of the linear model over the
    /// batch ([`MockState::batch_x`], [`MockState::batch_targets`]) and the rows appended
    /// since `appended[first_appended..]`, each row's softmax over its class mask (appended
    /// rows with masks: theirs; the others: the current task's training units, as
    /// [`Ctx::training_units`](crate::Ctx::training_units) gives them). Returns the loss.
    pub fn loss_backward(&mut self, first_appended: usize) -> Result<f32, HookError> {
        let s = self.state_mut();
        let (d, k) = (s.input_dim, s.num_outputs);
        let train = training_mask(s);
        /// One row of the loss: inputs, target, class mask.
        type Row<'r> = (&'r [f32], usize, Option<&'r [bool]>);
        let mut rows: Vec<Row<'_>> = s
            .batch_x
            .chunks_exact(d.max(1))
            .zip(&s.batch_targets)
            .map(|(x, &t)| (x, t, train.as_deref()))
            .collect();
        for a in s.appended.iter().skip(first_appended) {
            for (r, (x, &t)) in a.x.chunks_exact(d.max(1)).zip(&a.targets).enumerate() {
                let mask = match &a.masks {
                    Some(m) => m.get(r * k..(r + 1) * k),
                    None => train.as_deref(),
                };
                rows.push((x, t, mask));
            }
        }
        let unsupported = |message: String| HookError {
            status: CLEF_UNSUPPORTED,
            message,
        };
        let Some((w, b)) = linear(s) else {
            return Err(unsupported(
                "the mock's loss needs its linear model (params[0], params[1])".into(),
            ));
        };
        let n = rows.len().max(1) as f32;
        let mut gw = vec![0.0f32; k * d];
        let mut gb = vec![0.0f32; k];
        let mut loss = 0.0f32;
        for (x, t, mask) in &rows {
            let allowed = |o: usize| mask.is_none_or(|m| m.get(o).copied().unwrap_or(false));
            if *t >= k || !allowed(*t) {
                return Err(HookError {
                    status: CLEF_INVALID_ARGUMENT,
                    message: format!("target {t} is not in its row's class mask"),
                });
            }
            let z: Vec<f32> = (0..k)
                .map(|o| (0..d).map(|i| w[o * d + i] * x[i]).sum::<f32>() + b[o])
                .collect();
            let max = (0..k)
                .filter(|&o| allowed(o))
                .map(|o| z[o])
                .fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = (0..k)
                .map(|o| if allowed(o) { (z[o] - max).exp() } else { 0.0 })
                .collect();
            let sum: f32 = e.iter().sum();
            loss -= (e[*t] / sum).ln() / n;
            for o in 0..k {
                let dz = (e[o] / sum - f32::from(o == *t)) / n;
                gb[o] += dz;
                for i in 0..d {
                    gw[o * d + i] += dz * x[i];
                }
            }
        }
        s.params[0].grads.copy_from_slice(&gw);
        s.params[1].grads.copy_from_slice(&gb);
        for p in s.params.iter_mut().skip(2) {
            p.grads.fill(0.0);
        }
        Ok(loss)
    }
}

/// Log lines received with a null context (from any mock host), `(level, message)`.
pub fn global_logs() -> Vec<(i32, String)> {
    GLOBAL_LOGS.lock().map(|l| l.clone()).unwrap_or_default()
}

static GLOBAL_LOGS: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// Whether `key` is a valid `report` key (the real host's rule): 1 to 128 printable ASCII
/// characters, no spaces.
pub fn valid_report_key(key: &[u8]) -> bool {
    clef_services::valid_report_key(key)
}

/// The linear model's weight and bias, if `params` has that shape.
fn linear(s: &MockState) -> Option<(&[f32], &[f32])> {
    let (w, b) = (s.params.first()?, s.params.get(1)?);
    (w.values.len() == s.num_outputs * s.input_dim && b.values.len() == s.num_outputs)
        .then_some((&w.values, &b.values))
}

/// The training mask of the current task's rows (`None` = every unit).
fn training_mask(s: &MockState) -> Option<Vec<bool>> {
    if s.task >= s.tasks.len() {
        return None;
    }
    let units =
        clef_services::training_units(s.setting, s.task, s.num_outputs, |j| &s.tasks[j].units)?;
    if units.len() == s.num_outputs {
        return None;
    }
    let mut mask = vec![false; s.num_outputs];
    for u in units {
        mask[u] = true;
    }
    Some(mask)
}

fn not_linear() -> ServiceError {
    ServiceError::unsupported(
        "the mock host's model services need its linear model (params[0] of shape \
         [num_outputs, input_dim], params[1] of shape [num_outputs])",
    )
}

impl ServiceModel for MockModel {
    fn access(&self) -> Access {
        self.state.phase.access()
    }

    fn log(&mut self, level: i32, message: &str) {
        self.state.logs.push((level, message.to_owned()));
    }

    fn log_without_ctx(level: i32, message: &str) {
        if let Ok(mut logs) = GLOBAL_LOGS.lock() {
            logs.push((level, message.to_owned()));
        }
    }

    fn facts(&self) -> Facts {
        let s = &self.state;
        Facts {
            setting: s.setting,
            task: s.task,
            num_tasks: s.tasks.len(),
            input_dim: s.input_dim,
            num_outputs: s.num_outputs,
            feature_dim: s.input_dim,
            num_threads: s.num_threads,
            seed: s.seed,
        }
    }

    fn task_facts(&self, task: usize) -> TaskFacts<'_> {
        let t = &self.state.tasks[task];
        TaskFacts {
            units: &t.units,
            train_samples: t.train_y.len(),
            test_samples: t.test_y.len(),
        }
    }

    fn rng_u64(&mut self) -> u64 {
        // splitmix64
        let s = &mut self.state;
        s.rng = s.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn param_count(&self) -> usize {
        self.state.params.len()
    }

    fn param_info(&self, index: usize) -> ParamFacts<'_> {
        let p = &self.state.params[index];
        ParamFacts {
            name: p.name.to_str().unwrap_or("?"),
            shape: &p.shape,
            role: p.role,
            layer: p.layer,
            numel: p.values.len(),
        }
    }

    fn param_values(&mut self, index: usize) -> View {
        // `Vec::as_mut_ptr` (through `view`) creates no reference to the elements, so views
        // the plugin already holds stay valid.
        self.state.params[index].values.view()
    }

    fn param_grads(&mut self, index: usize) -> View {
        self.state.params[index].grads.view()
    }

    fn optimizer_slots(&self) -> Vec<&'static str> {
        let Some(p) = self.state.params.first() else {
            return Vec::new();
        };
        [
            ("momentum", p.momentum.is_some()),
            ("exp_avg", p.exp_avg.is_some()),
            ("exp_avg_sq", p.exp_avg_sq.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, on)| on.then_some(n))
        .collect()
    }

    fn optimizer_state(&mut self, slot: &str, index: usize) -> Option<View> {
        let p = &mut self.state.params[index];
        match slot {
            "momentum" => p.momentum.as_mut().map(ViewOf::view),
            "exp_avg" => p.exp_avg.as_mut().map(ViewOf::view),
            "exp_avg_sq" => p.exp_avg_sq.as_mut().map(ViewOf::view),
            _ => None,
        }
    }

    fn forward(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        let s = &self.state;
        let (d, k) = (s.input_dim, s.num_outputs);
        let (w, b) = linear(s).ok_or_else(not_linear)?;
        out.clear();
        for r in 0..rows {
            for o in 0..k {
                let dot: f32 = (0..d).map(|i| w[o * d + i] * x[r * d + i]).sum();
                out.push(dot + b[o]);
            }
        }
        Ok(())
    }

    fn features(&mut self, x: &[f32], _rows: usize, out: &mut Vec<f32>) -> ServiceResult {
        out.clear();
        out.extend_from_slice(x);
        Ok(())
    }

    fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> ServiceResult {
        let s = &mut self.state;
        let (d, k) = (s.input_dim, s.num_outputs);
        linear(s).ok_or_else(not_linear)?;
        for r in 0..rows {
            for o in 0..k {
                let co = cotangent[r * k + o];
                for i in 0..d {
                    s.params[0].grads[o * d + i] += co * x[r * d + i];
                }
                s.params[1].grads[o] += co;
            }
        }
        Ok(())
    }

    fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        _output: usize,
        out: &mut [f64],
    ) -> ServiceResult {
        let s = &self.state;
        if !s.ntk_supported {
            return Err(ServiceError::unsupported(
                "ntk_gram is switched off on this mock host (ntk_supported = false)",
            ));
        }
        linear(s).ok_or_else(not_linear)?;
        let d = s.input_dim;
        // For a linear model, d f_o / d W[o, :] = x and d f_o / d b[o] = 1.
        for i in 0..rows_a {
            for j in 0..rows_b {
                let dot: f64 = (0..d)
                    .map(|t| f64::from(a[i * d + t]) * f64::from(b[j * d + t]))
                    .sum();
                out[i * rows_b + j] = dot + 1.0;
            }
        }
        Ok(())
    }

    fn batch(&self) -> Option<BatchRef<'_>> {
        let s = &self.state;
        Some(BatchRef {
            x: &s.batch_x,
            targets: &s.batch_targets,
            current_rows: s.batch_current_rows,
            mask: training_mask(s).map(Cow::Owned),
        })
    }

    fn append_rows(&mut self, rows: Rows) {
        self.state.appended.push(AppendedRows {
            x: rows.x,
            targets: rows.targets,
            masks: rows.masks,
        });
    }

    fn task_samples(
        &mut self,
        task: usize,
        start: usize,
        rows: usize,
        x: &mut Vec<f32>,
        targets: &mut Vec<usize>,
    ) -> ServiceResult {
        let s = &self.state;
        let d = s.input_dim;
        let t = &s.tasks[task];
        let (Some(xs), Some(ys)) = (
            t.train_x.get(start * d..(start + rows) * d),
            t.train_y.get(start..start + rows),
        ) else {
            return Err(ServiceError::error(format!(
                "task {task}'s train_x has {} values for {} targets (set up inconsistently)",
                t.train_x.len(),
                t.train_y.len()
            )));
        };
        x.extend_from_slice(xs);
        targets.extend_from_slice(ys);
        Ok(())
    }

    fn report(&mut self, key: String, value: f64) {
        let task = self.state.task;
        self.state.reports.push((task, key, value));
    }

    fn expert_count(&self) -> usize {
        self.state.experts.len()
    }

    fn active_expert(&self) -> usize {
        self.state.active_expert
    }

    fn route_of(&self, task: usize) -> Option<usize> {
        self.state.routes.get(task).copied().flatten()
    }

    fn expert_add(&mut self, hidden: Vec<usize>, activation: Activation) -> ServiceResult<usize> {
        let s = &mut self.state;
        s.experts.push((hidden, activation.code(), false));
        s.pool_used = true;
        Ok(s.experts.len() - 1)
    }

    fn expert_select(&mut self, id: usize) -> ServiceResult {
        let s = &mut self.state;
        s.active_expert = id;
        s.pool_used = true;
        let task = s.task;
        if let Some(r) = s.routes.get_mut(task) {
            *r = Some(id);
        }
        // Selecting resets the expert's optimizer state (as the real host does).
        s.steps = 0;
        for p in &mut s.params {
            for b in [&mut p.momentum, &mut p.exp_avg, &mut p.exp_avg_sq]
                .into_iter()
                .flatten()
            {
                b.fill(0.0);
            }
        }
        Ok(())
    }

    fn expert_freeze(&mut self, id: usize, frozen: bool) -> ServiceResult {
        let s = &mut self.state;
        s.experts[id].2 = frozen;
        s.pool_used = true;
        Ok(())
    }

    fn expert_params(&mut self, id: Option<usize>) -> ServiceResult<usize> {
        let s = &self.state;
        let used = s.pool_used || s.experts.len() > 1 || s.routes.iter().any(Option::is_some);
        Ok(match id {
            Some(id) => mock_expert_params(s, id),
            None if used => (0..s.experts.len())
                .filter(|&e| s.routes.contains(&Some(e)))
                .map(|e| mock_expert_params(s, e))
                .sum(),
            None => s.params.iter().map(|p| p.values.len()).sum(),
        })
    }

    fn head_forward(
        &mut self,
        _task: usize,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
    ) -> ServiceResult {
        self.forward(x, rows, out)
    }

    fn head_vjp(&mut self, _task: usize, _x: &[f32], _rows: usize, _cot: &[f32]) -> ServiceResult {
        // The linear model's body is empty and the head is held fixed: nothing to add.
        Ok(())
    }
}

/// Parameters of mock expert `id`, counted like the real host.
fn mock_expert_params(s: &MockState, id: usize) -> usize {
    let hidden = &s.experts[id].0;
    let mut widths = vec![s.input_dim];
    widths.extend_from_slice(hidden);
    let body: usize = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
    let feat = widths.last().copied().unwrap_or(s.input_dim);
    let heads: usize = s
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Some(id))
        .map(|(t, _)| s.tasks[t].units.len() * (feat + 1))
        .sum();
    body + heads
}

/// The mock host's service table (e.g. to call a descriptor's `create` by hand).
pub fn host_table() -> &'static ClefHost {
    &HOST_TABLE
}

// ---- descriptors -----------------------------------------------------------------------------

/// The descriptor `export_plugin!(S)` would export, built through the same code (with
/// version `S::VERSION` or `"0.0.0"`). Lets one test binary drive several strategies.
pub fn descriptor_of<S: Strategy>() -> &'static ClefPluginDescriptor {
    static CELLS: Mutex<Option<HashMap<TypeId, &'static DescriptorCell>>> = Mutex::new(None);
    let cell = {
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        *cells
            .get_or_insert_with(HashMap::new)
            .entry(TypeId::of::<S>())
            .or_insert_with(|| Box::leak(Box::new(DescriptorCell::new())))
    };
    let desc = entry::<S>(cell, "0.0.0");
    assert!(
        !desc.is_null(),
        "building the descriptor of `{}` panicked",
        S::NAME
    );
    // SAFETY: `entry` returns a pointer into a leaked, never-freed cell.
    unsafe { &*desc }
}

/// A hyperparameter as read back from a descriptor.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamInfo {
    /// Key.
    pub name: String,
    /// `CLEF_HPARAM_*` kind.
    pub kind: u32,
    /// `CLEF_HPARAM_LOG_SCALE` ...
    pub flags: u32,
    /// Default (float, int, bool 0/1, or choice index).
    pub default_value: f64,
    /// Lower bound.
    pub min: f64,
    /// Upper bound.
    pub max: f64,
    /// Choices (for `CLEF_HPARAM_CHOICE`).
    pub choices: Vec<String>,
    /// Description.
    pub doc: String,
}

/// A descriptor read back into Rust values.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// ABI major.
    pub abi_major: u16,
    /// ABI minor.
    pub abi_minor: u16,
    /// Descriptor size.
    pub struct_size: u32,
    /// Strategy name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Description.
    pub description: String,
    /// Schema.
    pub hparams: Vec<HParamInfo>,
}

/// # Safety
/// `p` must be null or a NUL-terminated string.
unsafe fn string(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: caller.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Reads a descriptor's strings and schema.
///
/// # Safety
/// `desc` must point to a valid descriptor (as a plugin's entry point returns).
pub unsafe fn describe(desc: *const ClefPluginDescriptor) -> PluginInfo {
    // SAFETY: valid descriptor (caller).
    let d = unsafe { &*desc };
    let raw: &[clef_abi::ClefHparam] = if d.n_hparams == 0 || d.hparams.is_null() {
        &[]
    } else {
        // SAFETY: `n_hparams` entries (descriptor contract).
        unsafe { std::slice::from_raw_parts(d.hparams, d.n_hparams) }
    };
    let hparams = raw
        .iter()
        .map(|h| {
            let choices = if h.choices.is_null() {
                Vec::new()
            } else {
                // SAFETY: `n_choices` C strings (descriptor contract).
                unsafe { std::slice::from_raw_parts(h.choices, h.n_choices) }
                    .iter()
                    // SAFETY: each is a NUL-terminated string.
                    .map(|&c| unsafe { string(c) })
                    .collect()
            };
            HParamInfo {
                // SAFETY: NUL-terminated strings (descriptor contract).
                name: unsafe { string(h.name) },
                kind: h.kind,
                flags: h.flags,
                default_value: h.default_value,
                min: h.min,
                max: h.max,
                choices,
                // SAFETY: as above.
                doc: unsafe { string(h.doc) },
            }
        })
        .collect();
    PluginInfo {
        abi_major: d.abi_major,
        abi_minor: d.abi_minor,
        struct_size: d.struct_size,
        // SAFETY: NUL-terminated strings (descriptor contract).
        name: unsafe { string(d.name) },
        // SAFETY: as above.
        version: unsafe { string(d.version) },
        // SAFETY: as above.
        description: unsafe { string(d.description) },
        hparams,
    }
}

// ---- plugin instances --------------------------------------------------------------------------

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
    pub fn train_step(&mut self, host: &mut MockHost) -> Result<f32, HookError> {
        let first = host.state().appended.len();
        self.before_batch(host)?;
        let loss = host.loss_backward(first)?;
        self.after_backward(host, loss)?;
        host.step();
        self.after_step(host)?;
        Ok(loss)
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

impl fmt::Debug for MockHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHost")
            .field("state", self.state())
            .finish()
    }
}

/// The current task's info as the host passes it to `on_task_start`/`on_task_end` (its
/// `units` point into the host and stay valid until the units change).
fn task_info_of(host: &mut MockHost) -> Result<ClefTaskInfo, HookError> {
    host.call.task_info().map_err(|e| HookError {
        status: e.code,
        message: format!("task_info: {}", e.message),
    })
}

impl Drop for MockPlugin {
    fn drop(&mut self) {
        if let Some(destroy) = self.desc.destroy {
            // SAFETY: our instance, destroyed once.
            unsafe { destroy(self.inst) };
        }
    }
}
