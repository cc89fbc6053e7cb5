//! Lambda entry point of `export`: wires the context once and serves invocations.

// The handler futures nest deeply (SDK clients inside the Lambda service).
#![recursion_limit = "256"]

use filetrail_runtime::settings::process_env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    filetrail_runtime::logging::init_lambda();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ctx = filetrail_export::Context::new(&sdk, &process_env())?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        let deadline = filetrail_runtime::lambda_deadline(event.context.deadline);
        filetrail_export::handle(ctx, event.payload, deadline)
            .await
            .map_err(Error::from)
    }))
    .await
}
