//! Helpers shared by the benchmark binaries in `src/bin/`.

use std::path::PathBuf;

use anyhow::Context as _;

/// The median of `xs` (the upper one for an even count); `xs` must not be empty.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Where the plugins are: `arg` if given, else the directory of the running executable
/// (`cargo build --release --workspace` puts the benchmarks and the plugins side by side).
pub fn plugin_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match arg {
        Some(d) => Ok(d),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("executable has no directory")?
            .to_path_buf()),
    }
}
