//! Errors raised by the backend.

use std::path::PathBuf;

/// A backend failure: a shape mismatch between caller and network, or a checkpoint problem.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Inputs, targets or cotangents whose size does not match the network.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    Shape {
        /// Which argument was wrong.
        what: &'static str,
        /// What the network expected.
        expected: String,
        /// What the caller passed.
        got: String,
    },
    /// An invalid network specification (zero width, no layers ...).
    #[error("invalid network spec: {0}")]
    Spec(String),
    /// A checkpoint file that cannot be read, written or does not match the network.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl BackendError {
    pub(crate) fn shape(what: &'static str, expected: impl ToString, got: impl ToString) -> Self {
        BackendError::Shape {
            what,
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }
}
