//! End to end on moto: file events recorded over several insertion hours are exported by the
//! export function (wired by the local runner as template.yaml wires it in AWS) to the bucket
//! as gzip JSON Lines, read back with the AWS SDK and checked one to one against DynamoDB;
//! retries, a crash between writing a window and moving the checkpoint, and the on-demand CLI
//! export never duplicate an event.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read as _;

use chrono::{DateTime, Duration, Utc};
use filetrail_aws::config::AwsResources;
use filetrail_aws::export_store::DynamoExportCheckpoints;
use filetrail_cli::export::Exporter;
use filetrail_cli::export::{ExportArgs, run as export_cli};
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::EXPORT_FUNCTION;
use filetrail_core::audit::{
    Actor, ActorKind, FileEvent, FileEventType, ItemKind, LinkScope, Permission, SharingTarget, TargetKind,
};
use filetrail_core::events::{EventRecord, EventSource, FileHashes, HashOutcome};
use filetrail_core::export::{
    EXPORT_PREFIX, ExportCheckpoint, ExportCheckpoints as _, ExportLine, floor_hour, partition_prefix, rfc3339,
};
use filetrail_core::jobs::HashJob;
use filetrail_core::ports::{ConnectionStore, EventStore as _, HashQueue as _};
use filetrail_e2e::{CONNECTION, Stack};
use m365_sim::{ActivityConfig, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};
use serde_json::Value;

/// Settled insertion hours the scenario records events in: 2 to 6 hours before the current one
/// (always past the 20-minute settle margin, whatever the minute the test runs at).
const HOURS_BACK: std::ops::RangeInclusive<i64> = 2..=6;
/// Events per hour.
const PER_HOUR: usize = 45;

fn tiny_tenant() -> SimConfig {
    SimConfig {
        users: 2,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 1, max: 2 },
        ..SimConfig::default()
    }
}

fn event(id: &str, kind: usize, observed: DateTime<Utc>, inserted: DateTime<Utc>) -> EventRecord {
    let user = format!("user{}@contoso.example", kind % 3);
    let sharing = (kind % 5 == 0).then(|| filetrail_core::audit::Sharing {
        link_scope: Some(LinkScope::Anonymous),
        permission: Some(Permission::Edit),
        permission_detail: None,
        targets: vec![SharingTarget {
            name: "partner@fabrikam.example".into(),
            kind: TargetKind::User,
            email: Some("partner@fabrikam.example".into()),
            directory_type: None,
            external: Some(true),
        }],
        external: Some(true),
        unique_sharing_id: None,
        event_data: None,
    });
    EventRecord {
        connection: CONNECTION.into(),
        source: EventSource::OneDrive,
        event: FileEvent {
            id: id.into(),
            event_type: if sharing.is_some() {
                FileEventType::AnonymousLinkCreated
            } else {
                FileEventType::Modified
            },
            low_signal: false,
            operation: if sharing.is_some() {
                "AnonymousLinkCreated".into()
            } else {
                "FileModified".into()
            },
            record_type: 6,
            item_kind: ItemKind::File,
            actor: Actor {
                id: user.clone(),
                upn: Some(user.clone()),
                email: Some(user.clone()),
                kind: ActorKind::User,
                user_type: Some(0),
                user_key: None,
                external: Some(false),
            },
            owner_upn: Some(user.clone()),
            site_key: None,
            site_url: Some("https://contoso-my.sharepoint.com/personal/user".into()),
            object_url: None,
            file_name: Some(format!("report-{kind}.docx")),
            path: Some(format!("/Reports/report-{kind}.docx")),
            extension: Some("docx".into()),
            destination: None,
            list_id: None,
            list_item_unique_id: None,
            drive_id: Some("b!drive".into()),
            item_id: Some(format!("01ITEM{kind:04}")),
            unresolved: None,
            observed_at: observed,
            inserted_at: inserted,
            client_ip: Some("203.0.113.7".into()),
            user_agent: Some("OneDriveMpc-Transform_Thumbnail/1.0".into()),
            result_status: None,
            sharing,
        },
        hash: None,
    }
}

/// Records the scenario's events with the events table's own adapter: `PER_HOUR` events in each
/// settled hour (observed up to two days earlier, so one window writes into several
/// partitions), a few hashed or without digest, and one event in the current, unsettled hour.
/// Returns the keys of the settled events and of the unsettled one.
async fn record_events(stack: &Stack, now: DateTime<Utc>) -> (BTreeSet<String>, String) {
    let store = stack.event_store();
    let this_hour = floor_hour(now);
    let mut records = Vec::new();
    for back in HOURS_BACK {
        let hour = this_hour - Duration::hours(back);
        for i in 0..PER_HOUR {
            let inserted = hour + Duration::seconds(i as i64 * 79) + Duration::milliseconds(i as i64);
            let observed = inserted - Duration::minutes((i as i64 * 37) % (48 * 60));
            records.push(event(&format!("rec-{back}-{i:03}"), i, observed, inserted));
        }
    }
    let settled: BTreeSet<String> = records.iter().map(EventRecord::key).collect();
    let unsettled = event("rec-now", 1, now, now);
    records.push(unsettled.clone());
    let inserted = store.insert_events(&records).await.unwrap();
    assert_eq!(inserted.len(), records.len());

    // Hashes as hash-file records them: some hashed (uppercase hex from the digest API is
    // stored as given and exported lowercase), some without digest; the rest stay pending.
    let hashed: Vec<String> = records.iter().step_by(3).map(EventRecord::key).collect();
    let outcome = HashOutcome::Hashed(FileHashes {
        version: None,
        md5: "9E107D9D372BB6826BD81D3542A419D6".into(),
        sha256: "D7A8FBB307D7809469CA9ABCB0082E4F8D5651E46D3CDB762D02D0BF37C9E592".into(),
        ctag: "c:{AAAA},3".into(),
        size: 43,
        modified_at: None,
        hashed_at: now - Duration::hours(1),
    });
    store.set_event_hash(&hashed, &outcome).await.unwrap();
    let gone: Vec<String> = records.iter().skip(1).step_by(7).map(EventRecord::key).collect();
    store
        .set_event_hash(
            &gone,
            &HashOutcome::Unavailable {
                reason: "file deleted before it could be hashed".into(),
            },
        )
        .await
        .unwrap();
    (settled, unsettled.key())
}

/// Every exported object: key -> the JSON lines it holds.
async fn exported(stack: &Stack) -> BTreeMap<String, Vec<Value>> {
    let s3 = filetrail_aws::s3_client(&stack.sdk);
    let bucket = stack.objects().bucket().to_owned();
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(EXPORT_PREFIX)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut objects = BTreeMap::new();
    for key in keys {
        let body = s3.get_object().bucket(&bucket).key(&key).send().await.unwrap();
        let bytes = body.body.collect().await.unwrap().into_bytes();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{key} is not gzip: {e}"));
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{key}: not JSON ({e}): {l}")))
            .collect();
        objects.insert(key, lines);
    }
    objects
}

/// Exported lines by event key; fails on an event exported twice or in the wrong partition.
fn lines_by_key(objects: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Value> {
    let mut by_key = BTreeMap::new();
    for (object, lines) in objects {
        assert!(object.ends_with(".json.gz"), "{object}");
        for line in lines {
            let observed: DateTime<Utc> = line["observed_at"].as_str().unwrap().parse().unwrap();
            assert!(
                object.starts_with(&partition_prefix(floor_hour(observed))),
                "{object} holds an event that happened at {observed}"
            );
            let key = format!(
                "{}#{}",
                line["connection"].as_str().unwrap(),
                line["event_id"].as_str().unwrap()
            );
            assert!(
                by_key.insert(key.clone(), line.clone()).is_none(),
                "{key} exported twice"
            );
        }
    }
    by_key
}

fn resources(stack: &Stack) -> AwsResources {
    let env: HashMap<String, String> = stack
        .provisioned
        .cli_env(&stack.template)
        .unwrap()
        .into_iter()
        .collect();
    AwsResources::from_env_map(&env).unwrap()
}

fn checkpoints(stack: &Stack) -> DynamoExportCheckpoints {
    let table = resources(stack).require_state_table().unwrap().to_owned();
    DynamoExportCheckpoints::new(aws_sdk_dynamodb::Client::new(&stack.sdk), table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_every_settled_event_once_and_retries_and_the_cli_never_duplicate() {
    let stack = Stack::start(tiny_tenant()).await.unwrap();
    let now = Utc::now();
    // A connection registered 8 hours ago: its export starts at that hour.
    let mut connection = stack.register("secret").await.unwrap();
    connection.created_at = floor_hour(now) - Duration::hours(8);
    stack.state().put_connection(&connection).await.unwrap();
    let (settled, unsettled) = record_events(&stack, now).await;
    let runner = stack.runner(&[], |_| {}).unwrap();

    // WHEN the hourly schedule fires
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    let result = &results[0][CONNECTION];
    assert_eq!(result["outcome"], "caught_up", "{results:?}");
    assert_eq!(result["events"], settled.len() as u64, "{results:?}");

    // THEN every settled event is in the bucket exactly once, equal to what DynamoDB holds
    let objects = exported(&stack).await;
    let lines = lines_by_key(&objects);
    assert_eq!(lines.keys().cloned().collect::<BTreeSet<_>>(), settled);
    assert!(
        !lines.contains_key(&unsettled),
        "an event of the open hour waits for it to settle"
    );
    let stored = stack.events().await.unwrap();
    for (key, line) in &lines {
        let record = &stored[key];
        assert_eq!(*line, serde_json::to_value(ExportLine::of(record)).unwrap(), "{key}");
        assert_eq!(line["observed_at"], rfc3339(&record.event.observed_at));
        assert!(line["observed_at"].as_str().unwrap().ends_with('Z'));
        match &record.hash {
            Some(HashOutcome::Hashed(h)) => {
                assert_eq!(line["sha256"], h.sha256.to_lowercase());
                assert_eq!(line["md5"], h.md5.to_lowercase());
            }
            Some(HashOutcome::Unavailable { reason }) => {
                assert!(line["sha256"].is_null());
                assert_eq!(line["hash_unavailable_reason"], reason.as_str());
            }
            None => assert_eq!(line["hash_status"], "pending"),
        }
    }
    assert!(
        lines
            .values()
            .any(|l| l["link_scope"] == "anonymous" && l["sharing_targets"][0]["external"] == true),
        "sharing details are exported"
    );
    let partitions: BTreeSet<&str> = objects.keys().map(|k| &k[..k.rfind('/').unwrap()]).collect();
    assert!(
        partitions.len() > HOURS_BACK.count(),
        "partitioned by observed hour: {partitions:?}"
    );
    let cp = checkpoints(&stack)
        .export_checkpoint(CONNECTION)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.events_exported, settled.len() as u64);
    assert!(cp.next_window > floor_hour(now) - Duration::hours(2));

    // WHEN it fires again: nothing new is settled, nothing is written
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    assert_eq!(results[0][CONNECTION]["windows"], 0, "{results:?}");
    assert_eq!(exported(&stack).await, objects);

    // WHEN a run crashed after writing its windows but before moving the checkpoint: the
    // checkpoint is back where that run started, and the schedule exports those hours again
    let store = checkpoints(&stack);
    let crashed = ExportCheckpoint {
        next_window: connection.created_at,
        events_exported: 0,
        last_run_at: None,
    };
    assert!(
        store
            .save_export_checkpoint(CONNECTION, Some(&cp), &crashed)
            .await
            .unwrap()
    );
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    assert_eq!(results[0][CONNECTION]["events"], settled.len() as u64, "{results:?}");
    // THEN the same objects hold the same events: no duplicate, nothing lost
    let again = exported(&stack).await;
    assert_eq!(again.keys().collect::<Vec<_>>(), objects.keys().collect::<Vec<_>>());
    assert_eq!(lines_by_key(&again), lines);

    // WHEN an analyst exports the same range on demand
    let summary = export_cli(
        &stack.sdk,
        &resources(&stack),
        &ExportArgs {
            connection: CONNECTION.into(),
            since: "9h".into(),
            until: None,
            include_open_hours: false,
        },
        Utc::now(),
        false,
    )
    .await
    .unwrap();
    // THEN it writes the keys the schedule wrote, and the bucket still holds each event once
    assert_eq!(
        summary.objects.iter().collect::<BTreeSet<_>>(),
        objects.keys().collect::<BTreeSet<_>>()
    );
    assert_eq!(summary.events, settled.len() as u64);
    assert!(
        summary.unsettled_from.is_some(),
        "the open hour is left to the schedule"
    );
    let line = summary.line();
    assert!(
        line.contains(&format!("Exported {} events", settled.len())) && line.contains("s3://"),
        "{line}"
    );
    assert_eq!(lines_by_key(&exported(&stack).await), lines);

    // WHEN an analyst also exports the hour still being recorded
    let open = export_cli(
        &stack.sdk,
        &resources(&stack),
        &ExportArgs {
            connection: CONNECTION.into(),
            since: "9h".into(),
            until: None,
            include_open_hours: true,
        },
        Utc::now(),
        false,
    )
    .await
    .unwrap();
    // THEN every recorded event is in the bucket once, the open hour's too
    assert!(open.unsettled_from.is_none());
    // (lines_by_key fails on an event exported twice)
    let all = lines_by_key(&exported(&stack).await);
    assert_eq!(open.events, all.len() as u64);
    assert!(
        open.events > settled.len() as u64,
        "the open hour's events are exported too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_export_errors_name_the_bad_value_and_the_fix() {
    let stack = Stack::start(tiny_tenant()).await.unwrap();
    stack.register("secret").await.unwrap();
    let args = |since: &str| ExportArgs {
        connection: CONNECTION.into(),
        since: since.into(),
        until: None,
        include_open_hours: false,
    };

    let err = export_cli(&stack.sdk, &resources(&stack), &args("last tuesday"), Utc::now(), false)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("--since \"last tuesday\""), "{text}");
    assert!(
        text.contains("RFC 3339") && text.contains("36h") && text.contains("7d"),
        "{text}"
    );

    let mut no_bucket = resources(&stack);
    no_bucket.bucket = None;
    let err = export_cli(&stack.sdk, &no_bucket, &args("7d"), Utc::now(), false)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("no bucket configured") && text.contains("FILETRAIL_BUCKET"),
        "{text}"
    );

    let mut unknown = args("7d");
    unknown.connection = "fabrikam".into();
    let err = export_cli(&stack.sdk, &resources(&stack), &unknown, Utc::now(), false)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no connection named \"fabrikam\""),
        "{err:#}"
    );

    let mut backwards = args("2026-11-01T00:00:00Z");
    backwards.until = Some("2026-10-01".into());
    let err = export_cli(&stack.sdk, &resources(&stack), &backwards, Utc::now(), false)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("is not before --until"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_pipeline_recorded_are_exported_one_to_one() {
    let stack = Stack::start(SimConfig {
        users: 3,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 3, max: 6 },
        activity: ActivityConfig {
            publication_delay: std::time::Duration::from_millis(300),
            late_rate: 0.0,
            duplicate_rate: 0.05,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    stack.discover_and_index(&runner).await.unwrap();
    let drives: Vec<String> = stack.monitored_drives().await.unwrap().into_iter().collect();
    // GIVEN 150 things happened in the tenant over the last half hour, polled, ingested, hashed
    stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 150,
                seed: 5,
                drives,
                mix: None,
                start: Some(Utc::now() - Duration::minutes(30)),
                step_ms: 5_000,
            }),
            return_records: false,
        })
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    stack.poll_until_caught_up(&runner).await.unwrap();
    let stored = stack.events().await.unwrap();
    assert!(stored.len() >= 100, "{} events recorded", stored.len());

    // WHEN their insertion hours are exported (still open, so through the benchmark's entry)
    let exporter = Exporter::new(&stack.sdk, &resources(&stack)).unwrap();
    let hours: BTreeSet<DateTime<Utc>> = stored.values().map(|e| floor_hour(e.event.inserted_at)).collect();
    let mut count = 0;
    for hour in &hours {
        count += exporter.export_window(CONNECTION, *hour).await.unwrap();
    }

    // THEN the bucket holds each event once, each line equal to the event DynamoDB holds
    assert_eq!(count, stored.len() as u64);
    let lines = lines_by_key(&exported(&stack).await);
    assert_eq!(
        lines.keys().collect::<BTreeSet<_>>(),
        stored.keys().collect::<BTreeSet<_>>()
    );
    for (key, line) in &lines {
        assert_eq!(
            *line,
            serde_json::to_value(ExportLine::of(&stored[key])).unwrap(),
            "{key}"
        );
    }
    let hashed: Vec<&Value> = lines.values().filter(|l| l["hash_status"] == "hashed").collect();
    assert!(!hashed.is_empty(), "the pipeline hashed files before the export");
    for line in hashed {
        let sha = line["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{sha}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_hashed_after_its_hour_was_exported_is_exported_again_with_its_digests() {
    let stack = Stack::start(tiny_tenant()).await.unwrap();
    let now = Utc::now();
    let mut connection = stack.register(stack.sim.client_secret()).await.unwrap();
    connection.created_at = floor_hour(now) - Duration::hours(8);
    stack.state().put_connection(&connection).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    stack.discover_and_index(&runner).await.unwrap();
    let file = stack
        .inventory()
        .await
        .unwrap()
        .into_iter()
        .find(|i| !i.is_folder)
        .unwrap();

    // GIVEN a download of a real file recorded three hours ago, and another event of that hour,
    // exported by the schedule before the file was hashed
    let inserted = floor_hour(now) - Duration::hours(3) + Duration::minutes(10);
    let mut download = event("rec-download", 1, inserted - Duration::minutes(50), inserted);
    download.event.event_type = FileEventType::Downloaded;
    download.event.operation = "FileDownloaded".into();
    download.event.drive_id = Some(file.drive_id.clone());
    download.event.item_id = Some(file.item_id.clone());
    let neighbour = event(
        "rec-neighbour",
        2,
        inserted - Duration::hours(2),
        inserted + Duration::minutes(1),
    );
    stack
        .event_store()
        .insert_events(&[download.clone(), neighbour.clone()])
        .await
        .unwrap();
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    assert_eq!(results[0][CONNECTION]["events"], 2, "{results:?}");
    let before = exported(&stack).await;
    assert_eq!(lines_by_key(&before)[&download.key()]["hash_status"], "pending");

    // WHEN hash-file hashes the file (its job queued as ingest-activity queues it)
    stack
        .queue("HashQueue")
        .enqueue_hashes(&[HashJob {
            previous_versions: false,
            connection: CONNECTION.to_owned(),
            drive_id: file.drive_id.clone(),
            item_id: file.item_id.clone(),
            continuation: None,
        }])
        .await
        .unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
    let stored = stack.events().await.unwrap();
    let Some(HashOutcome::Hashed(digests)) = &stored[&download.key()].hash else {
        panic!(
            "hash-file gave the download its digests: {:?}",
            stored[&download.key()].hash
        );
    };

    // AND `filetrail status` says an exported hour waits to be written again
    assert!(
        export_line(&stack)
            .await
            .contains("; 1 hour to write again with digests recorded since"),
        "{}",
        export_line(&stack).await
    );

    // THEN the next scheduled export writes that hour again, to the same objects: each event
    // once, the download with its digests, the other event as it was
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    let result = &results[0][CONNECTION];
    assert_eq!(
        (result["windows"].as_u64(), result["rewritten_windows"].as_u64()),
        (Some(0), Some(1)),
        "{results:?}"
    );
    let after = exported(&stack).await;
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    let lines = lines_by_key(&after);
    assert_eq!(lines.len(), 2);
    assert_eq!(after.values().map(Vec::len).sum::<usize>(), 2, "no event twice");
    let line = &lines[&download.key()];
    assert_eq!(line["hash_status"], "hashed");
    assert_eq!(line["sha256"], digests.sha256.to_lowercase());
    assert_eq!(line["md5"], digests.md5.to_lowercase());
    assert_eq!(lines[&neighbour.key()], lines_by_key(&before)[&neighbour.key()]);

    // AND a third run has nothing to write again
    let results = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    assert_eq!(results[0][CONNECTION]["rewritten_windows"], 0, "{results:?}");
    let line = export_line(&stack).await;
    assert!(line.contains("(2 events)") && !line.contains("write again"), "{line}");
}

/// The export line of `filetrail status` for the connection.
async fn export_line(stack: &Stack) -> String {
    use filetrail_cli::status;
    let mut statuses = status::collect(&stack.state(), Some(CONNECTION)).await.unwrap();
    let (sqs, ddb, s3) = (
        aws_sdk_sqs::Client::new(&stack.sdk),
        aws_sdk_dynamodb::Client::new(&stack.sdk),
        aws_sdk_s3::Client::new(&stack.sdk),
    );
    let exports = checkpoints(stack);
    let deployment = status::Deployment {
        sqs: &sqs,
        ddb: &ddb,
        s3: &s3,
        queue_urls: Vec::new(),
        events_table: None,
        bucket: None,
        exports: Some(&exports),
    };
    assert!(
        status::add_deployment(&mut statuses, &deployment, Utc::now())
            .await
            .is_empty()
    );
    let text = status::render(&statuses, Utc::now());
    text.lines()
        .find(|l| l.trim_start().starts_with("export"))
        .unwrap_or_default()
        .to_owned()
}
