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
use filetrail_cli::local::runner::{Runner, StopReason};
use filetrail_cli::pipeline::POLL_ACTIVITY_FUNCTION;
use filetrail_cli::scope;
use filetrail_core::audit::FileEventType as T;
use filetrail_core::audit::operations::NOT_RECORDED;
use filetrail_core::events::{EventRecord, HashOutcome, unavailable};
use filetrail_core::scope::ScopeKind;
use filetrail_e2e::{CONNECTION, Item, Stack};
use m365_sim::{
    ActivityConfig, ActivityKind, ActivityOutcome, ActivityRequest, FaultConfig, FilesPerDrive, RandomActivity,
    SimConfig,
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

/// Polls the feed and runs the pipeline until idle, until every blob the simulator published
/// has become available and been listed.
async fn poll_until_caught_up(stack: &Stack, runner: &Runner) {
    for round in 0..6 {
        let last_available = stack.sim.audit().blobs().iter().map(|b| b.content_created).max();
        let now = Utc::now();
        runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
        assert_eq!(runner.run().await.reason, StopReason::Idle);
        match last_available {
            Some(t) if t > now => {
                let wait = (t - now).to_std().unwrap_or_default() + Duration::from_millis(300);
                tokio::time::sleep(wait).await;
            }
            _ if round > 0 => return,
            _ => {}
        }
    }
    panic!("the feed never caught up");
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

    // A worker dies midway: its messages come back after the visibility timeout. (The first
    // blobs become available half a second after publication.)
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    poll_until_caught_up(&stack, &runner).await;

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
    let stored: BTreeSet<String> = events.keys().cloned().collect();
    let missing: Vec<_> = expected_keys.difference(&stored).take(5).collect();
    let extra: Vec<_> = stored.difference(&expected_keys).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} events, {} expected; missing {missing:?}; extra {extra:?}",
        stored.len(),
        expected_keys.len()
    );
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

    // Every content event carries the digests of the bytes served for the version it names;
    // and each surviving file's latest content event names the file's final version.
    let mut last_content: BTreeMap<(String, String), &EventRecord> = BTreeMap::new();
    for event in events.values() {
        let e = &event.event;
        if !e.needs_hash() {
            continue;
        }
        let (drive_id, item_id) = (e.drive_id.clone().unwrap(), e.item_id.clone());
        match &event.hash {
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
                    unavailable::ITEM_NOT_RESOLVED
                ]
                .contains(&reason.as_str()),
                "{reason}"
            ),
            None => panic!("content event {} {:?} has no hash outcome", e.operation, e.path),
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
