//! `filetrail local run`: the whole pipeline on the local stack, with progress bars.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use filetrail_aws::config::AwsResources;
use filetrail_aws::state::DynamoStateStore;
use filetrail_core::model::DriveState;
use filetrail_core::ports::{ConnectionStore, DiscoveryRunStore, DriveStore};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::runner::{InvocationOutcome, RunReport, Runner, RunnerEvent, RunnerOptions, ScheduleMode};
use super::{DEFAULT_STACK_NAME, STACK_NAME_VAR, provision_local};
use crate::pipeline::{DISCOVER_FUNCTION, EXPORT_FUNCTION, POLL_ACTIVITY_FUNCTION, local_functions};
use filetrail_runtime::settings::MAX_PAGES_VAR;

/// `filetrail local run`: drive the functions of template.yaml on the local stack.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The SAM template the stack was provisioned from.
    #[arg(long, default_value = "template.yaml")]
    pub template: PathBuf,
    #[arg(long, env = STACK_NAME_VAR, default_value = DEFAULT_STACK_NAME)]
    pub stack_name: String,
    /// The local AWS endpoint (moto).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: String,
    /// Fire every schedule of template.yaml once (discovery, the audit feed's poll, then the
    /// export), run until every queue is drained, then stop. Without it the schedules fire at
    /// their rates until Ctrl-C.
    #[arg(long)]
    pub until_idle: bool,
    /// Stop an invocation after this many Graph pages and continue in a new one (exercises the
    /// checkpoints; Lambda's deadline does this in AWS).
    #[arg(long)]
    pub max_pages_per_invocation: Option<u64>,
    /// Invocations of each function at once.
    #[arg(long, default_value_t = 2)]
    pub concurrency: usize,
    /// No progress bars (logs only).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Default)]
struct Tally {
    invocations: AtomicU64,
    failed: AtomicU64,
}

/// Runs the local pipeline; returns when idle (`--until-idle`) or on Ctrl-C.
pub async fn run_command(args: &RunArgs) -> anyhow::Result<RunReport> {
    let (sdk, template, provisioned) = provision_local(&args.template, &args.endpoint_url, &args.stack_name).await?;
    let mut overrides = HashMap::new();
    if let Some(n) = args.max_pages_per_invocation {
        overrides.insert(MAX_PAGES_VAR.to_owned(), n.to_string());
    }
    let functions = local_functions(&sdk, &template, &provisioned, &overrides)?;

    let tally = Arc::new(Tally::default());
    let sink_tally = tally.clone();
    let options = RunnerOptions {
        schedules: if args.until_idle {
            ScheduleMode::OnDemand
        } else {
            ScheduleMode::Emulate
        },
        until_idle: args.until_idle.then_some(Duration::from_secs(2)),
        concurrency: args.concurrency.max(1),
        on_event: Some(Arc::new(move |e: &RunnerEvent| {
            if let RunnerEvent::Finished { outcome, .. } = e {
                sink_tally.invocations.fetch_add(1, Ordering::Relaxed);
                if !matches!(outcome, InvocationOutcome::Succeeded) {
                    sink_tally.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })),
        ..RunnerOptions::default()
    };
    let runner = Runner::new(&sdk, &template, &provisioned, functions, options)?;
    let handle = runner.handle();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            handle.stop();
        }
    });

    let settings = provisioned.cli_env(&template)?.into_iter().collect::<HashMap<_, _>>();
    let state = DynamoStateStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        AwsResources::from_env_map(&settings)?.require_state_table()?,
    );
    let progress = (!args.no_progress).then(|| Progress::new(tally.clone()));
    if args.until_idle {
        runner
            .fire_schedule(DISCOVER_FUNCTION)
            .await
            .context("firing the discovery schedule")?;
        runner
            .fire_schedule(POLL_ACTIVITY_FUNCTION)
            .await
            .context("firing the audit feed's poll")?;
        // Exports the insertion hours that are settled (none yet on a fresh stack).
        runner
            .fire_schedule(EXPORT_FUNCTION)
            .await
            .context("firing the export schedule")?;
    }
    let report = match &progress {
        Some(p) => {
            let run = runner.run();
            tokio::pin!(run);
            loop {
                tokio::select! {
                    report = &mut run => break report,
                    () = tokio::time::sleep(Duration::from_millis(400)) => p.refresh(&state).await,
                }
            }
        }
        None => runner.run().await,
    };
    if let Some(p) = progress {
        p.refresh(&state).await;
        p.finish();
    }
    Ok(report)
}

/// Three bars: discovery, drives indexed of drives monitored, invocations.
struct Progress {
    _multi: MultiProgress,
    discovery: ProgressBar,
    drives: ProgressBar,
    invocations: ProgressBar,
    tally: Arc<Tally>,
}

impl Progress {
    fn new(tally: Arc<Tally>) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let spinner = ProgressStyle::with_template("{spinner:.cyan} {prefix:<12} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = ProgressStyle::with_template("{spinner:.cyan} {prefix:<12} [{bar:30.green/white}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let discovery = multi.add(
            ProgressBar::new_spinner()
                .with_style(spinner.clone())
                .with_prefix("discovery"),
        );
        let drives = multi.add(ProgressBar::new(0).with_style(bar).with_prefix("indexing"));
        let invocations = multi.add(
            ProgressBar::new_spinner()
                .with_style(spinner)
                .with_prefix("invocations"),
        );
        for b in [&discovery, &drives, &invocations] {
            b.enable_steady_tick(Duration::from_millis(120));
        }
        Self {
            _multi: multi,
            discovery,
            drives,
            invocations,
            tally,
        }
    }

    /// Reads the counts from DynamoDB (the same numbers `filetrail status` shows).
    async fn refresh(&self, state: &DynamoStateStore) {
        let Ok(connections) = state.connections().await else {
            return;
        };
        let (mut users, mut found, mut without, mut running) = (0, 0, 0, false);
        let (mut monitored, mut indexed) = (0u64, 0u64);
        for c in &connections {
            if let Ok(Some(cp)) = state.discovery_checkpoint(&c.id).await {
                running = true;
                users += cp.users_seen;
                found += cp.drives_found;
                without += cp.users_without_drive;
            } else if let Some(last) = &c.last_discovery {
                users += last.users_seen;
                found += last.drives_found;
                without += last.users_without_drive;
            }
            // Later states first: a drive moving on between two counts is then missed once
            // rather than counted twice.
            for s in [DriveState::Indexed, DriveState::Indexing, DriveState::Pending] {
                let n = state.count_drives(&c.id, s).await.unwrap_or(0);
                monitored += n;
                if s == DriveState::Indexed {
                    indexed += n;
                }
            }
        }
        let verb = if running { "in progress" } else { "done" };
        self.discovery.set_message(format!(
            "{verb}: {users} users, {found} OneDrives, {without} users without a OneDrive"
        ));
        self.drives.set_length(monitored);
        self.drives.set_position(indexed);
        self.drives.set_message("drives indexed");
        self.invocations.set_message(format!(
            "{} handler invocations, {} with failures (retried)",
            self.tally.invocations.load(Ordering::Relaxed),
            self.tally.failed.load(Ordering::Relaxed)
        ));
    }

    fn finish(self) {
        self.discovery.finish();
        self.drives.finish();
        self.invocations.finish();
    }
}
