//! End to end on moto + m365-sim: activity injected in the simulator (the drive change and the
//! audit record Microsoft would publish) is polled from the Management Activity API, ingested
//! into file events, hashed and reflected in the inventory, through the real handlers wired by
//! the local runner as template.yaml wires them in AWS. Ground truth is what the simulator says
//! it did and the bytes it serves, computed here without filetrail's code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::time::Duration;

use chrono::{DurationRound as _, Utc};
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::{DISCOVER_FUNCTION, POLL_ACTIVITY_FUNCTION};
use filetrail_cli::scope;
use filetrail_cli::status;
use filetrail_core::audit::FileEventType as T;
use filetrail_core::audit::operations::NOT_RECORDED;
use filetrail_core::events::{EventRecord, HashOutcome, unavailable};
use filetrail_core::scope::ScopeKind;
use filetrail_e2e::interleave::expected_event_keys;
use filetrail_e2e::{CONNECTION, Item, Stack};
use m365_sim::{
    Activity, ActivityConfig, ActivityKind, ActivityOutcome, ActivityRequest, FaultConfig, FilesPerDrive,
    RandomActivity, SimConfig,
};
use md5::Digest as _;

/// Users 0..MONITORED are in scope; the next UNMONITORED users' drives see activity too.
const MONITORED: u64 = 5;
const UNMONITORED: u64 = 3;

fn tenant() -> SimConfig {
    SimConfig {
        seed: 404,
        users: 10,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 8, max: 20 },
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(500),
            late_extra_delay: Duration::from_secs(3),
            duplicate_rate: 0.05,
            late_rate: 0.05,
            content_page_size: 7,
            af429_rate: 0.05,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    }
}

/// What the event of an activity's own record must be.
fn expected_type(kind: ActivityKind) -> T {
    use ActivityKind as K;
    match kind {
        K::Upload | K::SyncUpload => T::Created,
        K::Modify => T::Modified,
        K::Rename => T::Renamed,
        K::Move => T::Moved,
        K::Copy => T::Copied,
        K::Recycle => T::Recycled,
        K::Delete => T::Deleted,
        K::Restore => T::Restored,
        K::Download | K::SyncDownload => T::Downloaded,
        K::Preview => T::Previewed,
        K::Access => T::Accessed,
        K::AnonymousLinkCreated => T::AnonymousLinkCreated,
        K::AnonymousLinkUsed => T::AnonymousLinkUsed,
        K::AnonymousLinkRemoved => T::AnonymousLinkRemoved,
        K::CompanyLinkCreated => T::OrganizationLinkCreated,
        K::CompanyLinkUsed => T::OrganizationLinkUsed,
        K::CompanyLinkRemoved => T::OrganizationLinkRemoved,
        K::SecureLinkCreated => T::SpecificPeopleLinkCreated,
        K::SecureLinkUsed => T::SpecificPeopleLinkUsed,
        K::SecureLinkDeleted => T::SpecificPeopleLinkRemoved,
        K::Share => T::SharingSet,
        K::SharingRevoked => T::SharingRevoked,
        K::PermissionLevelModified => T::PermissionLevelChanged,
    }
}

/// MD5 and SHA-256 of the bytes the simulator serves for this version, read through its own
/// content generator (no HTTP, no filetrail code).
fn digests_of(drive: &str, item: &str, ctag: &str, size: u64) -> (String, String) {
    let mut reader = m365_sim::content::Content::new(drive, item, ctag, size).reader();
    let (mut md5, mut sha) = (md5::Md5::new(), sha2::Sha256::new());
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    (hex(&md5.finalize()), hex(&sha.finalize()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_operations_become_events_of_monitored_drives_once_each_with_the_served_bytes_digests() {
    let stack = Stack::start(tenant()).await.unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let tenant_model = stack.sim.tenant();
    let upn = |i: u64| tenant_model.user(i).user_principal_name;
    let drive = |i: u64| tenant_model.drive_of_user(i).unwrap().id;
    let monitored: BTreeSet<String> = (0..MONITORED).map(drive).collect();
    let unmonitored: BTreeSet<String> = (MONITORED..MONITORED + UNMONITORED).map(drive).collect();

    // The scope: a users CSV of the first users, uploaded as an admin would; their drives are
    // discovered and indexed.
    let csv = std::iter::once("Email".to_owned())
        .chain((0..MONITORED).map(upn))
        .collect::<Vec<_>>()
        .join("\n");
    let runner = stack.runner(&[], |_| {}).unwrap();
    let state = stack.state();
    let pending = scope::put(&stack.objects(), &state, CONNECTION, ScopeKind::Users, csv.into_bytes())
        .await
        .unwrap();
    let (result, report) = tokio::join!(pending.result(&state, Duration::from_secs(90)), runner.run());
    assert_eq!(report.reason, StopReason::Idle);
    let result = result.unwrap();
    assert!(result.accepted && result.entries == MONITORED, "{result:?}");
    assert_eq!(stack.monitored_drives().await.unwrap(), monitored);

    // 2,000 operations across monitored and unmonitored drives, with 5% faults on every
    // Microsoft surface (Graph, downloads, the Management API's AF429) from here on.
    let drives: Vec<String> = monitored.iter().chain(&unmonitored).cloned().collect();
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(30);
    let injected = stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 2_000,
                seed: 9,
                drives,
                mix: None,
                start: Some(start),
                step_ms: 700,
            }),
            return_records: true,
        })
        .unwrap();
    assert_eq!(injected.operations.len(), 2_000);
    stack.sim.set_faults(FaultConfig {
        throttle_rate: 0.05,
        retry_after_secs: (0.05, 0.2),
        error_5xx_rate: 0.02,
        drop_rate: 0.01,
        batch_inner_throttle_rate: 0.05,
        content_throttle_rate: 0.05,
        content_drop_rate: 0.05,
        ..FaultConfig::default()
    });

    // A worker dies midway: its messages come back after the visibility timeout. It starts with
    // the blobs published so far listed (each available half a second after publication, and
    // listed once its second is over), so it has work enough to die in however fast the
    // machine injected the activity.
    let published = stack.sim.audit().blobs().iter().map(|b| b.content_created).max();
    if let Some(last) = published {
        let wait = (last + chrono::Duration::milliseconds(1_500) - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(wait.min(Duration::from_secs(10))).await;
    }
    let crashing = stack
        .runner(&[], |o| {
            o.abort_after_invocations = Some(25);
            o.invocation_timeout = Some(Duration::from_secs(5));
            o.visibility_timeout = Some(Duration::from_secs(5));
        })
        .unwrap();
    // The first poll may meet an AF429 (5%) or blobs not available yet: poll until it enqueues.
    let mut polls = Vec::new();
    for _ in 0..10 {
        let result = crashing.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
        let enqueued = result[0][CONNECTION]["enqueued"].as_u64().unwrap_or(0);
        polls.push(result);
        if enqueued > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let crashed = crashing.run().await;
    assert_eq!(crashed.reason, StopReason::AbortedAfterInvocations, "{polls:?}");
    let runner = stack
        .runner(&[], |o| {
            o.invocation_timeout = Some(Duration::from_secs(60));
            o.visibility_timeout = Some(Duration::from_secs(5));
        })
        .unwrap();
    stack.poll_until_caught_up(&runner).await.unwrap();

    let events = stack.events().await.unwrap();
    let not_recorded: BTreeSet<&str> = NOT_RECORDED.iter().map(|(op, _)| *op).collect();

    // Every record of a monitored drive is one event; nothing from the other drives.
    let mut expected_keys = BTreeSet::new();
    for op in &injected.operations {
        let records = op.audit_records.as_ref().unwrap();
        for record in records {
            let id = record["Id"].as_str().unwrap();
            let operation = record["Operation"].as_str().unwrap();
            let key = format!("{CONNECTION}#{id}");
            if monitored.contains(&op.drive_id) && !not_recorded.contains(operation) {
                expected_keys.insert(key);
            } else {
                assert!(
                    !events.contains_key(&key),
                    "{operation} on {} became an event",
                    op.drive_id
                );
            }
        }
    }
    assert_events_are(&events, &expected_keys);
    assert!(expected_keys.len() > 1_000, "{} events", expected_keys.len());

    // Each operation's own record: the right type, actor, path and time.
    for op in injected.operations.iter().filter(|o| monitored.contains(&o.drive_id)) {
        // A share with someone outside the directory is an invitation, not a grant.
        let (operation, expected) = match op.op {
            ActivityKind::Share if op.records.iter().any(|r| r.operation == "SharingInvitationCreated") => {
                ("SharingInvitationCreated", T::InvitationCreated)
            }
            kind => (kind.operation(), expected_type(kind)),
        };
        let primary = op
            .records
            .iter()
            .find(|r| r.operation == operation)
            .unwrap_or_else(|| panic!("{:?} published no {operation} record", op.op));
        let event = &events[&format!("{CONNECTION}#{}", primary.id)];
        check_primary(op, expected, event);
    }

    // Every content event carries the digests of the bytes served for the version it names: the
    // current version by its cTag, a previous one (through `…/versions`) by the version the
    // event's own activity left; and each surviving file's latest content event names the
    // file's final version.
    let made_by: BTreeMap<String, &ActivityOutcome> = injected
        .operations
        .iter()
        .flat_map(|op| op.records.iter().map(move |r| (r.id.clone(), op)))
        .collect();
    let mut last_content: BTreeMap<(String, String), &EventRecord> = BTreeMap::new();
    let (mut content_events, mut previous_hashed) = (0, 0);
    for event in events.values() {
        let e = &event.event;
        if !e.needs_hash() {
            continue;
        }
        content_events += 1;
        let (drive_id, item_id) = (e.drive_id.clone().unwrap(), e.item_id.clone());
        match &event.hash {
            Some(HashOutcome::Hashed(h)) if h.version.is_some() => {
                let op = made_by[&e.id];
                let item = item_id.clone().unwrap();
                assert_eq!(op.item_id.as_deref(), Some(item.as_str()), "{}", e.operation);
                assert_eq!(h.size, op.size.unwrap(), "{} {:?}", e.operation, e.path);
                assert_eq!(
                    (h.md5.clone(), h.sha256.clone()),
                    digests_of(&drive_id, &item, op.ctag.as_ref().unwrap(), h.size),
                    "{} {:?} version {:?}",
                    e.operation,
                    e.path,
                    h.version
                );
                previous_hashed += 1;
            }
            Some(HashOutcome::Hashed(h)) => {
                let item = item_id.clone().unwrap();
                assert_eq!(
                    (h.md5.clone(), h.sha256.clone()),
                    digests_of(&drive_id, &item, &h.ctag, h.size),
                    "{} {:?}",
                    e.operation,
                    e.path
                );
            }
            Some(HashOutcome::Unavailable { reason }) => assert!(
                [
                    unavailable::CHANGED_BEFORE_HASHING,
                    unavailable::DELETED_BEFORE_HASHING,
                    unavailable::ITEM_NOT_RESOLVED,
                    unavailable::VERSION_NOT_KEPT
                ]
                .contains(&reason.as_str()),
                "{reason}"
            ),
            None => {
                let history: Vec<String> = events
                    .values()
                    .filter(|o| o.event.drive_id == e.drive_id && o.event.item_id == item_id)
                    .map(|o| format!("{} {} {:?}", o.event.observed_at, o.event.operation, o.hash))
                    .collect();
                panic!(
                    "content event {} {:?} at {} (item {item_id:?}) has no hash outcome; the item's events: {history:#?}",
                    e.operation, e.path, e.observed_at
                )
            }
        }
        if let Some(item) = item_id {
            let slot = last_content.entry((drive_id, item)).or_insert(event);
            if event.event.observed_at > slot.event.observed_at {
                *slot = event;
            }
        }
    }
    let mut hashed_files = 0;
    for ((drive_id, item_id), event) in &last_content {
        let Some(now) = stack.sim.current_item(drive_id, item_id) else {
            continue;
        };
        let Some(HashOutcome::Hashed(h)) = &event.hash else {
            panic!("the latest content event of a surviving file is not hashed: {event:?}");
        };
        assert_eq!(Some(&h.ctag), now.ctag.as_ref(), "{:?}", now.path);
        assert_eq!(h.size, now.size);
        hashed_files += 1;
        // The inventory holds the same digests.
        let row = stack.inventory_store().row_with_hash(drive_id, item_id).await.unwrap();
        let row = row.unwrap_or_else(|| panic!("no inventory row for {:?}", now.path));
        assert_eq!(row.hash, Some(HashOutcome::Hashed(h.clone())), "{:?}", now.path);
    }
    assert!(hashed_files > 50, "{hashed_files} files hashed");
    // Versions replaced before hash-file ran were hashed through `…/versions`.
    assert!(
        previous_hashed * 20 > content_events,
        "{previous_hashed} of {content_events} content events hashed as previous versions"
    );

    // The inventory follows: each monitored drive holds what the simulator holds now.
    let inventory = stack.inventory().await.unwrap();
    for drive_id in &monitored {
        let mut expected: Vec<Item> = stack
            .sim
            .current_items(drive_id)
            .into_iter()
            .filter(|i| !i.is_root)
            .map(|i| Item {
                drive_id: drive_id.clone(),
                item_id: i.id,
                path: i.path,
                is_folder: i.is_folder,
                size: i.size,
            })
            .collect();
        expected.sort();
        let actual: Vec<Item> = inventory.iter().filter(|i| &i.drive_id == drive_id).cloned().collect();
        assert_eq!(actual, expected, "inventory of {drive_id}");
    }
    assert!(inventory.iter().all(|i| monitored.contains(&i.drive_id)));
    // Status counts those rows, not the entries delta listed on the way (versions, deletions).
    let shown = status::collect(&stack.state(), Some(CONNECTION))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(shown.indexing.items_indexed, inventory.len() as u64);

    // Nothing was lost to a dead-letter queue, nothing was quarantined, every blob the
    // simulator published was ingested (duplicate and late ones included), and the duplicate
    // records were recognised as such.
    assert!(stack.dead_letters().await.unwrap().values().all(|n| *n == 0));
    let totals = stack.state().blob_totals(CONNECTION).await.unwrap();
    let published = stack.sim.audit().blobs();
    assert_eq!(totals.blobs, published.len() as u64, "{totals:?}");
    assert_eq!(totals.quarantined, 0, "{totals:?}");
    assert!(
        totals.events_duplicate > 0,
        "duplicate records were delivered: {totals:?}"
    );
    assert_eq!(
        totals.records,
        published.iter().map(|b| b.record_ids.len() as u64).sum::<u64>()
    );
}

/// The stored events are exactly `expected` (by key), naming a few of the missing and extra.
fn assert_events_are(events: &BTreeMap<String, EventRecord>, expected: &BTreeSet<String>) {
    let stored: BTreeSet<String> = events.keys().cloned().collect();
    let missing: Vec<_> = expected.difference(&stored).take(5).collect();
    let extra: Vec<_> = stored.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} events, {} expected; missing {missing:?}; extra {extra:?}",
        stored.len(),
        expected.len()
    );
}

/// A tenant with activity before filetrail knows any of its drives: a connection made on a busy
/// tenant. The poll runs first and its blobs are ingested before any discovery (the order that
/// stored nothing, permanently): their records are parked, `status` says so, and the first
/// discovery run brings every one of them in, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_made_on_a_busy_tenant_stores_every_event_although_ingest_ran_before_discovery() {
    let stack = Stack::start(SimConfig {
        seed: 77,
        users: 6,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 3, max: 8 },
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(200),
            duplicate_rate: 0.05,
            late_rate: 0.0,
            content_page_size: 5,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let tenant_model = stack.sim.tenant();
    let drives: BTreeSet<String> = (0..6).map(|i| tenant_model.drive_of_user(i).unwrap().id).collect();
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(40);
    let injected = stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 200,
                seed: 5,
                drives: drives.iter().cloned().collect(),
                mix: None,
                start: Some(start),
                step_ms: 1_000,
            }),
            return_records: true,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack
        .runner(&[], |o| o.visibility_timeout = Some(Duration::from_secs(5)))
        .unwrap();

    // The audit poll first, every blob ingested, no drive known yet.
    stack.poll_until_caught_up(&runner).await.unwrap();
    assert!(stack.monitored_drives().await.unwrap().is_empty());
    assert!(stack.events().await.unwrap().is_empty());
    let before = status::collect(&stack.state(), Some(CONNECTION))
        .await
        .unwrap()
        .remove(0);
    let feed = before.feed.clone().expect("a cloud connection has a feed status");
    let expected = expected_event_keys(&injected.operations, Some(&drives));
    assert!(feed.parked_blobs > 0, "{feed:?}");
    assert!(feed.parked_records >= expected.len() as u64, "{feed:?}");
    assert!(feed.totals.dropped.is_empty(), "nothing dropped: {feed:?}");
    let text = status::render(&[before], Utc::now());
    assert!(text.contains("wait for discovery to find their OneDrive"), "{text}");

    // The first discovery records the drives and brings the parked blobs back.
    runner.fire_schedule(DISCOVER_FUNCTION).await.unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);

    assert_events_are(&stack.events().await.unwrap(), &expected);
    assert!(expected.len() > 100, "{} events", expected.len());
    let after = status::collect(&stack.state(), Some(CONNECTION))
        .await
        .unwrap()
        .remove(0);
    let feed = after.feed.expect("feed status");
    assert_eq!((feed.parked_blobs, feed.parked_records), (0, 0), "{feed:?}");
    assert_eq!(feed.totals.events_inserted, expected.len() as u64, "{feed:?}");
    assert!(stack.dead_letters().await.unwrap().values().all(|n| *n == 0));
}

fn check_primary(op: &ActivityOutcome, expected: T, event: &EventRecord) {
    let e = &event.event;
    assert_eq!(e.event_type, expected, "{:?} at {:?}", op.op, op.path);
    assert_eq!(
        e.observed_at,
        op.at.duration_trunc(chrono::Duration::seconds(1)).unwrap()
    );
    assert_eq!(e.drive_id.as_deref(), Some(op.drive_id.as_str()));
    assert_eq!(e.owner_upn.as_deref(), Some(op.owner.to_lowercase().as_str()));
    let actor = op.actor.to_lowercase();
    assert!(
        e.actor.id.to_lowercase() == actor
            || e.actor.upn.as_deref() == Some(actor.as_str())
            || e.actor.email.as_deref().map(str::to_lowercase) == Some(actor.clone()),
        "actor {:?} for {actor}",
        e.actor
    );
    if let Some(path) = &op.path {
        assert_eq!(e.lookup_path(), Some(path.as_str()), "{:?}", op.op);
    }
    if matches!(op.op, ActivityKind::Rename | ActivityKind::Move) {
        assert_eq!(e.path, op.previous_path, "{:?} keeps where the file was", op.op);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_off_then_permission_missing_show_on_the_status_with_their_fix_and_polling_resumes() {
    let stack = Stack::start(SimConfig {
        users: 3,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 2, max: 4 },
        activity: ActivityConfig {
            audit_log_enabled: false,
            publication_delay: Duration::from_millis(200),
            late_rate: 0.0,
            duplicate_rate: 0.0,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    stack.discover_and_index(&runner).await.unwrap();
    let status = || async {
        let mut all = status::collect(&stack.state(), Some(CONNECTION)).await.unwrap();
        all.remove(0)
    };
    let poll = || async {
        runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
        assert_eq!(runner.run().await.reason, StopReason::Idle);
    };

    poll().await;
    let off = status().await.error.expect("the status names the problem");
    assert!(off.code.starts_with("activity:"), "{off:?}");
    assert!(off.message.to_lowercase().contains("audit"), "{off:?}");
    assert!(off.fix.contains("Purview"), "{off:?}");
    let text = status::render(&[status().await], Utc::now());
    assert!(text.contains(&off.fix), "{text}");

    // Auditing on, but the app's consent lacks ActivityFeed.Read.
    stack.sim.audit().set_audit_log_enabled(true);
    stack.sim.audit().set_activity_feed_read_granted(false);
    poll().await;
    let denied = status().await.error.expect("the status names the missing permission");
    assert!(denied.fix.contains("ActivityFeed.Read"), "{denied:?}");

    // Granted: the next poll works (and starts the subscription) and clears the error.
    stack.sim.audit().set_activity_feed_read_granted(true);
    poll().await;
    let after = status().await;
    assert_eq!(after.error, None, "{after:#?}");
    assert!(
        after.activity.as_ref().is_some_and(|a| a.last_error.is_none()),
        "{after:#?}"
    );

    // Activity from then on flows into events. (Content from before a subscription started is
    // never listed, as Microsoft documents.)
    let owner = stack.sim.tenant().user(0).user_principal_name;
    let drive_id = stack.sim.tenant().drive_of_user(0).unwrap().id;
    let upload = m365_sim::Activity::new(ActivityKind::Upload, drive_id.clone())
        .actor(owner)
        .name("Board minutes.docx");
    let injected = stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: vec![upload],
            random: None,
            return_records: false,
        })
        .unwrap();
    stack.poll_until_caught_up(&runner).await.unwrap();
    let after = status().await;
    assert!(
        after.activity.as_ref().is_some_and(|a| a.blobs_enqueued > 0),
        "{after:#?}"
    );
    let key = format!("{CONNECTION}#{}", injected.operations[0].records[0].id);
    let events = stack.events().await.unwrap();
    let HashOutcome::Hashed(h) = events[&key].hash.clone().expect("the upload was hashed") else {
        panic!("{:?}", events[&key]);
    };
    let item = injected.operations[0].item_id.clone().unwrap();
    assert_eq!((h.md5, h.sha256), digests_of(&drive_id, &item, &h.ctag, h.size));
}

/// The records of one injected activity, by event key.
fn keys_of(op: &ActivityOutcome) -> Vec<String> {
    op.records.iter().map(|r| format!("{CONNECTION}#{}", r.id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_renamed_moved_or_deleted_before_their_records_were_ingested_keep_one_history_each() {
    let stack = Stack::start(SimConfig {
        seed: 31,
        users: 2,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 12, max: 16 },
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(200),
            duplicate_rate: 0.0,
            late_rate: 0.0,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack
        .runner(&[], |o| o.visibility_timeout = Some(Duration::from_secs(5)))
        .unwrap();
    // The inventory knows the drive's files before anything happens to them.
    assert_eq!(
        stack.discover_and_index(&runner).await.unwrap().reason,
        StopReason::Idle
    );
    let tenant_model = stack.sim.tenant();
    let drive = tenant_model.drive_of_user(0).unwrap().id;
    let other = tenant_model.user(1).user_principal_name;
    let items: Vec<m365_sim::SimItem> = tenant_model.drive_items(&drive).filter(|i| !i.is_root).collect();
    let files: Vec<&m365_sim::SimItem> = items.iter().filter(|i| !i.is_folder).collect();
    let (plan, doomed) = (files[0].clone(), files[1].clone());
    let plan_folder = plan.path.rsplit_once('/').unwrap().0.to_owned();
    let elsewhere = items
        .iter()
        .find(|i| i.is_folder && i.path != plan_folder)
        .expect("a folder to move the file to")
        .id
        .clone();

    // A file read, changed, renamed and moved, another read then deleted: all before the
    // audit poll, and an index round (as the hourly discovery runs one) sees the end state.
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(5);
    let at = |s: i64| Some(start + chrono::Duration::seconds(s));
    let on = |op: ActivityKind, item: &str, s: i64| {
        let mut a = Activity::new(op, drive.clone()).item(item);
        a.at = at(s);
        a
    };
    let first = stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: vec![
                on(ActivityKind::Download, &plan.id, 0).actor(other.clone()),
                on(ActivityKind::Modify, &plan.id, 10),
                on(ActivityKind::Rename, &plan.id, 20).name("Plan FINAL.docx"),
                on(ActivityKind::Download, &plan.id, 30).actor(other.clone()),
                on(ActivityKind::Move, &plan.id, 40).folder(elsewhere.clone()),
                on(ActivityKind::Access, &plan.id, 50),
                on(ActivityKind::Download, &doomed.id, 60).actor(other.clone()),
                on(ActivityKind::Preview, &doomed.id, 70),
                on(ActivityKind::Delete, &doomed.id, 80),
            ],
            random: None,
            return_records: false,
        })
        .unwrap();
    stack.enqueue_index(&drive).await.unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stack.poll_until_caught_up(&runner).await.unwrap();

    let events = stack.events().await.unwrap();
    let plan_keys: Vec<String> = first.operations[..6].iter().flat_map(keys_of).collect();
    for key in &plan_keys {
        let e = &events.get(key).unwrap_or_else(|| panic!("no event {key}")).event;
        assert_eq!(
            e.item_id.as_deref(),
            Some(plan.id.as_str()),
            "{} of {:?}",
            e.operation,
            e.path
        );
        assert_eq!(e.unresolved, None, "{}", e.operation);
    }
    // `filetrail file` shows the whole history, whatever path each record named.
    let trail = filetrail_cli::file::trail(
        &stack.state(),
        &stack.inventory_store(),
        &stack.event_store(),
        &drive,
        &plan.id,
    )
    .await
    .unwrap();
    let shown: BTreeSet<String> = trail.events.iter().map(EventRecord::key).collect();
    assert_eq!(shown, plan_keys.iter().cloned().collect::<BTreeSet<_>>());
    assert_eq!(
        trail.inventory.unwrap().row.path,
        format!(
            "{}/Plan FINAL.docx",
            items.iter().find(|i| i.id == elsewhere).unwrap().path
        )
    );

    // The deleted file's events name it and say why they have no digests.
    for key in first.operations[6..].iter().flat_map(keys_of) {
        let record = &events[&key];
        assert_eq!(
            record.event.item_id.as_deref(),
            Some(doomed.id.as_str()),
            "{}",
            record.event.operation
        );
        if record.event.operation != "FileDeleted" {
            assert_eq!(
                record.hash,
                Some(HashOutcome::Unavailable {
                    reason: unavailable::DELETED_BEFORE_HASHING.to_owned()
                }),
                "{}",
                record.event.operation
            );
        }
    }

    // A file uploaded, edited and renamed before any index round saw it: its upload names a path
    // where nothing is, so the event waits for the round the upload asks for, which learns the
    // file's id, gives the event its item and has it hashed.
    let second = stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: vec![
                {
                    let mut a = Activity::new(ActivityKind::Upload, drive.clone()).name("Fresh upload.xlsx");
                    a.at = Some(Utc::now() - chrono::Duration::seconds(20));
                    a
                },
                {
                    // Edited seconds later: the upload's own version is replaced before any
                    // hash job runs.
                    let mut a = Activity::new(ActivityKind::Modify, drive.clone()).item("/Fresh upload.xlsx");
                    a.at = Some(Utc::now() - chrono::Duration::seconds(16));
                    a
                },
                {
                    let mut a = Activity::new(ActivityKind::Rename, drive.clone())
                        .item("/Fresh upload.xlsx")
                        .name("Fresh renamed.xlsx");
                    a.at = Some(Utc::now() - chrono::Duration::seconds(10));
                    a
                },
            ],
            random: None,
            return_records: false,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stack.poll_until_caught_up(&runner).await.unwrap();
    let events = stack.events().await.unwrap();
    let upload = &second.operations[0];
    let fresh = upload.item_id.clone().unwrap();
    let stored = &events[&keys_of(upload)[0]];
    assert_eq!(stored.event.item_id.as_deref(), Some(fresh.as_str()));
    assert_eq!(stored.event.unresolved, None);
    // The upload carries the digests of the version it made (kept by OneDrive, hashed through
    // `…/versions`), the edit those of the current one.
    let Some(HashOutcome::Hashed(h)) = &stored.hash else {
        panic!("the upload of a file that exists is hashed: {:?}", stored.hash);
    };
    assert_eq!(
        (h.md5.clone(), h.sha256.clone()),
        digests_of(&drive, &fresh, upload.ctag.as_ref().unwrap(), upload.size.unwrap())
    );
    assert_eq!(h.version.as_deref(), Some("1.0"));
    let edit = &second.operations[1];
    let Some(HashOutcome::Hashed(h)) = &events[&keys_of(edit)[0]].hash else {
        panic!("the edit is hashed");
    };
    assert_eq!((h.md5.clone(), h.sha256.clone(), h.version.clone()), {
        let (md5, sha) = digests_of(&drive, &fresh, edit.ctag.as_ref().unwrap(), edit.size.unwrap());
        (md5, sha, None)
    });
    assert_ne!(upload.ctag, edit.ctag);
    assert!(stack.dead_letters().await.unwrap().values().all(|n| *n == 0));
}
