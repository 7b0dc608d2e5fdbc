//! Results you can trust, and the CLI's rough edges: a rebuilt plugin's trials run again, the
//! exit status says whether evaluation trials completed, tuning warnings reach the summary and
//! the log, `clef plugins` hides clef's test fixtures, `clef validate` counts search
//! candidates only when there is a search, and `clef` is quiet by default.
//!
//! The plugins are built once per test binary (`common::plugins`, shared with `plugins.rs`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use clef_testkit::Cfg;

use common::{clef, plugin_file, plugins, records, show, text};

/// A small digits config (task-IL, 3 tasks, one seed) with the given plugin directories and
/// `[protocol]` lines; the tests add their `[[strategy]]` tables.
fn trust(plugin_dirs: &[&Path], protocol: &str) -> Cfg {
    Cfg::digits()
        .name("trust")
        .seeds(&[3])
        .plugin_dirs(plugin_dirs)
        .protocol(protocol)
        .test_fraction(0.25)
        .tasks(3)
        .momentum(0.9)
}

/// Writes `cfg` as `dir/trust.toml`.
fn write(cfg: Cfg, dir: &Path) -> PathBuf {
    cfg.write(dir, "trust.toml")
}

fn run(cfg: &Path, out: &Path) -> Output {
    common::run_cfg(cfg, out, "warn", &[])
}

#[test]
fn a_rebuilt_plugin_runs_its_trials_again() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join(plugin_file("l2"));
    std::fs::copy(plugins().join(plugin_file("l2")), &lib).expect("copy the l2 plugin");
    let cfg = trust(&[], "kinds = [\"run\"]")
        .strategy("l2")
        .path(&lib)
        .hparams("lambda = 0.1");
    let cfg = write(cfg, tmp.path());
    let out = tmp.path().join("out");
    let first = run(&cfg, &out);
    assert!(first.status.success(), "{}", show(&first));
    assert!(
        text(&first.stdout).contains("evaluation 1 run, 0 already stored"),
        "{}",
        show(&first)
    );
    let again = run(&cfg, &out);
    assert!(
        text(&again.stdout).contains("evaluation 0 run, 1 already stored"),
        "{}",
        show(&again)
    );
    // A "rebuild": same name, version and path, different bytes (an ELF file still loads with
    // bytes appended).
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"rebuilt with a change");
    std::fs::write(&lib, bytes).unwrap();
    let rebuilt = run(&cfg, &out);
    assert!(rebuilt.status.success(), "{}", show(&rebuilt));
    assert!(
        text(&rebuilt.stdout).contains("evaluation 1 run, 0 already stored"),
        "the changed library was not run again:\n{}",
        show(&rebuilt)
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 2, "{recs:?}");
    let hashes: Vec<&str> = recs
        .iter()
        .map(|r| r["strategy_library_hash"].as_str().expect("library hash"))
        .collect();
    assert_ne!(hashes[0], hashes[1]);
    assert!(hashes.iter().all(|h| h.len() == 16), "{hashes:?}");
    // The summary shows the current build's trial and only counts the other.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("1 stored evaluation trial(s) belong to no selection"),
        "{summary}"
    );
    assert_eq!(summary.matches("### task-il / l2 / seed 3").count(), 1);
}

#[test]
fn failed_evaluation_trials_exit_2_and_keep_the_records() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trust(&[plugins()], "kinds = [\"run\"]")
        .strategy("fixture-error")
        .hparams("error_in = \"on_task_end\"");
    let cfg = write(cfg, tmp.path());
    let out_dir = tmp.path().join("out");
    let out = run(&cfg, &out_dir);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("1 trial(s) did not complete (of 1 evaluation trial(s))"),
        "{}",
        show(&out)
    );
    let recs = records(&out_dir);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "failed");
    assert!(out_dir.join("summary.md").is_file());
    // run.json says the same.
    let summary = common::run_summary(&out_dir);
    assert_eq!(summary["status"], "trials-incomplete", "{summary}");
    assert_eq!(summary["exit_code"], 2, "{summary}");
    assert_eq!(summary["eval"]["failed"], 1, "{summary}");
    // Re-running finds the failed record stored and says so again.
    let again = run(&cfg, &out_dir);
    assert_eq!(again.status.code(), Some(2), "{}", show(&again));
}

/// Two protocols: `conventional` and `first-task` on two tasks (`l2`'s penalty acts from the
/// second task on, so one task would be refused: see below). For `l2` the diverging candidate
/// λ = 1e12 loses in both, so both choose λ = 0.01 (the smallest value searched) and share
/// the evaluation trial; `fixture-hparams`' `rate` does nothing, so its candidates tie.
#[test]
fn tuning_warnings_reach_the_summary_and_the_log_and_diverged_candidates_do_not_fail_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trust(
        &[plugins()],
        "kinds = [\"conventional\", \"first-task\"]\ntune_tasks = 2",
    )
    .strategy("l2")
    .search("lambda = [0.01, 1e12]")
    .strategy("fixture-hparams")
    .search("rate = [0.1, 10.0]");
    let cfg = write(cfg, tmp.path());
    let out_dir = tmp.path().join("out");
    let out = run(&cfg, &out_dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a diverged tuning candidate must not fail the run:\n{}",
        show(&out)
    );
    let recs = records(&out_dir);
    assert!(
        recs.iter()
            .any(|r| r["phase"] == "tune" && r["status"] == "diverged"),
        "{recs:?}"
    );
    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    let err = text(&out.stderr);
    for w in [
        "NO EFFECT: all 2 candidates of `fixture-hparams` gave the same mean acc",
        "EDGE: `l2`'s lambda = 0.01 is the smallest value searched",
    ] {
        assert!(summary.contains(w), "{w:?} not in the summary:\n{summary}");
        assert!(err.contains(w), "{w:?} not logged:\n{err}");
    }
    // The evaluation table: one row per protocol, each with the shared trial once.
    for row in [
        "| task-il | l2 | conventional | 1 |",
        "| task-il | l2 | first-task | 1 |",
    ] {
        assert!(summary.contains(row), "{row:?} not in:\n{summary}");
    }
    let l2_eval = recs
        .iter()
        .filter(|r| r["phase"] == "eval" && r["strategy"] == "l2")
        .count();
    assert_eq!(l2_eval, 1, "the protocols share their evaluation trial");

    // With the default `tune_tasks = 1`, first-task tuning of a parameter flagged
    // `needs_past_tasks` (l2's lambda) is refused before anything runs.
    let one = trust(&[plugins()], "kinds = [\"first-task\"]")
        .strategy("l2")
        .search("lambda = [0.01, 1.0]");
    let one = write(one, tmp.path());
    let refused = clef().args(["validate"]).arg(&one).output().unwrap();
    assert!(!refused.status.success(), "{}", show(&refused));
    assert!(
        text(&refused.stderr).contains("strategy[0].search.lambda"),
        "{}",
        show(&refused)
    );
}

#[test]
fn plugins_hides_the_test_fixtures_unless_asked() {
    let dir = plugins();
    let list = |extra: &[&str], show_env: bool| {
        let mut c = clef();
        c.args(["plugins"]).args(extra).arg(dir);
        if show_env {
            c.env("CLEF_SHOW_FIXTURES", "1");
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        text(&out.stdout)
    };
    let plain = list(&["--plugin-dir"], false);
    assert!(
        plain.contains("\nl2 ") || plain.starts_with("l2 "),
        "{plain}"
    );
    // No fixture is listed (by name or file); only the note says they are hidden.
    assert!(
        !plain.contains("fixture-hparams")
            && !plain.contains("fixture-error")
            && !plain.contains("clef_plugin_fixture_"),
        "{plain}"
    );
    assert!(plain.contains("test fixture(s) hidden"), "{plain}");
    // A hyperparameter flagged `needs_past_tasks` (l2's lambda) says so.
    assert!(
        plain.contains("log scale, acts once a task has ended"),
        "{plain}"
    );
    // The old flag still works (hidden alias).
    assert_eq!(list(&["--dir"], false), plain);
    for shown in [
        list(&["--all", "--plugin-dir"], false),
        list(&["--plugin-dir"], true),
    ] {
        assert!(
            shown.contains("fixture-hparams") && shown.contains("fixture-error"),
            "{shown}"
        );
        assert!(!shown.contains("hidden"), "{shown}");
    }
    let help = clef().args(["plugins", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(
        help.contains("--plugin-dir") && help.contains("--all") && help.contains("fixture"),
        "{help}"
    );
    assert!(!help.contains("--dir"), "{help}");
    let help = clef().args(["run", "--help"]).output().unwrap();
    let help = text(&help.stdout);
    assert!(
        help.contains("Exit status") && help.contains("2 when"),
        "{help}"
    );
}

/// A config with built-in strategies only (no plugins needed).
fn builtin_config(dir: &Path, protocol: &str) -> PathBuf {
    let cfg = trust(&[], protocol)
        .strategy("joint")
        .strategy("joint")
        .label("j2");
    write(cfg, dir)
}

#[test]
fn validate_counts_search_candidates_only_with_a_search() {
    let tmp = tempfile::tempdir().unwrap();
    for protocol in ["kinds = [\"run\"]", "kinds = [\"conventional\"]"] {
        let cfg = builtin_config(tmp.path(), protocol);
        let out = clef().arg("validate").arg(&cfg).output().unwrap();
        assert!(out.status.success(), "{}", show(&out));
        let o = text(&out.stdout);
        assert!(
            o.contains("no hyperparameter search") && !o.contains("candidates"),
            "{protocol}: {o}"
        );
    }
}

#[test]
fn validate_counts_the_candidates_of_a_search() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trust(&[], "kinds = [\"conventional\"]")
        .strategy("joint")
        .strategy("l2")
        .search("lambda = [0.1, 1.0, 10.0]");
    let cfg = write(cfg, tmp.path());
    let out = clef()
        .arg("validate")
        .arg(&cfg)
        .arg("--plugin-dir")
        .arg(plugins())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("3 search candidates for 1 strategy"),
        "{}",
        show(&out)
    );
}

#[test]
fn clef_is_quiet_by_default_and_verbose_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = builtin_config(tmp.path(), "kinds = [\"run\"]");
    let go = |v: Option<&str>, out: &str| {
        let mut c = clef();
        c.env_remove("RUST_LOG")
            .args(["run", "--no-progress", "--out"])
            .arg(tmp.path().join(out))
            .arg(&cfg);
        if let Some(v) = v {
            c.arg(v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", show(&o));
        (text(&o.stdout), text(&o.stderr))
    };
    let (stdout, quiet) = go(None, "quiet");
    assert!(!quiet.contains("INFO"), "{quiet}");
    assert!(stdout.contains("| task-il | joint | run | 1 |"), "{stdout}");
    let (_, info) = go(Some("-v"), "info");
    assert!(
        info.contains("INFO") && info.contains("starting run") && !info.contains("DEBUG"),
        "{info}"
    );
    let (_, debug) = go(Some("-vv"), "debug");
    assert!(debug.contains("DEBUG"), "{debug}");
}
