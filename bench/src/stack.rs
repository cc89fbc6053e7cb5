//! The local stack as the benchmarks use it: the simulator's tenant registered as a cloud
//! connection, the functions' environment and state table, and queue depths, on moto. Errors
//! name the step that failed.

use std::collections::HashMap;

use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::QueueAttributeName;
use filetrail_aws::provision::Provisioned;
use filetrail_aws::secrets::{AppSecret, Secret, SecretsStore};
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::template::Template;
use filetrail_cli::connection::{self, NewConnection};
use filetrail_cli::pipeline::DISCOVER_FUNCTION;
use filetrail_core::model::{ConnectionKind, Endpoints};
use filetrail_core::ports::ConnectionStore as _;

use crate::BenchError;
use crate::sim_process::SimReady;

fn failed(step: impl Into<String>, detail: impl std::fmt::Display) -> BenchError {
    BenchError::Stack {
        step: step.into(),
        detail: detail.to_string(),
    }
}

/// The environment `function` (a template logical id) gets on this stack.
pub fn env_of(
    template: &Template,
    provisioned: &Provisioned,
    function: &str,
) -> Result<HashMap<String, String>, BenchError> {
    let step = format!("resolving the environment of {function}");
    let spec = template
        .function(function)
        .ok_or_else(|| failed(&step, "template.yaml has no such function"))?;
    provisioned.resolve_env(spec).map_err(|e| failed(step, e))
}

/// The state table the functions use, through the production adapter.
pub fn state_store(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
) -> Result<DynamoStateStore, BenchError> {
    let env = env_of(template, provisioned, DISCOVER_FUNCTION)?;
    let table = env.get("FILETRAIL_STATE_TABLE").ok_or_else(|| {
        failed(
            "finding the state table",
            "DiscoverFunction has no FILETRAIL_STATE_TABLE",
        )
    })?;
    Ok(DynamoStateStore::new(aws_sdk_dynamodb::Client::new(sdk), table.clone()))
}

/// The simulator's tenant as the cloud connection `id` (custom endpoints, default drive cap),
/// as `filetrail connection add` would describe it.
pub fn sim_connection(sim: &SimReady, id: &str) -> NewConnection {
    NewConnection {
        id: id.to_owned(),
        kind: ConnectionKind::Cloud,
        tenant_id: sim.tenant_id.clone(),
        client_id: sim.client_id.clone(),
        cloud: "custom".to_owned(),
        endpoints: Some(Endpoints {
            login: sim.login_url(),
            graph: sim.graph_url(),
        }),
        trusted_domains: vec![],
        drive_cap: connection::DEFAULT_DRIVE_CAP,
    }
}

/// Registers the simulator's tenant as the cloud connection `id`, its secret in Secrets Manager,
/// as `filetrail connection add` does. Fails if a connection of that id or tenant exists.
pub async fn register_connection(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
    sim: &SimReady,
    id: &str,
) -> Result<(), BenchError> {
    let env = env_of(template, provisioned, DISCOVER_FUNCTION)?;
    let prefix = env
        .get("FILETRAIL_SECRET_PREFIX")
        .cloned()
        .unwrap_or_else(|| "filetrail/".to_owned());
    let new = sim_connection(sim, id);
    let state = state_store(sdk, template, provisioned)?;
    connection::check_unique(&state, &new)
        .await
        .map_err(|e| failed("registering the connection", e))?;
    let secrets = SecretsStore::new(aws_sdk_secretsmanager::Client::new(sdk), prefix);
    let secret_id = secrets
        .put_app_secret(
            id,
            &AppSecret {
                client_secret: Secret::new(sim.client_secret.clone()),
            },
        )
        .await
        .map_err(|e| failed("storing the connection's secret", e))?;
    state
        .put_connection(&connection::record(&new, secret_id))
        .await
        .map_err(|e| failed("storing the connection", e))
}

/// Messages on a queue (`ApproximateNumberOfMessages`, exact on moto).
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64, BenchError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(|e| failed(format!("reading the depth of {queue_url}"), DisplayErrorContext(e)))?;
    Ok(attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0))
}

/// Messages left on every dead-letter queue of the template.
pub async fn dead_letters(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
) -> Result<u64, BenchError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let mut total = 0;
    for id in template.queues.keys().filter(|id| id.contains("DeadLetter")) {
        let url = provisioned
            .queue_url(id)
            .ok_or_else(|| failed(format!("finding queue {id}"), "not provisioned"))?;
        total += queue_depth(&sqs, url).await?;
    }
    Ok(total)
}
