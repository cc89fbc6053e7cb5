//! End to end on moto + m365-sim: what an admin's connection commands mean for the pipeline.
//! A deauthorized connection gets no work at all (and nothing is failed or dead-lettered), resume
//! continues from the checkpoints, and the whole pipeline reads only: with the read-only
//! application roles granted it is never refused and sends Microsoft no write.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DurationRound as _, Utc};
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::{DISCOVER_FUNCTION, POLL_ACTIVITY_FUNCTION};
use filetrail_cli::{connection, status};
use filetrail_core::jobs::{DiscoverJob, HashJob, IndexJob};
use filetrail_core::model::DriveState;
use filetrail_core::ports::{DiscoverQueue as _, HashQueue as _, IndexQueue as _};
use filetrail_e2e::interleave::expected_event_keys;
use filetrail_e2e::{CONNECTION, Stack};
use m365_sim::{ActivityConfig, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};

fn tenant(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        users: 4,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 2,
        files_per_drive: FilesPerDrive::Fixed(6),
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(300),
            late_rate: 0.0,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    }
}

/// Injects `count` random operations on every drive of the tenant, from ten minutes ago.
fn inject(stack: &Stack, count: usize, seed: u64) -> Vec<m365_sim::ActivityOutcome> {
    let t = stack.sim.tenant();
    let drives: Vec<String> = (0..t.user_count())
        .filter_map(|i| t.drive_of_user(i).map(|d| d.id))
        .collect();
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(10);
    stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count,
                seed,
                drives,
                mix: None,
                start: Some(start),
                step_ms: 500,
            }),
            return_records: true,
        })
        .unwrap()
        .operations
}

async fn assert_no_dead_letters(stack: &Stack) {
    let dead = stack.dead_letters().await.unwrap();
    assert!(dead.values().all(|n| *n == 0), "dead letters: {dead:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_pipeline_reads_only_and_needs_no_write_permission() {
    let stack = Stack::start(tenant(71)).await.unwrap();
    // GIVEN only the read-only application roles an admin consents to (the simulator's default)
    let granted = stack.sim.graph_roles();
    assert!(
        granted
            .iter()
            .all(|r| !r.contains("Write") && !r.contains("FullControl")),
        "{granted:?}"
    );
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();

    // WHEN discovery, indexing, activity ingestion and hashing all run
    assert_eq!(
        stack.discover_and_index(&runner).await.unwrap().reason,
        StopReason::Idle
    );
    inject(&stack, 40, 5);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stack.poll_until_caught_up(&runner).await.unwrap();

    // THEN every kind of work happened…
    let stats = stack.sim.stats();
    let events = stack.events().await.unwrap();
    assert!(!events.is_empty(), "activity became events");
    assert!(
        stats.delta > 0 && stats.content_downloads > 0,
        "indexed and hashed: {stats:?}"
    );
    assert!(stats.activity.blob > 0, "blobs fetched: {:?}", stats.activity);
    // …without one refused request and without one Graph request other than GETs and the
    // `$batch` envelopes, whose inner requests are all GETs.
    assert_eq!(stats.forbidden, 0, "{:?}", stats.graph_requests);
    let non_get: Vec<_> = stats.non_get_graph_requests();
    assert!(
        non_get
            .iter()
            .all(|r| r.method == "POST" && r.kind == "batch" && !r.in_batch),
        "only $batch envelopes may be POSTs: {non_get:?}"
    );
    assert!(
        stats
            .graph_requests
            .iter()
            .filter(|r| r.in_batch)
            .all(|r| r.method == "GET"),
        "{:?}",
        stats.graph_requests
    );
    assert_no_dead_letters(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deauthorized_connection_gets_no_work_and_resume_continues_from_its_checkpoints() {
    let stack = Stack::start(tenant(72)).await.unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    assert_eq!(
        stack.discover_and_index(&runner).await.unwrap().reason,
        StopReason::Idle
    );
    let indexed = stack.drives_in(&[DriveState::Indexed]).await.unwrap();
    assert_eq!(indexed.len(), 4);
    let inventory_before = stack.inventory().await.unwrap();

    // GIVEN a poll enqueues the blobs of activity just before the admin deauthorizes the
    // connection, and the tenant keeps changing
    let before = inject(&stack, 12, 5);
    let last = stack
        .sim
        .audit()
        .blobs()
        .iter()
        .map(|b| b.content_created)
        .max()
        .unwrap();
    let wait = (last + chrono::Duration::milliseconds(1_500) - Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
    let state = stack.state();
    connection::deauthorize(&state, CONNECTION).await.unwrap();
    inject(&stack, 30, 6);
    tokio::time::sleep(Duration::from_millis(400)).await;
    stack.sim.reset_stats();

    // WHEN every kind of job arrives for it: schedules, a direct discovery, an index job and a
    // hash job
    runner.fire_schedule(DISCOVER_FUNCTION).await.unwrap();
    runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
    let drive = indexed.iter().next().unwrap().clone();
    stack
        .queue("DiscoverQueue")
        .enqueue_discover(&[DiscoverJob::Discover {
            connection: CONNECTION.to_owned(),
            reason: "cli".to_owned(),
        }])
        .await
        .unwrap();
    stack
        .queue("IndexQueue")
        .enqueue_index(&[IndexJob::IndexDrive {
            connection: CONNECTION.to_owned(),
            drive_id: drive.clone(),
        }])
        .await
        .unwrap();
    let item = inventory_before
        .iter()
        .find(|i| i.drive_id == drive && !i.is_folder)
        .unwrap();
    stack
        .queue("HashQueue")
        .enqueue_hashes(&[HashJob {
            previous_versions: false,
            connection: CONNECTION.to_owned(),
            drive_id: drive.clone(),
            item_id: item.item_id.clone(),
            continuation: None,
        }])
        .await
        .unwrap();
    let report = runner.run().await;

    // THEN nothing reached Microsoft, nothing failed or was dead-lettered, history is intact
    assert_eq!(report.reason, StopReason::Idle);
    let stats = stack.sim.stats();
    assert_eq!(
        (stats.token, stats.http_requests, stats.activity.requests),
        (0, 0, 0),
        "no request for a deauthorized connection: {stats:?}"
    );
    assert_no_dead_letters(&stack).await;
    assert!(stack.events().await.unwrap().is_empty(), "no blob was read");
    assert_eq!(stack.inventory().await.unwrap(), inventory_before);
    // The blobs enqueued before the pause wait unread (the poll never lists them again).
    let shown = status::collect(&state, Some(CONNECTION)).await.unwrap().remove(0);
    let unread = shown.feed.unwrap().unread_blobs;
    assert!(unread > 0, "the enqueued blobs are kept unread");

    // WHEN the admin resumes it
    let discover = stack.queue("DiscoverQueue");
    connection::resume(&state, &discover, CONNECTION).await.unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
    stack.poll_until_caught_up(&runner).await.unwrap();

    // THEN work continues: the drives stay indexed (delta from the stored links, not a re-walk)
    // and the activity of the pause is ingested
    assert_eq!(stack.drives_in(&[DriveState::Indexed]).await.unwrap(), indexed);
    let events = stack.events().await.unwrap();
    let expected = expected_event_keys(&before, None);
    let missing: Vec<&String> = expected.iter().filter(|k| !events.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "records of the blobs kept unread during the pause are missing: {missing:?}"
    );
    assert!(events.len() > expected.len(), "the pause's activity became events");
    let shown = status::collect(&state, Some(CONNECTION)).await.unwrap().remove(0);
    assert_eq!(shown.feed.unwrap().unread_blobs, 0, "no blob left unread");
    assert_no_dead_letters(&stack).await;
}
