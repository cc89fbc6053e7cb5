//! Lambda entry point of `apply-scope`: wires the context once and serves invocations.

#![recursion_limit = "256"]

use filetrail_runtime::settings::process_env;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    filetrail_runtime::logging::init_lambda();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ctx = filetrail_apply_scope::Context::new(&sdk, &process_env())?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        filetrail_apply_scope::handle(ctx, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
