//! The `discover` function: finds the OneDrive of every user of a connection, records drives and
//! enqueues new ones for indexing.
//!
//! Triggers (template.yaml): the discovery schedule, whose constant input `{"type":"discover_all"}`
//! fans out one message per active cloud connection onto the discover queue; and the discover
//! queue, whose messages run (or continue) one connection's discovery run. A run that needs more
//! than one invocation checkpoints and enqueues its own continuation.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use filetrail_aws::config::AwsResources;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, ParkedWork, discover};
use filetrail_core::jobs::DiscoverJob;
use filetrail_core::model::ConnectionKind;
use filetrail_core::ports::{ConnectionStore, DiscoverQueue};
use filetrail_runtime::sqs::{RecordError, handle_jobs};
use filetrail_runtime::{ConnectionClients, Function, FunctionSettings, accepting};
use serde_json::Value;
use tracing::{info, warn};

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub settings: FunctionSettings,
    pub state: DynamoStateStore,
    pub discover_queue: SqsQueue,
    pub index_queue: SqsQueue,
    /// Parked audit blobs go back to the activity queue when a run finishes.
    pub activity_queue: SqsQueue,
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
            state: DynamoStateStore::new(dynamo, resources.require_state_table()?),
            discover_queue: SqsQueue::new(sqs.clone(), resources.require_discover_queue_url()?),
            index_queue: SqsQueue::new(sqs.clone(), resources.require_index_queue_url()?),
            activity_queue: SqsQueue::new(sqs, resources.require_activity_queue_url()?),
            clients: ConnectionClients::for_function(sdk, &resources, &settings)?,
            settings,
        })
    }

    /// Handles an SQS batch (`{"Records": …}`), answering the partial batch response, or the
    /// schedule's constant input, answering `null`.
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        if payload.get("Records").is_some() {
            return handle_jobs(payload, |job: DiscoverJob| run_job(self, job, deadline)).await;
        }
        let job: DiscoverJob = serde_json::from_value(payload).context("reading the scheduled input")?;
        run_job(self, job, deadline).await.map_err(|e| anyhow::anyhow!(e))?;
        Ok(Value::Null)
    }
}

async fn run_job(ctx: &Context, job: DiscoverJob, deadline: Instant) -> Result<(), RecordError> {
    match job {
        DiscoverJob::DiscoverAll => fan_out(ctx).await,
        DiscoverJob::Discover { connection, reason } => discover_one(ctx, &connection, &reason, deadline).await,
    }
}

/// Enqueues one discovery message per active cloud connection.
async fn fan_out(ctx: &Context) -> Result<(), RecordError> {
    let connections = ctx.state.connections().await?;
    let jobs: Vec<DiscoverJob> = connections
        .into_iter()
        .filter(|c| c.kind == ConnectionKind::Cloud && c.accepts_work())
        .map(|c| DiscoverJob::Discover {
            connection: c.id,
            reason: "schedule".to_owned(),
        })
        .collect();
    info!(connections = jobs.len(), "scheduled discovery");
    Ok(ctx.discover_queue.enqueue_discover(&jobs).await?)
}

async fn discover_one(ctx: &Context, connection_id: &str, reason: &str, deadline: Instant) -> Result<(), RecordError> {
    let stored = ctx.state.connection(connection_id).await?;
    let Some(connection) = accepting(stored, connection_id, "discovery") else {
        return Ok(());
    };
    let graph = match ctx.clients.graph(&connection).await {
        Ok(g) => g,
        Err(e) if e.is_terminal() => {
            let problem = filetrail_core::discover::connection_error_from(&e, chrono::Utc::now());
            ctx.state.set_connection_error(connection_id, Some(&problem)).await?;
            warn!(connection = connection_id, error = %e, "discovery stopped: connection problem recorded");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let ports = DiscoverPorts {
        state: &ctx.state,
        directory: &*graph,
        finder: &*graph,
        index_queue: &ctx.index_queue,
        parked: Some(ParkedWork {
            activity: &ctx.state,
            blob_queue: &ctx.activity_queue,
        }),
    };
    let budget = ctx.settings.budget(deadline);
    info!(connection = connection_id, reason, "discovery");
    match discover(&ports, connection_id, &budget, chrono::Utc::now, || {
        uuid::Uuid::new_v4().to_string()
    })
    .await
    {
        Ok(DiscoverOutcome::Continue { users_seen }) => {
            info!(
                connection = connection_id,
                users_seen, "discovery continues in a new invocation"
            );
            let next = DiscoverJob::Discover {
                connection: connection_id.to_owned(),
                reason: "continuation".to_owned(),
            };
            Ok(ctx.discover_queue.enqueue_discover(&[next]).await?)
        }
        Ok(DiscoverOutcome::Finished(_)) | Ok(DiscoverOutcome::Skipped { .. }) => Ok(()),
        Err(e) if e.is_terminal() => {
            // Recorded on the connection with its fix; the next scheduled run tries again.
            ctx.clients.forget(connection_id).await;
            warn!(connection = connection_id, error = %e, "discovery stopped on a connection problem");
            Ok(())
        }
        Err(e) => Err(RecordError::Retry(e.to_string())),
    }
}
