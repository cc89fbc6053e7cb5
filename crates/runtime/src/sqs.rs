//! SQS batch handling with partial batch responses.
//!
//! Every record is handled on its own; a record that fails is reported in `batchItemFailures` so
//! only it is redelivered (after the visibility timeout) and, after the queue's maxReceiveCount,
//! moved to the dead-letter queue. A handler never fails the whole batch for one record, and a
//! record whose body cannot be parsed is reported, not dropped.

use std::future::Future;

use anyhow::Context as _;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use filetrail_core::PortError;
use serde::de::DeserializeOwned;
use tracing::{error, warn};

/// Why a record was not handled.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The body is not a message this function understands; redelivery cannot help, so it goes
    /// to the dead-letter queue after maxReceiveCount receives.
    #[error("unreadable message body: {0}")]
    Poison(String),
    /// A transient failure: try again after the visibility timeout.
    #[error("{0}")]
    Retry(String),
}

/// A store or service failure: the message comes back after the visibility timeout (a terminal
/// one reaches the dead-letter queue after maxReceiveCount receives, to be redriven once fixed).
impl From<PortError> for RecordError {
    fn from(e: PortError) -> Self {
        Self::Retry(e.to_string())
    }
}

/// The handler of a function triggered by a queue: reads `payload` as an SQS event, runs `run`
/// on each message's body read as a `J`, and answers the partial batch response. A body that is
/// not a `J` is reported as a failure of that message alone.
///
/// # Errors
/// When the payload is not an SQS event.
pub async fn handle_jobs<J, F, Fut>(payload: serde_json::Value, mut run: F) -> anyhow::Result<serde_json::Value>
where
    J: DeserializeOwned,
    F: FnMut(J) -> Fut,
    Fut: Future<Output = Result<(), RecordError>>,
{
    let event: SqsEvent = serde_json::from_value(payload).context("reading the SQS event")?;
    let response = handle_batch(event, |message| {
        let job = parse_body::<J>(&message).map(&mut run);
        async move { job?.await }
    })
    .await;
    Ok(serde_json::to_value(response)?)
}

/// Parses a record body as `T`.
pub fn parse_body<T: DeserializeOwned>(message: &SqsMessage) -> Result<T, RecordError> {
    let body = message.body.as_deref().unwrap_or_default();
    serde_json::from_str(body).map_err(|e| RecordError::Poison(format!("{e}: {}", truncate(body, 200))))
}

/// Handles each record of `event` in order with `handle`, returning the partial batch response.
pub async fn handle_batch<F, Fut>(event: SqsEvent, mut handle: F) -> SqsBatchResponse
where
    F: FnMut(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), RecordError>>,
{
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let id = message.message_id.clone().unwrap_or_default();
        match handle(message).await {
            Ok(()) => {}
            Err(e) => {
                match &e {
                    RecordError::Poison(_) => error!(message_id = id, error = %e, "message cannot be handled"),
                    RecordError::Retry(_) => warn!(message_id = id, error = %e, "message will be retried"),
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.to_owned());
        m.body = Some(body.to_owned());
        m
    }

    #[tokio::test]
    async fn only_failed_records_are_reported() {
        let mut event = SqsEvent::default();
        event.records = vec![msg("a", "1"), msg("b", "oops"), msg("c", "3")];
        let response = handle_batch(event, |m| async move {
            let n: u32 = parse_body(&m)?;
            if n == 3 {
                Err(RecordError::Retry("later".into()))
            } else {
                Ok(())
            }
        })
        .await;
        let failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, vec!["b", "c"]);
    }

    #[tokio::test]
    async fn jobs_are_read_from_an_sqs_payload_and_only_failures_reported() {
        let payload = serde_json::json!({"Records": [
            {"messageId": "m1", "body": "{\"n\": 1}"},
            {"messageId": "m2", "body": "not json"},
            {"messageId": "m3", "body": "{\"n\": 3}"},
        ]});
        #[derive(serde::Deserialize)]
        struct Job {
            n: u32,
        }
        let mut seen = Vec::new();
        let response = handle_jobs(payload, |job: Job| {
            seen.push(job.n);
            async move {
                match job.n {
                    3 => Err(PortError::transient("Throttled", "slow down").into()),
                    _ => Ok(()),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(seen, [1, 3]);
        assert_eq!(
            response,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m3"}]})
        );
        let err = handle_jobs(serde_json::json!({"detail": {}}), |_: Job| async { Ok(()) }).await;
        assert!(err.is_err(), "an EventBridge payload is not an SQS event");
    }
}
