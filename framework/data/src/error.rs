//! The error type of the data loaders.

use std::fmt;

/// Where in a file a bad value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Zero-based sample index (binary formats such as IDX).
    Sample(usize),
    /// One-based line number (text formats such as CSV).
    Line(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sample(i) => write!(f, "sample {i}"),
            Location::Line(l) => write!(f, "line {l}"),
        }
    }
}

/// A data set could not be loaded or split.
///
/// Every variant names the file (a path, or the name of an embedded data set) and what was wrong,
/// and displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file exists but could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The contents are malformed (bad magic number, truncation, bad field, size mismatch, ...).
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What was wrong, with expected vs found values and line numbers where known.
        message: String,
    },
    /// A label is negative or not below the number of classes.
    #[error("{path}: label {label} at {location} is out of range (expected 0..{num_classes})")]
    LabelOutOfRange {
        /// The file.
        path: String,
        /// The sample or line holding the label.
        location: Location,
        /// The offending label.
        label: i64,
        /// The number of classes the caller expects.
        num_classes: usize,
    },
    /// A pixel value lies outside `[0, max]` (or is not finite).
    #[error("{path}: pixel value {value} at {location}, column {column} is outside [0, {max}]")]
    PixelOutOfRange {
        /// The file.
        path: String,
        /// The line (or sample) holding the pixel.
        location: Location,
        /// One-based column.
        column: usize,
        /// The offending value.
        value: f32,
        /// The largest allowed value.
        max: f32,
    },
    /// The file holds no samples.
    #[error("{path}: contains no samples")]
    Empty {
        /// The file.
        path: String,
    },
    /// A required file does not exist.
    #[error("{path} not found: {hint}")]
    MissingFile {
        /// The file that was looked for.
        path: String,
        /// How to obtain it.
        hint: String,
    },
    /// A data set cannot be standardised as requested (`data.normalize`).
    #[error("cannot normalise {name}: {message}")]
    Normalize {
        /// The data set.
        name: String,
        /// Why not.
        message: String,
    },
    /// A data set cannot be split as requested.
    #[error("cannot split {name}: {message}")]
    Split {
        /// The data set.
        name: String,
        /// Why not.
        message: String,
    },
}

impl DataError {
    /// Shorthand for [`DataError::Format`].
    pub(crate) fn format(path: &str, message: impl Into<String>) -> Self {
        DataError::Format {
            path: path.to_string(),
            message: message.into(),
        }
    }
}
