//! DynamoInventoryStore against moto.

use filetrail_aws::DynamoInventoryStore;
use filetrail_core::ports::InventoryStore;

use crate::support::{aws, create_inventory_table, row};

async fn store() -> anyhow::Result<DynamoInventoryStore> {
    let aws = aws().await?;
    let table = create_inventory_table(&aws.dynamo).await?;
    Ok(DynamoInventoryStore::new(aws.dynamo, table))
}

#[tokio::test]
async fn sixty_rows_are_written_in_three_batches_and_their_paths_found() -> anyhow::Result<()> {
    let store = store().await?;
    let rows: Vec<_> = (0..60)
        .map(|i| row("b!d", &format!("item{i:02}"), &format!("/Docs/f{i:02}.pdf"), 1))
        .collect::<Result<_, _>>()?;

    store.put_rows(&rows).await?;

    assert_eq!(store.write_requests(), 3, "60 rows at 25 per BatchWriteItem");
    let ask = vec![
        "item59".to_owned(),
        "unknown".to_owned(),
        "item00".to_owned(),
        "item31".to_owned(),
    ];
    let paths = store.paths("b!d", &ask).await?;
    assert_eq!(
        paths,
        [
            ("item59".to_owned(), "/Docs/f59.pdf".to_owned()),
            ("item00".to_owned(), "/Docs/f00.pdf".to_owned()),
            ("item31".to_owned(), "/Docs/f31.pdf".to_owned()),
        ]
    );
    assert!(store.paths("b!other-drive", &ask).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_row_round_trips_every_field() -> anyhow::Result<()> {
    let store = store().await?;
    let full = row("b!r", "file", "/Docs/report.pdf", 4)?;
    let mut bare = row("b!r", "root", "/", 4)?;
    bare.parent_id = None;
    bare.is_folder = true;
    bare.created_at = None;
    bare.modified_at = None;
    bare.etag = None;
    bare.ctag = None;
    bare.created_by = None;
    bare.modified_by = None;
    bare.mime_type = None;
    bare.hash_unavailable = None;
    bare.md5 = Some("0cc175b9c0f1b6a831c399e269772661".into());
    bare.sha256 = Some("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".into());

    store.put_rows(&[full.clone(), bare.clone()]).await?;

    assert_eq!(store.row("b!r", "file").await?, Some(full));
    assert_eq!(store.row("b!r", "root").await?, Some(bare));
    assert_eq!(store.row("b!r", "nothing").await?, None);
    Ok(())
}

#[tokio::test]
async fn a_row_listed_twice_in_one_call_is_written_once_with_its_last_version() -> anyhow::Result<()> {
    let store = store().await?;
    let old = row("b!dup", "item", "/old.txt", 1)?;
    let new = row("b!dup", "item", "/new.txt", 1)?;

    store.put_rows(&[old, new.clone()]).await?;

    assert_eq!(store.row("b!dup", "item").await?, Some(new));
    Ok(())
}

#[tokio::test]
async fn delete_older_than_removes_exactly_the_old_generation() -> anyhow::Result<()> {
    let store = store().await?;
    let mut rows = Vec::new();
    for i in 0..40 {
        rows.push(row("b!g", &format!("old{i:02}"), &format!("/old/{i}"), 1)?);
    }
    for i in 0..30 {
        rows.push(row("b!g", &format!("new{i:02}"), &format!("/new/{i}"), 2)?);
    }
    rows.push(row("b!neighbour", "old00", "/old/0", 1)?);
    store.put_rows(&rows).await?;

    let deleted = store.delete_older_than("b!g", 2, chrono::Utc::now()).await?;

    assert_eq!(deleted, 40);
    let all: Vec<String> = rows.iter().map(|r| r.item_id.clone()).collect();
    let left: Vec<String> = store.paths("b!g", &all).await?.into_iter().map(|(id, _)| id).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("new{i:02}")).collect();
    assert_eq!(left, expected);
    assert_eq!(
        store.paths("b!neighbour", &["old00".to_owned()]).await?.len(),
        1,
        "other drives untouched"
    );
    assert_eq!(
        store.delete_older_than("b!g", 2, chrono::Utc::now()).await?,
        0,
        "repeating deletes nothing more"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_rows_removes_them_and_ignores_unknown_ids() -> anyhow::Result<()> {
    let store = store().await?;
    store
        .put_rows(&[row("b!x", "a", "/a", 1)?, row("b!x", "b", "/b", 1)?])
        .await?;

    store
        .delete_rows(
            "b!x",
            &["a".into(), "never-existed".into(), "a".into()],
            chrono::Utc::now(),
        )
        .await?;

    assert_eq!(store.row("b!x", "a").await?, None);
    assert!(store.row("b!x", "b").await?.is_some());
    Ok(())
}

/// The counts status shows come from the rows alone: a drive's hash siblings (and whatever
/// else lives beside the rows under `~`) and other drives are not counted.
#[tokio::test]
async fn rows_are_counted_by_kind_without_their_siblings() -> anyhow::Result<()> {
    use filetrail_core::events::{FileHashes, HashOutcome};
    use filetrail_core::ports::InventoryHashes as _;
    let store = store().await?;
    let mut folder = row("b!count", "folder", "/Docs", 1)?;
    folder.is_folder = true;
    store
        .put_rows(&[
            folder,
            row("b!count", "f1", "/Docs/a.txt", 1)?,
            row("b!count", "f2", "/Docs/b.txt", 1)?,
            row("b!other", "f9", "/x.txt", 1)?,
        ])
        .await?;
    let hashes = FileHashes {
        version: None,
        md5: "0cc175b9c0f1b6a831c399e269772661".into(),
        sha256: "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".into(),
        ctag: "\"c:{f1},1\"".into(),
        size: 1,
        modified_at: None,
        hashed_at: chrono::Utc::now(),
    };
    store
        .set_file_hash("contoso", "b!count", "f1", &HashOutcome::Hashed(hashes))
        .await?;

    assert_eq!(store.count_rows("b!count").await?, (2, 1));
    Ok(())
}

#[tokio::test]
async fn a_file_is_found_by_its_list_item_id_where_it_is_now_and_after_it_is_deleted() -> anyhow::Result<()> {
    use chrono::TimeZone as _;
    use filetrail_core::ports::ItemIdentities as _;
    let store = store().await?;
    let uid = "6e5d4c3b-2a19-4f08-9e7d-6c5b4a392817".to_owned();
    let mut file = row("b!u", "file", "/Docs/plan.docx", 1)?;
    file.list_item_uid = Some(uid.clone());
    let mut folder = row("b!u", "folder", "/Docs", 1)?;
    folder.is_folder = true;
    folder.list_item_uid = Some("0f0f0f0f-0000-4000-8000-000000000001".into());
    store.put_rows(&[file.clone(), folder.clone()]).await?;
    let ids = [
        uid.clone(),
        "0f0f0f0f-0000-4000-8000-000000000001".to_owned(),
        "unknown".to_owned(),
    ];
    let found = store.items_by_uid("b!u", &ids).await?;
    assert_eq!(found.len(), 1, "folders are placed by path: {found:?}");
    assert_eq!(
        (found[0].item_id.as_str(), found[0].path.as_str()),
        ("file", "/Docs/plan.docx")
    );
    assert_eq!(found[0].deleted_at, None);
    assert_eq!(
        store.row("b!u", "file").await?.and_then(|r| r.list_item_uid),
        Some(uid.clone())
    );

    // Moved: the id follows; the siblings are not rows.
    file.path = "/Archive/plan FINAL.docx".into();
    store.put_rows(std::slice::from_ref(&file)).await?;
    assert_eq!(
        store.items_by_uid("b!u", &ids).await?[0].path,
        "/Archive/plan FINAL.docx"
    );
    assert_eq!(store.count_rows("b!u").await?, (1, 1));

    // Deleted: the row goes, a tombstone stays with the last path and when.
    let when = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
    store.delete_rows("b!u", &["file".into()], when).await?;
    assert!(store.row("b!u", "file").await?.is_none());
    assert_eq!(store.count_rows("b!u").await?, (0, 1));
    let stone = store.items_by_uid("b!u", &ids).await?;
    assert_eq!(stone.len(), 1);
    assert_eq!(stone[0].item_id, "file");
    assert_eq!(stone[0].path, "/Archive/plan FINAL.docx");
    assert_eq!(stone[0].deleted_at, Some(when));

    // Reconciliation after a resync buries the same way.
    let mut old = row("b!u", "old", "/old.txt", 1)?;
    old.list_item_uid = Some("11111111-2222-4333-8444-555555555555".into());
    store.put_rows(&[old, row("b!u", "new", "/new.txt", 2)?]).await?;
    assert_eq!(store.delete_older_than("b!u", 2, when).await?, 2, "old and the folder");
    let stone = store
        .items_by_uid("b!u", &["11111111-2222-4333-8444-555555555555".to_owned()])
        .await?;
    assert_eq!(stone[0].deleted_at, Some(when));
    Ok(())
}

#[tokio::test]
async fn events_waiting_for_their_item_are_kept_once_each_until_removed() -> anyhow::Result<()> {
    use chrono::TimeZone as _;
    use filetrail_core::model::PendingItem;
    use filetrail_core::ports::ItemIdentities as _;
    let store = store().await?;
    let since = chrono::Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap();
    let waiting = |uid: &str, key: &str| PendingItem {
        uid: uid.into(),
        event_key: key.into(),
        connection: "contoso".into(),
        since,
    };
    let a = waiting("6e5d4c3b-2a19-4f08-9e7d-6c5b4a392817", "contoso#rec-1");
    let b = waiting("6e5d4c3b-2a19-4f08-9e7d-6c5b4a392817", "contoso#rec-2");
    store.add_pending("b!p", &[a.clone(), b.clone(), a.clone()]).await?;
    store.add_pending("b!p", std::slice::from_ref(&a)).await?;
    store.put_rows(&[row("b!p", "file", "/x.txt", 1)?]).await?;
    let mut listed = store.pending("b!p").await?;
    listed.sort();
    assert_eq!(listed, [a.clone(), b.clone()]);
    assert!(store.pending("b!other").await?.is_empty());
    assert_eq!(store.count_rows("b!p").await?, (1, 0), "waiting events are not rows");
    store.remove_pending("b!p", std::slice::from_ref(&a)).await?;
    assert_eq!(store.pending("b!p").await?, [b]);
    Ok(())
}
