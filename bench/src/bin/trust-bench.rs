//! `trust-bench`: what a new connection loses, how often a file version is downloaded, and what
//! a search over years costs (issue 13). Prints a table and merges three figures into
//! `bench/results.json`. Run it with `bench/run trust`.
//!
//! - `events_lost_new_connection`: a simulated tenant where `--operations` activities happened
//!   before filetrail looked (registered, nothing discovered or polled), then the pipeline under
//!   one seeded interleaving of schedules and deliveries (`filetrail_e2e::interleave`: the
//!   handlers' use cases, in-memory stores, the production Microsoft clients against m365-sim):
//!   the events the tenant's audit records call for that were not stored. Baseline: how many
//!   events they call for. Goal 0.
//! - `downloads_per_hashed_version`: in the same run, with `--workers` hash workers running at
//!   once and the feed repeating content (duplicate blobs), the simulator's downloads (a `Range`
//!   resume of one is not another) per file version hashed. Baseline 1 (one download each).
//! - `search_queries_per_found_event_longrange`: moto's DynamoDB with the production events
//!   store; `--search-days` days of events spread over two years; one connection-wide search
//!   from two years back, no other filter: DynamoDB read requests per event found. Baseline: the
//!   Queries a walk of every calendar day's partitions makes (the search before day markers).
//!   Goal at most 2.

use anyhow::ensure;
use chrono::{Duration, DurationRound as _, Utc};
use clap::Parser;
use filetrail_aws::events::{DAY_SHARDS, DynamoEventStore};
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::provision;
use filetrail_aws::template::Template;
use filetrail_bench::cli::ResultsArgs;
use filetrail_bench::report::{Figure, Goal, merge_into_results, render_table};
use filetrail_bench::step;
use filetrail_core::events::EventRecord;
use filetrail_core::ports::EventStore as _;
use filetrail_core::search::SearchQuery;
use filetrail_e2e::interleave::{CONNECTION, Disorder, World, expected_event_keys};
use filetrail_e2e::repo_root;
use m365_sim::{ActivityConfig, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};
use std::collections::BTreeSet;

/// Fewest activities a recorded run may have.
const MIN_RECORDED_OPERATIONS: usize = 2_000;

#[derive(Debug, Parser)]
#[command(name = "trust-bench")]
struct Args {
    /// Activities that happened before the connection was first polled or discovered.
    #[arg(long, default_value_t = 2_000)]
    operations: usize,
    /// Users (each with a OneDrive that sees activity).
    #[arg(long, default_value_t = 20)]
    users: u64,
    /// Hash workers (messages of one queue) running at once.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// The interleaving's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days holding events in the long-range search (spread over two years).
    #[arg(long, default_value_t = 30)]
    search_days: i64,
    /// Events on each of those days.
    #[arg(long, default_value_t = 20)]
    events_per_day: usize,
    #[command(flatten)]
    output: ResultsArgs,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Counts, not times: a debug build measures the same, so any build may record them.
    let release = true;
    let provenance = args.output.provenance()?;
    let mut figures = new_connection(&args).await?;
    figures.push(long_range_search(&args).await?);
    print!("\n{}", render_table(&figures));
    let Some(provenance) = provenance.filter(|_| release) else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    if args.operations < MIN_RECORDED_OPERATIONS {
        println!("\nresults not written: under {MIN_RECORDED_OPERATIONS} activities is a smoke run");
        return Ok(());
    }
    let path = args.output.path();
    merge_into_results(&path, &figures, &provenance)?;
    // The same commit, date and command as bench/provenance.json records.
    let details = serde_json::json!({
        "command": provenance.command,
        "commit": provenance.commit,
        "date": provenance.date,
        "figures": figures.iter().map(|f| (f.metric, f.value)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let details_path = repo_root().join("bench/last-trust-run.json");
    std::fs::write(&details_path, format!("{}\n", serde_json::to_string_pretty(&details)?))?;
    println!("\nupdated {} and {}", path.display(), details_path.display());
    Ok(())
}

async fn new_connection(args: &Args) -> anyhow::Result<Vec<Figure>> {
    step(&format!(
        "{} activities on {} OneDrives before the connection looks, then the pipeline with {} workers",
        args.operations, args.users, args.workers
    ));
    let config = SimConfig {
        seed: 31,
        users: args.users,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 5, max: 20 },
        activity: ActivityConfig {
            publication_delay: std::time::Duration::from_millis(0),
            duplicate_rate: 0.2,
            late_rate: 0.05,
            late_extra_delay: std::time::Duration::from_secs(120),
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    };
    let world = World::start(config, None).await?;
    let model = world.sim.tenant();
    let drives: Vec<String> = (0..args.users)
        .filter_map(|i| model.drive_of_user(i).map(|d| d.id))
        .collect();
    let start = world.now().duration_trunc(Duration::seconds(1))? - Duration::hours(3);
    let injected = world
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: args.operations,
                seed: args.seed,
                drives: drives.clone(),
                mix: None,
                start: Some(start),
                step_ms: 3_000,
            }),
            return_records: true,
        })
        .map_err(|e| anyhow::anyhow!("injecting activity: {e:?}"))?;
    let expected = expected_event_keys(&injected.operations, None);
    let disorder = Disorder {
        kill: 0,
        redeliver: 10,
        concurrent: 100,
        width: args.workers,
    };
    let started = std::time::Instant::now();
    let outcome = world
        .run(args.seed, &[false, true, false, true, false], disorder)
        .await?;
    let stored: BTreeSet<String> = outcome.events.keys().cloned().collect();
    let lost = expected.difference(&stored).count();
    let extra = stored.difference(&expected).count();
    ensure!(extra == 0, "{extra} events the tenant's records do not call for");
    let versions = outcome.hashed_versions();
    let stats = world.sim.stats();
    let downloads = stats.content_downloads - stats.content_range;
    ensure!(!versions.is_empty(), "nothing was hashed");
    eprintln!(
        "  {} events expected, {} stored, {} lost; {} versions hashed with {} downloads; dropped {:?}; {:.1} s",
        expected.len(),
        stored.len(),
        lost,
        versions.len(),
        downloads,
        outcome.dropped,
        started.elapsed().as_secs_f64()
    );
    Ok(vec![
        Figure {
            metric: "events_lost_new_connection",
            value: lost as f64,
            baseline: expected.len() as f64,
            baseline_label: "events the tenant's audit records call for".to_owned(),
            goal: Some(Goal::AtMost(0.0)),
        },
        Figure {
            metric: "downloads_per_hashed_version",
            value: downloads as f64 / versions.len() as f64,
            baseline: 1.0,
            baseline_label: format!("one download per version ({} versions)", versions.len()),
            goal: Some(Goal::AtMost(1.0)),
        },
    ])
}

async fn long_range_search(args: &Args) -> anyhow::Result<Figure> {
    step(&format!(
        "a connection-wide search over two years holding {} days of {} events, on moto",
        args.search_days, args.events_per_day
    ));
    let moto = MotoServer::start().await?;
    let sdk = moto.sdk_config().await;
    let template = Template::from_path(repo_root().join("template.yaml"))?;
    let provisioned = provision(&sdk, &template, "trust-bench").await?;
    let env = provisioned.cli_env(&template)?;
    let resources = filetrail_aws::AwsResources::from_env_map(&env.into_iter().collect())?;
    let table = resources.require_events_table()?.to_owned();
    let store = DynamoEventStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let now = Utc::now();
    let span = Duration::days(730);
    let every = span / i32::try_from(args.search_days.max(1)).unwrap_or(1);
    let mut events = Vec::new();
    for d in 0..args.search_days {
        let day = now - every * i32::try_from(d).unwrap_or(0);
        for i in 0..args.events_per_day {
            events.push(event(
                &format!("{d:04}{i:04}-0000-4000-8000-000000000000"),
                day - Duration::minutes(i as i64),
            ));
        }
    }
    for chunk in events.chunks(100) {
        store.insert_events(chunk).await?;
    }
    let query = SearchQuery {
        connections: vec![CONNECTION.to_owned()],
        since: Some(now - span - Duration::days(1)),
        limit: events.len(),
        ..SearchQuery::default()
    };
    let before = store.read_requests();
    let page = store.search(&query).await?;
    let reads = store.read_requests() - before;
    ensure!(
        page.events.len() == events.len(),
        "the search found {} of {} events",
        page.events.len(),
        events.len()
    );
    let calendar_days = (span + Duration::days(2)).num_days() as u64;
    eprintln!(
        "  {} events found with {} read requests; walking the calendar: {} days x {DAY_SHARDS} shards",
        page.events.len(),
        reads,
        calendar_days
    );
    Ok(Figure {
        metric: "search_queries_per_found_event_longrange",
        value: reads as f64 / page.events.len() as f64,
        baseline: (calendar_days * DAY_SHARDS) as f64 / page.events.len() as f64,
        baseline_label: "a Query of every calendar day's shards (the search before day markers)".to_owned(),
        goal: Some(Goal::AtMost(2.0)),
    })
}

fn event(id: &str, at: chrono::DateTime<Utc>) -> EventRecord {
    let doc = serde_json::json!({
        "id": id,
        "event_type": "modified",
        "low_signal": false,
        "operation": "FileModified",
        "record_type": 6,
        "item_kind": "file",
        "actor": {"id": "adele@contoso.com", "upn": "adele@contoso.com", "kind": "user"},
        "owner_upn": "adele@contoso.com",
        "file_name": "plan.docx",
        "path": "/Plans/plan.docx",
        "drive_id": "b!drive",
        "item_id": "01ITEM",
        "observed_at": at,
        "inserted_at": at,
    });
    EventRecord::onedrive(
        CONNECTION,
        serde_json::from_value(doc).unwrap_or_else(|e| panic!("a valid event: {e}")),
    )
}
