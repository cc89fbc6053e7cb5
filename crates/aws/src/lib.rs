//! AWS adapters of filetrail: the DynamoDB [`StateStore`](filetrail_core::ports::StateStore),
//! [`ActivityState`](filetrail_core::ports::ActivityState),
//! [`InventoryStore`](filetrail_core::ports::InventoryStore),
//! [`InventoryHashes`](filetrail_core::ports::InventoryHashes) and
//! [`EventStore`](filetrail_core::ports::EventStore), SQS work queues, the S3
//! [`QuarantineStore`](filetrail_core::ports::QuarantineStore), Secrets Manager app credentials,
//! typed resource configuration, and a moto server launcher for tests and the local stack.
//!
//! Every adapter takes an SDK client built once by the caller (`aws_sdk_*::Client::new(&config)`
//! with [`sdk_config_for`] or [`MotoServer::sdk_config`]) and maps SDK failures to
//! [`PortError`](filetrail_core::PortError) with a retry class: throttling and 5xx back off;
//! missing resources and validation errors are terminal with a fix naming the resource and the
//! setting that names it.

pub mod config;
mod dynamo;
pub mod error;
pub mod events;
pub mod export_store;
pub mod inventory;
pub mod moto;
pub mod objects;
pub mod provision;
pub mod queue;
pub mod search;
pub mod secrets;
pub mod sharing;
pub mod state;
pub mod template;

pub use config::{AwsResources, ConfigError, Resource};
pub use dynamo::{BATCH_GET_MAX, BATCH_WRITE_MAX, RequestCounts};
pub use error::AwsError;
pub use events::DynamoEventStore;
pub use inventory::{DynamoInventoryStore, RowWithHash};
pub use moto::{MotoServer, sdk_config_for};
pub use objects::{BucketObjects, s3_client};
pub use queue::{SEND_BATCH_MAX, SqsQueue};
pub use secrets::{AppSecret, Secret, SecretsStore};
pub use state::{BlobTotals, DynamoStateStore};
