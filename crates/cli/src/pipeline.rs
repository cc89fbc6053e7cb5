//! The functions of template.yaml, as the local runner invokes them: the same handler code the
//! Lambdas run, each built with the environment AWS would give it (resolved from the template
//! against the provisioned resources).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context as _;
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
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

/// The access key a function's AWS calls are signed with on the local stack (its logical id
/// after `local-`): a recording of moto's requests tells which function made each, to check
/// it against that function's policy ([`filetrail_aws::template::policy`]).
pub fn local_access_key(function: &str) -> String {
    format!("local-{function}")
}

/// The function whose [`local_access_key`] this is.
pub fn function_of_access_key(key: &str) -> Option<&str> {
    key.strip_prefix("local-")
}

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
        fn build<F: Function>(
            sdk: &aws_config::SdkConfig,
            id: &str,
            env_of: impl Fn(&str) -> anyhow::Result<HashMap<String, String>>,
        ) -> anyhow::Result<Arc<F>> {
            // Each function signs with its own access key, as each has its own role in AWS.
            let credentials = Credentials::new(local_access_key(id), "local", None, None, "filetrail-local");
            let sdk = sdk
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(credentials))
                .build();
            Ok(Arc::new(F::build(&sdk, &env_of(id)?)?))
        }
        Ok(Self {
            discover: build(sdk, DISCOVER_FUNCTION, env_of)?,
            index_drive: build(sdk, INDEX_DRIVE_FUNCTION, env_of)?,
            apply_scope: build(sdk, APPLY_SCOPE_FUNCTION, env_of)?,
            poll_activity: build(sdk, POLL_ACTIVITY_FUNCTION, env_of)?,
            ingest_activity: build(sdk, INGEST_ACTIVITY_FUNCTION, env_of)?,
            hash_file: build(sdk, HASH_FILE_FUNCTION, env_of)?,
            export: build(sdk, EXPORT_FUNCTION, env_of)?,
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
