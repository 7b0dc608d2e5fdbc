//! Run configuration: the TOML schema, loading, and validation with errors that name the key
//! and its line.
//!
//! Every table denies unknown keys. After deserialisation, [`Config::validate`] checks ranges and
//! cross-field rules; its errors carry the dotted key path, which `locate` turns into a line
//! number of the source file.

mod locate;
mod protocol;
mod schema;
mod validate;

pub use locate::line_of;
pub use protocol::*;
pub use schema::*;
pub use validate::validate_data_table;

/// The tables owned by the crates that read them, composed by [`Config`].
pub use clef_data::spec::{
    ClassOrder, ClassOrderName, DataConfig, DatasetKind, ScenarioConfig, ScenarioKind, Setting,
};
pub use clef_data::Invalid;
pub use clef_engine::spec::{
    Backbone, Budget, DiagnosticsConfig, ModelConfig, NormKind, OptimizerKind, StrategyConfig,
    TrainConfig,
};

use std::path::{Path, PathBuf};

/// A configuration problem: where (file, key, line) and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {cause}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error (in the message, not a separate source, so it is printed once).
        cause: std::io::Error,
    },
    /// Malformed TOML, an unknown key or a wrong type (one line: line, column, what, and the
    /// offending source line).
    #[error("{path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line, column and the offending key.
        message: String,
    },
    /// A value out of range or inconsistent with another key.
    #[error("{}:{}: `{key}` {message}", path.display(), line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted key path, e.g. `train.lr` or `strategy[1].hparams.lambda`.
        key: String,
        /// 1-based line of the key in the file, if it could be located.
        line: Option<usize>,
        /// What was expected.
        message: String,
    },
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` is used in messages and for the default name.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
    if config.name.is_none() {
        config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    // Plugin and data locations are relative to the config file, so a config and the files
    // next to it work from any working directory.
    let base = path.parent().unwrap_or(Path::new(""));
    for dir in &mut config.plugin_dirs {
        *dir = base.join(&*dir);
    }
    if let Some(p) = &mut config.data.path {
        *p = base.join(&*p);
    }
    for s in &mut config.strategy {
        if let Some(p) = &mut s.path {
            *p = base.join(&*p);
        }
    }
    config
        .validate()
        .map_err(|inv| locate_error(text, path, inv))?;
    config.source = Some(ConfigSource {
        path: path.to_path_buf(),
        text: text.to_string(),
    });
    Ok(config)
}

impl Config {
    /// A check failure found after parsing (against the data or the plugins), located in the
    /// source file when the config was parsed from one.
    pub fn invalid(&self, inv: Invalid) -> ConfigError {
        match &self.source {
            Some(s) => locate_error(&s.text, &s.path, inv),
            None => ConfigError::Invalid {
                path: PathBuf::from(self.name()),
                key: inv.key,
                line: None,
                message: inv.message,
            },
        }
    }
}

/// A TOML syntax, unknown-key or type error as one line: file, line, column, the parser's
/// message and the offending source line, e.g.
/// ``small.toml: line 20, column 6: invalid type: string "fast", expected f64 (`lr = "fast"`)``.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let message = e
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let message = match e.span() {
        // A missing top-level key spans the whole document: no line to point at.
        Some(span)
            if span.start == 0
                && message.starts_with("missing field")
                && !text.trim_start().starts_with('[') =>
        {
            format!("{message} (top-level table)")
        }
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            if source.is_empty() {
                format!("line {line}, column {column}: {message}")
            } else {
                format!("line {line}, column {column}: {message} (`{source}`)")
            }
        }
        None => message,
    };
    ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    }
}

/// Turns a validation failure into a [`ConfigError`] located in `text`.
pub fn locate_error(text: &str, path: &Path, inv: Invalid) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line: line_of(text, &inv.key),
        key: inv.key,
        message: inv.message,
    }
}
