//! Typed hyperparameter schema builders.
//!
//! A strategy declares its hyperparameters with [`Strategy::hparams`](crate::Strategy::hparams).
//! The schema goes into the plugin's descriptor; the host validates the strategy's config
//! section against it (unknown key, wrong type, out of range), fills in defaults, builds search
//! spaces from it, and hands the plugin the complete table as TOML, which the SDK deserialises
//! into [`Strategy::Config`](crate::Strategy::Config). Plugins usually derive the schema with
//! `#[derive(HParams)]` (see [`HParams`](crate::HParams)) rather than building it by hand.

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::values::Value;

/// One hyperparameter: name, type with default and range, doc, and search-scale flag.
///
/// ```
/// use clef_sdk::HParam;
/// let schema = vec![
///     HParam::float("lambda", 1.0, 0.0, 1e6, "regularisation strength").log_scale(),
///     HParam::int("buffer_size", 200, 1, 100_000, "replay buffer capacity (samples)"),
///     HParam::bool("reset_head", false, "re-initialise the head at every task"),
///     HParam::choice("sampling", "reservoir", &["reservoir", "ring"], "buffer policy"),
/// ];
/// assert_eq!(schema[0].name(), "lambda");
/// assert!(schema[0].is_log_scale());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HParam {
    name: String,
    kind: HParamKind,
    doc: String,
    log_scale: bool,
    needs_past_tasks: bool,
}

/// The type of a hyperparameter with its default and bounds (inclusive).
#[derive(Debug, Clone, PartialEq)]
pub enum HParamKind {
    /// A real number in `[min, max]` (use `f64::NEG_INFINITY` / `f64::INFINITY` for no bound).
    Float {
        /// Default value.
        default: f64,
        /// Inclusive lower bound.
        min: f64,
        /// Inclusive upper bound.
        max: f64,
    },
    /// An integer in `[min, max]` (`i64::MIN` / `i64::MAX` mean no bound). Values cross the ABI
    /// as `f64`, so bounds and defaults should stay within ±2^53.
    Int {
        /// Default value.
        default: i64,
        /// Inclusive lower bound.
        min: i64,
        /// Inclusive upper bound.
        max: i64,
    },
    /// A boolean.
    Bool {
        /// Default value.
        default: bool,
    },
    /// One of a list of strings.
    Choice {
        /// The default choice (one of `choices`).
        default: String,
        /// The allowed values.
        choices: Vec<String>,
    },
}

impl HParam {
    /// A real-valued hyperparameter with an inclusive range.
    pub fn float(name: impl Into<String>, default: f64, min: f64, max: f64, doc: &str) -> Self {
        Self::new(name, HParamKind::Float { default, min, max }, doc)
    }

    /// An integer hyperparameter with an inclusive range.
    pub fn int(name: impl Into<String>, default: i64, min: i64, max: i64, doc: &str) -> Self {
        Self::new(name, HParamKind::Int { default, min, max }, doc)
    }

    /// A boolean hyperparameter.
    pub fn bool(name: impl Into<String>, default: bool, doc: &str) -> Self {
        Self::new(name, HParamKind::Bool { default }, doc)
    }

    /// A hyperparameter taking one of `choices` (deserialise it into a `String` or a
    /// `#[serde(rename_all = "snake_case")]` enum).
    pub fn choice(name: impl Into<String>, default: &str, choices: &[&str], doc: &str) -> Self {
        Self::new(
            name,
            HParamKind::Choice {
                default: default.to_owned(),
                choices: choices.iter().map(|c| (*c).to_owned()).collect(),
            },
            doc,
        )
    }

    fn new(name: impl Into<String>, kind: HParamKind, doc: &str) -> Self {
        Self {
            name: name.into(),
            kind,
            doc: doc.to_owned(),
            log_scale: false,
            needs_past_tasks: false,
        }
    }

    /// Marks a hyperparameter that only acts once a task has ended (e.g. the strength of a
    /// penalty towards past tasks): tuning it on the first task alone cannot work, and clef
    /// refuses a `first-task` search of it with `tune_tasks = 1` (ABI flag
    /// `CLEF_HPARAM_NEEDS_PAST_TASKS`).
    pub fn needs_past_tasks(mut self) -> Self {
        self.needs_past_tasks = true;
        self
    }

    /// Whether the hyperparameter only acts once a task has ended.
    pub fn is_needs_past_tasks(&self) -> bool {
        self.needs_past_tasks
    }

    /// The default as a [`Value`].
    pub fn default_value(&self) -> Value {
        match &self.kind {
            HParamKind::Float { default, .. } => Value::Float(*default),
            HParamKind::Int { default, .. } => Value::Int(*default),
            HParamKind::Bool { default } => Value::Bool(*default),
            HParamKind::Choice { default, .. } => Value::Choice(default.clone()),
        }
    }

    /// The range or the choices as shown in docs: `[0, 1]`, `>= 1`, `"a" \| "b"`, ...
    pub fn range_text(&self) -> String {
        let num = |v: f64| {
            if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
                format!("{v:e}")
            } else if v.fract() == 0.0 {
                format!("{}", v as i64)
            } else {
                format!("{v}")
            }
        };
        let bounds = |min: f64, max: f64| match (min.is_finite(), max.is_finite()) {
            (true, true) => format!("[{}, {}]", num(min), num(max)),
            (true, false) => format!(">= {}", num(min)),
            (false, true) => format!("<= {}", num(max)),
            (false, false) => "any".to_owned(),
        };
        match &self.kind {
            HParamKind::Float { min, max, .. } => bounds(*min, *max),
            HParamKind::Int { min, max, .. } => {
                let f = |v: i64, unbounded: f64| match v {
                    i64::MIN | i64::MAX => unbounded,
                    v => v as f64,
                };
                bounds(f(*min, f64::NEG_INFINITY), f(*max, f64::INFINITY))
            }
            HParamKind::Bool { .. } => "true \\| false".to_owned(),
            HParamKind::Choice { choices, .. } => choices
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" \\| "),
        }
    }

    /// Marks a float or int hyperparameter to be searched on a log scale (e.g. regularisation
    /// strengths, learning rates).
    pub fn log_scale(mut self) -> Self {
        self.log_scale = true;
        self
    }

    /// The key in the config's `hparams` table.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type, default and range.
    pub fn kind(&self) -> &HParamKind {
        &self.kind
    }

    /// The one-line description.
    pub fn doc(&self) -> &str {
        &self.doc
    }

    /// Whether the hyperparameter is searched on a log scale.
    pub fn is_log_scale(&self) -> bool {
        self.log_scale
    }

    /// Checks this entry on its own (name syntax, default within range, choices).
    fn validate(&self) -> Result<()> {
        let name = &self.name;
        let bare_key = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !bare_key {
            return Err(Error::msg(format!(
                "hyperparameter name {name:?} must be a non-empty TOML bare key ([A-Za-z0-9_-]+)"
            )));
        }
        if self.doc.contains('\0') {
            return Err(Error::msg(format!(
                "hyperparameter `{name}`: doc contains a NUL byte"
            )));
        }
        match &self.kind {
            HParamKind::Float { default, min, max } => {
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: invalid range [{min}, {max}]"
                    )));
                }
                if !default.is_finite() || default < min || default > max {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: default {default} is outside [{min}, {max}]"
                    )));
                }
            }
            HParamKind::Int { default, min, max } => {
                if min > max {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: invalid range [{min}, {max}]"
                    )));
                }
                if default < min || default > max {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: default {default} is outside [{min}, {max}]"
                    )));
                }
            }
            HParamKind::Bool { .. } => {}
            HParamKind::Choice { default, choices } => {
                if choices.is_empty() {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: a choice needs at least one value"
                    )));
                }
                let mut seen = HashSet::new();
                for choice in choices {
                    if choice.contains('\0') {
                        return Err(Error::msg(format!(
                            "hyperparameter `{name}`: choice {choice:?} contains a NUL byte"
                        )));
                    }
                    if !seen.insert(choice) {
                        return Err(Error::msg(format!(
                            "hyperparameter `{name}`: choice {choice:?} is listed twice"
                        )));
                    }
                }
                if !choices.contains(default) {
                    return Err(Error::msg(format!(
                        "hyperparameter `{name}`: default {default:?} is not one of {choices:?}"
                    )));
                }
            }
        }
        if self.log_scale
            && matches!(
                self.kind,
                HParamKind::Bool { .. } | HParamKind::Choice { .. }
            )
        {
            return Err(Error::msg(format!(
                "hyperparameter `{name}`: only float and int hyperparameters can be log-scale"
            )));
        }
        Ok(())
    }
}

/// Checks a strategy name (`[a-z0-9_-]+`) and its schema: valid, unique names; defaults inside
/// their ranges; non-empty, distinct choices containing the default. The export macro runs this
/// when the plugin is created (an invalid schema makes every `create` fail with this message);
/// call [`validate`](crate::validate) in a unit test to catch mistakes early.
pub fn validate_schema(name: &str, hparams: &[HParam]) -> Result<()> {
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid_name {
        return Err(Error::msg(format!(
            "strategy name {name:?} must match [a-z0-9_-]+"
        )));
    }
    let mut seen = HashSet::new();
    for hparam in hparams {
        hparam
            .validate()
            .map_err(|e| e.context(format!("invalid hyperparameter schema of `{name}`")))?;
        if !seen.insert(hparam.name()) {
            return Err(Error::msg(format!(
                "invalid hyperparameter schema of `{name}`: `{}` is declared twice",
                hparam.name()
            )));
        }
    }
    Ok(())
}

/// The schema as a Markdown table (`| hyperparameter | type | default | range | |`), the form
/// `docs/strategies.md` shows and `standard_tests!` (feature `testing`) checks.
pub fn markdown_table(schema: &[HParam]) -> String {
    let mut out =
        String::from("| hyperparameter | type | default | range | |\n|---|---|---|---|---|\n");
    for h in schema {
        let (kind, default) = match h.kind() {
            HParamKind::Float { default, .. } => ("float", format!("{default:?}")),
            HParamKind::Int { default, .. } => ("int", default.to_string()),
            HParamKind::Bool { default } => ("bool", default.to_string()),
            HParamKind::Choice { default, .. } => ("choice", format!("`{default}`")),
        };
        let mut range = h.range_text();
        if h.is_log_scale() {
            range.push_str(", log scale");
        }
        let doc = h.doc().replace('|', "\\|");
        out.push_str(&format!(
            "| `{}` | {kind} | {default} | {range} | {doc} |\n",
            h.name()
        ));
    }
    out
}
