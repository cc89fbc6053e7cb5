//! SQS batch handling with partial batch responses.
//!
//! Every record is handled on its own; a record that fails is reported in `batchItemFailures` so
//! only it is redelivered (after the visibility timeout) and, after the queue's maxReceiveCount,
//! moved to the dead-letter queue. A handler never fails the whole batch for one record, and a
//! record whose body cannot be parsed is reported, not dropped.

use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
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
}
