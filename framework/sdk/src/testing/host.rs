//! [`MockHost`]: construction, setup and inspection of its state, the service table.

use std::ffi::CString;
use std::fmt;

use clef_abi::{
    ClefCtx, ClefHost, ClefTaskInfo, CLEF_ROLE_BIAS, CLEF_ROLE_WEIGHT, CLEF_SETTING_TASK_IL,
};
use clef_services::HostCall;

use super::model::MockModel;
use super::plugin::HookError;
use super::state::{MockOptimizer, MockParam, MockState, MockTask, Phase};

/// A host implemented over `Vec` buffers; see the [module docs](super).
pub struct MockHost {
    call: Box<HostCall<MockModel>>,
}

/// The mock host's service table: the shared layer over [`MockModel`].
pub(super) static HOST_TABLE: ClefHost = clef_services::table::<MockModel>();

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
            reinits: 0,
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

    pub(super) fn ctx(&mut self) -> *mut ClefCtx {
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
}

/// Whether `key` is a valid `report` key (the real host's rule): 1 to 128 printable ASCII
/// characters, no spaces.
pub fn valid_report_key(key: &[u8]) -> bool {
    clef_services::valid_report_key(key)
}

/// The mock host's service table (e.g. to call a descriptor's `create` by hand).
pub fn host_table() -> &'static ClefHost {
    &HOST_TABLE
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
pub(super) fn task_info_of(host: &mut MockHost) -> Result<ClefTaskInfo, HookError> {
    host.call.task_info().map_err(|e| HookError {
        status: e.code,
        message: format!("task_info: {}", e.message),
    })
}
