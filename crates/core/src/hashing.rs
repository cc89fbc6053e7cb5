//! Hashing one file: stream its current version through [`DualHasher`] and record the MD5 and
//! SHA-256 on its inventory row and on the events of that version.
//!
//! Contract:
//! - a version already hashed (same cTag on the inventory row) is not downloaded again; its
//!   digests are given to the events that lack them;
//! - a version is downloaded by one job at a time ([`VersionLease`]): a second job for it (two
//!   blobs named the same change) comes back after [`LEASE_WAIT`] and takes the digests; a
//!   lease held by a worker that died lapses with its invocation;
//! - nothing is written to disk: the content goes from the socket to the two digests;
//! - a file larger than one invocation can hash stops at the budget with the hasher's state
//!   ([`HashCheckpoint`]) and the offset in a continuation job; the next invocation resumes the
//!   download with `Range` from there, unless the file changed meanwhile (then it starts over);
//! - a file deleted before hashing, or changed while it was downloaded, is recorded as such on
//!   its events rather than given digests of other bytes;
//! - the digests go to the events of the version hashed, told apart by the file's own events:
//!   the version began with the newest content change (upload, modification, copy, restore)
//!   at or before Graph's `lastModifiedDateTime` of the version (which renames and moves also
//!   advance, so it bounds the version's start but does not date it). Events before it concern
//!   a version that is gone and are marked so; events after a later content change belong to a
//!   newer version, whose own hash job gives them its digests. Recording is self-correcting: a
//!   content change that arrives late (audit blobs come out of order) moves events that took
//!   these digests too early to the version they concern.
//! - every outcome is decided from a read of the file's events and written only where the
//!   event still has the outcome read ([`EventStore::change_event_hashes`]): when two jobs of
//!   one file decide at once (one before a late content change landed, one after), the one that
//!   read less cannot overwrite the other's outcome; it reads again and decides again.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::budget::Budget;
use crate::digest::{DualHasher, HasherTuning};
use crate::error::PortError;
use crate::events::{EventRecord, FileHashes, HashOutcome, unavailable};
use crate::export::StaleExportMarks;
use crate::jobs::HashJob;
use crate::model::{Connection, ConnectionKind};
use crate::ports::{EventStore, HashChange, HashQueue, InventoryHashes, PortResult};

/// Events of one file looked at per hashing: far more than any file collects between two
/// versions; older events keep what they had.
pub const MAX_EVENTS_PER_FILE: usize = 1_000;

/// How many times a job decides its events' outcomes again when other writers keep changing
/// them (or the version's start) between its read and its writes, twice over (a round may only
/// move the start); then the job fails and SQS delivers it again.
const DECISION_ATTEMPTS: u32 = 5;

/// A file's current version as Graph reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemVersion {
    /// `None` for folders and other items without content.
    pub ctag: Option<String>,
    pub size: u64,
    pub modified_at: Option<DateTime<Utc>>,
    pub is_file: bool,
}

/// A version of a file as OneDrive lists it (`…/versions`): a label like `3.0`, when it was
/// saved, its size. OneDrive keeps versions as the library's settings say, so one per change is
/// not guaranteed (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-versions>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptVersion {
    pub id: String,
    pub modified_at: Option<DateTime<Utc>>,
    pub size: u64,
}

/// Where a download stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every byte of the expected version was delivered.
    Complete,
    /// The budget ran out; the bytes delivered so far are in the sink.
    OutOfTime,
    /// The item no longer exists.
    Gone,
    /// The item is no longer the expected version (modified during the download).
    Changed,
}

/// Receives content chunks as they arrive.
pub trait ChunkSink: Send {
    /// Takes one chunk.
    ///
    /// # Errors
    /// When the consumer failed (a digest thread died).
    fn accept(&mut self, chunk: Bytes) -> PortResult<()>;
    /// Bytes accepted so far, including those before a resume.
    fn offset(&self) -> u64;
}

/// The content of a connection's drive items.
#[async_trait::async_trait]
pub trait FileContent: Send + Sync {
    /// The item's current version; `None` when it does not exist (deleted).
    async fn item_version(&self, drive_id: &str, item_id: &str) -> PortResult<Option<ItemVersion>>;
    /// Streams the content of version `expected` from `sink.offset()` into `sink` until the
    /// end or until `budget` runs out, resuming dropped connections itself; reports
    /// [`StreamEnd::Changed`] rather than mixing bytes of another version.
    async fn stream_content(
        &self,
        drive_id: &str,
        item_id: &str,
        expected: &ItemVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd>;
    /// The versions OneDrive keeps of the file, newest first, the current one included; `None`
    /// when the item does not exist.
    async fn versions(&self, drive_id: &str, item_id: &str) -> PortResult<Option<Vec<KeptVersion>>>;
    /// Streams a previous version (never the current one: Graph serves that only through the
    /// item) from `sink.offset()`, as [`FileContent::stream_content`]; [`StreamEnd::Gone`] when
    /// the version is no longer kept.
    async fn stream_previous(
        &self,
        drive_id: &str,
        item_id: &str,
        version: &KeptVersion,
        sink: &mut dyn ChunkSink,
        budget: &dyn Budget,
    ) -> PortResult<StreamEnd>;
}

pub use crate::jobs::HashContinuation;

/// The right to download one version of a file: two hash jobs for the same version (two blobs
/// named the same change, or a redelivery) download it once. The other job waits
/// ([`HashFileOutcome::Waiting`]) and, when it comes back, finds the digests stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionLease {
    pub connection: String,
    pub drive_id: String,
    pub item_id: String,
    pub ctag: String,
    /// Who holds it: one job and its continuations.
    pub holder: String,
    /// When it lapses if not released (a worker that died holding it).
    pub until: DateTime<Utc>,
}

/// Leases on versions being downloaded.
#[async_trait::async_trait]
pub trait HashLeases: Send + Sync {
    /// Takes (or renews) `lease`: `true` when it is free, lapsed before `now`, or held by
    /// `lease.holder` already; `false` when another holder has it.
    async fn take_hash_lease(&self, lease: &VersionLease, now: DateTime<Utc>) -> PortResult<bool>;
    /// Gives `lease` up, if `lease.holder` still holds it.
    async fn release_hash_lease(&self, lease: &VersionLease) -> PortResult<()>;
}

/// How long a job waits before it looks again for the digests of a version another job is
/// downloading.
pub const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a lease outlives the invocation that took it: a worker that died holding it
/// delays the version by at most this much past its time budget.
pub fn lease_slack() -> chrono::Duration {
    chrono::Duration::minutes(1)
}
/// The longest a Lambda invocation runs (15 minutes): a lease never needs to outlast it.
fn longest_invocation() -> chrono::Duration {
    chrono::Duration::minutes(15)
}

/// A fresh lease holder id: random, so two jobs never share one.
fn new_holder(now: DateTime<Utc>) -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now.timestamp_nanos_opt().unwrap_or_default());
    format!("{:016x}", h.finish())
}

/// The ports hashing needs; `content` belongs to the job's connection.
pub struct HashPorts<'a> {
    pub content: &'a dyn FileContent,
    pub inventory: &'a dyn InventoryHashes,
    pub events: &'a dyn EventStore,
    pub queue: &'a dyn HashQueue,
    /// Where windows already exported whose events got an outcome are noted for rewriting.
    pub exports: &'a dyn StaleExportMarks,
    /// One download per version, whatever jobs run at once.
    pub leases: &'a dyn HashLeases,
}

/// How hashing one file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashFileOutcome {
    Hashed(FileHashes),
    /// This version was hashed before; `events` were given its digests.
    AlreadyHashed {
        events: usize,
    },
    /// The budget ran out; a continuation job carries the state.
    Continued {
        offset: u64,
    },
    /// The item is gone; its events say so.
    Deleted,
    /// The item changed while it was downloaded; a fresh job was enqueued.
    Changed,
    /// Another job is downloading this version; this one comes back after [`LEASE_WAIT`]
    /// and takes its digests.
    Waiting,
    /// Previous versions hashed for the events that concern them (`hashed`), and events whose
    /// version OneDrive no longer keeps marked so (`not_kept`).
    PreviousVersions {
        hashed: usize,
        not_kept: usize,
    },
    /// Not a file (folder), or the connection is not active.
    Skipped {
        reason: String,
    },
}

/// Hashes the file of `job`, a job of `connection` (as the handler loaded it).
///
/// # Errors
/// A failure of Graph, a store or the queue; the job is retried and everything done so far is
/// idempotent.
pub async fn hash_file(
    ports: &HashPorts<'_>,
    connection: &Connection,
    job: &HashJob,
    tuning: HasherTuning,
    budget: &dyn Budget,
    now: DateTime<Utc>,
) -> Result<HashFileOutcome, PortError> {
    let (drive, item) = (job.drive_id.as_str(), job.item_id.as_str());
    if connection.id != job.connection || connection.kind != ConnectionKind::Cloud || !connection.accepts_work() {
        return Ok(HashFileOutcome::Skipped {
            reason: format!("connection {} is not an active cloud connection", job.connection),
        });
    }
    if job.previous_versions {
        return hash_previous_versions(ports, job, tuning, budget, now).await;
    }
    let Some(version) = ports.content.item_version(drive, item).await? else {
        record_gone(ports, &job.connection, drive, item, now).await?;
        return Ok(HashFileOutcome::Deleted);
    };
    let Some(ctag) = version.ctag.clone().filter(|_| version.is_file) else {
        return Ok(HashFileOutcome::Skipped {
            reason: "not a file".to_owned(),
        });
    };
    if let Some(done) = reuse_stored(ports, job, &version, &ctag, now).await? {
        return Ok(done);
    }

    let resumed = job.continuation.as_ref().filter(|c| c.ctag == ctag);
    let lease = VersionLease {
        connection: job.connection.clone(),
        drive_id: drive.to_owned(),
        item_id: item.to_owned(),
        ctag: ctag.clone(),
        holder: resumed.and_then(|c| c.lease.clone()).unwrap_or_else(|| new_holder(now)),
        until: now + lease_term(budget) + lease_slack(),
    };
    if !ports.leases.take_hash_lease(&lease, now).await? {
        info!(
            drive,
            item, ctag, "another job is downloading this version; waiting for its digests"
        );
        ports
            .queue
            .enqueue_hashes_after(std::slice::from_ref(job), LEASE_WAIT)
            .await?;
        return Ok(HashFileOutcome::Waiting);
    }
    let outcome = download_and_record(ports, job, &version, ctag, resumed, &lease, tuning, budget, now).await;
    // A continuation keeps the lease; every other end gives it up (a failure too: a retry
    // takes it again, and another job need not wait for the lease to lapse).
    if !matches!(outcome, Ok(HashFileOutcome::Continued { .. })) {
        ports.leases.release_hash_lease(&lease).await?;
    }
    outcome
}

/// When this version was hashed before: gives its digests to the events that lack them (and
/// moves the version's start if a content change of it arrived since). `None` otherwise.
async fn reuse_stored(
    ports: &HashPorts<'_>,
    job: &HashJob,
    version: &ItemVersion,
    ctag: &str,
    now: DateTime<Utc>,
) -> Result<Option<HashFileOutcome>, PortError> {
    let (drive, item) = (job.drive_id.as_str(), job.item_id.as_str());
    let stored = ports.inventory.file_hashes(drive, &[item.to_owned()]).await?;
    let Some((_, hashes)) = stored.into_iter().find(|(_, h)| h.ctag == ctag) else {
        return Ok(None);
    };
    // A content change of this version that arrived since moves the version's start later.
    let version_of = VersionOf {
        connection: &job.connection,
        drive,
        item,
        graph_modified: version.modified_at,
    };
    let (_, events, older) = give_to_events(ports, &version_of, hashes.clone(), Some(&hashes), now).await?;
    if older {
        ask_for_previous_versions(ports, job).await?;
    }
    Ok(Some(HashFileOutcome::AlreadyHashed { events }))
}

/// How long this invocation may still run, at most a whole Lambda invocation.
fn lease_term(budget: &dyn Budget) -> chrono::Duration {
    budget
        .stop_at()
        .map(|at| at.saturating_duration_since(std::time::Instant::now()))
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map_or(longest_invocation(), |d| d.min(longest_invocation()))
}

/// Downloads the version under the lease, and records its digests (or why there are none).
#[allow(clippy::too_many_arguments)]
async fn download_and_record(
    ports: &HashPorts<'_>,
    job: &HashJob,
    version: &ItemVersion,
    ctag: String,
    resumed: Option<&HashContinuation>,
    lease: &VersionLease,
    tuning: HasherTuning,
    budget: &dyn Budget,
    now: DateTime<Utc>,
) -> Result<HashFileOutcome, PortError> {
    let (drive, item) = (job.drive_id.as_str(), job.item_id.as_str());
    // Another job may have finished this version between our check and the lease.
    if resumed.is_none()
        && let Some(done) = reuse_stored(ports, job, version, &ctag, now).await?
    {
        return Ok(done);
    }
    let mut sink = match resumed {
        Some(c) => HasherSink {
            hasher: DualHasher::resume(&c.state, tuning).map_err(hash_failed)?,
        },
        None => HasherSink {
            hasher: DualHasher::with_tuning(tuning).map_err(hash_failed)?,
        },
    };
    let end = ports
        .content
        .stream_content(drive, item, version, &mut sink, budget)
        .await?;
    let changed = || async {
        warn!(drive, item, "file changed while hashed; hashing again");
        ports
            .queue
            .enqueue_hashes(&[HashJob {
                continuation: None,
                ..job.clone()
            }])
            .await
            .map(|()| HashFileOutcome::Changed)
    };
    match end {
        StreamEnd::Changed => changed().await,
        StreamEnd::Gone => {
            record_gone(ports, &job.connection, drive, item, now).await?;
            Ok(HashFileOutcome::Deleted)
        }
        StreamEnd::OutOfTime => {
            let offset = sink.offset();
            let state = sink.hasher.checkpoint().map_err(hash_failed)?;
            info!(
                drive,
                item,
                offset,
                size = version.size,
                "hash continues in a new invocation"
            );
            ports
                .queue
                .enqueue_hashes(&[HashJob {
                    continuation: Some(HashContinuation {
                        ctag,
                        offset,
                        state,
                        lease: Some(lease.holder.clone()),
                    }),
                    ..job.clone()
                }])
                .await?;
            Ok(HashFileOutcome::Continued { offset })
        }
        StreamEnd::Complete => {
            let size = sink.offset();
            if size != version.size {
                return changed().await;
            }
            let digests = sink.hasher.finish().map_err(hash_failed)?;
            let hashes = FileHashes {
                version: None,
                md5: digests.md5_hex(),
                sha256: digests.sha256_hex(),
                ctag,
                size,
                modified_at: None,
                hashed_at: now,
            };
            let version_of = VersionOf {
                connection: &job.connection,
                drive,
                item,
                graph_modified: version.modified_at,
            };
            let (hashes, _, older) = give_to_events(ports, &version_of, hashes, None, now).await?;
            if older {
                ask_for_previous_versions(ports, job).await?;
            }
            info!(
                drive,
                item,
                size,
                md5 = hashes.md5,
                sha256 = hashes.sha256,
                "file hashed"
            );
            Ok(HashFileOutcome::Hashed(hashes))
        }
    }
}

/// Enqueues the job that hashes the previous versions of the file's older events.
async fn ask_for_previous_versions(ports: &HashPorts<'_>, job: &HashJob) -> PortResult<()> {
    ports
        .queue
        .enqueue_hashes(&[HashJob {
            continuation: None,
            previous_versions: true,
            ..job.clone()
        }])
        .await
}

/// The previous versions a file's events concern, as [`previous_version_plan`] matched them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionPlan {
    /// Each previous version to hash, with the keys of the events that concern it.
    pub hash: Vec<(KeptVersion, Vec<String>)>,
    /// Events of a version another of its events already carries the digests of (an event
    /// whose record came after that version was hashed): they get those digests, with no
    /// second download of the same bytes.
    pub reuse: Vec<(FileHashes, Vec<String>)>,
    /// Events whose version OneDrive no longer lists.
    pub not_kept: Vec<String>,
    /// Events with no outcome yet of a version since replaced that cannot be told apart (two
    /// content changes in one second, or several kept versions between two changes): they are
    /// told their version changed before it could be hashed, rather than left without a word.
    pub unplaced: Vec<String>,
}

/// Matches the file's events still without the digests of their version (none, or "changed
/// again before this version could be hashed") to the previous versions OneDrive keeps
/// (`versions`, newest first, the current one first). Each content change (upload,
/// modification, copy, restore) made the version saved when it happened: the one kept version
/// saved from a second before the change (audit times have whole seconds) until the next
/// content change, within [`clock_slack`] of the change. Its events are the change and those
/// after it until the next content change. No version there: the events are "not kept",
/// unless that change is the newest known and the current version was saved since (the
/// current version's job gives those events its digests). Where
/// the match is not certain (two content changes in the same second, or several versions
/// between two changes: a change whose record has not arrived), the events stay as they are:
/// no digest is better than another version's. Where an event of the same version already
/// carries its digests (hashed as the current version, or as this previous one), the waiting
/// events get those instead of a download ([`VersionPlan::reuse`]).
pub fn previous_version_plan(events: &[EventRecord], versions: &[KeptVersion]) -> VersionPlan {
    let waiting = waits_for_its_version;
    let mut changes: std::collections::BTreeMap<DateTime<Utc>, usize> = std::collections::BTreeMap::new();
    for e in events.iter().filter(|e| e.event.event_type.may_change_content()) {
        *changes.entry(e.event.observed_at).or_default() += 1;
    }
    let starts: Vec<(DateTime<Utc>, usize)> = changes.into_iter().collect();
    let previous = versions.get(1..).unwrap_or_default();
    // Whether the current version was saved at or after `from` (or cannot be dated: then it
    // may be, and no claim is made).
    let current_since = |from: DateTime<Utc>| {
        versions
            .first()
            .is_none_or(|current| current.modified_at.is_none_or(|m| m >= from))
    };
    let mut plan = VersionPlan::default();
    for (i, (start, count)) in starts.iter().enumerate() {
        let next = starts.get(i + 1).map(|(t, _)| *t);
        let in_window =
            |e: &&EventRecord| e.event.observed_at >= *start && next.is_none_or(|n| e.event.observed_at < n);
        let keys: Vec<String> = events
            .iter()
            .filter(in_window)
            .filter(|e| waiting(e))
            .map(EventRecord::key)
            .collect();
        // No digest is better than another version's; an event still without any outcome is
        // told why, unless its version is the current one (its own job gives it the digests).
        let unplaced = |plan: &mut VersionPlan| {
            if next.is_some() {
                plan.unplaced.extend(
                    events
                        .iter()
                        .filter(in_window)
                        .filter(|e| e.hash.is_none())
                        .map(EventRecord::key),
                );
            }
        };
        if keys.is_empty() {
            continue;
        }
        if *count > 1 {
            unplaced(&mut plan);
            continue;
        }
        let from = *start - chrono::Duration::seconds(1);
        let candidates: Vec<&KeptVersion> = previous
            .iter()
            .filter(|v| v.modified_at.is_some_and(|m| m >= from && next.is_none_or(|n| m < n)))
            .collect();
        match candidates.as_slice() {
            // The newest change known made the current version (listed first): its events get
            // their digests from the current version's job, never "not kept".
            [] if next.is_none() && current_since(from) => {}
            [] => plan.not_kept.extend(keys),
            [v] if v.modified_at.is_some_and(|m| m < *start + clock_slack()) => {
                // The digests an event of this window already has are this version's: the
                // current-version hashing gives a version's digests only to its own events.
                let known = events.iter().filter(in_window).find_map(|e| match &e.hash {
                    Some(HashOutcome::Hashed(h))
                        if h.size == v.size && h.version.as_deref().is_none_or(|id| id == v.id) =>
                    {
                        Some(h.clone())
                    }
                    _ => None,
                });
                if let Some(hashes) = known {
                    plan.reuse.push((hashes, keys));
                    continue;
                }
                match plan.hash.iter_mut().find(|(h, _)| h.id == v.id) {
                    Some((_, existing)) => existing.extend(keys),
                    None => plan.hash.push(((*v).clone(), keys)),
                }
            }
            _ => unplaced(&mut plan),
        }
    }
    plan
}

/// Whether the event still waits for the digests of its version: it has no outcome, or was told
/// its version changed before it could be hashed (which [`hash_previous_versions`] may undo).
fn waits_for_its_version(e: &EventRecord) -> bool {
    match &e.hash {
        None => true,
        Some(HashOutcome::Unavailable { reason }) => reason == unavailable::CHANGED_BEFORE_HASHING,
        Some(HashOutcome::Hashed(_)) => false,
    }
}

/// Gives a previous version's digests to its events (`read`: as the plan read them). An event
/// another job changed since the plan's read still gets them while it waits for them (the
/// current version's job marks older events "changed before hashing" meanwhile); one that got
/// another outcome keeps it. Returns how many did, for the job to plan again.
async fn store_version_digests(
    ports: &HashPorts<'_>,
    drive: &str,
    item: &str,
    read: &[&EventRecord],
    keys: &[String],
    outcome: &HashOutcome,
    now: DateTime<Utc>,
) -> PortResult<usize> {
    let mut conflicts = store_outcomes(ports, read, &[(keys, outcome)], now).await?;
    for _ in 1..DECISION_ATTEMPTS {
        if conflicts.is_empty() {
            break;
        }
        let fresh = ports.events.file_events(drive, item, MAX_EVENTS_PER_FILE).await?;
        let still: Vec<&EventRecord> = fresh
            .iter()
            .filter(|e| conflicts.contains(&e.key()) && waits_for_its_version(e))
            .collect();
        if still.is_empty() {
            break;
        }
        let keys: Vec<String> = still.iter().map(|e| e.key()).collect();
        conflicts = store_outcomes(ports, &still, &[(&keys, outcome)], now).await?;
    }
    Ok(conflicts.len())
}

/// Hashes the previous versions the file's older events concern, one download per version
/// (under the version's lease), and gives each its events; events whose version is no longer
/// kept are told so. Out of time between two versions, it hands the rest to a new job (a
/// version cut by the budget starts over: previous versions have no continuation).
async fn hash_previous_versions(
    ports: &HashPorts<'_>,
    job: &HashJob,
    tuning: HasherTuning,
    budget: &dyn Budget,
    now: DateTime<Utc>,
) -> Result<HashFileOutcome, PortError> {
    let (drive, item) = (job.drive_id.as_str(), job.item_id.as_str());
    let Some(versions) = ports.content.versions(drive, item).await? else {
        return Ok(HashFileOutcome::Skipped {
            reason: "the file no longer exists, nor its versions".to_owned(),
        });
    };
    let events = ports.events.file_events(drive, item, MAX_EVENTS_PER_FILE).await?;
    let plan = previous_version_plan(&events, &versions);
    let by_key: std::collections::HashMap<String, &EventRecord> = events.iter().map(|e| (e.key(), e)).collect();
    let of = |keys: &[String]| -> Vec<&EventRecord> { keys.iter().filter_map(|k| by_key.get(k).copied()).collect() };
    let not_kept = HashOutcome::Unavailable {
        reason: unavailable::VERSION_NOT_KEPT.to_owned(),
    };
    // Events another job changed between the plan's read and its writes: the job plans again.
    let mut conflicts = 0;
    for (hashes, keys) in &plan.reuse {
        let outcome = HashOutcome::Hashed(hashes.clone());
        conflicts += store_version_digests(ports, drive, item, &of(keys), keys, &outcome, now).await?;
    }
    let mut gone: Vec<String> = plan.not_kept.clone();
    let mut hashed = 0;
    for (version, keys) in &plan.hash {
        if !budget.has_time_for_more() {
            ports.queue.enqueue_hashes(std::slice::from_ref(job)).await?;
            break;
        }
        let lease = VersionLease {
            connection: job.connection.clone(),
            drive_id: drive.to_owned(),
            item_id: item.to_owned(),
            ctag: format!("version {}", version.id),
            holder: new_holder(now),
            until: now + lease_term(budget) + lease_slack(),
        };
        if !ports.leases.take_hash_lease(&lease, now).await? {
            ports
                .queue
                .enqueue_hashes_after(std::slice::from_ref(job), LEASE_WAIT)
                .await?;
            return Ok(HashFileOutcome::Waiting);
        }
        // Another job may have hashed this version between the plan's read and the lease: then
        // the job plans again from a fresh read rather than download the same bytes twice.
        let fresh = ports.events.file_events(drive, item, MAX_EVENTS_PER_FILE).await?;
        if fresh.iter().any(
            |e| matches!(&e.hash, Some(HashOutcome::Hashed(h)) if h.version.as_deref() == Some(version.id.as_str())),
        ) {
            ports.leases.release_hash_lease(&lease).await?;
            conflicts += 1;
            continue;
        }
        let mut sink = HasherSink {
            hasher: DualHasher::with_tuning(tuning).map_err(hash_failed)?,
        };
        let end = ports
            .content
            .stream_previous(drive, item, version, &mut sink, budget)
            .await;
        ports.leases.release_hash_lease(&lease).await?;
        match end? {
            StreamEnd::Complete if sink.offset() == version.size => {
                let digests = sink.hasher.finish().map_err(hash_failed)?;
                let outcome = HashOutcome::Hashed(FileHashes {
                    md5: digests.md5_hex(),
                    sha256: digests.sha256_hex(),
                    ctag: String::new(),
                    size: version.size,
                    modified_at: version.modified_at,
                    hashed_at: now,
                    version: Some(version.id.clone()),
                });
                conflicts += store_version_digests(ports, drive, item, &of(keys), keys, &outcome, now).await?;
                info!(
                    drive,
                    item,
                    version = version.id,
                    events = keys.len(),
                    "previous version hashed"
                );
                hashed += 1;
            }
            StreamEnd::Gone => gone.extend(keys.iter().cloned()),
            StreamEnd::OutOfTime => {
                ports.queue.enqueue_hashes(std::slice::from_ref(job)).await?;
                break;
            }
            // A previous version's bytes do not change; a different size is the service's
            // doing: leave the events as they are rather than give them other bytes' digests.
            StreamEnd::Complete | StreamEnd::Changed => {
                warn!(
                    drive,
                    item,
                    version = version.id,
                    "previous version's size differs from its listing; not recorded"
                );
            }
        }
    }
    if !gone.is_empty() {
        conflicts += store_outcomes(ports, &of(&gone), &[(&gone, &not_kept)], now)
            .await?
            .len();
    }
    if !plan.unplaced.is_empty() {
        let changed = HashOutcome::Unavailable {
            reason: unavailable::CHANGED_BEFORE_HASHING.to_owned(),
        };
        conflicts += store_outcomes(ports, &of(&plan.unplaced), &[(&plan.unplaced, &changed)], now)
            .await?
            .len();
    }
    if conflicts > 0 {
        info!(
            drive,
            item, conflicts, "events changed by another job while their versions were matched; matching again"
        );
        ports.queue.enqueue_hashes(std::slice::from_ref(job)).await?;
    }
    Ok(HashFileOutcome::PreviousVersions {
        hashed,
        not_kept: gone.len(),
    })
}

/// How much later than Graph's `lastModifiedDateTime` the audit record of the same change may
/// be dated (the two clocks differ by seconds).
pub fn clock_slack() -> chrono::Duration {
    chrono::Duration::minutes(2)
}

/// The file version [`give_to_events`] records.
struct VersionOf<'a> {
    connection: &'a str,
    drive: &'a str,
    item: &'a str,
    /// Graph's `lastModifiedDateTime` of the version.
    graph_modified: Option<DateTime<Utc>>,
}

/// Gives `hashes` to the events of the version hashed and marks the events of older versions
/// (see the module doc), and records the digests on the inventory row (`stored`: what the row
/// holds for this version already). Returns the hashes with `modified_at` set to when the
/// version began, when the events tell, how many events carry the digests now, and whether
/// events of older versions wait for their digests (their versions may still be kept:
/// [`hash_previous_versions`]).
///
/// Ingest gives a read of a hashed version its digests by the row's record of when the version
/// began. So the row is written first, and the events are decided from a read taken after it:
/// an event ingest stores meanwhile is either in that read, or judged by ingest against the
/// start written here.
async fn give_to_events(
    ports: &HashPorts<'_>,
    version: &VersionOf<'_>,
    hashes: FileHashes,
    stored: Option<&FileHashes>,
    now: DateTime<Utc>,
) -> Result<(FileHashes, usize, bool), PortError> {
    let (drive, item) = (version.drive, version.item);
    let mut published = stored.cloned();
    // Each round reads the events; a round that moved the row's start reads them again.
    for attempt in 1..=2 * DECISION_ATTEMPTS {
        let events = ports.events.file_events(drive, item, MAX_EVENTS_PER_FILE).await?;
        let decided = decide_version_events(&events, hashes.clone(), version.graph_modified);
        if published.as_ref() != Some(&decided.hashes) {
            ports
                .inventory
                .set_file_hash(
                    version.connection,
                    drive,
                    item,
                    &HashOutcome::Hashed(decided.hashes.clone()),
                )
                .await?;
            published = Some(decided.hashes);
            continue;
        }
        let gone_by = HashOutcome::Unavailable {
            reason: unavailable::CHANGED_BEFORE_HASHING.to_owned(),
        };
        let current = HashOutcome::Hashed(decided.hashes.clone());
        let changed: Vec<&EventRecord> = decided.changed.iter().map(|&i| &events[i]).collect();
        let conflicts = store_outcomes(
            ports,
            &changed,
            &[(&decided.give, &current), (&decided.older, &gone_by)],
            now,
        )
        .await?;
        if conflicts.is_empty() {
            return Ok((decided.hashes, decided.carrying, decided.ask_previous));
        }
        info!(
            drive,
            item,
            attempt,
            conflicts = conflicts.len(),
            "events changed by another job while their outcomes were decided; deciding again"
        );
    }
    Err(PortError::transient(
        "events_busy",
        format!("the events of item {item} in drive {drive} kept changing while their digests were recorded"),
    ))
}

/// What [`give_to_events`] decided from one read of the file's events.
struct VersionEvents {
    /// The hashes with `modified_at` set to when the version began, when the events tell.
    hashes: FileHashes,
    /// Events of the version still without its digests.
    give: Vec<String>,
    /// Events of older versions without an outcome, or with this version's digests.
    older: Vec<String>,
    /// Positions in the events read of those in `give` and `older`.
    changed: Vec<usize>,
    /// Events of the version (with the digests already or given them now).
    carrying: usize,
    /// Whether events of older versions wait for their version's digests (marked now, or
    /// before: a previous-version job that ran before a content change arrived could not place
    /// them then, and may now).
    ask_previous: bool,
}

fn decide_version_events(
    events: &[EventRecord],
    mut hashes: FileHashes,
    graph_modified: Option<DateTime<Utc>>,
) -> VersionEvents {
    let bound = graph_modified.map(|m| m + clock_slack());
    let content_changes = events
        .iter()
        .filter(|e| e.event.event_type.may_change_content())
        .map(|e| e.event.observed_at);
    let (mut start, mut next): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = (None, None);
    for at in content_changes {
        if bound.is_none_or(|b| at <= b) {
            start = start.max(Some(at));
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    hashes.modified_at = start;
    let current = HashOutcome::Hashed(hashes.clone());
    let (mut give, mut older, mut changed, mut carrying) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut waiting_before = false;
    for (i, e) in events.iter().enumerate() {
        let at = e.event.observed_at;
        if next.is_some_and(|n| at >= n) {
            continue;
        }
        let same_version = matches!(&e.hash, Some(HashOutcome::Hashed(h)) if h.ctag == hashes.ctag);
        if start.is_none_or(|s| at >= s) {
            carrying += 1;
            if e.hash.as_ref() != Some(&current) {
                give.push(e.key());
                changed.push(i);
            }
        } else if e.hash.is_none() || same_version {
            older.push(e.key());
            changed.push(i);
        } else if waits_for_its_version(e) {
            waiting_before = true;
        }
    }
    VersionEvents {
        ask_previous: waiting_before || !older.is_empty(),
        hashes,
        give,
        older,
        changed,
        carrying,
    }
}

/// Stores outcomes on events (`writes`: keys and the outcome they get; `changed`: those
/// events as read, each written only if it still has the outcome read) and marks the export
/// windows of the changed events before and after. Returns the keys another writer changed
/// meanwhile (left as they are). The mark before survives a failure after the outcomes are
/// stored (a retry finds nothing left to change, so it marks nothing); the mark after renews
/// it, so an export that wrote the window again between the first mark and the outcomes keeps
/// the mark for its next run.
async fn store_outcomes(
    ports: &HashPorts<'_>,
    changed: &[&EventRecord],
    writes: &[(&[String], &HashOutcome)],
    now: DateTime<Utc>,
) -> PortResult<Vec<String>> {
    let was: std::collections::HashMap<String, Option<&HashOutcome>> =
        changed.iter().map(|e| (e.key(), e.hash.as_ref())).collect();
    let changes: Vec<HashChange<'_>> = writes
        .iter()
        .flat_map(|(keys, outcome)| {
            keys.iter().map(|key| HashChange {
                key,
                was: was.get(key).copied().flatten(),
                outcome,
            })
        })
        .collect();
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    mark_exports_stale(ports, changed, now).await?;
    let conflicts = ports.events.change_event_hashes(&changes).await?;
    // A mark is renewed when its time differs from the one an export read.
    mark_exports_stale(ports, changed, now + chrono::Duration::nanoseconds(1)).await?;
    Ok(conflicts)
}

/// Marks the export windows of `changed` events that the export may have written already, so
/// it writes them again with their new outcomes.
async fn mark_exports_stale(ports: &HashPorts<'_>, changed: &[&EventRecord], now: DateTime<Utc>) -> PortResult<()> {
    crate::export::mark_changed_windows_stale(ports.exports, changed, now).await?;
    Ok(())
}

/// Records that the file is gone on its inventory row and its events without a digest.
async fn record_gone(
    ports: &HashPorts<'_>,
    connection: &str,
    drive: &str,
    item: &str,
    now: DateTime<Utc>,
) -> Result<(), PortError> {
    let outcome = HashOutcome::Unavailable {
        reason: unavailable::DELETED_BEFORE_HASHING.to_owned(),
    };
    let events = ports.events.file_events(drive, item, MAX_EVENTS_PER_FILE).await?;
    let changed: Vec<&EventRecord> = events.iter().filter(|e| e.hash.is_none()).collect();
    let keys: Vec<String> = changed.iter().map(|e| e.key()).collect();
    // An event another job gave an outcome meanwhile (it read the file live) keeps it.
    store_outcomes(ports, &changed, &[(&keys, &outcome)], now).await?;
    ports.inventory.set_file_hash(connection, drive, item, &outcome).await?;
    info!(drive, item, events = keys.len(), "file deleted before hashing");
    Ok(())
}

fn hash_failed(e: crate::digest::HashError) -> PortError {
    PortError::transient("hash_failed", format!("hashing failed: {e}"))
}

/// Feeds [`DualHasher`].
struct HasherSink {
    hasher: DualHasher,
}

impl ChunkSink for HasherSink {
    fn accept(&mut self, chunk: Bytes) -> PortResult<()> {
        self.hasher.update(chunk).map_err(hash_failed)
    }

    fn offset(&self) -> u64 {
        self.hasher.bytes()
    }
}
