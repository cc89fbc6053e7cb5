//! The functions of template.yaml, as the local runner invokes them: the same handler code the
//! Lambdas run, each built with the environment AWS would give it (resolved from the template
//! against the provisioned resources).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use filetrail_aws::provision::Provisioned;
use filetrail_aws::template::Template;
use filetrail_runtime::Function;

use crate::local::runner::LocalFunction;

/// Logical id of the discover function in template.yaml.
pub const DISCOVER_FUNCTION: &str = "DiscoverFunction";
/// Logical id of the index-drive function in template.yaml.
pub const INDEX_DRIVE_FUNCTION: &str = "IndexDriveFunction";
/// Logical id of the apply-scope function in template.yaml.
pub const APPLY_SCOPE_FUNCTION: &str = "ApplyScopeFunction";
/// Logical id of the poll-activity function in template.yaml.
pub const POLL_ACTIVITY_FUNCTION: &str = "PollActivityFunction";
/// Logical id of the ingest-activity function in template.yaml.
pub const INGEST_ACTIVITY_FUNCTION: &str = "IngestActivityFunction";
/// Logical id of the hash-file function in template.yaml.
pub const HASH_FILE_FUNCTION: &str = "HashFileFunction";
/// Logical id of the export function in template.yaml.
pub const EXPORT_FUNCTION: &str = "ExportFunction";

/// The local functions and their contexts (whose adapters count the requests they make).
pub struct LocalPipeline {
    pub discover: Arc<filetrail_discover::Context>,
    pub index_drive: Arc<filetrail_index_drive::Context>,
    pub apply_scope: Arc<filetrail_apply_scope::Context>,
    pub poll_activity: Arc<filetrail_poll_activity::Context>,
    pub ingest_activity: Arc<filetrail_ingest_activity::Context>,
    pub hash_file: Arc<filetrail_hash_file::Context>,
    pub export: Arc<filetrail_export::Context>,
}

impl LocalPipeline {
    /// Builds every template function filetrail implements, each wired with its template
    /// environment plus `overrides` (e.g. `FILETRAIL_MAX_PAGES_PER_INVOCATION` to force
    /// continuations). Fails if a function's environment does not resolve or is incomplete.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        template: &Template,
        provisioned: &Provisioned,
        overrides: &HashMap<String, String>,
    ) -> anyhow::Result<Self> {
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
        Ok(Self {
            discover: Arc::new(filetrail_discover::Context::build(sdk, &env_of(DISCOVER_FUNCTION)?)?),
            index_drive: Arc::new(filetrail_index_drive::Context::build(
                sdk,
                &env_of(INDEX_DRIVE_FUNCTION)?,
            )?),
            apply_scope: Arc::new(filetrail_apply_scope::Context::build(
                sdk,
                &env_of(APPLY_SCOPE_FUNCTION)?,
            )?),
            poll_activity: Arc::new(filetrail_poll_activity::Context::build(
                sdk,
                &env_of(POLL_ACTIVITY_FUNCTION)?,
            )?),
            ingest_activity: Arc::new(filetrail_ingest_activity::Context::build(
                sdk,
                &env_of(INGEST_ACTIVITY_FUNCTION)?,
            )?),
            hash_file: Arc::new(filetrail_hash_file::Context::build(sdk, &env_of(HASH_FILE_FUNCTION)?)?),
            export: Arc::new(filetrail_export::Context::build(sdk, &env_of(EXPORT_FUNCTION)?)?),
        })
    }

    /// The functions keyed by template logical id, for [`crate::local::Runner::new`].
    pub fn functions(&self) -> HashMap<String, Arc<dyn LocalFunction>> {
        let functions: [(&str, Arc<dyn LocalFunction>); 7] = [
            (DISCOVER_FUNCTION, self.discover.clone()),
            (INDEX_DRIVE_FUNCTION, self.index_drive.clone()),
            (APPLY_SCOPE_FUNCTION, self.apply_scope.clone()),
            (POLL_ACTIVITY_FUNCTION, self.poll_activity.clone()),
            (INGEST_ACTIVITY_FUNCTION, self.ingest_activity.clone()),
            (HASH_FILE_FUNCTION, self.hash_file.clone()),
            (EXPORT_FUNCTION, self.export.clone()),
        ];
        functions.into_iter().map(|(id, f)| (id.to_owned(), f)).collect()
    }

    /// DynamoDB write requests (PutItem, UpdateItem, BatchWriteItem…) issued so far.
    pub fn dynamodb_write_requests(&self) -> u64 {
        self.discover.state.write_requests()
            + self.index_drive.state.write_requests()
            + self.index_drive.inventory.write_requests()
            + self.apply_scope.state.write_requests()
            + self.poll_activity.state.write_requests()
            + self.ingest_activity.state.write_requests()
            + self.ingest_activity.events.write_requests()
            + self.hash_file.events.write_requests()
            + self.hash_file.inventory.write_requests()
            + self.export.checkpoints.write_requests()
    }
}

/// [`LocalPipeline::new`] then [`LocalPipeline::functions`].
pub fn local_functions(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
    overrides: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, Arc<dyn LocalFunction>>> {
    Ok(LocalPipeline::new(sdk, template, provisioned, overrides)?.functions())
}
