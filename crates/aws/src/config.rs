//! Typed configuration of the AWS resources filetrail uses, read once at cold start.
//!
//! The SAM template sets these variables on each function; the local runner sets them from the
//! stack it provisioned. Each function requires only the resources it uses: parse with
//! [`AwsResources::from_env`], then call [`AwsResources::require`] with what the function needs,
//! so a missing setting fails the start with a message naming the variable.

use std::collections::HashMap;

/// Name of the DynamoDB state table (connections, drives, checkpoints).
pub const STATE_TABLE_VAR: &str = "FILETRAIL_STATE_TABLE";
/// Name of the DynamoDB inventory table.
pub const INVENTORY_TABLE_VAR: &str = "FILETRAIL_INVENTORY_TABLE";
/// URL of the SQS queue the discover function consumes.
pub const DISCOVER_QUEUE_URL_VAR: &str = "FILETRAIL_DISCOVER_QUEUE_URL";
/// URL of the SQS queue the index-drive function consumes.
pub const INDEX_QUEUE_URL_VAR: &str = "FILETRAIL_INDEX_QUEUE_URL";
/// Name of the DynamoDB events table.
pub const EVENTS_TABLE_VAR: &str = "FILETRAIL_EVENTS_TABLE";
/// URL of the SQS queue of audit content blobs (ingest-activity consumes it).
pub const ACTIVITY_QUEUE_URL_VAR: &str = "FILETRAIL_ACTIVITY_QUEUE_URL";
/// URL of the SQS queue of files to hash (hash-file consumes it).
pub const HASH_QUEUE_URL_VAR: &str = "FILETRAIL_HASH_QUEUE_URL";
/// Name of the S3 bucket (scoping uploads, quarantined audit records, exports).
pub const BUCKET_VAR: &str = "FILETRAIL_BUCKET";
/// Prefix of the Secrets Manager names filetrail creates: secret names are
/// `{prefix}{connection}/app`. The template sets `filetrail/{stack name}/` (stack output
/// `SecretPrefix`), and its functions may read only secrets under it, so two deployments in one
/// account cannot read each other's credentials.
pub const SECRET_PREFIX_VAR: &str = "FILETRAIL_SECRET_PREFIX";
/// Prefix of the secrets of write-mode apps (`filetrail connection write-mode`):
/// `filetrail-write/{stack name}/` (stack output `WriteSecretPrefix`, see
/// [`write_secret_prefix`]). No function's policy grants a secret under it: only the CLI action
/// an admin runs (`filetrail sharing revoke`) reads them.
pub const WRITE_SECRET_PREFIX_VAR: &str = "FILETRAIL_WRITE_SECRET_PREFIX";

/// The write-mode secret prefix of a stack, as template.yaml's `WriteSecretPrefix` output has it.
#[must_use]
pub fn write_secret_prefix(stack_name: &str) -> String {
    format!("filetrail-write/{stack_name}/")
}

/// The customer-managed KMS key new connection secrets are encrypted with (stack output
/// `CustomerKey`, present when the stack was deployed with `KmsKeyArn`); absent: Secrets
/// Manager's AWS-managed key.
pub const KMS_KEY_VAR: &str = "FILETRAIL_KMS_KEY_ID";

/// A setting that is missing or unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "missing setting {var}: set it to {what} (template.yaml sets it on every function that needs it; \
         locally `filetrail local` sets it)"
    )]
    Missing { var: &'static str, what: &'static str },
    #[error("setting {var}={value:?} is invalid: {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// One of the resources a function can require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    StateTable,
    InventoryTable,
    DiscoverQueue,
    IndexQueue,
    Bucket,
    EventsTable,
    ActivityQueue,
    HashQueue,
    SecretPrefix,
    WriteSecretPrefix,
}

impl Resource {
    /// The environment variable that names this resource.
    pub fn var(self) -> &'static str {
        match self {
            Self::StateTable => STATE_TABLE_VAR,
            Self::InventoryTable => INVENTORY_TABLE_VAR,
            Self::DiscoverQueue => DISCOVER_QUEUE_URL_VAR,
            Self::IndexQueue => INDEX_QUEUE_URL_VAR,
            Self::Bucket => BUCKET_VAR,
            Self::EventsTable => EVENTS_TABLE_VAR,
            Self::ActivityQueue => ACTIVITY_QUEUE_URL_VAR,
            Self::HashQueue => HASH_QUEUE_URL_VAR,
            Self::SecretPrefix => SECRET_PREFIX_VAR,
            Self::WriteSecretPrefix => WRITE_SECRET_PREFIX_VAR,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::StateTable => "the name of the state DynamoDB table",
            Self::InventoryTable => "the name of the inventory DynamoDB table",
            Self::DiscoverQueue => "the URL of the discover SQS queue",
            Self::IndexQueue => "the URL of the index SQS queue",
            Self::Bucket => "the name of the filetrail S3 bucket",
            Self::EventsTable => "the name of the events DynamoDB table",
            Self::ActivityQueue => "the URL of the activity (content blobs) SQS queue",
            Self::HashQueue => "the URL of the hash SQS queue",
            Self::SecretPrefix => {
                "the stack output SecretPrefix (filetrail/STACK-NAME/), under which connection secrets live"
            }
            Self::WriteSecretPrefix => {
                "the stack output WriteSecretPrefix (filetrail-write/STACK-NAME/), under which write-mode app secrets live"
            }
        }
    }
}

/// The AWS resources of one deployment. Absent settings are `None`; the `require_*` accessors
/// turn an absent one into a [`ConfigError::Missing`] naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub state_table: Option<String>,
    pub inventory_table: Option<String>,
    pub discover_queue_url: Option<String>,
    pub index_queue_url: Option<String>,
    pub bucket: Option<String>,
    pub events_table: Option<String>,
    pub activity_queue_url: Option<String>,
    pub hash_queue_url: Option<String>,
    pub secret_prefix: Option<String>,
    pub write_secret_prefix: Option<String>,
    /// The key new secrets are encrypted with ([`KMS_KEY_VAR`]); `None`: the AWS-managed key.
    pub kms_key_id: Option<String>,
}

impl AwsResources {
    /// Reads the settings from the process environment. See [`Self::from_env_map`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_map(&std::env::vars().collect())
    }

    /// Reads the settings from `env`. Absent variables are fine here (functions need only some;
    /// see [`Self::require`]); a variable that is set but empty or malformed (a queue URL that is
    /// not `http(s)://…`, a secret prefix with characters Secrets Manager rejects) fails with
    /// [`ConfigError::Invalid`] naming it.
    pub fn from_env_map(env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let read = |var: &'static str| -> Result<Option<String>, ConfigError> {
            match env.get(var).map(|v| v.trim()) {
                None => Ok(None),
                Some("") => Err(ConfigError::Invalid {
                    var,
                    value: String::new(),
                    expected: "a non-empty value",
                }),
                Some(v) => Ok(Some(v.to_owned())),
            }
        };
        let queue = |var: &'static str| -> Result<Option<String>, ConfigError> {
            let url = read(var)?;
            match &url {
                Some(u) if !(u.starts_with("https://") || u.starts_with("http://")) => Err(ConfigError::Invalid {
                    var,
                    value: u.clone(),
                    expected: "an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)",
                }),
                _ => Ok(url),
            }
        };
        let secret_prefix = match read(SECRET_PREFIX_VAR)? {
            None => None,
            Some(p) if p.chars().all(is_secret_name_char) => Some(p),
            Some(p) => {
                return Err(ConfigError::Invalid {
                    var: SECRET_PREFIX_VAR,
                    value: p,
                    expected: "letters, digits and /_+=.@- only (Secrets Manager name characters)",
                });
            }
        };
        let write_secret_prefix = match read(WRITE_SECRET_PREFIX_VAR)? {
            Some(p) if !p.chars().all(is_secret_name_char) || Some(&p) == secret_prefix.as_ref() => {
                return Err(ConfigError::Invalid {
                    var: WRITE_SECRET_PREFIX_VAR,
                    value: p,
                    expected: "Secrets Manager name characters, and not the pipeline's FILETRAIL_SECRET_PREFIX",
                });
            }
            other => other,
        };
        Ok(Self {
            state_table: read(STATE_TABLE_VAR)?,
            inventory_table: read(INVENTORY_TABLE_VAR)?,
            discover_queue_url: queue(DISCOVER_QUEUE_URL_VAR)?,
            index_queue_url: queue(INDEX_QUEUE_URL_VAR)?,
            bucket: read(BUCKET_VAR)?,
            events_table: read(EVENTS_TABLE_VAR)?,
            activity_queue_url: queue(ACTIVITY_QUEUE_URL_VAR)?,
            hash_queue_url: queue(HASH_QUEUE_URL_VAR)?,
            secret_prefix,
            write_secret_prefix,
            kms_key_id: read(KMS_KEY_VAR)?,
        })
    }

    /// Fails with the first of `needed` that is not set, naming its variable.
    pub fn require(&self, needed: &[Resource]) -> Result<(), ConfigError> {
        needed.iter().try_for_each(|r| self.get(*r).map(|_| ()))
    }

    /// The value of one resource setting, or [`ConfigError::Missing`] naming its variable.
    pub fn get(&self, resource: Resource) -> Result<&str, ConfigError> {
        let value = match resource {
            Resource::StateTable => &self.state_table,
            Resource::InventoryTable => &self.inventory_table,
            Resource::DiscoverQueue => &self.discover_queue_url,
            Resource::IndexQueue => &self.index_queue_url,
            Resource::Bucket => &self.bucket,
            Resource::EventsTable => &self.events_table,
            Resource::ActivityQueue => &self.activity_queue_url,
            Resource::HashQueue => &self.hash_queue_url,
            Resource::SecretPrefix => &self.secret_prefix,
            Resource::WriteSecretPrefix => &self.write_secret_prefix,
        };
        value.as_deref().ok_or(ConfigError::Missing {
            var: resource.var(),
            what: resource.what(),
        })
    }

    pub fn require_state_table(&self) -> Result<&str, ConfigError> {
        self.get(Resource::StateTable)
    }

    pub fn require_inventory_table(&self) -> Result<&str, ConfigError> {
        self.get(Resource::InventoryTable)
    }

    pub fn require_discover_queue_url(&self) -> Result<&str, ConfigError> {
        self.get(Resource::DiscoverQueue)
    }

    pub fn require_index_queue_url(&self) -> Result<&str, ConfigError> {
        self.get(Resource::IndexQueue)
    }

    pub fn require_bucket(&self) -> Result<&str, ConfigError> {
        self.get(Resource::Bucket)
    }

    pub fn require_events_table(&self) -> Result<&str, ConfigError> {
        self.get(Resource::EventsTable)
    }

    pub fn require_activity_queue_url(&self) -> Result<&str, ConfigError> {
        self.get(Resource::ActivityQueue)
    }

    pub fn require_hash_queue_url(&self) -> Result<&str, ConfigError> {
        self.get(Resource::HashQueue)
    }

    pub fn require_secret_prefix(&self) -> Result<&str, ConfigError> {
        self.get(Resource::SecretPrefix)
    }

    pub fn require_write_secret_prefix(&self) -> Result<&str, ConfigError> {
        self.get(Resource::WriteSecretPrefix)
    }
}

/// Characters Secrets Manager allows in a secret name (CreateSecret, `Name`).
fn is_secret_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_every_setting() {
        let r = AwsResources::from_env_map(&env(&[
            (STATE_TABLE_VAR, "ft-state"),
            (INVENTORY_TABLE_VAR, "ft-inventory"),
            (DISCOVER_QUEUE_URL_VAR, "http://127.0.0.1:5000/123456789012/discover"),
            (
                INDEX_QUEUE_URL_VAR,
                "https://sqs.us-east-1.amazonaws.com/123456789012/index",
            ),
            (BUCKET_VAR, "ft-bucket"),
            (EVENTS_TABLE_VAR, "ft-events"),
            (ACTIVITY_QUEUE_URL_VAR, "http://127.0.0.1:5000/123456789012/activity"),
            (HASH_QUEUE_URL_VAR, "http://127.0.0.1:5000/123456789012/hash"),
            (SECRET_PREFIX_VAR, "filetrail/prod/"),
            (KMS_KEY_VAR, "arn:aws:kms:us-east-1:123456789012:key/k"),
        ]))
        .unwrap();
        assert_eq!(r.require_state_table(), Ok("ft-state"));
        assert_eq!(r.require_inventory_table(), Ok("ft-inventory"));
        assert_eq!(r.require_bucket(), Ok("ft-bucket"));
        assert_eq!(r.require_secret_prefix(), Ok("filetrail/prod/"));
        assert_eq!(
            r.kms_key_id.as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:key/k")
        );
        assert!(r.require(&[Resource::DiscoverQueue, Resource::IndexQueue]).is_ok());
        assert_eq!(r.require_events_table(), Ok("ft-events"));
        assert!(r.require(&[Resource::ActivityQueue, Resource::HashQueue]).is_ok());
    }

    #[test]
    fn without_a_secret_prefix_secrets_are_refused_rather_than_put_where_no_function_reads() {
        let r = AwsResources::from_env_map(&env(&[(STATE_TABLE_VAR, "ft-state")])).unwrap();
        let err = r.require_secret_prefix().unwrap_err();
        assert!(
            err.to_string().contains("FILETRAIL_SECRET_PREFIX") && err.to_string().contains("SecretPrefix"),
            "{err}"
        );
        assert_eq!(r.kms_key_id, None);
    }

    #[test]
    fn missing_required_setting_names_its_variable() {
        let r = AwsResources::from_env_map(&env(&[(STATE_TABLE_VAR, "ft-state")])).unwrap();
        let err = r.require(&[Resource::StateTable, Resource::IndexQueue]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                var: INDEX_QUEUE_URL_VAR,
                what: Resource::IndexQueue.what()
            }
        );
        assert!(err.to_string().contains("FILETRAIL_INDEX_QUEUE_URL"), "{err}");
    }

    #[test]
    fn queue_setting_that_is_not_a_url_is_rejected() {
        let err = AwsResources::from_env_map(&env(&[(INDEX_QUEUE_URL_VAR, "index-queue")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: INDEX_QUEUE_URL_VAR,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn empty_setting_is_rejected_rather_than_treated_as_a_name() {
        let err = AwsResources::from_env_map(&env(&[(STATE_TABLE_VAR, " ")])).unwrap_err();
        assert!(err.to_string().contains("FILETRAIL_STATE_TABLE"), "{err}");
    }

    #[test]
    fn secret_prefix_with_forbidden_characters_is_rejected() {
        let err = AwsResources::from_env_map(&env(&[(SECRET_PREFIX_VAR, "file trail/")])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: SECRET_PREFIX_VAR,
                    ..
                }
            ),
            "{err}"
        );
    }
}
