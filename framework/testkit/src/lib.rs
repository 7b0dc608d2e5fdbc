//! Helpers shared by clef's integration tests (a dev-dependency of the crates whose tests need
//! them; never of a library).
//!
//! [`require_resource`]: a test that needs something a fresh machine may lack (Fashion-MNIST,
//! PyTorch, a C compiler, a Slurm cluster) skips with a message locally but fails under CI
//! (`CI` set; `.ci/run` sets it and installs every such resource), so CI can never pass
//! because a test silently did nothing.
//!
//! [`Cfg`]: a builder of the small TOML configs the integration tests run, in place of pasted
//! configs.

mod config;

pub use config::Cfg;

/// Whether the tests run under CI (the `CI` environment variable is set and not empty or `0`
/// / `false`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Decides whether a test that needs a resource runs: `true` if it is `available`; otherwise,
/// locally, prints `skipped: <why>` and returns `false` (the test returns early); under CI
/// panics with `why`, because `.ci/run` must have provided the resource.
///
/// ```
/// # use clef_testkit::require_resource;
/// let installed = std::path::Path::new("/nonexistent/data").is_dir();
/// if std::env::var_os("CI").is_none() {
///     assert!(!require_resource(installed, "the data set is not installed"));
/// }
/// ```
pub fn require_resource(available: bool, why: impl std::fmt::Display) -> bool {
    if available {
        return true;
    }
    if under_ci() {
        panic!("CI must run this test, but {why} (.ci/run installs what the tests need)");
    }
    eprintln!("skipped: {why}");
    println!("skipped: {why}");
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_available_resource_runs_the_test() {
        assert!(require_resource(true, "never shown"));
    }

    #[test]
    fn a_missing_resource_skips_locally_and_fails_under_ci() {
        let outcome = std::panic::catch_unwind(|| require_resource(false, "no such thing"));
        if under_ci() {
            let err = outcome.expect_err("must fail under CI");
            let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
            assert!(msg.contains("no such thing"), "{msg}");
        } else {
            assert_eq!(outcome.ok(), Some(false));
        }
    }
}
