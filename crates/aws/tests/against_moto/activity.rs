//! ActivityState on the state table, InventoryHashes on the inventory table and the quarantine
//! objects, against moto.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Duration;
use filetrail_aws::inventory::{DRIVE_ID, HASH_PREFIX, ITEM_ID};
use filetrail_aws::objects::{QuarantineDocument, quarantine_key};
use filetrail_aws::state::{EXPIRES_AT, PK, SK};
use filetrail_aws::{BucketObjects, DynamoInventoryStore, DynamoStateStore};
use filetrail_core::activity::{ActivityCheckpoint, BlobCounts, ContentBlob, ParkedBlob};
use filetrail_core::audit::{Quarantine, QuarantineReason};
use filetrail_core::events::{FileHashes, HashOutcome};
use filetrail_core::model::DriveState;
use filetrail_core::ports::{ActivityState, DriveStore, InventoryHashes, InventoryStore, QuarantineStore};

use crate::support::{at, aws, create_bucket, create_inventory_table, create_state_table, drive, row};

async fn state() -> anyhow::Result<(DynamoStateStore, aws_sdk_dynamodb::Client, String)> {
    let aws = aws().await?;
    let table = create_state_table(&aws.dynamo).await?;
    Ok((
        DynamoStateStore::new(aws.dynamo.clone(), table.clone()),
        aws.dynamo,
        table,
    ))
}

async fn inventory() -> anyhow::Result<(DynamoInventoryStore, aws_sdk_dynamodb::Client, String)> {
    let aws = aws().await?;
    let table = create_inventory_table(&aws.dynamo).await?;
    Ok((
        DynamoInventoryStore::new(aws.dynamo.clone(), table.clone()),
        aws.dynamo,
        table,
    ))
}

fn blob(id: &str) -> anyhow::Result<ContentBlob> {
    Ok(ContentBlob {
        content_type: "Audit.SharePoint".into(),
        content_id: id.to_owned(),
        content_uri: format!("https://manage.office.com/api/v1.0/t/activity/feed/audit/{id}$audit_sharepoint"),
        content_created: at("2026-11-22T08:00:00.25Z")?,
        content_expiration: None,
    })
}

fn hashes(ctag: &str) -> anyhow::Result<FileHashes> {
    Ok(FileHashes {
        version: None,
        md5: "0cc175b9c0f1b6a831c399e269772661".into(),
        sha256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".into(),
        ctag: ctag.to_owned(),
        size: 1234,
        modified_at: Some(at("2026-02-03T04:05:06.789Z")?),
        hashed_at: at("2026-11-22T10:00:00.000001Z")?,
    })
}

#[tokio::test]
async fn activity_checkpoint_round_trips_per_connection_and_content_type() -> anyhow::Result<()> {
    let (store, _, _) = state().await?;
    let checkpoint = ActivityCheckpoint {
        listed_until: at("2026-11-22T08:00:00.5Z")?,
        window: None,
        last_poll_at: Some(at("2026-11-22T08:05:00Z")?),
        last_success_at: None,
        blobs_enqueued: 42,
        last_error: None,
    };

    store
        .save_activity_checkpoint("contoso", "Audit.SharePoint", &checkpoint)
        .await?;

    assert_eq!(
        store.activity_checkpoint("contoso", "Audit.SharePoint").await?,
        Some(checkpoint)
    );
    assert_eq!(store.activity_checkpoint("contoso", "Audit.Exchange").await?, None);
    assert_eq!(store.activity_checkpoint("fabrikam", "Audit.SharePoint").await?, None);
    Ok(())
}

#[tokio::test]
async fn marked_blobs_are_known_with_their_ttl_and_others_are_not() -> anyhow::Result<()> {
    let (store, client, table) = state().await?;
    let keep_until = at("2026-11-30T08:00:00Z")?;
    let marked: Vec<ContentBlob> = (0..130).map(|i| blob(&format!("b{i:03}"))).collect::<Result<_, _>>()?;

    store.mark_blobs_enqueued("contoso", &marked, keep_until).await?;

    // 150 ids: more than one BatchGetItem of 100 keys.
    let ask: Vec<String> = (0..150).map(|i| format!("b{i:03}")).collect();
    let known = store.known_blobs("contoso", &ask).await?;
    let expected: HashSet<String> = (0..130).map(|i| format!("b{i:03}")).collect();
    assert_eq!(known, expected);
    assert!(
        store.known_blobs("fabrikam", &ask).await?.is_empty(),
        "markers belong to their connection"
    );
    let item = client
        .get_item()
        .table_name(&table)
        .key(PK, AttributeValue::S("CONN#contoso".into()))
        .key(SK, AttributeValue::S("BLOB#b007".into()))
        .send()
        .await?
        .item
        .unwrap_or_default();
    assert_eq!(
        item.get(EXPIRES_AT),
        Some(&AttributeValue::N(keep_until.timestamp().to_string())),
        "the marker expires at keep_until through the table's TTL attribute"
    );
    Ok(())
}

#[tokio::test]
async fn ingest_records_replace_per_blob_and_sum_for_status() -> anyhow::Result<()> {
    let (store, client, table) = state().await?;
    let ingested_at = at("2026-11-22T09:00:00Z")?;
    let counts = |records, quarantined| BlobCounts {
        records,
        events_inserted: records - quarantined,
        quarantined,
        ingested_at: Some(ingested_at),
        ..BlobCounts::default()
    };
    store
        .mark_blobs_enqueued("contoso", &[blob("b1")?], ingested_at)
        .await?;
    store.record_blob_ingested("contoso", "b1", &counts(10, 3)).await?;
    // A redelivery of b1 replaces its record; a mark after ingestion does not erase it.
    store.record_blob_ingested("contoso", "b1", &counts(10, 2)).await?;
    store
        .mark_blobs_enqueued("contoso", &[blob("b1")?], ingested_at)
        .await?;
    store.record_blob_ingested("contoso", "b2", &counts(5, 1)).await?;
    store.record_blob_ingested("fabrikam", "b9", &counts(100, 50)).await?;

    let totals = store.blob_totals("contoso").await?;

    assert_eq!(
        (totals.blobs, totals.records, totals.quarantined, totals.events_inserted),
        (2, 15, 3, 12)
    );
    assert_eq!(totals.last_ingested_at, Some(ingested_at));
    assert_eq!(store.blob_ingested("contoso", "b1").await?, Some(counts(10, 2)));
    let item = client
        .get_item()
        .table_name(&table)
        .key(PK, AttributeValue::S("CONN#contoso".into()))
        .key(SK, AttributeValue::S("INGESTED#b2".into()))
        .send()
        .await?
        .item
        .unwrap_or_default();
    let expires = (ingested_at + Duration::days(filetrail_aws::state::activity::INGESTED_TTL_DAYS)).timestamp();
    assert_eq!(item.get(EXPIRES_AT), Some(&AttributeValue::N(expires.to_string())));
    Ok(())
}

#[tokio::test]
async fn parked_blobs_keep_their_first_parking_time_list_oldest_first_per_connection_and_expire_after_the_content()
-> anyhow::Result<()> {
    let (store, client, table) = state().await?;
    let first_at = at("2026-11-22T09:00:00Z")?;
    let parked = |id: &str, parked_at, records| -> anyhow::Result<ParkedBlob> {
        Ok(ParkedBlob {
            blob: blob(id)?,
            parked_at,
            updated_at: parked_at,
            records,
            oldest_record: at("2026-11-22T07:10:00Z")?,
            site_keys: vec!["megan_contoso_com".into()],
            unread: false,
        })
    };
    store
        .park_blob("contoso", &parked("b2", first_at + Duration::minutes(5), 3)?)
        .await?;
    store.park_blob("contoso", &parked("b1", first_at, 7)?).await?;
    // b1 parked again by a later pass (fewer records wait now): its first parking time stays.
    store
        .park_blob("contoso", &parked("b1", first_at + Duration::hours(1), 2)?)
        .await?;
    store.park_blob("fabrikam", &parked("b9", first_at, 1)?).await?;

    let listed = store.parked_blobs("contoso").await?;
    let summary: Vec<(String, _, u64)> = listed
        .iter()
        .map(|p| (p.blob.content_id.clone(), p.parked_at, p.records))
        .collect();
    assert_eq!(
        summary,
        [
            ("b1".to_owned(), first_at, 2),
            ("b2".to_owned(), first_at + Duration::minutes(5), 3)
        ]
    );
    assert_eq!(listed[0].updated_at, first_at + Duration::hours(1));
    assert_eq!(
        listed[0].blob,
        blob("b1")?,
        "the blob is enqueued again as it was listed"
    );
    let item = client
        .get_item()
        .table_name(&table)
        .key(PK, AttributeValue::S("CONN#contoso".into()))
        .key(SK, AttributeValue::S("PARKED#b1".into()))
        .send()
        .await?
        .item
        .unwrap_or_default();
    let expires = (blob("b1")?.expires_at() + Duration::days(1)).timestamp();
    assert_eq!(item.get(EXPIRES_AT), Some(&AttributeValue::N(expires.to_string())));

    store.unpark_blob("contoso", "b1").await?;
    store.unpark_blob("contoso", "never-parked").await?;
    let left: Vec<String> = store
        .parked_blobs("contoso")
        .await?
        .into_iter()
        .map(|p| p.blob.content_id)
        .collect();
    assert_eq!(left, ["b2"]);
    assert_eq!(store.parked_blobs("fabrikam").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn ingest_totals_sum_drops_by_reason_and_records_parked_now() -> anyhow::Result<()> {
    let (store, _, _) = state().await?;
    let with = |dropped: &[(&str, u64)], parked| BlobCounts {
        records: 10,
        dropped: dropped.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect(),
        parked,
        ..BlobCounts::default()
    };
    store
        .record_blob_ingested(
            "contoso",
            "b1",
            &with(&[("drive_not_monitored", 4), ("not_onedrive", 1)], 2),
        )
        .await?;
    store
        .record_blob_ingested("contoso", "b2", &with(&[("drive_not_monitored", 3)], 0))
        .await?;
    let totals = store.ingest_totals("contoso").await?;
    assert_eq!(totals.dropped.get("drive_not_monitored"), Some(&7));
    assert_eq!(totals.dropped.get("not_onedrive"), Some(&1));
    assert_eq!((totals.parked, totals.records, totals.blobs), (2, 20, 2));
    Ok(())
}

#[tokio::test]
async fn drives_are_found_by_the_site_key_of_their_web_url_within_their_connection() -> anyhow::Result<()> {
    let (store, _, _) = state().await?;
    let mut alex = drive("contoso", "b!alex", DriveState::Indexed)?;
    alex.web_url = Some("https://contoso-my.sharepoint.com/personal/Alex_Contoso_com/Documents".into());
    let mut encoded = drive("contoso", "b!megan", DriveState::Unmonitored)?;
    encoded.web_url = Some("https://contoso-my.sharepoint.com/personal/megan%5Fcontoso%5Fcom/Documents".into());
    let mut other_tenant = drive("fabrikam", "b!alex-f", DriveState::Indexed)?;
    other_tenant.web_url = alex.web_url.clone();
    let mut no_url = drive("contoso", "b!nourl", DriveState::Indexed)?;
    no_url.web_url = None;
    store
        .insert_new_drives(&[alex.clone(), encoded.clone(), other_tenant, no_url])
        .await?;

    let found = store
        .drives_by_site_key(
            "contoso",
            &[
                "alex_contoso_com".into(),
                "megan_contoso_com".into(),
                "nobody_contoso_com".into(),
            ],
        )
        .await?;

    let mut ids: Vec<&str> = found.iter().map(|d| d.drive_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        ["b!alex", "b!megan"],
        "whatever their state, not another connection's"
    );
    assert_eq!(found.iter().find(|d| d.drive_id == "b!alex"), Some(&alex));
    assert!(store.drives_by_site_key("contoso", &[]).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn hashes_live_beside_rows_and_survive_a_row_rewrite() -> anyhow::Result<()> {
    let (store, _, _) = inventory().await?;
    let file = row("b!h", "file", "/Docs/report.pdf", 1)?;
    let unhashed = row("b!h", "plain", "/Docs/plain.txt", 1)?;
    store.put_rows(&[file.clone(), unhashed.clone()]).await?;
    let h = hashes("\"c:{file},1\"")?;

    store
        .set_file_hash("contoso", "b!h", "file", &HashOutcome::Hashed(h.clone()))
        .await?;
    store
        .set_file_hash(
            "contoso",
            "b!h",
            "no-row",
            &HashOutcome::Unavailable {
                reason: "file deleted before it could be hashed".into(),
            },
        )
        .await?;
    // index-drive writes the whole row again (a later round).
    store.put_rows(&[row("b!h", "file", "/Docs/report.pdf", 2)?]).await?;

    let ask = vec![
        "plain".to_owned(),
        "file".to_owned(),
        "no-row".to_owned(),
        "file".to_owned(),
    ];
    assert_eq!(store.file_hashes("b!h", &ask).await?, [("file".to_owned(), h.clone())]);
    let merged = store.row_with_hash("b!h", "file").await?.expect("the row exists");
    assert_eq!(merged.hash, Some(HashOutcome::Hashed(h.clone())));
    assert_eq!(merged.row.md5.as_deref(), Some(h.md5.as_str()));
    assert_eq!(merged.row.sha256.as_deref(), Some(h.sha256.as_str()));
    assert_eq!(merged.row.hash_unavailable, None);
    assert_eq!(merged.row.generation, 2);
    let plain = store.row_with_hash("b!h", "plain").await?.expect("the row exists");
    assert_eq!((plain.row, plain.hash), (unhashed, None));
    assert!(store.row_with_hash("b!h", "no-row").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn hash_siblings_stay_out_of_listings_and_generation_sweeps() -> anyhow::Result<()> {
    let (store, client, table) = inventory().await?;
    let mut rows = Vec::new();
    for i in 0..4 {
        rows.push(row("b!s", &format!("old{i}"), &format!("/old/{i}"), 1)?);
        rows.push(row("b!s", &format!("new{i}"), &format!("/new/{i}"), 2)?);
    }
    store.put_rows(&rows).await?;
    for id in ["old0", "new0", "new1"] {
        store
            .set_file_hash("contoso", "b!s", id, &HashOutcome::Hashed(hashes(&format!("c:{id}"))?))
            .await?;
    }

    let listed = store.list("b!s", None, 100).await?;
    let ids: Vec<&str> = listed.iter().map(|r| r.item_id.as_str()).collect();
    assert_eq!(ids, ["new0", "new1", "new2", "new3", "old0", "old1", "old2", "old3"]);
    let hashed: Vec<&str> = listed
        .iter()
        .filter(|r| r.md5.is_some())
        .map(|r| r.item_id.as_str())
        .collect();
    assert_eq!(
        hashed,
        ["new0", "new1", "old0"],
        "listed rows carry their recorded hashes"
    );

    let deleted = store.delete_older_than("b!s", 2, chrono::Utc::now()).await?;

    assert_eq!(deleted, 4, "only rows are counted, never their siblings");
    let out = client
        .query()
        .table_name(&table)
        .key_condition_expression("#d = :d")
        .expression_attribute_names("#d", DRIVE_ID)
        .expression_attribute_values(":d", AttributeValue::S("b!s".into()))
        .send()
        .await?;
    let mut left: Vec<String> = out
        .items()
        .iter()
        .filter_map(|i| i.get(ITEM_ID).and_then(|v| v.as_s().ok()).cloned())
        .collect();
    left.sort();
    let sibling = |id: &str| format!("{HASH_PREFIX}{id}");
    assert_eq!(
        left,
        [
            "new0".to_owned(),
            "new1".to_owned(),
            "new2".to_owned(),
            "new3".to_owned(),
            sibling("new0"),
            sibling("new1"),
        ],
        "the swept rows' siblings went with them; the kept rows' stayed"
    );
    assert_eq!(store.delete_older_than("b!s", 2, chrono::Utc::now()).await?, 0);
    Ok(())
}

#[tokio::test]
async fn deleting_a_row_deletes_its_hash() -> anyhow::Result<()> {
    let (store, _, _) = inventory().await?;
    store.put_rows(&[row("b!d", "gone", "/gone.txt", 1)?]).await?;
    store
        .set_file_hash("contoso", "b!d", "gone", &HashOutcome::Hashed(hashes("c:gone")?))
        .await?;

    store.delete_rows("b!d", &["gone".into()], chrono::Utc::now()).await?;
    store.put_rows(&[row("b!d", "gone", "/gone.txt", 2)?]).await?;

    assert!(store.file_hashes("b!d", &["gone".into()]).await?.is_empty());
    assert_eq!(store.row_with_hash("b!d", "gone").await?.and_then(|r| r.hash), None);
    Ok(())
}

#[tokio::test]
async fn quarantined_records_of_a_blob_are_one_json_object_that_a_rewrite_replaces() -> anyhow::Result<()> {
    let aws = aws().await?;
    let bucket = create_bucket(&aws.s3).await?;
    let objects = BucketObjects::new(aws.s3.clone(), bucket.clone());
    let malformed = Quarantine {
        record_id: Some("rec-7".into()),
        reason: QuarantineReason::Malformed {
            field: "CreationTime".into(),
            detail: "not a time: \"yesterday\"".into(),
        },
        raw: Some(r#"{"Id":"rec-7","CreationTime":"yesterday"}"#.into()),
    };
    let unknown = Quarantine {
        record_id: None,
        reason: QuarantineReason::UnknownOperation {
            operation: "FileTeleported".into(),
        },
        raw: None,
    };
    let content_id = "20261122080000.abc$20261122090000.def$audit_sharepoint$Audit_SharePoint$emea0026";

    objects
        .put_quarantined("contoso", content_id, &[unknown, malformed.clone()])
        .await?;
    objects
        .put_quarantined("contoso", content_id, std::slice::from_ref(&malformed))
        .await?;

    let key = quarantine_key("contoso", content_id);
    assert_eq!(key, format!("quarantine/contoso/{content_id}.json"));
    let listed = aws
        .s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("quarantine/")
        .send()
        .await?;
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [key.as_str()], "one object per blob");
    let body = objects.get(&key).await?.expect("the document exists");
    let document: QuarantineDocument = serde_json::from_slice(&body)?;
    assert_eq!(
        (document.connection.as_str(), document.content_id.as_str()),
        ("contoso", content_id)
    );
    assert_eq!(document.records.len(), 1, "the rewrite replaced the first document");
    let record = &document.records[0];
    assert_eq!(record.record_id.as_deref(), Some("rec-7"));
    assert_eq!(record.reason, malformed.reason);
    assert_eq!(record.raw, malformed.raw);
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(json["records"][0]["reason"]["field"], "CreationTime");
    assert_eq!(json["records"][0]["reason"]["kind"], "malformed");
    Ok(())
}

#[tokio::test]
async fn a_version_lease_is_held_by_one_holder_until_released_or_lapsed() -> anyhow::Result<()> {
    use filetrail_core::hashing::{HashLeases, VersionLease};
    let (store, _, _) = state().await?;
    let now = at("2026-11-22T09:00:00Z")?;
    let lease = |holder: &str, until| VersionLease {
        connection: "contoso".into(),
        drive_id: "b!alex".into(),
        item_id: "01ITEM".into(),
        ctag: "\"c:{A1},3\"".into(),
        holder: holder.into(),
        until,
    };
    let first = lease("job-a", now + Duration::minutes(15));
    assert!(store.take_hash_lease(&first, now).await?);
    assert!(
        !store
            .take_hash_lease(&lease("job-b", now + Duration::minutes(15)), now)
            .await?
    );
    assert!(
        store.take_hash_lease(&first, now + Duration::minutes(5)).await?,
        "its holder renews it"
    );
    // Another version of the same file is another lease.
    let other_version = VersionLease {
        ctag: "\"c:{A1},4\"".into(),
        ..lease("job-b", now + Duration::minutes(15))
    };
    assert!(store.take_hash_lease(&other_version, now).await?);
    // Released only by its holder.
    store.release_hash_lease(&lease("job-b", now)).await?;
    assert!(
        !store
            .take_hash_lease(&lease("job-c", now + Duration::minutes(15)), now)
            .await?
    );
    store.release_hash_lease(&first).await?;
    assert!(
        store
            .take_hash_lease(&lease("job-c", now + Duration::minutes(15)), now)
            .await?
    );
    // A holder that died: the lease lapses after its term.
    assert!(
        !store
            .take_hash_lease(&lease("job-d", now + Duration::hours(1)), now + Duration::minutes(14))
            .await?
    );
    assert!(
        store
            .take_hash_lease(&lease("job-d", now + Duration::hours(1)), now + Duration::minutes(16))
            .await?
    );
    Ok(())
}
