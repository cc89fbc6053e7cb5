//! `search-bench`: forensic search and export on a table of 200,000 file events, on the local
//! stack (moto server as DynamoDB and S3, template.yaml provisioned). Prints a table and merges
//! `search_user_p50_ms`, `search_user_p95_ms`, `search_sha256_p50_ms`, `search_sha256_p95_ms`
//! and `export_events_per_s` into `bench/results.json`. Run it with `bench/run search`.
//!
//! The events are synthetic but shaped like a tenant's: 2,000 users acting on their own and
//! each other's files, 600 file names in 40 folders, a third of the events hashed with 5,000
//! distinct contents, recorded over the last day, most within two hours of happening and one in
//! twenty up to 7 days late (as the audit feed delivers). They are written with the production events store.
//!
//! - **Search**: a user's last 100 events (`filetrail search --user U --limit 100`) and a
//!   SHA-256 lookup, each for `--queries` users / digests picked at random, through the same
//!   code the CLI runs. Baseline, in the same run: the same question answered by a Scan of the
//!   table with a filter (what a table without these indexes would need), a few times.
//! - **Export**: every settled insertion hour of the day exported to S3 (gzip JSON Lines) by the
//!   export code the Lambda and `filetrail export` run. Baseline: reading the same hours'
//!   events from the insertion index alone, without formatting, compressing or writing.
//!   `bench/run search` measures it on 20,000 events (`--skip-search`): its hundreds of Query
//!   pages each walk the whole table on moto, so 200,000 events would take over an hour.
//!
//! moto answers a Query on an index by walking every item of the table in Python, so a search
//! here costs time proportional to the table, where DynamoDB's cost is proportional to what is
//! read; the figures are an upper bound for the local stack, and BENCHMARKS.md says so.

use std::time::Instant;

use anyhow::{Context as _, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use clap::Parser;
use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::provision;
use filetrail_aws::template::Template;
use filetrail_bench::cli::ResultsArgs;
use filetrail_bench::report::{Figure, Provenance, median, merge_into_results, render_table};
use filetrail_bench::{repo_root, step};
use filetrail_core::audit::{Actor, ActorKind, FileEvent, FileEventType, ItemKind};
use filetrail_core::events::{EventRecord, FileHashes, HashOutcome};
use filetrail_core::export::{ExportWindow, InsertedEvents as _};
use filetrail_core::ports::EventStore as _;
use filetrail_core::search::SearchQuery;

const CONNECTION: &str = "contoso";
/// Events written per insert call (the store runs 16 conditional puts at a time).
const INSERT_CHUNK: usize = 2_000;

#[derive(Debug, Parser)]
#[command(name = "search-bench")]
struct Args {
    /// Events in the table.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Users the events are spread over.
    #[arg(long, default_value_t = 2_000)]
    users: usize,
    /// Searches of each kind.
    #[arg(long, default_value_t = 60)]
    queries: usize,
    /// Scans of each kind for the baseline.
    #[arg(long, default_value_t = 2)]
    baseline_scans: usize,
    /// Measure search only.
    #[arg(long, conflicts_with = "skip_search")]
    skip_export: bool,
    /// Measure export only (on a smaller table it is much faster on moto, whose index Query
    /// walks the whole table).
    #[arg(long)]
    skip_search: bool,
    #[command(flatten)]
    output: ResultsArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let release = args.output.release("bench/run search")?;
    // Where the figures are recorded from: none in a debug build or with --no-write.
    let recording = args.output.provenance()?.filter(|_| release);
    ensure!(
        args.events >= 1_000 && args.users >= 10,
        "--events >= 1000 and --users >= 10"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(bench(&args, recording.as_ref()))
}

/// A deterministic pseudo-random sequence (SplitMix64): the same table every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn upn(user: usize) -> String {
    format!("user{user:04}@contoso.com")
}

/// Distinct file contents the hashed events carry: 5,000 at the recorded scale (a digest found
/// ~13 times in 200,000 events), fewer in a smaller table so that every looked-up digest is there.
fn contents(events: usize) -> usize {
    (events / 40).clamp(1, 5_000)
}

fn sha_of(content: usize) -> (String, String) {
    (format!("{content:032x}"), format!("{content:064x}"))
}

const TYPES: [FileEventType; 8] = [
    FileEventType::Modified,
    FileEventType::Downloaded,
    FileEventType::Accessed,
    FileEventType::Created,
    FileEventType::Previewed,
    FileEventType::Renamed,
    FileEventType::SharingSet,
    FileEventType::Deleted,
];

/// The synthetic events, recorded over the day before `now - 1 h` (so every insertion hour is
/// settled), observed up to two hours (one in twenty: 7 days) before they were recorded.
fn events(args: &Args, now: DateTime<Utc>) -> Vec<EventRecord> {
    let mut mix = Mix(2026);
    let recorded_from = now - Duration::hours(25);
    (0..args.events)
        .map(|i| {
            let actor = mix.below(args.users);
            let owner = if mix.below(4) == 0 {
                mix.below(args.users)
            } else {
                actor
            };
            let name = format!(
                "document {:03}.{}",
                mix.below(600),
                ["docx", "xlsx", "pdf", "pptx"][mix.below(4)]
            );
            let path = format!("/Folder {:02}/{name}", mix.below(40));
            let inserted = recorded_from + Duration::milliseconds(mix.below(24 * 3_600_000) as i64);
            // As the audit feed delivers: most records within two hours of the activity, one in
            // twenty late by up to 7 days (the feed's retention).
            let late = if mix.below(20) == 0 { 7 * 86_400 } else { 2 * 3_600 };
            let observed = inserted - Duration::seconds(mix.below(late) as i64);
            let hashed = mix.below(3) == 0;
            let content = mix.below(contents(args.events));
            let event = FileEvent {
                id: format!("{i:08x}-bench-4000-8000-{:012x}", mix.next() & 0xffff_ffff_ffff),
                event_type: TYPES[mix.below(TYPES.len())],
                low_signal: false,
                operation: "FileModified".into(),
                record_type: 6,
                item_kind: ItemKind::File,
                actor: Actor {
                    id: upn(actor),
                    upn: Some(upn(actor)),
                    email: Some(upn(actor)),
                    kind: ActorKind::User,
                    user_type: Some(0),
                    user_key: None,
                    external: Some(false),
                },
                owner_upn: Some(upn(owner)),
                site_key: None,
                site_url: None,
                object_url: None,
                file_name: Some(name),
                path: Some(path),
                extension: None,
                destination: None,
                list_id: None,
                list_item_unique_id: None,
                drive_id: Some(format!("b!drive{owner:04}")),
                item_id: Some(format!("01ITEM{:06}", mix.below(1_000_000))),
                unresolved: None,
                observed_at: observed,
                inserted_at: inserted,
                client_ip: Some("203.0.113.7".into()),
                user_agent: Some("Mozilla/5.0".into()),
                result_status: None,
                sharing: None,
            };
            let mut record = EventRecord::onedrive(CONNECTION, event);
            if hashed {
                let (md5, sha256) = sha_of(content);
                record.hash = Some(HashOutcome::Hashed(FileHashes {
                    version: None,
                    md5,
                    sha256,
                    ctag: "\"c:{BENCH},1\"".into(),
                    size: 1_000,
                    modified_at: None,
                    hashed_at: inserted,
                }));
            }
            record
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds of each search, sorted.
async fn timed_searches(
    store: &DynamoEventStore,
    queries: Vec<SearchQuery>,
    expect_full_pages: bool,
) -> anyhow::Result<Vec<f64>> {
    let mut ms = Vec::with_capacity(queries.len());
    for q in queries {
        let started = Instant::now();
        let page = store.search(&q).await?;
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
        ensure!(!page.events.is_empty(), "a search found nothing: {q:?}");
        if expect_full_pages && page.events.len() < q.limit {
            eprintln!(
                "  note: a user has only {} events (fewer than --limit)",
                page.events.len()
            );
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms)
}

/// Milliseconds of a Scan of the whole table keeping the items where `attr` = `value` (every
/// page followed): the baseline's cost.
async fn scan_ms(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    attr: &str,
    value: &str,
) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let mut found = 0;
    let mut start = None;
    loop {
        let out = dynamo
            .scan()
            .table_name(table)
            .filter_expression("#a = :v")
            .expression_attribute_names("#a", attr)
            .expression_attribute_values(":v", AttributeValue::S(value.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await?;
        found += out.items().len();
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    Ok((started.elapsed().as_secs_f64() * 1000.0, found))
}

async fn bench(args: &Args, recording: Option<&Provenance>) -> anyhow::Result<()> {
    step("starting moto server, provisioning template.yaml");
    let moto = MotoServer::start().await?;
    let sdk = moto.sdk_config().await;
    let template = Template::from_path(repo_root().join("template.yaml"))?;
    let provisioned = provision(&sdk, &template, "search-bench").await?;
    let env = provisioned.cli_env(&template)?;
    let resources = filetrail_aws::AwsResources::from_env_map(&env.into_iter().collect())?;
    let table = resources.require_events_table()?.to_owned();
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let store = DynamoEventStore::new(dynamo.clone(), table.clone());

    let now = Utc::now().duration_trunc(Duration::hours(1))?;
    let records = events(args, now);
    step(&format!("writing {} events with the events store", records.len()));
    let started = Instant::now();
    for chunk in records.chunks(INSERT_CHUNK) {
        let inserted = store.insert_events(chunk).await?;
        ensure!(inserted.len() == chunk.len(), "events were not all new");
    }
    let load_s = started.elapsed().as_secs_f64();
    eprintln!("  {} events in {load_s:.0} s", records.len());

    if !args.skip_search {
        search(args, recording, &store, &dynamo, &table).await?;
    }
    if !args.skip_export {
        export(args, recording, &sdk, &resources, &records, now).await?;
    }
    Ok(())
}

async fn search(
    args: &Args,
    recording: Option<&Provenance>,
    store: &DynamoEventStore,
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
) -> anyhow::Result<()> {
    let records_len = args.events;
    let mut mix = Mix(7);
    let base = SearchQuery {
        connections: vec![CONNECTION.to_owned()],
        limit: 100,
        ..SearchQuery::default()
    };
    step(&format!("{} searches of a user's last 100 events", args.queries));
    let users: Vec<String> = (0..args.queries).map(|_| upn(mix.below(args.users))).collect();
    let user_ms = timed_searches(
        store,
        users
            .iter()
            .map(|u| SearchQuery {
                user: Some(u.clone()),
                ..base.clone()
            })
            .collect(),
        true,
    )
    .await?;
    step(&format!("{} SHA-256 lookups", args.queries));
    let hashes: Vec<String> = (0..args.queries)
        .map(|_| sha_of(mix.below(contents(args.events))).1)
        .collect();
    let sha_ms = timed_searches(
        store,
        hashes
            .iter()
            .map(|h| SearchQuery {
                sha256: Some(h.clone()),
                ..base.clone()
            })
            .collect(),
        false,
    )
    .await?;

    step(&format!(
        "baseline: {} filtered table scans of each kind",
        args.baseline_scans
    ));
    let mut user_scans = Vec::new();
    let mut sha_scans = Vec::new();
    for i in 0..args.baseline_scans {
        let u = filetrail_aws::events::actor_pk(CONNECTION, &users[i % users.len()]);
        user_scans.push(scan_ms(dynamo, table, filetrail_aws::events::ACTOR_PK, &u).await?.0);
        sha_scans.push(
            scan_ms(dynamo, table, filetrail_aws::events::SHA256, &hashes[i % hashes.len()])
                .await?
                .0,
        );
    }

    let n = records_len;
    let scan_label = format!("filtered Scan of {n} events (median)");
    let figure = |metric, value, baseline| Figure {
        metric,
        value,
        baseline,
        baseline_label: scan_label.clone(),
        goal: None,
    };
    record(
        args,
        recording,
        &[
            figure("search_user_p50_ms", percentile(&user_ms, 50.0), median(&user_scans)),
            figure("search_user_p95_ms", percentile(&user_ms, 95.0), median(&user_scans)),
            figure("search_sha256_p50_ms", percentile(&sha_ms, 50.0), median(&sha_scans)),
            figure("search_sha256_p95_ms", percentile(&sha_ms, 95.0), median(&sha_scans)),
        ],
    )?;
    Ok(())
}

async fn export(
    args: &Args,
    recording: Option<&Provenance>,
    sdk: &aws_config::SdkConfig,
    resources: &filetrail_aws::AwsResources,
    records: &[EventRecord],
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    step("exporting every recorded hour to S3 (gzip JSON Lines)");
    let exporter = filetrail_cli::export::Exporter::new(sdk, resources)?;
    let started = Instant::now();
    let summary = exporter
        .export_range(
            CONNECTION,
            now - Duration::hours(26),
            now,
            now + Duration::hours(1),
            |_, _| {},
        )
        .await?;
    let export_s = started.elapsed().as_secs_f64();
    ensure!(
        summary.events == records.len() as u64,
        "exported {} of {} events",
        summary.events,
        records.len()
    );
    step("baseline: reading the same hours from the insertion index alone");
    let started = Instant::now();
    let mut read = 0u64;
    let mut hour = now - Duration::hours(26);
    while hour < now {
        let window = ExportWindow::containing(hour);
        for shard in 0..exporter.events.shards() {
            let mut after: Option<EventRecord> = None;
            loop {
                let page = exporter
                    .events
                    .inserted_page(CONNECTION, &window, shard, after.as_ref(), 1_000)
                    .await?;
                read += page.events.len() as u64;
                after = page.events.last().cloned();
                if !page.more {
                    break;
                }
            }
        }
        hour += Duration::hours(1);
    }
    let read_s = started.elapsed().as_secs_f64();
    ensure!(read == records.len() as u64, "read {read} of {} events", records.len());

    let n = records.len();
    record(
        args,
        recording,
        &[Figure {
            metric: "export_events_per_s",
            value: n as f64 / export_s,
            baseline: n as f64 / read_s,
            baseline_label: "reading the insertion index alone (events/s)".to_owned(),
            goal: None,
        }],
    )?;
    println!(
        "{n} events exported in {export_s:.1} s ({} objects); the index read alone took {read_s:.1} s",
        summary.objects.len()
    );
    Ok(())
}

/// Prints figures and merges them into the results file when recording (a release build
/// without --no-write).
fn record(args: &Args, recording: Option<&Provenance>, figures: &[Figure]) -> anyhow::Result<()> {
    println!();
    print!("{}", render_table(figures));
    if let Some(provenance) = recording {
        merge_into_results(&args.output.path(), figures, provenance)?;
        println!("updated {}", args.output.path().display());
    }
    Ok(())
}
