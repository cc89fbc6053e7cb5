//! [`IndexQueue`], [`DiscoverQueue`], [`BlobQueue`] and [`HashQueue`] over SQS standard queues:
//! jobs are JSON bodies of the core job types, sent with SendMessageBatch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use filetrail_core::jobs::{BlobJob, DiscoverJob, HashJob, IndexJob};
use filetrail_core::ports::{BlobQueue, DiscoverQueue, HashQueue, IndexQueue, PortResult};
use serde::Serialize;

use crate::config::{ACTIVITY_QUEUE_URL_VAR, DISCOVER_QUEUE_URL_VAR, HASH_QUEUE_URL_VAR, INDEX_QUEUE_URL_VAR};
use crate::error::{AwsError, Rejection, Target, from_sdk};

/// SendMessageBatch takes at most 10 entries (Amazon SQS API Reference, SendMessageBatch:
/// "You can send up to 10 messages").
pub const SEND_BATCH_MAX: usize = 10;
/// Payload limit of one SendMessageBatch call, the sum of all bodies: 256 KiB = 262,144 bytes
/// (Amazon SQS API Reference, SendMessageBatch). Jobs are ~100 bytes, so in practice batches
/// are cut by count.
pub const SEND_BATCH_MAX_BYTES: usize = 262_144;
/// Calls per batch while SQS reports failed entries that are not the sender's fault.
const SEND_MAX_ATTEMPTS: u32 = 5;
/// First wait before re-sending failed entries; doubles per attempt (0.1+0.2+0.4+0.8 s at most).
const SEND_BACKOFF_START: Duration = Duration::from_millis(100);

/// One SQS queue. Sends are counted for benchmarks.
#[derive(Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
    send_requests: AtomicU64,
    messages_sent: AtomicU64,
}

impl SqsQueue {
    /// A queue by URL (`FILETRAIL_INDEX_QUEUE_URL`, `FILETRAIL_DISCOVER_QUEUE_URL`,
    /// `FILETRAIL_ACTIVITY_QUEUE_URL` or `FILETRAIL_HASH_QUEUE_URL`). Makes no request.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            send_requests: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// SendMessageBatch calls issued so far, re-sends included.
    pub fn send_requests(&self) -> u64 {
        self.send_requests.load(Ordering::Relaxed)
    }

    /// Messages SQS accepted so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages_sent.load(Ordering::Relaxed)
    }

    fn target(&self, setting: &'static str) -> Target<'_> {
        Target {
            service: "SQS",
            resource: &self.url,
            setting,
        }
    }

    /// Sends each job as one JSON message, in batches of at most [`SEND_BATCH_MAX`] entries and
    /// [`SEND_BATCH_MAX_BYTES`]. Entries SQS fails on its side are re-sent with backoff. Returns
    /// once every job was accepted; otherwise fails — possibly after earlier batches were sent,
    /// which is safe because every consumer is idempotent under redelivery.
    pub async fn send_jobs<T: Serialize>(&self, jobs: &[T], setting: &'static str) -> Result<(), AwsError> {
        self.send_jobs_delayed(jobs, setting, 0).await
    }

    /// [`Self::send_jobs`] with `DelaySeconds` on every message (0 to 900).
    pub async fn send_jobs_delayed<T: Serialize>(
        &self,
        jobs: &[T],
        setting: &'static str,
        delay_seconds: i32,
    ) -> Result<(), AwsError> {
        let bodies = jobs
            .iter()
            .map(|j| {
                serde_json::to_string(j).map_err(|e| AwsError::Encode {
                    what: "queue job",
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for batch in batches(&bodies) {
            if batch.len() == 1 && batch[0].len() > SEND_BATCH_MAX_BYTES {
                return Err(AwsError::Rejected(Box::new(Rejection {
                    service: "SQS",
                    operation: "SendMessageBatch",
                    resource: self.url.clone(),
                    what: "a message".into(),
                    code: "MessageTooLong".into(),
                    message: format!("the job is {} bytes, over {SEND_BATCH_MAX_BYTES}", batch[0].len()),
                    fix: "this is a bug in filetrail: jobs must stay small".into(),
                })));
            }
            self.send_batch(batch, setting, delay_seconds).await?;
        }
        Ok(())
    }

    async fn send_batch(&self, batch: &[String], setting: &'static str, delay_seconds: i32) -> Result<(), AwsError> {
        // Entry ids are the body's index within the batch: unique per request, as SQS requires.
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut delay = SEND_BACKOFF_START;
        let mut last_failure = String::new();
        for attempt in 1..=SEND_MAX_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&batch[i])
                        .set_delay_seconds((delay_seconds > 0).then_some(delay_seconds))
                        .build()
                        .map_err(|e| AwsError::Encode {
                            what: "queue entry",
                            detail: e.to_string(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.send_requests.fetch_add(1, Ordering::Relaxed);
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| from_sdk("SendMessageBatch", self.target(setting), e))?;
            self.messages_sent
                .fetch_add(out.successful.len() as u64, Ordering::Relaxed);
            if let Some(rejected) = out.failed.iter().find(|f| f.sender_fault) {
                return Err(AwsError::Rejected(Box::new(Rejection {
                    service: "SQS",
                    operation: "SendMessageBatch",
                    resource: self.url.clone(),
                    what: format!("entry {}", rejected.id),
                    code: rejected.code.clone(),
                    message: rejected.message.clone().unwrap_or_default(),
                    fix: format!("check the queue at {setting} (a FIFO queue or a policy can refuse these messages)"),
                })));
            }
            pending = out.failed.iter().filter_map(|f| f.id.parse().ok()).collect();
            if pending.is_empty() {
                return Ok(());
            }
            if let Some(first) = out.failed.first() {
                last_failure = format!("{}: {}", first.code, first.message.as_deref().unwrap_or(""));
            }
            tracing::debug!(queue = %self.url, failed = pending.len(), attempt, "re-sending failed entries");
            if attempt < SEND_MAX_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(AwsError::Unprocessed {
            service: "SQS",
            operation: "SendMessageBatch",
            resource: self.url.clone(),
            remaining: pending.len(),
            total: batch.len(),
            attempts: SEND_MAX_ATTEMPTS,
            detail: last_failure,
        })
    }
}

/// Cuts bodies into batches of at most [`SEND_BATCH_MAX`] entries and [`SEND_BATCH_MAX_BYTES`]
/// (a body alone over the byte limit becomes a batch of its own, for the caller to reject).
fn batches(bodies: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, body) in bodies.iter().enumerate() {
        let full = i - start == SEND_BATCH_MAX || (i > start && bytes + body.len() > SEND_BATCH_MAX_BYTES);
        if full {
            out.push(&bodies[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += body.len();
    }
    if start < bodies.len() {
        out.push(&bodies[start..]);
    }
    out
}

#[async_trait]
impl IndexQueue for SqsQueue {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        Ok(self.send_jobs(jobs, INDEX_QUEUE_URL_VAR).await?)
    }
}

#[async_trait]
impl DiscoverQueue for SqsQueue {
    async fn enqueue_discover(&self, jobs: &[DiscoverJob]) -> PortResult<()> {
        Ok(self.send_jobs(jobs, DISCOVER_QUEUE_URL_VAR).await?)
    }
}

/// One message per content blob on the activity queue.
#[async_trait]
impl BlobQueue for SqsQueue {
    async fn enqueue_blobs(&self, jobs: &[BlobJob]) -> PortResult<()> {
        Ok(self.send_jobs(jobs, ACTIVITY_QUEUE_URL_VAR).await?)
    }
}

/// One message per file on the hash queue. A continuation carries the digests' state, a few
/// hundred bytes, far below the message limit.
#[async_trait]
impl HashQueue for SqsQueue {
    async fn enqueue_hashes(&self, jobs: &[HashJob]) -> PortResult<()> {
        Ok(self.send_jobs(jobs, HASH_QUEUE_URL_VAR).await?)
    }

    /// `DelaySeconds` on every entry (capped at SQS's 900).
    async fn enqueue_hashes_after(&self, jobs: &[HashJob], delay: std::time::Duration) -> PortResult<()> {
        let seconds = i32::try_from(delay.as_secs().min(MAX_DELAY_SECONDS)).unwrap_or(0);
        Ok(self.send_jobs_delayed(jobs, HASH_QUEUE_URL_VAR, seconds).await?)
    }
}

/// The longest `DelaySeconds` SQS accepts.
const MAX_DELAY_SECONDS: u64 = 900;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_three_jobs_make_batches_of_ten_ten_and_three() {
        let bodies: Vec<String> = (0..23).map(|i| format!("{{\"n\":{i}}}")).collect();
        let sizes: Vec<usize> = batches(&bodies).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 3]);
    }

    #[test]
    fn large_bodies_are_cut_by_bytes_before_count() {
        let bodies = vec!["x".repeat(100_000); 4];
        let sizes: Vec<usize> = batches(&bodies).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [2, 2]);
    }
}
