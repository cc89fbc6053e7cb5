//! Structured logs: JSON lines in Lambda (CloudWatch), compact text on a terminal.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber a Lambda function logs with. `RUST_LOG` sets the filter
/// (default `info`). Calling it twice is harmless.
pub fn init_lambda() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .try_init();
}

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
