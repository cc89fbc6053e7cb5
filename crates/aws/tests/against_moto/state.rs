//! DynamoStateStore against moto.

use chrono::Utc;
use filetrail_aws::DynamoStateStore;
use filetrail_core::model::{
    Connection, ConnectionError, ConnectionKind, ConnectionState, DirectoryUser, DiscoverySummary, DriveState,
    Endpoints, IndexProgress, WriteApp,
};
use filetrail_core::ports::{CheckpointVersion, ConnectionStore, DiscoveryCheckpoint, DiscoveryRunStore, DriveStore};
use filetrail_core::scope::{GroupSelector, ScopeEntry, ScopeKind, UnresolvedEntry};

use crate::support::{at, aws, create_state_table, drive, failure};

async fn store() -> anyhow::Result<DynamoStateStore> {
    let aws = aws().await?;
    let table = create_state_table(&aws.dynamo).await?;
    Ok(DynamoStateStore::new(aws.dynamo, table))
}

fn connection(id: &str) -> anyhow::Result<Connection> {
    Ok(Connection {
        id: id.to_owned(),
        kind: ConnectionKind::Cloud,
        tenant_id: "8f2b9c1e-0000-4000-8000-000000000001".into(),
        client_id: "5a1c0d2e-0000-4000-8000-000000000002".into(),
        secret_id: format!("filetrail/{id}/app"),
        cloud: "custom".into(),
        endpoints: Some(Endpoints {
            login: "http://127.0.0.1:9/login".into(),
            graph: "http://127.0.0.1:9/v1.0".into(),
        }),
        trusted_domains: vec!["contoso.com".into(), "contoso.onmicrosoft.com".into()],
        drive_cap: 5000,
        state: ConnectionState::Active,
        last_error: Some(ConnectionError {
            code: "invalid_client".into(),
            message: "AADSTS7000215: Invalid client secret provided.".into(),
            fix: "store the current client secret with filetrail connection add".into(),
            at: at("2026-11-22T07:59:59.999999999Z")?,
        }),
        last_discovery: Some(DiscoverySummary {
            run_id: "run-1".into(),
            started_at: at("2026-11-22T07:00:00Z")?,
            finished_at: at("2026-11-22T07:05:00.25Z")?,
            users_seen: 120,
            drives_found: 100,
            drives_new: 3,
            users_without_drive: 20,
            scope: ScopeKind::Groups,
            unresolved: vec![UnresolvedEntry {
                entry: ScopeEntry::Group(GroupSelector::DisplayName("Finance Contractors".into())),
                reason: "group not found".into(),
            }],
            drives_unmonitored: 4,
            drives_returned: 1,
            drives_over_cap: 0,
            scope_version: Some("3f9a".into()),
            drives_of_other_connections: 2,
        }),
        created_at: at("2026-11-01T12:00:00.000001Z")?,
        write_app: Some(WriteApp {
            client_id: "5d3c1e2a-0000-4000-8000-00000000a11e".into(),
            secret_id: format!("filetrail-write/stack/{id}/app"),
            enabled_at: at("2026-11-02T08:00:00Z")?,
        }),
    })
}

#[tokio::test]
async fn inserting_drives_again_reports_only_new_ids_and_keeps_stored_records() -> anyhow::Result<()> {
    let store = store().await?;
    let first = [
        drive("contoso", "b!a", DriveState::Pending)?,
        drive("contoso", "b!b", DriveState::Pending)?,
    ];
    assert_eq!(store.insert_new_drives(&first).await?, ["b!a", "b!b"]);
    assert!(
        store
            .transition_drive("contoso", "b!a", DriveState::Pending, DriveState::Indexing)
            .await?
    );

    // GIVEN b!a known (and now indexing) WHEN discovery sees it again with b!c new
    let mut again_a = drive("contoso", "b!a", DriveState::Pending)?;
    again_a.owner_upn = "renamed@contoso.com".into();
    let second = [again_a, drive("contoso", "b!c", DriveState::Pending)?];
    let inserted = store.insert_new_drives(&second).await?;

    // THEN only b!c is reported, and b!a is left exactly as stored
    assert_eq!(inserted, ["b!c"]);
    let stored = store
        .drive("b!a")
        .await?
        .ok_or_else(|| anyhow::anyhow!("b!a missing"))?;
    assert_eq!(stored.state, DriveState::Indexing);
    assert_eq!(stored.owner_upn, "b!a@contoso.com");
    assert!(
        store.insert_new_drives(&second).await?.is_empty(),
        "a repeated call inserts nothing"
    );
    Ok(())
}

#[tokio::test]
async fn drive_round_trips_every_field() -> anyhow::Result<()> {
    let store = store().await?;
    let mut record = drive("contoso", "b!round", DriveState::Pending)?;
    record.parked = Some("invalid_client".into());
    record.web_url = None;
    store.insert_new_drives(std::slice::from_ref(&record)).await?;
    assert_eq!(store.drive("b!round").await?, Some(record));
    assert_eq!(store.drive("b!unknown").await?, None);
    Ok(())
}

#[tokio::test]
async fn transition_from_the_wrong_state_changes_nothing() -> anyhow::Result<()> {
    let store = store().await?;
    store
        .insert_new_drives(&[drive("contoso", "b!t", DriveState::Pending)?])
        .await?;

    let moved = store
        .transition_drive("contoso", "b!t", DriveState::Indexing, DriveState::Indexed)
        .await?;

    assert!(!moved);
    assert_eq!(store.drive("b!t").await?.map(|d| d.state), Some(DriveState::Pending));
    assert_eq!(store.count_drives("contoso", DriveState::Pending).await?, 1);
    assert_eq!(store.count_drives("contoso", DriveState::Indexed).await?, 0);
    assert!(
        !store
            .transition_drive("contoso", "b!nope", DriveState::Pending, DriveState::Indexing)
            .await?
    );
    Ok(())
}

#[tokio::test]
async fn redelivered_worker_with_a_stale_checkpoint_cannot_move_it_backwards() -> anyhow::Result<()> {
    let store = store().await?;
    store
        .insert_new_drives(&[drive("contoso", "b!p", DriveState::Indexing)?])
        .await?;
    let start = IndexProgress::default();
    let page1 = IndexProgress {
        generation: 0,
        pages: 1,
        items: 200,
        files: 180,
        folders: 20,
        bytes: 1 << 30,
        next_link: Some("https://graph/delta?token=page2".into()),
        started_at: Some(at("2026-11-22T09:00:00.5Z")?),
        ..IndexProgress::default()
    };
    // Worker A commits page 1.
    assert!(
        store
            .save_index_progress("contoso", "b!p", &start, &page1, DriveState::Indexing)
            .await?
    );

    // Worker B, a redelivery that also started from the initial checkpoint, tries to commit.
    let stale = IndexProgress {
        pages: 1,
        items: 999,
        next_link: Some("https://graph/stale".into()),
        ..start.clone()
    };
    let saved = store
        .save_index_progress("contoso", "b!p", &start, &stale, DriveState::Indexed)
        .await?;

    assert!(!saved);
    let stored = store
        .drive("b!p")
        .await?
        .ok_or_else(|| anyhow::anyhow!("b!p missing"))?;
    assert_eq!(stored.index, page1);
    assert_eq!(stored.state, DriveState::Indexing);
    Ok(())
}

#[tokio::test]
async fn completing_a_walk_stores_the_delta_link_clears_the_next_link_and_marks_the_drive_indexed() -> anyhow::Result<()>
{
    let store = store().await?;
    store
        .insert_new_drives(&[drive("contoso", "b!done", DriveState::Indexing)?])
        .await?;
    let page1 = IndexProgress {
        pages: 1,
        next_link: Some("https://graph/next".into()),
        ..Default::default()
    };
    assert!(
        store
            .save_index_progress(
                "contoso",
                "b!done",
                &IndexProgress::default(),
                &page1,
                DriveState::Indexing
            )
            .await?
    );
    let done = IndexProgress {
        pages: 2,
        next_link: None,
        delta_link: Some("https://graph/delta?token=final".into()),
        reconcile: true,
        completed_at: Some(at("2026-11-22T09:10:00Z")?),
        ..page1.clone()
    };

    assert!(
        store
            .save_index_progress("contoso", "b!done", &page1, &done, DriveState::Indexed)
            .await?
    );

    let stored = store
        .drive("b!done")
        .await?
        .ok_or_else(|| anyhow::anyhow!("b!done missing"))?;
    assert_eq!((stored.state, stored.index), (DriveState::Indexed, done));
    assert_eq!(store.count_drives("contoso", DriveState::Indexed).await?, 1);
    assert_eq!(store.count_drives("contoso", DriveState::Indexing).await?, 0);
    Ok(())
}

#[tokio::test]
async fn counts_and_listings_by_state_follow_transitions() -> anyhow::Result<()> {
    let store = store().await?.with_page_size(2);
    let drives: Vec<_> = (1..=5)
        .map(|i| drive("contoso", &format!("b!{i}"), DriveState::Pending))
        .collect::<Result<_, _>>()?;
    store.insert_new_drives(&drives).await?;
    store
        .insert_new_drives(&[drive("fabrikam", "b!other", DriveState::Pending)?])
        .await?;
    for id in ["b!1", "b!2", "b!3"] {
        assert!(
            store
                .transition_drive("contoso", id, DriveState::Pending, DriveState::Indexing)
                .await?
        );
    }
    assert!(
        store
            .transition_drive("contoso", "b!3", DriveState::Indexing, DriveState::Indexed)
            .await?
    );

    assert_eq!(store.count_drives("contoso", DriveState::Pending).await?, 2);
    assert_eq!(store.count_drives("contoso", DriveState::Indexing).await?, 2);
    assert_eq!(store.count_drives("contoso", DriveState::Indexed).await?, 1);
    assert_eq!(store.count_drives("contoso", DriveState::Unmonitored).await?, 0);
    assert_eq!(store.count_drives("fabrikam", DriveState::Pending).await?, 1);

    // Pages of 2 with an opaque cursor list each pending drive exactly once.
    let mut listed = Vec::new();
    let mut cursor = None;
    for _ in 0..10 {
        let (ids, next) = store.drive_ids_in_state("contoso", DriveState::Pending, cursor).await?;
        assert!(ids.len() <= 2);
        listed.extend(ids);
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "listing did not end");
    assert_eq!(listed, ["b!4", "b!5"]);
    Ok(())
}

#[tokio::test]
async fn a_cursor_the_store_did_not_hand_out_is_a_terminal_error() -> anyhow::Result<()> {
    let store = store().await?;
    let err = failure(
        store
            .drive_ids_in_state("contoso", DriveState::Pending, Some("page-2".into()))
            .await,
        "a foreign cursor must fail",
    )?;
    assert!(err.is_terminal(), "{err}");
    Ok(())
}

#[tokio::test]
async fn drives_are_read_in_batches_in_the_order_asked_and_unknown_ones_left_out() -> anyhow::Result<()> {
    let store = store().await?;
    let known = ["b!x", "b!y", "b!z"];
    let records: Vec<_> = known
        .iter()
        .map(|id| drive("contoso", id, DriveState::Pending))
        .collect::<Result<_, _>>()?;
    store.insert_new_drives(&records).await?;
    // 150 ids: two BatchGetItem calls of at most 100 keys.
    let mut ask: Vec<String> = (0..147).map(|i| format!("b!missing{i}")).collect();
    ask.insert(10, "b!z".into());
    ask.insert(120, "b!x".into());
    ask.push("b!y".into());
    let reads_before = store.read_requests();

    let found = store.drives(&ask).await?;

    let ids: Vec<&str> = found.iter().map(|d| d.drive_id.as_str()).collect();
    assert_eq!(ids, ["b!z", "b!x", "b!y"]);
    assert_eq!(store.read_requests() - reads_before, 2);
    Ok(())
}

#[tokio::test]
async fn parking_a_drive_is_stored_and_cleared() -> anyhow::Result<()> {
    let store = store().await?;
    store
        .insert_new_drives(&[drive("contoso", "b!park", DriveState::Indexing)?])
        .await?;

    store
        .set_drive_parked("contoso", "b!park", Some("invalid_client"))
        .await?;
    assert_eq!(
        store.drive("b!park").await?.and_then(|d| d.parked).as_deref(),
        Some("invalid_client")
    );
    store.set_drive_parked("contoso", "b!park", None).await?;
    assert_eq!(store.drive("b!park").await?.and_then(|d| d.parked), None);

    let err = failure(
        store.set_drive_parked("contoso", "b!ghost", Some("x")).await,
        "unknown drive",
    )?;
    assert!(err.is_terminal() && err.to_string().contains("b!ghost"), "{err}");
    Ok(())
}

#[tokio::test]
async fn no_write_for_one_connection_changes_another_connections_drive() -> anyhow::Result<()> {
    let store = store().await?;
    let owned = drive("contoso", "b!owned", DriveState::Indexing)?;
    store.insert_new_drives(std::slice::from_ref(&owned)).await?;
    let mut walked = owned.index.clone();
    walked.pages += 1;
    walked.generation = 1;

    // GIVEN the drive is contoso's WHEN fabrikam's jobs try every drive write
    assert!(
        !store
            .transition_drive("fabrikam", "b!owned", DriveState::Indexing, DriveState::Unmonitored)
            .await?
    );
    assert!(
        !store
            .save_index_progress("fabrikam", "b!owned", &owned.index, &walked, DriveState::Indexed)
            .await?
    );
    let err = failure(
        store
            .set_drive_parked("fabrikam", "b!owned", Some("invalid_client"))
            .await,
        "another connection's drive",
    )?;

    // THEN each is refused and the drive is exactly as contoso left it
    assert!(err.is_terminal() && err.to_string().contains("fabrikam"), "{err}");
    assert_eq!(store.drive("b!owned").await?, Some(owned.clone()));
    assert_eq!(store.count_drives("contoso", DriveState::Indexing).await?, 1);
    assert_eq!(store.count_drives("fabrikam", DriveState::Unmonitored).await?, 0);
    // ...while contoso's own job still may
    assert!(
        store
            .save_index_progress("contoso", "b!owned", &owned.index, &walked, DriveState::Indexed)
            .await?
    );
    assert_eq!(store.count_drives("contoso", DriveState::Indexed).await?, 1);
    Ok(())
}

#[tokio::test]
async fn users_without_drive_are_counted_once_each_even_when_recorded_twice() -> anyhow::Result<()> {
    let store = store().await?;
    let user = |id: &str| DirectoryUser {
        id: id.to_owned(),
        user_principal_name: format!("{id}@contoso.com"),
        display_name: Some(format!("User {id}")),
        mail: None,
    };
    let reason = "no OneDrive provisioned".to_owned();
    let batch: Vec<_> = (0..30).map(|i| (user(&format!("u{i}")), reason.clone())).collect();
    store.record_users_without_drive("contoso", &batch).await?;
    // The same users again (a later page or run), one of them twice in the same call.
    let mut again = batch[..5].to_vec();
    again.push(batch[0].clone());
    store.record_users_without_drive("contoso", &again).await?;
    store.record_users_without_drive("fabrikam", &batch[..2]).await?;

    assert_eq!(store.count_users_without_drive("contoso").await?, 30);
    store
        .clear_users_without_drive("contoso", &["u1".into(), "u2".into(), "u-never".into()])
        .await?;
    assert_eq!(store.count_users_without_drive("contoso").await?, 28);
    assert_eq!(store.count_users_without_drive("fabrikam").await?, 2);
    Ok(())
}

#[tokio::test]
async fn connection_round_trips_exactly_including_its_last_error() -> anyhow::Result<()> {
    let store = store().await?;
    let contoso = connection("contoso")?;
    let mut fabrikam = connection("fabrikam")?;
    fabrikam.last_error = None;
    fabrikam.endpoints = None;
    store.put_connection(&fabrikam).await?;
    store.put_connection(&contoso).await?;

    assert_eq!(store.connection("contoso").await?.as_ref(), Some(&contoso));
    assert_eq!(store.connections().await?, [contoso.clone(), fabrikam]);
    assert_eq!(store.connection("nobody").await?, None);
    Ok(())
}

#[tokio::test]
async fn connection_error_and_discovery_summary_are_set_and_cleared_in_place() -> anyhow::Result<()> {
    let store = store().await?;
    let mut expected = connection("contoso")?;
    store.put_connection(&expected).await?;

    store.set_connection_error("contoso", None).await?;
    let summary = DiscoverySummary {
        run_id: "run-2".into(),
        started_at: at("2026-11-22T08:00:00Z")?,
        finished_at: at("2026-11-22T08:01:00Z")?,
        users_seen: 121,
        drives_found: 101,
        drives_new: 1,
        users_without_drive: 20,
        scope: ScopeKind::Users,
        unresolved: Vec::new(),
        drives_unmonitored: 0,
        drives_returned: 0,
        drives_over_cap: 7,
        scope_version: None,
        drives_of_other_connections: 0,
    };
    store.set_last_discovery("contoso", &summary).await?;

    expected.last_error = None;
    expected.last_discovery = Some(summary);
    assert_eq!(store.connection("contoso").await?, Some(expected));
    let err = failure(store.set_connection_error("ghost", None).await, "unknown connection")?;
    assert!(err.is_terminal() && err.to_string().contains("ghost"), "{err}");
    Ok(())
}

#[tokio::test]
async fn discovery_checkpoint_is_saved_loaded_and_closed_only_by_the_holder_of_its_version() -> anyhow::Result<()> {
    let store = store().await?;
    store.put_connection(&connection("contoso")?).await?;
    let mut checkpoint = DiscoveryCheckpoint {
        run_id: "run-7".into(),
        seq: 0,
        started_at: Utc::now(),
        next_link: Some("https://graph.microsoft.com/v1.0/users?$skiptoken=X".into()),
        pages: 3,
        users_seen: 2997,
        drives_found: 2500,
        drives_new: 12,
        users_without_drive: 497,
        scope_version: "2026-11-22T07:59:00Z-groups.csv-0123456789ab".into(),
        position: 2,
        groups: Some(vec!["g-1".into(), "g-2".into(), "g-3".into()]),
        unresolved: vec![UnresolvedEntry {
            entry: ScopeEntry::Group(GroupSelector::Mail("gone@contoso.com".into())),
            reason: "group not found".into(),
        }],
        drives_monitored: 2490,
        drives_over_cap: 10,
        drives_returned: 3,
        drives_of_other_connections: 1,
    };
    assert_eq!(store.discovery_checkpoint("contoso").await?, None);

    // A new run: only if none is open.
    assert!(
        store
            .save_discovery_checkpoint("contoso", Some(&checkpoint), None)
            .await?
    );
    assert_eq!(store.discovery_checkpoint("contoso").await?, Some(checkpoint.clone()));
    let rival = DiscoveryCheckpoint::new("run-8".into(), Utc::now(), "all".into());
    assert!(!store.save_discovery_checkpoint("contoso", Some(&rival), None).await?);
    assert!(
        store.connection("contoso").await?.is_some(),
        "the checkpoint lives beside the connection"
    );
    assert_eq!(store.connections().await?.len(), 1);

    // Advancing: only from the version read.
    let read = checkpoint.version();
    checkpoint.seq += 1;
    checkpoint.pages += 1;
    assert!(
        store
            .save_discovery_checkpoint("contoso", Some(&checkpoint), Some(&read))
            .await?
    );
    let stale = DiscoveryCheckpoint {
        pages: 99,
        ..checkpoint.clone()
    };
    assert!(
        !store
            .save_discovery_checkpoint("contoso", Some(&stale), Some(&read))
            .await?,
        "an invocation holding an older version cannot move the run"
    );
    let other_run = CheckpointVersion {
        run_id: "run-6".into(),
        seq: 1,
    };
    assert!(
        !store
            .save_discovery_checkpoint("contoso", None, Some(&other_run))
            .await?
    );
    assert_eq!(store.discovery_checkpoint("contoso").await?, Some(checkpoint.clone()));

    // Closing: likewise.
    assert!(!store.save_discovery_checkpoint("contoso", None, Some(&read)).await?);
    assert!(
        store
            .save_discovery_checkpoint("contoso", None, Some(&checkpoint.version()))
            .await?
    );
    assert_eq!(store.discovery_checkpoint("contoso").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_missing_table_is_terminal_and_names_the_table_and_its_setting() -> anyhow::Result<()> {
    let aws = aws().await?;
    let store = DynamoStateStore::new(aws.dynamo, "ft-no-such-table");

    let err = failure(store.drive("b!1").await, "the table does not exist")?;

    assert!(err.is_terminal(), "{err}");
    assert_eq!(err.code, "ResourceNotFoundException");
    let text = err.to_string();
    assert!(
        text.contains("ft-no-such-table") && text.contains("FILETRAIL_STATE_TABLE"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn stale_export_marks_are_listed_oldest_first_and_a_renewed_mark_survives_its_clearing() -> anyhow::Result<()> {
    use filetrail_aws::export_store::DynamoExportCheckpoints;
    use filetrail_core::export::{ExportCheckpoints, ExportWindow, StaleExportMarks};

    let aws = aws().await?;
    let table = create_state_table(&aws.dynamo).await?;
    let marks = DynamoExportCheckpoints::new(aws.dynamo, table);
    let ten = ExportWindow::containing(at("2026-11-22T10:30:00Z")?);
    let nine = ExportWindow::containing(at("2026-11-22T09:05:00Z")?);
    let first = at("2026-11-22T12:00:00.123456789Z")?;
    marks.mark_stale("contoso", &[ten, nine], first).await?;
    marks.mark_stale("fabrikam", &[ten], first).await?;

    let stale = marks.stale_windows("contoso").await?;
    let windows: Vec<ExportWindow> = stale.iter().map(|s| s.window).collect();
    assert_eq!(windows, [nine, ten], "oldest first, this connection's only");
    assert!(
        stale.iter().all(|s| s.marked_at == first),
        "nanoseconds kept: {stale:?}"
    );
    assert!(
        marks.export_checkpoint("contoso").await?.is_none(),
        "marks are not the checkpoint"
    );

    // hash-file marks the 10:00 window again while the export rewrites it: the export's
    // clearing (of the mark it read) fails, the renewed mark stays for the next run.
    marks
        .mark_stale("contoso", &[ten], at("2026-11-22T12:00:00.123456790Z")?)
        .await?;
    assert!(
        marks.clear_stale("contoso", &stale[0]).await?,
        "the 09:00 mark was not renewed"
    );
    assert!(!marks.clear_stale("contoso", &stale[1]).await?);
    let left = marks.stale_windows("contoso").await?;
    assert_eq!(left.iter().map(|s| s.window).collect::<Vec<_>>(), [ten]);
    assert!(marks.clear_stale("contoso", &left[0]).await?);
    assert!(marks.stale_windows("contoso").await?.is_empty());
    assert_eq!(marks.stale_windows("fabrikam").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn write_mode_is_set_and_cleared_in_place_beside_a_discovery_summary() -> anyhow::Result<()> {
    let store = store().await?;
    let mut expected = connection("contoso")?;
    let app = expected.write_app.take().expect("the fixture has a write app");
    store.put_connection(&expected).await?;
    // An admin reads the record, a discovery finishes meanwhile, then write mode is turned on.
    let summary = DiscoverySummary {
        run_id: "run-3".into(),
        ..expected.last_discovery.clone().expect("the fixture has a summary")
    };
    store.set_last_discovery("contoso", &summary).await?;
    store.set_write_app("contoso", Some(&app)).await?;
    expected.last_discovery = Some(summary);
    expected.write_app = Some(app);
    assert_eq!(store.connection("contoso").await?.as_ref(), Some(&expected));

    store.set_write_app("contoso", None).await?;
    expected.write_app = None;
    assert_eq!(store.connection("contoso").await?, Some(expected));
    let err = failure(store.set_write_app("ghost", None).await, "unknown connection")?;
    assert!(err.is_terminal() && err.to_string().contains("ghost"), "{err}");
    Ok(())
}
