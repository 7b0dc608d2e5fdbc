//! `clef new-plugin`: a strategy plugin crate from a template.
//!
//! The crate depends on the clef SDK by path (the SDK is not published to a registry), is a
//! `cdylib` (for clef) and an `rlib` (so `cargo test` can test it), and declares an empty
//! `[workspace]` so it builds on its own wherever it is created. Its strategy is a small working
//! one (an L2 pull towards the weights at the start of each task) to edit.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// The SDK of the source tree this binary was built from.
const BUILT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sdk");

/// Creates `<dir>/<name>` and returns its path.
pub fn create(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<PathBuf> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        bail!("invalid plugin name {name:?}: use [a-z][a-z0-9_-]* (e.g. `l2-init`)");
    }
    let sdk = match sdk {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from(BUILT_SDK),
    };
    let sdk = std::fs::canonicalize(&sdk)
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "cannot find the clef SDK at {} (pass --sdk <clef checkout>/framework/sdk)",
                sdk.display()
            )
        })?;
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("cannot create {}", root.display()))?;
    let write = |rel: &str, text: String| {
        let p = root.join(rel);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    write("Cargo.toml", cargo_toml(name, &sdk))?;
    write("src/lib.rs", lib_rs(name))?;
    write(".gitignore", "/target\n".into())?;
    Ok(root)
}

fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|s| !s.is_empty())
        .map(|s| {
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    let lib = format!("clef_plugin_{}", name.replace('-', "_"));
    let sdk = toml_string(&sdk.display().to_string());
    format!(
        r#"[package]
name = "clef-plugin-{name}"
version = "0.1.0"
edition = "2021"
publish = false
description = "The `{name}` continual-learning strategy as a clef plugin."

[lib]
# cdylib: the shared library clef loads (lib{lib}.so on Linux); rlib: for `cargo test`.
crate-type = ["cdylib", "rlib"]

[dependencies]
clef-sdk = {{ path = {sdk} }}
serde = {{ version = "1", features = ["derive"] }}

[dev-dependencies]
# The SDK's mock host, to test the plugin through its C entry points.
clef-sdk = {{ path = {sdk}, features = ["testing"] }}

# Not part of any enclosing workspace (delete this table to add the crate to one).
[workspace]
"#
    )
}

fn lib_rs(name: &str) -> String {
    let ty = type_name(name);
    format!(
        r#"//! `{name}`: a clef strategy plugin.
//!
//! As generated, an L2 pull towards the weights each task started from:
//! `grad += lambda * (w - w_task_start)`. Replace it with your strategy; the hooks available
//! are those of `clef_sdk::Strategy` (on_model_built, on_task_start, before_batch,
//! after_backward, after_step, on_task_end, before_eval, after_eval, save_state, load_state).
//!
//! Build: `cargo build --release`; run: `clef run config.toml --plugin-dir target/release`
//! with `[[strategy]] name = "{name}"` (and `hparams = {{ lambda = 0.1 }}`) in the config.

use clef_sdk::tracing::info;
use clef_sdk::{{Ctx, HParam, Result, Strategy, TaskInfo}};
use serde::Deserialize;

/// The validated `hparams` table: every key of the schema is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {{
    lambda: f64,
}}

/// The strategy's state.
pub struct {ty} {{
    lambda: f32,
    /// Parameter values at the start of the current task.
    anchor: Vec<Vec<f32>>,
}}

impl Strategy for {ty} {{
    const NAME: &'static str = "{name}";
    const DESCRIPTION: &'static str = "L2 pull towards the weights at the start of each task";
    type Config = Config;

    fn hparams() -> Vec<HParam> {{
        vec![HParam::float("lambda", 0.0, 0.0, 1e4, "strength of the pull").log_scale()]
    }}

    fn new(config: Config) -> Result<Self> {{
        Ok(Self {{
            lambda: config.lambda as f32,
            anchor: Vec::new(),
        }})
    }}

    fn on_task_start(&mut self, ctx: &mut Ctx<'_>, task: &TaskInfo) -> Result<()> {{
        info!(task = task.task, "anchoring the weights");
        self.anchor = (0..ctx.param_count()?)
            .map(|i| ctx.values_ref(i).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        Ok(())
    }}

    fn after_backward(&mut self, ctx: &mut Ctx<'_>, _loss: f32) -> Result<()> {{
        if self.lambda == 0.0 {{
            return Ok(());
        }}
        for (i, anchor) in self.anchor.iter().enumerate() {{
            let (w, g) = ctx.values_and_grads(i)?;
            for ((g, w), a) in g.iter_mut().zip(w).zip(anchor) {{
                *g += self.lambda * (w - a);
            }}
        }}
        Ok(())
    }}
}}

clef_sdk::export_plugin!({ty});

#[cfg(test)]
mod tests {{
    use clef_sdk::testing::{{MockHost, MockPlugin}};

    #[test]
    fn schema_is_valid_and_defaults_deserialise() {{
        clef_sdk::validate::<super::{ty}>().unwrap();
    }}

    #[test]
    fn pulls_gradients_towards_the_task_start_weights() {{
        // A linear model with 3 inputs and 2 outputs, 2 tasks.
        let mut host = MockHost::new(3, 2, 2);
        let mut plugin = MockPlugin::create::<super::{ty}>("lambda = 0.5").unwrap();
        plugin.on_task_start(&mut host).unwrap();
        let start = host.state().params[0].values.clone();
        // Move the weights, then check grad = 0.5 * (w - w_start).
        for v in &mut host.state_mut().params[0].values {{
            *v += 1.0;
        }}
        plugin.after_backward(&mut host, 0.0).unwrap();
        let p = &host.state().params[0];
        for ((g, w), s) in p.grads.iter().zip(&p.values).zip(&start) {{
            assert!((g - 0.5 * (w - s)).abs() < 1e-6);
        }}
    }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("l2-init"), "L2Init");
        assert_eq!(type_name("my_strategy"), "MyStrategy");
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
