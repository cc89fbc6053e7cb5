//! SqsQueue against moto.

use filetrail_aws::SqsQueue;
use filetrail_core::jobs::{BlobJob, DiscoverJob, HashJob, IndexJob};
use filetrail_core::ports::{BlobQueue, DiscoverQueue, HashQueue, IndexQueue};
use serde::de::DeserializeOwned;

use crate::support::{aws, create_queue, failure};

/// Receives until `expected` messages arrived (or a bounded number of empty polls), deleting
/// each, and returns their parsed bodies.
async fn receive_all<T: DeserializeOwned>(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    expected: usize,
) -> anyhow::Result<Vec<T>> {
    let mut bodies = Vec::new();
    let mut empty_polls = 0;
    while bodies.len() < expected && empty_polls < 5 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await?;
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_polls += 1;
        }
        for message in messages {
            bodies.push(serde_json::from_str(message.body().unwrap_or_default())?);
            if let Some(handle) = message.receipt_handle() {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
    }
    Ok(bodies)
}

#[tokio::test]
async fn twenty_three_index_jobs_arrive_exactly_once_each_in_three_batches() -> anyhow::Result<()> {
    let aws = aws().await?;
    let url = create_queue(&aws.sqs).await?;
    let queue = SqsQueue::new(aws.sqs.clone(), &url);
    let jobs: Vec<IndexJob> = (0..23)
        .map(|i| IndexJob::IndexDrive {
            connection: "contoso".into(),
            drive_id: format!("b!{i:02}"),
        })
        .collect();

    queue.enqueue_index(&jobs).await?;

    assert_eq!(queue.send_requests(), 3);
    assert_eq!(queue.messages_sent(), 23);
    let mut received: Vec<IndexJob> = receive_all(&aws.sqs, &url, 23).await?;
    let key = |j: &IndexJob| match j {
        IndexJob::IndexDrive { drive_id, .. } => drive_id.clone(),
    };
    received.sort_by_key(key);
    assert_eq!(received, jobs);
    Ok(())
}

#[tokio::test]
async fn discover_jobs_arrive_as_the_json_the_discover_function_reads() -> anyhow::Result<()> {
    let aws = aws().await?;
    let url = create_queue(&aws.sqs).await?;
    let queue = SqsQueue::new(aws.sqs.clone(), &url);
    let job = DiscoverJob::Discover {
        connection: "contoso".into(),
        reason: "continuation".into(),
    };

    queue.enqueue_discover(std::slice::from_ref(&job)).await?;

    let received: Vec<serde_json::Value> = receive_all(&aws.sqs, &url, 1).await?;
    assert_eq!(
        received,
        [serde_json::json!({"type": "discover", "connection": "contoso", "reason": "continuation"})]
    );
    Ok(())
}

#[tokio::test]
async fn sending_to_a_missing_queue_is_terminal_and_names_the_queue() -> anyhow::Result<()> {
    let aws = aws().await?;
    let url = format!(
        "{}/123456789012/ft-no-such-queue",
        crate::support::moto().await?.endpoint()
    );
    let queue = SqsQueue::new(aws.sqs, &url);
    let job = IndexJob::IndexDrive {
        connection: "contoso".into(),
        drive_id: "b!1".into(),
    };

    let err = failure(queue.enqueue_index(&[job]).await, "queue does not exist")?;

    assert!(err.is_terminal(), "{err}");
    assert!(err.to_string().contains("ft-no-such-queue"), "{err}");
    Ok(())
}

#[tokio::test]
async fn blob_and_hash_jobs_arrive_as_their_json_in_batches_of_ten() -> anyhow::Result<()> {
    let aws = aws().await?;
    let blob_url = create_queue(&aws.sqs).await?;
    let hash_url = create_queue(&aws.sqs).await?;
    let blobs = SqsQueue::new(aws.sqs.clone(), &blob_url);
    let hashes = SqsQueue::new(aws.sqs.clone(), &hash_url);
    let created = chrono::DateTime::parse_from_rfc3339("2026-11-22T08:00:00.25Z")?.with_timezone(&chrono::Utc);
    let blob_jobs: Vec<BlobJob> = (0..12)
        .map(|i| BlobJob {
            connection: "contoso".into(),
            blob: filetrail_core::activity::ContentBlob {
                content_type: "Audit.SharePoint".into(),
                content_id: format!("blob-{i:02}"),
                content_uri: format!("https://manage.office.com/api/v1.0/t/activity/feed/audit/blob-{i:02}$x$y"),
                content_created: created,
                content_expiration: None,
            },
            parked: i % 2 == 0,
        })
        .collect();
    let hash_jobs: Vec<HashJob> = (0..3)
        .map(|i| HashJob {
            previous_versions: false,
            connection: "contoso".into(),
            drive_id: "b!1".into(),
            item_id: format!("item-{i}"),
            continuation: None,
        })
        .collect();

    blobs.enqueue_blobs(&blob_jobs).await?;
    hashes.enqueue_hashes(&hash_jobs).await?;

    assert_eq!((blobs.send_requests(), hashes.send_requests()), (2, 1));
    let mut got_blobs: Vec<BlobJob> = receive_all(&aws.sqs, &blob_url, 12).await?;
    got_blobs.sort_by(|a, b| a.blob.content_id.cmp(&b.blob.content_id));
    assert_eq!(got_blobs, blob_jobs);
    let mut got_hashes: Vec<HashJob> = receive_all(&aws.sqs, &hash_url, 3).await?;
    got_hashes.sort_by(|a, b| a.item_id.cmp(&b.item_id));
    assert_eq!(got_hashes, hash_jobs);
    Ok(())
}
