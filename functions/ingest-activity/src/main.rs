//! Lambda entry point of `ingest-activity`: wires the context once and serves invocations.

// The handler futures nest deeply (SDK and Graph clients inside the Lambda service).
#![recursion_limit = "256"]

use filetrail_runtime::settings::process_env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    filetrail_runtime::logging::init_lambda();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ctx = filetrail_ingest_activity::Context::new(&sdk, &process_env())?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        filetrail_ingest_activity::handle(ctx, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
