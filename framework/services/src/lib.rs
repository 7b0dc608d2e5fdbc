//! The clef host services, written once.
//!
//! A plugin calls back into its host through the [`ClefHost`](clef_abi::ClefHost) table of `extern "C"` functions
//! (`clef-abi`). Everything those functions do besides the model's own arithmetic lives here:
//!
//! - the **argument checks**: null or misaligned pointers, negative counts, length products
//!   that overflow, `out_len` / `cotangent_len` / `len` against `rows * num_outputs` (or
//!   `feature_dim`, `rows_a * rows_b`), index ranges, `struct_size` of `task_info`'s out-struct,
//!   `report` keys and values;
//! - the **"allowed in" rules**: no training context in `save_state`/`load_state` (every service
//!   but `log` is refused with `CLEF_NOT_ALLOWED`), the batch services only in `before_batch`,
//!   `task_samples` only for tasks up to the current one and only from the training split,
//!   the expert-pool services only in task-IL, `head_forward`/`head_vjp` only for a task routed
//!   to the selected expert;
//! - the **marshalling**: `ClefTensor`, `ClefBatch`, `ClefTaskInfo`, `ClefParamInfo`, out
//!   pointers, `i64` targets, parameter names as C strings that never dangle;
//! - the **per-call context** behind `*mut ClefCtx` ([`HostCall`]): scratch buffers whose
//!   pointers stay valid for the hook, and the last refused service (`service: detail`);
//! - **panic catching**: a panic in a service (a host bug) becomes `CLEF_ERROR`, never an unwind
//!   into plugin code.
//!
//! A host implements [`ServiceModel`] with plain Rust methods over its model (shapes and task
//! facts, parameter buffers, forward/features/vjp/ntk on checked slices, the batch, task
//! samples, the expert pool, an RNG) and gets its service table from [`host_table`] (or
//! [`table`] for a `static`). Model methods receive validated arguments only (their
//! documentation says what was checked), so they repeat no check. Two hosts use it: the real
//! one in `clef-host` (over the trainer's network, optimizer, scenario and expert pool) and
//! `MockHost` in `clef-sdk` (a linear model for plugin unit tests), which therefore agree on
//! every rule by construction; `framework/host/tests/service_conformance/` checks that they
//! also agree on the numbers where their models coincide.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

use std::borrow::Cow;
use std::fmt;

use clef_abi::{
    CLEF_ERROR, CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_SETTING_CLASS_IL,
    CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL, CLEF_UNSUPPORTED,
};

mod call;
mod table;

pub use call::HostCall;
pub use table::{host_table, table};

/// Longest key `report` accepts (bytes).
pub const MAX_REPORT_KEY: usize = 128;

/// Whether `key` is a valid `report` key: 1 to [`MAX_REPORT_KEY`] printable ASCII characters,
/// no spaces.
pub fn valid_report_key(key: &[u8]) -> bool {
    (1..=MAX_REPORT_KEY).contains(&key.len()) && key.iter().all(u8::is_ascii_graphic)
}

/// What the running hook may use, as the host reports it ([`ServiceModel::access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `save_state` / `load_state`: no training context; every service but `log` is refused
    /// with `CLEF_NOT_ALLOWED`.
    NoTraining,
    /// A hook with a training context other than `before_batch` and the task boundaries:
    /// everything but the batch services (`batch_get`, `batch_append`) and the boundary
    /// services (`reinit`, `train_step`).
    Training,
    /// `on_task_start` / `on_task_end`: everything but the batch services, `reinit` and
    /// `train_step` included.
    Boundary,
    /// `before_batch`: every service.
    BeforeBatch,
}

/// A refused or failed service call: the status code returned to the plugin and the detail
/// kept as the call's last service error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    /// A `CLEF_*` status (negative).
    pub code: i32,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ServiceError {
    /// An error with an explicit status code.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        ServiceError {
            code,
            message: message.into(),
        }
    }

    /// `CLEF_ERROR`: the model failed (a backend error, a host bug).
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(CLEF_ERROR, message)
    }

    /// `CLEF_INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(CLEF_INVALID_ARGUMENT, message)
    }

    /// `CLEF_NOT_ALLOWED`.
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(CLEF_NOT_ALLOWED, message)
    }

    /// `CLEF_UNSUPPORTED`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(CLEF_UNSUPPORTED, message)
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (status {})", self.message, self.code)
    }
}

impl std::error::Error for ServiceError {}

/// The result of a model method.
pub type ServiceResult<T = ()> = Result<T, ServiceError>;

/// The shape of the problem and the current task ([`ServiceModel::facts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// One of `CLEF_SETTING_*`.
    pub setting: i32,
    /// Index of the current task.
    pub task: usize,
    /// Number of tasks in the stream.
    pub num_tasks: usize,
    /// Features per sample.
    pub input_dim: usize,
    /// Logits of the (selected) network.
    pub num_outputs: usize,
    /// Width of the penultimate representation.
    pub feature_dim: usize,
    /// Threads a plugin may use (0 = no hint).
    pub num_threads: u32,
    /// The trial seed.
    pub seed: u64,
}

/// One task of the stream ([`ServiceModel::task_facts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFacts<'a> {
    /// Output units of the task's head.
    pub units: &'a [usize],
    /// Samples of the training split.
    pub train_samples: usize,
    /// Samples of the test split.
    pub test_samples: usize,
}

/// One parameter tensor ([`ServiceModel::param_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamFacts<'a> {
    /// Stable name, e.g. `layers.0.weight`.
    pub name: &'a str,
    /// Sizes of the dimensions (the ABI allows 1 to 4; others are refused with `CLEF_ERROR`).
    pub shape: &'a [usize],
    /// `CLEF_ROLE_WEIGHT`, `CLEF_ROLE_BIAS` or `CLEF_ROLE_BUFFER`.
    pub role: i32,
    /// Index of the layer.
    pub layer: usize,
    /// Number of scalars.
    pub numel: usize,
}

/// The training batch of a `before_batch` call ([`ServiceModel::batch`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRef<'a> {
    /// `rows * input_dim` inputs, row-major; must not move until the hook returns.
    pub x: &'a [f32],
    /// Target unit of each row.
    pub targets: &'a [usize],
    /// Rows from the current task's stream (the first `current_rows`).
    pub current_rows: usize,
    /// The training mask of the batch's rows (`None` = every unit): targets of rows appended
    /// without masks must be in it.
    pub mask: Option<Cow<'a, [bool]>>,
}

/// Rows `batch_append` accepted ([`ServiceModel::append_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// `targets.len() * input_dim` inputs.
    pub x: Vec<f32>,
    /// Target units, each `< num_outputs` and inside the row's mask.
    pub targets: Vec<usize>,
    /// Per-row masks (`targets.len() * num_outputs`), or `None`: the batch's training mask.
    pub masks: Option<Vec<bool>>,
}

/// A host buffer handed out as a writable view: a raw slice pointer rather than a `&mut [f32]`,
/// so that fetching a view does not invalidate the views of the same buffer a plugin already
/// holds (under Rust's aliasing rules a fresh `&mut` to a buffer would). Build it without an
/// intermediate reference where you can ([`ViewOf::view`] on a `Vec` uses `Vec::as_mut_ptr`); it must
/// stay valid, and must not move, until the hook returns.
pub type View = *mut [f32];

/// Views of a `Vec`'s buffer without materialising a reference to its elements.
pub trait ViewOf {
    /// The buffer as a [`View`].
    fn view(&mut self) -> View;
}

impl ViewOf for Vec<f32> {
    fn view(&mut self) -> View {
        std::ptr::slice_from_raw_parts_mut(self.as_mut_ptr(), self.len())
    }
}

/// Activation of an expert network (`expert_add`'s `activation` code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `CLEF_ACTIVATION_RELU`.
    Relu,
    /// `CLEF_ACTIVATION_TANH`.
    Tanh,
    /// `CLEF_ACTIVATION_SIGMOID`.
    Sigmoid,
}

impl Activation {
    /// The activation of an ABI code, if it is one.
    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            clef_abi::CLEF_ACTIVATION_RELU => Some(Self::Relu),
            clef_abi::CLEF_ACTIVATION_TANH => Some(Self::Tanh),
            clef_abi::CLEF_ACTIVATION_SIGMOID => Some(Self::Sigmoid),
            _ => None,
        }
    }

    /// The ABI code.
    pub fn code(self) -> i32 {
        match self {
            Self::Relu => clef_abi::CLEF_ACTIVATION_RELU,
            Self::Tanh => clef_abi::CLEF_ACTIVATION_TANH,
            Self::Sigmoid => clef_abi::CLEF_ACTIVATION_SIGMOID,
        }
    }
}

/// The output units of task `task`'s training softmax as the trainer uses them: task-IL the
/// task's units; class-IL the units of tasks `0..=task` (ascending, without duplicates);
/// domain-IL every output. `units_of(j)` gives task `j`'s units. `None` for an unknown
/// setting code.
pub fn training_units<'u>(
    setting: i32,
    task: usize,
    num_outputs: usize,
    units_of: impl Fn(usize) -> &'u [usize],
) -> Option<Vec<usize>> {
    let mut mask = vec![false; num_outputs];
    match setting {
        CLEF_SETTING_TASK_IL => units_of(task).iter().for_each(|&u| mark(&mut mask, u)),
        CLEF_SETTING_CLASS_IL => (0..=task)
            .flat_map(&units_of)
            .for_each(|&u| mark(&mut mask, u)),
        CLEF_SETTING_DOMAIN_IL => mask.fill(true),
        _ => return None,
    }
    Some(
        mask.iter()
            .enumerate()
            .filter_map(|(u, &m)| m.then_some(u))
            .collect(),
    )
}

fn mark(mask: &mut [bool], unit: usize) {
    if let Some(m) = mask.get_mut(unit) {
        *m = true;
    }
}

/// A host's model, as the service layer sees it: plain Rust methods, no pointers, no checks.
///
/// Every method that takes an index, a slice or a count is called only with arguments the
/// layer has validated (the method says what), and only when the running hook may use it
/// ([`access`](ServiceModel::access)): a model never repeats a check or a rule. Methods that
/// can still fail (a backend error, an unsupported operation) return a [`ServiceError`],
/// typically [`ServiceError::error`] or [`ServiceError::unsupported`].
///
/// The expert-pool methods have defaults for a host without a pool (one expert, `expert_add`
/// unsupported).
pub trait ServiceModel {
    /// What the running hook may use.
    fn access(&self) -> Access;

    /// A log line sent with this hook's context (`level`: a `CLEF_LOG_*` code, or any other
    /// value the plugin passed). Called in every hook, `save_state`/`load_state` included.
    fn log(&mut self, level: i32, message: &str);

    /// A log line sent with a null context (any thread, any time, e.g. during `create`).
    fn log_without_ctx(level: i32, message: &str)
    where
        Self: Sized;

    /// Called when a service is refused or fails, before the status returns to the plugin
    /// (e.g. to log it at debug level). Does nothing by default.
    fn refused(&mut self, service: &'static str, error: &ServiceError) {
        let _ = (service, error);
    }

    /// The problem's shape and the current task.
    fn facts(&self) -> Facts;

    /// Task `task` (`task < facts().num_tasks`).
    fn task_facts(&self, task: usize) -> TaskFacts<'_>;

    /// The next value of the plugin instance's seeded random stream.
    fn rng_u64(&mut self) -> u64;

    /// Number of parameter tensors.
    fn param_count(&self) -> usize;

    /// Parameter tensor `index` (`index < param_count()`).
    fn param_info(&self, index: usize) -> ParamFacts<'_>;

    /// The values of tensor `index` (`index < param_count()`), as a pointer to the buffer
    /// that stays valid until the hook returns (see [`View`]).
    fn param_values(&mut self, index: usize) -> View;

    /// The gradient of tensor `index` (`index < param_count()`), as [`param_values`].
    ///
    /// [`param_values`]: ServiceModel::param_values
    fn param_grads(&mut self, index: usize) -> View;

    /// Names of the optimizer's state slots (for the error naming the slots that exist).
    fn optimizer_slots(&self) -> Vec<&'static str>;

    /// Optimizer state `slot` of tensor `index` (`index < param_count()`), `None` if the
    /// optimizer has no such slot.
    fn optimizer_state(&mut self, slot: &str, index: usize) -> Option<View>;

    /// Logits of `rows >= 1` inputs (`x.len() == rows * input_dim`) into `out` (cleared or
    /// overwritten; must end with `rows * num_outputs` values). No gradients touched.
    fn forward(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult;

    /// Penultimate activations of `rows >= 1` inputs into `out` (`rows * feature_dim`).
    fn features(&mut self, x: &[f32], rows: usize, out: &mut Vec<f32>) -> ServiceResult;

    /// Adds `J(x)^T * cotangent` into the gradients (`rows >= 1`, `x.len() == rows *
    /// input_dim`, `cotangent.len() == rows * num_outputs`).
    fn vjp(&mut self, x: &[f32], rows: usize, cotangent: &[f32]) -> ServiceResult;

    /// The NTK Gram of output unit `output < num_outputs` between `a` (`rows_a` inputs) and
    /// `b` (`rows_b` inputs) into `out` (`rows_a * rows_b >= 1` values, row-major, every
    /// value to be written).
    fn ntk_gram(
        &mut self,
        a: &[f32],
        rows_a: usize,
        b: &[f32],
        rows_b: usize,
        output: usize,
        out: &mut [f64],
    ) -> ServiceResult;

    /// The batch of the running `before_batch` (only asked then); `None` is a host bug.
    fn batch(&self) -> Option<BatchRef<'_>>;

    /// Keeps rows `batch_append` accepted (`rows.targets` non-empty, every target checked
    /// against the row's mask). The batch itself must not move until the hook returns.
    fn append_rows(&mut self, rows: Rows);

    /// Samples `start..start + rows` of task `task`'s training split (`task <=` the current
    /// task, `rows >= 1`, the range inside the split), after the task's input transform,
    /// into `x` (`rows * input_dim` values) and `targets` (`rows`); both arrive empty.
    fn task_samples(
        &mut self,
        task: usize,
        start: usize,
        rows: usize,
        x: &mut Vec<f32>,
        targets: &mut Vec<usize>,
    ) -> ServiceResult;

    /// The flat gradient of the mean masked cross-entropy of `rows >= 1` labelled rows
    /// (`x.len() == rows * input_dim`; every target `< num_outputs` and inside its row's mask;
    /// `masks`: `None` = the current task's training mask, else `rows * num_outputs` flags)
    /// into `out` (every tensor in `param_info` order, `out.len()` = their total `numel`,
    /// every value to be written), training mode without touching batch-norm statistics,
    /// gradients, parameters or optimizer state. Returns the loss.
    fn batch_grad(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
        out: &mut [f32],
    ) -> ServiceResult<f32> {
        let _ = (x, rows, targets, masks, out);
        Err(ServiceError::unsupported("this host has no batch_grad"))
    }

    /// Adds `sum_i |J(x_i)^T c_i|^power` into the gradients (`rows >= 1`, lengths checked,
    /// `power` 1 or 2).
    fn sample_grads(
        &mut self,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
        power: u32,
    ) -> ServiceResult {
        let _ = (x, rows, cotangent, power);
        Err(ServiceError::unsupported("this host has no sample_grads"))
    }

    /// Re-initialises the network and resets the optimizer (asked only at a task boundary).
    fn reinit(&mut self) -> ServiceResult {
        Err(ServiceError::unsupported(
            "this host cannot re-initialise the network",
        ))
    }

    /// One optimizer step on the mean masked cross-entropy of labelled rows (checked as for
    /// [`batch_grad`](ServiceModel::batch_grad); asked only at a task boundary). Returns the
    /// loss; a non-finite loss must leave the parameters unchanged and return an error.
    fn train_step(
        &mut self,
        x: &[f32],
        rows: usize,
        targets: &[usize],
        masks: Option<&[bool]>,
    ) -> ServiceResult<f32> {
        let _ = (x, rows, targets, masks);
        Err(ServiceError::unsupported("this host has no train_step"))
    }

    /// Keeps a value `report` accepted (a valid key, a finite value) for the current task.
    fn report(&mut self, key: String, value: f64);

    /// Number of experts in the pool (expert 0 is the configured network).
    fn expert_count(&self) -> usize {
        1
    }

    /// The selected expert.
    fn active_expert(&self) -> usize {
        0
    }

    /// The expert task `task` is routed to (`task < num_tasks`).
    fn route_of(&self, task: usize) -> Option<usize> {
        let _ = task;
        None
    }

    /// Adds an expert (task-IL, every width positive) and returns its id.
    fn expert_add(&mut self, hidden: Vec<usize>, activation: Activation) -> ServiceResult<usize> {
        let _ = (hidden, activation);
        Err(ServiceError::unsupported("this host has no expert pool"))
    }

    /// Whether the pool can add convolutional experts (the trial's network is convolutional).
    fn conv_experts(&self) -> bool {
        false
    }

    /// Adds a convolutional expert (task-IL, `conv_experts()`, at least one channel count,
    /// every width positive) and returns its id.
    fn expert_add_conv(
        &mut self,
        channels: Vec<usize>,
        hidden: Vec<usize>,
    ) -> ServiceResult<usize> {
        let _ = (channels, hidden);
        Err(ServiceError::unsupported(
            "this host has no convolutional experts",
        ))
    }

    /// Routes the current task to expert `id < expert_count()` and selects it (task-IL).
    fn expert_select(&mut self, id: usize) -> ServiceResult {
        let _ = id;
        Err(ServiceError::unsupported("this host has no expert pool"))
    }

    /// Freezes or unfreezes expert `id < expert_count()`'s body (task-IL).
    fn expert_freeze(&mut self, id: usize, frozen: bool) -> ServiceResult {
        let _ = (id, frozen);
        Err(ServiceError::unsupported("this host has no expert pool"))
    }

    /// Scalar parameters of expert `id < expert_count()`, or of the whole pool (`None`).
    fn expert_params(&mut self, id: Option<usize>) -> ServiceResult<usize> {
        let _ = id;
        Err(ServiceError::unsupported("this host has no expert pool"))
    }

    /// Logits of the selected expert with task `task`'s head (routed to it, checked) on
    /// `rows >= 1` inputs, into `out` (`rows * num_outputs`).
    fn head_forward(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
    ) -> ServiceResult {
        let _ = (task, x, rows, out);
        Err(ServiceError::unsupported("this host has no expert pool"))
    }

    /// Adds `J(x)^T * cotangent` through task `task`'s (fixed) head into the selected
    /// expert's body gradients (`rows >= 1`, lengths checked, task routed to it).
    fn head_vjp(
        &mut self,
        task: usize,
        x: &[f32],
        rows: usize,
        cotangent: &[f32],
    ) -> ServiceResult {
        let _ = (task, x, rows, cotangent);
        Err(ServiceError::unsupported("this host has no expert pool"))
    }
}

#[cfg(test)]
mod tests;
