//! The `index-drive` function: walks one drive with Graph delta into the inventory.
//!
//! Trigger (template.yaml): the index queue. Each message names a connection and a drive; the
//! walk continues from the drive's checkpoint and, before the invocation's time runs out, saves
//! it and enqueues a continuation. A connection whose credentials are refused parks the drive's
//! work in DynamoDB (nothing is lost) and records the problem for `filetrail status`; discovery
//! re-enqueues parked drives once the connection works again.

use std::collections::HashMap;
use std::time::Instant;

use filetrail_aws::config::AwsResources;
use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::export_store::DynamoExportCheckpoints;
use filetrail_aws::inventory::DynamoInventoryStore;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::discover::connection_error_from;
use filetrail_core::index::{IndexOutcome, IndexPorts, index_drive};
use filetrail_core::jobs::IndexJob;
use filetrail_core::ports::{ConnectionStore, DriveStore, IndexQueue};
use filetrail_m365::is_connection_problem;
use filetrail_runtime::sqs::{RecordError, handle_jobs};
use filetrail_runtime::{ConnectionClients, Function, FunctionSettings, accepting};
use serde_json::Value;
use tracing::{info, warn};

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub settings: FunctionSettings,
    pub state: DynamoStateStore,
    pub inventory: DynamoInventoryStore,
    pub index_queue: SqsQueue,
    /// Events that waited for their item get it at the end of a round ([`resolve_pending`]).
    ///
    /// [`resolve_pending`]: filetrail_core::activity::resolve_pending
    pub events: DynamoEventStore,
    pub hash_queue: SqsQueue,
    /// Exported windows whose events got their item since (the export writes them again).
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
            index_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), resources.require_index_queue_url()?),
            hash_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), resources.require_hash_queue_url()?),
            clients: ConnectionClients::for_function(sdk, &resources, &settings)?,
            settings,
        })
    }

    /// Handles an SQS batch (`{"Records": …}`) of index jobs; answers the partial batch response.
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        handle_jobs(payload, |job: IndexJob| run_job(self, job, deadline)).await
    }
}

async fn run_job(ctx: &Context, job: IndexJob, deadline: Instant) -> Result<(), RecordError> {
    let IndexJob::IndexDrive {
        connection: connection_id,
        drive_id,
    } = &job;
    let stored = ctx.state.connection(connection_id).await?;
    let Some(connection) = accepting(stored, connection_id, "index job") else {
        return Ok(());
    };
    let graph = match ctx.clients.graph(&connection).await {
        Ok(g) => g,
        // Building a client fails terminally only on the connection's own settings or secret.
        Err(e) if e.is_terminal() => return park(ctx, connection_id, drive_id, &e).await,
        Err(e) => return Err(e.into()),
    };
    let ports = IndexPorts {
        drives: &ctx.state,
        inventory: &ctx.inventory,
        delta: &*graph,
        sharing: Some(filetrail_core::exposure::SharingPorts {
            reader: &*graph,
            store: &ctx.inventory,
            trusted: filetrail_core::audit::TrustedDomains::new(&connection.trusted_domains),
        }),
        pending: Some(filetrail_core::activity::ResolvePorts {
            identities: &ctx.inventory,
            events: &ctx.events,
            hash_queue: &ctx.hash_queue,
            exports: &ctx.export_marks,
        }),
    };
    let budget = ctx.settings.budget(deadline);
    match index_drive(&ports, connection_id, drive_id, &budget, chrono::Utc::now).await {
        Ok(IndexOutcome::Continue { pages }) => {
            info!(
                connection = connection_id,
                drive_id, pages, "indexing continues in a new invocation"
            );
            Ok(ctx.index_queue.enqueue_index(std::slice::from_ref(&job)).await?)
        }
        Ok(IndexOutcome::Completed { .. } | IndexOutcome::Skipped { .. } | IndexOutcome::Superseded) => Ok(()),
        Err(e) if e.port_error().is_terminal() && is_connection_problem(&e.port_error().code) => {
            park(ctx, connection_id, drive_id, e.port_error()).await
        }
        Err(e) if e.port_error().is_terminal() => {
            // This drive alone is broken (deleted, locked): keep its checkpoint, let others go on.
            let code = &e.port_error().code;
            ctx.state.set_drive_parked(connection_id, drive_id, Some(code)).await?;
            warn!(connection = connection_id, drive_id, code, error = %e, "drive cannot be indexed; parked");
            Ok(())
        }
        Err(e) => Err(RecordError::Retry(e.to_string())),
    }
}

/// Keeps a drive's work in DynamoDB when the connection itself is refused, and records why.
async fn park(
    ctx: &Context,
    connection_id: &str,
    drive_id: &str,
    error: &filetrail_core::PortError,
) -> Result<(), RecordError> {
    ctx.clients.forget(connection_id).await;
    ctx.state
        .set_drive_parked(connection_id, drive_id, Some(&error.code))
        .await?;
    let problem = connection_error_from(error, chrono::Utc::now());
    ctx.state.set_connection_error(connection_id, Some(&problem)).await?;
    warn!(
        connection = connection_id,
        drive_id,
        code = error.code,
        "connection refused; drive work parked until it is fixed"
    );
    Ok(())
}
