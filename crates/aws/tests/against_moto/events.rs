//! DynamoEventStore against moto: conditional inserts, the by_file history, and the index keys
//! the search and export readers rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_dynamodb::types::AttributeValue;
use filetrail_aws::DynamoEventStore;
use filetrail_aws::events::{
    ACTOR_PK, BY_ACTOR, BY_INSERTED, BY_MD5, BY_OWNER, BY_SHA256, DOC, EVENT_KEY, INSERTED_PK, MD5, OWNER_PK, SHA256,
    actor_pk, inserted_pk, owner_pk, shard_of,
};
use filetrail_core::audit::{Actor, ActorKind, FileEvent, FileEventType, ItemKind};
use filetrail_core::events::{EventRecord, FileHashes, HashOutcome};
use filetrail_core::ports::{EventStore, HashChange};

use crate::support::{at, aws, create_events_table};

const MD5_HEX: &str = "0cc175b9c0f1b6a831c399e269772661";
const SHA256_HEX: &str = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";

struct Fixture {
    store: DynamoEventStore,
    client: aws_sdk_dynamodb::Client,
    table: String,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let aws = aws().await?;
    let table = create_events_table(&aws.dynamo).await?;
    Ok(Fixture {
        store: DynamoEventStore::new(aws.dynamo.clone(), table.clone()),
        client: aws.dynamo,
        table,
    })
}

impl Fixture {
    /// The event keys under `partition` of `index`, newest first, read straight from the index.
    async fn index_keys(&self, index: &str, key_attr: &str, partition: &str) -> anyhow::Result<Vec<String>> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", key_attr)
            .expression_attribute_values(":p", AttributeValue::S(partition.to_owned()))
            .scan_index_forward(false)
            .send()
            .await?;
        Ok(out
            .items()
            .iter()
            .filter_map(|i| i.get(EVENT_KEY).and_then(|v| v.as_s().ok()).cloned())
            .collect())
    }
}

fn event(id: &str, drive: &str, item: &str, observed: &str) -> anyhow::Result<EventRecord> {
    Ok(EventRecord::onedrive(
        "contoso",
        FileEvent {
            id: id.to_owned(),
            event_type: FileEventType::Modified,
            low_signal: false,
            operation: "FileModified".into(),
            record_type: 6,
            item_kind: ItemKind::File,
            actor: Actor {
                id: "Adele@Contoso.com".into(),
                upn: Some("Adele@Contoso.com".into()),
                email: Some("adele@contoso.com".into()),
                kind: ActorKind::User,
                user_type: Some(0),
                user_key: None,
                external: Some(false),
            },
            owner_upn: Some("Alex@contoso.com".into()),
            site_key: Some("alex_contoso_com".into()),
            site_url: Some("https://contoso-my.sharepoint.com/personal/alex_contoso_com".into()),
            object_url: Some(format!(
                "https://contoso-my.sharepoint.com/personal/alex_contoso_com/Documents/{item}.docx"
            )),
            file_name: Some(format!("{item}.docx")),
            path: Some(format!("/{item}.docx")),
            extension: Some("docx".into()),
            destination: None,
            list_id: None,
            list_item_unique_id: None,
            drive_id: Some(drive.to_owned()),
            item_id: Some(item.to_owned()),
            unresolved: None,
            observed_at: at(observed)?,
            inserted_at: at("2026-11-22T10:00:00.123456Z")?,
            client_ip: Some("203.0.113.7".into()),
            user_agent: Some("OneDriveMpc-Transform_Thumbnail/1.0".into()),
            result_status: None,
            sharing: None,
        },
    ))
}

fn hashed() -> anyhow::Result<HashOutcome> {
    Ok(HashOutcome::Hashed(FileHashes {
        version: None,
        md5: MD5_HEX.into(),
        sha256: SHA256_HEX.into(),
        ctag: "\"c:{A1},3\"".into(),
        size: 1,
        modified_at: Some(at("2026-11-22T09:00:00Z")?),
        hashed_at: at("2026-11-22T10:05:00.5Z")?,
    }))
}

#[tokio::test]
async fn an_event_inserted_twice_is_stored_once_and_reported_once() -> anyhow::Result<()> {
    let f = fixture().await?;
    let a = event("rec-a", "b!1", "i1", "2026-11-22T09:00:00Z")?;
    let b = event("rec-b", "b!1", "i1", "2026-11-22T09:01:00Z")?;
    let mut a_changed = a.clone();
    a_changed.event.event_type = FileEventType::Deleted;

    let first = f.store.insert_events(&[a.clone(), b.clone(), a.clone()]).await?;
    let second = f
        .store
        .insert_events(&[a_changed, event("rec-c", "b!1", "i1", "2026-11-22T09:02:00Z")?])
        .await?;

    assert_eq!(first, ["contoso#rec-a", "contoso#rec-b"]);
    assert_eq!(second, ["contoso#rec-c"], "a stored key is not inserted again");
    let stored = f.store.events_by_key(&["contoso#rec-a".to_owned()]).await?;
    assert_eq!(stored, [a], "the first version is kept, every field round-trips");
    Ok(())
}

#[tokio::test]
async fn file_events_are_the_files_own_newest_first_up_to_the_limit() -> anyhow::Result<()> {
    let f = fixture().await?;
    let events = [
        event("rec-2", "b!1", "i1", "2026-11-22T09:00:00.002Z")?,
        event("rec-3", "b!1", "i1", "2026-11-22T09:00:00.010Z")?,
        event("rec-1", "b!1", "i1", "2026-11-21T23:59:59.999Z")?,
        event("rec-other-item", "b!1", "i2", "2026-11-22T12:00:00Z")?,
        event("rec-other-drive", "b!2", "i1", "2026-11-22T12:00:00Z")?,
    ];
    f.store.insert_events(&events).await?;

    let all: Vec<String> = f
        .store
        .file_events("b!1", "i1", 10)
        .await?
        .iter()
        .map(|e| e.event.id.clone())
        .collect();
    let newest_two: Vec<String> = f
        .store
        .file_events("b!1", "i1", 2)
        .await?
        .iter()
        .map(|e| e.event.id.clone())
        .collect();

    assert_eq!(all, ["rec-3", "rec-2", "rec-1"]);
    assert_eq!(newest_two, ["rec-3", "rec-2"]);
    assert!(f.store.file_events("b!1", "i1", 0).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_recorded_hash_is_found_by_sha256_and_md5_and_merged_into_the_record() -> anyhow::Result<()> {
    let f = fixture().await?;
    let events = [
        event("rec-1", "b!1", "i1", "2026-11-22T09:00:00Z")?,
        event("rec-2", "b!1", "i1", "2026-11-22T09:05:00Z")?,
        event("rec-unhashed", "b!1", "i1", "2026-11-22T09:10:00Z")?,
    ];
    f.store.insert_events(&events).await?;
    assert!(f.index_keys(BY_SHA256, SHA256, SHA256_HEX).await?.is_empty());

    let keys = vec!["contoso#rec-1".to_owned(), "contoso#rec-2".to_owned()];
    f.store.set_event_hash(&keys, &hashed()?).await?;

    assert_eq!(
        f.index_keys(BY_SHA256, SHA256, SHA256_HEX).await?,
        ["contoso#rec-2", "contoso#rec-1"]
    );
    assert_eq!(
        f.index_keys(BY_MD5, MD5, MD5_HEX).await?,
        ["contoso#rec-2", "contoso#rec-1"]
    );
    let history = f.store.file_events("b!1", "i1", 10).await?;
    let hashes: Vec<(&str, Option<&HashOutcome>)> =
        history.iter().map(|e| (e.event.id.as_str(), e.hash.as_ref())).collect();
    let outcome = hashed()?;
    assert_eq!(
        hashes,
        [
            ("rec-unhashed", None),
            ("rec-2", Some(&outcome)),
            ("rec-1", Some(&outcome))
        ]
    );
    Ok(())
}

#[tokio::test]
async fn an_outcome_without_digests_takes_the_event_out_of_the_hash_indexes() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut inserted_hashed = event("rec-1", "b!1", "i1", "2026-11-22T09:00:00Z")?;
    inserted_hashed.hash = Some(hashed()?);
    f.store.insert_events(&[inserted_hashed]).await?;
    assert_eq!(
        f.index_keys(BY_MD5, MD5, MD5_HEX).await?,
        ["contoso#rec-1"],
        "a record inserted with digests is indexed at once"
    );

    let gone = HashOutcome::Unavailable {
        reason: "file deleted before it could be hashed".into(),
    };
    f.store.set_event_hash(&["contoso#rec-1".to_owned()], &gone).await?;

    assert!(f.index_keys(BY_MD5, MD5, MD5_HEX).await?.is_empty());
    assert!(f.index_keys(BY_SHA256, SHA256, SHA256_HEX).await?.is_empty());
    let stored = f.store.events_by_key(&["contoso#rec-1".to_owned()]).await?;
    assert_eq!(stored.first().and_then(|e| e.hash.clone()), Some(gone));
    Ok(())
}

#[tokio::test]
async fn an_outcome_changes_only_where_it_is_still_the_one_the_writer_read() -> anyhow::Result<()> {
    let f = fixture().await?;
    f.store
        .insert_events(&[
            event("rec-1", "b!1", "i1", "2026-11-22T09:00:00Z")?,
            event("rec-2", "b!1", "i1", "2026-11-22T09:05:00Z")?,
        ])
        .await?;
    let (one, two, unknown) = ("contoso#rec-1", "contoso#rec-2", "contoso#never-inserted");
    let digests = hashed()?;
    let changed = HashOutcome::Unavailable {
        reason: "file changed again before this version could be hashed".into(),
    };
    let outcome_of = |key: &'static str| {
        let store = &f.store;
        async move { anyhow::Ok(store.events_by_key(&[key.to_owned()]).await?.pop().and_then(|e| e.hash)) }
    };

    // Two jobs read both events without an outcome; the first records its decision.
    let first = f
        .store
        .change_event_hashes(&[
            HashChange {
                key: one,
                was: None,
                outcome: &changed,
            },
            HashChange {
                key: unknown,
                was: None,
                outcome: &changed,
            },
        ])
        .await?;
    assert!(first.is_empty(), "{first:?}");
    // The second decided from the older read: it may not overwrite the first's outcome, but an
    // event nobody changed since takes its outcome, and the same outcome again is no conflict.
    let second = f
        .store
        .change_event_hashes(&[
            HashChange {
                key: one,
                was: None,
                outcome: &digests,
            },
            HashChange {
                key: two,
                was: None,
                outcome: &digests,
            },
        ])
        .await?;
    assert_eq!(second, [one]);
    assert_eq!(outcome_of(one).await?, Some(changed.clone()));
    assert_eq!(outcome_of(two).await?, Some(digests.clone()));
    let repeated = f
        .store
        .change_event_hashes(&[HashChange {
            key: two,
            was: None,
            outcome: &digests,
        }])
        .await?;
    assert!(repeated.is_empty(), "{repeated:?}");

    // Read again, decided again: the change lands, and the digests are indexed.
    let third = f
        .store
        .change_event_hashes(&[HashChange {
            key: one,
            was: Some(&changed),
            outcome: &digests,
        }])
        .await?;
    assert!(third.is_empty(), "{third:?}");
    assert_eq!(outcome_of(one).await?, Some(digests));
    assert_eq!(
        f.index_keys(BY_SHA256, SHA256, SHA256_HEX).await?,
        ["contoso#rec-2", "contoso#rec-1"]
    );
    let out = f
        .client
        .get_item()
        .table_name(&f.table)
        .key(EVENT_KEY, AttributeValue::S(unknown.into()))
        .send()
        .await?;
    assert!(out.item.is_none(), "an unknown key creates nothing");
    Ok(())
}

#[tokio::test]
async fn setting_a_hash_on_an_unknown_key_creates_nothing() -> anyhow::Result<()> {
    let f = fixture().await?;

    f.store
        .set_event_hash(&["contoso#never-inserted".to_owned()], &hashed()?)
        .await?;

    let out = f
        .client
        .get_item()
        .table_name(&f.table)
        .key(EVENT_KEY, AttributeValue::S("contoso#never-inserted".into()))
        .send()
        .await?;
    assert!(out.item.is_none());
    assert!(f.index_keys(BY_SHA256, SHA256, SHA256_HEX).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn events_are_found_by_actor_owner_and_insertion_day_shard() -> anyhow::Result<()> {
    let f = fixture().await?;
    let e = event("rec-1", "b!1", "i1", "2026-11-22T09:00:00Z")?;
    let mut anonymous = event("rec-anon", "b!1", "i1", "2026-11-22T09:01:00Z")?;
    anonymous.event.actor.upn = None;
    anonymous.event.actor.email = None;
    anonymous.event.owner_upn = None;
    f.store.insert_events(&[e.clone(), anonymous]).await?;

    assert_eq!(
        f.index_keys(BY_ACTOR, ACTOR_PK, &actor_pk("contoso", "adele@contoso.com"))
            .await?,
        ["contoso#rec-1"],
        "actor UPNs are matched in lowercase, within the connection"
    );
    assert_eq!(
        f.index_keys(BY_OWNER, OWNER_PK, &owner_pk("contoso", "alex@contoso.com"))
            .await?,
        ["contoso#rec-1"]
    );
    let partition = inserted_pk("contoso", &e.event.inserted_at, shard_of(&e.key()));
    assert!(partition.starts_with("contoso#2026-11-22#"), "{partition}");
    let out = f
        .client
        .query()
        .table_name(&f.table)
        .index_name(BY_INSERTED)
        .key_condition_expression("#p = :p")
        .expression_attribute_names("#p", INSERTED_PK)
        .expression_attribute_values(":p", AttributeValue::S(partition))
        .send()
        .await?;
    let doc = out
        .items()
        .iter()
        .find(|i| i.get(EVENT_KEY).and_then(|v| v.as_s().ok()).map(String::as_str) == Some("contoso#rec-1"))
        .and_then(|i| i.get(DOC))
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let exported: EventRecord = serde_json::from_str(&doc)?;
    assert_eq!(exported, e, "the export index carries the whole record");
    Ok(())
}

#[tokio::test]
async fn an_event_stored_without_its_item_gets_it_once_and_joins_the_files_history() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut waiting = event("rec-w", "b!1", "unused", "2026-11-22T09:00:00Z")?;
    waiting.event.item_id = None;
    waiting.event.unresolved = Some(filetrail_core::audit::UnresolvedReason::ItemNotFound);
    waiting.hash = Some(HashOutcome::Unavailable {
        reason: "file could not be located in the drive".into(),
    });
    f.store.insert_events(std::slice::from_ref(&waiting)).await?;
    assert!(f.store.file_events("b!1", "i-9", 10).await?.is_empty());

    let resolved = f
        .store
        .resolve_item(&waiting.key(), "i-9", None)
        .await?
        .expect("resolved");
    assert_eq!(resolved.event.item_id.as_deref(), Some("i-9"));
    assert_eq!(resolved.event.unresolved, None);
    // As stored: in the file's history, without the old outcome, so hash-file gives it one.
    let history = f.store.file_events("b!1", "i-9", 10).await?;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].event.item_id.as_deref(), Some("i-9"));
    assert_eq!(history[0].event.unresolved, None);
    assert_eq!(history[0].hash, None);

    // Again with the same item (a repeat after a crash): the event as it is; another item or
    // an unknown key: nothing.
    assert!(f.store.resolve_item(&waiting.key(), "i-9", None).await?.is_some());
    assert!(f.store.resolve_item(&waiting.key(), "i-other", None).await?.is_none());
    assert!(
        f.store
            .resolve_item("contoso#no-such-record", "i-9", None)
            .await?
            .is_none()
    );
    assert!(f.store.file_events("b!1", "i-other", 10).await?.is_empty());

    // A deleted file's event takes its outcome with its item.
    let mut gone = event("rec-g", "b!1", "unused", "2026-11-22T09:05:00Z")?;
    gone.event.item_id = None;
    f.store.insert_events(std::slice::from_ref(&gone)).await?;
    let outcome = HashOutcome::Unavailable {
        reason: "file deleted before it could be hashed".into(),
    };
    f.store.resolve_item(&gone.key(), "i-gone", Some(&outcome)).await?;
    let stored = f.store.file_events("b!1", "i-gone", 10).await?;
    assert_eq!(stored[0].hash, Some(outcome));
    Ok(())
}
