//! Run configuration: the TOML schema, loading, and validation with errors that name the key
//! and its line.
//!
//! Every table denies unknown keys. After deserialisation, [`Config::validate`] checks ranges and
//! cross-field rules; its errors carry the dotted key path, which [`locate`] turns into a line
//! number of the source file.

mod locate;
mod protocol;
mod schema;

pub use locate::line_of;
pub use protocol::*;
pub use schema::*;

use std::path::{Path, PathBuf};

/// A configuration problem: where (file, key, line) and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed TOML, an unknown key or a wrong type (the message carries line and column).
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

/// A validation failure before its line is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// Dotted key path.
    pub key: String,
    /// What was expected.
    pub message: String,
}

impl Invalid {
    /// A new validation failure for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `path` is used in messages and for the default name.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e
            .to_string()
            .trim_end()
            .replace("TOML parse error at", "error at"),
    })?;
    if config.name.is_none() {
        config.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    // Plugin locations are relative to the config file, so a config and the plugins next to
    // it work from any working directory.
    let base = path.parent().unwrap_or(Path::new(""));
    for dir in &mut config.plugin_dirs {
        *dir = base.join(&*dir);
    }
    for s in &mut config.strategy {
        if let Some(p) = &mut s.path {
            *p = base.join(&*p);
        }
    }
    config
        .validate()
        .map_err(|inv| locate_error(text, path, inv))?;
    Ok(config)
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
