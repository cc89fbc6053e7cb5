//! Lambda entry point of `ingest-activity`: wires the context once and serves invocations.

// The handler futures nest deeply (SDK and Graph clients inside the Lambda service).
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    filetrail_runtime::serve::<filetrail_ingest_activity::Context>().await
}
