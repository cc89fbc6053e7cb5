//! The `ingest-activity` function: one audit content blob becomes file events.
//!
//! Trigger (template.yaml): the activity queue, which poll-activity fills with one message per
//! content blob. [`ingest_blob`] fetches the blob, keeps the OneDrive records of monitored drives,
//! resolves each file's item, writes each event once (keyed by the record `Id`), keeps records it
//! cannot read in the quarantine with their reason, and asks hash-file and index-drive for what
//! the events changed. A redelivered message writes nothing twice.

use std::collections::HashMap;
use std::time::Instant;

use filetrail_aws::config::AwsResources;
use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::export_store::DynamoExportCheckpoints;
use filetrail_aws::inventory::DynamoInventoryStore;
use filetrail_aws::objects::{BucketObjects, s3_client};
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::activity::ingest::{IngestOutcome, IngestPorts, ingest_blob, park_unread};
use filetrail_core::jobs::BlobJob;
use filetrail_core::model::ConnectionState;
use filetrail_core::ports::ConnectionStore;
use filetrail_runtime::sqs::{RecordError, handle_jobs};
use filetrail_runtime::{ConnectionClients, Function, FunctionSettings, accepting};
use serde_json::Value;
use tracing::info;

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub settings: FunctionSettings,
    pub state: DynamoStateStore,
    pub events: DynamoEventStore,
    pub inventory: DynamoInventoryStore,
    pub quarantine: BucketObjects,
    pub hash_queue: SqsQueue,
    pub index_queue: SqsQueue,
    pub export_marks: DynamoExportCheckpoints,
    pub clients: ConnectionClients,
}

#[async_trait::async_trait]
impl Function for Context {
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let settings = FunctionSettings::from_env_map(env)?;
        let resources = AwsResources::from_env_map(env)?;
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Ok(Self {
            state: DynamoStateStore::new(dynamo.clone(), resources.require_state_table()?),
            export_marks: DynamoExportCheckpoints::new(dynamo.clone(), resources.require_state_table()?),
            events: DynamoEventStore::new(dynamo.clone(), resources.require_events_table()?),
            inventory: DynamoInventoryStore::new(dynamo, resources.require_inventory_table()?),
            quarantine: BucketObjects::new(s3_client(sdk), resources.require_bucket()?),
            hash_queue: SqsQueue::new(sqs.clone(), resources.require_hash_queue_url()?),
            index_queue: SqsQueue::new(sqs, resources.require_index_queue_url()?),
            clients: ConnectionClients::for_function(sdk, &resources, &settings)?,
            settings,
        })
    }

    /// Handles an SQS batch (`{"Records": …}`) of audit blobs; answers the partial batch response.
    async fn invoke(&self, payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        handle_jobs(payload, |job: BlobJob| async move { run_job(self, &job).await }).await
    }
}

async fn run_job(ctx: &Context, job: &BlobJob) -> Result<(), RecordError> {
    let stored = ctx.state.connection(&job.connection).await?;
    if stored
        .as_ref()
        .is_some_and(|c| c.state == ConnectionState::Deauthorized)
    {
        // Its credentials cannot fetch the blob; the poll never lists it again: keep it.
        return Ok(park_unread(&ctx.state, job, chrono::Utc::now()).await?);
    }
    let Some(connection) = accepting(stored, &job.connection, "audit blob") else {
        return Ok(());
    };
    let feed = ctx.clients.activity(&connection).await?;
    let graph = ctx.clients.graph(&connection).await?;
    let ports = IngestPorts {
        scopes: &ctx.state,
        activity: &ctx.state,
        feed: &*feed,
        resolver: &*graph,
        identities: &ctx.inventory,
        events: &ctx.events,
        inventory: &ctx.inventory,
        quarantine: &ctx.quarantine,
        hash_queue: &ctx.hash_queue,
        index_queue: &ctx.index_queue,
        exports: &ctx.export_marks,
        sharing: Some((&*graph, &ctx.inventory)),
    };
    match ingest_blob(&ports, &connection, job, chrono::Utc::now()).await {
        Ok(IngestOutcome::Ingested(_) | IngestOutcome::Expired | IngestOutcome::Parked) => Ok(()),
        Ok(IngestOutcome::Skipped { reason }) => {
            info!(
                connection = job.connection,
                content_id = job.blob.content_id,
                reason,
                "blob skipped"
            );
            Ok(())
        }
        Err(e) => {
            if e.is_terminal() {
                // Credentials or permissions: poll-activity shows the problem on the connection;
                // the message waits in the queue, then the dead-letter queue, to be redriven.
                ctx.clients.forget(&job.connection).await;
            }
            Err(e.into())
        }
    }
}
