//! The one error type that crosses a port boundary, with the retry class every caller needs.

use std::time::Duration;

/// What the caller should do about a failed port call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryClass {
    /// Retrying will not help until a person acts (bad credentials, missing permission).
    Terminal,
    /// The service asked us to come back after this long (`Retry-After`).
    RetryAfter(Duration),
    /// A transient fault without guidance: back off and try again.
    Backoff,
}

/// A failure reported by an adapter behind a port.
///
/// `code` is the service's own error code (`invalid_client`, `resyncRequired`, `ThrottlingException`…)
/// so status pages and logs can name it; `fix` says what a person must do when the class is
/// [`RetryClass::Terminal`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}{}", fix.as_ref().map(|f| format!(" (fix: {f})")).unwrap_or_default())]
pub struct PortError {
    pub class: RetryClass,
    pub code: String,
    pub message: String,
    pub fix: Option<String>,
}

impl PortError {
    pub fn terminal(code: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            class: RetryClass::Terminal,
            code: code.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: RetryClass::Backoff,
            code: code.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn retry_after(code: impl Into<String>, message: impl Into<String>, after: Duration) -> Self {
        Self {
            class: RetryClass::RetryAfter(after),
            code: code.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.class == RetryClass::Terminal
    }
}
