//! The functions of template.yaml, as the local runner invokes them: the same handler code the
//! Lambdas run, each built with the environment AWS would give it (resolved from the template
//! against the provisioned resources).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use filetrail_aws::provision::Provisioned;
use filetrail_aws::template::Template;
use serde_json::Value;

use crate::local::runner::LocalFunction;

/// Logical id of the discover function in template.yaml.
pub const DISCOVER_FUNCTION: &str = "DiscoverFunction";
/// Logical id of the index-drive function in template.yaml.
pub const INDEX_DRIVE_FUNCTION: &str = "IndexDriveFunction";

struct Discover(filetrail_discover::Context);

#[async_trait::async_trait]
impl LocalFunction for Discover {
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        filetrail_discover::handle(&self.0, payload, deadline).await
    }
}

struct IndexDrive(filetrail_index_drive::Context);

#[async_trait::async_trait]
impl LocalFunction for IndexDrive {
    async fn invoke(&self, payload: Value, deadline: Instant) -> anyhow::Result<Value> {
        filetrail_index_drive::handle(&self.0, payload, deadline).await
    }
}

/// Every template function filetrail implements, keyed by logical id, each wired with its
/// template environment plus `overrides` (e.g. `FILETRAIL_MAX_PAGES_PER_INVOCATION` to force
/// continuations). Fails if a function's environment does not resolve or is incomplete.
pub fn local_functions(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
    overrides: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, Arc<dyn LocalFunction>>> {
    let env_of = |id: &str| -> anyhow::Result<HashMap<String, String>> {
        let spec = template
            .function(id)
            .with_context(|| format!("template.yaml has no function {id}"))?;
        let mut env = provisioned
            .resolve_env(spec)
            .with_context(|| format!("resolving the environment of {id}"))?;
        env.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(env)
    };
    let mut functions: HashMap<String, Arc<dyn LocalFunction>> = HashMap::new();
    functions.insert(
        DISCOVER_FUNCTION.to_owned(),
        Arc::new(Discover(filetrail_discover::Context::new(
            sdk,
            &env_of(DISCOVER_FUNCTION)?,
        )?)),
    );
    functions.insert(
        INDEX_DRIVE_FUNCTION.to_owned(),
        Arc::new(IndexDrive(filetrail_index_drive::Context::new(
            sdk,
            &env_of(INDEX_DRIVE_FUNCTION)?,
        )?)),
    );
    Ok(functions)
}
