//! The `hash-file` function: one file version's MD5 and SHA-256.
//!
//! Trigger (template.yaml): the hash queue, which ingest-activity fills for content events and
//! for events on files never hashed. [`hash_file`] streams the file (Graph `/content`, its 302
//! followed without our token, dropped connections resumed with `Range`, expired URLs
//! refreshed) through both digests in one pass, with bounded memory and nothing on disk, and
//! records them on the inventory and on the events of that version. A version already hashed is
//! not downloaded again; a file too large for one invocation continues in the next from the
//! hasher's checkpoint; a file deleted first is recorded as such. Events given an outcome after
//! their hour was exported mark that export window, which the export function writes again.
//!
//! Hashing at MD5's full speed needs two vCPUs (MD5 and SHA-256 each on a thread of their own;
//! BENCHMARKS.md): the template gives the function the memory that buys them.

use std::collections::HashMap;
use std::time::Instant;

use filetrail_aws::config::AwsResources;
use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::export_store::DynamoExportCheckpoints;
use filetrail_aws::inventory::DynamoInventoryStore;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::digest::HasherTuning;
use filetrail_core::hashing::{HashFileOutcome, HashPorts, hash_file};
use filetrail_core::jobs::HashJob;
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
    pub hash_queue: SqsQueue,
    /// Exported windows whose events got digests since (the export writes them again).
    pub export_marks: DynamoExportCheckpoints,
    pub clients: ConnectionClients,
}

#[async_trait::async_trait]
impl Function for Context {
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let settings = FunctionSettings::from_env_map(env)?;
        let resources = AwsResources::from_env_map(env)?;
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        Ok(Self {
            state: DynamoStateStore::new(dynamo.clone(), resources.require_state_table()?),
            export_marks: DynamoExportCheckpoints::new(dynamo.clone(), resources.require_state_table()?),
            events: DynamoEventStore::new(dynamo.clone(), resources.require_events_table()?),
            inventory: DynamoInventoryStore::new(dynamo, resources.require_inventory_table()?),
            hash_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), resources.require_hash_queue_url()?),
            clients: ConnectionClients::for_function(sdk, &resources, &settings)?,
            settings,
        })
    }

    /// Handles an SQS batch (`{"Records": …}`) of hash jobs; answers the partial batch response.
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        handle_jobs(
            payload,
            |job: HashJob| async move { run_job(self, &job, deadline).await },
        )
        .await
    }
}

async fn run_job(ctx: &Context, job: &HashJob, deadline: Instant) -> Result<(), RecordError> {
    let stored = ctx.state.connection(&job.connection).await?;
    let Some(connection) = accepting(stored, &job.connection, "hash job") else {
        return Ok(());
    };
    let graph = ctx.clients.graph(&connection).await?;
    let ports = HashPorts {
        content: &*graph,
        inventory: &ctx.inventory,
        events: &ctx.events,
        queue: &ctx.hash_queue,
        exports: &ctx.export_marks,
        leases: &ctx.state,
    };
    let budget = ctx.settings.budget(deadline);
    match hash_file(
        &ports,
        &connection,
        job,
        HasherTuning::default(),
        &budget,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(HashFileOutcome::Skipped { reason }) => {
            info!(drive = job.drive_id, item = job.item_id, reason, "hash job skipped");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            if e.is_terminal() {
                ctx.clients.forget(&job.connection).await;
            }
            Err(e.into())
        }
    }
}
