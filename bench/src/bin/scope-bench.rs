//! `scope-bench`: a groups scope of 1,000 groups totalling ~200,000 users, resolved and
//! discovered by the real discovery code (`filetrail_core::discover`, the discover handler's use
//! case) with the production Graph client against `m365-sim` over HTTP. Measures the Graph
//! requests, the wall time and the peak RSS of the process running discovery, each against a
//! baseline measured in the same run, prints a table and updates `bench/results.json`
//! (`scope_200k_*`). Run it with `bench/run scope`.
//!
//! The scope is set through the apply path, then discovery runs as the discover handler runs
//! it: invocation after invocation, each with the discover function's budget (its template
//! timeout less the margin), until the run finishes. Where the state lives (`--state`):
//! - `memory` (default): the in-memory adapters of filetrail-core; `apply_upload` reads the CSV
//!   from a memory bucket. About two minutes.
//! - `moto`: the production adapters on moto server. The CSV lands in the deployment bucket
//!   under `scoping/<connection>/groups.csv`, moto notifies the scope queue, the local runner
//!   invokes the apply-scope handler, which replaces the scope and queues a discover job; the
//!   benchmark takes that job and runs it with the discover function's own context (DynamoDB
//!   state store, Graph client built from the secret in Secrets Manager). About an hour: moto
//!   is the bottleneck.
//!
//! In both, the index queue is a counter (see [`CountingIndexQueue`]): only discovery is
//! measured, nothing is indexed.

use filetrail_bench::cli::ResultsArgs;
use filetrail_bench::{repo_root, step};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, ValueEnum};
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::template::Template;
use filetrail_bench::baseline::{NaiveScopeResolution, naive_scope_resolution};
use filetrail_bench::procfs::{self, Pid};
use filetrail_bench::report::{Figure, merge_into_results, render_table};
use filetrail_bench::scope::{ScopeRequests, ScopeTruth, groups_csv, member_pages, scope_groups};
use filetrail_bench::sim_process::{SimProcess, SimReady, graph_requests, sim_args, stats_delta};
use filetrail_bench::stack::{dead_letters, env_of, register_connection, sim_connection};
use filetrail_bench::timed::{CallTimes, OpTime, Timed, seconds_in};
use filetrail_cli::connection;
use filetrail_cli::local::runner::{Runner, RunnerOptions, ScheduleMode, StopReason};
use filetrail_cli::pipeline::{APPLY_SCOPE_FUNCTION, DISCOVER_FUNCTION, LocalPipeline};
use filetrail_core::apply_scope::{ApplyOutcome, ApplyPorts, UploadEvent, apply_upload, upload_key};
use filetrail_core::budget::Deadline;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, discover};
use filetrail_core::jobs::{DiscoverJob, IndexJob};
use filetrail_core::memory::{MemoryObjects, MemoryQueue, MemoryState};
use filetrail_core::model::{DiscoverySummary, DriveState};
use filetrail_core::ports::{ConnectionStore, DriveStore, IndexQueue, PortResult, StateStore};
use filetrail_core::scope::csv::{ListKind, parse_scope_csv};
use filetrail_core::scope::{GroupSelector, MAX_SCOPE_ENTRIES, ScopeEntry, ScopeKind, ScopeUploadResult};
use filetrail_m365::{GraphClient, HttpTimeouts, http_client};
use filetrail_runtime::FunctionSettings;
use m365_sim::{FilesPerDrive, SimConfig, Stats};
use serde_json::json;

/// The connection id the benchmark registers.
const CONNECTION: &str = "bench-scope";
/// Stack name of the provisioned resources on moto.
const STACK_NAME: &str = "bench-scope";
/// Quiet period after which the runner considers the scope queue idle (as pipeline-bench).
const UNTIL_IDLE: Duration = Duration::from_millis(1500);
/// How often progress is printed while discovery runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// Credentials reuse during the run: long, so every invocation reuses one Graph client.
const CREDENTIALS_TTL_SECS: &str = "86400";

/// Where discovery keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StateBackend {
    /// The in-memory adapters of filetrail-core, in this process.
    Memory,
    /// The production adapters (DynamoDB, S3, SQS, Secrets Manager) on moto server.
    Moto,
}

impl StateBackend {
    fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Moto => "moto",
        }
    }
}

/// Benchmarks discovery of a groups scope of 1,000 groups (~200,000 users).
#[derive(Debug, Parser)]
#[command(name = "scope-bench")]
struct Args {
    /// Users of the directory.
    #[arg(long, default_value_t = 250_000)]
    users: u64,
    /// Groups of the directory; the scope lists every one (at most 1,000, the scope list limit).
    #[arg(long, default_value_t = 1000)]
    groups: u64,
    /// Average direct user members per group.
    #[arg(long, default_value_t = 224)]
    group_members_avg: u64,
    /// Share of groups that have other groups as members.
    #[arg(long, default_value_t = 0.2)]
    nested_group_ratio: f64,
    /// Share of users without a OneDrive.
    #[arg(long, default_value_t = 0.1)]
    no_drive_ratio: f64,
    /// Seed of the simulated tenant.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where discovery keeps its state: the in-memory store of filetrail-core (~2 minutes), or
    /// the production AWS adapters on moto with apply-scope through the local runner (~1 hour:
    /// moto takes ~3 ms a write and scans the whole table for each Query page).
    #[arg(long, value_enum, default_value_t = StateBackend::Memory)]
    state: StateBackend,
    /// Requests the naive baseline keeps in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Refuse to write results when the scope covers fewer distinct users than this (0 for a
    /// quick smoke run whose figures are not comparable).
    #[arg(long, default_value_t = 190_000)]
    min_users: u64,
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
            "this is a debug build, whose figures mean nothing; run `cargo run --release -p filetrail-bench --bin scope-bench` (bench/run scope does), or pass --allow-debug"
        );
    }
    ensure!(
        usize::try_from(args.groups).is_ok_and(|g| g <= MAX_SCOPE_ENTRIES),
        "--groups {} is above the scope list limit of {MAX_SCOPE_ENTRIES}",
        args.groups
    );
    let root = repo_root();
    let sim_bin = args
        .sim_bin
        .clone()
        .unwrap_or_else(|| root.join("target/release/m365-sim"));
    let template_path = args.template.clone().unwrap_or_else(|| root.join("template.yaml"));
    let results_path = args.out.path();
    let details_path = args
        .details
        .clone()
        .unwrap_or_else(|| root.join(format!("bench/last-scope-run-{}.json", args.state.as_str())));
    let concurrency = args.concurrency.max(1);
    let started = chrono::Utc::now();

    let config = SimConfig {
        users: args.users,
        groups: args.groups,
        group_members_avg: args.group_members_avg,
        nested_group_ratio: args.nested_group_ratio,
        no_drive_ratio: args.no_drive_ratio,
        // Only discovery is measured: the drives are empty.
        files_per_drive: FilesPerDrive::Fixed(0),
        ..SimConfig::with_seed(args.seed)
    };
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid tenant settings: {e}"))?;

    // Only what is cheap to know before discovery: the groups and their sizes, no member listed,
    // so nothing inflates this process's memory before it is measured.
    step("listing the tenant's groups from its model");
    let tenant = Tenant::of(&config);
    let csv = groups_csv(&tenant.groups)?;
    let csv_bytes = csv.len();
    let parsed = parse_scope_csv(ListKind::Groups, &csv).map_err(|e| anyhow::anyhow!("the scope CSV: {e}"))?;
    ensure!(
        parsed.rejected.is_empty(),
        "the scope CSV has rejected rows: {:?}",
        parsed.rejected
    );
    let entries = parsed.entries.len() as u64;
    let selectors: Vec<GroupSelector> = parsed
        .entries
        .iter()
        .filter_map(|e| match e {
            ScopeEntry::Group(s) => Some(s.clone()),
            ScopeEntry::User(_) => None,
        })
        .collect();
    step(&format!(
        "tenant: {} users, {} groups ({} with nested groups), {} distinct users in groups; scope CSV: {entries} entries ({} duplicate rows), {csv_bytes} bytes",
        args.users,
        tenant.groups.len(),
        tenant.nesting,
        tenant.grouped_users,
        parsed.duplicates,
    ));

    step(&format!("starting {}", sim_bin.display()));
    let sim = SimProcess::spawn(&sim_bin, &sim_args(&config))?;
    let http = http_client(HttpTimeouts::default())?;

    // ---------------------------------------------------------------- discovery
    let backend = match args.state {
        StateBackend::Memory => Backend::Memory(Box::default()),
        StateBackend::Moto => Backend::Moto(Box::new(Stack::start(&template_path, sim.ready()).await?)),
    };
    let discovered = match &backend {
        Backend::Memory(state) => {
            let timeout = Template::from_path(&template_path)?
                .function(DISCOVER_FUNCTION)
                .context("template.yaml has no DiscoverFunction")?
                .timeout();
            discover_in_memory(state, sim.ready(), &http, csv, timeout).await?
        }
        Backend::Moto(stack) => stack.discover(sim.ready(), &http, csv).await?,
    };
    let summary = &discovered.summary;
    step(&format!(
        "discovery finished in {:.1} s ({} invocations): {} users, {} drives, {} Graph requests; peak RSS {:.1} MiB (RSS before {:.1} MiB)",
        discovered.wall.as_secs_f64(),
        discovered.invocations,
        summary.users_seen,
        summary.drives_found,
        graph_requests(&discovered.sim_delta),
        discovered.peak_mib,
        discovered.rss_before_mib
    ));

    // ---------------------------------------------------------------- was it complete?
    step("computing the scope's ground truth (every member of every group) and verifying");
    let truth = ScopeTruth::of_all_groups(&config.tenant());
    verify(&discovered, &truth, entries)?;
    match &backend {
        Backend::Memory(state) => verify_drives_in_memory(state, &truth.drives).await?,
        Backend::Moto(stack) => stack.verify_drives(&truth.drives).await?,
    }
    ensure!(
        discovered.sim_delta.group_members == tenant.member_pages,
        "discovery read {} member pages; every group paged once makes {}",
        discovered.sim_delta.group_members,
        tenant.member_pages
    );

    // ---------------------------------------------------------------- baseline
    step(&format!(
        "baseline: naive resolution without $batch ({} group lookups, member pages, {} drive GETs; {concurrency} in flight)",
        selectors.len(),
        truth.users
    ));
    let graph = sim.ready().graph_client(http.clone(), "bench-naive")?;
    graph.tokens().token().await?;
    let before = sim.ready().stats(&http).await?;
    let wall = Instant::now();
    let naive = naive_scope_resolution(&graph, &selectors, concurrency).await?;
    let wall_naive = wall.elapsed();
    let naive_sim = stats_delta(&sim.ready().stats(&http).await?, &before);
    verify_naive(&naive, &naive_sim, &truth, &tenant)?;

    // ---------------------------------------------------------------- figures
    let floor = ScopeRequests::batched_floor(entries, tenant.member_pages, truth.users);
    let discovery_requests = graph_requests(&discovered.sim_delta);
    let naive_requests = graph_requests(&naive_sim);
    let figures = vec![
        Figure {
            metric: "scope_200k_graph_requests",
            value: discovery_requests as f64,
            baseline: naive_requests as f64,
            baseline_label: "naive: 1 request per group, member page and member's drive".to_owned(),
            goal: None,
        },
        Figure {
            metric: "scope_200k_wall_s",
            value: discovered.wall.as_secs_f64(),
            baseline: wall_naive.as_secs_f64(),
            baseline_label: format!("naive resolution, {concurrency} in flight, nothing stored"),
            goal: None,
        },
        Figure {
            metric: "scope_200k_peak_rss_mb",
            value: discovered.peak_mib,
            baseline: discovered.rss_before_mib,
            baseline_label: "same process before discovery".to_owned(),
            goal: None,
        },
    ];
    let s = &discovered.sim_delta;

    println!();
    println!(
        "filetrail scope benchmark, {} ({} build, state {})",
        started.format("%Y-%m-%d %H:%M UTC"),
        if release { "release" } else { "DEBUG" },
        args.state.as_str()
    );
    println!(
        "tenant: seed {}, {} users, {} groups ({} with nested groups, {} direct members on average), {}% of users without a OneDrive",
        args.seed,
        args.users,
        tenant.groups.len(),
        tenant.nesting,
        args.group_members_avg,
        args.no_drive_ratio * 100.0
    );
    println!(
        "scope: {entries} CSV entries naming all {} groups: {} distinct users, {} with a OneDrive, {} without",
        tenant.groups.len(),
        truth.users,
        truth.drives.len(),
        truth.without_drive
    );
    println!();
    print!("{}", render_table(&figures));
    println!();
    println!(
        "discovery: {} $batch envelopes (inside: {} group lookups, {} drive lookups) + {} member pages + {} other = {discovery_requests} requests; floor {} = {} + {} + {}; token requests {} (apart)",
        s.batch,
        s.groups,
        s.drive,
        s.group_members,
        discovery_requests.saturating_sub(s.batch + s.group_members),
        floor.total(),
        floor.group_lookups,
        floor.member_pages,
        floor.drive_lookups,
        s.token
    );
    println!(
        "naive: {} group lookups + {} member pages + {} drive GETs = {naive_requests} requests in {:.1} s ({} memberships listed)",
        naive.group_lookups,
        naive.member_pages,
        naive.users,
        wall_naive.as_secs_f64(),
        naive.memberships
    );
    if summary.users_seen > truth.users || s.drive > truth.users {
        println!(
            "NOTE: {} invocations: {} drive lookups for {} users; the run counted {} users seen and {} drives found for {} and {}: users in groups read by more than one invocation were looked up and counted again",
            discovered.invocations,
            s.drive,
            truth.users,
            summary.users_seen,
            summary.drives_found,
            truth.users,
            truth.drives.len()
        );
    }
    let closing_from = discovered.times.get("state.run_seen").map_or(0.0, |t| t.first_call_s);
    println!(
        "wall: {:.1} s = Graph {:.1} s + state store {:.1} s + index queue {:.1} s + other {:.1} s; the run's closing work (from its first run_seen) {:.1} s",
        discovered.wall.as_secs_f64(),
        seconds_in(&discovered.times, "graph."),
        seconds_in(&discovered.times, "state."),
        seconds_in(&discovered.times, "queue."),
        discovered.wall.as_secs_f64() - seconds_in(&discovered.times, ""),
        discovered.wall.as_secs_f64() - closing_from
    );
    let mut by_time: Vec<(&&str, &OpTime)> = discovered.times.iter().collect();
    by_time.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    for (op, t) in by_time.iter().take(8) {
        println!("  {op:<34} {:>8} calls {:>8.1} s", t.calls, t.seconds);
    }
    if args.state == StateBackend::Moto {
        println!(
            "DynamoDB (discovery's state store): {} writes, {} reads",
            discovered.state_writes, discovered.state_reads
        );
    }
    println!(
        "index jobs: {} in {} enqueue calls; {} invocations",
        discovered.index_jobs.jobs, discovered.index_enqueues, discovered.invocations
    );

    let details = json!({
        "date": started.to_rfc3339(),
        "build": if release { "release" } else { "debug" },
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "state": args.state.as_str(),
        "tenant": {
            "seed": args.seed,
            "users": args.users,
            "groups": tenant.groups.len(),
            "groups_with_nested_groups": tenant.nesting,
            "group_members_avg": args.group_members_avg,
            "nested_group_ratio": args.nested_group_ratio,
            "no_drive_ratio": args.no_drive_ratio,
            "largest_group_users": tenant.groups.iter().map(|g| g.transitive_users).max(),
            "member_pages": tenant.member_pages},
        "scope": {
            "csv_bytes": csv_bytes,
            "entries": entries,
            "duplicate_rows": parsed.duplicates,
            "users": truth.users,
            "drives": truth.drives.len(),
            "without_drive": truth.without_drive},
        "discovery": {
            "wall_seconds": discovered.wall.as_secs_f64(),
            "invocations": discovered.invocations,
            "graph_requests": discovery_requests,
            "sim_stats": discovered.sim_delta,
            "rss_before_mib": discovered.rss_before_mib,
            "peak_rss_mib": discovered.peak_mib,
            "dynamodb_writes": discovered.state_writes,
            "dynamodb_reads": discovered.state_reads,
            "index_jobs": discovered.index_jobs.jobs,
            "index_enqueue_calls": discovered.index_enqueues,
            "seconds_by_operation": discovered.times,
            "drive_lookups_beyond_distinct_users": s.drive.saturating_sub(truth.users),
            "users_seen_beyond_distinct_users": summary.users_seen.saturating_sub(truth.users),
            "summary": summary,
            "floor": {
                "group_lookups": floor.group_lookups,
                "member_pages": floor.member_pages,
                "drive_lookups": floor.drive_lookups,
                "total": floor.total()}},
        "naive": {
            "wall_seconds": wall_naive.as_secs_f64(),
            "concurrency": concurrency,
            "group_lookups": naive.group_lookups,
            "groups": naive.groups,
            "member_pages": naive.member_pages,
            "memberships": naive.memberships,
            "users": naive.users,
            "drives": naive.drives,
            "without_drive": naive.without_drive,
            "sim_stats": naive_sim},
        "figures": figures.iter().map(|f| json!({
            "metric": f.metric,
            "value": f.value,
            "baseline": f.baseline,
            "baseline_label": f.baseline_label,
            "ratio": f.ratio()})).collect::<Vec<_>>()});

    let Some(provenance) = provenance.filter(|_| release) else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    if truth.users < args.min_users {
        println!(
            "\nresults not written: the scope covers {} users, fewer than --min-users {}; a smoke run, not a benchmark",
            truth.users, args.min_users
        );
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

/// What is known of the tenant's groups before discovery, from its model, without listing a
/// member.
struct Tenant {
    groups: Vec<filetrail_bench::scope::ScopeGroup>,
    /// Groups with other groups as members.
    nesting: usize,
    /// Distinct users in at least one group.
    grouped_users: u64,
    /// Transitive member pages of every group at `$top=999`.
    member_pages: u64,
}

impl Tenant {
    fn of(config: &SimConfig) -> Self {
        let tenant = config.tenant();
        let groups = scope_groups(&tenant);
        Self {
            nesting: groups
                .iter()
                .filter(|g| !tenant.member_group_ids(&g.id).is_empty())
                .count(),
            grouped_users: tenant.grouped_user_count(),
            member_pages: groups.iter().map(|g| member_pages(g.transitive_users)).sum(),
            groups,
        }
    }
}

/// What the discovery phase measured and what the run recorded.
struct Discovered {
    /// The run's summary as recorded on the connection.
    summary: DiscoverySummary,
    upload: Option<ScopeUploadResult>,
    /// Index jobs discovery enqueued.
    index_jobs: JobCount,
    /// `enqueue_index` calls.
    index_enqueues: u64,
    /// Discover invocations (the first plus its continuations).
    invocations: u64,
    /// From the first invocation's start to the last one's end.
    wall: Duration,
    /// Time spent in each port operation during discovery.
    times: BTreeMap<&'static str, OpTime>,
    /// DynamoDB requests of the discover function's state store.
    state_writes: u64,
    state_reads: u64,
    /// The simulator's counters over discovery.
    sim_delta: Stats,
    /// This process's RSS just before discovery.
    rss_before_mib: f64,
    /// This process's peak RSS from then until discovery finished.
    peak_mib: f64,
}

/// Where the run keeps its state.
enum Backend {
    Memory(Box<MemoryState>),
    Moto(Box<Stack>),
}

/// The local stack on moto: the template provisioned, the simulator's tenant registered as the
/// connection, and the functions' contexts as AWS would build them.
struct Stack {
    _moto: MotoServer,
    sdk: aws_config::SdkConfig,
    template: Template,
    provisioned: Provisioned,
    pipeline: LocalPipeline,
}

impl Stack {
    async fn start(template_path: &Path, sim: &SimReady) -> anyhow::Result<Self> {
        step("starting moto server and provisioning template.yaml");
        let moto = MotoServer::start().await?;
        let sdk = moto.sdk_config().await;
        let template = Template::from_path(template_path)?;
        let provisioned = provision(&sdk, &template, STACK_NAME).await?;
        register_connection(&sdk, &template, &provisioned, sim, CONNECTION).await?;
        let overrides = HashMap::from([(
            "FILETRAIL_CREDENTIALS_TTL_SECS".to_owned(),
            CREDENTIALS_TTL_SECS.to_owned(),
        )]);
        let pipeline = LocalPipeline::new(&sdk, &template, &provisioned, &overrides)?;
        Ok(Self {
            _moto: moto,
            sdk,
            template,
            provisioned,
            pipeline,
        })
    }

    /// Sets the scope the way production does and runs discovery until it finishes (see the
    /// module documentation), measuring this process's memory and the simulator's counters
    /// around discovery.
    async fn discover(&self, sim: &SimReady, http: &reqwest::Client, csv: Vec<u8>) -> anyhow::Result<Discovered> {
        let functions = self
            .pipeline
            .functions()
            .into_iter()
            .filter(|(id, _)| id == APPLY_SCOPE_FUNCTION)
            .collect();
        let options = RunnerOptions {
            schedules: ScheduleMode::OnDemand,
            until_idle: Some(UNTIL_IDLE),
            concurrency: 1,
            ..RunnerOptions::default()
        };
        let runner = Runner::new(&self.sdk, &self.template, &self.provisioned, functions, options)?;
        let discover_queue = env_of(&self.template, &self.provisioned, DISCOVER_FUNCTION)?
            .get("FILETRAIL_DISCOVER_QUEUE_URL")
            .context("DiscoverFunction has no FILETRAIL_DISCOVER_QUEUE_URL")?
            .clone();
        let invocation_timeout = self
            .template
            .function(DISCOVER_FUNCTION)
            .context("template.yaml has no DiscoverFunction")?
            .timeout();

        step("scope: groups CSV to the bucket, apply-scope through the local runner");
        self.pipeline
            .apply_scope
            .objects
            .put(&upload_key(CONNECTION, ScopeKind::Groups), csv, "text/csv")
            .await?;
        // Besides the upload, the queue may hold the `s3:TestEvent` S3 sends when notifications
        // are configured (apply-scope ignores it).
        let applied = runner.run().await;
        ensure!(
            applied.reason == StopReason::Idle
                && applied.stats.invocations >= 1
                && applied.stats.failed_invocations == 0,
            "apply-scope did not run and succeed: {applied:?}"
        );
        take_discover_job(&aws_sdk_sqs::Client::new(&self.sdk), &discover_queue).await?;

        step(&format!(
            "discovery: the discover handler's use case, invocations of {} s, until the run finishes",
            invocation_timeout.as_secs()
        ));
        let ctx = &self.pipeline.discover;
        let connection = ctx
            .state
            .connection(CONNECTION)
            .await?
            .context("the benchmark connection is not registered")?;
        // Built once from the secret in Secrets Manager and cached, as each invocation of the
        // handler would find it (the credentials TTL is set to a day).
        let graph = ctx.clients.graph(&connection).await?;
        let budget = || ctx.settings.budget(Instant::now() + invocation_timeout);
        let measured = run_discovery(&ctx.state, &graph, budget, sim, http).await?;
        read_back(
            &ctx.state,
            measured,
            ctx.state.write_requests(),
            ctx.state.read_requests(),
        )
        .await
    }

    /// Checks that every drive of `expected` is stored, monitored, under the benchmark's
    /// connection: each read back by key (`BatchGetItem`). That no other drive was stored
    /// follows from the index jobs (every inserted drive is enqueued, and the jobs are exactly
    /// `expected`, see [`verify`]) on a fresh table. Listing or counting the drives by state
    /// would be the direct way, but moto answers each `Query` page by scanning and sorting the
    /// whole table (~10 s a page here).
    async fn verify_drives(&self, expected: &BTreeSet<String>) -> anyhow::Result<()> {
        let state = &self.pipeline.discover.state;
        let ids: Vec<String> = expected.iter().cloned().collect();
        let records = state.drives(&ids).await?;
        let monitored = |s: DriveState| matches!(s, DriveState::Pending | DriveState::Indexing | DriveState::Indexed);
        let found = records
            .iter()
            .filter(|d| d.connection == CONNECTION && monitored(d.state))
            .count();
        ensure!(
            found == expected.len(),
            "{} of the {} OneDrives of the users in the groups are not monitored: the run is broken, figures not recorded",
            expected.len() - found,
            expected.len()
        );
        let dead = dead_letters(&self.sdk, &self.template, &self.provisioned).await?;
        ensure!(dead == 0, "{dead} messages ended in a dead-letter queue");
        Ok(())
    }
}

/// The scope set through the apply path over the in-memory adapters of filetrail-core
/// (`apply_upload`: the CSV read from a memory bucket, the scope replaced, a discover job
/// queued), then discovery run as the discover handler runs it, with the production Graph
/// client and the discover function's budget, over the in-memory state store.
async fn discover_in_memory(
    state: &MemoryState,
    sim: &SimReady,
    http: &reqwest::Client,
    csv: Vec<u8>,
    invocation_timeout: Duration,
) -> anyhow::Result<Discovered> {
    state
        .put_connection(&connection::record(
            &sim_connection(sim, CONNECTION),
            "memory: the Graph client is built from the simulator's credentials".to_owned(),
        ))
        .await?;
    step("scope: apply_upload of the groups CSV (in-memory bucket, state and queue)");
    let objects = MemoryObjects::default();
    let discover_queue = MemoryQueue::default();
    let key = upload_key(CONNECTION, ScopeKind::Groups);
    let etag = objects.put(&key, &csv);
    let event = UploadEvent {
        key,
        etag,
        size: csv.len() as u64,
        time: chrono::Utc::now(),
    };
    let ports = ApplyPorts {
        connections: state,
        scopes: state,
        objects: &objects,
        discover_queue: &discover_queue,
    };
    match apply_upload(&ports, &event, chrono::Utc::now()).await? {
        ApplyOutcome::Done(result) if result.accepted => {}
        other => bail!("the scope upload was not applied: {other:?}"),
    }
    ensure!(
        discover_queue
            .discover_jobs()
            .iter()
            .any(|j| matches!(j, DiscoverJob::Discover { connection, .. } if connection == CONNECTION)),
        "apply_upload queued no discover job for {CONNECTION}"
    );

    let graph = sim.graph_client(http.clone(), CONNECTION)?;
    let settings = FunctionSettings::from_env_map(&HashMap::new())?;
    let budget = || settings.budget(Instant::now() + invocation_timeout);
    let measured = run_discovery(state, &graph, budget, sim, http).await?;
    read_back(state, measured, 0, 0).await
}

/// What [`run_discovery`] measured.
struct Measured {
    index_jobs: JobCount,
    index_enqueues: u64,
    invocations: u64,
    wall: Duration,
    times: BTreeMap<&'static str, OpTime>,
    sim_delta: Stats,
    rss_before_mib: f64,
    peak_mib: f64,
}

/// Runs discovery of the benchmark's connection as the discover handler does: invocation after
/// invocation, each with a fresh `budget`, until the run finishes, every port timed and the
/// index jobs counted. Measures this process's RSS before and its peak during discovery, and
/// the simulator's counters around it.
async fn run_discovery(
    state: &dyn StateStore,
    graph: &GraphClient,
    budget: impl Fn() -> Deadline,
    sim: &SimReady,
    http: &reqwest::Client,
) -> anyhow::Result<Measured> {
    step("discovery: the discover handler's use case, invocation after invocation, until the run finishes");
    let index_queue = CountingIndexQueue::default();
    let times = CallTimes::new();
    let timed_graph = Timed::new(graph, &times);
    let ports = DiscoverPorts {
        state: &Timed::new(state, &times),
        directory: &timed_graph,
        finder: &timed_graph,
        index_queue: &Timed::new(&index_queue, &times),
        parked: None,
    };
    let before = sim.stats(http).await?;
    let rss_before_mib = procfs::rss_mib(Pid::This)?;
    procfs::reset_peak_rss(Pid::This)?;
    let progress = spawn_progress(sim.clone(), http.clone(), Instant::now());
    let wall = Instant::now();
    let mut invocations = 0u64;
    loop {
        invocations += 1;
        let new_run_id = || format!("scope-bench-{}", chrono::Utc::now().timestamp_millis());
        match discover(&ports, CONNECTION, &budget(), chrono::Utc::now, new_run_id).await? {
            DiscoverOutcome::Finished(_) => break,
            DiscoverOutcome::Continue { .. } => {}
            DiscoverOutcome::Skipped { reason } => bail!("discovery skipped: {reason}"),
        }
    }
    let wall = wall.elapsed();
    progress.abort();
    let peak_mib = procfs::peak_rss_mib(Pid::This)?;
    let sim_delta = stats_delta(&sim.stats(http).await?, &before);
    let (index_jobs, index_enqueues) = index_queue.count();
    Ok(Measured {
        index_jobs,
        index_enqueues,
        invocations,
        wall,
        times: times.snapshot(),
        sim_delta,
        rss_before_mib,
        peak_mib,
    })
}

/// What the finished run recorded: its summary and the upload's result. Fails if the connection
/// has an error or a run is still open.
async fn read_back(
    state: &dyn StateStore,
    measured: Measured,
    state_writes: u64,
    state_reads: u64,
) -> anyhow::Result<Discovered> {
    let connection = state
        .connection(CONNECTION)
        .await?
        .context("the benchmark connection vanished")?;
    ensure!(
        connection.last_error.is_none(),
        "connection error: {:?}",
        connection.last_error
    );
    ensure!(
        state.discovery_checkpoint(CONNECTION).await?.is_none(),
        "a discovery run is still open"
    );
    Ok(Discovered {
        summary: connection
            .last_discovery
            .context("no finished discovery run recorded")?,
        upload: state.last_scope_upload(CONNECTION).await?,
        index_jobs: measured.index_jobs,
        index_enqueues: measured.index_enqueues,
        invocations: measured.invocations,
        wall: measured.wall,
        times: measured.times,
        state_writes,
        state_reads,
        sim_delta: measured.sim_delta,
        rss_before_mib: measured.rss_before_mib,
        peak_mib: measured.peak_mib,
    })
}

/// Checks that the in-memory store monitors exactly `expected` and nothing else.
async fn verify_drives_in_memory(state: &MemoryState, expected: &BTreeSet<String>) -> anyhow::Result<()> {
    let mut monitored = BTreeSet::new();
    let mut unmonitored = 0;
    for drive in state.all_drives().into_iter().filter(|d| d.connection == CONNECTION) {
        match drive.state {
            DriveState::Pending | DriveState::Indexing | DriveState::Indexed => {
                monitored.insert(drive.drive_id);
            }
            DriveState::Unmonitored => unmonitored += 1,
        }
    }
    if &monitored != expected || unmonitored > 0 {
        bail!(
            "the monitored drives differ from the OneDrives of the users in the groups: {} missing, {} extra, {unmonitored} unmonitored",
            expected.difference(&monitored).count(),
            monitored.difference(expected).count()
        );
    }
    Ok(())
}

/// Receives and deletes the discover job apply-scope put on the discover queue. Fails if there
/// is none for the benchmark's connection.
async fn take_discover_job(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> anyhow::Result<()> {
    let out = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .context("receiving the discover job")?;
    let mut found = false;
    for message in out.messages() {
        let job: DiscoverJob = serde_json::from_str(message.body().unwrap_or_default())
            .context("a discover queue message is not a discover job")?;
        found |= matches!(&job, DiscoverJob::Discover { connection, .. } if connection == CONNECTION);
        sqs.delete_message()
            .queue_url(queue_url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .send()
            .await
            .context("deleting the discover job")?;
    }
    ensure!(
        found,
        "apply-scope put no discover job for {CONNECTION} on the discover queue"
    );
    Ok(())
}

/// Prints the simulator's counters every [`PROGRESS_EVERY`] until aborted.
fn spawn_progress(sim: SimReady, http: reqwest::Client, since: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Ok(s) = sim.stats(&http).await {
                step(&format!(
                    "  … {:.0} s: {} member pages, {} drive lookups in {} $batch envelopes so far",
                    since.elapsed().as_secs_f64(),
                    s.group_members,
                    s.drive,
                    s.batch
                ));
            }
        }
    })
}

/// Index jobs counted without keeping them: how many, and the wrapping sum of a hash of each
/// drive id. Equal counts and sums mean the same drives, each once (a 64-bit fingerprint), at
/// no memory cost to the process whose peak RSS is measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct JobCount {
    jobs: u64,
    fingerprint: u64,
}

impl JobCount {
    fn add_drive(&mut self, drive_id: &str) {
        let mut hasher = std::hash::DefaultHasher::new();
        drive_id.hash(&mut hasher);
        self.jobs += 1;
        self.fingerprint = self.fingerprint.wrapping_add(hasher.finish());
    }
}

/// The index queue of this benchmark: counts the jobs discovery enqueues instead of sending them
/// to moto's SQS, whose SendMessage recomputes the queue's attributes by reading every message
/// it holds (moto 5.2, `Queue.attributes`): ~180,000 index jobs make each send slower than the
/// last, a cost SQS does not have.
#[derive(Debug, Default)]
struct CountingIndexQueue {
    /// The jobs, and the `enqueue_index` calls.
    count: Mutex<(JobCount, u64)>,
}

impl CountingIndexQueue {
    fn count(&self) -> (JobCount, u64) {
        *self.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl IndexQueue for CountingIndexQueue {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        let mut count = self.count.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for IndexJob::IndexDrive { drive_id, .. } in jobs {
            count.0.add_drive(drive_id);
        }
        count.1 += 1;
        Ok(())
    }
}

/// Refuses figures of an incomplete run: the upload was accepted whole, every group resolved,
/// every in-scope user seen, and each OneDrive of the users in the groups enqueued for indexing
/// once (the stored drives are checked by [`Stack::verify_drives`]).
fn verify(discovered: &Discovered, truth: &ScopeTruth, entries: u64) -> anyhow::Result<()> {
    let upload = discovered.upload.as_ref().context("no scope upload result recorded")?;
    ensure!(
        upload.accepted && upload.entries == entries && upload.rejected_rows.is_empty(),
        "the scope upload was not applied whole: {upload:?}"
    );
    let s = &discovered.summary;
    ensure!(s.scope == ScopeKind::Groups, "the run resolved a {} scope", s.scope);
    ensure!(
        s.unresolved.is_empty(),
        "{} scope entries did not resolve: {:?}",
        s.unresolved.len(),
        s.unresolved
    );
    // Distinct facts: the run's "no OneDrive" users (a set) and the monitored drives
    // (`Stack::verify_drives`).
    ensure!(
        s.users_without_drive == truth.without_drive,
        "discovery recorded {} users without a OneDrive, the groups hold {}: the run is broken, figures not recorded",
        s.users_without_drive,
        truth.without_drive
    );
    // Counters: a run that needs several invocations looks a user up again in each invocation
    // that meets them (discovery remembers users it looked up per invocation), so these may
    // exceed the truth, never fall short.
    ensure!(
        s.users_seen >= truth.users && s.drives_found >= truth.drives.len() as u64,
        "discovery saw {} users and found {} drives, the groups hold {} users with {} drives: the run is broken, figures not recorded",
        s.users_seen,
        s.drives_found,
        truth.users,
        truth.drives.len()
    );
    ensure!(
        s.drives_new == truth.drives.len() as u64 && s.drives_over_cap == 0 && s.drives_unmonitored == 0,
        "new drives: {} for {} OneDrives in scope; over the cap: {}; left the scope: {}",
        s.drives_new,
        truth.drives.len(),
        s.drives_over_cap,
        s.drives_unmonitored
    );
    let mut expected = JobCount::default();
    for id in &truth.drives {
        expected.add_drive(id);
    }
    ensure!(
        discovered.index_jobs == expected,
        "{} index jobs enqueued for {} new drives, or for other drives (each must be enqueued once)",
        discovered.index_jobs.jobs,
        truth.drives.len()
    );
    Ok(())
}

/// Refuses a baseline that did not see the whole scope or sent other requests than it claims.
fn verify_naive(naive: &NaiveScopeResolution, sent: &Stats, truth: &ScopeTruth, tenant: &Tenant) -> anyhow::Result<()> {
    ensure!(
        naive.groups == tenant.groups.len() as u64
            && naive.users == truth.users
            && naive.drives == truth.drives.len() as u64,
        "the naive resolution saw {} groups, {} users, {} drives; the truth is {}, {}, {}",
        naive.groups,
        naive.users,
        naive.drives,
        tenant.groups.len(),
        truth.users,
        truth.drives.len()
    );
    ensure!(
        naive.member_pages == tenant.member_pages,
        "the naive resolution read {} member pages, the groups' sizes make {}",
        naive.member_pages,
        tenant.member_pages
    );
    let model = ScopeRequests::naive(naive.group_lookups, naive.member_pages, naive.users).total();
    ensure!(
        graph_requests(sent) == model && sent.batch == 0,
        "the naive resolution sent {} Graph requests ({} $batch), its model says {model}",
        graph_requests(sent),
        sent.batch
    );
    Ok(())
}
