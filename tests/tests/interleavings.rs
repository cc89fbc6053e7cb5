//! The order in which functions run never changes what is recorded: each scenario runs under
//! many seeded interleavings of the schedules and of SQS deliveries (reordered, delivered twice,
//! killed part way, run at the same time; see `filetrail_e2e::interleave`) and must end with the
//! same events, item ids, digests, inventory, exposure report and drops every time, equal to
//! what the simulated tenant did.
//!
//! `FILETRAIL_INTERLEAVINGS` sets the orderings per scenario: `N` runs seeds `0..N` (200 unless
//! set), `A..B` seeds `A..B`, `A,B` those seeds (`0,323` replays ordering 323 of a failure
//! against ordering 0).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration as StdDuration;

use chrono::{Duration, DurationRound as _};
use filetrail_core::model::DriveState;
use filetrail_core::scope::{Scope, ScopeEntry, ScopeKind, UserSelector};
use filetrail_e2e::interleave::{CONNECTION, Disorder, Outcome, World, expected_event_keys};
use m365_sim::{
    ActivityConfig, ActivityKind, ActivityOutcome, ActivityRequest, FilesPerDrive, LinkScope, RandomActivity, SimConfig,
};

fn orderings() -> Vec<u64> {
    let Ok(value) = std::env::var("FILETRAIL_INTERLEAVINGS") else {
        return (0..200).collect();
    };
    let seeds: Result<Vec<u64>, std::num::ParseIntError> = if let Some((from, to)) = value.split_once("..") {
        from.parse().and_then(|from| Ok((from..to.parse()?).collect()))
    } else if value.contains(',') {
        value.split(',').map(|s| s.trim().parse()).collect()
    } else {
        value.parse().map(|n| (0..n).collect())
    };
    seeds.unwrap_or_else(|_| panic!("FILETRAIL_INTERLEAVINGS={value:?}: give N, A..B or a list A,B,C of seeds"))
}

fn tenant(duplicate_rate: f64) -> SimConfig {
    SimConfig {
        seed: 13,
        users: 4,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 2, max: 4 },
        activity: ActivityConfig {
            publication_delay: StdDuration::from_millis(0),
            duplicate_rate,
            late_rate: 0.1,
            late_extra_delay: StdDuration::from_secs(90),
            content_page_size: 3,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    }
}

/// 40 operations on the tenant's OneDrives, 30 minutes before the run: activity a new
/// connection finds waiting.
fn activity(world: &World, users: &[u64]) -> Vec<ActivityOutcome> {
    let start = world.now().duration_trunc(Duration::seconds(1)).unwrap() - Duration::minutes(30);
    activity_from(world, users, start)
}

/// 40 operations on these users' OneDrives, 20 s apart from `start`.
fn activity_from(world: &World, users: &[u64], start: chrono::DateTime<chrono::Utc>) -> Vec<ActivityOutcome> {
    let model = world.sim.tenant();
    let drives = users.iter().map(|i| model.drive_of_user(*i).unwrap().id).collect();
    world
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 40,
                seed: 21,
                drives,
                mix: None,
                start: Some(start),
                step_ms: 20_000,
            }),
            return_records: true,
        })
        .unwrap()
        .operations
}

/// Runs `scenario` under every ordering and checks each outcome against the first and against
/// `check`. Returns the first outcome.
async fn under_every_ordering<F, Fut>(name: &str, scenario: F, check: impl Fn(&World, &Outcome)) -> Outcome
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = (World, Outcome)>,
{
    let mut first: Option<Outcome> = None;
    for seed in orderings() {
        let (world, outcome) = scenario(seed).await;
        assert_eq!(outcome.dead_letters, 0, "{name}, ordering {seed}: dead letters");
        assert_eq!(outcome.parked, 0, "{name}, ordering {seed}: records still parked");
        exposure_is_the_tenants(&world, &outcome, &format!("{name}, ordering {seed}"));
        check(&world, &outcome);
        match &first {
            None => first = Some(outcome),
            Some(f) => assert!(
                *f == outcome,
                "{name}: ordering {seed} ended differently from the first ordering:\n{}",
                difference(f, &outcome)
            ),
        }
    }
    first.unwrap()
}

/// The exposure report is the tenant's sharing as it is now: for every indexed OneDrive, the
/// items the simulator says are shared with someone besides their owner, each with exactly
/// those permissions, and exposed exactly when one is an anyone link or reaches someone outside
/// the tenant.
fn exposure_is_the_tenants(world: &World, outcome: &Outcome, context: &str) {
    let mut want: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut want_exposed = BTreeSet::new();
    for (drive, state) in &outcome.drives {
        if *state != DriveState::Indexed {
            continue;
        }
        for (item, permissions) in world.sim.shared_items(drive) {
            let key = (drive.clone(), item.id.clone());
            let others: Vec<_> = permissions.iter().filter(|p| !p.is_owner()).collect();
            if others.is_empty() {
                continue;
            }
            let outside = others.iter().any(|p| {
                p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Anonymous)
                    || p.invitation.is_some()
                    || p.grantees.iter().any(|g| g.external)
            });
            if outside {
                want_exposed.insert(key.clone());
            }
            want.insert(key, others.iter().map(|p| p.id.clone()).collect());
        }
    }
    let got: BTreeMap<(String, String), BTreeSet<String>> = outcome
        .sharing
        .iter()
        .map(|(key, grants)| {
            let ids = grants
                .iter()
                .filter_map(|g| g.split(' ').next())
                .map(str::to_owned)
                .collect();
            (key.clone(), ids)
        })
        .collect();
    assert_eq!(
        got, want,
        "{context}: the shared items and their permissions are the tenant's"
    );
    assert_eq!(
        outcome.exposed, want_exposed,
        "{context}: the exposed items are the tenant's"
    );
}

/// What differs between two outcomes, briefly.
/// The events of these items in time order, with their outcomes.
fn history_of<'a>(outcome: &Outcome, items: impl Iterator<Item = &'a String>) -> String {
    let items: BTreeSet<&String> = items.collect();
    let mut lines: Vec<String> = outcome
        .events
        .iter()
        .filter(|(_, (item, _))| item.as_ref().is_some_and(|i| items.contains(i)))
        .map(|(key, (item, hash))| {
            let when = outcome.timeline.0.get(key).cloned().unwrap_or_default();
            format!("{} {when}: {hash}", item.as_deref().unwrap_or_default())
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

fn difference(a: &Outcome, b: &Outcome) -> String {
    let mut lines = Vec::new();
    for (key, value) in &a.events {
        match b.events.get(key) {
            None => lines.push(format!("missing {key} {value:?}")),
            Some(other) if other != value => {
                lines.push(format!("{key}: {value:?} then {other:?}"));
                // The file's events, in time order, with both outcomes.
                let mut history: Vec<String> = a
                    .events
                    .iter()
                    .filter(|(_, (item, _))| item.is_some() && *item == value.0)
                    .map(|(k, (_, hash))| {
                        let when = a.timeline.0.get(k).cloned().unwrap_or_default();
                        let then = b.events.get(k).map(|(_, h)| h.as_str()).unwrap_or("missing");
                        let mark = if k == key { "=> " } else { "   " };
                        format!("  {mark}{when}: {hash} | {then}")
                    })
                    .collect();
                history.sort_by(|x, y| x[5..].cmp(&y[5..]));
                lines.extend(history);
            }
            Some(_) => {}
        }
    }
    for key in b.events.keys().filter(|k| !a.events.contains_key(*k)) {
        lines.push(format!("extra {key}"));
    }
    if a.inventory != b.inventory {
        lines.push(format!(
            "inventory {} rows then {}",
            a.inventory.len(),
            b.inventory.len()
        ));
    }
    if a.digests != b.digests {
        lines.push("inventory digests differ".into());
    }
    if a.sharing != b.sharing {
        lines.push(format!("sharing of {} items then {}", a.sharing.len(), b.sharing.len()));
    }
    if a.exposed != b.exposed {
        lines.push(format!("exposed {:?} then {:?}", a.exposed, b.exposed));
    }
    if a.drives != b.drives {
        lines.push(format!("drives {:?} then {:?}", a.drives, b.drives));
    }
    if a.dropped != b.dropped {
        lines.push(format!("dropped {:?} then {:?}", a.dropped, b.dropped));
    }
    lines.truncate(60);
    lines.join("\n")
}

/// Activity before the first discovery: whether the poll or discovery runs first, and however
/// the deliveries go, every record of every OneDrive becomes its event, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_before_the_first_discovery_is_recorded_whatever_runs_first() {
    let outcome = under_every_ordering(
        "activity before discovery",
        |seed| async move {
            let world = World::start(tenant(0.05), None).await.unwrap();
            let ops = activity(&world, &[0, 1, 2, 3]);
            let outcome = world
                .run(seed, &[true, false, false, true, false], Disorder::default())
                .await
                .unwrap();
            let drives = ops.iter().map(|o| o.drive_id.clone()).collect();
            let want = expected_event_keys(&ops, Some(&drives));
            let got: BTreeSet<String> = outcome.events.keys().cloned().collect();
            assert_eq!(got, want, "ordering {seed}: the events are the tenant's records");
            // The record of every activity on a file that still exists names it, however often
            // it was renamed or moved before its records were ingested (a copy's record names
            // the copy by where it was made, so a copy moved since may stay unplaced).
            for op in ops.iter().filter(|o| o.op != ActivityKind::Copy) {
                let Some(item) = op.item_id.as_deref() else { continue };
                if world.sim.current_item(&op.drive_id, item).is_none() {
                    continue;
                }
                for record in op.records.iter().filter(|r| r.operation == op.op.operation()) {
                    let key = format!("{CONNECTION}#{}", record.id);
                    assert_eq!(
                        outcome.events[&key].0.as_deref(),
                        Some(item),
                        "ordering {seed}: {} of {:?}",
                        record.operation,
                        op.path
                    );
                }
            }
            (world, outcome)
        },
        |_, outcome| {
            let resolved = outcome.events.values().filter(|(item, _)| item.is_some()).count();
            assert!(
                resolved * 2 > outcome.events.len(),
                "{resolved} of {} events resolved",
                outcome.events.len()
            );
        },
    )
    .await;
    assert!(outcome.events.len() > 30, "{} events", outcome.events.len());
    // The exposure report was compared with something: shared files, some reachable from outside.
    assert!(
        outcome.sharing.len() > outcome.exposed.len() && !outcome.exposed.is_empty(),
        "{} shared items, {} exposed",
        outcome.sharing.len(),
        outcome.exposed.len()
    );
}

/// Users created and active between two discoveries: the first discovery ran before they
/// existed, so their records are parked, not dropped as outside the scope, whatever runs first,
/// and the next discovery places them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_created_between_two_discoveries_are_recorded_whatever_runs_first() {
    let outcome = under_every_ordering(
        "users created between discoveries",
        |seed| async move {
            let world = World::start(tenant(0.05), None).await.unwrap();
            let before = activity(&world, &[0, 1]);
            world.run(seed, &[true, false], Disorder::default()).await.unwrap();
            // Two new hires start working after that discovery.
            let model = world.sim.tenant();
            let first = model.user_count();
            model.hire(2);
            let start = world.now().duration_trunc(Duration::seconds(1)).unwrap() + Duration::seconds(5);
            let after = activity_from(&world, &[first, first + 1], start);
            world.advance(Duration::minutes(15));
            let outcome = world
                .run(seed ^ 0x5eed, &[false, true, false, false, true], Disorder::default())
                .await
                .unwrap();
            let ops: Vec<ActivityOutcome> = before.into_iter().chain(after).collect();
            let drives = ops.iter().map(|o| o.drive_id.clone()).collect();
            let got: BTreeSet<String> = outcome.events.keys().cloned().collect();
            assert_eq!(got, expected_event_keys(&ops, Some(&drives)), "ordering {seed}");
            let hired: BTreeSet<String> = [first, first + 1]
                .iter()
                .map(|i| model.drive_of_user(*i).unwrap().id)
                .collect();
            assert!(
                ops.iter().any(|o| hired.contains(&o.drive_id)),
                "the new hires were active"
            );
            (world, outcome)
        },
        |_, outcome| {
            assert!(
                !outcome.dropped.contains_key("owner_not_monitored"),
                "nothing dropped as outside the scope: {:?}",
                outcome.dropped
            );
        },
    )
    .await;
    assert!(outcome.events.len() > 30, "{} events", outcome.events.len());
}

/// A users scope set after the activity happened (an admin's CSV): the listed users' records
/// become events, the others are dropped as outside the scope, never parked for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_scope_records_exactly_its_users_whatever_runs_first() {
    under_every_ordering(
        "users scope",
        |seed| async move {
            let probe = m365_sim::spawn(tenant(0.05)).await.unwrap();
            let upn = |i: u64| probe.tenant().user(i).user_principal_name;
            let scope = Scope {
                kind: ScopeKind::Users,
                entries: [0, 2]
                    .iter()
                    .map(|i| ScopeEntry::User(UserSelector::Email(upn(*i))))
                    .collect(),
                version: "v-csv".into(),
                applied_at: chrono::Utc::now(),
                uploaded_at: chrono::Utc::now(),
                source: None,
            };
            let world = World::start(tenant(0.05), Some(scope)).await.unwrap();
            let ops = activity(&world, &[0, 1, 2, 3]);
            let outcome = world
                .run(seed, &[false, true, false, true], Disorder::default())
                .await
                .unwrap();
            let model = world.sim.tenant();
            let monitored: BTreeSet<String> = [0, 2].iter().map(|i| model.drive_of_user(*i).unwrap().id).collect();
            let got: BTreeSet<String> = outcome.events.keys().cloned().collect();
            assert_eq!(got, expected_event_keys(&ops, Some(&monitored)), "ordering {seed}");
            (world, outcome)
        },
        |_, outcome| {
            assert!(
                outcome.dropped.get("owner_not_monitored").copied().unwrap_or(0) > 0,
                "the other users' records are dropped for that reason: {:?}",
                outcome.dropped
            );
        },
    )
    .await;
}

/// The same records in two blobs (the feed repeats content) and hash jobs run at the same time:
/// one download per file version, and the same digests on every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_in_two_blobs_is_downloaded_once_per_version_whatever_runs_at_once() {
    let disorder = Disorder {
        kill: 0,
        redeliver: 10,
        concurrent: 60,
        width: 4,
    };
    under_every_ordering(
        "same file in two blobs",
        |seed| async move {
            let world = World::start(tenant(0.5), None).await.unwrap();
            activity(&world, &[0, 1]);
            let outcome = world.run(seed, &[true, false, false], disorder).await.unwrap();
            (world, outcome)
        },
        |world, outcome| {
            let hashed = outcome.hashed_versions();
            // A download resumed with `Range` (a continuation) is the same download.
            let stats = world.sim.stats();
            let downloads = stats.content_downloads - stats.content_range;
            let started = world.downloads.lock().unwrap().clone();
            let mut times: BTreeMap<(String, String), usize> = BTreeMap::new();
            for download in started {
                *times.entry(download).or_default() += 1;
            }
            let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
            let unused: Vec<_> = times.keys().filter(|v| !hashed.contains(v)).collect();
            assert!(
                twice.is_empty() && unused.is_empty(),
                "versions downloaded more than once: {twice:?}; downloaded but on no event: {unused:?}\n{}",
                history_of(
                    outcome,
                    twice
                        .iter()
                        .map(|((item, _), _)| item)
                        .chain(unused.iter().map(|(item, _)| item))
                )
            );
            assert_eq!(
                downloads,
                hashed.len() as u64,
                "one download per version hashed ({} versions)",
                hashed.len()
            );
        },
    )
    .await;
}
