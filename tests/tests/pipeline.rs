//! End to end on moto + m365-sim over real HTTP: discovery and indexing through the real handlers,
//! wired by the local runner as template.yaml wires them in AWS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use filetrail_cli::local::runner::{InvocationOutcome, RunnerEvent, StopReason};
use filetrail_cli::status::{self, ConnectionStatus};
use filetrail_core::ports::DriveStore;
use filetrail_e2e::{CONNECTION, Item, Stack, counter, expected_inventory, team_site_drive_ids};
use m365_sim::{FaultConfig, FilesPerDrive, SimConfig};

fn tenant(users: u64, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        users,
        no_drive_ratio: 0.1,
        team_sites: 3,
        files_per_drive: FilesPerDrive::Range { min: 0, max: 30 },
        page_size_default: 50,
        ..SimConfig::default()
    }
}

/// Compares inventories and reports the first differences instead of two huge lists.
fn assert_same_inventory(actual: &[Item], expected: &[Item]) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|i| actual.binary_search(i).is_err())
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|i| expected.binary_search(i).is_err())
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && actual.len() == expected.len(),
        "inventory differs: {} rows, {} expected; missing (first 5) {missing:#?}; extra (first 5) {extra:#?}",
        actual.len(),
        expected.len()
    );
}

async fn connection_status(stack: &Stack) -> ConnectionStatus {
    let mut all = status::collect(&stack.state(), Some(CONNECTION)).await.unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

async fn assert_fully_indexed(stack: &Stack) {
    let expected = expected_inventory(&stack.sim);
    assert!(
        expected.len() > 500,
        "the tenant should hold a real inventory, has {}",
        expected.len()
    );
    let actual = stack.inventory().await.unwrap();
    assert_same_inventory(&actual, &expected);

    let sites = team_site_drive_ids(&stack.sim);
    assert_eq!(sites.len(), 3);
    assert!(
        actual.iter().all(|i| !sites.contains(&i.drive_id)),
        "a team-site item was indexed"
    );

    let tenant = stack.sim.tenant();
    let with_drive = tenant.users_with_drive();
    let status = connection_status(stack).await;
    assert_eq!(status.drives.indexed, with_drive, "{status:#?}");
    assert_eq!((status.drives.indexing, status.drives.pending), (0, 0), "{status:#?}");
    assert_eq!(status.users_without_onedrive, tenant.user_count() - with_drive);
    assert!(status.error.is_none(), "{status:#?}");
    assert!(status.discovery_in_progress.is_none());
    let last = status.last_discovery.expect("a finished discovery run");
    assert_eq!(last.users_seen, tenant.user_count());
    assert!(
        stack.dead_letters().await.unwrap().values().all(|n| *n == 0),
        "nothing may end in a DLQ"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_300_user_tenant_is_discovered_and_fully_indexed() {
    let stack = Stack::start(tenant(300, 11)).await.unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    let report = stack.discover_and_index(&runner).await.unwrap();
    assert_eq!(report.reason, StopReason::Idle);
    assert_fully_indexed(&stack).await;
    // Users' drives are looked up 20 per $batch; the only items whose permissions are listed
    // (5 resource units each) are the shared ones, once each, batched too.
    let stats = stack.sim.stats();
    let shared: u64 = stack
        .monitored_drives()
        .await
        .unwrap()
        .iter()
        .map(|d| stack.sim.shared_items(d).len() as u64)
        .sum();
    assert!(shared > 0, "the seeded tenant shares some files");
    assert_eq!(stats.permissions, shared, "{stats:?}");
    // The 300 users come in one page ($top=999), each looked up once after each listing of it:
    // a discovery invocation retried after a transient failure (a slow local stack) lists the
    // page again and looks its users up again.
    let lookups = stats.batch_inner - shared;
    assert!(
        stats.users >= 1 && (300..=300 * stats.users).contains(&lookups),
        "{lookups} drive lookups for {} listings of 300 users: {stats:?}",
        stats.users
    );
    assert!(stats.batch >= 300u64.div_ceil(20), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_errors_and_dropped_connections_leave_the_same_inventory() {
    let stack = Stack::start(tenant(300, 12)).await.unwrap();
    stack.sim.set_faults(FaultConfig {
        throttle_rate: 0.07,
        error_5xx_rate: 0.02,
        drop_rate: 0.01,
        batch_inner_throttle_rate: 0.1,
        retry_after_secs: (0.01, 0.2),
        ..FaultConfig::default()
    });
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    let report = stack.discover_and_index(&runner).await.unwrap();
    assert_eq!(report.reason, StopReason::Idle);
    let faults = stack.sim.stats().faults;
    assert!(
        serde_json::to_value(&faults)
            .unwrap()
            .as_object()
            .unwrap()
            .values()
            .any(|v| v.as_u64() > Some(10)),
        "faults were injected: {faults:?}"
    );
    assert_fully_indexed(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_index_worker_resumes_from_its_checkpoint_to_the_same_inventory() {
    let stack = Stack::start(SimConfig {
        files_per_drive: FilesPerDrive::Range { min: 60, max: 150 },
        ..tenant(40, 13)
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    // Two delta pages per invocation, so drives need several invocations and continuations.
    let env = [("FILETRAIL_MAX_PAGES_PER_INVOCATION", "2")];
    let killed = stack
        .runner(&env, |o| {
            o.abort_after_invocations = Some(12);
            o.invocation_timeout = Some(Duration::from_secs(5));
            o.visibility_timeout = Some(Duration::from_secs(5));
        })
        .unwrap();
    let first = stack.discover_and_index(&killed).await.unwrap();
    assert_eq!(first.reason, StopReason::AbortedAfterInvocations);
    let half = stack.inventory().await.unwrap().len();
    assert!(
        half > 0 && half < expected_inventory(&stack.sim).len(),
        "the kill happened midway ({half} rows)"
    );

    let delta_before = stack.sim.stats().delta;
    let restarted = stack.runner(&env, |_| {}).unwrap();
    let report = restarted.run().await;
    assert_eq!(report.reason, StopReason::Idle);
    assert_fully_indexed(&stack).await;

    // Each drive's walk continued from its checkpoint: the pages fetched exceed the pages the
    // walks committed only by pages in flight when the worker died (one per running invocation,
    // concurrency 2) and by the rare double delivery of an at-least-once queue.
    let tenant = stack.sim.tenant();
    let state = stack.state();
    let mut committed = 0;
    for user in tenant.users() {
        if let Some(d) = tenant.drive_of_user(user.index) {
            committed += state.drive(&d.id).await.unwrap().expect("drive recorded").index.pages;
        }
    }
    let delta_total = stack.sim.stats().delta;
    assert!(
        delta_total <= committed + 2 + 2,
        "delta pages fetched {delta_total}, committed {committed}: whole walks were repeated"
    );
    assert!(delta_total > delta_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_transparently_midway() {
    let stack = Stack::start(SimConfig {
        files_per_drive: FilesPerDrive::Fixed(120),
        ..tenant(30, 14)
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let pages = counter();
    let sink_pages = pages.clone();
    let sim_expire = stack.sim.control();
    let runner = stack
        .runner(
            &[
                ("FILETRAIL_MAX_PAGES_PER_INVOCATION", "1"),
                ("FILETRAIL_CREDENTIALS_TTL_SECS", "3600"),
            ],
            move |o| {
                o.on_event = Some(std::sync::Arc::new(move |e: &RunnerEvent| {
                    if let RunnerEvent::Finished { function, .. } = e
                        && function == "IndexDriveFunction"
                        && sink_pages.fetch_add(1, Ordering::SeqCst) == 10
                    {
                        sim_expire.expire_tokens();
                    }
                }))
            },
        )
        .unwrap();
    stack.discover_and_index(&runner).await.unwrap();
    assert!(pages.load(Ordering::SeqCst) > 10);
    assert_fully_indexed(&stack).await;
    let stats = stack.sim.stats();
    assert!(stats.unauthorized >= 1, "the expired token was presented: {stats:?}");
    assert!(stats.token >= 2, "a new token was fetched: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_reported_with_its_fix_and_queued_work_survives() {
    let stack = Stack::start(SimConfig {
        files_per_drive: FilesPerDrive::Fixed(80),
        ..tenant(30, 15)
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let env = [("FILETRAIL_MAX_PAGES_PER_INVOCATION", "1")];
    // Discovery with the right secret; indexing stops after a few invocations.
    let runner = stack
        .runner(&env, |o| {
            o.abort_after_invocations = Some(8);
            o.invocation_timeout = Some(Duration::from_secs(5));
            o.visibility_timeout = Some(Duration::from_secs(5));
        })
        .unwrap();
    stack.discover_and_index(&runner).await.unwrap();

    // The secret is replaced by a wrong one and the current tokens expire.
    stack.set_secret("not-the-secret").await.unwrap();
    stack.sim.expire_tokens();
    let failures = counter();
    let f = failures.clone();
    let runner = stack
        .runner(&env, move |o| {
            o.on_event = Some(std::sync::Arc::new(move |e: &RunnerEvent| {
                if let RunnerEvent::Finished {
                    outcome: InvocationOutcome::Failed(_) | InvocationOutcome::Panicked(_),
                    ..
                } = e
                {
                    f.fetch_add(1, Ordering::SeqCst);
                }
            }))
        })
        .unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
    let status = connection_status(&stack).await;
    let error = status.error.clone().expect("the connection shows the problem");
    assert!(
        error.code.contains("7000215") || error.code == "invalid_client",
        "{error:?}"
    );
    assert!(error.fix.contains("secret"), "the fix says what to do: {error:?}");
    assert!(
        status.drives.indexing > 0,
        "unfinished drives keep their state: {status:#?}"
    );
    assert!(
        stack.dead_letters().await.unwrap().values().all(|n| *n == 0),
        "no work went to a DLQ"
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no invocation failed");
    let token_requests = stack.sim.stats().token;

    // The admin stores the right secret; the next discovery run resumes the parked drives.
    stack.set_secret(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    stack.discover_and_index(&runner).await.unwrap();
    assert_fully_indexed(&stack).await;
    assert!(stack.sim.stats().token > token_requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_drives_apply_deletions_and_a_rejected_delta_token_rewalks_and_reconciles() {
    let stack = Stack::start(SimConfig {
        files_per_drive: FilesPerDrive::Fixed(25),
        ..tenant(20, 16)
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    stack
        .discover_and_index(&stack.runner(&[], |_| {}).unwrap())
        .await
        .unwrap();
    assert_fully_indexed(&stack).await;

    let tenant = stack.sim.tenant();
    let drive = tenant
        .users()
        .find_map(|u| tenant.drive_of_user(u.index))
        .expect("a drive");
    let files: Vec<_> = tenant.drive_items(&drive.id).filter(|i| !i.is_folder).collect();
    let (first, second) = (files[0].id.clone(), files[1].id.clone());
    let without = |gone: &[&str]| -> Vec<Item> {
        expected_inventory(&stack.sim)
            .into_iter()
            .filter(|i| !gone.contains(&i.item_id.as_str()))
            .collect()
    };

    // An incremental round from the stored delta link sees the deletion.
    stack
        .sim
        .apply_drive_change(&drive.id, m365_sim::DriveChange::Delete { item_id: first.clone() })
        .unwrap();
    stack.enqueue_index(&drive.id).await.unwrap();
    stack.runner(&[], |_| {}).unwrap().run().await;
    assert_same_inventory(&stack.inventory().await.unwrap(), &without(&[&first]));

    // The service rejects the stored token (410): the walk restarts and the row of an item deleted
    // meanwhile is reconciled away.
    stack
        .sim
        .apply_drive_change(
            &drive.id,
            m365_sim::DriveChange::Delete {
                item_id: second.clone(),
            },
        )
        .unwrap();
    assert!(stack.sim.invalidate_delta_tokens(&drive.id));
    stack.enqueue_index(&drive.id).await.unwrap();
    stack.runner(&[], |_| {}).unwrap().run().await;
    assert_same_inventory(&stack.inventory().await.unwrap(), &without(&[&first, &second]));
    let record = stack.state().drive(&drive.id).await.unwrap().unwrap();
    assert_eq!(
        (record.index.resyncs, record.index.generation),
        (1, 2),
        "{:?}",
        record.index
    );
    assert_eq!(record.state, filetrail_core::model::DriveState::Indexed);
    assert!(stack.sim.stats().delta_resync >= 1);
}
