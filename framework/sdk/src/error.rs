//! The plugin error type: a message with a chain of causes, `anyhow`-style.

use std::fmt;

use clef_abi::{CLEF_INVALID_ARGUMENT, CLEF_NOT_ALLOWED, CLEF_UNSUPPORTED};

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a hook returns to the host.
///
/// It holds a chain of messages, outermost first (`"loading state: unexpected end of input"`).
/// The host receives the whole chain, joined with `": "`, as the hook's error message.
///
/// Build one with [`format_err!`](crate::format_err), [`bail!`](crate::bail),
/// [`ensure!`](crate::ensure) or [`Error::msg`]; any [`std::error::Error`] converts with `?`
/// (its `source()` chain is kept); add context with [`Context`].
///
/// `Error` deliberately does not implement [`std::error::Error`] (so that the blanket `From`
/// conversion is possible, as in `anyhow`).
pub struct Error {
    /// Messages, outermost context first.
    chain: Vec<String>,
    /// Set when the error comes from a host service's status code.
    host_status: Option<HostStatus>,
}

/// Why a host service refused a call (from its `CLEF_*` status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// `CLEF_INVALID_ARGUMENT`: a bad index, size or null pointer.
    InvalidArgument,
    /// `CLEF_UNSUPPORTED`: the service is not available with this host or backend.
    Unsupported,
    /// `CLEF_NOT_ALLOWED`: the service may not be called in the current hook.
    NotAllowed,
    /// Any other non-zero status.
    Other(i32),
}

impl HostStatus {
    /// Classifies a non-zero status code.
    pub fn from_code(code: i32) -> Self {
        match code {
            CLEF_INVALID_ARGUMENT => Self::InvalidArgument,
            CLEF_UNSUPPORTED => Self::Unsupported,
            CLEF_NOT_ALLOWED => Self::NotAllowed,
            other => Self::Other(other),
        }
    }

    /// The status code.
    pub fn code(self) -> i32 {
        match self {
            Self::InvalidArgument => CLEF_INVALID_ARGUMENT,
            Self::Unsupported => CLEF_UNSUPPORTED,
            Self::NotAllowed => CLEF_NOT_ALLOWED,
            Self::Other(code) => code,
        }
    }

    /// A short explanation, e.g. `"not allowed in this hook"`.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid argument (bad index, size or null pointer)",
            Self::Unsupported => "not supported by this host or backend",
            Self::NotAllowed => "not allowed in this hook",
            Self::Other(_) => "unknown status",
        }
    }
}

impl Error {
    /// An error with the given message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            chain: vec![message.to_string()],
            host_status: None,
        }
    }

    /// The error a host service's non-zero status maps to, e.g. ``host service `task_samples`
    /// refused: not allowed in this hook (status -5)``.
    pub fn host(service: &str, code: i32) -> Self {
        let status = HostStatus::from_code(code);
        Self {
            chain: vec![format!(
                "host service `{service}` refused: {} (status {code})",
                status.meaning()
            )],
            host_status: Some(status),
        }
    }

    /// Wraps the error in an outer message: `"{context}: {self}"` in the chain.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.chain.insert(0, context.to_string());
        self
    }

    /// The messages, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &str> {
        self.chain.iter().map(String::as_str)
    }

    /// The innermost message.
    pub fn root_cause(&self) -> &str {
        self.chain.last().map(String::as_str).unwrap_or("")
    }

    /// If the error came from a host service's status code: which one. Lets a strategy fall
    /// back when, e.g., `ntk_gram` is [`HostStatus::Unsupported`].
    pub fn host_status(&self) -> Option<HostStatus> {
        self.host_status
    }
}

impl fmt::Display for Error {
    /// `{}` prints the outermost message; `{:#}` prints the whole chain joined with `": "`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(&self.chain.join(": "))
        } else {
            f.write_str(self.chain.first().map(String::as_str).unwrap_or(""))
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut messages = self.chain.iter();
        if let Some(first) = messages.next() {
            f.write_str(first)?;
        }
        let causes: Vec<&String> = messages.collect();
        if !causes.is_empty() {
            f.write_str("\n\nCaused by:")?;
            for (i, cause) in causes.iter().enumerate() {
                write!(f, "\n    {i}: {cause}")?;
            }
        }
        Ok(())
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut chain = vec![error.to_string()];
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        Self {
            chain,
            host_status: None,
        }
    }
}

/// Adds context to errors, like `anyhow::Context`.
///
/// ```
/// use clef_sdk::{Context, Result};
/// fn parse(bytes: &[u8]) -> Result<u32> {
///     let arr: [u8; 4] = bytes.try_into().context("state must be 4 bytes")?;
///     Ok(u32::from_le_bytes(arr))
/// }
/// assert_eq!(
///     format!("{:#}", parse(&[1, 2]).unwrap_err()),
///     "state must be 4 bytes: could not convert slice to array"
/// );
/// ```
pub trait Context<T> {
    /// Wraps the error (or `None`) in `context`.
    fn context<C: fmt::Display>(self, context: C) -> Result<T>;
    /// Wraps the error (or `None`) in the message `f()` computes, only on failure.
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::msg(f()))
    }
}

/// Builds an [`Error`] from a format string (or any `Display` value).
///
/// ```
/// let e = clef_sdk::format_err!("lambda must be positive, got {}", -1.0);
/// assert_eq!(e.to_string(), "lambda must be positive, got -1");
/// ```
#[macro_export]
macro_rules! format_err {
    ($msg:literal $(,)?) => {
        $crate::Error::msg(::std::format!($msg))
    };
    ($fmt:literal, $($arg:tt)+) => {
        $crate::Error::msg(::std::format!($fmt, $($arg)+))
    };
    ($err:expr $(,)?) => {
        $crate::Error::msg($err)
    };
}

/// Returns early with an [`Error`] built like [`format_err!`](crate::format_err).
///
/// ```
/// fn check(rows: usize) -> clef_sdk::Result<()> {
///     if rows == 0 {
///         clef_sdk::bail!("empty batch");
///     }
///     Ok(())
/// }
/// assert_eq!(check(0).unwrap_err().to_string(), "empty batch");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::format_err!($($arg)+))
    };
}

/// Returns early with an [`Error`] unless the condition holds. Without a message, the error
/// names the condition.
///
/// ```
/// fn check(n: usize) -> clef_sdk::Result<()> {
///     clef_sdk::ensure!(n % 2 == 0, "n must be even, got {n}");
///     clef_sdk::ensure!(n < 100);
///     Ok(())
/// }
/// assert_eq!(check(3).unwrap_err().to_string(), "n must be even, got 3");
/// assert_eq!(check(200).unwrap_err().to_string(), "condition failed: `n < 100`");
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr $(,)?) => {
        if !$cond {
            $crate::bail!(::core::concat!("condition failed: `", ::core::stringify!($cond), "`"));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::bail!($($arg)+);
        }
    };
}
