//! Search against moto: every filter returns exactly the events an analyst expects, newest
//! first, pages join up without gaps or repeats, and each query reads one index (the query
//! plans, captured from the DynamoDB requests on the wire): never a Scan, never the table by
//! anything but key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use chrono::{DateTime, Duration, Utc};
use filetrail_aws::DynamoEventStore;
use filetrail_core::audit::{Actor, ActorKind, Destination, FileEvent, FileEventType, ItemKind, Sharing};
use filetrail_core::events::{EventRecord, FileHashes, HashOutcome};
use filetrail_core::ports::EventStore;
use filetrail_core::search::{NamePattern, SearchQuery};

use crate::support::{at, create_events_table, moto};

/// One request on the wire: its operation and, for a Query, the index it read.
type Sent = (String, Option<String>);

/// Every DynamoDB request the client sends.
#[derive(Debug, Default, Clone)]
struct Wire(Arc<Mutex<Vec<Sent>>>);

impl Wire {
    fn take(&self) -> Vec<Sent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "search-plan-recorder"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let target = request.headers().get("x-amz-target").unwrap_or_default();
        let operation = target.rsplit('.').next().unwrap_or_default().to_owned();
        let index = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
            .and_then(|v| v.get("IndexName").and_then(|i| i.as_str()).map(str::to_owned));
        self.0.lock().unwrap().push((operation, index));
        Ok(())
    }
}

const USERS: [&str; 4] = [
    "adele@contoso.com",
    "alex@contoso.com",
    "megan@contoso.com",
    "lynne@contoso.com",
];
const NAMES: [&str; 6] = [
    "Budget 2026.xlsx",
    "budget-notes.docx",
    "Q3 report.pptx",
    "photo.png",
    "Report final.docx",
    "ab.txt",
];
const FOLDERS: [&str; 4] = ["", "/Finance", "/Finance/Archive", "/Financials"];
const TYPES: [FileEventType; 6] = [
    FileEventType::Modified,
    FileEventType::Downloaded,
    FileEventType::Created,
    FileEventType::AnonymousLinkCreated,
    FileEventType::SharingSet,
    FileEventType::Deleted,
];

fn base() -> DateTime<Utc> {
    at("2026-11-22T18:00:00Z").unwrap()
}

fn digest(n: usize) -> (String, String) {
    (format!("{n:0>32x}"), format!("{n:0>64x}"))
}

/// 150 events over ~4 days, two connections, four users, six names in four folders.
fn corpus() -> Vec<EventRecord> {
    (0..150)
        .map(|i| {
            let connection = if i % 5 == 0 { "fabrikam" } else { "contoso" };
            let name = NAMES[i % NAMES.len()];
            let path = format!("{}/{name}", FOLDERS[(i / 6) % FOLDERS.len()]);
            let event_type = TYPES[(i / 2) % TYPES.len()];
            let sharing: Option<Sharing> = match event_type {
                FileEventType::AnonymousLinkCreated => Some(
                    serde_json::from_value(serde_json::json!({"link_scope": "anonymous", "external": true})).unwrap(),
                ),
                FileEventType::SharingSet => Some(
                    serde_json::from_value(serde_json::json!({"external": i % 4 == 0, "targets": [
                        {"name": "guest@fabrikam.com", "kind": "user"}]}))
                    .unwrap(),
                ),
                _ => None,
            };
            let upn = USERS[i % USERS.len()];
            let observed = base() - Duration::minutes(37 * i as i64);
            let mut record = EventRecord::onedrive(
                connection,
                FileEvent {
                    id: format!("{i:08}-0000-4000-8000-000000000000"),
                    event_type,
                    low_signal: false,
                    operation: "Op".into(),
                    record_type: 6,
                    item_kind: ItemKind::File,
                    actor: Actor {
                        id: upn.to_uppercase(),
                        upn: Some(upn.to_uppercase()),
                        email: Some(upn.into()),
                        kind: ActorKind::User,
                        user_type: Some(0),
                        user_key: None,
                        external: Some(false),
                    },
                    owner_upn: Some(USERS[(i / 4) % 3].into()),
                    site_key: None,
                    site_url: None,
                    object_url: None,
                    file_name: Some(name.into()),
                    path: Some(path),
                    extension: name.rsplit_once('.').map(|(_, e)| e.to_owned()),
                    destination: None,
                    list_id: None,
                    list_item_unique_id: None,
                    drive_id: Some("b!drive".into()),
                    item_id: Some(format!("item{}", i % 9)),
                    unresolved: None,
                    observed_at: observed,
                    inserted_at: observed + Duration::minutes(30),
                    client_ip: None,
                    user_agent: None,
                    result_status: None,
                    sharing,
                },
            );
            if i % 3 == 0 {
                let (md5, sha256) = digest(i % 4);
                record.hash = Some(HashOutcome::Hashed(FileHashes {
                    version: None,
                    md5,
                    sha256,
                    ctag: "c".into(),
                    size: 1,
                    modified_at: None,
                    hashed_at: observed,
                }));
            }
            record
        })
        .collect()
}

struct Fixture {
    store: DynamoEventStore,
    wire: Wire,
    events: Vec<EventRecord>,
}

async fn fixture() -> anyhow::Result<Fixture> {
    let config = moto().await?.sdk_config().await;
    let plain = aws_sdk_dynamodb::Client::new(&config);
    let table = create_events_table(&plain).await?;
    let events = corpus();
    DynamoEventStore::new(plain, table.clone())
        .insert_events(&events)
        .await?;
    let wire = Wire::default();
    let traced = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(wire.clone())
            .build(),
    );
    Ok(Fixture {
        store: DynamoEventStore::new(traced, table),
        wire,
        events,
    })
}

fn query(connections: &[&str]) -> SearchQuery {
    SearchQuery {
        connections: connections.iter().map(|c| (*c).to_owned()).collect(),
        limit: 1000,
        ..SearchQuery::default()
    }
}

impl Fixture {
    /// The ids the test expects: the corpus filtered by `keep`, newest first.
    fn expected(&self, keep: impl Fn(&EventRecord) -> bool) -> Vec<String> {
        let mut hits: Vec<&EventRecord> = self.events.iter().filter(|r| keep(r)).collect();
        hits.sort_by(|a, b| (b.event.observed_at, &b.event.id).cmp(&(a.event.observed_at, &a.event.id)));
        hits.into_iter().map(|r| r.event.id.clone()).collect()
    }

    /// Runs `q`, returns the ids found and asserts every Query read one of `indexes` and every
    /// other request was a BatchGetItem by key.
    async fn run(&self, q: &SearchQuery, indexes: &[&str]) -> anyhow::Result<Vec<String>> {
        self.wire.take();
        let page = self.store.search(q).await?;
        let wire = self.wire.take();
        assert!(!wire.is_empty());
        for (operation, used) in &wire {
            match operation.as_str() {
                "Query" => assert!(
                    used.as_deref().is_some_and(|u| indexes.contains(&u)),
                    "{q:?} queried {used:?}, not {indexes:?}: {wire:?}"
                ),
                "BatchGetItem" => {}
                other => panic!("{q:?} sent {other} (only Query on {indexes:?} and BatchGetItem allowed): {wire:?}"),
            }
        }
        assert!(wire.iter().any(|(op, _)| op == "Query"), "{wire:?}");
        Ok(page.events.iter().map(|r| r.event.id.clone()).collect())
    }
}

fn is_user(r: &EventRecord, upn: &str) -> bool {
    r.event
        .actor
        .upn
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case(upn))
        || r.event
            .owner_upn
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(upn))
}

#[tokio::test]
async fn each_filter_finds_exactly_its_events_newest_first_through_one_index() -> anyhow::Result<()> {
    let f = fixture().await?;
    let contoso = |r: &EventRecord| r.connection == "contoso";
    let hashes = |r: &EventRecord| r.hashes().cloned();

    // --user: actor or owner, any case.
    let mut q = query(&["contoso"]);
    q.user = Some("alex@contoso.com".into());
    let want = f.expected(|r| contoso(r) && is_user(r, "alex@contoso.com"));
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(f.run(&q, &["by_actor", "by_owner"]).await?, want);

    // --sha256, across connections unless one is named.
    let (md5, sha) = digest(2);
    let mut q = query(&["contoso", "fabrikam"]);
    q.sha256 = Some(sha.clone());
    let want = f.expected(|r| hashes(r).is_some_and(|h| h.sha256 == sha));
    assert!(want.len() > 5);
    assert_eq!(f.run(&q, &["by_sha256"]).await?, want);
    q.connections = vec!["fabrikam".into()];
    let want = f.expected(|r| r.connection == "fabrikam" && hashes(r).is_some_and(|h| h.sha256 == sha));
    assert_eq!(f.run(&q, &["by_sha256"]).await?, want);

    // --md5 with --type.
    let mut q = query(&["contoso", "fabrikam"]);
    q.md5 = Some(md5.clone());
    q.types = vec![FileEventType::Modified];
    let want = f.expected(|r| hashes(r).is_some_and(|h| h.md5 == md5) && r.event.event_type == FileEventType::Modified);
    assert_eq!(f.run(&q, &["by_md5"]).await?, want);

    // --file-name prefix and glob with a literal prefix: the name index.
    let mut q = query(&["contoso"]);
    q.file_name = Some(NamePattern::parse("BUDGET")?);
    let want = f.expected(|r| {
        contoso(r)
            && r.event
                .file_name
                .as_deref()
                .unwrap()
                .to_lowercase()
                .starts_with("budget")
    });
    assert!(want.len() > 20);
    assert_eq!(f.run(&q, &["by_name"]).await?, want);
    q.file_name = Some(NamePattern::parse("bud*.xlsx")?);
    let want = f.expected(|r| contoso(r) && r.event.file_name.as_deref() == Some("Budget 2026.xlsx"));
    assert_eq!(f.run(&q, &["by_name"]).await?, want);

    // A glob without a literal prefix, with a user: the user's indexes, the glob checked on the records.
    let mut q = query(&["contoso"]);
    q.file_name = Some(NamePattern::parse("*.docx")?);
    q.user = Some("megan@contoso.com".into());
    let want = f.expected(|r| {
        contoso(r) && is_user(r, "megan@contoso.com") && r.event.file_name.as_deref().unwrap().ends_with(".docx")
    });
    assert!(!want.is_empty());
    assert_eq!(f.run(&q, &["by_actor", "by_owner"]).await?, want);

    // --path: the folder and everything under it, not its namesake /Financials.
    let mut q = query(&["contoso"]);
    q.path = Some("/finance".into());
    let want = f.expected(|r| {
        let p = r.event.path.as_deref().unwrap();
        contoso(r) && (p.starts_with("/Finance/"))
    });
    assert!(want.len() > 20);
    assert_eq!(f.run(&q, &["by_path"]).await?, want);

    // --external-only: anonymous links and shares outside the trusted domains.
    let mut q = query(&["contoso"]);
    q.external_only = true;
    let want = f.expected(|r| contoso(r) && r.event.sharing.as_ref().and_then(|s| s.external) == Some(true));
    assert!(want.len() > 5);
    assert_eq!(f.run(&q, &["by_external"]).await?, want);

    // Time range and type alone: the day index, day by day.
    let mut q = query(&["contoso"]);
    q.since = Some(base() - Duration::hours(50));
    q.until = Some(base() - Duration::hours(10));
    q.types = vec![FileEventType::Downloaded, FileEventType::Deleted];
    let want = f.expected(|r| {
        contoso(r)
            && r.event.observed_at >= base() - Duration::hours(50)
            && r.event.observed_at <= base() - Duration::hours(10)
            && matches!(r.event.event_type, FileEventType::Downloaded | FileEventType::Deleted)
    });
    assert!(want.len() > 5);
    assert_eq!(f.run(&q, &["by_day"]).await?, want);
    Ok(())
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_repeats() -> anyhow::Result<()> {
    let f = fixture().await?;
    for (mut q, indexes) in [
        (
            SearchQuery {
                user: Some("adele@contoso.com".into()),
                ..query(&["contoso"])
            },
            &["by_actor", "by_owner"][..],
        ),
        (query(&["contoso", "fabrikam"]), &["by_day"][..]),
        (
            SearchQuery {
                file_name: Some(NamePattern::parse("report")?),
                ..query(&["contoso"])
            },
            &["by_name"][..],
        ),
    ] {
        let mut all = q.clone();
        all.limit = 1000;
        let want = f.run(&all, indexes).await?;
        q.limit = 7;
        let mut got = Vec::new();
        loop {
            let page = f.store.search(&q).await?;
            assert!(page.events.len() <= 7);
            got.extend(page.events.iter().map(|r| r.event.id.clone()));
            match page.next {
                Some(next) => q.before = Some(next),
                None => break,
            }
        }
        assert_eq!(got, want, "{q:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_search_reads_about_a_page_of_index_entries_not_the_whole_user_history() -> anyhow::Result<()> {
    let f = fixture().await?;
    let mut q = query(&["contoso"]);
    q.user = Some("alex@contoso.com".into());
    q.limit = 5;
    let before = f.store.read_requests();
    let page = f.store.search(&q).await?;
    assert_eq!(page.events.len(), 5);
    assert!(page.next.is_some());
    // One Query per index partition and one BatchGetItem: the limit bounds the reads.
    assert!(
        f.store.read_requests() - before <= 4,
        "{}",
        f.store.read_requests() - before
    );
    Ok(())
}

/// A copy of corpus event `i` turned into a move or rename from where it was to `to` (a path
/// from the drive root), with its own record id.
fn relocation(template: &EventRecord, n: usize, event_type: FileEventType, to: &str) -> EventRecord {
    let mut r = template.clone();
    r.event.id = format!("{n:08}-1111-4000-8000-000000000000");
    r.event.event_type = event_type;
    r.event.observed_at += Duration::seconds(5);
    let name = to.rsplit('/').next().unwrap();
    r.event.destination = Some(Destination {
        file_name: Some(name.into()),
        path: Some(to.into()),
        relative_url: None,
        extension: None,
    });
    r
}

/// An event's file name and path, lowercase, where the file was and where it went.
fn was_and_went(r: &EventRecord) -> Vec<(String, String)> {
    let e = &r.event;
    let lower = |s: Option<&str>| s.unwrap_or_default().to_lowercase();
    let mut places = vec![(lower(e.file_name.as_deref()), lower(e.path.as_deref()))];
    if let Some(d) = &e.destination {
        places.push((lower(d.file_name.as_deref()), lower(d.path.as_deref())));
    }
    places
}

/// Whether an event names a file or folder starting with `prefix` (lowercase), where it was or
/// where it went.
fn named(r: &EventRecord, prefix: &str) -> bool {
    was_and_went(r).iter().any(|(name, _)| name.starts_with(prefix))
}

/// Whether an event's file was or went under the folder `folder` (lowercase).
fn placed(r: &EventRecord, folder: &str) -> bool {
    was_and_went(r)
        .iter()
        .any(|(_, path)| path.starts_with(&format!("{folder}/")))
}

#[tokio::test]
async fn a_move_or_rename_is_found_by_where_the_file_went_and_where_it_was() -> anyhow::Result<()> {
    let mut f = fixture().await?;
    // corpus 1: contoso, "budget-notes.docx" at the root; 8: contoso, "Q3 report.pptx" in /Finance.
    assert_eq!(f.events[1].event.path.as_deref(), Some("/budget-notes.docx"));
    assert_eq!(f.events[8].event.path.as_deref(), Some("/Finance/Q3 report.pptx"));
    let moves = vec![
        relocation(&f.events[8], 1, FileEventType::Renamed, "/Finance/Board deck.pptx"),
        relocation(&f.events[8], 2, FileEventType::Moved, "/Legal/Q3 report.pptx"),
        // Both names share the prefix "budget": the event is listed once.
        relocation(&f.events[1], 3, FileEventType::Renamed, "/budget-notes final.docx"),
    ];
    assert_eq!(f.store.insert_events(&moves).await?.len(), 3);
    // SQS redelivers the batch: nothing new is stored, nothing is listed twice.
    assert!(f.store.insert_events(&moves).await?.is_empty());
    f.events.extend(moves);
    let contoso = |r: &EventRecord| r.connection == "contoso";

    // The new name: only the rename that gave it (no other event has it yet).
    let mut q = query(&["contoso"]);
    q.file_name = Some(NamePattern::parse("board")?);
    assert_eq!(f.run(&q, &["by_name"]).await?, ["00000001-1111-4000-8000-000000000000"]);
    // The old name: its history, the rename included.
    q.file_name = Some(NamePattern::parse("q3 rep")?);
    let want = f.expected(|r| contoso(r) && named(r, "q3 rep"));
    assert!(want.contains(&"00000001-1111-4000-8000-000000000000".to_owned()));
    assert_eq!(f.run(&q, &["by_name"]).await?, want);
    // A prefix both names match.
    q.file_name = Some(NamePattern::parse("budget")?);
    let want = f.expected(|r| contoso(r) && named(r, "budget"));
    assert!(want.contains(&"00000003-1111-4000-8000-000000000000".to_owned()));
    assert_eq!(f.run(&q, &["by_name"]).await?, want);
    // A glob only the new name matches, read through the new name's prefix.
    q.file_name = Some(NamePattern::parse("budget-notes f*.docx")?);
    assert_eq!(f.run(&q, &["by_name"]).await?, ["00000003-1111-4000-8000-000000000000"]);

    // The folder the file was moved into, and the one it left.
    let mut q = query(&["contoso"]);
    q.path = Some("/legal".into());
    assert_eq!(f.run(&q, &["by_path"]).await?, ["00000002-1111-4000-8000-000000000000"]);
    q.path = Some("/finance".into());
    let want = f.expected(|r| contoso(r) && placed(r, "/finance"));
    assert!(want.contains(&"00000002-1111-4000-8000-000000000000".to_owned()));
    assert_eq!(f.run(&q, &["by_path"]).await?, want);

    // The other indexes hold each event once: a user's history lists every move once.
    let mut q = query(&["contoso"]);
    q.user = Some(f.events[8].event.actor.upn.clone().unwrap().to_lowercase());
    let upn = q.user.clone().unwrap();
    let want = f.expected(|r| contoso(r) && is_user(r, &upn));
    assert_eq!(f.run(&q, &["by_actor", "by_owner"]).await?, want);
    Ok(())
}

/// An event from JSON fields over a minimal file event.
fn person_event(
    n: u32,
    event_type: &str,
    actor: serde_json::Value,
    owner: &str,
    sharing: serde_json::Value,
) -> EventRecord {
    let at = base() - Duration::minutes(i64::from(n));
    let mut doc = serde_json::json!({
        "id": format!("{n:08}-1111-4000-8000-000000000000"),
        "event_type": event_type,
        "low_signal": false,
        "operation": "Op",
        "record_type": 6,
        "item_kind": "file",
        "actor": actor,
        "owner_upn": owner,
        "file_name": format!("file{n}.docx"),
        "path": format!("/Shared/file{n}.docx"),
        "drive_id": "b!drive",
        "item_id": format!("item-{n}"),
        "observed_at": at,
        "inserted_at": at,
    });
    if !sharing.is_null() {
        doc["sharing"] = sharing;
    }
    EventRecord::onedrive("contoso", serde_json::from_value(doc).unwrap())
}

/// A guest acts under a UPN made from their address (`dana_fabrikam.com#EXT#@…`) and is named
/// by their address as a share's target: `--user dana@fabrikam.com` finds both, and so does
/// the guest UPN, through the same two indexes, each event once.
#[tokio::test]
async fn a_guest_is_found_by_their_address_as_actor_and_as_the_person_a_file_was_shared_with() -> anyhow::Result<()> {
    let config = moto().await?.sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = create_events_table(&client).await?;
    let store = DynamoEventStore::new(client, table);
    let guest_upn = "dana_fabrikam.com#EXT#@contoso.onmicrosoft.com";
    let events = vec![
        person_event(
            1,
            "downloaded",
            serde_json::json!({"id": guest_upn, "upn": guest_upn.to_lowercase(), "email": "dana@fabrikam.com",
                "kind": "user", "external": true}),
            "alex@contoso.com",
            serde_json::Value::Null,
        ),
        person_event(
            2,
            "sharing_set",
            serde_json::json!({"id": "alex@contoso.com", "upn": "alex@contoso.com", "kind": "user"}),
            "alex@contoso.com",
            serde_json::json!({"external": true, "targets": [
                {"name": "Dana", "kind": "user", "email": "dana@fabrikam.com", "external": true},
                {"name": "Megan", "kind": "user", "email": "megan@contoso.com", "external": false},
                {"name": "Alex", "kind": "user", "email": "alex@contoso.com", "external": false}]}),
        ),
        person_event(
            3,
            "modified",
            serde_json::json!({"id": "megan@contoso.com", "upn": "megan@contoso.com", "kind": "user"}),
            "megan@contoso.com",
            serde_json::Value::Null,
        ),
    ];
    store.insert_events(&events).await?;
    // A redelivery writes no entry twice.
    store.insert_events(&events).await?;
    let ids = |page: filetrail_aws::search::SearchPage| -> Vec<String> {
        page.events.iter().map(|r| r.event.id[..8].to_owned()).collect()
    };
    let search = |user: &str| {
        let mut q = query(&["contoso"]);
        q.user = Some(filetrail_core::search::user_key(user));
        q
    };

    let dana = ids(store.search(&search("dana@fabrikam.com")).await?);
    assert_eq!(dana, ["00000001", "00000002"], "as actor and as the share's target");
    let by_upn = ids(store.search(&search(guest_upn)).await?);
    assert_eq!(by_upn, dana, "the guest UPN is the same person");
    let megan = ids(store.search(&search("megan@contoso.com")).await?);
    assert_eq!(megan, ["00000002", "00000003"], "shared with Megan, and her own edit");
    let alex = ids(store.search(&search("alex@contoso.com")).await?);
    assert_eq!(
        alex,
        ["00000001", "00000002"],
        "each event once, though Alex is owner and target"
    );
    assert!(
        store.file_events("b!drive", "item-2", 10).await?.len() == 1,
        "a file's history holds the share once"
    );
    Ok(())
}

/// Two years of calendar holding 30 days of events: a connection-wide search by time reads
/// the day markers once and then only those 30 days (it walked every calendar day, 20,000
/// Queries for a range from 2020; and without --since it stopped at the connection's creation).
#[tokio::test]
async fn a_search_over_years_reads_only_the_days_that_hold_events() -> anyhow::Result<()> {
    let config = moto().await?.sdk_config().await;
    let plain = aws_sdk_dynamodb::Client::new(&config);
    let table = create_events_table(&plain).await?;
    let days: Vec<DateTime<Utc>> = (0..30).map(|d| base() - Duration::days(24 * d)).collect();
    let events: Vec<EventRecord> = days
        .iter()
        .enumerate()
        .flat_map(|(d, day)| {
            (0..5).map(move |i| {
                let mut e = person_event(
                    (d * 10 + i) as u32,
                    "modified",
                    serde_json::json!({"id": "adele@contoso.com", "upn": "adele@contoso.com", "kind": "user"}),
                    "adele@contoso.com",
                    serde_json::Value::Null,
                );
                e.event.observed_at = *day - Duration::minutes(i as i64);
                e
            })
        })
        .collect();
    DynamoEventStore::new(plain, table.clone())
        .insert_events(&events)
        .await?;
    let wire = Wire::default();
    let store = DynamoEventStore::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(wire.clone())
                .build(),
        ),
        table,
    );
    let event_days: std::collections::BTreeSet<String> =
        days.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();

    for since in [Some(base() - Duration::days(2 * 365 + 30)), None] {
        let mut q = query(&["contoso"]);
        q.since = since;
        wire.take();
        let page = store.search(&q).await?;
        let sent = wire.take();
        assert_eq!(
            page.events.len(),
            events.len(),
            "every event, the oldest too ({since:?})"
        );
        let queries = sent.iter().filter(|(op, _)| op == "Query").count();
        assert!(
            queries <= 1 + 30 * filetrail_aws::events::DAY_SHARDS as usize,
            "{queries} Queries for 30 days of events"
        );
        assert!(
            (queries as f64) / (page.events.len() as f64) <= 2.0,
            "{queries} Queries for {} events",
            page.events.len()
        );
        for read in page.plan.iter().filter(|p| !p.ends_with("#days")) {
            assert!(
                event_days.iter().any(|d| read.contains(d.as_str())),
                "read a day without events: {read}"
            );
        }
    }
    Ok(())
}
