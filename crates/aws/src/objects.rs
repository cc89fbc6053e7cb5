//! The deployment bucket: scope uploads and their result documents ([`ScopeObjects`]), audit
//! records kept aside by ingestion ([`QuarantineStore`]), and the few object calls the CLI makes.
//! Objects are encrypted by the bucket's default encryption (template.yaml `BucketEncryption`).

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, Utc};
use filetrail_core::audit::{Quarantine, QuarantineReason};
use filetrail_core::ports::{PortResult, QuarantineStore, ScopeObjects, UploadRead};
use serde::{Deserialize, Serialize};

use crate::config::BUCKET_VAR;
use crate::error::{AwsError, Target, from_sdk};

/// An S3 client that also works against a local endpoint (moto serves buckets by path, not by
/// virtual host).
pub fn s3_client(sdk: &aws_config::SdkConfig) -> Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(sdk.endpoint_url().is_some())
        .build();
    Client::from_conf(config)
}

/// Where quarantined audit records go in the bucket.
pub const QUARANTINE_PREFIX: &str = "quarantine/";

/// The key of one blob's quarantine document: `quarantine/{connection}/{content_id}.json`. One
/// per blob, so a redelivered blob overwrites its document instead of adding another.
pub fn quarantine_key(connection: &str, content_id: &str) -> String {
    format!("{QUARANTINE_PREFIX}{connection}/{content_id}.json")
}

/// The quarantine document of one content blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineDocument {
    pub connection: String,
    pub content_id: String,
    pub written_at: DateTime<Utc>,
    pub records: Vec<QuarantinedRecord>,
}

/// One record kept aside, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedRecord {
    /// The record's `Id`, when it has a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// `{"kind": "malformed", "field": …, "detail": …}` or
    /// `{"kind": "unknown_operation", "operation": …}`.
    pub reason: QuarantineReason,
    /// The reason in words.
    pub message: String,
    /// The record as received (possibly truncated by ingestion), for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl QuarantineDocument {
    pub fn new(connection: &str, content_id: &str, records: &[Quarantine], written_at: DateTime<Utc>) -> Self {
        Self {
            connection: connection.to_owned(),
            content_id: content_id.to_owned(),
            written_at,
            records: records
                .iter()
                .map(|q| QuarantinedRecord {
                    record_id: q.record_id.clone(),
                    message: q.reason.to_string(),
                    reason: q.reason.clone(),
                    raw: q.raw.clone(),
                })
                .collect(),
        }
    }
}

/// One bucket, named by `FILETRAIL_BUCKET`.
#[derive(Debug, Clone)]
pub struct BucketObjects {
    client: Client,
    bucket: String,
}

impl BucketObjects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn target(&self) -> Target<'_> {
        Target {
            service: "S3",
            resource: &self.bucket,
            setting: BUCKET_VAR,
        }
    }

    /// Puts `body` at `key`; returns the new object's ETag (quotes removed).
    pub async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<String, AwsError> {
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| from_sdk("PutObject", self.target(), e))?;
        Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_owned())
    }

    /// The object at `key`, `None` when there is none.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsError> {
        match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => Ok(Some(self.collect(key, out.body).await?)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
            Err(e) => Err(from_sdk("GetObject", self.target(), e)),
        }
    }

    async fn collect(&self, key: &str, body: ByteStream) -> Result<Vec<u8>, AwsError> {
        body.collect().await.map(|b| b.into_bytes().to_vec()).map_err(|e| {
            AwsError::Service(Box::new(crate::error::ServiceFailure {
                class: filetrail_core::RetryClass::Backoff,
                service: "S3",
                operation: "GetObject",
                resource: format!("{}/{key}", self.bucket),
                code: "ReadBody".into(),
                message: e.to_string(),
                fix: None,
            }))
        })
    }
}

#[async_trait]
impl ScopeObjects for BucketObjects {
    /// A GetObject with `If-Match` on the event's ETag: a replaced object fails the
    /// precondition (412) and is not read.
    async fn read_upload(&self, key: &str, etag: &str, max_bytes: u64) -> PortResult<UploadRead> {
        let quoted = format!("\"{}\"", etag.trim_matches('"'));
        let result = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(quoted)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => return Ok(UploadRead::Missing),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Ok(UploadRead::Replaced);
            }
            Err(e) => return Err(from_sdk("GetObject", self.target(), e).into()),
        };
        let size = out.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if size > max_bytes {
            return Ok(UploadRead::TooLarge { size });
        }
        Ok(UploadRead::Bytes(self.collect(key, out.body).await?))
    }

    async fn write_result(&self, key: &str, body: &[u8]) -> PortResult<()> {
        self.put(key, body.to_vec(), "application/json").await?;
        Ok(())
    }
}

#[async_trait]
impl QuarantineStore for BucketObjects {
    /// One PutObject of a [`QuarantineDocument`] at [`quarantine_key`], replacing the blob's
    /// earlier document.
    async fn put_quarantined(&self, connection: &str, content_id: &str, records: &[Quarantine]) -> PortResult<()> {
        let document = QuarantineDocument::new(connection, content_id, records, Utc::now());
        let body = serde_json::to_vec_pretty(&document).map_err(|e| AwsError::Encode {
            what: "quarantine document",
            detail: e.to_string(),
        })?;
        self.put(&quarantine_key(connection, content_id), body, "application/json")
            .await?;
        Ok(())
    }
}
