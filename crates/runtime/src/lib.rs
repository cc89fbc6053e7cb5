//! Wiring shared by the filetrail Lambda functions and the local runner.
//!
//! A function builds one [`FunctionSettings`] and its clients at cold start (from the process
//! environment in AWS, from the template-resolved variables in the local runner), keeps them in a
//! context struct, and borrows that context into every invocation.

pub mod connections;
pub mod logging;
pub mod metrics;
pub mod settings;
pub mod sqs;

pub use connections::ConnectionClients;
pub use settings::FunctionSettings;

/// Converts a Lambda context deadline (milliseconds since the Unix epoch) to an [`Instant`].
pub fn lambda_deadline(deadline_ms: u64) -> std::time::Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    std::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
