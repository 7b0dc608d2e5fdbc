//! Trial records and the results directory: the per-trial store (`trials/`, see
//! [`crate::store`]) and the views derived from it, `results.jsonl` (one JSON object per trial)
//! and `summary.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::Metrics;
use crate::Selection;

/// One finished trial, as stored in `results.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// Hash of everything that defines the trial (hex).
    pub trial_id: String,
    /// Config name.
    pub config: String,
    /// Strategy label (the strategy name unless the config gives a label).
    pub strategy: String,
    /// Strategy implementation name (built-in or plugin).
    pub strategy_name: String,
    /// Scenario description.
    pub scenario: String,
    /// Data set name.
    pub dataset: String,
    /// `task-il`, `class-il` or `domain-il`.
    pub setting: String,
    /// Trial seed.
    pub seed: u64,
    /// Protocol phase: `tune` (hyperparameter search) or `eval` (reported runs; also every
    /// trial of the `run` protocol).
    #[serde(default = "default_phase")]
    pub phase: String,
    /// Fingerprint of the data set the trial used (`clef_data::fingerprint`).
    #[serde(default)]
    pub data_fingerprint: String,
    /// Version of the strategy plugin (`builtin` for built-in strategies).
    #[serde(default)]
    pub strategy_version: String,
    /// Hash of the plugin's library file the trial ran (absent for built-in strategies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy_library_hash: Option<String>,
    /// Strategy hyperparameters as given in the config.
    pub hparams: serde_json::Value,
    /// `completed`, `diverged` or `failed`.
    pub status: String,
    /// Failure or divergence message.
    #[serde(default)]
    pub error: Option<String>,
    /// Task names in stream order.
    pub tasks: Vec<String>,
    /// Rows = after training task i, columns = task j; fractions in [0, 1].
    pub accuracy_matrix: Vec<Vec<f64>>,
    /// Accuracy of the untrained network on each task.
    pub random_init_accuracy: Vec<f64>,
    /// Per task: accuracy on incoming batches before their update.
    pub online_accuracy: Vec<f64>,
    /// Per task: mean training loss.
    pub mean_loss: Vec<f64>,
    /// Metrics (absent unless the trial completed).
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Seconds in the training loops.
    pub train_seconds: f64,
    /// Seconds evaluating.
    pub eval_seconds: f64,
    /// Seconds in the strategy's end-of-task work (`on_task_end`), beside `train_seconds`
    /// (absent in records written before it was measured: 0).
    #[serde(default)]
    pub task_end_seconds: f64,
    /// Training rows per second, over the training loops and the end-of-task work together.
    pub samples_per_second: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Network backend.
    pub backend: String,
    /// Scalar parameters of the network.
    pub num_params: usize,
    /// clef version that produced the record.
    pub clef_version: String,
    /// Per trained task: numbers the strategy reported (plugins: the `report` host service),
    /// key → value. Omitted when the strategy reported nothing.
    #[serde(default, skip_serializing_if = "strategy_metrics_empty")]
    pub strategy_metrics: Vec<BTreeMap<String, f64>>,
    /// Per trained task: loss-of-plasticity diagnostics (`[diagnostics]`); omitted when off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<clef_engine::plasticity::TaskDiagnostics>,
    /// Per trained task: training collapsed on it (loss at or above the label entropy and
    /// online accuracy at or below chance over its last quarter of steps; `docs/metrics.md`).
    /// Absent in
    /// records written before the flag existed.
    #[serde(default)]
    pub collapsed: Vec<bool>,
}

impl TrialRecord {
    /// The tasks (0-based) on which training collapsed.
    pub fn collapsed_tasks(&self) -> Vec<usize> {
        self.collapsed
            .iter()
            .enumerate()
            .filter_map(|(t, &c)| c.then_some(t))
            .collect()
    }

    /// One line naming the trial and its collapsed tasks, or `None` if none collapsed.
    pub fn collapse_warning(&self) -> Option<String> {
        let tasks = self.collapsed_tasks();
        if tasks.is_empty() {
            return None;
        }
        let list: Vec<String> = tasks.iter().map(usize::to_string).collect();
        Some(format!(
            "{} / {} / seed {} ({}): training collapsed on task(s) {} of {}: loss at or above the \
             label entropy and online accuracy at or below chance over the task's last quarter \
             of steps \
             (online accuracy {}; mean loss {})",
            self.setting,
            self.strategy,
            self.seed,
            self.phase,
            list.join(", "),
            self.tasks.len(),
            fmt_list(&self.online_accuracy),
            fmt_list(&self.mean_loss),
        ))
    }
}

fn fmt_list(xs: &[f64]) -> String {
    let v: Vec<String> = xs.iter().map(|x| format!("{x:.3}")).collect();
    v.join(", ")
}

fn default_phase() -> String {
    "eval".into()
}

fn strategy_metrics_empty(m: &[BTreeMap<String, f64>]) -> bool {
    m.iter().all(BTreeMap::is_empty)
}

/// The results directory of a run.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    dir: PathBuf,
}

/// Errors writing results.
#[derive(Debug, thiserror::Error)]
#[error("cannot write results to {path}: {cause}")]
pub struct ResultsError {
    /// The file or directory.
    pub path: PathBuf,
    /// The I/O error (in the message, not a separate source, so it is printed once).
    pub cause: std::io::Error,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ResultsError + '_ {
    move |cause| ResultsError {
        path: path.to_path_buf(),
        cause,
    }
}

impl ResultsDir {
    /// Creates `dir` (and parents) if needed and checks that it is writable.
    pub fn create(dir: &Path) -> Result<Self, ResultsError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let probe = dir.join(".clef-write-test");
        std::fs::write(&probe, b"").map_err(io_err(dir))?;
        let _ = std::fs::remove_file(&probe);
        Ok(ResultsDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Path of `results.jsonl`.
    pub fn jsonl_path(&self) -> PathBuf {
        self.dir.join("results.jsonl")
    }

    /// Records already in `results.jsonl` (an absent file is empty; unreadable lines are
    /// skipped with a warning).
    pub fn read(&self) -> Result<Vec<TrialRecord>, ResultsError> {
        let path = self.jsonl_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .filter_map(|(i, l)| match serde_json::from_str(l) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(
                        "{}:{}: skipping unreadable record: {e}",
                        path.display(),
                        i + 1
                    );
                    None
                }
            })
            .collect())
    }

    /// Rewrites `results.jsonl` (a view of the trial store) with `records`, one JSON object
    /// per line, atomically.
    pub fn write_records(&self, records: &[TrialRecord]) -> Result<(), ResultsError> {
        let path = self.jsonl_path();
        let mut text = Vec::new();
        for r in records {
            let line = serde_json::to_string(r).map_err(|e| io_err(&path)(e.into()))?;
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        write_atomic(&path, &text)
    }

    /// Writes `summary.md` atomically.
    pub fn write_summary(&self, text: &str) -> Result<PathBuf, ResultsError> {
        let path = self.dir.join("summary.md");
        write_atomic(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ResultsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes).map_err(io_err(&tmp.0))?;
    tmp.1.sync_all().map_err(io_err(&tmp.0))?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        io_err(path)(e)
    })
}

fn tempfile_in(dir: &Path, target: &Path) -> Result<(PathBuf, std::fs::File), ResultsError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    Ok((tmp, f))
}

/// Mean and sample standard deviation.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

fn fmt_stat(xs: &[f64]) -> String {
    match xs.len() {
        0 => "n/a".into(),
        1 => format!("{:.3}", xs[0]),
        _ => {
            let (m, s) = mean_std(xs);
            format!("{m:.3} ± {s:.3}")
        }
    }
}

/// The comparison table: one row per selection, i.e. per (protocol, setting, strategy), with
/// that selection's evaluation trials (`eval_trials`) found in `records`; metrics as mean ± std
/// over seeds. Trials of different protocols are never averaged into one row (an evaluation
/// trial that two protocols share appears in both rows), and records no selection names are
/// not shown. Rows are sorted by setting, then in selection order.
pub fn results_table(selections: &[Selection], records: &[TrialRecord]) -> String {
    let by_id: BTreeMap<&str, &TrialRecord> =
        records.iter().map(|r| (r.trial_id.as_str(), r)).collect();
    let mut order: Vec<&Selection> = selections.iter().collect();
    order.sort_by(|a, b| a.setting.cmp(&b.setting));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| setting | strategy | protocol | seeds | ACC | BWT | FWT | forgetting | learning acc. | avg. incr. acc. | intransigence | samples/s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for sel in order {
        let rs: Vec<&TrialRecord> = sel
            .eval_trials
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .collect();
        if rs.is_empty() {
            continue;
        }
        let ok: Vec<&&TrialRecord> = rs.iter().filter(|r| r.metrics.is_some()).collect();
        let pick = |f: &dyn Fn(&Metrics) -> Option<f64>| -> String {
            let xs: Vec<f64> = ok
                .iter()
                .filter_map(|r| r.metrics.as_ref().and_then(f))
                .collect();
            fmt_stat(&xs)
        };
        let failed = rs.len() - ok.len();
        let collapsed = rs
            .iter()
            .filter(|r| !r.collapsed_tasks().is_empty())
            .count();
        let mut notes = Vec::new();
        if failed > 0 {
            notes.push(format!("{failed} not completed"));
        }
        if collapsed > 0 {
            notes.push(format!("⚠ {collapsed} collapsed"));
        }
        let seeds = if notes.is_empty() {
            rs.len().to_string()
        } else {
            format!("{} ({})", rs.len(), notes.join(", "))
        };
        let sps: Vec<f64> = ok.iter().map(|r| r.samples_per_second).collect();
        let (sps_mean, _) = mean_std(&sps);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            sel.setting,
            sel.strategy,
            sel.protocol,
            seeds,
            pick(&|m| Some(m.acc)),
            pick(&|m| m.bwt),
            pick(&|m| m.fwt),
            pick(&|m| m.forgetting),
            pick(&|m| Some(m.learning_accuracy)),
            pick(&|m| Some(m.avg_incremental_accuracy)),
            pick(&|m| m.intransigence),
            if sps.is_empty() {
                "n/a".into()
            } else {
                format!("{sps_mean:.0}")
            },
        );
    }
    s
}

/// `summary.md`: the comparison table ([`results_table`]), then the failures and accuracy
/// matrices of the records the selections name (the others are only counted).
pub fn summary_markdown(
    config_name: &str,
    selections: &[Selection],
    records: &[TrialRecord],
) -> String {
    let named: std::collections::BTreeSet<&str> = selections
        .iter()
        .flat_map(|sel| sel.eval_trials.iter().map(String::as_str))
        .collect();
    let (shown, stale): (Vec<&TrialRecord>, Vec<&TrialRecord>) = records
        .iter()
        .partition(|r| named.contains(r.trial_id.as_str()));
    let mut s = String::new();
    let _ = writeln!(s, "# clef results: {config_name}\n");
    if let Some(r) = shown.first() {
        let _ = writeln!(
            s,
            "Scenario: {} ({} tasks), backend {}.\n",
            r.scenario,
            r.tasks.len(),
            r.backend
        );
    }
    let _ = writeln!(
        s,
        "Metrics are mean ± sample standard deviation over seeds; definitions in docs/metrics.md.\n"
    );
    s.push_str(&results_table(selections, records));
    if !stale.is_empty() {
        let _ = writeln!(
            s,
            "\n{} stored evaluation trial(s) belong to no selection of this run (an earlier \
             config, or an earlier build of a plugin): they are in results.jsonl but not in the \
             tables of this summary.",
            stale.len()
        );
    }
    let bad: Vec<&&TrialRecord> = shown.iter().filter(|r| r.status != "completed").collect();
    if !bad.is_empty() {
        let _ = writeln!(s, "\n## Trials that did not complete\n");
        for r in bad {
            let _ = writeln!(
                s,
                "- {} / {} / seed {}: {} — {}",
                r.setting,
                r.strategy,
                r.seed,
                r.status,
                r.error.as_deref().unwrap_or("")
            );
        }
    }
    let collapsed: Vec<String> = shown.iter().filter_map(|r| r.collapse_warning()).collect();
    if !collapsed.is_empty() {
        let _ = writeln!(
            s,
            "\n## ⚠ Trials whose training collapsed\n\nThese completed, but the network learned \
             nothing input-dependent on some task (`collapsed` in docs/metrics.md); their metrics \
             are in the table above, marked in its seeds column.\n"
        );
        for line in collapsed {
            let _ = writeln!(s, "- ⚠ {line}");
        }
    }
    let _ = writeln!(
        s,
        "\n## Accuracy matrices\n\nRow i = after training task i; column j = task j.\n"
    );
    for r in &shown {
        let mark = if r.collapsed_tasks().is_empty() {
            ""
        } else {
            " (⚠ collapsed)"
        };
        let _ = writeln!(
            s,
            "### {} / {} / seed {}{mark}\n",
            r.setting, r.strategy, r.seed
        );
        let _ = writeln!(s, "```");
        for row in &r.accuracy_matrix {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
            let _ = writeln!(s, "{}", cells.join("  "));
        }
        let _ = writeln!(s, "```\n");
    }
    s
}

impl TrialRecord {
    /// A completed one-task record of `strategy` with accuracy `acc` (for tests of code that
    /// reads records: selection, views, statistics).
    #[doc(hidden)]
    pub fn sample(strategy: &str, seed: u64, acc: f64) -> TrialRecord {
        TrialRecord {
            trial_id: format!("{strategy}-{seed}"),
            config: "t".into(),
            strategy: strategy.into(),
            strategy_name: strategy.into(),
            scenario: "s".into(),
            dataset: "d".into(),
            setting: "class-il".into(),
            seed,
            phase: "eval".into(),
            data_fingerprint: "f".into(),
            strategy_version: "builtin".into(),
            strategy_library_hash: None,
            hparams: serde_json::json!({}),
            status: "completed".into(),
            error: None,
            tasks: vec!["a".into()],
            accuracy_matrix: vec![vec![acc]],
            random_init_accuracy: vec![0.1],
            online_accuracy: vec![0.5],
            mean_loss: vec![1.0],
            metrics: Some(crate::metrics::compute(&[vec![acc]], None, None, None)),
            train_seconds: 1.0,
            eval_seconds: 0.1,
            task_end_seconds: 0.0,
            samples_per_second: 100.0,
            steps: 10,
            backend: "dfdx".into(),
            num_params: 10,
            clef_version: "0".into(),
            strategy_metrics: Vec::new(),
            diagnostics: Vec::new(),
            collapsed: Vec::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(strategy: &str, seed: u64, acc: f64) -> TrialRecord {
        TrialRecord::sample(strategy, seed, acc)
    }

    #[test]
    fn records_view_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let rd = ResultsDir::create(&dir.path().join("out")).unwrap();
        rd.write_records(&[record("a", 0, 0.5), record("a", 1, 0.7)])
            .unwrap();
        let back = rd.read().unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], record("a", 1, 0.7));
        // no temporary files left behind
        let names: Vec<_> = std::fs::read_dir(rd.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn strategy_metrics_round_trip_and_are_omitted_when_empty() {
        let plain = serde_json::to_string(&record("a", 0, 0.5)).unwrap();
        assert!(!plain.contains("strategy_metrics"), "{plain}");
        let mut r = record("a", 0, 0.5);
        r.strategy_metrics = vec![BTreeMap::from([("density.total".to_string(), 0.1)])];
        let line = serde_json::to_string(&r).unwrap();
        assert!(
            line.contains(r#""strategy_metrics":[{"density.total":0.1}]"#),
            "{line}"
        );
        assert_eq!(serde_json::from_str::<TrialRecord>(&line).unwrap(), r);
        // Records written before the field existed still load.
        assert_eq!(
            serde_json::from_str::<TrialRecord>(&plain).unwrap(),
            record("a", 0, 0.5)
        );
    }

    /// A selection of `protocol` naming the evaluation trials `ids`.
    fn selection(protocol: &str, strategy: &str, ids: &[&str]) -> Selection {
        Selection {
            protocol: protocol.into(),
            setting: "class-il".into(),
            strategy: strategy.into(),
            hparams: serde_json::json!({}),
            chosen_in_phase: "tune".into(),
            tuned_on: None,
            selection_metric: None,
            score: None,
            candidates: 2,
            tune_trials: Vec::new(),
            all_tune_trials: Vec::new(),
            eval_trials: ids.iter().map(|s| s.to_string()).collect(),
            tied: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn a_collapsed_trial_is_marked_in_the_table_and_listed_in_the_summary() {
        let ok = record("a", 0, 0.9);
        let mut dead = record("a", 1, 0.5);
        dead.tasks = vec!["t0".into(), "t1".into(), "t2".into()];
        dead.collapsed = vec![false, true, true];
        dead.online_accuracy = vec![0.97, 0.49, 0.5];
        assert_eq!(dead.collapsed_tasks(), vec![1, 2]);
        assert_eq!(ok.collapse_warning(), None);
        let sel = [selection("run", "a", &["a-0", "a-1"])];
        let md = summary_markdown("x", &sel, &[ok.clone(), dead.clone()]);
        assert!(
            md.contains("| class-il | a | run | 2 (⚠ 1 collapsed) |"),
            "{md}"
        );
        assert!(md.contains("## ⚠ Trials whose training collapsed"), "{md}");
        assert!(
            md.contains(
                "- ⚠ class-il / a / seed 1 (eval): training collapsed on task(s) 1, 2 of 3"
            ),
            "{md}"
        );
        assert!(md.contains("online accuracy 0.970, 0.490, 0.500"), "{md}");
        assert!(
            md.contains("### class-il / a / seed 1 (⚠ collapsed)"),
            "{md}"
        );
        assert!(!md.contains("seed 0 (⚠"), "{md}");
        // Nothing collapsed: no section, no marker.
        let clean = summary_markdown("x", &sel, &[ok, record("a", 1, 0.8)]);
        assert!(!clean.contains('⚠'), "{clean}");
        // Old records without the field read as not collapsed.
        let mut v = serde_json::to_value(&dead).unwrap();
        v.as_object_mut().unwrap().remove("collapsed");
        let back: TrialRecord = serde_json::from_value(v).unwrap();
        assert!(back.collapsed_tasks().is_empty());
    }

    #[test]
    fn table_shows_mean_and_std_over_seeds() {
        let t = results_table(
            &[selection("run", "a", &["a-0", "a-1"])],
            &[record("a", 0, 0.5), record("a", 1, 0.7)],
        );
        // mean 0.6, sample std sqrt(0.02) = 0.141
        assert!(
            t.contains("| class-il | a | run | 2 | 0.600 ± 0.141 |"),
            "{t}"
        );
    }

    #[test]
    fn the_table_never_averages_two_protocols_into_one_row() {
        // Two protocols chose different values: their evaluation trials (same strategy,
        // setting and seeds) stay in separate rows.
        let mut other = record("a", 0, 0.9);
        other.trial_id = "b-0".into();
        let mut other1 = record("a", 1, 0.9);
        other1.trial_id = "b-1".into();
        let recs = [record("a", 0, 0.5), record("a", 1, 0.7), other, other1];
        let sels = [
            selection("conventional", "a", &["a-0", "a-1"]),
            selection("first-task", "a", &["b-0", "b-1"]),
        ];
        let t = results_table(&sels, &recs);
        assert!(
            t.contains("| class-il | a | conventional | 2 | 0.600 ± 0.141 |"),
            "{t}"
        );
        assert!(
            t.contains("| class-il | a | first-task | 2 | 0.900 ± 0.000 |"),
            "{t}"
        );
        // Two protocols whose choices coincide share their evaluation trials: each row shows
        // them once (2 seeds, not 4), and a record no selection names is not averaged in.
        let sels = [
            selection("conventional", "a", &["a-0", "a-1"]),
            selection("first-task", "a", &["a-0", "a-1"]),
        ];
        let t = results_table(&sels, &recs);
        assert!(
            t.contains("| class-il | a | conventional | 2 | 0.600 ± 0.141 |"),
            "{t}"
        );
        assert!(
            t.contains("| class-il | a | first-task | 2 | 0.600 ± 0.141 |"),
            "{t}"
        );
        let md = summary_markdown("x", &sels, &recs);
        assert!(
            md.contains("2 stored evaluation trial(s) belong to no selection"),
            "{md}"
        );
        assert_eq!(md.matches("### class-il / a / seed").count(), 2, "{md}");
    }

    #[test]
    fn mean_std_hand_computed() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!((m - 2.5).abs() < 1e-12);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = ResultsDir::create(&file.join("sub"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot write results to") && e.contains("sub"),
            "{e}"
        );
    }
}
