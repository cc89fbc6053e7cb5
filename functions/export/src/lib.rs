//! The `export` function: file events to S3 for Athena.
//!
//! Trigger (template.yaml): an EventBridge schedule every hour with the input
//! `{"type":"export_all"}` (or `{"type":"export","connection":…}` on demand). For every
//! connection it writes the events recorded in each settled insertion hour since its checkpoint
//! as gzip JSON Lines under `exports/events/dt=…/hour=…/`, and moves the checkpoint past each
//! hour once its objects are written ([`filetrail_core::export`] has the rules). Work left when
//! the time budget runs out waits for the next schedule. One connection's failure never stops
//! the others.
//!
//! Deauthorized connections are exported too: deauthorizing stops the work against Microsoft,
//! while the history recorded until then stays searchable, and the export is part of that
//! history (and needs no Microsoft call).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use filetrail_aws::config::AwsResources;
use filetrail_aws::export_store::{DynamoExportCheckpoints, DynamoInsertedEvents, S3ExportSink};
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::{BucketObjects, s3_client};
use filetrail_core::budget::Budget;
use filetrail_core::export::{
    ConnectionExport, ExportJob, ExportPorts, ExportSettings, ExportSink as _, export_connection,
};
use filetrail_core::model::Connection;
use filetrail_core::ports::ConnectionStore;
use filetrail_runtime::{Function, FunctionSettings};
use serde_json::{Value, json};
use tracing::{info, warn};

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub settings: FunctionSettings,
    pub export: ExportSettings,
    pub state: DynamoStateStore,
    pub checkpoints: DynamoExportCheckpoints,
    pub events: DynamoInsertedEvents,
    pub sink: S3ExportSink,
}

impl Context {
    pub fn ports(&self) -> ExportPorts<'_> {
        ExportPorts {
            events: &self.events,
            sink: &self.sink,
        }
    }
}

#[async_trait::async_trait]
impl Function for Context {
    /// Builds the context from the function's environment (`env`) and a shared AWS config.
    /// Fails naming the missing or invalid variable (the state and events tables and the
    /// bucket are required).
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let settings = FunctionSettings::from_env_map(env)?;
        let resources = AwsResources::from_env_map(env)?;
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let state_table = resources.require_state_table()?.to_owned();
        Ok(Self {
            settings,
            export: ExportSettings::default(),
            state: DynamoStateStore::new(dynamo.clone(), state_table.clone()),
            checkpoints: DynamoExportCheckpoints::new(dynamo.clone(), state_table),
            events: DynamoInsertedEvents::new(dynamo, resources.require_events_table()?),
            sink: S3ExportSink::new(BucketObjects::new(s3_client(sdk), resources.require_bucket()?)),
        })
    }

    /// Handles one schedule (or on-demand) invocation; returns what each connection's export did.
    ///
    /// # Errors
    /// When the input is not an export job or the connections cannot be read; one connection's
    /// failure is logged and reported in the result, not returned.
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        let ctx = self;
        let job: ExportJob = serde_json::from_value(payload).context("reading the export job")?;
        let connections: Vec<Connection> = match &job {
            ExportJob::ExportAll => ctx.state.connections().await?,
            ExportJob::Export { connection } => ctx.state.connection(connection).await?.into_iter().collect(),
        };
        let budget = ctx.settings.time_budget(deadline);
        let mut results = serde_json::Map::new();
        for connection in &connections {
            let outcome = export_one(ctx, connection, &budget).await;
            let summary = match &outcome {
                Ok(run) => describe(run),
                Err(e) => {
                    warn!(connection = connection.id, error = %e, "export failed; the next schedule retries from the checkpoint");
                    json!({"error": e.to_string()})
                }
            };
            results.insert(connection.id.clone(), summary);
        }
        let failed = results.values().filter(|r| r.get("error").is_some()).count() as u64;
        filetrail_runtime::metrics::report_connection_failures("export", failed);
        info!(connections = results.len(), location = %ctx.sink.location(), "export done");
        Ok(serde_json::Value::Object(results))
    }
}

async fn export_one(
    ctx: &Context,
    connection: &Connection,
    budget: &dyn Budget,
) -> Result<ConnectionExport, filetrail_core::PortError> {
    export_connection(
        &ctx.ports(),
        &ctx.checkpoints,
        connection,
        &ctx.export,
        budget,
        chrono::Utc::now(),
    )
    .await
}

fn describe(run: &ConnectionExport) -> serde_json::Value {
    json!({
        "outcome": if run.superseded { "superseded" } else if run.caught_up { "caught_up" } else { "out_of_time" },
        "windows": run.windows,
        "events": run.events,
        "objects": run.objects,
        "rewritten_windows": run.rewritten,
        "next_window": run.next_window,
    })
}
