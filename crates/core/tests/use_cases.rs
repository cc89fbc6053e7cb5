#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The discovery and indexing use cases over in-memory ports and scripted Microsoft fakes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use filetrail_core::PortError;
use filetrail_core::activity::{ContentBlob, ParkedBlob};
use filetrail_core::budget::Deadline;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, ParkedWork, discover};
use filetrail_core::index::{IndexOutcome, IndexPorts, index_drive};
use filetrail_core::jobs::{BlobJob, IndexJob};
use filetrail_core::memory::{MemoryInventory, MemoryQueue, MemoryState};
use filetrail_core::model::*;
use filetrail_core::ports::*;
use filetrail_core::scope::*;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).single().unwrap_or_default()
}

fn connection() -> Connection {
    Connection {
        id: "contoso".into(),
        kind: ConnectionKind::Cloud,
        tenant_id: "t".into(),
        client_id: "c".into(),
        secret_id: "filetrail/contoso/app".into(),
        cloud: "worldwide".into(),
        endpoints: None,
        trusted_domains: vec![],
        drive_cap: 1_000_000,
        state: ConnectionState::Active,
        last_error: None,
        last_discovery: None,
        created_at: now(),
        write_app: None,
    }
}

fn user(i: usize) -> DirectoryUser {
    DirectoryUser {
        id: format!("u{i}"),
        user_principal_name: format!("user{i}@contoso.com"),
        display_name: None,
        mail: None,
    }
}

/// A directory of `n` users, 3 per page; users divisible by 4 have no drive; user 5's "drive" is
/// a SharePoint library.
struct FakeTenant {
    n: usize,
    fail_with: Mutex<Option<PortError>>,
    /// Group id → group.
    groups: Mutex<std::collections::BTreeMap<String, FakeGroup>>,
}

#[derive(Clone, Default)]
struct FakeGroup {
    name: String,
    mail: Option<String>,
    users: Vec<usize>,
    groups: Vec<String>,
}

impl FakeTenant {
    fn new(n: usize) -> Self {
        Self {
            n,
            fail_with: Mutex::new(None),
            groups: Mutex::default(),
        }
    }

    fn add_group(&self, id: &str, name: &str, mail: Option<&str>, users: &[usize], groups: &[&str]) {
        self.groups.lock().unwrap().insert(
            id.into(),
            FakeGroup {
                name: name.into(),
                mail: mail.map(Into::into),
                users: users.to_vec(),
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            },
        );
    }

    fn transitive_users(&self, id: &str, out: &mut BTreeSet<usize>) {
        let group = self.groups.lock().unwrap().get(id).cloned().unwrap_or_default();
        out.extend(group.users.iter().copied());
        for g in &group.groups {
            self.transitive_users(g, out);
        }
    }
}

#[async_trait]
impl Directory for FakeTenant {
    async fn users_page(&self, link: Option<&str>) -> PortResult<UsersPage> {
        if let Some(e) = self.fail_with.lock().unwrap().clone() {
            return Err(e);
        }
        let start: usize = link
            .map(|l| l.trim_start_matches("page:").parse().unwrap())
            .unwrap_or(0);
        let end = (start + 3).min(self.n);
        Ok(UsersPage {
            users: (start..end).map(user).collect(),
            next_link: (end < self.n).then(|| format!("page:{end}")),
        })
    }

    async fn find_users(&self, selectors: &[UserSelector]) -> PortResult<Vec<Vec<DirectoryUser>>> {
        Ok(selectors
            .iter()
            .map(|s| match s {
                UserSelector::Email(e) => (0..self.n)
                    .map(user)
                    .filter(|u| u.user_principal_name.eq_ignore_ascii_case(e))
                    .collect(),
                UserSelector::DisplayName(_) => Vec::new(),
            })
            .collect())
    }

    async fn find_groups(&self, selectors: &[GroupSelector]) -> PortResult<Vec<Vec<DirectoryGroup>>> {
        let groups = self.groups.lock().unwrap();
        Ok(selectors
            .iter()
            .map(|s| {
                groups
                    .iter()
                    .filter(|(_, g)| match s {
                        GroupSelector::DisplayName(n) => g.name.eq_ignore_ascii_case(n),
                        GroupSelector::Mail(m) => g.mail.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(m)),
                    })
                    .map(|(id, g)| DirectoryGroup {
                        id: id.clone(),
                        display_name: g.name.clone(),
                        mail: g.mail.clone(),
                    })
                    .collect()
            })
            .collect())
    }

    /// Two users per page.
    async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> PortResult<UsersPage> {
        if !self.groups.lock().unwrap().contains_key(group_id) {
            return Err(PortError::terminal(
                "group_not_found",
                "no such group",
                "check the list",
            ));
        }
        let mut members = BTreeSet::new();
        self.transitive_users(group_id, &mut members);
        let members: Vec<usize> = members.into_iter().collect();
        let start: usize = link
            .map(|l| l.rsplit(':').next().unwrap().parse().unwrap())
            .unwrap_or(0);
        let end = (start + 2).min(members.len());
        Ok(UsersPage {
            users: members[start..end].iter().map(|i| user(*i)).collect(),
            next_link: (end < members.len()).then(|| format!("g:{group_id}:{end}")),
        })
    }
}

#[async_trait]
impl DriveFinder for FakeTenant {
    async fn find_drives(&self, users: &[DirectoryUser]) -> PortResult<Vec<DriveLookup>> {
        Ok(users
            .iter()
            .map(|u| {
                let i: usize = u.id[1..].parse().unwrap();
                if i % 4 == 0 {
                    DriveLookup::NoDrive {
                        reason: "ResourceNotFound".into(),
                    }
                } else {
                    let drive_type = if i == 5 { "documentLibrary" } else { "business" };
                    DriveLookup::Found(DriveInfo {
                        id: format!("d{i}"),
                        drive_type: drive_type.into(),
                        web_url: None,
                    })
                }
            })
            .collect())
    }
}

fn ports<'a>(state: &'a MemoryState, tenant: &'a FakeTenant, queue: &'a MemoryQueue) -> DiscoverPorts<'a> {
    DiscoverPorts {
        state,
        directory: tenant,
        finder: tenant,
        index_queue: queue,
        parked: None,
    }
}

async fn setup() -> MemoryState {
    let state = MemoryState::default();
    state.put_connection(&connection()).await.unwrap();
    state
}

fn drive_ids(jobs: &[IndexJob]) -> Vec<String> {
    jobs.iter()
        .map(|IndexJob::IndexDrive { drive_id, .. }| drive_id.clone())
        .collect()
}

#[tokio::test]
async fn discovery_records_personal_drives_and_users_without_one() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let out = discover(
        &ports(&state, &tenant, &queue),
        "contoso",
        &Deadline::unlimited(),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    let DiscoverOutcome::Finished(summary) = out else {
        panic!("not finished: {out:?}")
    };
    // users 0..10: 0, 4, 8 have no drive; 5 is a SharePoint library.
    assert_eq!(summary.users_seen, 10);
    assert_eq!(summary.users_without_drive, 3);
    assert_eq!(summary.drives_new, 6);
    let mut enqueued = drive_ids(&queue.index_jobs());
    enqueued.sort();
    assert_eq!(enqueued, vec!["d1", "d2", "d3", "d6", "d7", "d9"]);
    assert!(state.all_drives().iter().all(|d| d.state == DriveState::Indexing));
    assert_eq!(state.count_users_without_drive("contoso").await.unwrap(), 3);
    assert!(
        state.drive("d5").await.unwrap().is_none(),
        "a document library must never be recorded"
    );
    assert!(
        state
            .connection("contoso")
            .await
            .unwrap()
            .unwrap()
            .last_discovery
            .is_some()
    );
}

/// The same tenant registered twice (case 10 of issue 13): the drives the first connection
/// recorded stay its own, whatever the second one's scope says.
#[tokio::test]
async fn discovery_leaves_the_drives_another_connection_recorded_untouched() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let theirs = |id: &str, drive_state: DriveState| DriveRecord {
        connection: "contoso-again".into(),
        drive_id: id.into(),
        owner_id: format!("u{}", &id[1..]),
        owner_upn: format!("user{}@contoso.com", &id[1..]),
        web_url: None,
        state: drive_state,
        discovered_at: now(),
        index: IndexProgress::default(),
        parked: None,
    };
    let before = [theirs("d1", DriveState::Unmonitored), theirs("d2", DriveState::Pending)];
    state.insert_new_drives(&before).await.unwrap();

    let summary = run_discovery(&state, &tenant, &queue, "run1").await;

    assert_eq!(summary.drives_of_other_connections, 2);
    assert_eq!(summary.drives_new, 4);
    let mut enqueued = drive_ids(&queue.index_jobs());
    enqueued.sort();
    assert_eq!(
        enqueued,
        vec!["d3", "d6", "d7", "d9"],
        "no job for the other connection's drives"
    );
    for d in &before {
        assert_eq!(state.drive(&d.drive_id).await.unwrap().as_ref(), Some(d));
    }
    // Its next run does not unmonitor them either: they were never this connection's.
    let again = run_discovery(&state, &tenant, &queue, "run2").await;
    assert_eq!(again.drives_unmonitored, 0);
    assert_eq!(state.drive("d1").await.unwrap().unwrap().state, DriveState::Unmonitored);
    assert_eq!(state.drive("d2").await.unwrap().unwrap().state, DriveState::Pending);
}

#[tokio::test]
async fn a_finished_run_enqueues_the_audit_blobs_parked_for_want_of_a_drive_and_a_continued_one_waits() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let blob = ContentBlob {
        content_type: "Audit.SharePoint".into(),
        content_id: "blob-7".into(),
        content_uri: "https://manage.office.com/api/v1.0/t/activity/feed/audit/blob-7$x".into(),
        content_created: now() - chrono::Duration::minutes(30),
        content_expiration: None,
    };
    let parked = ParkedBlob {
        blob: blob.clone(),
        parked_at: now() - chrono::Duration::minutes(20),
        updated_at: now() - chrono::Duration::minutes(20),
        records: 4,
        oldest_record: now() - chrono::Duration::minutes(90),
        site_keys: vec!["user7_contoso_com".into()],
        unread: false,
    };
    state.park_blob("contoso", &parked).await.unwrap();
    let p = DiscoverPorts {
        parked: Some(ParkedWork {
            activity: &state,
            blob_queue: &queue,
        }),
        ..ports(&state, &tenant, &queue)
    };

    // A run cut short by its budget has not placed anything yet: nothing is enqueued.
    let out = discover(
        &p,
        "contoso",
        &Deadline::unlimited().with_max_units(Some(1)),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    assert!(matches!(out, DiscoverOutcome::Continue { .. }), "{out:?}");
    assert!(queue.blob_jobs().is_empty());

    let out = discover(&p, "contoso", &Deadline::unlimited(), now, || "run1".into())
        .await
        .unwrap();
    let DiscoverOutcome::Finished(summary) = out else {
        panic!("not finished: {out:?}")
    };
    assert_eq!(
        summary.scope_version.as_deref(),
        Some("all"),
        "ingest compares it with the scope in force"
    );
    assert_eq!(
        queue.blob_jobs(),
        [BlobJob {
            connection: "contoso".into(),
            blob,
            parked: true,
        }],
        "the parked blob goes back to ingest once the run's drives are recorded"
    );
    assert!(
        state.drive("d7").await.unwrap().is_some(),
        "the drive was recorded before the blob was enqueued"
    );
}

#[tokio::test]
async fn a_second_run_enqueues_no_known_drive() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    discover(&p, "contoso", &Deadline::unlimited(), now, || "run1".into())
        .await
        .unwrap();
    queue.take_index_jobs();
    let out = discover(&p, "contoso", &Deadline::unlimited(), now, || "run2".into())
        .await
        .unwrap();
    assert!(
        matches!(out, DiscoverOutcome::Finished(ref s) if s.drives_new == 0 && s.drives_found == 6),
        "{out:?}"
    );
    assert!(queue.index_jobs().is_empty());
    assert_eq!(
        state.count_users_without_drive("contoso").await.unwrap(),
        3,
        "no double counting"
    );
}

#[tokio::test]
async fn interrupted_discovery_continues_from_its_checkpoint_without_re_enqueuing() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    let out = discover(
        &p,
        "contoso",
        &Deadline::unlimited().with_max_units(Some(2)),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    assert_eq!(out, DiscoverOutcome::Continue { users_seen: 6 });
    assert_eq!(
        state
            .discovery_checkpoint("contoso")
            .await
            .unwrap()
            .unwrap()
            .next_link
            .as_deref(),
        Some("page:6")
    );
    let out = discover(&p, "contoso", &Deadline::unlimited(), now, || "run-other".into())
        .await
        .unwrap();
    let DiscoverOutcome::Finished(summary) = out else {
        panic!("{out:?}")
    };
    assert_eq!(summary.run_id, "run1", "the continuation belongs to the same run");
    assert_eq!(summary.users_seen, 10);
    let ids = drive_ids(&queue.index_jobs());
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), unique.len(), "a drive was enqueued twice: {ids:?}");
    assert_eq!(ids.len(), 6);
    assert!(
        state.discovery_checkpoint("contoso").await.unwrap().is_none(),
        "run closed"
    );
}

#[tokio::test]
async fn drives_recorded_before_a_failed_enqueue_are_enqueued_on_retry() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(3), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    queue.set_failing(true);
    assert!(
        discover(&p, "contoso", &Deadline::unlimited(), now, || "run1".into())
            .await
            .is_err()
    );
    assert!(state.all_drives().iter().all(|d| d.state == DriveState::Pending));
    queue.set_failing(false);
    discover(&p, "contoso", &Deadline::unlimited(), now, || "run1".into())
        .await
        .unwrap();
    let mut ids = drive_ids(&queue.index_jobs());
    ids.sort();
    assert_eq!(ids, vec!["d1", "d2"]);
}

#[tokio::test]
async fn a_bad_secret_is_recorded_with_its_fix_and_parked_work_resumes_once_fixed() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(3), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    discover(&p, "contoso", &Deadline::unlimited(), now, || "run1".into())
        .await
        .unwrap();
    queue.take_index_jobs();
    state
        .set_drive_parked("contoso", "d1", Some("invalid_client"))
        .await
        .unwrap();
    *tenant.fail_with.lock().unwrap() = Some(PortError::terminal(
        "invalid_client",
        "AADSTS7000215: Invalid client secret provided.",
        "create a new client secret",
    ));
    let e = discover(&p, "contoso", &Deadline::unlimited(), now, || "run2".into())
        .await
        .unwrap_err();
    assert!(e.is_terminal());
    let problem = state.connection("contoso").await.unwrap().unwrap().last_error.unwrap();
    assert_eq!(problem.code, "invalid_client");
    assert_eq!(problem.fix, "create a new client secret");

    *tenant.fail_with.lock().unwrap() = None;
    discover(&p, "contoso", &Deadline::unlimited(), now, || "run3".into())
        .await
        .unwrap();
    assert!(state.connection("contoso").await.unwrap().unwrap().last_error.is_none());
    assert_eq!(drive_ids(&queue.index_jobs()), vec!["d1"]);
    assert!(state.drive("d1").await.unwrap().unwrap().parked.is_none());
}

// ---- indexing ----

fn folder(id: &str, parent: Option<&str>, name: &str) -> DeltaItem {
    DeltaItem {
        list_item_uid: None,
        id: id.into(),
        name: Some(name.into()),
        parent_id: parent.map(Into::into),
        is_root: parent.is_none(),
        is_folder: true,
        deleted: false,
        size: Some(0),
        created_at: Some(now()),
        modified_at: Some(now()),
        etag: Some(format!("\"{{{id}}},1\"")),
        ctag: None,
        created_by: None,
        modified_by: None,
        mime_type: None,
        shared_scope: None,
        sharing_changed: false,
    }
}

fn file(id: &str, parent: &str, name: &str, size: u64) -> DeltaItem {
    DeltaItem {
        is_folder: false,
        size: Some(size),
        ctag: Some(format!("\"c:{{{id}}},1\"")),
        ..folder(id, Some(parent), name)
    }
}

fn deleted(id: &str) -> DeltaItem {
    DeltaItem {
        name: None,
        deleted: true,
        ..folder(id, Some("root"), "")
    }
}

/// Scripted delta pages: link → page. The first page is under the key "".
struct FakeDelta {
    pages: Mutex<HashMap<String, DeltaPage>>,
    gone: Mutex<BTreeSet<String>>,
    calls: Mutex<u64>,
}

impl FakeDelta {
    fn new(pages: Vec<(&str, Vec<DeltaItem>, DeltaNext)>) -> Self {
        let pages = pages
            .into_iter()
            .map(|(k, items, next)| (k.to_owned(), DeltaPage { items, next }))
            .collect();
        Self {
            pages: Mutex::new(pages),
            gone: Mutex::new(BTreeSet::new()),
            calls: Mutex::new(0),
        }
    }
}

#[async_trait]
impl DriveDelta for FakeDelta {
    async fn delta_page(&self, _drive: &str, link: Option<&str>) -> Result<DeltaPage, DeltaError> {
        *self.calls.lock().unwrap() += 1;
        let key = link.unwrap_or("");
        if self.gone.lock().unwrap().contains(key) {
            return Err(DeltaError::ResyncRequired {
                code: "resyncRequired".into(),
                restart_link: Some("".into()),
            });
        }
        Ok(self.pages.lock().unwrap().get(key).cloned().expect("unknown link"))
    }
}

fn three_pages() -> FakeDelta {
    FakeDelta::new(vec![
        (
            "",
            vec![
                folder("root", None, "root"),
                folder("docs", Some("root"), "Documents"),
                file("a", "docs", "a.docx", 10),
            ],
            DeltaNext::NextLink("p2".into()),
        ),
        (
            "p2",
            // b appears twice: the later occurrence wins.
            vec![
                file("b", "sub", "old-name.txt", 1),
                folder("sub", Some("docs"), "Sub"),
                file("b", "sub", "b.txt", 20),
            ],
            DeltaNext::NextLink("p3".into()),
        ),
        (
            "p3",
            vec![file("c", "sub", "c.pdf", 30), deleted("gone")],
            DeltaNext::DeltaLink("delta1".into()),
        ),
    ])
}

async fn drive_in(state: &MemoryState, drive_state: DriveState) {
    let d = DriveRecord {
        connection: "contoso".into(),
        drive_id: "d1".into(),
        owner_id: "u1".into(),
        owner_upn: "user1@contoso.com".into(),
        web_url: None,
        state: drive_state,
        discovered_at: now(),
        index: IndexProgress::default(),
        parked: None,
    };
    state.insert_new_drives(&[d]).await.unwrap();
}

#[tokio::test]
async fn an_index_job_of_another_connection_writes_nothing_to_the_drive() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Indexing).await;
    let before = state.drive("d1").await.unwrap();
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };

    let out = index_drive(&p, "fabrikam", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();

    let IndexOutcome::Skipped { reason } = out else {
        panic!("expected a skip, got {out:?}")
    };
    assert!(reason.contains("contoso") && reason.contains("fabrikam"), "{reason}");
    assert!(inv.rows("d1").is_empty(), "no inventory row written");
    assert_eq!(state.drive("d1").await.unwrap(), before, "checkpoint untouched");
    assert!(
        state
            .set_drive_parked("fabrikam", "d1", Some("invalid_client"))
            .await
            .is_err(),
        "another connection cannot park it"
    );
}

fn paths(inv: &MemoryInventory) -> Vec<(String, String)> {
    let mut v: Vec<_> = inv.rows("d1").into_iter().map(|r| (r.item_id, r.path)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_full_walk_writes_one_row_per_item_with_paths_and_no_hashes() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Indexing).await;
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };
    let out = index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    assert_eq!(out, IndexOutcome::Completed { pages: 3, items: 5 });
    assert_eq!(
        paths(&inv),
        vec![
            ("a".into(), "/Documents/a.docx".into()),
            ("b".into(), "/Documents/Sub/b.txt".into()),
            ("c".into(), "/Documents/Sub/c.pdf".into()),
            ("docs".into(), "/Documents".into()),
            ("sub".into(), "/Documents/Sub".into()),
        ]
    );
    let a = inv.rows("d1").into_iter().find(|r| r.item_id == "a").unwrap();
    assert_eq!(
        a.hash_unavailable.as_deref(),
        Some(HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING)
    );
    assert!(a.md5.is_none() && a.sha256.is_none());
    let d = state.drive("d1").await.unwrap().unwrap();
    assert_eq!(d.state, DriveState::Indexed);
    assert_eq!(d.index.delta_link.as_deref(), Some("delta1"));
    assert_eq!((d.index.files, d.index.folders, d.index.bytes), (3, 2, 60));
}

/// The counts status shows are rows, not delta entries: an item listed on two pages (an older
/// and a newer version), an item listed and then deleted, and an incremental round with a new
/// file, an edited one, a deletion and the deletion of an item never indexed.
#[tokio::test]
async fn item_counts_are_the_rows_the_inventory_holds_not_the_entries_delta_listed() {
    let (state, inv) = (MemoryState::default(), MemoryInventory::default());
    let delta = FakeDelta::new(vec![
        (
            "",
            vec![
                folder("root", None, "root"),
                folder("docs", Some("root"), "Documents"),
                file("a", "docs", "a.docx", 10),
                file("b", "docs", "b.docx", 10),
                file("tmp", "docs", "~tmp.docx", 1),
            ],
            DeltaNext::NextLink("p2".into()),
        ),
        (
            "p2",
            // A newer version of b, and tmp deleted: two entries that are no new rows.
            vec![file("b", "docs", "b.docx", 12), deleted("tmp")],
            DeltaNext::DeltaLink("delta1".into()),
        ),
        (
            "delta1",
            vec![
                file("new", "docs", "new.txt", 5),
                file("a", "docs", "a.docx", 11),
                deleted("b"),
                deleted("never-indexed"),
            ],
            DeltaNext::DeltaLink("delta2".into()),
        ),
    ]);
    drive_in(&state, DriveState::Indexing).await;
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };
    index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    let d = state.drive("d1").await.unwrap().unwrap();
    assert_eq!(inv.rows("d1").len(), 3, "docs, a, b");
    assert_eq!((d.index.items, d.index.files, d.index.folders), (3, 2, 1));

    index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    let d = state.drive("d1").await.unwrap().unwrap();
    assert_eq!(
        d.index.delta_link.as_deref(),
        Some("delta2"),
        "the incremental round ran"
    );
    assert_eq!(inv.rows("d1").len(), 3, "docs, a, new");
    assert_eq!((d.index.items, d.index.files, d.index.folders), (3, 2, 1));
}

#[tokio::test]
async fn resumes_from_next_link_after_the_budget_runs_out() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Indexing).await;
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };
    let out = index_drive(&p, "contoso", "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    assert_eq!(out, IndexOutcome::Continue { pages: 1 });
    assert_eq!(
        state.drive("d1").await.unwrap().unwrap().index.next_link.as_deref(),
        Some("p2")
    );
    // A fresh worker (empty path cache) continues: parents come from the inventory.
    let out = index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    assert_eq!(out, IndexOutcome::Completed { pages: 2, items: 3 });
    assert_eq!(paths(&inv).len(), 5);
    assert!(paths(&inv).iter().all(|(_, p)| !p.contains("unknown")));
    assert_eq!(*delta.calls.lock().unwrap(), 3, "no page fetched twice");
}

#[tokio::test]
async fn a_stale_worker_stops_when_the_checkpoint_moved() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Indexing).await;
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };
    let before = state.drive("d1").await.unwrap().unwrap().index;
    index_drive(&p, "contoso", "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    let moved = state.drive("d1").await.unwrap().unwrap().index;
    // A redelivered message whose worker read the drive before the first save.
    assert!(
        !state
            .save_index_progress("contoso", "d1", &before, &before, DriveState::Indexing)
            .await
            .unwrap()
    );
    assert_eq!(state.drive("d1").await.unwrap().unwrap().index, moved);
}

#[tokio::test]
async fn a_410_restarts_the_walk_and_reconciles_items_no_longer_present() {
    let (state, inv) = (MemoryState::default(), MemoryInventory::default());
    drive_in(&state, DriveState::Indexing).await;
    let first = three_pages();
    index_drive(
        &IndexPorts {
            pending: None,
            drives: &state,
            inventory: &inv,
            delta: &first,
            sharing: None,
        },
        "contoso",
        "d1",
        &Deadline::unlimited(),
        now,
    )
    .await
    .unwrap();
    // The stored delta link is rejected; a full walk no longer lists c.pdf.
    let second = FakeDelta::new(vec![
        (
            "",
            vec![
                folder("root", None, "root"),
                folder("docs", Some("root"), "Documents"),
                file("a", "docs", "a.docx", 10),
            ],
            DeltaNext::NextLink("q2".into()),
        ),
        (
            "q2",
            vec![folder("sub", Some("docs"), "Sub"), file("b", "sub", "b.txt", 20)],
            DeltaNext::DeltaLink("delta2".into()),
        ),
    ]);
    second.gone.lock().unwrap().insert("delta1".into());
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &second,
        sharing: None,
    };
    let out = index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    assert!(matches!(out, IndexOutcome::Completed { .. }), "{out:?}");
    let ids: Vec<String> = paths(&inv).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, vec!["a", "b", "docs", "sub"]);
    let d = state.drive("d1").await.unwrap().unwrap();
    assert_eq!((d.index.generation, d.index.resyncs, d.index.reconcile), (2, 1, false));
    assert_eq!(d.index.delta_link.as_deref(), Some("delta2"));
    assert_eq!(d.state, DriveState::Indexed);
}

#[tokio::test]
async fn unmonitored_drives_get_no_work() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Unmonitored).await;
    let out = index_drive(
        &IndexPorts {
            pending: None,
            drives: &state,
            inventory: &inv,
            delta: &delta,
            sharing: None,
        },
        "contoso",
        "d1",
        &Deadline::unlimited(),
        now,
    )
    .await
    .unwrap();
    assert!(matches!(out, IndexOutcome::Skipped { .. }));
    assert_eq!(*delta.calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn children_of_the_root_resolve_after_a_hand_over_although_the_root_has_no_row() {
    let (state, inv) = (MemoryState::default(), MemoryInventory::default());
    drive_in(&state, DriveState::Indexing).await;
    let delta = FakeDelta::new(vec![
        (
            "",
            vec![folder("root", None, "root"), folder("docs", Some("root"), "Documents")],
            DeltaNext::NextLink("p2".into()),
        ),
        (
            "p2",
            vec![file("top", "root", "top.txt", 5)],
            DeltaNext::DeltaLink("d".into()),
        ),
    ]);
    let p = IndexPorts {
        pending: None,
        drives: &state,
        inventory: &inv,
        delta: &delta,
        sharing: None,
    };
    index_drive(&p, "contoso", "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    // A new invocation: nothing cached, and the root has no inventory row.
    index_drive(&p, "contoso", "d1", &Deadline::unlimited(), now)
        .await
        .unwrap();
    assert_eq!(
        paths(&inv),
        vec![("docs".into(), "/Documents".into()), ("top".into(), "/top.txt".into())]
    );
}

// ------------------------------------------------------------------------------------------
// Scope: discovery under a users or groups scope, leaving and returning drives, the drive cap,
// and applying uploads.

fn scope_of(kind: ScopeKind, entries: Vec<ScopeEntry>, version: &str, minutes: i64) -> Scope {
    Scope {
        kind,
        entries,
        version: version.into(),
        applied_at: now(),
        uploaded_at: now() + chrono::Duration::minutes(minutes),
        source: None,
    }
}

fn email(e: &str) -> ScopeEntry {
    ScopeEntry::User(UserSelector::Email(e.into()))
}

fn group_named(n: &str) -> ScopeEntry {
    ScopeEntry::Group(GroupSelector::DisplayName(n.into()))
}

async fn run_discovery(state: &MemoryState, tenant: &FakeTenant, queue: &MemoryQueue, run: &str) -> DiscoverySummary {
    let out = discover(
        &ports(state, tenant, queue),
        "contoso",
        &Deadline::unlimited(),
        now,
        || run.into(),
    )
    .await
    .unwrap();
    let DiscoverOutcome::Finished(summary) = out else {
        panic!("expected a finished run, got {out:?}")
    };
    summary
}

/// Monitored drive ids (every state but unmonitored).
fn monitored(state: &MemoryState) -> BTreeSet<String> {
    state
        .all_drives()
        .into_iter()
        .filter(|d| d.state.is_monitored())
        .map(|d| d.drive_id)
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_users_scope_monitors_exactly_the_listed_users_and_reports_unknown_names() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let entries = vec![
        email("USER1@contoso.com"),
        email("user2@contoso.com"),
        email("user4@contoso.com"),
        email("nobody@contoso.com"),
    ];
    state
        .replace_scope("contoso", &scope_of(ScopeKind::Users, entries, "v1", 0))
        .await
        .unwrap();
    let summary = run_discovery(&state, &tenant, &queue, "run1").await;

    // user4 has no OneDrive: recorded as such, not monitored.
    assert_eq!(monitored(&state), set(&["d1", "d2"]));
    assert_eq!(summary.scope, ScopeKind::Users);
    assert_eq!(summary.users_seen, 3);
    assert_eq!(summary.users_without_drive, 1);
    assert_eq!(state.count_users_without_drive("contoso").await.unwrap(), 1);
    assert_eq!(summary.unresolved.len(), 1);
    assert_eq!(summary.unresolved[0].entry, email("nobody@contoso.com"));
    assert_eq!(
        drive_ids(&queue.index_jobs()).into_iter().collect::<BTreeSet<_>>(),
        set(&["d1", "d2"])
    );
}

#[tokio::test]
async fn narrowing_the_scope_unmonitors_drives_and_widening_resumes_them_without_new_drives() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    run_discovery(&state, &tenant, &queue, "run1").await;
    let everyone = monitored(&state);
    assert_eq!(everyone, set(&["d1", "d2", "d3", "d6", "d7", "d9"]));
    // d3 finished its walk before leaving: it must come back as indexed, from its delta link.
    let d3 = state.drive("d3").await.unwrap().unwrap();
    let walked = IndexProgress {
        delta_link: Some("delta:d3".into()),
        completed_at: Some(now()),
        pages: 1,
        generation: 1,
        ..IndexProgress::default()
    };
    assert!(
        state
            .save_index_progress("contoso", "d3", &d3.index, &walked, DriveState::Indexed)
            .await
            .unwrap()
    );

    state
        .replace_scope(
            "contoso",
            &scope_of(ScopeKind::Users, vec![email("user1@contoso.com")], "v1", 1),
        )
        .await
        .unwrap();
    queue.take_index_jobs();
    let narrowed = run_discovery(&state, &tenant, &queue, "run2").await;
    assert_eq!(monitored(&state), set(&["d1"]));
    assert_eq!(narrowed.drives_unmonitored, 5);
    assert!(queue.index_jobs().is_empty(), "nothing to index after narrowing");
    assert_eq!(state.all_drives().len(), 6, "unmonitored drives keep their records");
    assert_eq!(
        state.count_users_without_drive("contoso").await.unwrap(),
        0,
        "users out of scope are no longer counted as without a OneDrive"
    );

    // An indexer holding d2 from before cannot bring it back.
    let d2 = state.drive("d2").await.unwrap().unwrap();
    let mut moved = d2.index.clone();
    moved.pages += 1;
    assert!(
        !state
            .save_index_progress("contoso", "d2", &d2.index, &moved, DriveState::Indexing)
            .await
            .unwrap()
    );

    state
        .replace_scope("contoso", &scope_of(ScopeKind::All, vec![], "v2", 2))
        .await
        .unwrap();
    let widened = run_discovery(&state, &tenant, &queue, "run3").await;
    assert_eq!(monitored(&state), everyone);
    assert_eq!(widened.drives_returned, 5);
    assert_eq!(widened.drives_new, 0);
    let d3 = state.drive("d3").await.unwrap().unwrap();
    assert_eq!(
        d3.state,
        DriveState::Indexed,
        "a walked drive resumes from its delta link"
    );
    assert_eq!(d3.index.delta_link.as_deref(), Some("delta:d3"));
    assert_eq!(
        drive_ids(&queue.index_jobs()).into_iter().collect::<BTreeSet<_>>(),
        set(&["d2", "d3", "d6", "d7", "d9"])
    );
}

#[tokio::test]
async fn a_groups_scope_follows_nested_membership_across_pages_and_its_changes() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(12), MemoryQueue::default());
    tenant.add_group("g-sales", "Sales", Some("sales@contoso.com"), &[1, 2], &["g-east"]);
    tenant.add_group("g-east", "Sales East", None, &[3, 6, 7], &["g-deep"]);
    tenant.add_group("g-deep", "Sales East Interns", None, &[9, 1], &[]);
    tenant.add_group("g-other", "Finance", None, &[10, 11], &[]);
    let entries = vec![
        ScopeEntry::Group(GroupSelector::Mail("SALES@contoso.com".into())),
        group_named("Sales East"),
        group_named("Ghosts"),
    ];
    state
        .replace_scope("contoso", &scope_of(ScopeKind::Groups, entries, "v1", 0))
        .await
        .unwrap();
    let summary = run_discovery(&state, &tenant, &queue, "run1").await;
    assert_eq!(monitored(&state), set(&["d1", "d2", "d3", "d6", "d7", "d9"]));
    assert_eq!(summary.unresolved.len(), 1);
    assert_eq!(summary.unresolved[0].entry, group_named("Ghosts"));
    assert_eq!(queue.index_jobs().len(), 6, "a user in several groups is enqueued once");

    // Membership changes without a new upload: the next run follows them.
    tenant.groups.lock().unwrap().get_mut("g-deep").unwrap().users.push(11);
    tenant
        .groups
        .lock()
        .unwrap()
        .get_mut("g-east")
        .unwrap()
        .users
        .retain(|u| *u != 6);
    let summary = run_discovery(&state, &tenant, &queue, "run2").await;
    assert_eq!(monitored(&state), set(&["d1", "d2", "d3", "d7", "d9", "d11"]));
    assert_eq!(summary.drives_new, 1);
    assert_eq!(summary.drives_unmonitored, 1);
    assert_eq!(state.drive("d6").await.unwrap().unwrap().state, DriveState::Unmonitored);
}

#[tokio::test]
async fn the_drive_cap_monitors_no_more_than_it_allows_and_says_so() {
    let state = MemoryState::default();
    let mut capped = connection();
    capped.drive_cap = 4;
    state.put_connection(&capped).await.unwrap();
    let (tenant, queue) = (FakeTenant::new(10), MemoryQueue::default());
    let summary = run_discovery(&state, &tenant, &queue, "run1").await;
    assert_eq!(monitored(&state).len(), 4);
    assert_eq!(summary.drives_over_cap, 2);
    let error = state.connection("contoso").await.unwrap().unwrap().last_error.unwrap();
    assert_eq!(error.code, "drive_cap_exceeded");
    assert!(
        error
            .message
            .contains("6 OneDrives are in scope but the drive cap is 4"),
        "{}",
        error.message
    );
    assert!(error.fix.contains("filetrail scope upload contoso"), "{}", error.fix);

    // The next run keeps the same four (no churn) and still reports the excess.
    run_discovery(&state, &tenant, &queue, "run2").await;
    assert_eq!(monitored(&state).len(), 4);

    // Raising the cap admits the rest and clears the error.
    capped.drive_cap = 100;
    capped.last_error = Some(error);
    state.put_connection(&capped).await.unwrap();
    let summary = run_discovery(&state, &tenant, &queue, "run3").await;
    assert_eq!(monitored(&state).len(), 6);
    assert_eq!(summary.drives_over_cap, 0);
    assert!(state.connection("contoso").await.unwrap().unwrap().last_error.is_none());
}

#[tokio::test]
async fn a_scope_change_during_a_run_restarts_it_under_the_new_scope() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let out = discover(
        &ports(&state, &tenant, &queue),
        "contoso",
        &Deadline::unlimited().with_max_units(Some(1)),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    assert!(matches!(out, DiscoverOutcome::Continue { .. }));
    state
        .replace_scope(
            "contoso",
            &scope_of(ScopeKind::Users, vec![email("user9@contoso.com")], "v1", 1),
        )
        .await
        .unwrap();
    let summary = run_discovery(&state, &tenant, &queue, "run2").await;
    assert_eq!(summary.run_id, "run2");
    assert_eq!(monitored(&state), set(&["d9"]));
}

mod apply {
    use super::*;
    use filetrail_core::apply_scope::*;
    use filetrail_core::memory::MemoryObjects;

    fn event(objects: &MemoryObjects, key: &str, body: &[u8], minutes: i64) -> UploadEvent {
        let etag = objects.put(key, body);
        UploadEvent {
            key: key.into(),
            etag,
            size: body.len() as u64,
            time: now() + chrono::Duration::minutes(minutes),
        }
    }

    fn result_of(objects: &MemoryObjects, outcome: &ApplyOutcome) -> ScopeUploadResult {
        let ApplyOutcome::Done(result) = outcome else {
            panic!("expected a result, got {outcome:?}")
        };
        let stored: ScopeUploadResult = serde_json::from_slice(&objects.get(&result.result_key).unwrap()).unwrap();
        assert_eq!(
            &stored,
            result.as_ref(),
            "the result object says what the use case returned"
        );
        stored
    }

    #[tokio::test]
    async fn an_accepted_upload_replaces_the_scope_reports_and_starts_discovery() {
        let (state, objects, queue) = (setup().await, MemoryObjects::default(), MemoryQueue::default());
        let ports = ApplyPorts {
            connections: &state,
            scopes: &state,
            objects: &objects,
            discover_queue: &queue,
        };
        let body = b"Email,Dept\nuser1@contoso.com,x\nnot-an-email,y\nuser1@contoso.com,z\n";
        let upload = event(&objects, "scoping/contoso/users.csv", body, 0);
        let out = apply_upload(&ports, &upload, now()).await.unwrap();
        let result = result_of(&objects, &out);
        assert!(result.accepted);
        assert_eq!(result.entries, 1);
        assert_eq!(result.duplicates, 1);
        assert_eq!(result.rejected_rows.len(), 1);
        assert_eq!(result.rejected_rows[0].line, 3);
        assert!(result.result_key.starts_with("scoping/contoso/results/"));
        let scope = state.scope("contoso").await.unwrap().unwrap();
        assert_eq!(scope.kind, ScopeKind::Users);
        assert_eq!(scope.entries, vec![email("user1@contoso.com")]);
        assert_eq!(
            queue.discover_jobs(),
            vec![filetrail_core::jobs::DiscoverJob::Discover {
                connection: "contoso".into(),
                reason: "scope".into()
            }]
        );
        assert_eq!(state.last_scope_upload("contoso").await.unwrap(), Some(result.clone()));

        // Redelivery: same result, same scope.
        let again = apply_upload(&ports, &upload, now()).await.unwrap();
        assert!(result_of(&objects, &again).accepted);
        assert_eq!(state.scope("contoso").await.unwrap().unwrap(), scope);
    }

    #[tokio::test]
    async fn a_rejected_upload_leaves_the_previous_scope_in_force() {
        let (state, objects, queue) = (setup().await, MemoryObjects::default(), MemoryQueue::default());
        let ports = ApplyPorts {
            connections: &state,
            scopes: &state,
            objects: &objects,
            discover_queue: &queue,
        };
        let good = event(&objects, "scoping/contoso/groups.csv", b"Groups\nSales\n", 0);
        apply_upload(&ports, &good, now()).await.unwrap();
        let before = state.scope("contoso").await.unwrap().unwrap();

        for (key, body) in [
            ("scoping/contoso/users.csv", &b"Name,Dept\nx,y\n"[..]),
            ("scoping/contoso/users.csv", &b"\xff\xfeE\x00m\x00"[..]),
            ("scoping/contoso/people.csv", &b"Email\nuser1@contoso.com\n"[..]),
            ("scoping/nobody/users.csv", &b"Email\nuser1@contoso.com\n"[..]),
        ] {
            let upload = event(&objects, key, body, 1);
            let result = result_of(&objects, &apply_upload(&ports, &upload, now()).await.unwrap());
            assert!(!result.accepted, "{key} must be rejected");
            assert!(result.error.is_some(), "{key}: the result says why");
            assert_eq!(state.scope("contoso").await.unwrap().unwrap(), before, "{key}");
        }
        assert_eq!(
            queue.discover_jobs().len(),
            1,
            "only the accepted upload starts discovery"
        );
        let last = state.last_scope_upload("contoso").await.unwrap().unwrap();
        assert!(!last.accepted, "status shows the latest (rejected) upload");
    }

    #[tokio::test]
    async fn an_older_upload_processed_late_never_replaces_a_newer_scope() {
        let (state, objects, queue) = (setup().await, MemoryObjects::default(), MemoryQueue::default());
        let ports = ApplyPorts {
            connections: &state,
            scopes: &state,
            objects: &objects,
            discover_queue: &queue,
        };
        let older = event(&objects, "scoping/contoso/groups.csv", b"Groups\nSales\n", 0);
        let newer = event(&objects, "scoping/contoso/users.csv", b"Email\nuser1@contoso.com\n", 5);
        apply_upload(&ports, &newer, now()).await.unwrap();
        let result = result_of(&objects, &apply_upload(&ports, &older, now()).await.unwrap());
        assert!(!result.accepted);
        assert_eq!(state.scope("contoso").await.unwrap().unwrap().kind, ScopeKind::Users);

        // An object replaced since its event is not read: the newer event applies it.
        let first = event(&objects, "scoping/contoso/users.csv", b"Email\nuser2@contoso.com\n", 6);
        let _second = event(&objects, "scoping/contoso/users.csv", b"Email\nuser3@contoso.com\n", 7);
        let result = result_of(&objects, &apply_upload(&ports, &first, now()).await.unwrap());
        assert!(!result.accepted);
        assert!(result.error.unwrap().contains("replaced by a newer upload"));
    }
}

/// A directory through which a rival discover invocation acts on the run checkpoint while this
/// invocation reads a users page, as a concurrent invocation of the same connection would.
struct Racing<'a> {
    tenant: &'a FakeTenant,
    state: &'a MemoryState,
    rival: Mutex<Option<Rival<'a>>>,
}

/// What the rival does to the store, given the checkpoint it read.
type Rival<'a> = Box<dyn FnOnce(&MemoryState, DiscoveryCheckpoint) + Send + 'a>;

impl Racing<'_> {
    async fn act(&self) {
        let rival = self.rival.lock().unwrap().take();
        if let Some(rival) = rival {
            let cp = self.state.discovery_checkpoint("contoso").await.unwrap().unwrap();
            rival(self.state, cp);
        }
    }
}

#[async_trait]
impl Directory for Racing<'_> {
    async fn users_page(&self, link: Option<&str>) -> PortResult<UsersPage> {
        self.act().await;
        self.tenant.users_page(link).await
    }
    async fn find_users(&self, selectors: &[UserSelector]) -> PortResult<Vec<Vec<DirectoryUser>>> {
        self.tenant.find_users(selectors).await
    }
    async fn find_groups(&self, selectors: &[GroupSelector]) -> PortResult<Vec<Vec<DirectoryGroup>>> {
        self.tenant.find_groups(selectors).await
    }
    async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> PortResult<UsersPage> {
        self.tenant.group_members_page(group_id, link).await
    }
}

/// Runs one invocation of `run1` with `rival` acting during its first users page.
async fn race(
    state: &MemoryState,
    tenant: &FakeTenant,
    queue: &MemoryQueue,
    rival: impl FnOnce(&MemoryState, DiscoveryCheckpoint) + Send + 'static,
) -> DiscoverOutcome {
    let racing = Racing {
        tenant,
        state,
        rival: Mutex::new(Some(Box::new(rival))),
    };
    let p = DiscoverPorts {
        state,
        directory: &racing,
        finder: tenant,
        index_queue: queue,
        parked: None,
    };
    discover(&p, "contoso", &Deadline::unlimited(), now, || "run-late".into())
        .await
        .unwrap()
}

/// Saves `cp` over the stored checkpoint the way a rival invocation's own save would.
fn rival_save(state: &MemoryState, read: &DiscoveryCheckpoint, cp: Option<&DiscoveryCheckpoint>) {
    let saved = ready(state.save_discovery_checkpoint("contoso", cp, Some(&read.version())));
    assert!(saved.unwrap(), "the rival holds the current version");
}

fn ready<F: std::future::Future>(f: F) -> F::Output {
    // MemoryState only gives way (and is ready when polled again): a few polls complete it.
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::noop();
    for _ in 0..16 {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            return v;
        }
    }
    panic!("the memory store kept pending")
}

#[tokio::test]
async fn an_invocation_whose_run_a_rival_advanced_stops_without_moving_it() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    let first = discover(
        &p,
        "contoso",
        &Deadline::unlimited().with_max_units(Some(1)),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    assert_eq!(first, DiscoverOutcome::Continue { users_seen: 3 });

    // While this invocation reads page 2, a redelivered one saves page 2 first.
    let out = race(&state, &tenant, &queue, |state, cp| {
        let advanced = DiscoveryCheckpoint {
            seq: cp.seq + 1,
            pages: cp.pages + 1,
            next_link: Some("page:6".into()),
            users_seen: 6,
            ..cp.clone()
        };
        rival_save(state, &cp, Some(&advanced));
    })
    .await;
    assert!(matches!(out, DiscoverOutcome::Skipped { .. }), "{out:?}");
    let cp = state.discovery_checkpoint("contoso").await.unwrap().unwrap();
    assert_eq!(
        (cp.run_id.as_str(), cp.next_link.as_deref(), cp.users_seen),
        ("run1", Some("page:6"), 6)
    );

    // The run goes on from the rival's checkpoint and ends once.
    let DiscoverOutcome::Finished(summary) = discover(&p, "contoso", &Deadline::unlimited(), now, || "run2".into())
        .await
        .unwrap()
    else {
        panic!("not finished")
    };
    assert_eq!(summary.run_id, "run1");
}

#[tokio::test]
async fn a_run_a_rival_finished_is_not_resurrected_and_sweeps_nothing() {
    let (state, tenant, queue) = (setup().await, FakeTenant::new(10), MemoryQueue::default());
    let p = ports(&state, &tenant, &queue);
    let first = discover(
        &p,
        "contoso",
        &Deadline::unlimited().with_max_units(Some(1)),
        now,
        || "run1".into(),
    )
    .await
    .unwrap();
    assert_eq!(first, DiscoverOutcome::Continue { users_seen: 3 });
    let monitored: BTreeSet<String> = state.all_drives().into_iter().map(|d| d.drive_id).collect();
    assert_eq!(monitored, BTreeSet::from(["d1".to_owned(), "d2".to_owned()]));

    // While this invocation reads page 2, a rival reads the rest, closes the run and forgets it.
    let out = race(&state, &tenant, &queue, |state, cp| {
        rival_save(state, &cp, None);
        ready(state.delete_run("contoso", &cp.run_id)).unwrap();
    })
    .await;
    assert!(matches!(out, DiscoverOutcome::Skipped { .. }), "{out:?}");
    assert_eq!(
        state.discovery_checkpoint("contoso").await.unwrap(),
        None,
        "no run reopened"
    );
    assert!(
        state.all_drives().iter().all(|d| d.state != DriveState::Unmonitored),
        "a run missing its first page must not sweep: {:?}",
        state.all_drives()
    );
}
