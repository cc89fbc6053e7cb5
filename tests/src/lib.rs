//! The local stack for end-to-end scenarios: moto server as AWS, m365-sim as Microsoft 365, the
//! resources provisioned from template.yaml, and the real handlers driven by the local runner.
//!
//! Ground truth comes from the simulator's tenant model, computed without HTTP, so a scenario
//! compares what the pipeline stored with what the tenant holds, item by item.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod interleave;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_dynamodb::types::AttributeValue;
use filetrail_aws::moto::MotoServer;
use filetrail_aws::provision::{Provisioned, provision};
use filetrail_aws::secrets::{AppSecret, Secret, SecretsStore};
use filetrail_aws::state::DynamoStateStore;
use filetrail_aws::template::Template;
use filetrail_cli::connection::{self, NewConnection};
use filetrail_cli::local::runner::{RunReport, Runner, RunnerOptions, ScheduleMode, StopReason};
use filetrail_cli::pipeline::{
    APPLY_SCOPE_FUNCTION, DISCOVER_FUNCTION, INGEST_ACTIVITY_FUNCTION, POLL_ACTIVITY_FUNCTION, local_functions,
};
use filetrail_core::events::EventRecord;
use filetrail_core::model::{Connection, ConnectionKind, DriveState, Endpoints};
use filetrail_core::ports::{ConnectionStore, DriveStore};
use m365_sim::{SimConfig, SimHandle};

/// The connection id scenarios register.
pub const CONNECTION: &str = "contoso";

static STACKS: AtomicU64 = AtomicU64::new(0);

/// The repository root (where template.yaml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// One scenario's stack. Dropping it stops moto and the simulator.
pub struct Stack {
    pub moto: MotoServer,
    pub sim: SimHandle,
    pub sdk: aws_config::SdkConfig,
    pub template: Template,
    pub provisioned: Provisioned,
}

/// One item as a user would check it: where it is and what it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Item {
    pub drive_id: String,
    pub item_id: String,
    pub path: String,
    pub is_folder: bool,
    pub size: u64,
}

impl Stack {
    /// Starts moto and the simulator and provisions template.yaml.
    pub async fn start(sim: SimConfig) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .try_init();
        let moto = MotoServer::start().await?;
        let sdk = moto.sdk_config().await;
        let template = Template::from_path(repo_root().join("template.yaml"))?;
        let stack_name = format!("e2e{}", STACKS.fetch_add(1, Ordering::Relaxed));
        let provisioned = provision(&sdk, &template, &stack_name).await?;
        let sim = m365_sim::spawn(sim).await?;
        Ok(Self {
            moto,
            sim,
            sdk,
            template,
            provisioned,
        })
    }

    fn env_of(&self, function: &str) -> HashMap<String, String> {
        let spec = self.template.function(function).expect("function in template");
        self.provisioned.resolve_env(spec).expect("environment resolves")
    }

    /// The provisioned queue `id` (its logical id in template.yaml, e.g. `HashQueue`).
    pub fn queue(&self, id: &str) -> filetrail_aws::queue::SqsQueue {
        let url = self.provisioned.queue_url(id).expect("queue provisioned").to_owned();
        filetrail_aws::queue::SqsQueue::new(aws_sdk_sqs::Client::new(&self.sdk), url)
    }

    pub fn state(&self) -> DynamoStateStore {
        let table = self.env_of(DISCOVER_FUNCTION)["FILETRAIL_STATE_TABLE"].clone();
        DynamoStateStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), table)
    }

    /// Where the stack keeps connection secrets (`filetrail/{stack}/`), as the CLI and the
    /// functions' policies have it.
    pub fn secret_prefix(&self) -> String {
        self.env_of(DISCOVER_FUNCTION)["FILETRAIL_SECRET_PREFIX"].clone()
    }

    fn secrets(&self) -> SecretsStore {
        SecretsStore::new(aws_sdk_secretsmanager_client(&self.sdk), self.secret_prefix())
    }

    /// Registers the simulator's tenant as the cloud connection [`CONNECTION`] with `secret`.
    pub async fn register(&self, secret: &str) -> anyhow::Result<Connection> {
        let new = NewConnection {
            id: CONNECTION.to_owned(),
            kind: ConnectionKind::Cloud,
            tenant_id: self.sim.tenant_id().to_owned(),
            client_id: self.sim.client_id().to_owned(),
            cloud: "custom".to_owned(),
            endpoints: Some(Endpoints {
                login: self.sim.login_url(),
                graph: self.sim.graph_url(),
            }),
            trusted_domains: vec![],
            drive_cap: connection::DEFAULT_DRIVE_CAP,
        };
        let state = self.state();
        connection::check_unique(&state, &new).await?;
        let secret_id = self.set_secret(secret).await?;
        let record = connection::record(&new, secret_id);
        state.put_connection(&record).await?;
        Ok(record)
    }

    /// Stores a new client secret for [`CONNECTION`] (as `filetrail connection set-secret` would).
    pub async fn set_secret(&self, secret: &str) -> anyhow::Result<String> {
        Ok(self
            .secrets()
            .put_app_secret(
                CONNECTION,
                &AppSecret {
                    client_secret: Secret::new(secret),
                },
            )
            .await?)
    }

    /// A runner over the real handlers, schedules on demand, stopping when the queues are idle.
    /// `env` overrides function settings (e.g. pages per invocation).
    pub fn runner(&self, env: &[(&str, &str)], tune: impl FnOnce(&mut RunnerOptions)) -> anyhow::Result<Runner> {
        let mut overrides: HashMap<String, String> =
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        // Re-read secrets at once in scenarios that rotate them.
        overrides
            .entry("FILETRAIL_CREDENTIALS_TTL_SECS".to_owned())
            .or_insert_with(|| "0".to_owned());
        let functions = local_functions(&self.sdk, &self.template, &self.provisioned, &overrides)?;
        let mut options = RunnerOptions {
            schedules: ScheduleMode::OnDemand,
            until_idle: Some(Duration::from_millis(1500)),
            // Short, as a crashed invocation's messages stay invisible this long (as in AWS).
            invocation_timeout: Some(Duration::from_secs(20)),
            visibility_timeout: Some(Duration::from_secs(20)),
            concurrency: 2,
            ..RunnerOptions::default()
        };
        tune(&mut options);
        Ok(Runner::new(
            &self.sdk,
            &self.template,
            &self.provisioned,
            functions,
            options,
        )?)
    }

    /// Polls the feed and runs the pipeline until idle, until a poll has run after every blob the
    /// simulator published became available (windows end on a whole second, so a blob is listed
    /// by the first poll at least a second after it became available).
    ///
    /// # Errors
    /// When a poll fails, a run does not end idle, or the feed never catches up.
    pub async fn poll_until_caught_up(&self, runner: &Runner) -> anyhow::Result<()> {
        let settle = chrono::Duration::milliseconds(1_500);
        for _ in 0..10 {
            let last_available = self.sim.audit().blobs().iter().map(|b| b.content_created).max();
            let started = chrono::Utc::now();
            runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await?;
            let report = runner.run().await;
            anyhow::ensure!(
                report.reason == StopReason::Idle,
                "the run stopped: {:?}",
                report.reason
            );
            match last_available {
                Some(t) if started < t + settle => {
                    tokio::time::sleep((t + settle - chrono::Utc::now()).to_std().unwrap_or_default()).await;
                }
                _ => return Ok(()),
            }
        }
        anyhow::bail!("the feed never caught up")
    }

    /// Fires the discovery schedule, then runs until the queues are idle.
    pub async fn discover_and_index(&self, runner: &Runner) -> anyhow::Result<RunReport> {
        runner
            .fire_schedule(DISCOVER_FUNCTION)
            .await
            .context("firing the discovery schedule")?;
        Ok(runner.run().await)
    }

    /// Puts an index job for `drive_id` on the index queue, as discovery or a continuation would.
    pub async fn enqueue_index(&self, drive_id: &str) -> anyhow::Result<()> {
        use filetrail_core::ports::IndexQueue as _;
        let url = self.env_of("IndexDriveFunction")["FILETRAIL_INDEX_QUEUE_URL"].clone();
        let queue = filetrail_aws::queue::SqsQueue::new(aws_sdk_sqs::Client::new(&self.sdk), url);
        let job = filetrail_core::jobs::IndexJob::IndexDrive {
            connection: CONNECTION.to_owned(),
            drive_id: drive_id.to_owned(),
        };
        Ok(queue.enqueue_index(&[job]).await?)
    }

    /// Every inventory row in the table (a scan: the test checks there is nothing extra), hash
    /// siblings left out.
    pub async fn inventory(&self) -> anyhow::Result<Vec<Item>> {
        let table = self.env_of("IndexDriveFunction")["FILETRAIL_INVENTORY_TABLE"].clone();
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(&table)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for row in page.items() {
                let s = |k: &str| row.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
                // Hash outcomes and sharing states are sibling items (`~hash#…`, `~share#…`),
                // not inventory rows.
                if s("item_id").starts_with(filetrail_aws::inventory::SIBLING_BOUND) {
                    continue;
                }
                let n = |k: &str| {
                    row.get(k)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                items.push(Item {
                    drive_id: s("drive_id"),
                    item_id: s("item_id"),
                    path: s("path"),
                    is_folder: matches!(row.get("is_folder"), Some(AttributeValue::Bool(true))),
                    size: n("size"),
                });
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        items.sort();
        Ok(items)
    }

    /// The deployment bucket (scope uploads and their results).
    pub fn objects(&self) -> filetrail_aws::BucketObjects {
        let bucket = self.env_of(APPLY_SCOPE_FUNCTION)["FILETRAIL_BUCKET"].clone();
        filetrail_aws::BucketObjects::new(filetrail_aws::s3_client(&self.sdk), bucket)
    }

    /// Ids of the connection's drives in `states`, from the state table's index.
    pub async fn drives_in(&self, states: &[DriveState]) -> anyhow::Result<BTreeSet<String>> {
        let state = self.state();
        let mut ids = BTreeSet::new();
        for s in states {
            let mut cursor = None;
            loop {
                let (page, next) = state.drive_ids_in_state(CONNECTION, *s, cursor).await?;
                ids.extend(page);
                match next {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(ids)
    }

    /// Ids of the drives filetrail monitors (pending, indexing or indexed).
    pub async fn monitored_drives(&self) -> anyhow::Result<BTreeSet<String>> {
        self.drives_in(&[DriveState::Pending, DriveState::Indexing, DriveState::Indexed])
            .await
    }

    /// The events table, as the functions that write it see it.
    pub fn event_store(&self) -> filetrail_aws::events::DynamoEventStore {
        let table = self.env_of(INGEST_ACTIVITY_FUNCTION)["FILETRAIL_EVENTS_TABLE"].clone();
        filetrail_aws::events::DynamoEventStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), table)
    }

    /// Every event in the table (a scan: the test checks there is nothing extra), by key.
    pub async fn events(&self) -> anyhow::Result<BTreeMap<String, EventRecord>> {
        let store = self.event_store();
        let client = aws_sdk_dynamodb::Client::new(&self.sdk);
        let mut keys = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(store.table_name())
                .projection_expression("event_key")
                .set_exclusive_start_key(start)
                .send()
                .await?;
            keys.extend(
                page.items()
                    .iter()
                    .filter_map(|row| row.get("event_key").and_then(|v| v.as_s().ok()).cloned()),
            );
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        // Destination entries of moves and renames and target entries of shares are index
        // entries, not events; each must belong to a stored event.
        // Day markers are index entries of days, not of events.
        let keys = keys.into_iter().filter(|k| !filetrail_aws::events::is_day_marker(k));
        let (entries, keys): (Vec<String>, Vec<String>) =
            keys.partition(|k| filetrail_aws::events::event_key_of(k) != k);
        let mut events = BTreeMap::new();
        for chunk in keys.chunks(100) {
            for event in store.events_by_key(chunk).await? {
                events.insert(event.key(), event);
            }
        }
        anyhow::ensure!(
            events.len() == keys.len(),
            "{} keys, {} events read",
            keys.len(),
            events.len()
        );
        for entry in &entries {
            let event = filetrail_aws::events::event_key_of(entry);
            anyhow::ensure!(events.contains_key(event), "index entry {entry} without its event");
        }
        Ok(events)
    }

    /// The inventory table, as the functions that write it see it.
    pub fn inventory_store(&self) -> filetrail_aws::inventory::DynamoInventoryStore {
        let table = self.env_of("IndexDriveFunction")["FILETRAIL_INVENTORY_TABLE"].clone();
        filetrail_aws::inventory::DynamoInventoryStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), table)
    }

    /// Messages left on each dead-letter queue.
    pub async fn dead_letters(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut out = BTreeMap::new();
        for id in self.template.queues.keys().filter(|id| id.contains("DeadLetter")) {
            let url = self.provisioned.queue_url(id).context("queue provisioned")?;
            let attrs = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await?;
            let n = attrs
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            out.insert(id.clone(), n);
        }
        Ok(out)
    }
}

fn aws_sdk_secretsmanager_client(sdk: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(sdk)
}

/// What the simulator's tenant holds in its users' OneDrives (roots excluded), computed from the
/// tenant model without HTTP.
pub fn expected_inventory(sim: &SimHandle) -> Vec<Item> {
    let tenant = sim.tenant();
    let mut items = Vec::new();
    for user in tenant.users() {
        let Some(drive) = tenant.drive_of_user(user.index) else {
            continue;
        };
        for item in tenant.drive_items(&drive.id) {
            if item.is_root {
                continue;
            }
            items.push(Item {
                drive_id: drive.id.clone(),
                item_id: item.id.clone(),
                path: item.path.clone(),
                is_folder: item.is_folder,
                size: item.size,
            });
        }
    }
    items.sort();
    items
}

/// The ids of the simulator's team-site libraries (never to be monitored).
pub fn team_site_drive_ids(sim: &SimHandle) -> BTreeSet<String> {
    sim.tenant().team_site_drives().into_iter().map(|d| d.id).collect()
}

/// A shared counter a runner's event sink can bump (pages or invocations seen).
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}

/// The OneDrive ids of the simulator's users whose user principal names are `upns` (users
/// without a OneDrive have none), from the tenant model.
pub fn drives_of_users<'a>(sim: &SimHandle, upns: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let tenant = sim.tenant();
    upns.into_iter()
        .filter_map(|upn| tenant.find_user(upn))
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect()
}
