//! The `apply-scope` function: an admin uploaded a scope CSV to the bucket.
//!
//! Trigger (template.yaml): the scope queue, which receives the bucket's object-created events
//! for `scoping/**.csv`. Each event is applied by [`apply_upload`]: the upload is validated, the
//! connection's scope replaced when it is acceptable, a result document written next to it, and
//! discovery started. S3's `s3:TestEvent` (sent when notifications are configured) is ignored.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use chrono::{DateTime, Utc};
use filetrail_aws::config::AwsResources;
use filetrail_aws::objects::{BucketObjects, s3_client};
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::apply_scope::{ApplyOutcome, ApplyPorts, UploadEvent, apply_upload};
use filetrail_runtime::Function;
use filetrail_runtime::sqs::{RecordError, handle_batch};
use serde::Deserialize;
use serde_json::Value;
use tracing::info;

/// Everything an invocation borrows, built once per container.
pub struct Context {
    pub state: DynamoStateStore,
    pub objects: BucketObjects,
    pub discover_queue: SqsQueue,
}

#[async_trait::async_trait]
impl Function for Context {
    fn build(sdk: &aws_config::SdkConfig, env: &HashMap<String, String>) -> anyhow::Result<Self> {
        let resources = AwsResources::from_env_map(env)?;
        Ok(Self {
            state: DynamoStateStore::new(aws_sdk_dynamodb::Client::new(sdk), resources.require_state_table()?),
            objects: BucketObjects::new(s3_client(sdk), resources.require_bucket()?),
            discover_queue: SqsQueue::new(aws_sdk_sqs::Client::new(sdk), resources.require_discover_queue_url()?),
        })
    }

    /// Handles an SQS batch of S3 notifications; answers the partial batch response. (The body
    /// is S3's own message, not one of filetrail's jobs.)
    async fn invoke(&self, payload: Value, _deadline: Instant) -> anyhow::Result<Value> {
        let event: SqsEvent = serde_json::from_value(payload).context("reading the SQS event")?;
        let response: SqsBatchResponse = handle_batch(event, |message| async move {
            apply(self, message.body.as_deref().unwrap_or_default()).await
        })
        .await;
        Ok(serde_json::to_value(response)?)
    }
}

/// The body S3 sends to the queue: object events, or the test event sent once when the
/// notification is configured.
#[derive(Debug, Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<S3Record>,
    #[serde(rename = "Event", default)]
    event: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Record {
    event_name: String,
    event_time: DateTime<Utc>,
    s3: S3Entity,
}

#[derive(Debug, Deserialize)]
struct S3Entity {
    object: S3Object,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct S3Object {
    key: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    e_tag: String,
}

/// Reads an S3 event body into the uploads it announces. Keys arrive URL-encoded the way HTML
/// forms are (`+` for a space), as the S3 event message structure documents.
pub fn uploads_of(body: &str) -> Result<Vec<UploadEvent>, RecordError> {
    let notification: Notification =
        serde_json::from_str(body).map_err(|e| RecordError::Poison(format!("not an S3 event notification: {e}")))?;
    if notification.event.as_deref() == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    notification
        .records
        .into_iter()
        .filter(|r| r.event_name.starts_with("ObjectCreated"))
        .map(|r| {
            let plus_decoded = r.s3.object.key.replace('+', " ");
            let key = percent_encoding::percent_decode_str(&plus_decoded)
                .decode_utf8()
                .map_err(|e| RecordError::Poison(format!("object key {:?} is not UTF-8: {e}", r.s3.object.key)))?
                .into_owned();
            Ok(UploadEvent {
                key,
                etag: r.s3.object.e_tag,
                size: r.s3.object.size,
                time: r.event_time,
            })
        })
        .collect()
}

/// Applies each upload an S3 notification body announces.
async fn apply(ctx: &Context, body: &str) -> Result<(), RecordError> {
    let ports = ApplyPorts {
        connections: &ctx.state,
        scopes: &ctx.state,
        objects: &ctx.objects,
        discover_queue: &ctx.discover_queue,
    };
    for upload in &uploads_of(body)? {
        match apply_upload(&ports, upload, Utc::now()).await? {
            ApplyOutcome::Ignored { reason } => info!(key = upload.key, reason, "upload ignored"),
            ApplyOutcome::Done(result) => info!(
                connection = result.connection,
                key = upload.key,
                accepted = result.accepted,
                entries = result.entries,
                rejected_rows = result.rejected_rows.len(),
                result_key = result.result_key,
                "scope upload processed"
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn s3_events_decode_form_encoded_keys_and_skip_the_test_event() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-11-22T07:24:51.444Z",
            "eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"scoping%2Fcontoso+east%2Fusers.csv",
            "size":14,"eTag":"559f3591b505e0fbe7c8958bf5922be2","sequencer":"0A1B2C3D4E5F678901"}}},
            {"eventName":"ObjectRemoved:Delete","eventTime":"2026-11-22T07:24:52Z","s3":{"object":{"key":"x"}}}]}"#;
        let uploads = uploads_of(body).unwrap();
        assert_eq!(uploads.len(), 1);
        assert_eq!(uploads[0].key, "scoping/contoso east/users.csv");
        assert_eq!(uploads[0].size, 14);
        assert_eq!(uploads[0].etag, "559f3591b505e0fbe7c8958bf5922be2");

        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-22T07:24:51.434Z","Bucket":"b"}"#;
        assert!(uploads_of(test).unwrap().is_empty());
        assert!(matches!(uploads_of("nonsense"), Err(RecordError::Poison(_))));
    }
}
