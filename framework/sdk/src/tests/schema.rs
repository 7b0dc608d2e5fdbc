//! Schema validation, the rendered default config, and the error type.

use super::{Probe, ProbeConfig};
use crate::abi::*;
use crate::testing::MockPlugin;
use crate::{
    bail, ensure, validate, Context, Error, HParam, HParams, HostStatus, NoState, Result, Strategy,
    Values,
};

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
