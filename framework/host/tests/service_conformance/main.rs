//! The real host and the SDK's `MockHost` answer every host service alike.
//!
//! Both are models of the shared service layer (`clef-services`), so their rules agree by
//! construction; this test checks it from the outside, through the C service tables, the way
//! a plugin sees them. The real side is a core `Ctx` over an MLP **without hidden layer**
//! (`logits = W x + b`, the mock's model) whose parameters, tasks, samples and batch are
//! copied into the mock. The same catalogue of calls (every service, good and bad arguments)
//! runs against both in each kind of hook (a training hook, `before_batch`, `load_state`
//! without training context), in task-IL, class-IL and domain-IL, on the first and the second
//! task; status codes, refusal messages and, where the models coincide, the numbers must be
//! equal (forward, features, vjp into the gradients, ntk_gram, batch views, appended rows,
//! task samples and masks, parameter infos, expert parameter counts, reports).
//!
//! It also checks the mock's training helpers against the backend: `MockHost::step` against
//! `clef_backend::Optimizer` (SGD with momentum, Nesterov, weight decay; Adam) and
//! `MockHost::loss_backward` against the network's masked cross-entropy.

use std::ffi::{c_char, CStr};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use clef_abi::{
    ClefBatch, ClefCtx, ClefHost, ClefParamInfo, ClefTaskInfo, ClefTensor, CLEF_LOG_INFO, CLEF_OK,
    CLEF_SETTING_CLASS_IL, CLEF_SETTING_DOMAIN_IL, CLEF_SETTING_TASK_IL, CLEF_SPLIT_TEST,
    CLEF_SPLIT_TRAIN,
};
use clef_backend::{
    build_network, Activation, Init, Inputs, MlpSpec, Network, Optimizer, OptimizerSpec,
};
use clef_data::scenario::Scenario;
use clef_data::spec::{ScenarioConfig, Setting};
use clef_engine::experts::Experts;
use clef_engine::strategy::{Batch, Boundary, Ctx};
use clef_host::{host_table, Appended, HostCtx};
use clef_sdk::testing::{MockHost, MockOptimizer, MockTask, Phase};

mod catalogue;
mod train;
use catalogue::catalogue;

const DIM: usize = 5;

/// The kind of hook a call runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// `load_state`: no training context.
    NoTraining,
    /// `after_backward` (any hook with a training context but `before_batch`).
    Training,
    /// `before_batch`.
    BeforeBatch,
    /// `on_task_end` (a task boundary: `reinit` and `train_step` allowed).
    Boundary,
}

/// What one call returned: the status, the numbers it produced (compared with a tolerance)
/// and the refusal message the host kept.
#[derive(Debug, Clone)]
struct Outcome {
    status: i64,
    data: Vec<f64>,
    error: Option<String>,
}

/// The problem's dimensions, for building arguments.
#[derive(Debug, Clone, Copy)]
struct Env {
    d: usize,
    k: usize,
    tasks: usize,
}

type Call = fn(&ClefHost, *mut ClefCtx, Env) -> (i64, Vec<f64>);

/// A call made by [`Side::call`]: status and numbers.
type Body<'b> = &'b mut dyn FnMut(&ClefHost, *mut ClefCtx) -> (i64, Vec<f64>);

/// A host under test.
trait Side {
    /// Runs `f` with the host's table and a context of `hook`.
    fn call(&mut self, hook: Hook, f: Body<'_>) -> Outcome;
    /// Rows appended so far: `(x, targets, masks)`.
    fn appended(&self) -> Vec<Appended>;
    /// Values reported so far.
    fn reports(&self) -> Vec<(String, f64)>;
}

struct Real {
    sc: Scenario,
    net: Box<dyn Network>,
    experts: Experts,
    opt: Optimizer,
    rng: ChaCha8Rng,
    batch: Batch,
    task: usize,
    appended: Vec<Appended>,
    reports: Vec<(String, f64)>,
}

fn scenario(setting: Setting) -> Scenario {
    let data = Arc::new(clef_data::synthetic::gaussian_blobs(4, DIM, 6, 3, 1.0, 0));
    let cfg = ScenarioConfig::class_split(2, 2);
    clef_data::scenario::build(&cfg, data, setting, 0).unwrap()
}

fn sgd() -> OptimizerSpec {
    OptimizerSpec::Sgd {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    }
}

impl Real {
    fn new(setting: Setting, task: usize) -> Self {
        let sc = scenario(setting);
        let spec = MlpSpec {
            input: DIM,
            hidden: Vec::new(),
            output: sc.num_outputs,
            activation: Activation::Relu,
            init: Init::KaimingUniform,
        };
        let net = build_network(&spec, 1).unwrap();
        let opt = Optimizer::new(sgd(), net.params());
        let positions: Vec<usize> = (0..4).collect();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        sc.gather(&sc.tasks[task], false, &positions, &mut x, &mut y);
        let batch = Batch {
            x,
            targets: y,
            mask: sc.train_mask(task),
            row_masks: None,
            current_rows: 4,
        };
        Real {
            experts: Experts::new(&spec, 3, sc.tasks.len()),
            sc,
            net,
            opt,
            rng: ChaCha8Rng::seed_from_u64(7),
            batch,
            task,
            appended: Vec::new(),
            reports: Vec::new(),
        }
    }

    /// A mock host holding the same model, tasks, samples and batch.
    fn mock(&self) -> MockHost {
        let sc = &self.sc;
        let (d, k) = (sc.input_dim(), sc.num_outputs);
        let mut host = MockHost::new(d, k, sc.tasks.len());
        let s = host.state_mut();
        s.setting = match sc.setting {
            Setting::TaskIl => CLEF_SETTING_TASK_IL,
            Setting::ClassIl => CLEF_SETTING_CLASS_IL,
            Setting::DomainIl => CLEF_SETTING_DOMAIN_IL,
        };
        s.task = self.task;
        s.num_threads = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(0);
        s.tasks = sc
            .tasks
            .iter()
            .map(|t| {
                let all = |n: usize| (0..n).collect::<Vec<usize>>();
                let (mut train_x, mut train_y) = (Vec::new(), Vec::new());
                sc.gather(t, false, &all(t.train.len()), &mut train_x, &mut train_y);
                let (mut test_x, mut test_y) = (Vec::new(), Vec::new());
                sc.gather(t, true, &all(t.test.len()), &mut test_x, &mut test_y);
                MockTask {
                    units: t.units.clone(),
                    train_x,
                    train_y,
                    test_x,
                    test_y,
                }
            })
            .collect();
        for (i, p) in s.params.iter_mut().enumerate() {
            p.values = self.net.params().value(i).to_vec();
        }
        s.batch_x = self.batch.x.clone();
        s.batch_targets = self.batch.targets.clone();
        s.batch_current_rows = self.batch.current_rows;
        host
    }
}

impl Side for Real {
    fn call(&mut self, hook: Hook, f: Body<'_>) -> Outcome {
        let mut ctx = Ctx {
            net: &mut self.net,
            experts: &mut self.experts,
            optimizer: &mut self.opt,
            scenario: &self.sc,
            rng: &mut self.rng,
            task: self.task,
            step: 0,
            seed: 42,
            boundary: (hook == Hook::Boundary).then_some(Boundary::End),
            reinits: 0,
        };
        let mut h = match hook {
            Hook::NoTraining => HostCtx::new("conformance", None, None),
            Hook::Training | Hook::Boundary => HostCtx::new("conformance", Some(&mut ctx), None),
            Hook::BeforeBatch => HostCtx::new("conformance", Some(&mut ctx), Some(&mut self.batch)),
        };
        let (status, data) = f(host_table(), h.as_raw());
        let error = h.take_service_error();
        self.appended.extend(h.take_appended());
        self.reports.extend(h.take_reports());
        Outcome {
            status,
            data,
            error,
        }
    }

    fn appended(&self) -> Vec<Appended> {
        self.appended.clone()
    }

    fn reports(&self) -> Vec<(String, f64)> {
        self.reports.clone()
    }
}

impl Side for MockHost {
    fn call(&mut self, hook: Hook, f: Body<'_>) -> Outcome {
        self.state_mut().phase = match hook {
            Hook::NoTraining => Phase::LoadState,
            Hook::Training => Phase::AfterBackward,
            Hook::BeforeBatch => Phase::BeforeBatch,
            Hook::Boundary => Phase::TaskEnd,
        };
        let (table, ctx) = self.raw();
        // SAFETY: the mock's static table.
        let (status, data) = f(unsafe { &*table }, ctx);
        self.state_mut().phase = Phase::Idle;
        Outcome {
            status,
            data,
            error: self.take_service_error(),
        }
    }

    fn appended(&self) -> Vec<Appended> {
        self.state()
            .appended
            .iter()
            .map(|a| (a.x.clone(), a.targets.clone(), a.masks.clone()))
            .collect()
    }

    fn reports(&self) -> Vec<(String, f64)> {
        self.state()
            .reports
            .iter()
            .map(|(_, k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Numbers equal up to f32 rounding of differently ordered sums.
fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())))
}

fn settings() -> [Setting; 3] {
    [Setting::TaskIl, Setting::ClassIl, Setting::DomainIl]
}

/// Runs the catalogue against both hosts in every setting, task and kind of hook; returns
/// the differences (empty when the hosts agree).
fn differences() -> Vec<String> {
    let mut diffs = Vec::new();
    for setting in settings() {
        for task in 0..2 {
            for hook in [
                Hook::Training,
                Hook::BeforeBatch,
                Hook::NoTraining,
                Hook::Boundary,
            ] {
                let mut real = Real::new(setting, task);
                let mut mock = real.mock();
                let env = Env {
                    d: DIM,
                    k: real.sc.num_outputs,
                    tasks: real.sc.tasks.len(),
                };
                let at = format!("{setting:?}, task {task}, {hook:?}");
                for (name, call) in catalogue() {
                    let a = real.call(hook, &mut |h, c| call(h, c, env));
                    let b = mock.call(hook, &mut |h, c| call(h, c, env));
                    if a.status != b.status || a.error != b.error || !close(&a.data, &b.data) {
                        diffs.push(format!("{at}: {name}: real {a:?}, mock {b:?}"));
                    }
                }
                if real.appended() != mock.appended() {
                    diffs.push(format!(
                        "{at}: appended rows differ: real {:?}, mock {:?}",
                        real.appended(),
                        mock.appended()
                    ));
                }
                if real.reports() != mock.reports() {
                    diffs.push(format!("{at}: reports differ"));
                }
            }
        }
    }
    diffs
}

#[test]
fn the_real_host_and_the_mock_answer_every_service_alike() {
    let diffs = differences();
    assert!(
        diffs.is_empty(),
        "{} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

/// The catalogue exercises what it claims: refusals and successes of each kind occur, and the
/// numbers compared are not all empty.
#[test]
fn the_catalogue_covers_successes_and_each_refusal() {
    let mut real = Real::new(Setting::TaskIl, 0);
    let env = Env {
        d: DIM,
        k: real.sc.num_outputs,
        tasks: 2,
    };
    let mut codes = std::collections::BTreeSet::new();
    let mut numbers = 0;
    for hook in [
        Hook::Training,
        Hook::BeforeBatch,
        Hook::NoTraining,
        Hook::Boundary,
    ] {
        for (_, call) in catalogue() {
            let o = real.call(hook, &mut |h, c| call(h, c, env));
            codes.insert(o.status);
            numbers += o.data.len();
        }
    }
    for code in [0, -3, -4, -5] {
        assert!(
            codes.contains(&code),
            "status {code} never occurs: {codes:?}"
        );
    }
    assert!(numbers > 500, "{numbers}");
}

// ---- the mock's training helpers against the backend ---------------------------------------

#[test]
fn mock_step_matches_the_backend_optimizer() {
    let specs = [
        (
            OptimizerSpec::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: false,
            },
            MockOptimizer::Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.01,
                nesterov: false,
            },
        ),
        (
            OptimizerSpec::Sgd {
                lr: 0.05,
                momentum: 0.5,
                weight_decay: 0.0,
                nesterov: true,
            },
            MockOptimizer::Sgd {
                lr: 0.05,
                momentum: 0.5,
                weight_decay: 0.0,
                nesterov: true,
            },
        ),
        (
            OptimizerSpec::Sgd {
                lr: 0.2,
                momentum: 0.0,
                weight_decay: 0.1,
                nesterov: false,
            },
            MockOptimizer::Sgd {
                lr: 0.2,
                momentum: 0.0,
                weight_decay: 0.1,
                nesterov: false,
            },
        ),
        (
            OptimizerSpec::Adam {
                lr: 0.01,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.05,
            },
            MockOptimizer::Adam {
                lr: 0.01,
                beta1: 0.8,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.05,
            },
        ),
    ];
    for (spec, mock_spec) in specs {
        let real = Real::new(Setting::TaskIl, 0);
        let mut net = real.net;
        let mut mock = {
            let r = Real::new(Setting::TaskIl, 0);
            r.mock()
        };
        if matches!(mock_spec, MockOptimizer::Adam { .. }) {
            mock.use_adam();
        }
        mock.state_mut().optimizer = mock_spec;
        let mut opt = Optimizer::new(spec.clone(), net.params());
        for step in 0..4 {
            for i in 0..2 {
                let g: Vec<f32> = (0..net.params().grad(i).len())
                    .map(|j| ((i * 31 + j * 7 + step * 3) % 11) as f32 * 0.1 - 0.5)
                    .collect();
                net.params_mut().grad_mut(i).copy_from_slice(&g);
                mock.state_mut().params[i].grads = g;
            }
            opt.step(net.params_mut());
            mock.step();
            assert_eq!(
                net.params().values(),
                &mock.values()[..],
                "{spec:?}, step {step}"
            );
        }
    }
}

#[test]
fn mock_loss_matches_the_backend_cross_entropy() {
    for setting in settings() {
        for task in 0..2 {
            let mut real = Real::new(setting, task);
            let mut mock = real.mock();
            let loss = mock.loss_backward(0).unwrap();
            let d = real.sc.input_dim();
            let rows = real.batch.rows();
            real.net.params_mut().zero_grads();
            let mut logits = Vec::new();
            let expected = real
                .net
                .loss_backward(
                    Inputs::new(&real.batch.x, rows, d).unwrap(),
                    &real.batch.targets,
                    real.batch.mask.as_deref(),
                    &mut logits,
                )
                .unwrap();
            assert!(
                (loss - expected).abs() < 1e-5,
                "{setting:?} {task}: {loss} vs {expected}"
            );
            let flat =
                |g: Vec<Vec<f32>>| g.into_iter().flatten().map(f64::from).collect::<Vec<_>>();
            assert!(
                close(
                    &flat(real.net.params().grads().to_vec()),
                    &flat(mock.grads())
                ),
                "{setting:?} {task}"
            );
        }
    }
}
