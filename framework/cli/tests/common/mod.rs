//! What the `clef` integration tests share (`mod common;` in each test file): the `clef`
//! command, output text, the results a run writes (`records`, `trials`, `run_summary`), and the
//! plugin libraries (`plugins`, `c_plugin_dir`). Configs come from `clef_testkit::Cfg`.
//!
//! Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

pub mod kill;
pub mod plugin_run;

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `clef` binary under test, with warnings-only logging and no plugin search path or
/// fixture listing from the environment.
pub fn clef() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_clef"));
    c.env("RUST_LOG", "warn")
        .env_remove("CLEF_PLUGIN_PATH")
        .env_remove("CLEF_SHOW_FIXTURES");
    c
}

/// Bytes of an output stream as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A command's status and both streams, for failure messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `clef ARGS`, which must succeed.
pub fn run_ok(args: &[&str]) -> Output {
    let out = clef().args(args).output().expect("run clef");
    assert!(
        out.status.success(),
        "clef {args:?} failed:\n{}",
        show(&out)
    );
    out
}

/// `clef run --no-progress --out OUT CFG EXTRA...` (with `RUST_LOG=log`); whatever its status.
pub fn run_cfg(cfg: &Path, out: &Path, log: &str, extra: &[&str]) -> Output {
    clef()
        .env("RUST_LOG", log)
        .args(["run", "--no-progress", "--out"])
        .arg(out)
        .arg(cfg)
        .args(extra)
        .output()
        .expect("run clef")
}

/// The lines of `dir/results.jsonl`.
pub fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The records of `dir/results.jsonl`, parsed.
pub fn records(dir: &Path) -> Vec<Value> {
    lines(dir)
        .iter()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// The trial store of `dir`: `trials/<id>.json` parsed, by id (temporary files skipped).
pub fn trials(dir: &Path) -> BTreeMap<String, Value> {
    stored_ids(dir)
        .into_iter()
        .map(|id| {
            let p = dir.join("trials").join(format!("{id}.json"));
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            let v = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
            (id, v)
        })
        .collect()
}

/// Trial ids in the store of `dir` (none if it has no store).
pub fn stored_ids(dir: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(dir.join("trials")) {
        Ok(rd) => rd
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")
                    .filter(|_| !name.starts_with('.'))
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// The fields of a record that measure time (they differ between identical runs).
pub const TIMINGS: [&str; 4] = [
    "train_seconds",
    "eval_seconds",
    "task_end_seconds",
    "samples_per_second",
];

/// A record without its [`TIMINGS`].
pub fn without_timings(mut r: Value) -> Value {
    let obj = r.as_object_mut().expect("record object");
    for k in TIMINGS {
        obj.remove(k);
    }
    r
}

/// What must not depend on how a trial was scheduled: the records of `dir/results.jsonl`
/// without their timings, by trial id.
pub fn results_by_id(dir: &Path) -> BTreeMap<String, Value> {
    records(dir)
        .into_iter()
        .map(|r| {
            let id = r["trial_id"].as_str().expect("trial_id").to_string();
            (id, without_timings(r))
        })
        .collect()
}

/// The record of `strategy` (or label) in `setting`.
pub fn find<'a>(recs: &'a [Value], strategy: &str, setting: &str) -> &'a Value {
    recs.iter()
        .find(|r| r["strategy"] == strategy && r["setting"] == setting)
        .unwrap_or_else(|| panic!("no record for {strategy}/{setting}"))
}

/// `dir/run.json`, the summary `clef run` writes at its end, parsed.
pub fn run_summary(dir: &Path) -> Value {
    let p = dir.join("run.json");
    let text =
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}\n{text}", p.display()))
}

/// The file name of plugin `name`'s library (`libclef_plugin_<name>.so` on Linux).
pub fn plugin_file(name: &str) -> String {
    format!(
        "{}clef_plugin_{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// The workspace's plugins the tests load, by library name (`libclef_plugin_<name>.so`); each
/// crate is a dev-dependency of clef-cli (`Cargo.toml`).
const PLUGIN_LIBS: &[&str] = &[
    "finetune",
    "ewc",
    "l2",
    "lwf",
    "replay",
    "dst",
    "spectral",
    "wasserstein",
    "l2init",
    "sfr",
    "par",
    "si",
    "mas",
    "agem",
    "icarl",
    "gdumb",
    "der",
    "derpp",
    "er-ace",
    "fixture-bad-abi",
    "fixture-no-entry",
    "fixture-panicking",
    "fixture-erroring",
    "fixture-hparams",
    "fixture-unsaved",
    "fixture-scorer",
];

/// The directory of the workspace's plugin libraries, up to date with their sources.
///
/// The plugin crates are dev-dependencies of clef-cli, so cargo builds them (their `cdylib`
/// included: `<target>/<profile>/deps/libclef_plugin_<name>.so`, beside the test executables)
/// within the test build, in its profile and with its features, before any test runs: no
/// nested cargo build, nothing compiled twice, and a plugin whose source changed is rebuilt by
/// the same freshness check as the tests themselves. Checked once per test binary: every
/// library is there, and no source file rustc read for it (its dep-info) is newer than it,
/// which catches a test binary run by hand after a plugin was edited.
pub fn plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable");
        let deps = exe.parent().expect("the test executable's directory");
        for name in PLUGIN_LIBS {
            let lib = deps.join(plugin_file(name));
            let built = modified(&lib).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (the plugins are dev-dependencies of clef-cli: run the tests with \
                     cargo)",
                    lib.display()
                )
            });
            let depinfo = deps.join(format!("clef_plugin_{}.d", name.replace('-', "_")));
            for src in dep_info_sources(&depinfo, &lib) {
                let src = repo_root().join(src);
                let changed = modified(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
                assert!(
                    changed <= built,
                    "{} is older than its source {}: rebuild it (`cargo test` does)",
                    lib.display(),
                    src.display()
                );
            }
        }
        deps.to_path_buf()
    })
}

fn modified(path: &Path) -> std::io::Result<std::time::SystemTime> {
    std::fs::metadata(path)?.modified()
}

/// The sources of `target` in the Makefile-style dep-info file `depinfo` (a line
/// `target: src src ...`, spaces in paths escaped with a backslash); relative to the workspace.
fn dep_info_sources(depinfo: &Path, target: &Path) -> Vec<PathBuf> {
    let text =
        std::fs::read_to_string(depinfo).unwrap_or_else(|e| panic!("{}: {e}", depinfo.display()));
    // The rule for the file named like `target` (its directory may be spelled differently).
    let sources = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(head, _)| Path::new(head).file_name() == target.file_name())
        .map(|(_, tail)| tail)
        .unwrap_or_else(|| panic!("{} does not list {}", depinfo.display(), target.display()));
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = sources.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            ' ' if !cur.is_empty() => out.push(PathBuf::from(std::mem::take(&mut cur))),
            ' ' => {}
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    assert!(!out.is_empty(), "no sources in {}", depinfo.display());
    out
}

/// The directory holding the C plugin (`plugins/fixtures/c-minimal`), compiled once per test
/// binary with the system C compiler (`$CC`, else `cc`) into `<target>/plugin-tests/c`.
pub fn c_plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| compile_c_plugin("c", "c-minimal", "plugins/fixtures/c-minimal/minimal.c"))
}

/// The directory holding the ABI 1.2 C plugin (`plugins/fixtures/c-abi12`), compiled once per
/// test binary into `<target>/plugin-tests/c-abi12`.
pub fn c_abi12_plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| compile_c_plugin("c-abi12", "c-abi12", "plugins/fixtures/c-abi12/abi12.c"))
}

/// Compiles the C plugin `name` from `source` (relative to the repository) with `$CC` (else
/// `cc`), warnings as errors, into `<target>/plugin-tests/<dir>`; returns that directory.
fn compile_c_plugin(dir: &str, name: &str, source: &str) -> PathBuf {
    let c_dir = scratch_target().join(dir);
    std::fs::create_dir_all(&c_dir).expect("create the C plugin dir");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let lib = c_dir.join(plugin_file(name));
    let out = Command::new(&cc)
        .args([
            "-shared", "-fPIC", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I",
        ])
        .arg(repo_root().join("framework/abi/include"))
        .arg("-o")
        .arg(&lib)
        .arg(repo_root().join(source))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "compiling the C plugin {source} failed:\n{}",
        text(&out.stderr)
    );
    c_dir
}

/// A target directory of the tests' own, `<target>/plugin-tests`, for builds that must not
/// land next to `clef` (a crate generated by `clef new-plugin`) and for the C plugin.
pub fn scratch_target() -> PathBuf {
    // `clef` is `<target>[/<triple>]/<profile>/clef`; a target directory holds CACHEDIR.TAG.
    let exe = Path::new(env!("CARGO_BIN_EXE_clef"));
    let mut above = exe.ancestors().skip(2).take(2);
    let target = above
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .or_else(|| exe.parent().and_then(Path::parent))
        .expect("a target directory");
    target.join("plugin-tests")
}
