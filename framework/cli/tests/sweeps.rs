//! Sweeps as users run them, through the `clef` binary with built-in strategies: the per-trial
//! store survives SIGKILL (resume with nothing lost and nothing run twice), `--shard` slices
//! are disjoint and cover the sweep, `clef merge` rebuilds the whole sweep, `--jobs` does not
//! change any result, and a tune phase that would read D_eval is refused.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use clef_testkit::Cfg;

use common::{clef, records, results_by_id, run_ok, show, stored_ids};

/// The sweep's stream: `seeds` x 2 settings; `epochs` sets the trial length.
fn stream(seeds: u64, epochs: usize) -> Cfg {
    Cfg::digits()
        .name("sweep")
        .seed_count(seeds)
        .settings(&["task-il", "class-il"])
        .shuffled_classes()
        .hidden(&[64])
        .epochs(epochs)
        .batch_size(16)
}

/// A digits sweep: `seeds` x 2 settings x (finetune, joint); `epochs` sets the trial length.
fn sweep(seeds: u64, epochs: usize) -> Cfg {
    stream(seeds, epochs).strategy("finetune").strategy("joint")
}

/// [`sweep`] written to `dir/sweep.toml`.
fn config(dir: &Path, seeds: u64, epochs: usize) -> PathBuf {
    sweep(seeds, epochs).write(dir, "sweep.toml")
}

fn run(cfg: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    run_ok(&args)
}

#[test]
fn sigkill_mid_sweep_then_rerun_gives_exactly_the_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 8, 30);
    // The reference: the same sweep, uninterrupted.
    let full = tmp.path().join("full");
    run(&cfg, &full, &[]);
    let expected = stored_ids(&full);
    assert_eq!(expected.len(), 8 * 2 * 2);

    let out = tmp.path().join("killed");
    let mut child = clef()
        .args([
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-progress",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while stored_ids(&out).len() < 5 {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = stored_ids(&out);
    assert!(
        before.len() < expected.len(),
        "killed too late: {} trials",
        before.len()
    );
    assert!(before.is_subset(&expected));
    let snapshot: BTreeMap<String, (Vec<u8>, std::time::SystemTime)> = before
        .iter()
        .map(|id| {
            let p = out.join("trials").join(format!("{id}.json"));
            (
                id.clone(),
                (
                    std::fs::read(&p).unwrap(),
                    p.metadata().unwrap().modified().unwrap(),
                ),
            )
        })
        .collect();

    let rerun = run(&cfg, &out, &[]);
    let text = String::from_utf8_lossy(&rerun.stdout);
    // Nothing run twice: the finished trials are skipped and their files untouched.
    assert!(
        text.contains(&format!(
            "evaluation {} run, {} already stored",
            expected.len() - before.len(),
            before.len()
        )),
        "{text}"
    );
    for (id, (bytes, mtime)) in &snapshot {
        let p = out.join("trials").join(format!("{id}.json"));
        assert_eq!(&std::fs::read(&p).unwrap(), bytes, "{id} rewritten");
        assert_eq!(
            &p.metadata().unwrap().modified().unwrap(),
            mtime,
            "{id} rewritten"
        );
    }
    // Nothing lost, nothing extra, no duplicates.
    assert_eq!(stored_ids(&out), expected);
    let ids: Vec<String> = records(&out)
        .iter()
        .map(|r| r["trial_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), expected.len());
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let leftovers = std::fs::read_dir(out.join("trials"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(leftovers, 0);
    // And the resumed sweep's results are the uninterrupted sweep's.
    assert_eq!(results_by_id(&out), results_by_id(&full));
}

#[test]
fn shards_are_disjoint_cover_the_sweep_and_merge_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 3, 1);
    let full = tmp.path().join("full");
    run(&cfg, &full, &[]);
    let expected = stored_ids(&full);
    let mut union = BTreeSet::new();
    let mut dirs = Vec::new();
    for i in 0..3 {
        let d = tmp.path().join(format!("shard{i}"));
        run(&cfg, &d, &["--shard", &format!("{i}/3")]);
        let ids = stored_ids(&d);
        assert!(!ids.is_empty(), "shard {i} ran nothing");
        assert!(union.is_disjoint(&ids), "shard {i} overlaps another");
        union.extend(ids);
        dirs.push(d);
    }
    assert_eq!(union, expected);
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "--into", merged.to_str().unwrap()];
    args.extend(dirs.iter().map(|d| d.to_str().unwrap()));
    run_ok(&args);
    assert_eq!(results_by_id(&merged), results_by_id(&full));
    // Merging again adds nothing.
    let again = run_ok(&args);
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 trial(s) added"));
    assert_eq!(stored_ids(&merged), expected);
    // A bad shard is refused.
    let bad = clef()
        .args(["run", cfg.to_str().unwrap(), "--shard", "3/3"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("0 <= i < n"),
        "{}",
        show(&bad)
    );
}

#[test]
fn jobs_1_and_jobs_2_give_bit_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), 2, 2);
    let one = tmp.path().join("one");
    let two = tmp.path().join("two");
    run(&cfg, &one, &["--jobs", "1"]);
    run(&cfg, &two, &["--jobs", "2"]);
    let (a, b) = (results_by_id(&one), results_by_id(&two));
    assert_eq!(a.len(), 8);
    assert_eq!(a, b);
}

/// A tune-then-evaluate config (no name: line 7 is `[protocol.tune_data]`) whose tuning data
/// is `tune_data`.
fn leaky_config(dir: &Path, tune_data: &str) -> PathBuf {
    Cfg::digits()
        .protocol("kinds = [\"tune-then-evaluate\"]")
        .tune_data(tune_data)
        .test_fraction(0.25)
        .hidden(&[16])
        .strategy("finetune")
        .write(dir, "leaky.toml")
}

#[test]
fn a_tune_phase_that_reads_d_eval_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Same samples under a different train/test split: every tuning sample is a D_eval one.
    for tune in [
        "dataset = \"digits\"\ntest_fraction = 0.3",
        "dataset = \"digits\"\nsplit_seed = 5",
    ] {
        let cfg = leaky_config(tmp.path(), tune);
        for cmd in ["validate", "run"] {
            let out = clef()
                .args([
                    cmd,
                    cfg.to_str().unwrap(),
                    "--plugin-dir",
                    tmp.path().to_str().unwrap(),
                ])
                .current_dir(tmp.path())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted a leaky config");
            assert!(err.contains("leaky.toml:7: `protocol.tune_data`"), "{err}");
            assert!(err.contains("sample(s) of D_eval"), "{err}");
        }
        assert!(
            !tmp.path().join("results").exists(),
            "a refused run wrote results"
        );
    }
    // Disjoint data is accepted.
    let ok = leaky_config(tmp.path(), "dataset = \"synthetic\"\nsynthetic_dim = 64");
    let out = clef()
        .args(["validate", ok.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn protocol_keys_are_checked_naming_file_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "kinds = [\"tune-then-evaluate\"]\nbudgett = 3",
            "unknown field `budgett`",
        ),
        (
            "kinds = [\"conventional\"]\nsearch = \"random\"",
            "`protocol.budget` is required",
        ),
        (
            "kinds = [\"tune-then-evaluate\"]",
            "`protocol.kinds` `tune-then-evaluate` needs",
        ),
        (
            "kinds = [\"run\"]\ntune_tasks = 2",
            "`protocol.tune_tasks` applies only",
        ),
        (
            "kinds = [\"first-task\"]\ntune_tasks = 9",
            "`protocol.tune_tasks` must be in [1",
        ),
        ("kinds = [\"swap\"]", "unknown variant `swap`"),
        (
            "kinds = [\"conventional\"]\nselection_metric = \"bwt\"",
            "unknown variant `bwt`",
        ),
    ];
    for (table, expected) in cases {
        let path = sweep(1, 1).protocol(table).write(tmp.path(), "p.toml");
        let out = clef()
            .args(["validate", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {table}");
        assert!(
            err.contains("p.toml") && err.contains(expected),
            "{table}: {err}"
        );
    }
    // Searching a built-in strategy's (non-existent) hyperparameters names the key.
    let path = stream(1, 1)
        .protocol("kinds = [\"conventional\"]")
        .strategy("finetune")
        .search("lambda = [1.0]")
        .strategy("joint")
        .write(tmp.path(), "s.toml");
    let out = clef()
        .args(["validate", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("s.toml") && err.contains("`strategy[0].search.lambda`"),
        "{err}"
    );
}
