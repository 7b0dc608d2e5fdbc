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
use clef_engine::strategy::{Batch, Ctx};
use clef_host::{host_table, Appended, HostCtx};
use clef_sdk::testing::{MockHost, MockOptimizer, MockTask, Phase};

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
        };
        let mut h = match hook {
            Hook::NoTraining => HostCtx::new("conformance", None, None),
            Hook::Training => HostCtx::new("conformance", Some(&mut ctx), None),
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

// ---- the catalogue ------------------------------------------------------------------------

fn xs(rows: usize, d: usize) -> Vec<f32> {
    (0..rows * d).map(|i| (i as f32 * 0.37).sin()).collect()
}

fn st(code: i32) -> i64 {
    i64::from(code)
}

const EMPTY: ClefTensor = ClefTensor {
    data: std::ptr::null_mut(),
    numel: 0,
    ndim: 0,
    writable: 0,
    shape: [0; 4],
};

fn tensor_data(t: &ClefTensor) -> Vec<f64> {
    let mut v = vec![t.numel as f64, f64::from(t.ndim), f64::from(t.writable)];
    v.extend(t.shape.iter().map(|&s| s as f64));
    if !t.data.is_null() {
        // SAFETY: a view the host just handed out, `numel` floats valid during the hook.
        let s = unsafe { std::slice::from_raw_parts(t.data, t.numel as usize) };
        v.extend(s.iter().map(|&x| f64::from(x)));
    }
    v
}

fn info_of(host: &ClefHost, ctx: *mut ClefCtx, size: u32) -> (i64, Vec<f64>) {
    // SAFETY: an all-zero task info is a valid value of the plain struct.
    let mut info: ClefTaskInfo = unsafe { std::mem::zeroed() };
    info.struct_size = size;
    // SAFETY: the host's table and context; a live out-struct.
    let s = unsafe { (host.task_info)(ctx, &mut info) };
    let mut v = vec![
        f64::from(info.setting),
        info.task as f64,
        info.num_tasks as f64,
        info.train_samples as f64,
        info.test_samples as f64,
        info.input_dim as f64,
        info.num_outputs as f64,
        info.feature_dim as f64,
        info.n_units as f64,
        f64::from(info.num_threads),
        info.seed as f64,
    ];
    if s == CLEF_OK {
        // SAFETY: `units` holds `n_units` values during the hook.
        let u = unsafe { std::slice::from_raw_parts(info.units, info.n_units as usize) };
        v.extend(u.iter().map(|&u| u as f64));
    }
    (st(s), v)
}

/// Every service with good and bad arguments, in an order that keeps both sides' models
/// equal until the expert calls at the end (which load fresh heads in the real host).
fn catalogue() -> Vec<(&'static str, Call)> {
    vec![
        ("task_info", |h, c, _| {
            info_of(h, c, std::mem::size_of::<ClefTaskInfo>() as u32)
        }),
        ("task_info struct_size 0", |h, c, _| info_of(h, c, 0)),
        ("task_info null", |h, c, _| {
            // SAFETY: a null out pointer, which the host refuses.
            (
                st(unsafe { (h.task_info)(c, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("param_count", |h, c, _| {
            // SAFETY: the host's table and context.
            (unsafe { (h.param_count)(c) }, vec![])
        }),
        ("param_info", |h, c, _| {
            let mut out = Vec::new();
            let mut status = Vec::new();
            for i in [0i64, 1, 2, -1] {
                // SAFETY: an all-zero param info is a valid value of the plain struct.
                let mut pi: ClefParamInfo = unsafe { std::mem::zeroed() };
                // SAFETY: the host's table and context; a live out-struct.
                let s = unsafe { (h.param_info)(c, i, &mut pi) };
                status.push(s);
                if s == CLEF_OK {
                    // SAFETY: a name the host keeps for the process.
                    let name = unsafe { CStr::from_ptr(pi.name) }.to_bytes();
                    out.extend(name.iter().map(|&b| f64::from(b)));
                    out.extend([f64::from(pi.ndim), f64::from(pi.role), pi.numel as f64]);
                    out.extend(pi.shape.iter().map(|&s| s as f64));
                    out.push(pi.layer as f64);
                }
            }
            // SAFETY: a null out pointer, which the host refuses.
            status.push(unsafe { (h.param_info)(c, 0, std::ptr::null_mut()) });
            (status.iter().fold(0, |a, &s| a * 8 - i64::from(s)), out)
        }),
        ("param_values / param_grads", |h, c, _| {
            let mut out = Vec::new();
            let mut code = 0i64;
            for i in [0i64, 1, 5] {
                let (mut v, mut g) = (EMPTY, EMPTY);
                // SAFETY: the host's table and context; live out-structs.
                let (a, b) = unsafe {
                    (
                        (h.param_values)(c, i, &mut v),
                        (h.param_grads)(c, i, &mut g),
                    )
                };
                code = code * 64 - i64::from(a) * 8 - i64::from(b);
                if a == CLEF_OK && b == CLEF_OK {
                    out.extend(tensor_data(&v));
                    out.extend(tensor_data(&g));
                }
            }
            // SAFETY: a null out pointer, which the host refuses.
            let s = unsafe { (h.param_values)(c, 0, std::ptr::null_mut()) };
            (code * 8 - i64::from(s), out)
        }),
        ("optimizer_state momentum", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: the host's table and context; a live out-struct.
            let s = unsafe { (h.optimizer_state)(c, c"momentum".as_ptr(), 1, &mut t) };
            (
                st(s),
                if s == CLEF_OK {
                    tensor_data(&t)
                } else {
                    vec![]
                },
            )
        }),
        ("optimizer_state exp_avg", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: as above.
            (
                st(unsafe { (h.optimizer_state)(c, c"exp_avg".as_ptr(), 0, &mut t) }),
                vec![],
            )
        }),
        ("optimizer_state null slot", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: a null slot, which the host refuses.
            (
                st(unsafe { (h.optimizer_state)(c, std::ptr::null(), 0, &mut t) }),
                vec![],
            )
        }),
        ("optimizer_state index 9", |h, c, _| {
            let mut t = EMPTY;
            // SAFETY: as above.
            (
                st(unsafe { (h.optimizer_state)(c, c"momentum".as_ptr(), 9, &mut t) }),
                vec![],
            )
        }),
        ("forward", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe { (h.forward)(c, x.as_ptr(), 3, out.as_mut_ptr(), out.len() as i64) };
            (st(s), out.iter().map(|&v| f64::from(v)).collect())
        }),
        ("forward out_len wrong", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: the host checks `out_len` before touching the buffer.
            (
                st(unsafe { (h.forward)(c, x.as_ptr(), 3, out.as_mut_ptr(), 5) }),
                vec![],
            )
        }),
        ("forward rows negative", |h, c, e| {
            let x = xs(3, e.d);
            let mut out = vec![0f32; 3 * e.k];
            // SAFETY: the host refuses a negative count.
            (
                st(unsafe { (h.forward)(c, x.as_ptr(), -1, out.as_mut_ptr(), 3) }),
                vec![],
            )
        }),
        ("forward x null", |h, c, e| {
            let mut out = vec![0f32; 2 * e.k];
            let n = out.len() as i64;
            // SAFETY: the host refuses a null input.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), 2, out.as_mut_ptr(), n) }),
                vec![],
            )
        }),
        ("forward zero rows", |h, c, _| {
            // SAFETY: nothing is read or written.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), 0, std::ptr::null_mut(), 0) }),
                vec![],
            )
        }),
        ("forward rows overflow", |h, c, _| {
            let mut out = [0f32; 1];
            // SAFETY: the host refuses the overflowing product before reading.
            (
                st(unsafe { (h.forward)(c, std::ptr::null(), i64::MAX, out.as_mut_ptr(), 1) }),
                vec![],
            )
        }),
        ("features", |h, c, e| {
            let x = xs(2, e.d);
            let mut out = vec![0f32; 2 * e.d];
            // SAFETY: buffers of the documented sizes (feature_dim == input_dim here).
            let s = unsafe { (h.features)(c, x.as_ptr(), 2, out.as_mut_ptr(), out.len() as i64) };
            (st(s), out.iter().map(|&v| f64::from(v)).collect())
        }),
        ("features out_len wrong", |h, c, e| {
            let x = xs(2, e.d);
            let mut out = vec![0f32; 2 * e.k];
            // SAFETY: the host checks `out_len` first.
            (
                st(unsafe { (h.features)(c, x.as_ptr(), 2, out.as_mut_ptr(), 2 * e.k as i64 + 1) }),
                vec![],
            )
        }),
        ("vjp", |h, c, e| {
            let x = xs(2, e.d);
            let cot: Vec<f32> = (0..2 * e.k).map(|i| 0.5 - i as f32 * 0.25).collect();
            // SAFETY: buffers of the documented sizes.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, cot.as_ptr(), cot.len() as i64) }),
                vec![],
            )
        }),
        ("vjp cotangent_len wrong", |h, c, e| {
            let x = xs(2, e.d);
            let cot = vec![1f32; 2 * e.k];
            // SAFETY: the host checks the length first.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, cot.as_ptr(), 3) }),
                vec![],
            )
        }),
        ("vjp cotangent null", |h, c, e| {
            let x = xs(2, e.d);
            // SAFETY: the host refuses a null cotangent.
            (
                st(unsafe { (h.vjp)(c, x.as_ptr(), 2, std::ptr::null(), 2 * e.k as i64) }),
                vec![],
            )
        }),
        ("param_grads after vjp", |h, c, _| {
            let mut out = Vec::new();
            let mut code = 0i64;
            for i in 0..2 {
                let mut g = EMPTY;
                // SAFETY: the host's table and context; a live out-struct.
                let s = unsafe { (h.param_grads)(c, i, &mut g) };
                code = code * 8 - i64::from(s);
                if s == CLEF_OK {
                    out.extend(tensor_data(&g));
                }
            }
            (code, out)
        }),
        ("ntk_gram", |h, c, e| {
            let (a, b) = (xs(2, e.d), xs(3, e.d));
            let mut out = vec![0f64; 6];
            // SAFETY: buffers of the documented sizes.
            let s =
                unsafe { (h.ntk_gram)(c, a.as_ptr(), 2, b.as_ptr(), 3, 1, out.as_mut_ptr(), 6) };
            (st(s), out)
        }),
        ("ntk_gram out_len wrong", |h, c, e| {
            let a = xs(2, e.d);
            let mut out = vec![0f64; 6];
            // SAFETY: the host checks `out_len` first.
            (
                st(unsafe {
                    (h.ntk_gram)(c, a.as_ptr(), 2, a.as_ptr(), 2, 0, out.as_mut_ptr(), 6)
                }),
                vec![],
            )
        }),
        ("ntk_gram output 99", |h, c, e| {
            let a = xs(2, e.d);
            let mut out = vec![0f64; 4];
            // SAFETY: the host checks `output` first.
            (
                st(unsafe {
                    (h.ntk_gram)(c, a.as_ptr(), 2, a.as_ptr(), 2, 99, out.as_mut_ptr(), 4)
                }),
                vec![],
            )
        }),
        ("batch_get", |h, c, _| {
            // SAFETY: an all-zero batch is a valid value of the plain struct.
            let mut b: ClefBatch = unsafe { std::mem::zeroed() };
            // SAFETY: the host's table and context; a live out-struct.
            let s = unsafe { (h.batch_get)(c, &mut b) };
            let mut v = vec![b.rows as f64, b.cols as f64, b.current_rows as f64];
            if s == CLEF_OK {
                // SAFETY: the batch view holds `rows * cols` inputs and `rows` targets.
                unsafe {
                    v.extend(
                        std::slice::from_raw_parts(b.x, (b.rows * b.cols) as usize)
                            .iter()
                            .map(|&x| f64::from(x)),
                    );
                    v.extend(
                        std::slice::from_raw_parts(b.targets, b.rows as usize)
                            .iter()
                            .map(|&t| t as f64),
                    );
                }
            }
            (st(s), v)
        }),
        ("batch_append in the training mask", |h, c, e| {
            let x = xs(1, e.d);
            let t = [1i64];
            // SAFETY: one row, its target, no masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append outside the training mask", |h, c, e| {
            let x = xs(1, e.d);
            let t = [e.k as i64 - 1];
            // SAFETY: one row, its target, no masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append with masks", |h, c, e| {
            let x = xs(2, e.d);
            let t = [e.k as i64 - 1, 0];
            let mut m = vec![0u8; 2 * e.k];
            m[e.k - 1] = 1;
            m[e.k] = 1;
            // SAFETY: two rows, their targets and masks.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 2, t.as_ptr(), m.as_ptr()) }),
                vec![],
            )
        }),
        ("batch_append target 99", |h, c, e| {
            let x = xs(1, e.d);
            let t = [99i64];
            // SAFETY: the host checks the target before keeping anything.
            (
                st(unsafe { (h.batch_append)(c, x.as_ptr(), 1, t.as_ptr(), std::ptr::null()) }),
                vec![],
            )
        }),
        ("batch_append rows negative", |h, c, _| {
            // SAFETY: the host refuses a negative count.
            (
                st(unsafe {
                    (h.batch_append)(c, std::ptr::null(), -2, std::ptr::null(), std::ptr::null())
                }),
                vec![],
            )
        }),
        ("task_samples", |h, c, e| {
            let mut x = vec![0f32; 3 * e.d];
            let mut y = vec![0i64; 3];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.task_samples)(c, 0, CLEF_SPLIT_TRAIN, 2, 3, x.as_mut_ptr(), y.as_mut_ptr())
            };
            let mut v: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            v.extend(y.iter().map(|&t| t as f64));
            (st(s), v)
        }),
        ("task_samples of task 1", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: buffers of the documented sizes.
            let s = unsafe {
                (h.task_samples)(c, 1, CLEF_SPLIT_TRAIN, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
            };
            let mut v: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            v.push(y[0] as f64);
            (st(s), v)
        }),
        ("task_samples test split", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host refuses the test split.
            (
                st(unsafe {
                    (h.task_samples)(c, 0, CLEF_SPLIT_TEST, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
                }),
                vec![],
            )
        }),
        ("task_samples split 9", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host refuses an unknown split.
            (
                st(unsafe { (h.task_samples)(c, 0, 9, 0, 1, x.as_mut_ptr(), y.as_mut_ptr()) }),
                vec![],
            )
        }),
        ("task_samples past the end", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host checks the range first.
            (
                st(unsafe {
                    (h.task_samples)(
                        c,
                        0,
                        CLEF_SPLIT_TRAIN,
                        1_000_000,
                        1,
                        x.as_mut_ptr(),
                        y.as_mut_ptr(),
                    )
                }),
                vec![],
            )
        }),
        ("task_samples task 7", |h, c, e| {
            let mut x = vec![0f32; e.d];
            let mut y = vec![0i64; 1];
            // SAFETY: the host checks the task first.
            (
                st(unsafe {
                    (h.task_samples)(c, 7, CLEF_SPLIT_TRAIN, 0, 1, x.as_mut_ptr(), y.as_mut_ptr())
                }),
                vec![],
            )
        }),
        ("task_mask", |h, c, e| {
            let mut v = Vec::new();
            let mut code = 0i64;
            for t in 0..e.tasks as i64 {
                let mut m = vec![7u8; e.k];
                // SAFETY: `num_outputs` bytes.
                let s = unsafe { (h.task_mask)(c, t, m.as_mut_ptr(), e.k as i64) };
                code = code * 8 - i64::from(s);
                v.extend(m.iter().map(|&b| f64::from(b)));
            }
            (code, v)
        }),
        ("task_mask len wrong", |h, c, e| {
            let mut m = vec![0u8; e.k + 1];
            // SAFETY: the host checks `len` first.
            (
                st(unsafe { (h.task_mask)(c, 0, m.as_mut_ptr(), e.k as i64 + 1) }),
                vec![],
            )
        }),
        ("task_mask task 7", |h, c, e| {
            let mut m = vec![0u8; e.k];
            // SAFETY: the host checks the task first.
            (
                st(unsafe { (h.task_mask)(c, 7, m.as_mut_ptr(), e.k as i64) }),
                vec![],
            )
        }),
        ("report", |h, c, _| {
            // SAFETY: NUL-terminated keys.
            (
                st(unsafe { (h.report)(c, c"density.total".as_ptr(), 0.25) }),
                vec![],
            )
        }),
        ("report key with a space", |h, c, _| {
            // SAFETY: as above.
            (st(unsafe { (h.report)(c, c"a b".as_ptr(), 1.0) }), vec![])
        }),
        ("report empty key", |h, c, _| {
            // SAFETY: as above.
            (st(unsafe { (h.report)(c, c"".as_ptr(), 1.0) }), vec![])
        }),
        ("report null key", |h, c, _| {
            // SAFETY: the host refuses a null key.
            (st(unsafe { (h.report)(c, std::ptr::null(), 1.0) }), vec![])
        }),
        ("report NaN", |h, c, _| {
            // SAFETY: as above.
            (
                st(unsafe { (h.report)(c, c"x".as_ptr(), f64::NAN) }),
                vec![],
            )
        }),
        ("rng_u64", |h, c, _| {
            // SAFETY: the host's table and context. (The streams differ: only refusals are
            // compared, through the service error.)
            let _ = unsafe { (h.rng_u64)(c) };
            (0, vec![])
        }),
        ("log and get_extension", |h, c, _| {
            // SAFETY: NUL-terminated strings.
            let ext = unsafe {
                (h.log)(c, CLEF_LOG_INFO, c"conformance".as_ptr());
                (h.log)(c, 99, std::ptr::null::<c_char>());
                (h.get_extension)(c, c"clef.x.v1".as_ptr())
            };
            (i64::from(!ext.is_null()), vec![])
        }),
        ("expert_params -1 before the pool is used", |h, c, _| {
            let mut n = -7i64;
            // SAFETY: a live out value.
            let s = unsafe { (h.expert_params)(c, -1, &mut n) };
            (st(s), vec![n as f64])
        }),
        ("expert_params null out", |h, c, _| {
            // SAFETY: the host refuses a null out pointer.
            (
                st(unsafe { (h.expert_params)(c, 0, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("head_forward of an unrouted task", |h, c, e| {
            let x = xs(1, e.d);
            let mut out = vec![0f32; e.k];
            // SAFETY: buffers of the documented sizes.
            (
                st(unsafe { (h.head_forward)(c, 0, x.as_ptr(), 1, out.as_mut_ptr(), e.k as i64) }),
                vec![],
            )
        }),
        ("head_vjp zero rows", |h, c, _| {
            // SAFETY: nothing is read.
            (
                st(unsafe { (h.head_vjp)(c, 0, std::ptr::null(), 0, std::ptr::null(), 0) }),
                vec![],
            )
        }),
        ("expert_add bad activation", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: one width, a live out value.
            (
                st(unsafe { (h.expert_add)(c, [4i64].as_ptr(), 1, 7, &mut id) }),
                vec![],
            )
        }),
        ("expert_add width 0", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe { (h.expert_add)(c, [0i64].as_ptr(), 1, 0, &mut id) }),
                vec![],
            )
        }),
        ("expert_add null out_id", |h, c, _| {
            // SAFETY: the host refuses a null out pointer before adding.
            (
                st(unsafe { (h.expert_add)(c, [4i64].as_ptr(), 1, 0, std::ptr::null_mut()) }),
                vec![],
            )
        }),
        ("expert_add_conv on an MLP trial", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: one channel count, no hidden widths, a live out value.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64].as_ptr(), 1, std::ptr::null(), 0, &mut id)
                }),
                vec![id as f64],
            )
        }),
        ("expert_add_conv channel 0", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64, 0].as_ptr(), 2, [8i64].as_ptr(), 1, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv no convolution", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: nothing is read from the empty arrays.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, std::ptr::null(), 0, std::ptr::null(), 0, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv hidden width -1", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: as above.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, [4i64].as_ptr(), 1, [-1i64].as_ptr(), 1, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_add_conv null channels", |h, c, _| {
            let mut id = -1i64;
            // SAFETY: the host refuses a null array of positive length before reading it.
            (
                st(unsafe {
                    (h.expert_add_conv)(c, std::ptr::null(), 2, std::ptr::null(), 0, &mut id)
                }),
                vec![],
            )
        }),
        ("expert_select 9", |h, c, _| {
            // SAFETY: the host's table and context.
            (st(unsafe { (h.expert_select)(c, 9) }), vec![])
        }),
        ("expert_freeze 9", |h, c, _| {
            // SAFETY: the host's table and context.
            (st(unsafe { (h.expert_freeze)(c, 9, 1) }), vec![])
        }),
        ("expert_add, select, freeze, count", |h, c, e| {
            let mut id = -1i64;
            let (mut n1, mut all) = (-1i64, -1i64);
            let x = xs(1, e.d);
            let mut out = vec![0f32; e.k];
            let cot = vec![0.5f32; e.k];
            // SAFETY: live buffers of the documented sizes.
            let codes = unsafe {
                [
                    (h.expert_add)(c, [3i64].as_ptr(), 1, 1, &mut id),
                    (h.expert_select)(c, 1),
                    (h.expert_freeze)(c, 1, 1),
                    (h.expert_params)(c, 1, &mut n1),
                    (h.expert_params)(c, -1, &mut all),
                    (h.head_forward)(
                        c,
                        e.tasks as i64 - 1,
                        x.as_ptr(),
                        1,
                        out.as_mut_ptr(),
                        e.k as i64,
                    ),
                    (h.head_vjp)(
                        c,
                        e.tasks as i64 - 1,
                        x.as_ptr(),
                        1,
                        cot.as_ptr(),
                        e.k as i64,
                    ),
                ]
            };
            let code = codes.iter().fold(0i64, |a, &s| a * 8 - i64::from(s));
            (code, vec![id as f64, n1 as f64, all as f64])
        }),
    ]
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
            for hook in [Hook::Training, Hook::BeforeBatch, Hook::NoTraining] {
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
    for hook in [Hook::Training, Hook::BeforeBatch, Hook::NoTraining] {
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
