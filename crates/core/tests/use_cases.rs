#![allow(clippy::unwrap_used, clippy::expect_used)]

//! The discovery and indexing use cases over in-memory ports and scripted Microsoft fakes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use filetrail_core::PortError;
use filetrail_core::budget::Deadline;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, discover};
use filetrail_core::index::{IndexOutcome, IndexPorts, index_drive};
use filetrail_core::jobs::IndexJob;
use filetrail_core::memory::{MemoryInventory, MemoryQueue, MemoryState};
use filetrail_core::model::*;
use filetrail_core::ports::*;

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
}

impl FakeTenant {
    fn new(n: usize) -> Self {
        Self {
            n,
            fail_with: Mutex::new(None),
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
    state.set_drive_parked("d1", Some("invalid_client")).await.unwrap();
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
        state: &state,
        inventory: &inv,
        delta: &delta,
    };
    let out = index_drive(&p, "d1", &Deadline::unlimited(), now).await.unwrap();
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

#[tokio::test]
async fn resumes_from_next_link_after_the_budget_runs_out() {
    let (state, inv, delta) = (MemoryState::default(), MemoryInventory::default(), three_pages());
    drive_in(&state, DriveState::Indexing).await;
    let p = IndexPorts {
        state: &state,
        inventory: &inv,
        delta: &delta,
    };
    let out = index_drive(&p, "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    assert_eq!(out, IndexOutcome::Continue { pages: 1 });
    assert_eq!(
        state.drive("d1").await.unwrap().unwrap().index.next_link.as_deref(),
        Some("p2")
    );
    // A fresh worker (empty path cache) continues: parents come from the inventory.
    let out = index_drive(&p, "d1", &Deadline::unlimited(), now).await.unwrap();
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
        state: &state,
        inventory: &inv,
        delta: &delta,
    };
    let before = state.drive("d1").await.unwrap().unwrap().index;
    index_drive(&p, "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    let moved = state.drive("d1").await.unwrap().unwrap().index;
    // A redelivered message whose worker read the drive before the first save.
    assert!(
        !state
            .save_index_progress("d1", &before, &before, DriveState::Indexing)
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
            state: &state,
            inventory: &inv,
            delta: &first,
        },
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
        state: &state,
        inventory: &inv,
        delta: &second,
    };
    let out = index_drive(&p, "d1", &Deadline::unlimited(), now).await.unwrap();
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
            state: &state,
            inventory: &inv,
            delta: &delta,
        },
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
        state: &state,
        inventory: &inv,
        delta: &delta,
    };
    index_drive(&p, "d1", &Deadline::unlimited().with_max_units(Some(1)), now)
        .await
        .unwrap();
    // A new invocation: nothing cached, and the root has no inventory row.
    index_drive(&p, "d1", &Deadline::unlimited(), now).await.unwrap();
    assert_eq!(
        paths(&inv),
        vec![("docs".into(), "/Documents".into()), ("top".into(), "/top.txt".into())]
    );
}
