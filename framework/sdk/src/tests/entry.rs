//! The descriptor `export_plugin!` builds, and `create`.

use std::ffi::{c_void, CStr, CString};
use std::ptr;

use super::{probe, strategy_of, Probe, PROBE_OK};
use crate::abi::*;
use crate::testing::{describe, descriptor_of, MockHost, MockPlugin};
use crate::{NoConfig, NoState, Result, Strategy};

// ---- descriptor ------------------------------------------------------------------------------

#[test]
fn descriptor_carries_name_version_and_schema() {
    let desc = descriptor_of::<Probe>();
    assert_eq!(desc.abi_major, CLEF_ABI_MAJOR);
    assert_eq!(desc.abi_minor, CLEF_ABI_MINOR);
    assert_eq!(desc.struct_size as usize, CLEF_DESCRIPTOR_SIZE_V1_6);
    // The probe keeps the default: MLPs only.
    assert_eq!(desc.backbones, CLEF_BACKBONE_MLP);
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

struct ConvReady;

impl Strategy for ConvReady {
    const NAME: &'static str = "conv-ready";
    const CONV_BACKBONES: bool = true;
    type Config = NoConfig;
    type State = NoState;
    fn new(_: NoConfig) -> Result<Self> {
        Ok(Self)
    }
}

#[test]
fn conv_backbones_set_the_descriptor_bit() {
    let desc = descriptor_of::<ConvReady>();
    assert_eq!(desc.backbones, CLEF_BACKBONE_MLP | CLEF_BACKBONE_CONV);
    assert_eq!(desc.reserved, 0);
}

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
