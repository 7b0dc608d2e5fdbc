//! Tests of the generated C entry points against the mock host.

use std::ffi::{c_void, CStr, CString};
use std::ptr;

use crate::abi::*;
use crate::testing::{describe, descriptor_of, global_logs, MockHost, MockPlugin, Phase};
use crate::{
    bail, ensure, format_err, validate, Context, Ctx, CustomState, Error, HParam, HParams,
    HostStatus, NoConfig, NoState, Result, Role, Setting, Split, Strategy, TaskInfo, Values,
};

// ---- a strategy that exercises every service ----------------------------------------------

#[derive(Debug, crate::HParams)]
struct ProbeConfig {
    /// a rate
    #[hparam(default = 0.1, range = 0.0..=10.0, log)]
    lr: f64,
    /// a count
    #[hparam(default = 5, range = 1..)]
    steps: i64,
    /// a flag
    #[hparam(default = true)]
    verbose: bool,
    /// what to do
    #[hparam(default = "ok", choices = ["ok", "error", "panic"])]
    mode: String,
}

/// Records what it sees; fails or panics on request (`mode`).
struct Probe {
    config: ProbeConfig,
    seen: Vec<String>,
    counter: u32,
}

impl Strategy for Probe {
    const NAME: &'static str = "probe";
    const DESCRIPTION: &'static str = "exercises the SDK";
    type Config = ProbeConfig;
    type State = CustomState;

    fn new(config: ProbeConfig) -> Result<Self> {
        ensure!(config.lr != 7.0, "lr 7 is unlucky");
        if config.steps == 13 {
            panic!("steps 13 panics in new");
        }
        Ok(Self {
            config,
            seen: Vec::new(),
            counter: 0,
        })
    }

    fn on_model_built(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        for p in ctx.params()? {
            self.seen
                .push(format!("{} {:?} {:?} {}", p.name, p.shape, p.role, p.layer));
        }
        Ok(())
    }

    fn on_task_start(&mut self, _ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        tracing::info!(task = task.task, units = ?task.units, "task starts");
        self.seen
            .push(format!("start {} {:?}", task.task, task.units));
        Ok(())
    }

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, loss: f32) -> Result<()> {
        match self.config.mode.as_str() {
            "error" => {
                return Err(Error::msg("inner cause").context("after_backward failed"));
            }
            "panic" => panic!("probe panics with loss {loss}"),
            _ => {}
        }
        // Writable gradient: g += lr * w.
        let lr = self.config.lr as f32;
        let (w, g) = ctx.values_and_grads(0)?;
        for (g, w) in g.iter_mut().zip(w) {
            *g += lr * w;
        }
        ctx.grads(1)?[0] = loss;
        ctx.values(1)?[1] = 42.0;
        if let Some(m) = ctx.optimizer_state("momentum", 0)? {
            m[0] = 3.0;
        }
        ensure!(ctx.optimizer_state("exp_avg", 0)?.is_none());
        Ok(())
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        // Gradients are writable in every hook, as in the real host.
        ctx.grads(0)?;
        let g = ctx.grads_ref(0)?.to_vec();
        let v = ctx.values_ref(0)?;
        ensure!(g.len() == v.len());
        // The batch is only available in before_batch.
        let err = ctx.batch().unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::NotAllowed));
        Err(err).context("after_step wraps")
    }

    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        let batch = ctx.batch()?;
        let (rows, cols, first) = (batch.rows, batch.cols, batch.row(0).to_vec());
        let targets = batch.targets.clone();
        self.seen.push(format!("batch {rows}x{cols} {targets:?}"));
        let mut mask = vec![false; ctx.task_info()?.num_outputs];
        mask[targets[0]] = true;
        ctx.append_rows(&first, &targets[..1], Some(&mask))?;
        ctx.append_rows(&first, &targets[..1], None)?;
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {
        let (x, y) = ctx.task_samples(task.task, Split::Train, 1, 2)?;
        let logits = ctx.forward(&x, 2)?;
        let features = ctx.features(&x, 2)?;
        let gram = ctx.ntk_gram(&x, 2, &x[..features.len() / 2], 1, 0)?;
        let mask = ctx.task_mask(task.task)?;
        self.seen.push(format!(
            "end y={y:?} logits={} features={} gram={} mask={mask:?}",
            logits.len(),
            features.len(),
            gram.len()
        ));
        // A future task is refused.
        let err = ctx
            .task_samples(task.task + 1, Split::Test, 0, 1)
            .unwrap_err();
        self.seen.push(err.to_string());
        Ok(())
    }

    fn before_eval(&mut self, ctx: &mut Ctx<'_>, task: Option<usize>) -> Result<()> {
        self.seen
            .push(format!("eval {task:?} rng {}", ctx.rng_below(10) < 10));
        Ok(())
    }

    fn save_state(&mut self, _ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        let mut out = self.counter.to_le_bytes().to_vec();
        out.extend(self.seen.join("\n").bytes());
        Ok(out)
    }

    fn load_state(&mut self, _ctx: &mut Ctx<'_>, state: &[u8]) -> Result<()> {
        ensure!(state.len() >= 4, "state too short: {} bytes", state.len());
        self.counter = u32::from_le_bytes(state[..4].try_into()?);
        self.seen = String::from_utf8(state[4..].to_vec())?
            .split('\n')
            .map(str::to_owned)
            .collect();
        self.counter += 1;
        Ok(())
    }
}

const PROBE_OK: &str = "lr = 0.5\nsteps = 3\nverbose = false\nmode = \"ok\"\n";

fn probe(mode: &str) -> MockPlugin {
    let config = PROBE_OK.replace("\"ok\"", &format!("{mode:?}"));
    MockPlugin::create::<Probe>(&config).expect("create")
}

/// The strategy behind a plugin instance (tests only: reaches into the SDK's instance box).
fn strategy_of<S: Strategy>(plugin: &MockPlugin) -> &S {
    // SAFETY: the instance was created for `S` (callers pass the matching type) and is live.
    unsafe { crate::export::strategy_ref::<S>(plugin.instance()) }
}

// ---- descriptor ------------------------------------------------------------------------------

#[test]
fn descriptor_carries_name_version_and_schema() {
    let desc = descriptor_of::<Probe>();
    assert_eq!(desc.abi_major, CLEF_ABI_MAJOR);
    assert_eq!(desc.abi_minor, CLEF_ABI_MINOR);
    assert_eq!(desc.struct_size as usize, CLEF_DESCRIPTOR_SIZE_V1_3);
    // SAFETY: an SDK-built descriptor.
    let info = unsafe { describe(desc) };
    assert_eq!(info.name, "probe");
    assert_eq!(info.version, "0.0.0");
    assert_eq!(info.description, "exercises the SDK");
    let h = &info.hparams;
    assert_eq!(h.len(), 4);
    assert_eq!(
        (h[0].name.as_str(), h[0].kind, h[0].flags),
        ("lr", CLEF_HPARAM_FLOAT, CLEF_HPARAM_LOG_SCALE)
    );
    assert_eq!((h[0].default_value, h[0].min, h[0].max), (0.1, 0.0, 10.0));
    assert_eq!(h[0].doc, "a rate");
    assert_eq!((h[1].kind, h[1].flags), (CLEF_HPARAM_INT, 0));
    assert_eq!(
        (h[1].default_value, h[1].min, h[1].max),
        (5.0, 1.0, f64::INFINITY)
    );
    assert_eq!(
        (h[2].kind, h[2].default_value, h[2].min, h[2].max),
        (CLEF_HPARAM_BOOL, 1.0, 0.0, 1.0)
    );
    assert_eq!(h[3].kind, CLEF_HPARAM_CHOICE);
    assert_eq!(h[3].choices, ["ok", "error", "panic"]);
    assert_eq!(h[3].default_value, 0.0);
    assert!(h[0].choices.is_empty());
    // Every entry point is present.
    assert!(desc.create.is_some() && desc.destroy.is_some() && desc.last_error.is_some());
    assert!(desc.on_model_built.is_some() && desc.load_state.is_some());
    // Built once.
    assert!(ptr::eq(desc, descriptor_of::<Probe>()));
}

struct Versioned;
impl Strategy for Versioned {
    const NAME: &'static str = "versioned";
    const VERSION: Option<&'static str> = Some("9.9.9");
    type Config = NoConfig;
    type State = NoState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Self)
    }
}

crate::export_plugin!(Versioned);

#[test]
fn export_macro_generates_the_entry_point() {
    let desc = clef_plugin_entry_v1();
    assert!(!desc.is_null());
    assert_eq!(desc, clef_plugin_entry_v1(), "the descriptor is built once");
    // The symbol has the ABI's entry type.
    let _: ClefEntryFn = clef_plugin_entry_v1;
    // SAFETY: the macro's descriptor.
    let info = unsafe { describe(desc) };
    assert_eq!(info.name, "versioned");
    assert_eq!(info.version, "9.9.9");
    assert!(info.hparams.is_empty());
    // SAFETY: as above, static.
    assert!(unsafe { (*desc).hparams }.is_null());
    // SAFETY: as above.
    let mut plugin = unsafe { MockPlugin::from_descriptor(desc, "") }.unwrap();
    let mut host = MockHost::new(2, 2, 1);
    plugin.after_backward(&mut host, 0.0).unwrap();
    plugin.on_task_start(&mut host).unwrap();
}

struct CrateVersion;
impl Strategy for CrateVersion {
    const NAME: &'static str = "crate-version";
    type Config = NoConfig;
    type State = NoState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Self)
    }
}

#[test]
fn version_defaults_to_the_crate_version() {
    static CELL: crate::__private::DescriptorCell = crate::__private::DescriptorCell::new();
    let desc = crate::__private::entry::<CrateVersion>(&CELL, env!("CARGO_PKG_VERSION"));
    // SAFETY: SDK-built descriptor.
    assert_eq!(unsafe { describe(desc) }.version, env!("CARGO_PKG_VERSION"));
}

// ---- create ------------------------------------------------------------------------------------

#[test]
fn create_parses_the_toml_config() {
    let plugin = probe("ok");
    let p = strategy_of::<Probe>(&plugin);
    assert_eq!(p.config.lr, 0.5);
    assert_eq!(p.config.steps, 3);
    assert!(!p.config.verbose);
    assert_eq!(p.config.mode, "ok");
}

#[test]
fn an_integer_is_accepted_for_a_float_hparam() {
    let plugin =
        MockPlugin::create::<Probe>("lr = 2\nsteps = 3\nverbose = true\nmode = \"ok\"").unwrap();
    assert_eq!(strategy_of::<Probe>(&plugin).config.lr, 2.0);
}

#[test]
fn create_failures_leave_a_thread_error() {
    let err = MockPlugin::create::<Probe>(&format!("{PROBE_OK}extra = 1")).unwrap_err();
    assert_eq!(err.status, CLEF_ERROR);
    assert!(
        err.message.contains("invalid hparams for strategy `probe`"),
        "{err}"
    );
    assert!(
        err.message.contains("unknown hyperparameter `extra`"),
        "{err}"
    );

    // Missing keys take their defaults; values outside the schema never reach `new`.
    let plugin = MockPlugin::create::<Probe>("lr = 0.5").unwrap();
    assert_eq!(strategy_of::<Probe>(&plugin).config.steps, 5);
    for (bad, what) in [
        ("lr = 11.0", "hyperparameter `lr` is out of range"),
        ("lr = nan", "hyperparameter `lr` must be a finite number"),
        ("steps = 0", "hyperparameter `steps` is out of range"),
        (
            "steps = 1.5",
            "hyperparameter `steps` must be a whole number",
        ),
        (
            "verbose = 1",
            "hyperparameter `verbose` must be true or false",
        ),
        ("mode = \"okay\"", "hyperparameter `mode` must be one of"),
    ] {
        let err = MockPlugin::create::<Probe>(bad).unwrap_err();
        assert!(err.message.contains(what), "{bad}: {err}");
    }

    let err = MockPlugin::create::<Probe>(&PROBE_OK.replace("0.5", "7.0")).unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (CLEF_ERROR, "lr 7 is unlucky")
    );

    let err = MockPlugin::create::<Probe>(&PROBE_OK.replace("3", "13")).unwrap_err();
    assert_eq!(err.status, CLEF_PANIC);
    assert!(err.message.contains("steps 13 panics in new"), "{err}");
    assert!(err.message.starts_with("panicked at "), "{err}");

    // A successful create clears the thread's error.
    let _ok = probe("ok");
    let last_error = descriptor_of::<Probe>().last_error.unwrap();
    // SAFETY: null instance = thread-local message.
    assert!(unsafe { last_error(ptr::null_mut()) }.is_null());
}

#[test]
fn create_checks_its_arguments_and_the_host_abi() {
    let desc = descriptor_of::<Probe>();
    let create = desc.create.unwrap();
    let last_error = desc.last_error.unwrap();
    let config = CString::new(PROBE_OK).unwrap();
    let mut inst: *mut c_void = ptr::null_mut();
    let message = || {
        // SAFETY: thread-local message after a failed create, valid until the next call.
        unsafe { CStr::from_ptr(last_error(ptr::null_mut())) }
            .to_str()
            .unwrap()
            .to_owned()
    };

    // SAFETY: exercising the null checks.
    let status = unsafe { create(ptr::null(), config.as_ptr(), &mut inst) };
    assert_eq!(status, CLEF_ERROR);
    assert!(message().contains("host table is null"));

    let table = crate::testing::host_table();
    let old = ClefHost {
        abi_major: 0,
        ..*table
    };
    // SAFETY: a valid table with a wrong version.
    let status = unsafe { create(&old, config.as_ptr(), &mut inst) };
    assert_eq!(status, CLEF_ERROR);
    assert!(
        message().contains(&format!(
            "needs host ABI 1.x but the host speaks 0.{CLEF_ABI_MINOR}"
        )),
        "{}",
        message()
    );

    let small = ClefHost {
        struct_size: 16,
        ..*table
    };
    // SAFETY: as above.
    let status = unsafe { create(&small, config.as_ptr(), &mut inst) };
    assert_eq!(status, CLEF_ERROR);
    assert!(
        message().contains("the host's table has 16 bytes"),
        "{}",
        message()
    );

    // SAFETY: valid host, null config.
    let status = unsafe { create(table, ptr::null(), &mut inst) };
    assert_eq!(status, CLEF_ERROR);
    assert!(message().contains("config string is null"));
    assert!(inst.is_null());
}

// ---- hooks ---------------------------------------------------------------------------------------

#[test]
fn hook_error_returns_clef_error_with_the_chain() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("error");
    let err = plugin.after_backward(&mut host, 1.0).unwrap_err();
    assert_eq!(err.status, CLEF_ERROR);
    assert_eq!(err.message, "after_backward failed: inner cause");
    // The next successful hook clears the instance's error.
    plugin.on_model_built(&mut host).unwrap();
    let last_error = plugin.descriptor().last_error.unwrap();
    // SAFETY: our live instance.
    assert!(unsafe { last_error(plugin.instance()) }.is_null());
}

#[test]
fn panicking_hook_returns_clef_panic_and_the_plugin_survives() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("panic");
    let err = plugin.after_backward(&mut host, 2.5).unwrap_err();
    assert_eq!(err.status, CLEF_PANIC);
    assert!(err.message.contains("probe panics with loss 2.5"), "{err}");
    assert!(err.message.contains("tests.rs"), "location missing: {err}");
    // Forwarded to the host log at error level, with the plugin name.
    let logs = &host.state().logs;
    assert!(
        logs.iter().any(|(level, line)| *level == CLEF_LOG_ERROR
            && line.starts_with("probe: panicked at")
            && line.contains("probe panics")),
        "{logs:?}"
    );
    // The process is alive and the instance still answers.
    plugin.on_model_built(&mut host).unwrap();
    plugin.before_eval(&mut host, None).unwrap();
}

#[test]
fn views_write_into_host_buffers() {
    let mut host = MockHost::new(3, 4, 2);
    let w = host.state().params[0].values.clone();
    let mut plugin = probe("ok");
    plugin.after_backward(&mut host, 1.25).unwrap();
    let s = host.state();
    for (g, w) in s.params[0].grads.iter().zip(&w) {
        assert_eq!(*g, 0.5 * w);
    }
    assert_eq!(s.params[1].grads[0], 1.25);
    assert_eq!(s.params[1].values[1], 42.0);
    assert_eq!(s.params[0].momentum.as_ref().unwrap()[0], 3.0);
    assert_eq!(s.phase, Phase::Idle);
}

#[test]
fn read_only_views_and_not_allowed_services_are_reported() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("ok");
    let err = plugin.after_step(&mut host).unwrap_err();
    assert_eq!(err.status, CLEF_ERROR);
    assert_eq!(
        err.message,
        "after_step wraps: host service `batch_get` refused: not allowed in this hook (status -5)"
    );
}

#[test]
fn param_infos_and_task_infos_are_converted() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("ok");
    plugin.on_model_built(&mut host).unwrap();
    host.state_mut().task = 1;
    plugin.on_task_start(&mut host).unwrap();
    plugin.before_eval(&mut host, Some(1)).unwrap();
    let seen = &strategy_of::<Probe>(&plugin).seen;
    assert_eq!(seen[0], "layers.0.weight [4, 3] Weight 0");
    assert_eq!(seen[1], "layers.0.bias [4] Bias 0");
    assert_eq!(seen[2], "start 1 [2, 3]");
    assert_eq!(seen[3], "eval Some(1) rng true");
    // tracing events reach the host log with the plugin prefix and fields.
    let logs = &host.state().logs;
    assert!(
        logs.contains(&(
            CLEF_LOG_INFO,
            "probe: task starts task=1 units=[2, 3]".to_owned()
        )),
        "{logs:?}"
    );
}

#[test]
fn batch_view_and_appended_rows() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("ok");
    plugin.before_batch(&mut host).unwrap();
    let s = host.state();
    assert_eq!(
        strategy_of::<Probe>(&plugin).seen,
        ["batch 4x3 [0, 1, 0, 1]"]
    );
    assert_eq!(s.appended.len(), 2);
    assert_eq!(s.appended[0].x, s.batch_x[..3]);
    assert_eq!(s.appended[0].targets, [0]);
    assert_eq!(
        s.appended[0].masks.as_deref(),
        Some(&[true, false, false, false][..])
    );
    assert_eq!(s.appended[1].masks, None);
}

#[test]
fn model_services_use_the_host_model() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("ok");
    plugin.on_task_end(&mut host).unwrap();
    let seen = &strategy_of::<Probe>(&plugin).seen;
    assert_eq!(
        seen[0],
        "end y=[1, 0] logits=8 features=6 gram=2 mask=[true, true, false, false]"
    );
    assert_eq!(
        seen[1],
        "host service `task_samples` refused: not allowed in this hook (status -5)"
    );
}

#[test]
fn save_and_load_round_trip_through_the_writer() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = probe("ok");
    plugin.on_model_built(&mut host).unwrap();
    let bytes = plugin.save_state(&mut host).unwrap();
    // The SDK's envelope around the strategy's own bytes.
    let payload = crate::state::open("probe", 1, &bytes).unwrap();
    assert_eq!(&payload[..4], &[0, 0, 0, 0]);
    assert!(crate::state::open("probe", 2, &bytes).is_err());
    assert!(crate::state::open("other", 1, &bytes).is_err());

    let mut other = probe("ok");
    other.load_state(&mut host, &bytes).unwrap();
    let (a, b) = (strategy_of::<Probe>(&plugin), strategy_of::<Probe>(&other));
    assert_eq!(a.seen, b.seen);
    assert_eq!(b.counter, 1);

    let err = other.load_state(&mut host, &[1, 2]).unwrap_err();
    assert!(err.message.contains("the state is truncated"), "{err}");
    // The strategy's own check still runs on a payload it did not write.
    let short = crate::state::seal("probe", 1, &[1, 2]);
    let err = other.load_state(&mut host, &short).unwrap_err();
    assert_eq!(err.message, "state too short: 2 bytes");
    // An empty state (a null pointer with length 0 is fine for the ABI) means a fresh
    // instance, as the ABI documents: nothing is loaded, the strategy is untouched.
    let load = other.descriptor().load_state.unwrap();
    let (_, ctx) = host.raw();
    let counter = strategy_of::<Probe>(&other).counter;
    // SAFETY: our live instance and the host's context.
    let status = unsafe { load(other.instance(), ctx, ptr::null(), 0) };
    assert_eq!(status, CLEF_OK);
    assert_eq!(strategy_of::<Probe>(&other).counter, counter);
}

#[test]
fn a_failing_writer_fails_save_state() {
    unsafe extern "C" fn refuse(_: *mut c_void, _: *const u8, _: usize) -> i32 {
        CLEF_ERROR
    }
    let mut host = MockHost::new(2, 2, 1);
    let plugin = probe("ok");
    let desc = plugin.descriptor();
    let (_, ctx) = host.raw();
    // SAFETY: our live instance, the host's context and a valid writer callback.
    let status =
        unsafe { desc.save_state.unwrap()(plugin.instance(), ctx, refuse, ptr::null_mut()) };
    assert_eq!(status, CLEF_ERROR);
    // SAFETY: our live instance.
    let msg = unsafe { CStr::from_ptr(desc.last_error.unwrap()(plugin.instance())) };
    assert_eq!(
        msg.to_str().unwrap(),
        "the host's state writer failed (status -1) on 37 bytes"
    );
}

#[test]
fn a_null_instance_or_context_is_an_error_not_a_crash() {
    let desc = descriptor_of::<Probe>();
    let mut host = MockHost::new(2, 2, 1);
    let (_, ctx) = host.raw();
    // SAFETY: exercising the null checks.
    let status = unsafe { desc.after_step.unwrap()(ptr::null_mut(), ctx) };
    assert_eq!(status, CLEF_ERROR);
    // SAFETY: the thread-local message.
    let msg = unsafe { CStr::from_ptr(desc.last_error.unwrap()(ptr::null_mut())) };
    assert!(msg.to_str().unwrap().contains("null instance"));

    let plugin = probe("ok");
    // SAFETY: live instance, null context.
    let status = unsafe { desc.after_step.unwrap()(plugin.instance(), ptr::null_mut()) };
    assert_eq!(status, CLEF_ERROR);
    // SAFETY: destroy(null) is a no-op.
    unsafe { desc.destroy.unwrap()(ptr::null_mut()) };
}

// ---- services in detail ----------------------------------------------------------------------------

/// A test body that runs inside a hook.
type Body = fn(&mut Ctx<'_>) -> Result<()>;

/// Runs `f` inside `after_backward` of a throwaway strategy.
fn with_ctx(host: &mut MockHost, f: Body) -> Result<(), String> {
    struct Run;
    thread_local! {
        static F: std::cell::Cell<Option<Body>> = const { std::cell::Cell::new(None) };
    }
    impl Strategy for Run {
        const NAME: &'static str = "run";
        type Config = NoConfig;
        type State = NoState;
        fn new(_: NoConfig) -> Result<Self> {
            Ok(Run)
        }
        fn after_backward(&mut self, ctx: &mut Ctx<'_>, _: f32) -> Result<()> {
            F.with(|f| f.get().unwrap())(ctx)
        }
    }
    F.with(|c| c.set(Some(f)));
    let mut plugin = MockPlugin::create::<Run>("").unwrap();
    plugin
        .after_backward(host, 0.0)
        .map_err(|e| e.message.clone())
}

#[test]
fn forward_features_vjp_and_ntk_match_the_linear_model() {
    let mut host = MockHost::new(2, 3, 1);
    {
        let s = host.state_mut();
        s.params[0].values = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        s.params[1].values = vec![0.5, 0.0, -0.5];
    }
    with_ctx(&mut host, |ctx| {
        let logits = ctx.forward(&[1.0, 1.0, 0.0, 2.0], 2)?;
        ensure!(logits == [3.5, 7.0, 10.5, 4.5, 8.0, 11.5], "{logits:?}");
        ensure!(ctx.features(&[1.0, 2.0], 1)? == [1.0, 2.0]);
        ctx.vjp(&[1.0, 2.0], 1, &[1.0, 0.0, -1.0])?;
        let gram = ctx.ntk_gram(&[1.0, 2.0, 0.0, 1.0], 2, &[3.0, 4.0], 1, 2)?;
        ensure!(gram == [12.0, 5.0], "{gram:?}");
        // Size mismatches are caught before the host is called.
        let err = ctx.forward(&[1.0], 1).unwrap_err();
        ensure!(
            err.to_string()
                .contains("expected rows (1) * input_dim (2)"),
            "{err}"
        );
        let err = ctx.vjp(&[1.0, 2.0], 1, &[1.0]).unwrap_err();
        ensure!(err.to_string().contains("num_outputs (3)"), "{err}");
        // The host rejects a bad output unit.
        let err = ctx.ntk_gram(&[1.0, 2.0], 1, &[1.0, 2.0], 1, 5).unwrap_err();
        ensure!(
            err.host_status() == Some(HostStatus::InvalidArgument),
            "{err}"
        );
        ensure!(ctx.param_info(9).is_err());
        Ok(())
    })
    .unwrap();
    let s = host.state();
    assert_eq!(s.params[0].grads, [1.0, 2.0, 0.0, 0.0, -1.0, -2.0]);
    assert_eq!(s.params[1].grads, [1.0, 0.0, -1.0]);

    host.state_mut().ntk_supported = false;
    let err = with_ctx(&mut host, |ctx| {
        let err = ctx.ntk_gram(&[1.0, 2.0], 1, &[1.0, 2.0], 1, 0).unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::Unsupported));
        Err(err)
    })
    .unwrap_err();
    assert_eq!(
        err,
        "host service `ntk_gram` refused: not supported by this host or backend (status -4)"
    );
}

#[test]
fn task_info_rng_and_experts() {
    let mut host = MockHost::new(2, 4, 2);
    host.state_mut().setting = CLEF_SETTING_CLASS_IL;
    with_ctx(&mut host, |ctx| {
        let info = ctx.task_info()?;
        ensure!(info.setting == Setting::ClassIl);
        ensure!((info.task, info.num_tasks, info.input_dim) == (0, 2, 2));
        ensure!((info.num_outputs, info.feature_dim) == (4, 2));
        ensure!((info.train_samples, info.test_samples) == (8, 4));
        ensure!(info.units == [0, 1] && info.seed == 42 && info.num_threads == 1);
        ensure!(ctx.param_count()? == 2);
        ensure!(ctx.params()?[1].role == Role::Bias);
        let (x, y) = ctx.task_samples(0, Split::Train, 4, 4)?;
        ensure!(x.len() == 8 && y == [0, 1, 0, 1]);
        let err = ctx.task_samples(0, Split::Train, 6, 4).unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::InvalidArgument));
        // Test data is reserved for evaluation, as in the real host.
        let err = ctx.task_samples(0, Split::Test, 0, 4).unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::NotAllowed));
        ensure!(ctx.training_units(1)? == [0, 1, 2, 3]);
        for _ in 0..200 {
            let f = ctx.rng_f64();
            ensure!((0.0..1.0).contains(&f));
            ensure!(ctx.rng_below(3) < 3);
        }
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[ctx.rng_below(4)] += 1;
        }
        ensure!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        // The mock host has the ABI 1.2 expert pool, task-IL only (this host is not).
        ensure!(ctx.can_use_experts());
        let err = ctx
            .expert_add(&[8, 8], crate::Activation::Relu)
            .unwrap_err();
        ensure!(err.host_status() == Some(HostStatus::NotAllowed));
        ensure!(ctx.extension("clef.nothing.v1").is_none());
        ctx.log(crate::LogLevel::Warn, "direct line");
        Ok(())
    })
    .unwrap();
    assert!(host
        .state()
        .logs
        .contains(&(CLEF_LOG_WARN, "direct line".to_owned())));
}

#[test]
fn the_rng_stream_is_the_hosts() {
    let mut a = MockHost::new(2, 2, 1);
    let mut b = MockHost::new(2, 2, 1);
    let draw = |host: &mut MockHost| {
        with_ctx(host, |ctx| {
            let v = ctx.rng_u64();
            Err(format_err!("{v}"))
        })
        .unwrap_err()
    };
    assert_eq!(draw(&mut a), draw(&mut b));
    assert_ne!(draw(&mut a), draw(&mut a));
}

// ---- logging without a hook --------------------------------------------------------------------

#[test]
fn events_outside_hooks_are_forwarded_with_a_null_context() {
    let _plugin = probe("ok"); // installs the subscriber and remembers the host
    std::thread::spawn(|| tracing::warn!(worker = 3, "from a worker thread"))
        .join()
        .unwrap();
    let logs = global_logs();
    assert!(
        logs.iter().any(|(level, line)| *level == CLEF_LOG_WARN
            && line.ends_with(": from a worker thread worker=3")),
        "{logs:?}"
    );
}

// ---- schema validation -------------------------------------------------------------------------

/// A hand-written config whose schema's default is out of range.
struct BadConfig;
impl HParams for BadConfig {
    fn schema() -> Vec<HParam> {
        vec![HParam::float("x", 5.0, 0.0, 1.0, "out of range")]
    }
    fn from_values(_: &Values) -> Result<Self> {
        Ok(Self)
    }
}

struct BadSchema;
impl Strategy for BadSchema {
    const NAME: &'static str = "bad-schema";
    type Config = BadConfig;
    type State = NoState;
    fn new(_: BadConfig) -> Result<Self> {
        Ok(Self)
    }
}

/// A hand-written config that reads a key its schema misspells.
struct OneField;
impl HParams for OneField {
    fn schema() -> Vec<HParam> {
        vec![HParam::float("rte", 0.5, 0.0, 1.0, "typo")]
    }
    fn from_values(values: &Values) -> Result<Self> {
        values.float("rate")?;
        Ok(Self)
    }
}

struct Mismatch;
impl Strategy for Mismatch {
    const NAME: &'static str = "mismatch";
    type Config = OneField;
    type State = NoState;
    fn new(_: OneField) -> Result<Self> {
        Ok(Self)
    }
}

#[test]
fn invalid_schemas_are_caught() {
    let err = MockPlugin::create::<BadSchema>("x = 5.0").unwrap_err();
    assert_eq!(
        err.message,
        "invalid hyperparameter schema of `bad-schema`: hyperparameter `x`: default 5 is \
         outside [0, 1]"
    );
    assert!(validate::<BadSchema>().is_err());
    assert!(validate::<Probe>().is_ok());
    let err = validate::<Mismatch>().unwrap_err();
    assert!(
        format!("{err:#}").contains("hyperparameter `rate` is not in the schema"),
        "{err:#}"
    );

    let check = |h: HParam| crate::validate_schema("s", &[h]).map_err(|e| format!("{e:#}"));
    assert!(check(HParam::choice("c", "z", &["a", "b"], "")).is_err());
    assert!(check(HParam::choice("c", "a", &["a", "a"], "")).is_err());
    assert!(check(HParam::choice("c", "a", &[], "")).is_err());
    assert!(check(HParam::bool("b", true, "").log_scale()).is_err());
    assert!(check(HParam::int("i", 0, 3, 1, "")).is_err());
    assert!(check(HParam::float("f", f64::NAN, 0.0, 1.0, "")).is_err());
    assert!(check(HParam::float("bad name", 0.5, 0.0, 1.0, "")).is_err());
    assert!(check(HParam::float(
        "ok_name-2",
        0.5,
        f64::NEG_INFINITY,
        f64::INFINITY,
        ""
    ))
    .is_ok());
    let dup = crate::validate_schema(
        "s",
        &[HParam::bool("a", true, ""), HParam::bool("a", false, "")],
    );
    assert!(format!("{:#}", dup.unwrap_err()).contains("declared twice"));
    assert!(crate::validate_schema("Bad", &[]).is_err());
}

#[test]
fn default_config_toml_renders_every_kind() {
    let toml = crate::default_config_toml::<Probe>();
    let parsed = ProbeConfig::from_toml(&toml).unwrap();
    assert_eq!(
        (
            parsed.lr,
            parsed.steps,
            parsed.verbose,
            parsed.mode.as_str()
        ),
        (0.1, 5, true, "ok")
    );
}

// ---- the error type --------------------------------------------------------------------------------

#[test]
fn errors_keep_their_chain() {
    fn io() -> Result<()> {
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "no file");
        Err(e).context("reading state")?;
        Ok(())
    }
    let e = io().unwrap_err();
    assert_eq!(e.to_string(), "reading state");
    assert_eq!(format!("{e:#}"), "reading state: no file");
    assert_eq!(e.root_cause(), "no file");
    assert!(format!("{e:?}").contains("Caused by:\n    0: no file"));

    fn bails(n: u32) -> Result<u32> {
        if n == 0 {
            bail!("zero");
        }
        if n == 1 {
            bail!("one is {}", "odd");
        }
        let s = String::from("owned message");
        if n == 2 {
            bail!(s);
        }
        ensure!(n < 10);
        Ok(n)
    }
    assert_eq!(bails(0).unwrap_err().to_string(), "zero");
    assert_eq!(bails(1).unwrap_err().to_string(), "one is odd");
    assert_eq!(bails(2).unwrap_err().to_string(), "owned message");
    assert_eq!(
        bails(11).unwrap_err().to_string(),
        "condition failed: `n < 10`"
    );
    assert_eq!(bails(5).unwrap(), 5);
    let none: Option<u8> = None;
    assert_eq!(none.context("missing").unwrap_err().to_string(), "missing");
    let e = Error::host("vjp", CLEF_NOT_ALLOWED);
    assert_eq!(e.host_status(), Some(HostStatus::NotAllowed));
    assert_eq!(HostStatus::from_code(-4).code(), -4);
    assert_eq!(HostStatus::from_code(-77), HostStatus::Other(-77));
}

// ---- report (ABI 1.1) ------------------------------------------------------------------------

/// Reports `x` = 1.5 and `x` = 2.5 (the second replaces the first), then `bad key` if asked.
struct Reporter;

impl Strategy for Reporter {
    const NAME: &'static str = "reporter";
    type Config = NoConfig;
    type State = CustomState;

    fn new(_: NoConfig) -> Result<Self> {
        Ok(Reporter)
    }

    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        if !ctx.can_report() {
            let err = ctx.report("x", 1.0).unwrap_err();
            ensure!(
                err.host_status() == Some(HostStatus::Unsupported),
                "{err:#}"
            );
            return Ok(());
        }
        ctx.report("x", 1.5)?;
        ctx.report("x", 2.5)?;
        Ok(())
    }

    fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
        ctx.report("bad key", 1.0)
    }

    fn save_state(&mut self, ctx: &mut Ctx<'_>) -> Result<Vec<u8>> {
        ctx.report("x", 1.0)?;
        Ok(Vec::new())
    }
}

#[test]
fn report_reaches_the_host_under_the_current_task() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<Reporter>("").unwrap();
    host.state_mut().task = 1;
    plugin.after_step(&mut host).unwrap();
    assert_eq!(host.reported(1, "x"), Some(2.5));
    assert_eq!(host.reported(0, "x"), None);
    assert_eq!(host.state().reports.len(), 2);

    let err = plugin.on_task_end(&mut host).unwrap_err();
    assert!(
        err.message.contains("reporting `bad key` = 1") && err.message.contains("invalid argument"),
        "{err}"
    );
    let err = plugin.save_state(&mut host).unwrap_err();
    assert!(err.message.contains("not allowed in this hook"), "{err}");
    assert!(!crate::testing::valid_report_key(b""));
    assert!(!crate::testing::valid_report_key(&[b'a'; 129]));
    assert!(crate::testing::valid_report_key(b"density.layers.0.weight"));
}

#[test]
fn plugins_load_in_a_1_0_host_and_report_is_unsupported_there() {
    let desc = descriptor_of::<Reporter>();
    let old = ClefHost {
        abi_minor: 0,
        struct_size: CLEF_HOST_SIZE_V1_0 as u32,
        ..*crate::testing::host_table()
    };
    assert_eq!(CLEF_HOST_SIZE_V1_1 - CLEF_HOST_SIZE_V1_0, 8);
    let config = CString::new("").unwrap();
    let mut inst: *mut c_void = ptr::null_mut();
    // SAFETY: a valid table (declaring the 1.0 size), a NUL-terminated config, an out pointer.
    let status = unsafe { (desc.create.unwrap())(&old, config.as_ptr(), &mut inst) };
    assert_eq!(status, CLEF_OK);
    let mut host = MockHost::new(3, 4, 2);
    let (_, ctx) = host.raw();
    // SAFETY: our instance and a live mock host context; the hook checks `struct_size` before
    // touching `report`.
    let status = unsafe { (desc.after_step.unwrap())(inst, ctx) };
    assert_eq!(status, CLEF_OK);
    assert!(host.state().reports.is_empty());
    // SAFETY: destroyed once.
    unsafe { (desc.destroy.unwrap())(inst) };
}

// ---- the test kit ------------------------------------------------------------------------------

/// A small stateful strategy in the new style: the kit's tests run on it, and on two broken
/// variants the kit must catch.
mod kit {
    use crate::prelude::*;

    #[derive(HParams)]
    pub struct DecayConfig {
        /// Pull towards the weights at the last task end.
        #[hparam(default = 0.5, range = 0.0..=10.0, log, needs_past_tasks)]
        pub rate: f64,
        /// Count steps.
        #[hparam(default = 3, range = 1..=100)]
        pub every: usize,
        /// A choice.
        #[hparam(default = "per-task")]
        pub mode: Mode,
    }

    #[derive(HParamChoice, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    pub enum Mode {
        PerTask,
        #[choice(name = "all")]
        Shared,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Decay {
        rate: f32,
        every: u64,
        mode: Mode,
        steps: u64,
        anchor: Option<crate::anchor::Anchor>,
        #[serde(with = "crate::state::bits")]
        seen: Vec<bool>,
    }

    impl Strategy for Decay {
        const NAME: &'static str = "kit-decay";
        type Config = DecayConfig;
        type State = SerdeState;

        fn new(c: DecayConfig) -> Result<Self> {
            Ok(Self {
                rate: c.rate as f32,
                every: c.every as u64,
                mode: c.mode,
                steps: 0,
                anchor: None,
                seen: Vec::new(),
            })
        }

        fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
            self.steps += 1;
            self.seen.push(self.steps.is_multiple_of(self.every));
            let scale = match self.mode {
                Mode::PerTask => self.steps as f32,
                Mode::Shared => 1.0,
            };
            if let Some(a) = &self.anchor {
                a.pull(ctx, self.rate * scale)?;
            }
            Ok(())
        }

        fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
            self.anchor = Some(crate::anchor::Anchor::capture(ctx)?);
            ctx.report("steps", self.steps as f64)
        }
    }

    crate::standard_tests!(Decay, config = "rate = 2.0\nmode = \"all\"");

    /// Forgets its anchor in checkpoints (`#[serde(skip)]`): the kit's round trip must fail.
    #[derive(Serialize, Deserialize)]
    pub struct Forgetful {
        rate: f32,
        #[serde(skip)]
        anchor: Option<Vec<Vec<f32>>>,
    }

    impl Strategy for Forgetful {
        const NAME: &'static str = "kit-forgetful";
        type Config = DecayConfig;
        type State = SerdeState;

        fn new(c: DecayConfig) -> Result<Self> {
            Ok(Self {
                rate: c.rate as f32,
                anchor: None,
            })
        }

        fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
            match &self.anchor {
                Some(a) => crate::anchor::add_pull(ctx, a, self.rate, "the anchor"),
                None => Ok(()),
            }
        }

        fn on_task_end(&mut self, ctx: &mut Ctx<'_>, _task: &TaskInfo) -> Result<()> {
            self.anchor = Some(crate::anchor::capture(ctx)?);
            Ok(())
        }
    }

    /// Draws from a process-global counter: not deterministic; the kit must notice.
    pub struct Moody;

    static MOOD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

    impl Strategy for Moody {
        const NAME: &'static str = "kit-moody";
        type Config = NoConfig;
        type State = NotCheckpointed;

        fn new(_: NoConfig) -> Result<Self> {
            Ok(Self)
        }

        fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {
            let m = MOOD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as f32;
            ctx.grads(0)?[0] += m;
            Ok(())
        }
    }

    fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("the kit should have failed");
        err.downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    }

    #[test]
    fn the_kit_catches_a_state_that_does_not_round_trip() {
        let msg = panics(|| crate::kit::state_round_trips::<Forgetful>(""));
        assert!(msg.contains("does not continue like the original"), "{msg}");
    }

    #[test]
    fn the_kit_catches_a_nondeterministic_run() {
        let msg = panics(|| crate::kit::short_run_is_deterministic::<Moody>(""));
        assert!(msg.contains("two identical runs differ"), "{msg}");
        // Not checkpointed: no state hooks exported, so the host turns checkpoints off.
        let desc = crate::testing::descriptor_of::<Moody>();
        assert!(desc.save_state.is_none() && desc.load_state.is_none());
        crate::kit::state_round_trips::<Moody>("");
    }

    #[test]
    fn the_docs_table_check_names_the_table_to_paste() {
        let dir = std::env::temp_dir().join(format!("clef-kit-docs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let table = crate::markdown_table(&<DecayConfig as HParams>::schema());
        std::fs::write(
            dir.join("ok.md"),
            format!("# x\n<!-- hparams:kit-decay -->\n{table}<!-- /hparams:kit-decay -->\n"),
        )
        .unwrap();
        crate::kit::docs_table_matches::<Decay>(dir.to_str().unwrap(), "ok.md");
        std::fs::write(
            dir.join("stale.md"),
            format!(
                "<!-- hparams:kit-decay -->\n{}<!-- /hparams:kit-decay -->\n",
                table.replace("0.5", "0.25")
            ),
        )
        .unwrap();
        let d = dir.clone();
        let msg = panics(move || {
            crate::kit::docs_table_matches::<Decay>(d.to_str().unwrap(), "stale.md")
        });
        assert!(
            msg.contains("differs from its schema") && msg.contains(&table),
            "{msg}"
        );
        assert!(
            table.contains("| `rate` | float | 0.5 | [0, 10], log scale |"),
            "{table}"
        );
        assert!(
            table.contains("| `mode` | choice | `per-task` | `per-task` \\| `all` |"),
            "{table}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_needs_past_tasks_flag_reaches_the_descriptor() {
        let desc = crate::testing::descriptor_of::<Decay>();
        // SAFETY: SDK-built descriptor.
        let info = unsafe { crate::testing::describe(desc) };
        assert_eq!(
            info.hparams[0].flags,
            crate::abi::CLEF_HPARAM_LOG_SCALE | crate::abi::CLEF_HPARAM_NEEDS_PAST_TASKS
        );
        assert_eq!(info.hparams[1].flags, 0);
        assert_eq!(info.hparams[2].choices, ["per-task", "all"]);
    }
}

// ---- the shared service layer, Ctx fixes, the mock's training step -------------------------

#[test]
fn two_read_only_views_of_one_tensor_coexist() {
    let mut host = MockHost::new(3, 4, 2);
    host.seed_grads();
    let (values, grads) = (host.values(), host.grads());
    with_ctx(&mut host, |ctx| {
        // Two shared views of the same values and of the same gradient, held at once and read
        // interleaved (under Miri this checks that no `&mut` is created behind them).
        let a = ctx.values_ref(0)?;
        let b = ctx.values_ref(0)?;
        let ga = ctx.grads_ref(0)?;
        let gb = ctx.grads_ref(0)?;
        ensure!(a.as_ptr() == b.as_ptr() && ga.as_ptr() == gb.as_ptr());
        let mut sum = 0.0f32;
        for i in 0..a.len() {
            sum += a[i] - b[i] + ga[i] - gb[i];
        }
        ensure!(sum == 0.0 && a.len() == 12 && ga.len() == 12);
        let (w, g) = ctx.values_and_grads(1)?;
        ensure!(w.len() == 4 && g.len() == 4);
        Ok(())
    })
    .unwrap();
    assert_eq!((host.values(), host.grads()), (values, grads));
}

/// Calls `param_count` in `load_state`.
struct CountsInLoad;

impl Strategy for CountsInLoad {
    const NAME: &'static str = "counts-in-load";
    type Config = NoConfig;
    type State = CustomState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(CountsInLoad)
    }
    fn load_state(&mut self, ctx: &mut Ctx<'_>, _state: &[u8]) -> Result<()> {
        let n = ctx.param_count()?;
        bail!("param_count gave {n} in load_state")
    }
}

#[test]
fn refused_services_are_errors_not_zeros() {
    let mut host = MockHost::new(3, 4, 2);
    let mut plugin = MockPlugin::create::<CountsInLoad>("").unwrap();
    let err = plugin
        .load_state(&mut host, &crate::state::seal("counts-in-load", 1, &[1]))
        .unwrap_err();
    assert_eq!(
        err.message,
        "host service `param_count` refused: not allowed in this hook (status -5)"
    );
    assert_eq!(
        host.take_service_error().as_deref(),
        Some("param_count: not available in save_state/load_state (no training context)")
    );
    // In a training hook the count is there.
    with_ctx(&mut host, |ctx| {
        ensure!(ctx.param_count()? == 2);
        Ok(())
    })
    .unwrap();
}

#[test]
fn training_units_follow_the_setting() {
    // 6 outputs, 3 tasks: units [0, 1], [2, 3], [4, 5].
    let cases = [
        (CLEF_SETTING_TASK_IL, 0, vec![0, 1]),
        (CLEF_SETTING_TASK_IL, 2, vec![4, 5]),
        (CLEF_SETTING_CLASS_IL, 0, vec![0, 1]),
        (CLEF_SETTING_CLASS_IL, 1, vec![0, 1, 2, 3]),
        (CLEF_SETTING_CLASS_IL, 2, vec![0, 1, 2, 3, 4, 5]),
        (CLEF_SETTING_DOMAIN_IL, 1, vec![0, 1, 2, 3, 4, 5]),
    ];
    for (setting, task, expected) in cases {
        let mut host = MockHost::new(2, 6, 3);
        host.state_mut().setting = setting;
        host.state_mut().task = 2;
        // The body is a fn pointer: pass the case through the host's seed.
        host.state_mut().seed = task as u64;
        let got = with_ctx(&mut host, |ctx| {
            let task = ctx.task_info()?.seed as usize;
            let units = ctx.training_units(task)?;
            Err(format_err!("{units:?}"))
        })
        .unwrap_err();
        assert_eq!(
            got,
            format!("{expected:?}"),
            "setting {setting}, task {task}"
        );
    }
    let mut host = MockHost::new(2, 6, 3);
    host.state_mut().setting = 9;
    let err = with_ctx(&mut host, |ctx| ctx.training_units(0).map(drop)).unwrap_err();
    assert!(err.contains("unknown evaluation setting (code 9)"), "{err}");
}

#[test]
fn mock_step_follows_the_hosts_update_rules() {
    use crate::testing::MockOptimizer;
    // SGD with momentum, PyTorch's sequence: w = 1, g = 0.5, lr = 0.1, momentum = 0.9:
    // step 1: buf = 0.5, w = 0.95; step 2: buf = 0.95, w = 0.855.
    let mut host = MockHost::new(1, 1, 1);
    {
        let s = host.state_mut();
        s.optimizer = MockOptimizer::Sgd {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
        };
        s.params[0].values = vec![1.0];
        s.params[0].grads = vec![0.5];
    }
    host.step();
    assert!((host.values()[0][0] - 0.95).abs() < 1e-6);
    host.step();
    assert!((host.values()[0][0] - 0.855).abs() < 1e-6);
    assert!((host.state().params[0].momentum.as_ref().unwrap()[0] - 0.95).abs() < 1e-6);
    // Adam: the first steps move by lr * g / |g| (bias-corrected moments).
    let mut host = MockHost::new(1, 1, 1);
    host.use_adam();
    {
        let s = host.state_mut();
        s.optimizer = MockOptimizer::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        s.params[0].values = vec![1.0];
        s.params[0].grads = vec![0.5];
    }
    host.step();
    assert!(
        (host.values()[0][0] - 0.9).abs() < 1e-6,
        "{:?}",
        host.values()
    );
    host.step();
    assert!(
        (host.values()[0][0] - 0.8).abs() < 1e-6,
        "{:?}",
        host.values()
    );
    let s = host.state();
    assert!((s.params[0].exp_avg.as_ref().unwrap()[0] - 0.095).abs() < 1e-6);
    assert_eq!(s.steps, 2);
}

/// Records the hooks of a training step and what they saw.
#[derive(Default)]
struct Recorder {
    hooks: Vec<&'static str>,
    loss: f32,
    grads: Vec<Vec<f32>>,
    before: Vec<Vec<f32>>,
    after: Vec<Vec<f32>>,
}

impl Strategy for Recorder {
    const NAME: &'static str = "recorder";
    type Config = NoConfig;
    type State = NoState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Recorder::default())
    }
    fn before_batch(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.hooks.push("before_batch");
        self.before = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        // One replayed row of task 1 with its own head.
        let mut mask = vec![false; 4];
        mask[2..].fill(true);
        ctx.append_rows(&[0.5, -0.5, 1.0], &[3], Some(&mask))
    }
    fn after_backward(&mut self, ctx: &mut Ctx<'_>, loss: f32) -> Result<()> {
        self.hooks.push("after_backward");
        self.loss = loss;
        self.grads = (0..ctx.param_count()?)
            .map(|i| ctx.grads_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        Ok(())
    }
    fn after_step(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.hooks.push("after_step");
        self.after = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

#[test]
fn train_step_runs_the_hooks_around_a_loss_and_an_optimizer_step() {
    let mut host = MockHost::new(3, 4, 2);
    host.seed_grads();
    let mut plugin = MockPlugin::create::<Recorder>("").unwrap();
    let loss = plugin.train_step(&mut host).unwrap();
    let r = strategy_of::<Recorder>(&plugin);
    assert_eq!(r.hooks, ["before_batch", "after_backward", "after_step"]);
    assert!(loss > 0.0 && loss.is_finite() && r.loss == loss);
    // The first SGD step with momentum moves by lr * g (the buffer starts as g).
    for ((b, a), g) in r
        .before
        .iter()
        .flatten()
        .zip(r.after.iter().flatten())
        .zip(r.grads.iter().flatten())
    {
        assert!((b - 0.1 * g - a).abs() < 1e-6, "{b} - 0.1 * {g} != {a}");
    }
    // Gradients were zeroed first (seed_grads is gone), and rows of task 0 put nothing on
    // units 2, 3 except through the replayed row (unit 3 its target, 2 in its head).
    let gb = &r.grads[1];
    assert!(gb[2] > 0.0 && gb[3] < 0.0, "{gb:?}");
    assert!(
        (gb.iter().sum::<f32>()).abs() < 1e-6,
        "softmax gradients sum to zero"
    );
    // The loss is the mean cross-entropy: a finite difference agrees with the gradient.
    let mut probe = MockHost::new(3, 4, 2);
    probe.state_mut().params[0].values = r.before[0].clone();
    probe.state_mut().appended = host.state().appended.clone();
    let eps = 1e-2;
    let at = |probe: &mut MockHost, dw: f32| {
        probe.state_mut().params[0].values[5] = r.before[0][5] + dw;
        probe.loss_backward(0).unwrap()
    };
    let fd = (at(&mut probe, eps) - at(&mut probe, -eps)) / (2.0 * eps);
    assert!(
        (fd - r.grads[0][5]).abs() < 1e-3,
        "{fd} vs {}",
        r.grads[0][5]
    );
}
