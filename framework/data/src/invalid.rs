//! The error of a check on a config value, before its line in the file is known.

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
