//! Evaluation protocols: which trials a config defines, in which phase, and how the tuning
//! phase's results choose the hyperparameters the evaluation phase runs (see
//! `docs/protocols.md`).
//!
//! - [`search`]: search spaces from the plugins' schemas, grid and random candidates;
//! - [`leakage`]: the guard that refuses a tuning phase reading any D_eval sample;
//! - [`Plan`]: the tuning trials, the selection, then the evaluation trials.

pub mod leakage;
pub mod search;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{
    Config, ProtocolKind, ScenarioConfig, SelectionMetric, Setting, StrategyConfig,
};
use clef_data::TrainTest;
use clef_report::results::TrialRecord;

/// Phase of a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Hyperparameter search.
    Tune,
    /// Reported runs with frozen hyperparameters (also every trial of protocol `run`).
    Eval,
}

impl Phase {
    /// `tune` or `eval`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Tune => "tune",
            Phase::Eval => "eval",
        }
    }
}

/// Which loaded data set a trial streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRole {
    /// `[data]`: D_eval.
    Eval,
    /// `[protocol.tune_data]`: D_tune.
    Tune,
}

/// A loaded data set with its fingerprint.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// The samples.
    pub data: Arc<TrainTest>,
    /// [`clef_data::fingerprint::fingerprint`] of them.
    pub fingerprint: String,
}

/// One trial of a plan.
#[derive(Debug, Clone)]
pub struct PlannedTrial {
    /// Hash of everything that defines the trial (its file name in the store).
    pub id: String,
    /// Phase.
    pub phase: Phase,
    /// Index of the `[[strategy]]` entry.
    pub strategy_index: usize,
    /// The entry with `hparams` replaced by the trial's full table.
    pub strategy: StrategyConfig,
    /// Strategy version.
    pub version: String,
    /// Hash of the plugin's library file (`None` for built-ins).
    pub library_hash: Option<String>,
    /// Setting.
    pub setting: Setting,
    /// Seed.
    pub seed: u64,
    /// Data set streamed.
    pub data: DataRole,
    /// Scenario configuration (`first-task` tunes on a shorter stream).
    pub scenario: ScenarioConfig,
}

/// What a `[[strategy]]` entry contributes to a plan.
#[derive(Debug, Clone)]
pub struct StrategyPlan {
    /// Plugin version.
    pub version: String,
    /// Hash of the plugin's library file (`None` for built-ins, whose trial ids do not
    /// carry it).
    pub library_hash: Option<String>,
    /// The fixed `hparams`, resolved (protocol `run`, and strategies without a search space).
    pub fixed: toml::Table,
    /// Candidate tables of the search, resolved (one = no search).
    pub candidates: Vec<toml::Table>,
}

pub use clef_report::Selection;

/// A validated config ready to plan: loaded data, and each strategy's version and candidates.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    /// The config.
    pub cfg: &'a Config,
    /// D_eval (`[data]`).
    pub eval_data: LoadedData,
    /// D_tune (`[protocol.tune_data]`), for tune-then-evaluate.
    pub tune_data: Option<LoadedData>,
    /// Per `[[strategy]]` entry.
    pub strategies: Vec<StrategyPlan>,
}

pub use clef_data::seed::word_hash;

/// JSON with object keys sorted at every level (so a hash does not depend on map order).
pub fn canonical_json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::Value::String((*k).clone()),
                        canonical_json(&m[*k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        serde_json::Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(canonical_json).collect();
            format!("[{}]", parts.join(","))
        }
        other => other.to_string(),
    }
}

impl Plan<'_> {
    /// Seeds of the tuning phase.
    pub fn tune_seeds(&self) -> Vec<u64> {
        self.cfg
            .protocol
            .tune_seeds
            .clone()
            .unwrap_or_else(|| self.cfg.seeds.clone())
    }

    /// The loaded data of a role.
    pub fn data(&self, role: DataRole) -> &LoadedData {
        match (role, &self.tune_data) {
            (DataRole::Tune, Some(d)) => d,
            _ => &self.eval_data,
        }
    }

    /// Data role and scenario configuration of `kind`'s tuning phase.
    pub fn tune_stream(&self, kind: ProtocolKind) -> (DataRole, ScenarioConfig) {
        let mut sc = self.cfg.scenario.clone();
        match kind {
            ProtocolKind::TuneThenEvaluate => (DataRole::Tune, sc),
            ProtocolKind::FirstTask => {
                sc.tasks = self.cfg.protocol.tune_tasks();
                (DataRole::Eval, sc)
            }
            _ => (DataRole::Eval, sc),
        }
    }

    /// A trial (its id computed).
    #[allow(clippy::too_many_arguments)]
    fn trial(
        &self,
        phase: Phase,
        index: usize,
        hparams: &toml::Table,
        setting: Setting,
        seed: u64,
        data: DataRole,
        scenario: ScenarioConfig,
    ) -> PlannedTrial {
        let mut strategy = self.cfg.strategy[index].clone();
        strategy.hparams = hparams.clone();
        strategy.search = toml::Table::new();
        let version = self.strategies[index].version.clone();
        let library_hash = self.strategies[index].library_hash.clone();
        let mut def = serde_json::json!({
            "v": 1,
            "phase": phase.as_str(),
            "data": self.data(data).fingerprint,
            "scenario": scenario,
            "setting": setting,
            "model": self.cfg.model,
            "train": self.cfg.train,
            "diagnostics": self.cfg.diagnostics,
            "strategy": strategy.name,
            "label": strategy.label(),
            "path": strategy.path,
            "version": version,
            "hparams": hparams,
            "seed": seed,
        });
        // An image backbone is built from the data's image shape, which the fingerprint (of the
        // flat features) does not see; MLP trials keep the ids they always had.
        if !self.cfg.model.backbone.is_mlp() {
            let shape = self
                .data(data)
                .data
                .train
                .image_shape
                .map(|s| [s.channels, s.height, s.width]);
            def["image_shape"] = serde_json::json!(shape);
        }
        // Only plugins have a library: built-in strategies keep the ids they always had.
        if let Some(h) = &library_hash {
            def["library"] = serde_json::Value::String(h.clone());
        }
        let text = canonical_json(&def);
        // Two 64-bit hashes of different constructions: 128 bits, collisions out of reach.
        let id = format!(
            "{:016x}{:016x}",
            clef_data::seed::fnv1a(text.as_bytes()),
            word_hash(text.as_bytes())
        );
        PlannedTrial {
            id,
            phase,
            strategy_index: index,
            strategy,
            version,
            library_hash,
            setting,
            seed,
            data,
            scenario,
        }
    }

    /// Every tuning trial of every tuning protocol (deduplicated, in a fixed order): per
    /// protocol, setting, strategy with more than one candidate, candidate and tuning seed.
    pub fn tune_trials(&self) -> Vec<PlannedTrial> {
        let mut out = Vec::new();
        for &kind in self.cfg.protocol.kinds.iter().filter(|k| k.tunes()) {
            let (role, sc) = self.tune_stream(kind);
            for &setting in &self.cfg.settings {
                for (i, sp) in self.strategies.iter().enumerate() {
                    if sp.candidates.len() < 2 {
                        continue;
                    }
                    for c in &sp.candidates {
                        for seed in self.tune_seeds() {
                            out.push(self.trial(
                                Phase::Tune,
                                i,
                                c,
                                setting,
                                seed,
                                role,
                                sc.clone(),
                            ));
                        }
                    }
                }
            }
        }
        dedup(out)
    }

    /// The selections of every protocol from the stored records. Returns the selections and
    /// the number of tuning trials not in `store` yet (selections are complete only at 0).
    pub fn select(&self, store: &BTreeMap<String, TrialRecord>) -> (Vec<Selection>, usize) {
        let metric = self.cfg.protocol.selection_metric;
        let mut missing = 0;
        let mut out = Vec::new();
        for &kind in &self.cfg.protocol.kinds {
            let (role, sc) = self.tune_stream(kind);
            for &setting in &self.cfg.settings {
                for (i, sp) in self.strategies.iter().enumerate() {
                    let label = self.cfg.strategy[i].label().to_string();
                    let fixed = |phase: &str| Selection {
                        protocol: kind.as_str().into(),
                        setting: setting.as_str().into(),
                        strategy: label.clone(),
                        hparams: toml_to_json(if kind.tunes() {
                            &sp.candidates[0]
                        } else {
                            &sp.fixed
                        }),
                        chosen_in_phase: phase.into(),
                        tuned_on: None,
                        selection_metric: None,
                        score: None,
                        candidates: 1,
                        tune_trials: Vec::new(),
                        all_tune_trials: Vec::new(),
                        eval_trials: Vec::new(),
                        tied: Vec::new(),
                        warnings: Vec::new(),
                    };
                    if !kind.tunes() || sp.candidates.len() < 2 {
                        out.push(fixed("config"));
                        continue;
                    }
                    let mut best: Option<(f64, usize, Vec<String>)> = None;
                    let mut means: Vec<(usize, f64)> = Vec::new();
                    let mut all = Vec::new();
                    for (ci, c) in sp.candidates.iter().enumerate() {
                        let mut ids = Vec::new();
                        let mut scores = Vec::new();
                        for seed in self.tune_seeds() {
                            let t = self.trial(Phase::Tune, i, c, setting, seed, role, sc.clone());
                            match store.get(&t.id) {
                                Some(r) => scores.push(score(r, metric)),
                                None => missing += 1,
                            }
                            ids.push(t.id);
                        }
                        all.extend(ids.iter().cloned());
                        if scores.len() < ids.len() {
                            continue;
                        }
                        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
                        means.push((ci, mean));
                        // Strictly greater: ties keep the earlier candidate.
                        if best.as_ref().is_none_or(|(b, _, _)| mean > *b) {
                            best = Some((mean, ci, ids));
                        }
                    }
                    let Some((s, ci, ids)) = best else {
                        continue;
                    };
                    let d = self.data(role);
                    let tied: Vec<usize> = means
                        .iter()
                        .filter(|(_, m)| *m == s)
                        .map(|(c, _)| *c)
                        .collect();
                    let warnings = self.selection_warnings(kind, i, metric, s, ci, &tied);
                    out.push(Selection {
                        hparams: toml_to_json(&sp.candidates[ci]),
                        chosen_in_phase: "tune".into(),
                        tuned_on: Some(format!(
                            "{} ({}), {} task(s), tuning seeds {:?}",
                            d.data.train.name,
                            d.fingerprint,
                            sc.tasks,
                            self.tune_seeds()
                        )),
                        selection_metric: Some(metric.as_str().into()),
                        score: s.is_finite().then_some(s),
                        candidates: sp.candidates.len(),
                        tune_trials: ids,
                        all_tune_trials: all,
                        tied: if tied.len() > 1 {
                            tied.iter()
                                .map(|&c| self.searched_values(i, &sp.candidates[c]))
                                .collect()
                        } else {
                            Vec::new()
                        },
                        warnings,
                        ..fixed("tune")
                    });
                }
            }
        }
        (out, missing)
    }

    /// The searched keys of `[[strategy]]` entry `index` in `candidate`, as JSON.
    fn searched_values(&self, index: usize, candidate: &toml::Table) -> serde_json::Value {
        let keys = &self.cfg.strategy[index].search;
        let t: toml::Table = candidate
            .iter()
            .filter(|(k, _)| keys.contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        toml_to_json(&t)
    }

    /// The warnings of a selection: a tie (`tied`: candidates with the winner's mean `score`,
    /// in search order), every candidate alike (the searched values had no effect on the
    /// tuning stream, or every candidate failed), a grid winner at the smallest or largest
    /// value searched of a numeric hyperparameter.
    fn selection_warnings(
        &self,
        kind: ProtocolKind,
        index: usize,
        metric: SelectionMetric,
        score: f64,
        winner: usize,
        tied: &[usize],
    ) -> Vec<String> {
        let sp = &self.strategies[index];
        let label = self.cfg.strategy[index].label();
        let keys: Vec<&str> = self.cfg.strategy[index]
            .search
            .keys()
            .map(String::as_str)
            .collect();
        let values = |c: usize| {
            let v = self.searched_values(index, &sp.candidates[c]);
            clef_report::hparams_text(&v)
        };
        let n = sp.candidates.len();
        let mut out = Vec::new();
        if tied.len() == n {
            if score == f64::NEG_INFINITY {
                out.push(format!(
                    "every candidate of `{label}` failed or diverged in the tuning phase: the \
                     choice ({}) is arbitrary (the first candidate)",
                    values(winner)
                ));
            } else if kind == ProtocolKind::FirstTask {
                out.push(format!(
                    "NO EFFECT: all {n} candidates of `{label}` gave the same mean {} = {score:.4} \
                     on the first {} task(s): the searched hyperparameter(s) ({}) had no effect \
                     on the tuning tasks, so the choice ({}) is arbitrary (the first \
                     candidate); a parameter acting only after a task ends needs \
                     protocol.tune_tasks >= 2",
                    metric.as_str(),
                    self.cfg.protocol.tune_tasks(),
                    keys.join(", "),
                    values(winner)
                ));
            } else {
                out.push(format!(
                    "NO EFFECT: all {n} candidates of `{label}` gave the same mean {} = \
                     {score:.4}: the searched hyperparameter(s) ({}) had no effect on the \
                     tuning stream, so the choice ({}) is arbitrary (the first candidate)",
                    metric.as_str(),
                    keys.join(", "),
                    values(winner)
                ));
            }
            return out;
        }
        if tied.len() > 1 {
            let list: Vec<String> = tied.iter().map(|&c| format!("({})", values(c))).collect();
            out.push(format!(
                "TIE: {} candidates of `{label}` have the same mean {} = {score:.4}: {}; the tie \
                 was broken by search order (the earliest candidate, {}, won)",
                tied.len(),
                metric.as_str(),
                list.join(", "),
                values(winner)
            ));
        }
        if self.cfg.protocol.search == crate::config::SearchKind::Grid {
            for k in &keys {
                let num = |t: &toml::Table| match t.get(*k) {
                    Some(toml::Value::Float(f)) => Some(*f),
                    Some(toml::Value::Integer(i)) => Some(*i as f64),
                    _ => None,
                };
                let searched: Vec<f64> = sp.candidates.iter().filter_map(num).collect();
                let Some(w) = num(&sp.candidates[winner]) else {
                    continue;
                };
                let lo = searched.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = searched.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if lo >= hi {
                    continue;
                }
                let shown = sp.candidates[winner]
                    .get(*k)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                if w == hi {
                    out.push(format!(
                        "EDGE: `{label}`'s {k} = {shown} is the largest value searched: widen \
                         the range upwards"
                    ));
                } else if w == lo {
                    out.push(format!(
                        "EDGE: `{label}`'s {k} = {shown} is the smallest value searched: widen \
                         the range downwards"
                    ));
                }
            }
        }
        out
    }

    /// The evaluation trials of the (complete) selections, each selection's `eval_trials`
    /// filled in; deduplicated (two protocols choosing the same values share trials).
    pub fn eval_trials(&self, selections: &mut [Selection]) -> Vec<PlannedTrial> {
        let mut out = Vec::new();
        for sel in selections.iter_mut() {
            let Some(i) = self
                .cfg
                .strategy
                .iter()
                .position(|s| s.label() == sel.strategy)
            else {
                continue;
            };
            let Some(setting) = self
                .cfg
                .settings
                .iter()
                .copied()
                .find(|s| s.as_str() == sel.setting)
            else {
                continue;
            };
            let hp = json_to_toml(&sel.hparams);
            sel.eval_trials.clear();
            for &seed in &self.cfg.seeds {
                let t = self.trial(
                    Phase::Eval,
                    i,
                    &hp,
                    setting,
                    seed,
                    DataRole::Eval,
                    self.cfg.scenario.clone(),
                );
                sel.eval_trials.push(t.id.clone());
                out.push(t);
            }
        }
        dedup(out)
    }
}

fn dedup(trials: Vec<PlannedTrial>) -> Vec<PlannedTrial> {
    let mut seen = std::collections::HashSet::new();
    trials
        .into_iter()
        .filter(|t| seen.insert(t.id.clone()))
        .collect()
}

/// A trial's selection score: the metric, or -inf if it did not complete.
fn score(r: &TrialRecord, metric: SelectionMetric) -> f64 {
    match (&r.metrics, r.status.as_str()) {
        (Some(m), "completed") => match metric {
            SelectionMetric::Acc => m.acc,
            SelectionMetric::AvgIncrementalAccuracy => m.avg_incremental_accuracy,
        },
        _ => f64::NEG_INFINITY,
    }
}

/// A TOML table as JSON.
pub fn toml_to_json(t: &toml::Table) -> serde_json::Value {
    serde_json::to_value(t).unwrap_or_default()
}

fn json_to_toml(v: &serde_json::Value) -> toml::Table {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Invalid;
    use crate::runner::{self, BuiltinStrategies, StrategyProvider, StrategySchema};
    use clef_engine::strategy::Strategy;
    use clef_engine::strategy::{HParamKind, HParamSpec, HValue};

    const BASE: &str = r#"name = "ids"
seeds = [7]
settings = ["task-il"]

[data]
dataset = "synthetic"
num_classes = 4
synthetic_dim = 8
synthetic_train_per_class = 20
synthetic_test_per_class = 5

[scenario]
kind = "class-split"
tasks = 2
classes_per_task = 2

[model]
hidden = [8]

[train]
optimizer = "sgd"
lr = 0.05
epochs = 1
batch_size = 16
"#;

    fn cfg(protocol: &str, strategies: &str) -> Config {
        let text = format!("{BASE}\n[protocol]\n{protocol}\n\n{strategies}");
        crate::config::parse(&text, std::path::Path::new("t.toml")).expect("config")
    }

    /// A plugin-like provider: one float `lambda` in [0, 1e4] (log scale), default 1.
    struct Fake {
        needs_past_tasks: bool,
        library_hash: &'static str,
    }

    impl StrategyProvider for Fake {
        fn validate(&self, _: usize, _: &StrategyConfig) -> Result<(), Invalid> {
            Ok(())
        }
        fn schema(&self, _: usize, _: &StrategyConfig) -> Result<StrategySchema, Invalid> {
            Ok(StrategySchema {
                version: "1.0".into(),
                library_hash: Some(self.library_hash.into()),
                conv: false,
                hparams: vec![HParamSpec {
                    name: "lambda".into(),
                    kind: HParamKind::Float,
                    log_scale: true,
                    needs_past_tasks: self.needs_past_tasks,
                    default: HValue::Float(1.0),
                    min: 0.0,
                    max: 1e4,
                    doc: String::new(),
                }],
            })
        }
        fn resolve_hparams(&self, _: usize, c: &StrategyConfig) -> Result<toml::Table, Invalid> {
            let mut t = c.hparams.clone();
            t.entry("lambda").or_insert(toml::Value::Float(1.0));
            Ok(t)
        }
        fn create(&self, _: &StrategyConfig) -> anyhow::Result<Box<dyn Strategy>> {
            anyhow::bail!("not in these tests")
        }
    }

    const FAKE: Fake = Fake {
        needs_past_tasks: false,
        library_hash: "aaaa",
    };

    const SEARCH: &str = "[[strategy]]\nname = \"reg\"\nsearch = { lambda = [1.0, 10.0, 100.0] }";

    /// Stored tuning records giving candidate `c` of the plan's only strategy the ACC `accs[c]`.
    fn store_with(plan: &Plan<'_>, accs: &[f64]) -> BTreeMap<String, TrialRecord> {
        let mut store = BTreeMap::new();
        for t in plan.tune_trials() {
            let lambda = t.strategy.hparams["lambda"].as_float().expect("lambda");
            let c = plan.strategies[0]
                .candidates
                .iter()
                .position(|c| c["lambda"].as_float() == Some(lambda))
                .expect("candidate");
            let mut r = TrialRecord::sample("reg", t.seed, accs[c]);
            r.trial_id = t.id.clone();
            r.phase = "tune".into();
            if accs[c].is_nan() {
                r.status = "failed".into();
                r.metrics = None;
            }
            store.insert(t.id.clone(), r);
        }
        store
    }

    fn select_one(protocol: &str, accs: &[f64]) -> Selection {
        let c = cfg(protocol, SEARCH);
        let plan = runner::prepare(&c, &FAKE).expect("prepare");
        let (sels, missing) = plan.select(&store_with(&plan, accs));
        assert_eq!(missing, 0);
        assert_eq!(sels.len(), 1);
        sels.into_iter().next().expect("a selection")
    }

    #[test]
    fn a_tie_is_flagged_with_the_tied_candidates_and_the_rule() {
        let s = select_one("kinds = [\"conventional\"]", &[0.5, 0.7, 0.7]);
        assert_eq!(s.hparams["lambda"], 10.0);
        assert_eq!(
            s.tied,
            vec![
                serde_json::json!({"lambda": 10.0}),
                serde_json::json!({"lambda": 100.0})
            ]
        );
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let w = &s.warnings[0];
        assert!(
            w.starts_with("TIE: 2 candidates of `reg`")
                && w.contains("(lambda=10.0), (lambda=100.0)")
                && w.contains("search order"),
            "{w}"
        );
        // No tie, winner inside the grid: nothing to say.
        let s = select_one("kinds = [\"conventional\"]", &[0.5, 0.7, 0.6]);
        assert!(s.tied.is_empty() && s.warnings.is_empty(), "{s:?}");
    }

    #[test]
    fn a_winner_at_the_edge_of_its_grid_is_flagged() {
        let s = select_one("kinds = [\"conventional\"]", &[0.5, 0.6, 0.7]);
        assert_eq!(s.hparams["lambda"], 100.0);
        assert_eq!(
            s.warnings,
            vec![
                "EDGE: `reg`'s lambda = 100.0 is the largest value searched: widen the range \
                  upwards"
                    .to_string()
            ]
        );
        let s = select_one("kinds = [\"conventional\"]", &[0.8, 0.6, 0.7]);
        assert!(
            s.warnings.len() == 1 && s.warnings[0].contains("lambda = 1.0 is the smallest"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn a_first_task_search_without_effect_says_so() {
        let s = select_one("kinds = [\"first-task\"]", &[0.6, 0.6, 0.6]);
        assert_eq!(s.tied.len(), 3);
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        let w = &s.warnings[0];
        assert!(
            w.starts_with("NO EFFECT: all 3 candidates of `reg` gave the same mean acc")
                && w.contains("on the first 1 task(s)")
                && w.contains("(lambda) had no effect on the tuning tasks"),
            "{w}"
        );
        // Every candidate failed: said too, without an edge warning.
        let s = select_one("kinds = [\"conventional\"]", &[f64::NAN; 3]);
        assert!(
            s.warnings.len() == 1 && s.warnings[0].contains("every candidate of `reg` failed"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn first_task_on_one_task_refuses_a_parameter_that_needs_past_tasks() {
        let past = Fake {
            needs_past_tasks: true,
            library_hash: "aaaa",
        };
        let c = cfg("kinds = [\"conventional\", \"first-task\"]", SEARCH);
        let e = runner::prepare(&c, &past).expect_err("refused");
        let e = e.to_string();
        assert!(
            e.contains("`strategy[0].search.lambda`")
                && e.contains("protocol.tune_tasks = 1")
                && e.contains("tune_tasks >= 2"),
            "{e}"
        );
        // Two tuning tasks, or another protocol, or a parameter without the flag: accepted.
        let c = cfg("kinds = [\"first-task\"]\ntune_tasks = 2", SEARCH);
        assert!(runner::prepare(&c, &past).is_ok());
        let c = cfg("kinds = [\"conventional\"]", SEARCH);
        assert!(runner::prepare(&c, &past).is_ok());
        let c = cfg("kinds = [\"first-task\"]", SEARCH);
        assert!(runner::prepare(&c, &FAKE).is_ok());
    }

    #[test]
    fn the_library_hash_is_part_of_a_plugin_trial_id_and_not_of_a_builtin_one() {
        let c = cfg("kinds = [\"run\"]", "[[strategy]]\nname = \"reg\"");
        let ids = |p: &Fake| {
            let plan = runner::prepare(&c, p).expect("prepare");
            let (mut sels, _) = plan.select(&BTreeMap::new());
            let t = plan.eval_trials(&mut sels);
            assert_eq!(t[0].library_hash.as_deref(), Some(p.library_hash));
            t[0].id.clone()
        };
        let other = Fake {
            needs_past_tasks: false,
            library_hash: "bbbb",
        };
        assert_ne!(ids(&FAKE), ids(&other));
        assert_eq!(ids(&FAKE), ids(&FAKE));
        // A built-in's id is the one it had before library hashes existed (clef 0.1.0 gave
        // this config's `joint` trial this id).
        let c = cfg("kinds = [\"run\"]", "[[strategy]]\nname = \"joint\"");
        let plan = runner::prepare(&c, &BuiltinStrategies).expect("prepare");
        let (mut sels, _) = plan.select(&BTreeMap::new());
        let t = plan.eval_trials(&mut sels);
        assert_eq!(t[0].library_hash, None);
        assert_eq!(t[0].id, "8c2f2c415a9e4262d10cf5cb4adb27ce");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = serde_json::json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": "s"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"s","d":[1,{"x":1,"y":2}]},"b":1}"#
        );
    }
}
