//! Structured logs of the CLI: compact text on a terminal. (A Lambda function logs as
//! [`crate::serve`] sets up: JSON lines in CloudWatch.)

use tracing_subscriber::EnvFilter;

/// Installs a compact subscriber on stderr for the CLI (default filter `warn`, so progress bars
/// stay readable; `RUST_LOG=info` shows the pipeline's logs).
pub fn init_cli(default_filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)))
        .with_target(false)
        .compact()
        .try_init();
}
