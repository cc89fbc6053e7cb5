//! `pipeline-bench`: discovery and indexing of a simulated tenant of 100,000+ items through the
//! real handlers on the local stack, with every figure set against a baseline measured in the
//! same run. Prints a table and updates `bench/results.json`. Run it with `bench/run`.
//!
//! Processes: moto server (Python) and `m365-sim` (release binary) run apart from this one, so
//! the CPU time read from `/proc/self/stat` is the pipeline's alone: the handlers, the AWS SDK
//! and Graph clients, JSON, and the local runner that feeds them.

use filetrail_bench::cli::ResultsArgs;
use filetrail_bench::{repo_root, step};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use clap::Parser;
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::template::Template;
use filetrail_bench::baseline::{fetch_and_parse, naive_discovery, page_all_users};
use filetrail_bench::procfs::{self, Pid};
use filetrail_bench::report::{Figure, Goal, median, merge_into_results, render_table};
use filetrail_bench::sim_process::{SimProcess, graph_requests, sim_args, stats_delta};
use filetrail_bench::stack::{dead_letters, env_of, register_connection, state_store};
use filetrail_cli::local::runner::{Runner, RunnerEvent, RunnerOptions, ScheduleMode, StopReason};
use filetrail_cli::pipeline::{DISCOVER_FUNCTION, INDEX_DRIVE_FUNCTION, LocalPipeline};
use filetrail_cli::status;
use filetrail_m365::{HttpTimeouts, http_client};
use futures_util::{StreamExt as _, TryStreamExt as _};
use m365_sim::{FilesPerDrive, SimConfig};
use serde_json::json;

/// The connection id the benchmark registers.
const CONNECTION: &str = "bench";
/// Stack name of the provisioned resources on moto.
const STACK_NAME: &str = "bench";
/// Goal of `graph_requests_per_discovered_user` (issue: discovery must batch; 1 users page per
/// 999 users + 1 `$batch` per 20 users = 0.051 requests per user).
const DISCOVERY_GOAL: f64 = 0.06;
/// The naive store writes one `PutItem` per inventory item.
const NAIVE_WRITES_PER_1000_ITEMS: f64 = 1000.0;
/// Quiet period after which the runner considers the pipeline idle (as the e2e harness).
const UNTIL_IDLE: Duration = Duration::from_millis(1500);
/// How often progress is printed during the pipeline run.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);
/// Most keys in one `BatchGetItem` (DynamoDB API reference: "up to 100 items").
const BATCH_GET_MAX_KEYS: usize = 100;
/// Credentials reuse during the run: long, so each function keeps one Graph client whose request
/// counters cover the whole run (the cross-check against the simulator's counts).
const CREDENTIALS_TTL_SECS: &str = "86400";

/// Benchmarks discovery and indexing on the local stack (moto + m365-sim) and the simulator's
/// memory on a 1,000,000-user directory.
#[derive(Debug, Parser)]
#[command(name = "pipeline-bench")]
struct Args {
    /// Users of the benchmarked tenant.
    #[arg(long, default_value_t = 2000)]
    users: u64,
    /// Files per OneDrive: a number or an inclusive range.
    #[arg(long, default_value = "45..75")]
    files_per_drive: FilesPerDrive,
    /// Share of users without a OneDrive.
    #[arg(long, default_value_t = 0.1)]
    no_drive_ratio: f64,
    /// Seed of the simulated tenants.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Invocations per function at once in the local runner, and drives or users fetched at once
    /// by the baselines.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Refuse to run when the tenant holds fewer files than this (0 for a quick smoke run whose
    /// figures are not comparable).
    #[arg(long, default_value_t = 100_000)]
    min_files: u64,
    /// Times the fetch-and-parse baseline is repeated; its CPU time is the median pass (one pass
    /// takes about a second, so a single one is at the mercy of 10 ms clock ticks).
    #[arg(long, default_value_t = 5)]
    baseline_passes: u32,
    /// Users of the directory paged end to end for the simulator's memory (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    rss_users: u64,
    /// The m365-sim binary (release build).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// The SAM template to provision from.
    #[arg(long)]
    template: Option<PathBuf>,
    #[command(flatten)]
    out: ResultsArgs,
    /// Where to write every raw counter of this run (JSON).
    #[arg(long)]
    details: Option<PathBuf>,
}

/// What the tenant holds, from its model, without HTTP.
struct Truth {
    users: u64,
    /// Each OneDrive and its item ids (root excluded).
    drives: Vec<(String, Vec<String>)>,
    files: u64,
    folders: u64,
}

impl Truth {
    fn of(config: &SimConfig) -> Self {
        let tenant = config.tenant();
        let mut truth = Truth {
            users: tenant.user_count(),
            drives: Vec::new(),
            files: 0,
            folders: 0,
        };
        for user in tenant.users() {
            let Some(drive) = tenant.drive_of_user(user.index) else {
                continue;
            };
            let mut items = Vec::new();
            for item in tenant.drive_items(&drive.id) {
                if item.is_root {
                    continue;
                }
                items.push(item.id);
                if item.is_folder {
                    truth.folders += 1;
                } else {
                    truth.files += 1;
                }
            }
            truth.drives.push((drive.id, items));
        }
        truth
    }

    fn items(&self) -> u64 {
        self.files + self.folders
    }

    fn drive_count(&self) -> u64 {
        self.drives.len() as u64
    }

    fn drive_ids(&self) -> Vec<String> {
        self.drives.iter().map(|(id, _)| id.clone()).collect()
    }
}

fn cpu_now() -> anyhow::Result<f64> {
    Ok(procfs::cpu_seconds(Pid::This)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let release = !cfg!(debug_assertions);
    let provenance = args.out.provenance()?;
    if !release && !args.out.allow_debug {
        bail!(
            "this is a debug build, whose CPU figures mean nothing; run `cargo run --release -p filetrail-bench --bin pipeline-bench` (bench/run does), or pass --allow-debug"
        );
    }
    let root = repo_root();
    let sim_bin = args
        .sim_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/m365-sim"));
    let template_path = args.template.clone().unwrap_or_else(|| root.join("template.yaml"));
    let results_path = args.out.path();
    let details_path = args.details.clone().unwrap_or_else(|| root.join("bench/last-run.json"));
    let concurrency = args.concurrency.max(1);
    let started = chrono::Utc::now();

    let config = SimConfig {
        users: args.users,
        files_per_drive: args.files_per_drive,
        no_drive_ratio: args.no_drive_ratio,
        ..SimConfig::with_seed(args.seed)
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid tenant settings: {e}"))?;
    step("computing the tenant's ground truth from its model");
    let truth = Truth::of(&config);
    ensure!(
        truth.files >= args.min_files,
        "the tenant holds {} files, fewer than --min-files {}; raise --users or --files-per-drive",
        truth.files,
        args.min_files
    );
    step(&format!(
        "tenant: {} users, {} OneDrives, {} files + {} folders = {} items (seed {}, files per drive {})",
        truth.users,
        truth.drive_count(),
        truth.files,
        truth.folders,
        truth.items(),
        args.seed,
        args.files_per_drive
    ));

    // ---------------------------------------------------------------- the local stack
    step("starting moto server and provisioning template.yaml");
    let moto = MotoServer::start().await?;
    let sdk = moto.sdk_config().await;
    let template = Template::from_path(&template_path)?;
    let provisioned = provision(&sdk, &template, STACK_NAME).await?;
    step(&format!("starting {}", sim_bin.display()));
    let sim = SimProcess::spawn(&sim_bin, &sim_args(&config))?;
    let http = http_client(HttpTimeouts::default())?;
    register_connection(&sdk, &template, &provisioned, sim.ready(), CONNECTION).await?;

    let overrides = HashMap::from([(
        "FILETRAIL_CREDENTIALS_TTL_SECS".to_owned(),
        CREDENTIALS_TTL_SECS.to_owned(),
    )]);
    let pipeline = LocalPipeline::new(&sdk, &template, &provisioned, &overrides)?;
    let finished_invocations = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&finished_invocations);
    let options = RunnerOptions {
        schedules: ScheduleMode::OnDemand,
        until_idle: Some(UNTIL_IDLE),
        concurrency,
        on_event: Some(Arc::new(move |event: &RunnerEvent| {
            if matches!(event, RunnerEvent::Finished { .. }) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })),
        ..RunnerOptions::default()
    };
    let runner = Runner::new(&sdk, &template, &provisioned, pipeline.functions(), options)?;

    // ---------------------------------------------------------------- the pipeline
    step(&format!(
        "pipeline: discovery + indexing through the local runner (concurrency {concurrency})"
    ));
    let sim_before = sim.ready().stats(&http).await?;
    let sim_cpu_before = sim.cpu_seconds()?;
    let wall = Instant::now();
    let cpu_before = cpu_now()?;
    let progress = tokio::spawn({
        let finished = Arc::clone(&finished_invocations);
        async move {
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                step(&format!(
                    "  … {} invocations finished after {:.0} s",
                    finished.load(Ordering::Relaxed),
                    wall.elapsed().as_secs_f64()
                ));
            }
        }
    });
    runner
        .fire_schedule(DISCOVER_FUNCTION)
        .await
        .context("firing the discovery schedule")?;
    let run = runner.run().await;
    let cpu_pipeline = cpu_now()? - cpu_before;
    let wall_pipeline = wall.elapsed();
    progress.abort();
    let sim_cpu_pipeline = sim.cpu_seconds()? - sim_cpu_before;
    let pipeline_sim = stats_delta(&sim.ready().stats(&http).await?, &sim_before);
    let dynamodb_writes = pipeline.dynamodb_write_requests();
    let writes_by = (
        pipeline.discover.state.write_requests(),
        pipeline.index_drive.state.write_requests(),
        pipeline.index_drive.inventory.write_requests(),
    );
    let discover_client_requests = pipeline.discover.clients.graph_requests().await;
    let index_client_requests = pipeline.index_drive.clients.graph_requests().await;
    step(&format!(
        "pipeline done in {:.1} s: {} invocations ({} not fully successful), {:.2} CPU s",
        wall_pipeline.as_secs_f64(),
        run.stats.invocations,
        run.stats.failed_invocations,
        cpu_pipeline
    ));

    // ---------------------------------------------------------------- was it a complete run?
    step("verifying the inventory and the drives against the tenant's ground truth");
    ensure!(
        run.reason == StopReason::Idle,
        "the runner stopped with {:?}, not idle",
        run.reason
    );
    let rows = verify_inventory(&sdk, &template, &provisioned, &truth, concurrency).await?;
    let state = state_store(&sdk, &template, &provisioned)?;
    let statuses = status::collect(&state, Some(CONNECTION)).await?;
    let status = statuses.first().context("the benchmark connection has no status")?;
    ensure!(
        status.drives.indexed == truth.drive_count() && status.drives.pending == 0 && status.drives.indexing == 0,
        "drives: {:?}, expected {} indexed",
        status.drives,
        truth.drive_count()
    );
    ensure!(status.error.is_none(), "connection error: {:?}", status.error);
    // Rows by kind, as the index rounds counted them (below the siblings' keys): none extra.
    ensure!(
        status.indexing.items_indexed == truth.items(),
        "the index rounds counted {} rows for the tenant's {} items: the run is broken, figures not recorded",
        status.indexing.items_indexed,
        truth.items()
    );
    let discovery = status
        .last_discovery
        .clone()
        .context("no finished discovery run recorded")?;
    ensure!(
        discovery.users_seen == truth.users && discovery.drives_found == truth.drive_count(),
        "discovery saw {} users and {} drives, the tenant has {} and {}",
        discovery.users_seen,
        discovery.drives_found,
        truth.users,
        truth.drive_count()
    );
    let dead = dead_letters(&sdk, &template, &provisioned).await?;
    ensure!(dead == 0, "{dead} messages ended in a dead-letter queue");
    // Each function's client counts its own requests: indexing sends `$batch` too (the
    // permissions of items delta marks shared), so the simulator's `$batch` count is not
    // discovery's. The two clients together must account for every request the simulator saw.
    let discovery_requests = discover_client_requests;
    ensure!(
        discover_client_requests + index_client_requests == graph_requests(&pipeline_sim),
        "the discover ({discover_client_requests}) and index-drive ({index_client_requests}) clients counted \
         other Graph requests than the simulator saw ({}): a request went uncounted",
        graph_requests(&pipeline_sim)
    );
    let sharing_batches = index_client_requests.saturating_sub(pipeline_sim.delta);

    // ---------------------------------------------------------------- baselines on the same sim
    step(&format!(
        "baseline: fetching and parsing the same delta walks without storing anything ({} passes)",
        args.baseline_passes.max(1)
    ));
    let baseline_graph = sim.ready().graph_client(http.clone(), "bench-baseline")?;
    baseline_graph.tokens().token().await?;
    let drive_ids = truth.drive_ids();
    let mut fetch_passes = Vec::new();
    let mut fetch_sim = None;
    let mut walks = None;
    let wall = Instant::now();
    for _ in 0..args.baseline_passes.max(1) {
        let before = sim.ready().stats(&http).await?;
        let cpu_before = cpu_now()?;
        let pass = fetch_and_parse(&baseline_graph, &drive_ids, concurrency).await?;
        fetch_passes.push(cpu_now()? - cpu_before);
        let sent = stats_delta(&sim.ready().stats(&http).await?, &before);
        ensure!(
            pass.unique_items == truth.items() && pass.drives == truth.drive_count(),
            "the baseline walks saw {} items in {} drives, the tenant holds {} in {}",
            pass.unique_items,
            pass.drives,
            truth.items(),
            truth.drive_count()
        );
        fetch_sim.get_or_insert(sent);
        walks.get_or_insert(pass);
    }
    let wall_fetch = wall.elapsed() / args.baseline_passes.max(1);
    let (Some(fetch_sim), Some(walks)) = (fetch_sim, walks) else {
        bail!("no baseline pass ran");
    };
    let cpu_fetch = median(&fetch_passes);

    step("baseline: naive discovery (one GET /users/{id}/drive per user)");
    let before = sim.ready().stats(&http).await?;
    let naive = naive_discovery(&baseline_graph, concurrency).await?;
    let naive_sim = stats_delta(&sim.ready().stats(&http).await?, &before);
    ensure!(
        naive.users == truth.users && naive.drives == truth.drive_count(),
        "the naive discovery saw {} users and {} drives, the tenant has {} and {}",
        naive.users,
        naive.drives,
        truth.users,
        truth.drive_count()
    );
    let sim_pid = sim.pid();
    drop(sim);
    // Emptied first: moto holding 100,000+ items takes longer to stop than its handle waits.
    if let Err(e) = moto.reset().await {
        tracing::warn!(error = %e, "could not reset moto before stopping it");
    }
    drop(moto);

    // ---------------------------------------------------------------- simulator memory
    let rss = if args.rss_users > 0 {
        step(&format!(
            "simulator memory: paging all {} users of a fresh m365-sim ($top=999)",
            args.rss_users
        ));
        let big_config = SimConfig {
            users: args.rss_users,
            ..SimConfig::with_seed(args.seed)
        };
        let big = SimProcess::spawn(&sim_bin, &sim_args(&big_config))?;
        let idle_mib = big.peak_rss_mib()?;
        let graph = big.ready().graph_client(http.clone(), "bench-rss")?;
        let wall = Instant::now();
        let walk = page_all_users(&graph).await?;
        let wall_walk = wall.elapsed();
        let peak_mib = big.peak_rss_mib()?;
        ensure!(
            walk.unique_users == args.rss_users && walk.users == args.rss_users,
            "paging saw {} users ({} distinct), the directory has {}",
            walk.users,
            walk.unique_users,
            args.rss_users
        );
        Some((idle_mib, peak_mib, walk, wall_walk))
    } else {
        None
    };

    // ---------------------------------------------------------------- figures
    let items = truth.items() as f64;
    let naive_requests = graph_requests(&naive_sim);
    let mut figures = vec![
        Figure {
            metric: "graph_requests_per_discovered_user",
            value: discovery_requests as f64 / discovery.users_seen as f64,
            baseline: naive_requests as f64 / naive.users as f64,
            baseline_label: "naive: 1 GET drive per user".to_owned(),
            goal: Some(Goal::AtMost(DISCOVERY_GOAL)),
        },
        Figure {
            metric: "graph_requests_per_1000_items",
            value: index_client_requests as f64 * 1000.0 / items,
            baseline: graph_requests(&fetch_sim) as f64 * 1000.0 / items,
            baseline_label: "bare delta walks".to_owned(),
            goal: None,
        },
        Figure {
            metric: "dynamodb_writes_per_1000_items",
            value: dynamodb_writes as f64 * 1000.0 / items,
            baseline: NAIVE_WRITES_PER_1000_ITEMS,
            baseline_label: "naive: 1 PutItem per item".to_owned(),
            goal: None,
        },
        Figure {
            metric: "cpu_seconds_per_100k_items",
            value: cpu_pipeline * 100_000.0 / items,
            baseline: cpu_fetch * 100_000.0 / walks.unique_items as f64,
            baseline_label: "fetch + parse only".to_owned(),
            goal: None,
        },
    ];
    if let Some((idle_mib, peak_mib, _, _)) = &rss {
        figures.push(Figure {
            metric: "sim_peak_rss_mb_1m_users",
            value: *peak_mib,
            baseline: *idle_mib,
            baseline_label: "same sim idle".to_owned(),
            goal: None,
        });
    }

    println!();
    println!(
        "filetrail pipeline benchmark, {} ({} build)",
        started.format("%Y-%m-%d %H:%M UTC"),
        if release { "release" } else { "DEBUG" }
    );
    println!(
        "tenant: seed {}, {} users, {} OneDrives, files per drive {}, {} items ({} files, {} folders); concurrency {concurrency}",
        args.seed,
        truth.users,
        truth.drive_count(),
        args.files_per_drive,
        truth.items(),
        truth.files,
        truth.folders
    );
    println!();
    print!("{}", render_table(&figures));
    println!();
    println!(
        "discovery: {} users pages + {} $batch envelopes = {discovery_requests} requests; naive: {} users pages + {} drive GETs = {naive_requests}",
        pipeline_sim.users,
        discovery_requests.saturating_sub(pipeline_sim.users),
        naive.user_pages,
        naive.users
    );
    println!(
        "indexing: {} delta requests ({} resyncs) + {sharing_batches} $batch envelopes of shared items' permissions \
         ({} permission reads inside); bare walks: {} pages; token requests: {} (pipeline), reported apart",
        pipeline_sim.delta, pipeline_sim.delta_resync, pipeline_sim.permissions, walks.pages, pipeline_sim.token
    );
    println!(
        "graph clients counted {} (discover) + {} (index-drive) requests; the simulator {}",
        discover_client_requests,
        index_client_requests,
        graph_requests(&pipeline_sim)
    );
    println!(
        "DynamoDB: {dynamodb_writes} write requests for {} rows: discover state {}, index-drive state (checkpoints) {}, inventory BatchWriteItem {}",
        truth.items(),
        writes_by.0,
        writes_by.1,
        writes_by.2
    );
    println!(
        "CPU: pipeline {cpu_pipeline:.2} s in {:.1} s wall ({} invocations); fetch + parse {cpu_fetch:.2} s (median of {}) in {:.1} s wall a pass; m365-sim {sim_cpu_pipeline:.2} s during the pipeline",
        wall_pipeline.as_secs_f64(),
        run.stats.invocations,
        fetch_passes
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        wall_fetch.as_secs_f64()
    );
    if let Some((idle_mib, peak_mib, walk, wall_walk)) = &rss {
        println!(
            "m365-sim memory: {idle_mib:.1} MiB idle, {peak_mib:.1} MiB peak after {} pages / {} distinct users in {:.1} s",
            walk.pages,
            walk.unique_users,
            wall_walk.as_secs_f64()
        );
    }

    let details = json!({
        "date": started.to_rfc3339(),
        "build": if release { "release" } else { "debug" },
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "tenant": {
            "seed": args.seed,
            "users": truth.users,
            "drives": truth.drive_count(),
            "files_per_drive": args.files_per_drive.to_string(),
            "no_drive_ratio": args.no_drive_ratio,
            "files": truth.files,
            "folders": truth.folders,
            "items": truth.items(),
            "delta_page_size": config.page_size_default,
        },
        "concurrency": concurrency,
        "pipeline": {
            "wall_seconds": wall_pipeline.as_secs_f64(),
            "cpu_seconds": cpu_pipeline,
            "sim_cpu_seconds": sim_cpu_pipeline,
            "invocations": run.stats.invocations,
            "failed_invocations": run.stats.failed_invocations,
            "dynamodb_write_requests": dynamodb_writes,
            "dynamodb_writes_discover_state": writes_by.0,
            "dynamodb_writes_index_state": writes_by.1,
            "dynamodb_writes_inventory": writes_by.2,
            "inventory_rows": rows,
            "sim_stats": pipeline_sim,
            "discover_client_requests": discover_client_requests,
            "index_client_requests": index_client_requests,
            "sim_pid": sim_pid,
        },
        "fetch_and_parse": {
            "wall_seconds": wall_fetch.as_secs_f64(),
            "cpu_seconds": cpu_fetch,
            "cpu_seconds_per_pass": fetch_passes,
            "pages": walks.pages,
            "items_with_repeats": walks.items,
            "unique_items": walks.unique_items,
            "sim_stats": fetch_sim,
        },
        "naive_discovery": {
            "user_pages": naive.user_pages,
            "users": naive.users,
            "drives": naive.drives,
            "without_drive": naive.without_drive,
            "sim_stats": naive_sim,
        },
        "sim_rss": rss.as_ref().map(|(idle, peak, walk, wall)| json!({
            "users": args.rss_users,
            "idle_mib": idle,
            "peak_mib": peak,
            "pages": walk.pages,
            "unique_users": walk.unique_users,
            "wall_seconds": wall.as_secs_f64(),
        })),
        "figures": figures.iter().map(|f| json!({
            "metric": f.metric,
            "value": f.value,
            "baseline": f.baseline,
            "baseline_label": f.baseline_label,
            "ratio": f.ratio(),
        })).collect::<Vec<_>>(),
    });

    let Some(provenance) = provenance.filter(|_| release) else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    if args.min_files < 100_000 {
        println!("\nresults not written: --min-files below 100000 makes a smoke run, not a benchmark");
        return Ok(());
    }
    merge_into_results(&results_path, &figures, &provenance)?;
    std::fs::write(&details_path, format!("{}\n", serde_json::to_string_pretty(&details)?))
        .with_context(|| format!("writing {}", details_path.display()))?;
    println!(
        "\nupdated {} (raw counters in {})",
        results_path.display(),
        details_path.display()
    );
    Ok(())
}

/// Checks that no item of the tenant lacks its inventory row: every expected row is read back by
/// key (`BatchGetItem`, 100 keys a request). Returns how many were found. That none is extra is
/// checked on the rows each index round counted (`filetrail status`): the table also holds
/// siblings of rows (hash outcomes, sharing state, files' list item ids), so its `ItemCount` is
/// not a row count.
///
/// Why not count with `Scan` or `Query` here: moto runs them over every item of the table per
/// request (a counting scan of 126,000 rows took 3.4 minutes), while key lookups are dictionary
/// reads.
async fn verify_inventory(
    sdk: &aws_config::SdkConfig,
    template: &Template,
    provisioned: &Provisioned,
    truth: &Truth,
    concurrency: usize,
) -> anyhow::Result<u64> {
    let env = env_of(template, provisioned, INDEX_DRIVE_FUNCTION)?;
    let table = env
        .get("FILETRAIL_INVENTORY_TABLE")
        .context("IndexDriveFunction has no FILETRAIL_INVENTORY_TABLE")?;
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let keys: Vec<(&str, &str)> = truth
        .drives
        .iter()
        .flat_map(|(drive, items)| items.iter().map(move |item| (drive.as_str(), item.as_str())))
        .collect();
    let found: Vec<u64> = futures_util::stream::iter(
        keys.chunks(BATCH_GET_MAX_KEYS)
            .map(|chunk| rows_found(&client, table, chunk)),
    )
    .buffer_unordered(concurrency)
    .try_collect()
    .await?;
    let found: u64 = found.iter().sum();
    ensure!(
        found == truth.items(),
        "{} of the tenant's {} items have no inventory row: the run is broken, figures not recorded",
        truth.items() - found,
        truth.items()
    );
    Ok(found)
}

/// How many of `keys` (drive id, item id) have a row, reading them with `BatchGetItem` and
/// asking again for unprocessed keys.
async fn rows_found(client: &aws_sdk_dynamodb::Client, table: &str, keys: &[(&str, &str)]) -> anyhow::Result<u64> {
    let mut pending: Vec<HashMap<String, AttributeValue>> = keys
        .iter()
        .map(|(drive, item)| {
            HashMap::from([
                ("drive_id".to_owned(), AttributeValue::S((*drive).to_owned())),
                ("item_id".to_owned(), AttributeValue::S((*item).to_owned())),
            ])
        })
        .collect();
    let mut found = 0u64;
    while !pending.is_empty() {
        let request = KeysAndAttributes::builder()
            .set_keys(Some(std::mem::take(&mut pending)))
            .projection_expression("drive_id, item_id")
            .build()
            .context("building a BatchGetItem request")?;
        let out = client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .with_context(|| format!("reading inventory rows of {table}"))?;
        found += out
            .responses()
            .and_then(|r| r.get(table))
            .map_or(0, |rows| rows.len() as u64);
        if let Some(again) = out.unprocessed_keys().and_then(|u| u.get(table)) {
            pending = again.keys().to_vec();
        }
    }
    Ok(found)
}
