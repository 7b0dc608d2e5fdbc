//! Typed hyperparameter configs: the [`HParams`] trait (derive it with
//! `#[derive(HParams)]`), and [`Values`], a plugin's `hparams` table checked against its schema.
//!
//! The host already checks a strategy's config section against the schema before it creates
//! an instance; the SDK checks the table it receives once more, with the same rules, so a
//! plugin's `new` can rely on every value being present, of the right type, finite and in
//! range, whoever the caller is (the host, [`MockPlugin`](crate::testing::MockPlugin), a test).

use std::fmt;

use crate::error::{Error, Result};
use crate::hparam::{HParam, HParamKind};

/// A plugin's hyperparameters: the schema, and the typed config built from checked values.
///
/// Derive it on the config struct; each field is one hyperparameter, its doc comment the help
/// text:
///
/// ```
/// use clef_sdk::{HParamChoice, HParams};
///
/// #[derive(HParamChoice, Debug, PartialEq)]
/// pub enum Sampling { Reservoir, RingBuffer }
///
/// #[derive(HParams)]
/// pub struct Config {
///     /// Penalty strength.
///     #[hparam(default = 0.01, range = 0.0..=1e6, log)]
///     pub lambda: f64,
///     /// Memory capacity (samples).
///     #[hparam(default = 200, range = 1..=100_000)]
///     pub memory: usize,
///     /// Re-initialise the head at every task.
///     #[hparam(default = false)]
///     pub reset_head: bool,
///     /// Buffer policy.
///     #[hparam(default = "reservoir")]
///     pub sampling: Sampling,
/// }
///
/// use clef_sdk::HParams as _;
/// let schema = Config::schema();
/// assert_eq!(schema[0].name(), "lambda");
/// assert_eq!(schema[3].name(), "sampling");
/// let config = Config::from_toml("memory = 50\nsampling = \"ring-buffer\"").unwrap();
/// assert_eq!((config.lambda, config.memory), (0.01, 50));
/// assert_eq!(config.sampling, Sampling::RingBuffer);
/// assert!(Config::from_toml("memory = 0").is_err()); // out of range
/// ```
///
/// Attributes of `#[hparam(...)]`: `default = <literal>` (required), `range = a..=b` (or `a..`,
/// `..=b`; float and integer fields), `log` (searched on a log scale), `needs_past_tasks` (the
/// value only acts once a task has ended, e.g. a penalty towards past tasks: clef refuses to
/// tune it on the first task alone), `choices = ["a", "b"]` or `choices = SOME_CONST` (a `&[&str]`; for a `String` field; an enum that
/// derives [`HParamChoice`](crate::HParamChoice) lists its own). Field types: `f64`, `f32`,
/// `i64`, `i32`, `u64`, `u32`, `usize`, `bool`, `String` with `choices`, or a
/// [`HParamChoice`](crate::HParamChoice) enum.
pub trait HParams: Sized {
    /// The schema, in declaration order.
    fn schema() -> Vec<HParam>;

    /// Builds the config from values checked against [`schema`](HParams::schema).
    fn from_values(values: &Values) -> Result<Self>;

    /// Parses and checks a `hparams` TOML table (missing keys take their defaults), then
    /// builds the config.
    fn from_toml(text: &str) -> Result<Self> {
        Self::from_values(&Values::from_toml(&Self::schema(), text)?)
    }
}

/// An enum hyperparameter's choices: derive it (`#[derive(HParamChoice)]`); variants are named
/// in kebab-case (`PerTask` → `"per-task"`) unless `#[choice(name = "...")]` says otherwise.
pub trait HParamChoice: Sized {
    /// The names of the variants, in declaration order.
    const CHOICES: &'static [&'static str];

    /// The variant called `name` (one of [`CHOICES`](HParamChoice::CHOICES)).
    fn from_choice(name: &str) -> Option<Self>;

    /// The name of this variant.
    fn choice_name(&self) -> &'static str;
}

/// The `Config` of a strategy without hyperparameters: accepts only an empty table.
///
/// ```
/// use clef_sdk::{HParams, NoConfig};
/// assert!(NoConfig::from_toml("").is_ok());
/// assert!(NoConfig::from_toml("lr = 0.1").is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig {}

impl HParams for NoConfig {
    fn schema() -> Vec<HParam> {
        Vec::new()
    }

    fn from_values(_: &Values) -> Result<Self> {
        Ok(Self {})
    }
}

/// One checked hyperparameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A finite real number within its range.
    Float(f64),
    /// A whole number within its range.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// One of the choices.
    Choice(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v:?}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Choice(v) => write!(f, "{v:?}"),
        }
    }
}

/// A `hparams` table checked against a schema: every hyperparameter of the schema, in schema
/// order, each of its declared type, finite and within its range.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    entries: Vec<(String, Value)>,
}

impl Values {
    /// Every hyperparameter at its default.
    pub fn defaults(schema: &[HParam]) -> Self {
        let entries = schema
            .iter()
            .map(|h| (h.name().to_owned(), h.default_value()))
            .collect();
        Self { entries }
    }

    /// Parses a TOML table and checks it against `schema` (see [`Values::from_table`]).
    pub fn from_toml(schema: &[HParam], text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            Error::msg(format!(
                "the hparams table is not valid TOML: {}",
                e.message()
            ))
        })?;
        Self::from_table(schema, &table)
    }

    /// Checks `table` against `schema`: no unknown keys, every value of its declared type
    /// (an integer is accepted for a float; a whole-number float for an int), finite and in
    /// range, choices among the listed ones. Missing keys take their defaults.
    pub fn from_table(schema: &[HParam], table: &toml::Table) -> Result<Self> {
        for key in table.keys() {
            if !schema.iter().any(|h| h.name() == key) {
                let known: Vec<&str> = schema.iter().map(HParam::name).collect();
                return Err(Error::msg(if known.is_empty() {
                    format!("unknown hyperparameter `{key}`: this strategy has none")
                } else {
                    format!(
                        "unknown hyperparameter `{key}` (expected one of: {})",
                        known.join(", ")
                    )
                }));
            }
        }
        let entries = schema
            .iter()
            .map(|h| {
                let value = match table.get(h.name()) {
                    Some(v) => check(h, v)
                        .map_err(|e| Error::msg(format!("hyperparameter `{}` {e}", h.name())))?,
                    None => h.default_value(),
                };
                Ok((h.name().to_owned(), value))
            })
            .collect::<Result<_>>()?;
        Ok(Self { entries })
    }

    /// The values in schema order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `name`, if the schema has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn expect(&self, name: &str, kind: &str) -> Error {
        match self.get(name) {
            Some(v) => Error::msg(format!("hyperparameter `{name}` is {v}, not {kind}")),
            None => Error::msg(format!("hyperparameter `{name}` is not in the schema")),
        }
    }

    /// The float `name`.
    pub fn float(&self, name: &str) -> Result<f64> {
        match self.get(name) {
            Some(Value::Float(v)) => Ok(*v),
            _ => Err(self.expect(name, "a float")),
        }
    }

    /// The integer `name`, converted to `T` (e.g. `usize`).
    pub fn int<T: TryFrom<i64>>(&self, name: &str) -> Result<T> {
        match self.get(name) {
            Some(Value::Int(v)) => T::try_from(*v).map_err(|_| {
                Error::msg(format!(
                    "hyperparameter `{name}` = {v} does not fit in {}",
                    std::any::type_name::<T>()
                ))
            }),
            _ => Err(self.expect(name, "an integer")),
        }
    }

    /// The boolean `name`.
    pub fn bool(&self, name: &str) -> Result<bool> {
        match self.get(name) {
            Some(Value::Bool(v)) => Ok(*v),
            _ => Err(self.expect(name, "a boolean")),
        }
    }

    /// The choice `name`, as its string.
    pub fn choice(&self, name: &str) -> Result<&str> {
        match self.get(name) {
            Some(Value::Choice(v)) => Ok(v),
            _ => Err(self.expect(name, "a choice")),
        }
    }

    /// The choice `name`, as the enum `T`.
    pub fn choice_of<T: HParamChoice>(&self, name: &str) -> Result<T> {
        let s = self.choice(name)?;
        T::from_choice(s).ok_or_else(|| {
            Error::msg(format!(
                "hyperparameter `{name}` = {s:?} is not one of {:?}",
                T::CHOICES
            ))
        })
    }

    /// The table as TOML text (what the host passes to `create`).
    pub fn to_toml(&self) -> String {
        let mut table = toml::Table::new();
        for (k, v) in &self.entries {
            let v = match v {
                Value::Float(x) => toml::Value::Float(*x),
                Value::Int(x) => toml::Value::Integer(*x),
                Value::Bool(x) => toml::Value::Boolean(*x),
                Value::Choice(x) => toml::Value::String(x.clone()),
            };
            table.insert(k.clone(), v);
        }
        table.to_string()
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// Largest integer an `f64` holds exactly (values cross the ABI as `f64`).
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Checks one value against its schema entry; the error completes "hyperparameter `x` ...".
fn check(h: &HParam, v: &toml::Value) -> std::result::Result<Value, String> {
    let wrong = |expected: &str| format!("must be {expected}, got {} ({v})", type_name(v));
    let range = |x: f64, min: f64, max: f64| {
        if x.is_nan() || x < min || x > max {
            Err(format!("is out of range: {v} is not in [{min}, {max}]"))
        } else {
            Ok(())
        }
    };
    match (h.kind(), v) {
        (HParamKind::Float { min, max, .. }, toml::Value::Float(_) | toml::Value::Integer(_)) => {
            let x = match v {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                _ => unreachable!("matched above"),
            };
            if !x.is_finite() {
                return Err(format!("must be a finite number, got {v}"));
            }
            range(x, *min, *max)?;
            Ok(Value::Float(x))
        }
        (HParamKind::Float { .. }, _) => Err(wrong("a number (float)")),
        (HParamKind::Int { min, max, .. }, toml::Value::Integer(_) | toml::Value::Float(_)) => {
            let i = match v {
                toml::Value::Integer(i) => *i,
                toml::Value::Float(f) if f.fract() == 0.0 && f.abs() <= MAX_EXACT => *f as i64,
                _ => return Err(format!("must be a whole number (int), got {v}")),
            };
            if i < *min || i > *max {
                return Err(format!("is out of range: {i} is not in [{min}, {max}]"));
            }
            Ok(Value::Int(i))
        }
        (HParamKind::Int { .. }, _) => Err(wrong("a whole number (int)")),
        (HParamKind::Bool { .. }, toml::Value::Boolean(b)) => Ok(Value::Bool(*b)),
        (HParamKind::Bool { .. }, _) => Err(wrong("true or false (bool)")),
        (HParamKind::Choice { choices, .. }, toml::Value::String(s)) => {
            if choices.iter().any(|c| c == s) {
                Ok(Value::Choice(s.clone()))
            } else {
                Err(format!("must be one of {choices:?}, got {s:?}"))
            }
        }
        (HParamKind::Choice { choices, .. }, _) => {
            Err(wrong(&format!("one of {choices:?} (a string)")))
        }
    }
}
