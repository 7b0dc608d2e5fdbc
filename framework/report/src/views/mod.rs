//! Views derived from the trial store: `results.jsonl`, `selections.json`, `summary.md`, the
//! protocol comparison (`report/*.csv`) and the SVG plots (`plots/`). `clef run` writes them
//! at the end of every run; `clef report DIR` rewrites them from the store alone.

mod charts;
mod compare;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use compare::{compare, hparams_text, markdown, Comparison, ProtocolRow, RankAgreement};

use crate::metrics;
use crate::results::{summary_markdown, write_atomic, ResultsDir, TrialRecord};
use crate::store::TrialStore;
use crate::Selection;

/// File name of the selections view.
pub const SELECTIONS_FILE: &str = "selections.json";

/// `records` with intransigence filled in from the joint reference of the same stream (same
/// phase, setting, seed, data and scenario), which may have run in another shard.
pub fn with_joint_metrics(records: &[TrialRecord]) -> Vec<TrialRecord> {
    let key = |r: &TrialRecord| {
        (
            r.phase.clone(),
            r.setting.clone(),
            r.seed,
            r.data_fingerprint.clone(),
            r.scenario.clone(),
            r.tasks.len(),
        )
    };
    let joints: BTreeMap<_, &TrialRecord> = records
        .iter()
        .filter(|r| r.strategy_name == "joint" && r.status == "completed")
        .map(|r| (key(r), r))
        .collect();
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.strategy_name != "joint"
                && r.status == "completed"
                && !r.accuracy_matrix.is_empty()
            {
                if let Some(j) = joints.get(&key(&r)) {
                    let b = (r.setting != "class-il").then_some(r.random_init_accuracy.as_slice());
                    r.metrics = Some(metrics::compute(
                        &r.accuracy_matrix,
                        b,
                        Some(&j.accuracy_matrix),
                        Some(&r.online_accuracy),
                    ));
                }
            }
            r
        })
        .collect()
}

/// Sort order of the `results.jsonl` view: evaluation before tuning, then setting, strategy,
/// seed, id.
fn view_order(records: &mut [TrialRecord]) {
    records.sort_by(|a, b| {
        let k = |r: &TrialRecord| {
            (
                r.phase != "eval",
                r.setting.clone(),
                r.strategy.clone(),
                r.seed,
                r.trial_id.clone(),
            )
        };
        k(a).cmp(&k(b))
    });
}

/// Selections of a directory without `selections.json` (a `run` from before protocols, or a
/// store alone): one `run` selection per (setting, strategy) of the evaluation records.
fn implicit_selections(records: &[TrialRecord]) -> Vec<Selection> {
    let mut groups: BTreeMap<(String, String), Selection> = BTreeMap::new();
    for r in records.iter().filter(|r| r.phase == "eval") {
        let s = groups
            .entry((r.setting.clone(), r.strategy.clone()))
            .or_insert_with(|| Selection {
                protocol: "run".into(),
                setting: r.setting.clone(),
                strategy: r.strategy.clone(),
                hparams: r.hparams.clone(),
                chosen_in_phase: "config".into(),
                tuned_on: None,
                selection_metric: None,
                score: None,
                candidates: 1,
                tune_trials: Vec::new(),
                all_tune_trials: Vec::new(),
                eval_trials: Vec::new(),
                tied: Vec::new(),
                warnings: Vec::new(),
            });
        s.eval_trials.push(r.trial_id.clone());
    }
    groups.into_values().collect()
}

/// Reads `selections.json` of `dir` if present.
pub fn read_selections(dir: &Path) -> anyhow::Result<Option<Vec<Selection>>> {
    let path = dir.join(SELECTIONS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(serde_json::from_str(&t).map_err(|e| {
            anyhow::anyhow!("{}: not a selections file: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Rewrites every view of `out`: `results.jsonl` from the store (when there is one),
/// `selections.json` (when `selections` is given; otherwise the existing file is used),
/// `summary.md`, `report/*.csv` and `plots/*.svg`. Returns the written paths.
pub fn write_views(
    out: &ResultsDir,
    config_name: Option<&str>,
    selections: Option<&[Selection]>,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut records = match TrialStore::existing(out.path()) {
        Some(store) => {
            let mut all: Vec<TrialRecord> = store.load_all()?.into_values().collect();
            view_order(&mut all);
            let all = with_joint_metrics(&all);
            out.write_records(&all)?;
            written.push(out.jsonl_path());
            all
        }
        None => with_joint_metrics(&out.read()?),
    };
    view_order(&mut records);
    let selections: Vec<Selection> = match selections {
        Some(s) => {
            let path = out.path().join(SELECTIONS_FILE);
            write_atomic(&path, serde_json::to_string_pretty(s)?.as_bytes())?;
            written.push(path);
            s.to_vec()
        }
        None => read_selections(out.path())?.unwrap_or_else(|| implicit_selections(&records)),
    };
    let name = config_name
        .map(str::to_string)
        .or_else(|| records.first().map(|r| r.config.clone()))
        .unwrap_or_default();
    let by_id: BTreeMap<&str, &TrialRecord> =
        records.iter().map(|r| (r.trial_id.as_str(), r)).collect();
    let cmp = compare(&selections, &by_id);
    let eval: Vec<TrialRecord> = records
        .iter()
        .filter(|r| r.phase == "eval")
        .cloned()
        .collect();
    let mut plots = crate::plots::write_plots(out.path(), &eval).map_err(anyhow::Error::msg)?;
    plots.extend(charts::write_all(out.path(), &cmp, &by_id).map_err(anyhow::Error::msg)?);
    for (file, text) in [
        ("protocols.csv", compare::protocols_csv(&cmp)),
        ("rankings.csv", compare::rankings_csv(&cmp)),
        ("paired.csv", compare::paired_csv(&cmp)),
    ] {
        let path = out.path().join("report").join(file);
        std::fs::create_dir_all(out.path().join("report"))?;
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    let mut text = String::new();
    let _ = writeln!(text, "# clef results: {name}\n");
    text.push_str(&compare::markdown(&cmp));
    let tune_count = records.iter().filter(|r| r.phase == "tune").count();
    if tune_count > 0 {
        let _ = writeln!(
            text,
            "\n{tune_count} tuning trial(s) are in results.jsonl (phase `tune`); the tables \
             above show evaluation trials only.\n"
        );
    }
    let tune_collapsed: Vec<String> = records
        .iter()
        .filter(|r| r.phase == "tune")
        .filter_map(TrialRecord::collapse_warning)
        .collect();
    if !tune_collapsed.is_empty() {
        let _ = writeln!(
            text,
            "⚠ {} tuning trial(s) completed with a collapsed network (`collapsed` in \
             docs/metrics.md); the selection counted their accuracy as measured:\n",
            tune_collapsed.len()
        );
        for line in tune_collapsed {
            let _ = writeln!(text, "- ⚠ {line}");
        }
        text.push('\n');
    }
    text.push_str(&summary_markdown("", &selections, &eval).replacen(
        "# clef results: \n\n",
        "## Evaluation trials\n\n",
        1,
    ));
    if !plots.is_empty() {
        text.push_str("\n## Plots\n\n");
        for p in &plots {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default();
            let _ = writeln!(text, "![{stem}]({})", p.display());
        }
    }
    written.push(out.write_summary(&text)?);
    written.extend(plots.iter().map(|p| out.path().join(p)));
    Ok(written)
}
