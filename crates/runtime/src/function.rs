//! One skeleton for every filetrail Lambda function: a [`Function`] is built once per container
//! from its environment and invoked with each event's payload and deadline; [`serve`] is the
//! whole `main` of a function, and the local runner invokes the same trait.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

use crate::settings::process_env;

/// A function of template.yaml.
#[async_trait::async_trait]
pub trait Function: Send + Sync + 'static {
    /// Builds the function's context from its environment (`env`, as template.yaml sets it)
    /// and a shared AWS config. Fails naming the missing or invalid variable.
    ///
    /// # Errors
    /// When a variable is missing or invalid, or a client cannot be built.
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self>
    where
        Self: Sized;

    /// Handles one event; the work stops in time for `deadline`.
    ///
    /// # Errors
    /// When the payload is not the event the function is triggered by, or the work failed as a
    /// whole (a queue-triggered function reports failed messages in its answer instead).
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value>;
}

/// Serves `F` in Lambda: logs as Lambda's logging controls say (`AWS_LAMBDA_LOG_FORMAT`,
/// `AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`), builds `F` once from the process environment, then
/// invokes it with each event until the container stops.
///
/// # Errors
/// When the function cannot be built (the error names the variable) or the runtime API fails.
pub async fn serve<F: Function>() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let function = F::build(&sdk, &process_env())?;
    let function = &function;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = instant_of(event.context.deadline());
        function.invoke(event.payload, deadline).await.map_err(Error::from)
    }))
    .await
}

/// The instant of a wall-clock deadline (now, if it has passed).
fn instant_of(deadline: SystemTime) -> Instant {
    let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_deadline_becomes_the_instant_as_far_ahead_and_a_past_one_now() {
        let ahead = instant_of(SystemTime::now() + Duration::from_secs(60));
        let left = ahead.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(55) && left <= Duration::from_secs(60),
            "{left:?}"
        );
        let past = instant_of(SystemTime::now() - Duration::from_secs(60));
        assert!(past <= Instant::now());
    }
}
