//! Search spaces built from the plugins' hyperparameter schemas, and the candidates a grid or a
//! random search draws from them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::{Invalid, ProtocolConfig, SearchKind, StrategyConfig};
use clef_data::seed::derive_seed;
use clef_engine::strategy::hparams::check_value;
use clef_engine::strategy::{HParamKind, HParamSpec};

/// One searched hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Dim {
    /// Explicit values (grid: each; random: a uniform pick).
    Values(Vec<toml::Value>),
    /// A numeric range; `log` draws log-uniformly (grid: geometric spacing).
    Range {
        /// Lower bound (inclusive).
        min: f64,
        /// Upper bound (inclusive).
        max: f64,
        /// Log scale.
        log: bool,
        /// Whole numbers only.
        int: bool,
    },
}

/// A strategy's search space: dimensions in key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchSpace {
    /// `(hyperparameter, dimension)` pairs.
    pub dims: Vec<(String, Dim)>,
}

/// Builds the search space of `[[strategy]]` entry `index` from its `search` table and the
/// strategy's schema. Errors name `strategy[<index>].search.<key>`.
pub fn space(
    index: usize,
    cfg: &StrategyConfig,
    schema: &[HParamSpec],
) -> Result<SearchSpace, Invalid> {
    let mut dims = Vec::new();
    for (k, v) in &cfg.search {
        let key = format!("strategy[{index}].search.{k}");
        let Some(spec) = schema.iter().find(|s| &s.name == k) else {
            let known: Vec<&str> = schema.iter().map(|s| s.name.as_str()).collect();
            return Err(Invalid::new(
                key,
                format!(
                    "unknown hyperparameter `{k}` for strategy `{}` (known: {})",
                    cfg.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        dims.push((k.clone(), dim(spec, v).map_err(|m| Invalid::new(key, m))?));
    }
    Ok(SearchSpace { dims })
}

fn dim(spec: &HParamSpec, v: &toml::Value) -> Result<Dim, String> {
    let numeric = matches!(spec.kind, HParamKind::Float | HParamKind::Int);
    let int = spec.kind == HParamKind::Int;
    match v {
        toml::Value::Array(values) => {
            if values.is_empty() {
                return Err("must list at least one value".into());
            }
            for (i, x) in values.iter().enumerate() {
                check_value(spec, x).map_err(|m| format!("value {i} {m}"))?;
            }
            Ok(Dim::Values(values.clone()))
        }
        toml::Value::String(s) if s == "schema" => match &spec.kind {
            HParamKind::Bool => Ok(Dim::Values(vec![false.into(), true.into()])),
            HParamKind::Choice(c) => Ok(Dim::Values(
                c.iter().map(|s| toml::Value::String(s.clone())).collect(),
            )),
            _ => {
                if !(spec.min.is_finite() && spec.max.is_finite()) {
                    return Err(format!(
                        "the schema range of `{}` is {}, not finite: give `{{ min = .., max = .. }}`",
                        spec.name,
                        spec.range_text()
                    ));
                }
                range(spec, spec.min, spec.max, spec.log_scale, int)
            }
        },
        toml::Value::Table(t) if numeric => {
            for k in t.keys() {
                if !["min", "max", "log"].contains(&k.as_str()) {
                    return Err(format!(
                        "unknown key `{k}` in a range (expected min, max, log)"
                    ));
                }
            }
            let num = |k: &str| -> Result<f64, String> {
                match t.get(k) {
                    Some(toml::Value::Float(f)) => Ok(*f),
                    Some(toml::Value::Integer(i)) => Ok(*i as f64),
                    Some(other) => Err(format!("`{k}` must be a number, got {other}")),
                    None => Err(format!("a range needs `{k}`")),
                }
            };
            let (min, max) = (num("min")?, num("max")?);
            let log = match t.get("log") {
                None => spec.log_scale,
                Some(toml::Value::Boolean(b)) => *b,
                Some(other) => return Err(format!("`log` must be true or false, got {other}")),
            };
            range(spec, min, max, log, int)
        }
        _ => Err(format!(
            "must be a list of values, {}or \"schema\"",
            if numeric {
                "a range `{ min = .., max = .., log = .. }` "
            } else {
                ""
            }
        )),
    }
}

fn range(spec: &HParamSpec, min: f64, max: f64, log: bool, int: bool) -> Result<Dim, String> {
    if min.partial_cmp(&max) != Some(std::cmp::Ordering::Less) {
        return Err(format!("needs min < max, got [{min}, {max}]"));
    }
    if min < spec.min || max > spec.max {
        return Err(format!(
            "range [{min}, {max}] leaves the schema range {} of `{}`",
            spec.range_text(),
            spec.name
        ));
    }
    if log && min <= 0.0 {
        return Err(format!(
            "a log-scale range needs min > 0, got {min} (set `log = false`)"
        ));
    }
    Ok(Dim::Range { min, max, log, int })
}

impl Dim {
    fn grid(&self, points: usize) -> Vec<toml::Value> {
        match self {
            Dim::Values(v) => v.clone(),
            Dim::Range { min, max, log, int } => {
                let mut out: Vec<toml::Value> = Vec::new();
                for i in 0..points {
                    let f = i as f64 / (points - 1) as f64;
                    let x = if *log {
                        (min.ln() + f * (max.ln() - min.ln())).exp()
                    } else {
                        min + f * (max - min)
                    };
                    let v = value(x, *int, *min, *max);
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                out
            }
        }
    }

    fn draw(&self, rng: &mut ChaCha8Rng) -> toml::Value {
        match self {
            Dim::Values(v) => v[rng.gen_range(0..v.len())].clone(),
            Dim::Range { min, max, log, int } => {
                let u: f64 = rng.gen();
                let x = if *log {
                    (min.ln() + u * (max.ln() - min.ln())).exp()
                } else {
                    min + u * (max - min)
                };
                value(x, *int, *min, *max)
            }
        }
    }
}

/// A float (rounded to 6 significant digits, so candidates print readably) or a whole number,
/// clamped to `[min, max]`.
fn value(x: f64, int: bool, min: f64, max: f64) -> toml::Value {
    if int {
        toml::Value::Integer(x.round().clamp(min.ceil(), max.floor()) as i64)
    } else {
        let r: f64 = format!("{x:.5e}").parse().unwrap_or(x);
        toml::Value::Float(r.clamp(min, max))
    }
}

/// The candidate `hparams` tables of a strategy: the fixed `hparams` plus one point of the
/// space each. A strategy without a search space has one candidate (its `hparams`). Grid: the
/// cartesian product in key order; random: `budget` draws seeded by `search_seed` and the
/// strategy's label, duplicates dropped.
pub fn candidates(
    p: &ProtocolConfig,
    cfg: &StrategyConfig,
    space: &SearchSpace,
) -> Vec<toml::Table> {
    if space.dims.is_empty() {
        return vec![cfg.hparams.clone()];
    }
    let points: Vec<Vec<(String, toml::Value)>> = match p.search {
        SearchKind::Grid => {
            let mut acc: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
            for (k, d) in &space.dims {
                let vals = d.grid(p.grid_points());
                acc = acc
                    .into_iter()
                    .flat_map(|prefix| {
                        vals.iter().map(move |v| {
                            let mut c = prefix.clone();
                            c.push((k.clone(), v.clone()));
                            c
                        })
                    })
                    .collect();
            }
            acc
        }
        SearchKind::Random => {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                p.search_seed,
                &format!("search-{}", cfg.label()),
            ));
            (0..p.budget.unwrap_or(1))
                .map(|_| {
                    space
                        .dims
                        .iter()
                        .map(|(k, d)| (k.clone(), d.draw(&mut rng)))
                        .collect()
                })
                .collect()
        }
    };
    let mut out: Vec<toml::Table> = Vec::new();
    for pt in points {
        let mut t = cfg.hparams.clone();
        t.extend(pt);
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clef_engine::strategy::HValue;

    fn spec(name: &str, kind: HParamKind, min: f64, max: f64, log: bool) -> HParamSpec {
        HParamSpec {
            name: name.into(),
            kind,
            log_scale: log,
            needs_past_tasks: false,
            default: HValue::Float(1.0),
            min,
            max,
            doc: String::new(),
        }
    }

    fn schema() -> Vec<HParamSpec> {
        vec![
            spec("lambda", HParamKind::Float, 0.0, 1e4, true),
            spec("k", HParamKind::Int, 1.0, 100.0, false),
            spec(
                "on",
                HParamKind::Bool,
                f64::NEG_INFINITY,
                f64::INFINITY,
                false,
            ),
        ]
    }

    fn strategy(search: &str) -> StrategyConfig {
        toml::from_str(&format!("name = \"x\"\n[search]\n{search}")).unwrap()
    }

    #[test]
    fn grid_is_the_cartesian_product_with_log_spacing() {
        let s = strategy("lambda = { min = 1, max = 100 }\non = \"schema\"");
        let sp = space(0, &s, &schema()).unwrap();
        let c = candidates(&ProtocolConfig::default(), &s, &sp);
        assert_eq!(c.len(), 6);
        let lambdas: Vec<f64> = c.iter().filter_map(|t| t["lambda"].as_float()).collect();
        assert_eq!(lambdas, vec![1.0, 1.0, 10.0, 10.0, 100.0, 100.0]);
    }

    #[test]
    fn random_draws_are_seeded_in_range_and_log_uniform() {
        let s = strategy("lambda = { min = 0.001, max = 1000 }\nk = { min = 1, max = 100 }");
        let sp = space(0, &s, &schema()).unwrap();
        let p = ProtocolConfig {
            search: SearchKind::Random,
            budget: Some(200),
            ..Default::default()
        };
        let a = candidates(&p, &s, &sp);
        assert_eq!(a, candidates(&p, &s, &sp));
        let l: Vec<f64> = a.iter().filter_map(|t| t["lambda"].as_float()).collect();
        assert!(l.iter().all(|&x| (0.001..=1000.0).contains(&x)));
        // log-uniform: about half the draws below the geometric midpoint 1
        let below = l.iter().filter(|&&x| x < 1.0).count();
        assert!((70..130).contains(&below), "{below}");
        assert!(a.iter().all(|t| t["k"].as_integer().is_some()));
    }

    #[test]
    fn bad_search_entries_name_the_key() {
        let e = space(3, &strategy("lamda = [1.0]"), &schema()).unwrap_err();
        assert_eq!(e.key, "strategy[3].search.lamda");
        let e = space(0, &strategy("lambda = [-1.0]"), &schema()).unwrap_err();
        assert!(e.message.contains("out of range"), "{}", e.message);
        let e = space(0, &strategy("lambda = { min = 0, max = 1 }"), &schema()).unwrap_err();
        assert!(e.message.contains("log-scale"), "{}", e.message);
        let e = space(0, &strategy("k = { min = 5, max = 500 }"), &schema()).unwrap_err();
        assert!(
            e.message.contains("leaves the schema range"),
            "{}",
            e.message
        );
        let e = space(
            0,
            &strategy("k = { min = 5, max = 50, step = 2 }"),
            &schema(),
        )
        .unwrap_err();
        assert!(e.message.contains("unknown key `step`"), "{}", e.message);
        let e = space(0, &strategy("on = 3"), &schema()).unwrap_err();
        assert!(e.message.contains("\"schema\""), "{}", e.message);
    }
}
