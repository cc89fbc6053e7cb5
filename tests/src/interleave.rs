//! Runs the pipeline under seeded random interleavings, to show that the order in which the
//! schedules fire and SQS delivers never changes what is recorded.
//!
//! One run is a fresh simulated tenant (m365-sim over real HTTP, the production Graph and
//! Management Activity clients) and fresh in-memory stores, driven by the same use cases the
//! Lambda handlers call (discover, poll, ingest, index, hash), wired as the handlers wire them.
//! Between the schedules firing (discovery fans out onto its queue; the poll lists and
//! enqueues) a seeded scheduler picks which queued message runs next, anywhere in its queue
//! (SQS does not keep order), and how it ends: acknowledged, delivered again after it ran
//! (a lost delete), or killed between two of its operations (a worker dying mid-batch; the
//! message comes back after its visibility timeout), or run at the same time as another message. A message received
//! more than [`MAX_RECEIVES`] times goes to the dead letters, which a run must not have.
//!
//! The clock is virtual: the simulator's audit clock and every `now` the use cases see move
//! together, so content becomes available and leases lapse without waiting. When everything
//! queued is done, the schedules keep firing (as EventBridge does) until nothing changes, and
//! the run's [`Outcome`] is what an analyst would see: the events with their items and digests,
//! the inventory, the exposure report (who can reach each shared file), the records dropped and
//! parked.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use filetrail_core::activity::ResolvePorts;
use filetrail_core::activity::ingest::{IngestPorts, ingest_blob};
use filetrail_core::activity::poll::{PollPorts, PollSettings, poll_connection};
use filetrail_core::audit::TrustedDomains;
use filetrail_core::budget::Budget;
use filetrail_core::budget::Deadline;
use filetrail_core::digest::HasherTuning;
use filetrail_core::discover::{DiscoverOutcome, DiscoverPorts, ParkedWork, discover};
use filetrail_core::events::HashOutcome;
use filetrail_core::exposure::SharingPorts;
use filetrail_core::hashing::{ChunkSink, FileContent, HashPorts, ItemVersion, KeptVersion, StreamEnd, hash_file};
use filetrail_core::index::{IndexOutcome, IndexPorts, index_drive};
use filetrail_core::jobs::{BlobJob, DiscoverJob, HashJob, IndexJob};
use filetrail_core::memory::{MemoryEvents, MemoryInventory, MemoryQuarantine, MemoryState, yield_point};
use filetrail_core::model::{Connection, ConnectionKind, ConnectionState, DriveState, Endpoints};
use filetrail_core::ports::{
    ActivityState as _, BlobQueue, ConnectionStore as _, DiscoverQueue, HashQueue, IndexQueue, InventoryHashes as _,
    PortResult, ScopeStore as _, SharingStore as _,
};
use filetrail_core::scope::Scope;
use filetrail_m365::{
    ActivityClient, ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client,
};
use m365_sim::{ActivityOutcome, SimConfig, SimHandle};

/// Receives after which a message goes to the dead letters (the template's `maxReceiveCount`).
pub const MAX_RECEIVES: u32 = 5;
/// The connection every run registers.
pub const CONNECTION: &str = "contoso";

/// A killed delivery dies within this many polls of its future: enough to reach the last
/// operations of an ingest or an index round, so any point between two writes can be the one.
const KILL_WITHIN_POLLS: usize = 80;

/// Polls `work` at most `polls` times, then drops it unfinished (`None`): a worker that dies
/// between two of its operations.
async fn die_after<F: std::future::Future>(work: F, polls: usize) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        left -= 1;
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

/// A small deterministic generator (SplitMix64): one seed, one interleaving.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One queued message.
#[derive(Debug, Clone)]
struct Message {
    job: Job,
    receives: u32,
    /// Invisible until this virtual time (`DelaySeconds`).
    not_before: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
enum Job {
    Discover(DiscoverJob),
    Index(IndexJob),
    Blob(BlobJob),
    Hash(HashJob),
}

/// The work queues: every enqueue of every use case lands here.
#[derive(Default)]
pub struct Queues {
    messages: Mutex<Vec<Message>>,
    dead: Mutex<Vec<Job>>,
    clock: Mutex<Option<DateTime<Utc>>>,
}

impl Queues {
    fn now(&self) -> DateTime<Utc> {
        self.clock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Utc::now)
    }

    fn push(&self, jobs: impl IntoIterator<Item = Job>, delay: Duration) {
        let not_before = self.now() + delay;
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        messages.extend(jobs.into_iter().map(|job| Message {
            job,
            receives: 0,
            not_before,
        }));
    }

    fn len(&self) -> usize {
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes a random visible message (SQS does not keep order).
    fn take(&self, rng: &mut Rng, now: DateTime<Utc>) -> Option<Message> {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        let visible: Vec<usize> = (0..messages.len()).filter(|i| messages[*i].not_before <= now).collect();
        if visible.is_empty() {
            return None;
        }
        Some(messages.remove(visible[rng.below(visible.len())]))
    }

    /// Puts a message back after a delivery that failed (`failed`: counts toward the dead
    /// letters) or that the run disturbed (killed, delete lost: does not, so the rates chosen
    /// for disorder never dead-letter a message by chance alone).
    fn back(&self, mut message: Message, after: Duration, failed: bool) {
        message.receives += u32::from(failed);
        if message.receives >= MAX_RECEIVES {
            self.dead.lock().unwrap_or_else(|e| e.into_inner()).push(message.job);
            return;
        }
        message.not_before = self.now() + after;
        self.messages.lock().unwrap_or_else(|e| e.into_inner()).push(message);
    }

    /// When the next invisible message becomes visible.
    fn next_visible(&self) -> Option<DateTime<Utc>> {
        let messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        messages.iter().map(|m| m.not_before).min()
    }
}

#[async_trait]
impl DiscoverQueue for Queues {
    async fn enqueue_discover(&self, jobs: &[DiscoverJob]) -> PortResult<()> {
        yield_point().await;
        self.push(jobs.iter().cloned().map(Job::Discover), Duration::zero());
        Ok(())
    }
}

#[async_trait]
impl IndexQueue for Queues {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        yield_point().await;
        self.push(jobs.iter().cloned().map(Job::Index), Duration::zero());
        Ok(())
    }
}

#[async_trait]
impl BlobQueue for Queues {
    async fn enqueue_blobs(&self, jobs: &[BlobJob]) -> PortResult<()> {
        yield_point().await;
        self.push(jobs.iter().cloned().map(Job::Blob), Duration::zero());
        Ok(())
    }
}

#[async_trait]
impl HashQueue for Queues {
    async fn enqueue_hashes(&self, jobs: &[HashJob]) -> PortResult<()> {
        yield_point().await;
        self.push(jobs.iter().cloned().map(Job::Hash), Duration::zero());
        Ok(())
    }

    async fn enqueue_hashes_after(&self, jobs: &[HashJob], delay: StdDuration) -> PortResult<()> {
        yield_point().await;
        let delay = Duration::from_std(delay).unwrap_or_else(|_| Duration::zero());
        self.push(jobs.iter().cloned().map(Job::Hash), delay);
        Ok(())
    }
}

/// The Graph client as hash-file's content port, noting each download it starts: the file
/// version (cTag, or `version:{id}` for a previous one) by item.
struct DownloadLog<'a> {
    graph: &'a GraphClient,
    log: &'a Mutex<Vec<(String, String)>>,
}

impl DownloadLog<'_> {
    fn note(&self, item: &str, version: String) {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((item.to_owned(), version));
    }
}

#[async_trait]
impl FileContent for DownloadLog<'_> {
    async fn item_version(&self, drive_id: &str, item_id: &str) -> PortResult<Option<ItemVersion>> {
        FileContent::item_version(self.graph, drive_id, item_id).await
    }

    async fn stream_content(
        &self,
        drive_id: &str,
        item_id: &str,
        expected: &ItemVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        if sink.offset() == 0 {
            self.note(item_id, expected.ctag.clone().unwrap_or_default());
        }
        FileContent::stream_content(self.graph, drive_id, item_id, expected, sink, budget).await
    }

    async fn versions(&self, drive_id: &str, item_id: &str) -> PortResult<Option<Vec<KeptVersion>>> {
        FileContent::versions(self.graph, drive_id, item_id).await
    }

    async fn stream_previous(
        &self,
        drive_id: &str,
        item_id: &str,
        version: &KeptVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd> {
        if sink.offset() == 0 {
            self.note(item_id, format!("version:{}", version.id));
        }
        FileContent::stream_previous(self.graph, drive_id, item_id, version, sink, budget).await
    }
}

/// What a run leaves that an analyst would see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Event key → its item and its hash outcome (`hashed {cTag} {SHA-256}`, or why none).
    pub events: BTreeMap<String, (Option<String>, String)>,
    /// (drive, item) → path, for every inventory row.
    pub inventory: BTreeMap<(String, String), String>,
    /// (drive, item) → SHA-256 recorded on the inventory.
    pub digests: BTreeMap<(String, String), String>,
    /// (drive, item) → its grants as the exposure report lists them (`reach`, link or direct,
    /// roles, grantees with inside/outside), for every shared item. When filetrail first saw a
    /// grant (`since`) is left out: it is the time of whichever saw it first, the sharing
    /// event or the delta round, and so depends on the order by design.
    pub sharing: BTreeMap<(String, String), Vec<String>>,
    /// Items the exposure report lists as reachable from outside.
    pub exposed: BTreeSet<(String, String)>,
    /// Drives by state.
    pub drives: BTreeMap<String, DriveState>,
    /// Records dropped, by reason, and parked, summed over the blobs.
    pub dropped: BTreeMap<String, u64>,
    pub parked: u64,
    /// Messages that failed [`MAX_RECEIVES`] times.
    pub dead_letters: usize,
    /// Event key → when it happened and its operation: to explain a difference, not compared.
    pub timeline: NotCompared<BTreeMap<String, String>>,
}

/// A part of [`Outcome`] kept to explain differences, equal whatever it holds.
#[derive(Debug, Clone, Default)]
pub struct NotCompared<T>(pub T);

impl<T> PartialEq for NotCompared<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for NotCompared<T> {}

impl Outcome {
    /// The file versions the events carry digests of: (item, cTag).
    pub fn hashed_versions(&self) -> BTreeSet<(String, String)> {
        self.events
            .values()
            .filter_map(|(item, hash)| {
                let (ctag, _) = hash.strip_prefix("hashed ")?.split_once(' ')?;
                Some((item.clone()?, ctag.to_owned()))
            })
            .collect()
    }
}

/// The event keys the audit records of injected `operations` call for: those of the OneDrives
/// `drives` (every drive when `None`) whose operation filetrail records.
pub fn expected_event_keys(operations: &[ActivityOutcome], drives: Option<&BTreeSet<String>>) -> BTreeSet<String> {
    let not_recorded: BTreeSet<&str> = filetrail_core::audit::operations::NOT_RECORDED
        .iter()
        .map(|(op, _)| *op)
        .collect();
    operations
        .iter()
        .filter(|op| drives.is_none_or(|d| d.contains(&op.drive_id)))
        .flat_map(|op| op.audit_records.iter().flatten())
        .filter(|r| !not_recorded.contains(r["Operation"].as_str().unwrap_or_default()))
        .map(|r| format!("{CONNECTION}#{}", r["Id"].as_str().unwrap_or_default()))
        .collect()
}

/// How a run may be disturbed.
#[derive(Debug, Clone, Copy)]
pub struct Disorder {
    /// Percent of deliveries killed part way (the message comes back).
    pub kill: u64,
    /// Percent of deliveries whose delete is lost (the message comes back after it ran).
    pub redeliver: u64,
    /// Percent of deliveries run at the same time as other messages.
    pub concurrent: u64,
    /// How many messages run at once when they do (workers of one function).
    pub width: usize,
}

impl Default for Disorder {
    fn default() -> Self {
        Self {
            kill: 10,
            redeliver: 10,
            concurrent: 20,
            width: 2,
        }
    }
}

/// One run's world: the simulator, the stores, the clients and the queues.
pub struct World {
    pub sim: SimHandle,
    pub state: MemoryState,
    pub events: MemoryEvents,
    pub inventory: MemoryInventory,
    pub quarantine: MemoryQuarantine,
    pub queues: Queues,
    pub graph: GraphClient,
    pub feed: ActivityClient,
    pub connection: Connection,
    /// Every download hash-file started: (item, version).
    pub downloads: Mutex<Vec<(String, String)>>,
    now: Mutex<DateTime<Utc>>,
}

impl World {
    /// A fresh tenant and stores, the connection registered with `scope` (none: every user).
    ///
    /// # Errors
    /// When the simulator does not start or a client cannot be built.
    pub async fn start(config: SimConfig, scope: Option<Scope>) -> anyhow::Result<Self> {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
            .try_init();
        let sim = m365_sim::spawn(config).await?;
        let endpoints = Endpoints {
            login: sim.login_url(),
            graph: sim.graph_url(),
        };
        let cloud = Cloud::for_connection("custom", Some(&endpoints))?;
        let credentials = Credentials {
            tenant_id: sim.tenant_id().to_owned(),
            client_id: sim.client_id().to_owned(),
            secret: ClientSecret::new(sim.client_secret()),
        };
        let http = http_client(HttpTimeouts::default())?;
        let graph = GraphClient::connect(
            http.clone(),
            &cloud,
            credentials.clone(),
            CONNECTION,
            RetryPolicy::default(),
        )?;
        let feed = ActivityClient::connect(http, &cloud, credentials, CONNECTION, RetryPolicy::default())?;
        let now = sim.audit().now();
        let connection = Connection {
            id: CONNECTION.into(),
            kind: ConnectionKind::Cloud,
            tenant_id: sim.tenant_id().to_owned(),
            client_id: sim.client_id().to_owned(),
            secret_id: format!("filetrail/{CONNECTION}/app"),
            cloud: "custom".into(),
            endpoints: Some(endpoints),
            trusted_domains: vec![sim.tenant_domain().to_owned()],
            drive_cap: 1_000_000,
            state: ConnectionState::Active,
            last_error: None,
            last_discovery: None,
            created_at: now,
            write_app: None,
        };
        let state = MemoryState::default();
        state.put_connection(&connection).await?;
        if let Some(scope) = scope {
            state.replace_scope(CONNECTION, &scope).await?;
        }
        let queues = Queues::default();
        *queues.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        Ok(Self {
            sim,
            state,
            events: MemoryEvents::default(),
            inventory: MemoryInventory::default(),
            quarantine: MemoryQuarantine::default(),
            queues,
            graph,
            feed,
            connection,
            downloads: Mutex::default(),
            now: Mutex::new(now),
        })
    }

    /// The virtual time.
    pub fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the virtual time (and the simulator's audit clock) forward.
    pub fn advance(&self, by: Duration) {
        if by <= Duration::zero() {
            return;
        }
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
        *self.queues.clock.lock().unwrap_or_else(|e| e.into_inner()) = Some(*now);
        self.sim.audit().advance_clock(by.to_std().unwrap_or_default());
    }

    /// The discovery schedule: one discover message per active cloud connection.
    pub async fn fire_discovery(&self) -> anyhow::Result<()> {
        self.queues
            .enqueue_discover(&[DiscoverJob::Discover {
                connection: CONNECTION.into(),
                reason: "schedule".into(),
            }])
            .await?;
        Ok(())
    }

    /// The audit-feed schedule: one poll of the connection (lists and enqueues blobs).
    pub async fn fire_poll(&self) -> anyhow::Result<()> {
        let ports = PollPorts {
            connections: &self.state,
            activity: &self.state,
            feed: &self.feed,
            queue: &self.queues,
        };
        let connection = self
            .state
            .connection(CONNECTION)
            .await?
            .unwrap_or_else(|| self.connection.clone());
        poll_connection(
            &ports,
            &connection,
            &PollSettings::default(),
            &Deadline::unlimited(),
            self.now(),
        )
        .await?;
        Ok(())
    }

    /// Runs one message as its function would; `Ok(true)` when it should be acknowledged.
    async fn deliver(&self, job: &Job, rng_units: Option<u64>) -> anyhow::Result<bool> {
        let now = self.now();
        let budget = Deadline::unlimited().with_max_units(rng_units);
        match job {
            Job::Discover(DiscoverJob::DiscoverAll) => self.fire_discovery().await.map(|()| true),
            Job::Discover(DiscoverJob::Discover { connection, .. }) => {
                let ports = DiscoverPorts {
                    state: &self.state,
                    directory: &self.graph,
                    finder: &self.graph,
                    index_queue: &self.queues,
                    parked: Some(ParkedWork {
                        activity: &self.state,
                        blob_queue: &self.queues,
                    }),
                };
                let run = format!("run-{}", now.timestamp_nanos_opt().unwrap_or_default());
                match discover(&ports, connection, &budget, || now, || run.clone()).await? {
                    DiscoverOutcome::Continue { .. } => {
                        self.queues
                            .enqueue_discover(&[DiscoverJob::Discover {
                                connection: connection.clone(),
                                reason: "continuation".into(),
                            }])
                            .await?;
                    }
                    DiscoverOutcome::Finished(_) | DiscoverOutcome::Skipped { .. } => {}
                }
                Ok(true)
            }
            Job::Index(index @ IndexJob::IndexDrive { connection, drive_id }) => {
                let ports = IndexPorts {
                    drives: &self.state,
                    inventory: &self.inventory,
                    delta: &self.graph,
                    sharing: Some(SharingPorts {
                        reader: &self.graph,
                        store: &self.inventory,
                        trusted: TrustedDomains::new(&self.connection.trusted_domains),
                    }),
                    pending: Some(ResolvePorts {
                        identities: &self.inventory,
                        events: &self.events,
                        hash_queue: &self.queues,
                        exports: &self.state,
                    }),
                };
                if let IndexOutcome::Continue { .. } =
                    index_drive(&ports, connection, drive_id, &budget, || now).await?
                {
                    self.queues.enqueue_index(std::slice::from_ref(index)).await?;
                }
                Ok(true)
            }
            Job::Blob(blob) => {
                let ports = IngestPorts {
                    scopes: &self.state,
                    activity: &self.state,
                    feed: &self.feed,
                    resolver: &self.graph,
                    identities: &self.inventory,
                    events: &self.events,
                    inventory: &self.inventory,
                    quarantine: &self.quarantine,
                    hash_queue: &self.queues,
                    index_queue: &self.queues,
                    exports: &self.state,
                    sharing: Some((&self.graph, &self.inventory)),
                };
                // As the handler does: the connection it names, loaded once.
                if let Some(connection) = self.state.connection(&blob.connection).await? {
                    ingest_blob(&ports, &connection, blob, now).await?;
                }
                Ok(true)
            }
            Job::Hash(hash) => {
                let ports = HashPorts {
                    content: &DownloadLog {
                        graph: &self.graph,
                        log: &self.downloads,
                    },
                    inventory: &self.inventory,
                    events: &self.events,
                    queue: &self.queues,
                    exports: &self.state,
                    leases: &self.state,
                };
                // A job that waits for another's download was enqueued again with a delay; this
                // delivery is done whatever the outcome.
                if let Some(connection) = self.state.connection(&hash.connection).await? {
                    hash_file(&ports, &connection, hash, HasherTuning::default(), &budget, now).await?;
                }
                Ok(true)
            }
        }
    }

    /// Delivers one message under `rng`'s choices: acknowledged, lost delete, or killed.
    async fn step(&self, rng: &mut Rng, message: Message, disorder: Disorder) {
        let units = rng.chance(30).then(|| 1 + rng.below(3) as u64);
        if rng.chance(disorder.kill) {
            // Killed between two of its operations (each store and queue operation gives way,
            // so a poll is one step): whatever it did stays done, the message comes back.
            let _ = die_after(self.deliver(&message.job, units), 1 + rng.below(KILL_WITHIN_POLLS)).await;
            self.queues.back(message, Duration::seconds(30), false);
            return;
        }
        match self.deliver(&message.job, units).await {
            Ok(true) if !rng.chance(disorder.redeliver) => {}
            Ok(_) => self.queues.back(message, Duration::seconds(30), false),
            Err(e) => {
                tracing::warn!(job = ?message.job, error = %e, "delivery failed; the message comes back");
                self.queues.back(message, Duration::seconds(30), true);
            }
        }
    }

    /// Runs `schedules` (true: discovery, false: poll) interleaved at random with the queued
    /// messages until everything queued is done, then keeps firing both schedules until the
    /// outcome no longer changes.
    ///
    /// # Errors
    /// When a schedule itself fails (a store or the simulator is broken).
    pub async fn run(&self, seed: u64, schedules: &[bool], disorder: Disorder) -> anyhow::Result<Outcome> {
        let mut rng = Rng::new(seed);
        let mut pending: Vec<bool> = schedules.to_vec();
        let mut steps = 0u32;
        loop {
            steps += 1;
            if steps % 500 == 0 {
                tracing::info!(
                    steps,
                    queued = self.queues.len(),
                    pending = pending.len(),
                    "interleaving"
                );
            }
            anyhow::ensure!(steps < 20_000, "no end in sight: {} messages queued", self.queues.len());
            self.advance(Duration::seconds(1 + rng.below(5) as i64));
            let queued = self.queues.len();
            if !pending.is_empty() && (queued == 0 || rng.chance(25)) {
                let discovery = pending.remove(rng.below(pending.len()));
                if discovery {
                    self.fire_discovery().await?;
                } else {
                    self.fire_poll().await?;
                }
                continue;
            }
            let now = self.now();
            let Some(first) = self.queues.take(&mut rng, now) else {
                match self.queues.next_visible() {
                    Some(at) => {
                        self.advance(at - now);
                        continue;
                    }
                    None if pending.is_empty() => break,
                    None => continue,
                }
            };
            let mut batch = vec![first];
            if rng.chance(disorder.concurrent) {
                while batch.len() < disorder.width.max(1) {
                    match self.queues.take(&mut rng, now) {
                        Some(m) => batch.push(m),
                        None => break,
                    }
                }
            }
            if batch.len() == 1 {
                self.step(&mut rng, batch.remove(0), disorder).await;
            } else {
                let runs = batch.into_iter().map(|m| {
                    let mut own = Rng::new(rng.next_u64());
                    async move { self.step(&mut own, m, disorder).await }
                });
                futures_util::future::join_all(runs).await;
            }
        }
        // The schedules keep firing: settle.
        let mut last = None;
        for _ in 0..6 {
            self.advance(Duration::minutes(5));
            self.fire_discovery().await?;
            self.drain().await?;
            self.advance(Duration::minutes(5));
            self.fire_poll().await?;
            self.drain().await?;
            let outcome = self.outcome().await?;
            if last.as_ref() == Some(&outcome) {
                return Ok(outcome);
            }
            last = Some(outcome);
        }
        anyhow::ensure!(false, "the outcome kept changing after the work was done");
        unreachable!()
    }

    /// Runs every queued message in order, acknowledging each.
    async fn drain(&self) -> anyhow::Result<()> {
        let mut rng = Rng::new(0);
        let calm = Disorder {
            kill: 0,
            redeliver: 0,
            concurrent: 0,
            width: 1,
        };
        for _ in 0..10_000 {
            let now = self.now();
            match self.queues.take(&mut rng, now) {
                Some(m) => self.step(&mut rng, m, calm).await,
                None => match self.queues.next_visible() {
                    Some(at) => self.advance(at - now),
                    None => return Ok(()),
                },
            }
        }
        anyhow::bail!("the queues never drained")
    }

    /// What the run recorded.
    ///
    /// # Errors
    /// When a store cannot be read.
    pub async fn outcome(&self) -> anyhow::Result<Outcome> {
        let timeline = self
            .events
            .all()
            .into_iter()
            .map(|e| {
                (
                    e.key(),
                    format!("{} {}", e.event.observed_at.format("%H:%M:%S"), e.event.operation),
                )
            })
            .collect();
        let events = self
            .events
            .all()
            .into_iter()
            .map(|e| {
                let hash = match &e.hash {
                    // A previous version (no cTag) by its version id.
                    Some(HashOutcome::Hashed(h)) => match &h.version {
                        Some(v) => format!("hashed version:{v} {}", h.sha256),
                        None => format!("hashed {} {}", h.ctag, h.sha256),
                    },
                    Some(HashOutcome::Unavailable { reason }) => reason.clone(),
                    None => "none".into(),
                };
                (e.key(), (e.event.item_id.clone(), hash))
            })
            .collect();
        let mut inventory = BTreeMap::new();
        let mut digests = BTreeMap::new();
        let mut drives = BTreeMap::new();
        for d in self.state.all_drives() {
            drives.insert(d.drive_id.clone(), d.state);
            let rows = self.inventory.rows(&d.drive_id);
            let ids: Vec<String> = rows.iter().map(|r| r.item_id.clone()).collect();
            for r in rows {
                inventory.insert((r.drive_id.clone(), r.item_id.clone()), r.path.clone());
            }
            for (item, h) in self.inventory.file_hashes(&d.drive_id, &ids).await? {
                digests.insert((d.drive_id.clone(), item), h.sha256);
            }
        }
        let sharing = self
            .inventory
            .sharing_states()
            .into_iter()
            .map(|state| {
                let mut grants: Vec<String> = state
                    .grants
                    .iter()
                    .map(|g| {
                        let grantees: Vec<String> = g
                            .grantees
                            .iter()
                            .map(|p| {
                                format!(
                                    "{}{}",
                                    p.label(),
                                    if p.external == Some(true) { " (outside)" } else { "" }
                                )
                            })
                            .collect();
                        format!(
                            "{} {} {} [{}] {}",
                            g.id,
                            g.reach.as_str(),
                            if g.link { "link" } else { "direct" },
                            g.roles.join(","),
                            grantees.join(", ")
                        )
                    })
                    .collect();
                grants.sort();
                ((state.drive_id, state.item_id), grants)
            })
            .collect();
        let exposed = self
            .inventory
            .exposed(CONNECTION)
            .await?
            .into_iter()
            .map(|s| (s.drive_id, s.item_id))
            .collect();
        let totals = self.state.ingest_totals(CONNECTION).await?;
        Ok(Outcome {
            events,
            inventory,
            digests,
            sharing,
            exposed,
            drives,
            dropped: totals.dropped,
            parked: totals.parked,
            dead_letters: self.queues.dead.lock().unwrap_or_else(|e| e.into_inner()).len(),
            timeline: NotCompared(timeline),
        })
    }
}
