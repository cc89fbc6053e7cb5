//! The `poll-activity` function: the audit feed's poller.
//!
//! Trigger (template.yaml): an EventBridge schedule every 5 minutes with the input
//! `{"type":"poll_all"}` (or `{"type":"poll","connection":…}` on demand). For each active cloud
//! connection it makes sure the `Audit.SharePoint` subscription is started and enqueues every
//! content blob that became available since its checkpoint, once ([`poll_connection`]). A
//! connection whose audit log is off or whose app lacks `ActivityFeed.Read` shows that on its
//! status with the fix; the next poll that works clears it. One connection's failure never stops
//! the others.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use filetrail_aws::config::AwsResources;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::activity::poll::{PollOutcome, PollPorts, PollSettings, poll_connection};
use filetrail_core::jobs::PollJob;
use filetrail_core::model::{Connection, ConnectionKind};
use filetrail_core::ports::ConnectionStore;
use filetrail_runtime::{ConnectionClients, Function, FunctionSettings};
use serde_json::{Value, json};
use tracing::{info, warn};

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub settings: FunctionSettings,
    pub poll: PollSettings,
    pub state: DynamoStateStore,
    pub blob_queue: SqsQueue,
    pub clients: ConnectionClients,
}

#[async_trait::async_trait]
impl Function for Context {
    /// Builds the context from the function's environment (`env`) and a shared AWS config.
    /// Fails naming the missing or invalid variable.
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let settings = FunctionSettings::from_env_map(env)?;
        let resources = AwsResources::from_env_map(env)?;
        Ok(Self {
            poll: PollSettings::default(),
            state: DynamoStateStore::new(aws_sdk_dynamodb::Client::new(sdk), resources.require_state_table()?),
            blob_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), resources.require_activity_queue_url()?),
            clients: ConnectionClients::for_function(sdk, &resources, &settings)?,
            settings,
        })
    }

    /// Handles one schedule (or on-demand) invocation; returns what each connection's poll did.
    ///
    /// # Errors
    /// When the input is not a poll job or the connections cannot be read; one connection's failure
    /// is logged and reported in the result, not returned.
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        let ctx = self;
        let job: PollJob = serde_json::from_value(payload).context("reading the poll job")?;
        let connections: Vec<Connection> = match &job {
            PollJob::PollAll => ctx.state.connections().await?,
            PollJob::Poll { connection } => ctx.state.connection(connection).await?.into_iter().collect(),
        };
        let budget = ctx.settings.time_budget(deadline);
        let mut results = serde_json::Map::new();
        for connection in connections
            .iter()
            .filter(|c| c.kind == ConnectionKind::Cloud && c.accepts_work())
        {
            let outcome = poll_one(ctx, connection, &budget).await;
            let summary = match &outcome {
                Ok(o) => describe(o),
                Err(e) => {
                    warn!(connection = connection.id, error = %e, "poll failed; the next schedule retries");
                    json!({"error": e.to_string()})
                }
            };
            results.insert(connection.id.clone(), summary);
        }
        let failed = results.values().filter(|r| r.get("error").is_some()).count() as u64;
        filetrail_runtime::metrics::report_connection_failures("poll-activity", failed);
        info!(connections = results.len(), "activity poll done");
        Ok(serde_json::Value::Object(results))
    }
}

async fn poll_one(
    ctx: &Context,
    connection: &Connection,
    budget: &filetrail_core::budget::Deadline,
) -> Result<PollOutcome, filetrail_core::PortError> {
    let feed = ctx.clients.activity(connection).await?;
    let ports = PollPorts {
        connections: &ctx.state,
        activity: &ctx.state,
        feed: &*feed,
        queue: &ctx.blob_queue,
    };
    poll_connection(&ports, connection, &ctx.poll, budget, chrono::Utc::now()).await
}

fn describe(outcome: &PollOutcome) -> serde_json::Value {
    match outcome {
        PollOutcome::Caught { until, pages, enqueued } => {
            json!({"outcome": "caught_up", "until": until, "pages": pages, "enqueued": enqueued})
        }
        PollOutcome::OutOfTime { pages, enqueued } => {
            json!({"outcome": "out_of_time", "pages": pages, "enqueued": enqueued})
        }
        PollOutcome::Blocked(problem) => {
            json!({"outcome": "blocked", "code": problem.code, "message": problem.message, "fix": problem.fix})
        }
        PollOutcome::Deferred { pages, enqueued, error } => {
            json!({"outcome": "deferred", "pages": pages, "enqueued": enqueued, "error": error})
        }
        PollOutcome::Skipped => json!({"outcome": "skipped"}),
    }
}
