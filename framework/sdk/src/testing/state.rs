//! What the mock host holds: [`MockState`] and its parts (parameters, tasks, appended rows,
//! the optimizer's rule, the running hook's [`Phase`]).

use std::ffi::CString;

use clef_services::Access;

#[cfg(doc)]
use super::{MockHost, MockPlugin};

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
    /// `loss` (ABI 1.6).
    Loss,
    /// `predict` (ABI 1.6).
    Predict,
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
    pub(super) fn access(self) -> Access {
        match self {
            Phase::SaveState | Phase::LoadState => Access::NoTraining,
            Phase::BeforeBatch => Access::BeforeBatch,
            Phase::TaskStart | Phase::TaskEnd => Access::Boundary,
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
    /// Times `reinit` re-initialised the linear model.
    pub reinits: u64,
    /// True once a plugin used the expert pool (`expert_params(-1)` then counts the pool).
    pub(super) pool_used: bool,
    pub(super) rng: u64,
}
