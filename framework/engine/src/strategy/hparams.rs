//! Hyperparameter schemas: what a strategy declares about each hyperparameter (kind, default,
//! inclusive range, log scale, choices), and checking a `[[strategy]]` section's `hparams`
//! against it (types, ranges, unknown keys with a "did you mean" hint), filling defaults.

use clef_data::Invalid;

/// Kind of a hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub enum HParamKind {
    /// A real number.
    Float,
    /// A whole number.
    Int,
    /// `true` / `false`.
    Bool,
    /// One of the listed strings.
    Choice(Vec<String>),
}

impl HParamKind {
    /// Short name for listings and messages (`float`, `int`, `bool`, `choice`).
    pub fn as_str(&self) -> &'static str {
        match self {
            HParamKind::Float => "float",
            HParamKind::Int => "int",
            HParamKind::Bool => "bool",
            HParamKind::Choice(_) => "choice",
        }
    }
}

/// A hyperparameter value of the schema's kind.
#[derive(Debug, Clone, PartialEq)]
pub enum HValue {
    /// Float value.
    Float(f64),
    /// Int value.
    Int(i64),
    /// Bool value.
    Bool(bool),
    /// The chosen string.
    Choice(String),
}

impl HValue {
    /// As a TOML value.
    pub fn to_toml(&self) -> toml::Value {
        match self {
            HValue::Float(v) => toml::Value::Float(*v),
            HValue::Int(v) => toml::Value::Integer(*v),
            HValue::Bool(v) => toml::Value::Boolean(*v),
            HValue::Choice(v) => toml::Value::String(v.clone()),
        }
    }
}

impl std::fmt::Display for HValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HValue::Float(v) => write!(f, "{v:?}"),
            HValue::Int(v) => write!(f, "{v}"),
            HValue::Bool(v) => write!(f, "{v}"),
            HValue::Choice(v) => write!(f, "{v:?}"),
        }
    }
}

/// One hyperparameter of a plugin's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct HParamSpec {
    /// Key in the `hparams` table.
    pub name: String,
    /// Kind (with the choices of a choice).
    pub kind: HParamKind,
    /// Search on a log scale.
    pub log_scale: bool,
    /// Acts only once a task has ended (`CLEF_HPARAM_NEEDS_PAST_TASKS`): `first-task` tuning
    /// on one task cannot tune it.
    pub needs_past_tasks: bool,
    /// Default value.
    pub default: HValue,
    /// Inclusive lower bound of a float/int (`-inf` = none).
    pub min: f64,
    /// Inclusive upper bound of a float/int (`+inf` = none).
    pub max: f64,
    /// One-line description.
    pub doc: String,
}

impl HParamSpec {
    /// The allowed values as text: `[0, 1e3]`, `>= 0`, `"a" | "b"`, `true | false`, or
    /// `any` (unbounded number).
    pub fn range_text(&self) -> String {
        match &self.kind {
            HParamKind::Bool => "true | false".into(),
            HParamKind::Choice(c) => c
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(" | "),
            HParamKind::Float | HParamKind::Int => {
                match (self.min.is_finite(), self.max.is_finite()) {
                    (true, true) => format!("[{}, {}]", self.min, self.max),
                    (true, false) => format!(">= {}", self.min),
                    (false, true) => format!("<= {}", self.max),
                    (false, false) => "any".into(),
                }
            }
        }
    }
}

/// Checks `given` (the section's `hparams` table) against `plugin`'s `schema` and returns the full
/// table (every key of the schema, defaults filled in). Errors name the key as
/// `strategy[<index>].hparams.<key>`.
///
/// Rules: unknown keys are refused (with a "did you mean" hint); a float accepts integers; an
/// int must be a whole number (`3` or `3.0`); a bool must be `true`/`false`; a choice must be
/// one of its strings; numbers must lie within the inclusive `[min, max]` range.
pub fn resolve(
    plugin: &str,
    schema: &[HParamSpec],
    index: usize,
    given: &toml::Table,
) -> Result<toml::Table, Invalid> {
    let key = |k: &str| format!("strategy[{index}].hparams.{k}");
    for (k, v) in given {
        let Some(spec) = schema.iter().find(|h| h.name == *k) else {
            return Err(Invalid::new(key(k), unknown_message(plugin, schema, k)));
        };
        check_value(spec, v).map_err(|m| Invalid::new(key(k), m))?;
    }
    let mut out = toml::Table::new();
    for spec in schema {
        let value = match given.get(&spec.name) {
            Some(v) => normalise(spec, v),
            None => spec.default.to_toml(),
        };
        out.insert(spec.name.clone(), value);
    }
    Ok(out)
}

/// The table as the TOML document `create` receives.
pub fn to_config_toml(table: &toml::Table) -> String {
    table.to_string()
}

fn unknown_message(plugin: &str, schema: &[HParamSpec], k: &str) -> String {
    if schema.is_empty() {
        return format!(
            "unknown hyperparameter `{k}`: plugin `{}` has no hyperparameters",
            plugin
        );
    }
    let names: Vec<&str> = schema.iter().map(|h| h.name.as_str()).collect();
    let hint = did_you_mean(k, &names)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!(
        "unknown hyperparameter `{k}` for plugin `{plugin}`{hint} (known: {})",
        names.join(", ")
    )
}

/// The closest candidate within a small edit distance, if any.
pub fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
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

fn range_check(spec: &HParamSpec, v: f64, shown: &str) -> Result<(), String> {
    if v.is_nan() || v < spec.min || v > spec.max {
        return Err(format!(
            "is out of range: {shown} is not in {} ({} `{}`)",
            spec.range_text(),
            spec.kind.as_str(),
            spec.name
        ));
    }
    Ok(())
}

/// Checks one value against its schema entry; the error says what was expected.
pub fn check_value(spec: &HParamSpec, v: &toml::Value) -> Result<(), String> {
    let wrong = |expected: &str| {
        Err(format!(
            "has the wrong type: expected {expected}, got {} ({v})",
            type_name(v)
        ))
    };
    match (&spec.kind, v) {
        (HParamKind::Float, toml::Value::Float(f)) => range_check(spec, *f, &v.to_string()),
        (HParamKind::Float, toml::Value::Integer(i)) => {
            range_check(spec, *i as f64, &i.to_string())
        }
        (HParamKind::Float, _) => wrong("a number (float)"),
        (HParamKind::Int, toml::Value::Integer(i)) => range_check(spec, *i as f64, &i.to_string()),
        (HParamKind::Int, toml::Value::Float(f)) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() <= 9.007_199_254_740_992e15 {
                range_check(spec, *f, &v.to_string())
            } else {
                Err(format!("must be a whole number (int), got {v}"))
            }
        }
        (HParamKind::Int, _) => wrong("a whole number (int)"),
        (HParamKind::Bool, toml::Value::Boolean(_)) => Ok(()),
        (HParamKind::Bool, _) => wrong("true or false (bool)"),
        (HParamKind::Choice(choices), toml::Value::String(s)) => {
            if choices.iter().any(|c| c == s) {
                Ok(())
            } else {
                let names: Vec<&str> = choices.iter().map(String::as_str).collect();
                let hint = did_you_mean(s, &names)
                    .map(|c| format!("; did you mean {c:?}?"))
                    .unwrap_or_default();
                Err(format!(
                    "must be one of {}, got {s:?}{hint}",
                    spec.range_text()
                ))
            }
        }
        (HParamKind::Choice(_), _) => wrong(&format!("one of {} (a string)", spec.range_text())),
    }
}

/// A checked value in the kind's canonical TOML type (float for floats, integer for ints).
fn normalise(spec: &HParamSpec, v: &toml::Value) -> toml::Value {
    match (&spec.kind, v) {
        (HParamKind::Float, toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
        (HParamKind::Int, toml::Value::Float(f)) => toml::Value::Integer(*f as i64),
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> (&'static str, Vec<HParamSpec>) {
        let h = |name: &str, kind, default, min, max| HParamSpec {
            name: name.into(),
            kind,
            log_scale: false,
            needs_past_tasks: false,
            default,
            min,
            max,
            doc: String::new(),
        };
        (
            "ewc",
            vec![
                h("lambda", HParamKind::Float, HValue::Float(1.0), 0.0, 1e4),
                h("samples", HParamKind::Int, HValue::Int(10), 1.0, 1000.0),
                h(
                    "online",
                    HParamKind::Bool,
                    HValue::Bool(false),
                    f64::NEG_INFINITY,
                    f64::INFINITY,
                ),
                h(
                    "mode",
                    HParamKind::Choice(vec!["diag".into(), "kfac".into()]),
                    HValue::Choice("diag".into()),
                    f64::NEG_INFINITY,
                    f64::INFINITY,
                ),
            ],
        )
    }

    fn resolve_info(index: usize, given: &toml::Table) -> Result<toml::Table, Invalid> {
        let (name, schema) = info();
        resolve(name, &schema, index, given)
    }

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn fills_defaults_and_normalises_types() {
        let t = resolve_info(0, &table("lambda = 3\nsamples = 4.0")).unwrap();
        assert_eq!(t["lambda"], toml::Value::Float(3.0));
        assert_eq!(t["samples"], toml::Value::Integer(4));
        assert_eq!(t["online"], toml::Value::Boolean(false));
        assert_eq!(t["mode"], toml::Value::String("diag".into()));
        let back: toml::Table = toml::from_str(&to_config_toml(&t)).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn errors_name_the_key() {
        let e = resolve_info(2, &table("lamda = 1")).unwrap_err();
        assert_eq!(e.key, "strategy[2].hparams.lamda");
        assert!(e.message.contains("did you mean `lambda`"), "{}", e.message);
        let e = resolve_info(0, &table("lambda = \"big\"")).unwrap_err();
        assert!(e.message.contains("wrong type"), "{}", e.message);
        let e = resolve_info(0, &table("lambda = -1.0")).unwrap_err();
        assert!(e.message.contains("out of range"), "{}", e.message);
        let e = resolve_info(0, &table("samples = 2.5")).unwrap_err();
        assert!(e.message.contains("whole number"), "{}", e.message);
        let e = resolve_info(0, &table("online = 1")).unwrap_err();
        assert!(e.message.contains("true or false"), "{}", e.message);
        let e = resolve_info(0, &table("mode = \"kfak\"")).unwrap_err();
        assert!(e.message.contains("did you mean \"kfac\""), "{}", e.message);
        let e = resolve_info(0, &table("lambda = nan")).unwrap_err();
        assert!(e.message.contains("out of range"), "{}", e.message);
    }
}
