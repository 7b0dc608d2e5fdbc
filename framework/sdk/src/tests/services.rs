//! Host services through `Ctx` in detail: the model services, task info, RNG, experts, logging,
//! `report` (ABI 1.1), read-only views, refusals, training units.

use std::ffi::{c_void, CString};
use std::ptr;

use super::{probe, with_ctx};
use crate::abi::*;
use crate::testing::{descriptor_of, global_logs, MockHost, MockPlugin};
use crate::{
    bail, ensure, format_err, Ctx, CustomState, HostStatus, NoConfig, Result, Role, Setting, Split,
    Strategy, TaskInfo,
};

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

// ---- the shared service layer, Ctx fixes ------------------------------------------------------

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
