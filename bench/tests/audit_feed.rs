//! The audit-feed benchmarks' pieces: percentiles, the polling wait, the corpus and the watch of
//! blobs against an in-process simulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use chrono::{Duration, TimeZone as _, Utc};
use filetrail_bench::audit_feed::{
    BlobWatch, audit_corpus, audit_tenant, becomes_event, drive_ids, inject_random, percentile, polling_wait,
};
use filetrail_core::audit::normalise_blob;
use filetrail_core::events::event_key;

#[test]
fn percentiles_are_nearest_rank() {
    let values: Vec<f64> = (1..=20).map(f64::from).collect();
    assert_eq!(percentile(&values, 50.0), 10.0);
    assert_eq!(percentile(&values, 95.0), 19.0);
    assert_eq!(percentile(&values, 100.0), 20.0);
    assert_eq!(percentile(&values, 0.0), 1.0);
    assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
    assert!(percentile(&[], 50.0).is_nan());
}

#[test]
fn the_polling_wait_is_up_to_the_first_poll_at_or_after_availability() {
    let t = |s: i64| Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap();
    let polls = [t(0), t(2), t(4)];
    assert_eq!(polling_wait(t(1), &polls), Some(1.0));
    assert_eq!(polling_wait(t(2), &polls), Some(0.0));
    assert_eq!(polling_wait(t(5), &polls), None);
}

#[test]
fn records_of_unmonitored_drives_or_skipped_operations_become_no_event() {
    assert!(becomes_event(true, "FileModified"));
    assert!(!becomes_event(false, "FileModified"));
    let (skipped, _) = filetrail_core::audit::operations::NOT_RECORDED[0];
    assert!(!becomes_event(true, skipped));
}

#[tokio::test]
async fn the_corpus_normalises_without_quarantine_and_gives_monitored_drives_their_ids() {
    let corpus = audit_corpus(3, 4, 3, 400).await.unwrap();
    assert_eq!(corpus.monitored.len(), 3);
    assert_eq!(corpus.unmonitored, 1);
    assert!(corpus.blobs.len() >= 4, "{} blobs", corpus.blobs.len());
    assert!(corpus.records >= 400, "{} records", corpus.records);
    let ctx = corpus.context(Utc::now());
    let monitored: BTreeSet<&str> = corpus.monitored.iter().map(|d| d.drive_id.as_str()).collect();
    let (mut records, mut with_drive, mut without) = (0, 0, 0);
    for blob in &corpus.blobs {
        let outcome = normalise_blob(blob, &ctx).unwrap();
        assert!(outcome.quarantined.is_empty(), "{:?}", outcome.quarantined);
        records += outcome.records();
        for event in &outcome.events {
            match &event.drive_id {
                Some(id) => {
                    assert!(monitored.contains(id.as_str()));
                    with_drive += 1;
                }
                None => without += 1,
            }
        }
    }
    assert_eq!(records, corpus.records);
    assert!(with_drive > without && without > 0, "{with_drive} / {without}");
    // Without known drives, no event has a drive id (the ingest's first pass).
    let bare = corpus.bare_context(Utc::now());
    let first = normalise_blob(&corpus.blobs[0], &bare).unwrap();
    assert!(first.events.iter().all(|e| e.drive_id.is_none()));
}

#[tokio::test]
async fn the_watch_awaits_the_events_of_monitored_drives_per_blob_until_read_back() {
    let sim = m365_sim::spawn(audit_tenant(5, 3)).await.unwrap();
    let drives = drive_ids(&sim, 3).unwrap();
    let monitored: BTreeSet<String> = drives.iter().take(2).cloned().collect();
    let outcomes = inject_random(&sim, &drives, 150, 11).unwrap();
    let mut watch = BlobWatch::new("c1");
    watch.add(&outcomes, &monitored);

    // It agrees with what the simulator published, and counts what it must await.
    assert!(watch.watched() >= 2);
    assert!(watch.disagreements(&sim.audit().blobs()).is_empty());
    let expected: BTreeSet<String> = outcomes
        .iter()
        .filter(|o| monitored.contains(&o.drive_id))
        .flat_map(|o| o.records.iter())
        .filter(|r| becomes_event(true, &r.operation))
        .map(|r| event_key("c1", &r.id))
        .collect();
    assert_eq!(watch.expected_events(), expected.len());

    // Nothing is due before the blobs become available.
    let last = watch.last_available().unwrap();
    let first_available = outcomes
        .iter()
        .flat_map(|o| o.records.iter())
        .filter_map(|r| r.available_at)
        .min()
        .unwrap();
    assert!(watch.due(first_available - Duration::milliseconds(1)).is_empty());
    let due: BTreeSet<String> = watch.due(last).into_iter().collect();
    assert_eq!(due, expected);

    // Reading all but one back leaves one blob unfinished; the last one finishes it.
    let mut keys: Vec<&str> = due.iter().map(String::as_str).collect();
    let held = keys.pop().unwrap();
    let at = last + Duration::seconds(3);
    watch.readable(keys, at);
    assert_eq!(watch.unfinished().len(), 1);
    assert!(!watch.all_done());
    watch.readable([held], at + Duration::seconds(1));
    assert!(watch.all_done());
    let latencies = watch.latencies();
    assert_eq!(latencies.len(), watch.watched());
    assert!(latencies.iter().all(|l| l.seconds >= 3.0 && l.events > 0));
    assert!(latencies.windows(2).all(|w| w[0].available_at <= w[1].available_at));
    sim.shutdown().await;
}
