//! Hooks through their C entry points: errors, panics, views, batches, state.

use std::ffi::{c_void, CStr};
use std::ptr;

use super::{probe, strategy_of, Probe};
use crate::abi::*;
use crate::testing::{descriptor_of, MockHost, Phase};

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
    // The panic is in `Probe::after_backward`, in tests/mod.rs.
    assert!(
        err.message.contains("tests/mod.rs"),
        "location missing: {err}"
    );
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
