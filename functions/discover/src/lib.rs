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
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use filetrail_aws::config::AwsResources;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, ParkedWork, discover};
use filetrail_core::jobs::DiscoverJob;
use filetrail_core::model::ConnectionKind;
use filetrail_core::ports::{DiscoverQueue, StateStore};
use filetrail_runtime::sqs::{RecordError, handle_batch, parse_body};
use filetrail_runtime::{ConnectionClients, FunctionSettings};
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

impl Context {
    /// Builds the context from the function's environment (`env`) and a shared AWS config.
    /// Fails naming the missing or invalid variable.
    pub fn new(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
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
}

/// Handles one invocation: an SQS batch (`{"Records": …}`) or the schedule's constant input.
/// Returns the partial batch response for SQS, `null` for the schedule.
pub async fn handle(ctx: &Context, payload: serde_json::Value, deadline: Instant) -> anyhow::Result<serde_json::Value> {
    if payload.get("Records").is_some() {
        let event: SqsEvent = serde_json::from_value(payload).context("reading the SQS event")?;
        let response: SqsBatchResponse = handle_batch(event, |message| async move {
            let job: DiscoverJob = parse_body(&message)?;
            run_job(ctx, job, deadline).await
        })
        .await;
        return Ok(serde_json::to_value(response)?);
    }
    let job: DiscoverJob = serde_json::from_value(payload).context("reading the scheduled input")?;
    run_job(ctx, job, deadline).await.map_err(|e| anyhow::anyhow!(e))?;
    Ok(serde_json::Value::Null)
}

async fn run_job(ctx: &Context, job: DiscoverJob, deadline: Instant) -> Result<(), RecordError> {
    match job {
        DiscoverJob::DiscoverAll => fan_out(ctx).await,
        DiscoverJob::Discover { connection, reason } => discover_one(ctx, &connection, &reason, deadline).await,
    }
}

/// Enqueues one discovery message per active cloud connection.
async fn fan_out(ctx: &Context) -> Result<(), RecordError> {
    let connections = ctx
        .state
        .connections()
        .await
        .map_err(|e| RecordError::Retry(e.to_string()))?;
    let jobs: Vec<DiscoverJob> = connections
        .into_iter()
        .filter(|c| c.kind == ConnectionKind::Cloud && c.accepts_work())
        .map(|c| DiscoverJob::Discover {
            connection: c.id,
            reason: "schedule".to_owned(),
        })
        .collect();
    info!(connections = jobs.len(), "scheduled discovery");
    ctx.discover_queue
        .enqueue_discover(&jobs)
        .await
        .map_err(|e| RecordError::Retry(e.to_string()))
}

async fn discover_one(ctx: &Context, connection_id: &str, reason: &str, deadline: Instant) -> Result<(), RecordError> {
    let Some(connection) = ctx
        .state
        .connection(connection_id)
        .await
        .map_err(|e| RecordError::Retry(e.to_string()))?
    else {
        warn!(
            connection = connection_id,
            "discovery for an unknown connection ignored"
        );
        return Ok(());
    };
    if let Some(why) = connection.why_no_work() {
        info!(connection = connection_id, reason, "discovery dropped: {why}");
        return Ok(());
    }
    let graph = match ctx.clients.graph(&connection).await {
        Ok(g) => g,
        Err(e) if e.is_terminal() => {
            let problem = filetrail_core::discover::connection_error_from(&e, chrono::Utc::now());
            ctx.state
                .set_connection_error(connection_id, Some(&problem))
                .await
                .map_err(|e| RecordError::Retry(e.to_string()))?;
            warn!(connection = connection_id, error = %e, "discovery stopped: connection problem recorded");
            return Ok(());
        }
        Err(e) => return Err(RecordError::Retry(e.to_string())),
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
            ctx.discover_queue
                .enqueue_discover(&[next])
                .await
                .map_err(|e| RecordError::Retry(e.to_string()))
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
