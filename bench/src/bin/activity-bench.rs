//! `activity-bench`: how long an audit blob takes, from becoming available in the Management
//! Activity API (`contentCreated`) to every event it yields being readable in the events table
//! (issue 4), on the local stack: moto server as AWS, m365-sim in this process as Microsoft 365,
//! the real poll-activity, ingest-activity, hash-file and index-drive handlers driven by the
//! local runner as template.yaml wires them. Prints a table and merges
//! `blob_to_queryable_p50_s` and `blob_to_queryable_p95_s` into `bench/results.json`. Run it with
//! `bench/run activity`.
//!
//! A users scope is uploaded and its OneDrives discovered and indexed; a first poll starts the
//! subscription. Then, while the runner runs and poll-activity is fired every `--poll-period-secs`
//! (production: every 5 minutes), the simulator's injector applies bursts of random activity to
//! monitored and unmonitored OneDrives. For every blob holding records that must become events
//! (records of monitored drives whose operation filetrail records), a watcher reads the
//! events back by key every `--watch-ms` and notes when the last one became readable. Duplicate
//! blobs are left out: their events come from the first copy. The baseline is the poll period
//! measured in the same run: polling alone makes a blob wait half of it on average, all of it at
//! worst.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, Utc};
use clap::Parser;
use filetrail_bench::audit_feed::{BlobWatch, audit_tenant, drive_ids, inject_random, percentile, polling_wait};
use filetrail_bench::cli::{ResultsArgs, TenantArgs};
use filetrail_bench::report::{Figure, Provenance, median, merge_into_results, render_table};
use filetrail_bench::step;
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::POLL_ACTIVITY_FUNCTION;
use filetrail_cli::scope;
use filetrail_core::model::DriveState;
use filetrail_core::scope::ScopeKind;
use filetrail_e2e::{CONNECTION, Stack};

/// Keys per `BatchGetItem` (DynamoDB's limit).
const BATCH_GET_KEYS: usize = 100;
/// How long the scope's discovery and indexing may take.
const SCOPE_WAIT: Duration = Duration::from_secs(180);
/// Credentials are cached as in production (the e2e stack re-reads them on every invocation).
const CREDENTIALS_TTL: (&str, &str) = ("FILETRAIL_CREDENTIALS_TTL_SECS", "300");
/// Fewest watched blobs a recorded run may have.
const MIN_RECORDED_BLOBS: usize = 20;

/// Measures the time from a blob's availability to its events being queryable.
#[derive(Debug, Parser)]
#[command(name = "activity-bench")]
struct Args {
    #[command(flatten)]
    tenant: TenantArgs,
    /// Bursts of activity.
    #[arg(long, default_value_t = 10)]
    bursts: usize,
    /// Activities per burst.
    #[arg(long, default_value_t = 200)]
    burst_operations: usize,
    /// Seconds between bursts.
    #[arg(long, default_value_t = 5.0)]
    burst_interval_secs: f64,
    /// Seconds between poll-activity firings (production: 300).
    #[arg(long, default_value_t = 2.0)]
    poll_period_secs: f64,
    /// Milliseconds between the watcher's reads of awaited events.
    #[arg(long, default_value_t = 100)]
    watch_ms: u64,
    /// Invocations of each function running at once (the e2e stack's default).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Give up on blobs whose events are not all readable this long after the last blob became
    /// available.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    #[command(flatten)]
    output: ResultsArgs,
}

/// One firing of poll-activity.
#[derive(Debug, Clone)]
struct Poll {
    started: DateTime<Utc>,
    seconds: f64,
    ok: bool,
}

fn secs(s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{s} is not a number of seconds"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let release = args.output.release("bench/run activity")?;
    // Where the figures are recorded from: none in a debug build or with --no-write.
    let recording = args.output.provenance()?.filter(|_| release);
    args.tenant.check()?;
    ensure!(
        args.bursts >= 1 && args.burst_operations >= 1,
        "--bursts and --burst-operations must be at least 1"
    );
    ensure!(args.poll_period_secs > 0.0, "--poll-period-secs must be positive");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(bench(&args, recording))
}

async fn bench(args: &Args, recording: Option<Provenance>) -> anyhow::Result<()> {
    step("starting moto server and m365-sim (in process), provisioning template.yaml");
    let stack = Stack::start(audit_tenant(args.tenant.seed, args.tenant.users)).await?;
    stack.register(stack.sim.client_secret()).await?;
    let tenant = stack.sim.tenant();
    let drives = drive_ids(&stack.sim, args.tenant.users)?;
    let monitored: BTreeSet<String> = drives.iter().take(args.tenant.monitored as usize).cloned().collect();

    step(&format!(
        "scope: a users CSV of the first {} users; discovering and indexing their OneDrives",
        args.tenant.monitored
    ));
    let csv = std::iter::once("Email".to_owned())
        .chain((0..args.tenant.monitored).map(|i| tenant.user(i).user_principal_name))
        .collect::<Vec<_>>()
        .join("\n");
    let env = [CREDENTIALS_TTL];
    let setup = stack.runner(&env, |o| o.concurrency = args.concurrency)?;
    let state = stack.state();
    let pending = scope::put(&stack.objects(), &state, CONNECTION, ScopeKind::Users, csv.into_bytes()).await?;
    let (result, report) = tokio::join!(pending.result(&state, SCOPE_WAIT), setup.run());
    let result = result?;
    ensure!(
        report.reason == StopReason::Idle,
        "the scope run ended {:?}",
        report.reason
    );
    ensure!(result.accepted, "the scope was refused: {result:?}");
    let indexed = stack.drives_in(&[DriveState::Indexed]).await?;
    ensure!(
        indexed == monitored,
        "{} drives indexed, {} expected",
        indexed.len(),
        monitored.len()
    );
    // The first poll starts the subscription and lists the whole retention: not measured.
    setup.fire_schedule(POLL_ACTIVITY_FUNCTION).await?;
    ensure!(
        setup.run().await.reason == StopReason::Idle,
        "the first poll did not settle"
    );

    step(&format!(
        "{} bursts of {} activities, {} s apart, over {} OneDrives ({} monitored); poll-activity every {} s; events read back every {} ms",
        args.bursts,
        args.burst_operations,
        args.burst_interval_secs,
        drives.len(),
        monitored.len(),
        args.poll_period_secs,
        args.watch_ms
    ));
    let live = stack.runner(&env, |o| {
        o.concurrency = args.concurrency;
        o.until_idle = None;
    })?;
    let watch = Mutex::new(BlobWatch::new(CONNECTION));
    let polls = Mutex::new(Vec::<Poll>::new());
    let injected = AtomicBool::new(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let events = stack.event_store();
    let period = secs(args.poll_period_secs)?;
    let started = Instant::now();

    let poller = async {
        let mut stop = stop_rx.clone();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let (at, clock) = (Utc::now(), Instant::now());
            let ok = live.fire_schedule(POLL_ACTIVITY_FUNCTION).await.is_ok();
            lock(&polls).push(Poll {
                started: at,
                seconds: clock.elapsed().as_secs_f64(),
                ok,
            });
        }
    };
    let injector = async {
        let outcome = async {
            for burst in 0..args.bursts {
                if burst > 0 {
                    tokio::time::sleep(secs(args.burst_interval_secs)?).await;
                }
                let seed = args.tenant.seed.wrapping_mul(1_000).wrapping_add(burst as u64);
                let outcomes = inject_random(&stack.sim, &drives, args.burst_operations, seed)?;
                lock(&watch).add(&outcomes, &monitored);
            }
            anyhow::Ok(())
        }
        .await;
        injected.store(true, Ordering::SeqCst);
        outcome
    };
    let watcher = async {
        let outcome = watch_events(args, &watch, &events, &injected).await;
        let _ = stop_tx.send(true);
        live.handle().stop();
        outcome
    };
    let (run, (), injected_result, watched) = tokio::join!(live.run(), poller, injector, watcher);
    injected_result?;
    watched?;
    let wall = started.elapsed().as_secs_f64();

    let watch = watch.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let polls = polls.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let published = stack.sim.audit().blobs();
    let disagreements = watch.disagreements(&published);
    let dead = stack.dead_letters().await?.values().sum::<u64>();
    let totals = state.blob_totals(CONNECTION).await?;
    let unfinished = watch.unfinished();
    let latencies = watch.latencies();

    let seconds: Vec<f64> = latencies.iter().map(|l| l.seconds).collect();
    let starts: Vec<DateTime<Utc>> = polls.iter().map(|p| p.started).collect();
    let waits: Vec<f64> = latencies
        .iter()
        .filter_map(|l| polling_wait(l.available_at, &starts))
        .collect();
    let overheads: Vec<f64> = latencies
        .iter()
        .filter_map(|l| polling_wait(l.available_at, &starts).map(|w| l.seconds - w))
        .collect();
    let intervals: Vec<f64> = starts.windows(2).map(|w| (w[1] - w[0]).as_seconds_f64()).collect();
    let mean_period = if intervals.is_empty() {
        args.poll_period_secs
    } else {
        intervals.iter().sum::<f64>() / intervals.len() as f64
    };
    let poll_seconds: Vec<f64> = polls.iter().map(|p| p.seconds).collect();
    let failed_polls = polls.iter().filter(|p| !p.ok).count();
    let label = format!(
        "poll period, measured mean of {} intervals (set {} s); polling alone waits half of it on average",
        intervals.len(),
        args.poll_period_secs
    );
    let figures = [
        Figure {
            metric: "blob_to_queryable_p50_s",
            value: percentile(&seconds, 50.0),
            baseline: mean_period,
            baseline_label: label.clone(),
            goal: None,
        },
        Figure {
            metric: "blob_to_queryable_p95_s",
            value: percentile(&seconds, 95.0),
            baseline: mean_period,
            baseline_label: label,
            goal: None,
        },
    ];

    let lanes = |lane: m365_sim::activity::BlobLane| published.iter().filter(|b| b.lane == lane).count();
    println!(
        "\nactivity-bench: seed {}, {} OneDrives ({} monitored), {} bursts x {} activities; {:.0} s measured",
        args.tenant.seed,
        drives.len(),
        monitored.len(),
        args.bursts,
        args.burst_operations,
        wall
    );
    println!(
        "blobs published: {} normal, {} late, {} duplicate; watched {} (with {} events), left out {} without events of monitored drives",
        lanes(m365_sim::activity::BlobLane::Normal),
        lanes(m365_sim::activity::BlobLane::Late),
        lanes(m365_sim::activity::BlobLane::Duplicate),
        watch.watched(),
        watch.expected_events(),
        watch.without_events()
    );
    println!(
        "ingested: {} blobs, {} records, {} events inserted, {} duplicate, {} of other drives, {} skipped, {} quarantined, {} hash jobs, {} index jobs",
        totals.blobs,
        totals.records,
        totals.events_inserted,
        totals.events_duplicate,
        totals.events_unmonitored,
        totals.skipped,
        totals.quarantined,
        totals.hash_jobs,
        totals.index_jobs
    );
    println!(
        "runner: {:?}, {} invocations ({} failed); {} polls ({} failed), each {:.2} s median, {:.2} s max\n",
        run.reason,
        run.stats.invocations,
        run.stats.failed_invocations,
        polls.len(),
        failed_polls,
        median(&poll_seconds),
        poll_seconds.iter().copied().fold(0.0, f64::max)
    );
    print!("{}", render_table(&figures));
    println!(
        "\nlatency of {} blobs: min {:.2} s, p50 {:.2} s, mean {:.2} s, p95 {:.2} s, max {:.2} s",
        seconds.len(),
        percentile(&seconds, 0.0),
        percentile(&seconds, 50.0),
        seconds.iter().sum::<f64>() / seconds.len().max(1) as f64,
        percentile(&seconds, 95.0),
        percentile(&seconds, 100.0)
    );
    println!(
        "of which waiting for the next poll to start: p50 {:.2} s, p95 {:.2} s; the rest (poll, queue, ingest, read back): p50 {:.2} s, p95 {:.2} s",
        percentile(&waits, 50.0),
        percentile(&waits, 95.0),
        percentile(&overheads, 50.0),
        percentile(&overheads, 95.0)
    );

    // A backlog shows as latencies growing from the first blobs to the last.
    let tenths: Vec<String> = seconds
        .chunks(seconds.len().div_ceil(10).max(1))
        .map(|c| format!("{:.1}", median(c)))
        .collect();
    println!(
        "median latency of each tenth of the blobs, in order of availability (s): {}",
        tenths.join(", ")
    );

    let mut refusals = Vec::new();
    if !unfinished.is_empty() {
        refusals.push(format!(
            "{} blobs' events never all became queryable (first: {:?})",
            unfinished.len(),
            unfinished.iter().take(3).collect::<Vec<_>>()
        ));
    }
    if !disagreements.is_empty() {
        refusals.push(format!(
            "the watch disagrees with the simulator's blobs: {:?}",
            disagreements.iter().take(3).collect::<Vec<_>>()
        ));
    }
    if dead > 0 {
        refusals.push(format!("{dead} messages on dead-letter queues"));
    }
    if totals.quarantined > 0 {
        refusals.push(format!("{} records quarantined", totals.quarantined));
    }
    if failed_polls > 0 {
        refusals.push(format!("{failed_polls} polls failed"));
    }
    if watch.watched() < MIN_RECORDED_BLOBS {
        refusals.push(format!(
            "{} blobs watched, under {MIN_RECORDED_BLOBS}: a smoke run",
            watch.watched()
        ));
    }
    if !refusals.is_empty() {
        println!("\nresults not written: {}", refusals.join("; "));
        if unfinished.is_empty() && disagreements.is_empty() {
            return Ok(());
        }
        bail!("incomplete run: {}", refusals.join("; "));
    }
    let Some(provenance) = recording else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    let results_path = args.output.path();
    merge_into_results(&results_path, &figures, &provenance)?;
    println!("\nupdated {}", results_path.display());
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads the awaited events of available blobs back by key every `--watch-ms`, until every
/// blob is done after the last burst, or `--settle-secs` after the last blob became available.
async fn watch_events(
    args: &Args,
    watch: &Mutex<BlobWatch>,
    events: &filetrail_aws::events::DynamoEventStore,
    injected: &AtomicBool,
) -> anyhow::Result<()> {
    let settle = chrono::Duration::seconds(i64::try_from(args.settle_secs).unwrap_or(i64::MAX));
    loop {
        tokio::time::sleep(Duration::from_millis(args.watch_ms)).await;
        let due = lock(watch).due(Utc::now());
        for chunk in due.chunks(BATCH_GET_KEYS) {
            let found = events.events_by_key(chunk).await.context("reading events back")?;
            let at = Utc::now();
            let keys: Vec<String> = found.iter().map(|e| e.key()).collect();
            lock(watch).readable(keys.iter().map(String::as_str), at);
        }
        if !injected.load(Ordering::SeqCst) {
            continue;
        }
        let watch = lock(watch);
        if watch.all_done() {
            return Ok(());
        }
        if watch.last_available().is_some_and(|last| Utc::now() > last + settle) {
            step(&format!(
                "giving up: {} blobs still await events {}s after the last became available",
                watch.unfinished().len(),
                args.settle_secs
            ));
            return Ok(());
        }
    }
}
