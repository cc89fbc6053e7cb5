//! `filetrail redrive QUEUE`: moves the messages that failed repeatedly on a work queue (and
//! wait on its dead-letter queue) back onto it, once their cause is fixed.
//!
//! A blob message that stays on the activity dead-letter queue past the Management Activity
//! API's 7-day retention can no longer be fetched: its records are lost. `filetrail status`
//! counts dead letters per queue; this command puts them back in one step, on AWS and on the
//! local stack alike.
//!
//! Messages move by receive, send, delete: each is sent to the work queue before it is deleted
//! from the dead-letter queue, so a move cut short leaves a message in both places (every
//! function is idempotent: a duplicate job does nothing twice), never in neither. Bodies and
//! message attributes move unchanged.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName, SendMessageBatchRequestEntry};

/// The work queues, by the names the command takes.
pub const QUEUES: [&str; 4] = ["discover", "index", "activity", "hash"];

/// How long a received dead letter stays invisible while it is moved.
const MOVE_VISIBILITY_SECS: i32 = 120;

/// What a redrive moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// The work queue's name.
    pub queue: String,
    /// Its dead-letter queue's name.
    pub dead_letter_queue: String,
    pub moved: u64,
}

/// The work queue a name means (`hash`, `HashQueue` or the queue's full name, any case), as an
/// index into [`QUEUES`].
///
/// # Errors
/// An unknown name, with the names accepted.
pub fn queue_index(name: &str) -> anyhow::Result<usize> {
    let wanted = name.to_ascii_lowercase();
    let wanted = wanted.strip_suffix("queue").unwrap_or(&wanted);
    QUEUES
        .iter()
        .position(|q| wanted == *q || wanted.ends_with(&format!("-{q}")))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no work queue {name:?}: one of {} (the queues `filetrail status` lists)",
                QUEUES.join(", ")
            )
        })
}

/// The name of the dead-letter queue a queue's `RedrivePolicy` attribute names.
pub fn dead_letter_queue_of(redrive_policy: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(redrive_policy)
        .ok()?
        .get("deadLetterTargetArn")?
        .as_str()?
        .rsplit(':')
        .next()
        .map(str::to_owned)
}

/// Moves every message of `queue_url`'s dead-letter queue back onto it; `progress` is told the
/// count moved so far.
///
/// # Errors
/// The queue has no redrive policy, or SQS fails (what was moved stays moved).
pub async fn redrive(sqs: &Client, queue_url: &str, progress: impl Fn(u64)) -> anyhow::Result<Redriven> {
    let queue = queue_url.rsplit('/').next().unwrap_or(queue_url).to_owned();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await?;
    let dead_letter_queue = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .and_then(|p| dead_letter_queue_of(p))
        .ok_or_else(|| anyhow::anyhow!("queue {queue} has no dead-letter queue (no redrive policy)"))?;
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(&dead_letter_queue)
        .send()
        .await?
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("dead-letter queue {dead_letter_queue} not found"))?;

    let mut moved = 0u64;
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(10)
            // Long polling asks every SQS server, so an empty answer means an empty queue.
            .wait_time_seconds(1)
            .visibility_timeout(MOVE_VISIBILITY_SECS)
            .message_attribute_names("All")
            .send()
            .await?;
        let messages = received.messages();
        if messages.is_empty() {
            break;
        }
        let mut entries = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            entries.push(
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(m.body().unwrap_or_default())
                    .set_message_attributes(m.message_attributes().cloned())
                    .build()?,
            );
        }
        let sent = sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await?;
        if let Some(failed) = sent.failed().first() {
            anyhow::bail!(
                "sending dead letters back to {queue} failed ({}: {}); {moved} moved so far, the rest stay on {dead_letter_queue}",
                failed.code(),
                failed.message().unwrap_or_default()
            );
        }
        let mut deletes = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            deletes.push(
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()?,
            );
        }
        let deleted = sqs
            .delete_message_batch()
            .queue_url(&dlq_url)
            .set_entries(Some(deletes))
            .send()
            .await?;
        if let Some(failed) = deleted.failed().first() {
            anyhow::bail!(
                "a dead letter sent back to {queue} could not be deleted from {dead_letter_queue} ({}); it will be \
                 delivered twice (harmless: every function is idempotent); run the command again",
                failed.code()
            );
        }
        moved += messages.len() as u64;
        progress(moved);
    }
    Ok(Redriven {
        queue,
        dead_letter_queue,
        moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_named_by_its_short_name_or_its_full_name() {
        assert_eq!(queue_index("hash").unwrap(), 3);
        assert_eq!(queue_index("HashQueue").unwrap(), 3);
        assert_eq!(queue_index("filetrail-ActivityQueue").unwrap(), 2);
        assert_eq!(queue_index("Discover").unwrap(), 0);
        let err = queue_index("hashes").unwrap_err().to_string();
        assert!(
            err.contains("\"hashes\"") && err.contains("discover, index, activity, hash"),
            "{err}"
        );
    }
}
