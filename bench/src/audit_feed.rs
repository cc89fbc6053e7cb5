//! The audit-feed benchmarks' pieces (issue 4): a corpus of audit blobs as the simulator
//! publishes them, the ground truth of which events each blob must yield, the watch that notes
//! when a blob's events became readable, and percentiles.
//!
//! Ground truth comes from the simulator's injector (which record went to which blob, on which
//! drive, with which operation), not from filetrail's normaliser: a record becomes an event when
//! its drive is monitored and its operation is not one filetrail skips on purpose
//! ([`NOT_RECORDED`]), as the end-to-end test checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use filetrail_core::audit::operations::NOT_RECORDED;
use filetrail_core::audit::{KnownDrive, NormaliseContext, TrustedDomains};
use filetrail_core::events::event_key;
use m365_sim::activity::{BlobLane, PublishedBlob};
use m365_sim::{
    ActivityOutcome, ActivityRequest, FilesPerDrive, RANDOM_MAX_COUNT, RandomActivity, SimConfig, SimHandle,
};

use crate::BenchError;

/// The `p`-th percentile (0 < p <= 100) of `values` by the nearest-rank method: the smallest
/// value with at least `p`% of the values at or below it. `NaN` when `values` is empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Whether a record of `operation` on a drive becomes an event: the drive is monitored and the
/// operation is not one filetrail skips on purpose.
pub fn becomes_event(drive_monitored: bool, operation: &str) -> bool {
    drive_monitored && !NOT_RECORDED.iter().any(|(op, _)| *op == operation)
}

/// The tenant of the audit benchmarks: `users` users, each with a OneDrive of 40..80 files, no
/// team sites or groups; the Management Activity API with the simulator's defaults (blobs of up
/// to 100 records, 2% of records duplicated, 2% late).
pub fn audit_tenant(seed: u64, users: u64) -> SimConfig {
    SimConfig {
        seed,
        users,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 40, max: 80 },
        ..SimConfig::default()
    }
}

/// The OneDrive ids of users `0..users`, in user order.
pub fn drive_ids(sim: &SimHandle, users: u64) -> Result<Vec<String>, BenchError> {
    let tenant = sim.tenant();
    (0..users)
        .map(|i| {
            tenant.drive_of_user(i).map(|d| d.id).ok_or_else(|| BenchError::Stack {
                step: "listing the simulator's OneDrives".to_owned(),
                detail: format!("user {i} has no OneDrive"),
            })
        })
        .collect()
}

/// Injects `count` random activities (the injector's default mix) spread uniformly over
/// `drives`, in requests of at most [`RANDOM_MAX_COUNT`], seeded by `seed`. Returns what each activity did.
pub fn inject_random(
    sim: &SimHandle,
    drives: &[String],
    count: usize,
    seed: u64,
) -> Result<Vec<ActivityOutcome>, BenchError> {
    let mut outcomes = Vec::with_capacity(count);
    let mut left = count;
    let mut chunk_seed = seed;
    while left > 0 {
        let n = left.min(RANDOM_MAX_COUNT);
        let response = sim
            .inject_activity(&ActivityRequest {
                operations: Vec::new(),
                random: Some(RandomActivity {
                    count: n,
                    seed: chunk_seed,
                    drives: drives.to_vec(),
                    mix: None,
                    start: None,
                    step_ms: 0,
                }),
                return_records: false,
            })
            .map_err(|e| BenchError::Stack {
                step: "injecting activity into the simulator".to_owned(),
                detail: e.to_string(),
            })?;
        outcomes.extend(response.operations);
        left -= n;
        chunk_seed = chunk_seed.wrapping_add(1);
    }
    Ok(outcomes)
}

/// What `normalise_blob` is measured on: the bodies of every blob the simulator published, in
/// publishing order, and the drives the ingest would know.
#[derive(Debug, Clone)]
pub struct AuditCorpus {
    pub blobs: Vec<Vec<u8>>,
    /// Records in all blobs, duplicate copies included.
    pub records: u64,
    /// Blobs by lane (`normal`, `late`, `duplicate`).
    pub blobs_by_lane: BTreeMap<&'static str, u64>,
    /// Activities injected.
    pub operations: usize,
    /// Monitored drives (the first users'), as the ingest's context knows them.
    pub monitored: Vec<KnownDrive>,
    /// Drives that saw activity but are not monitored.
    pub unmonitored: usize,
    /// The tenant's domain, the connection's trusted domain.
    pub domain: String,
}

impl AuditCorpus {
    /// Bytes in all blobs.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.len() as u64).sum()
    }

    /// The context the ingest builds for a blob once it knows the monitored drives.
    pub fn context(&self, inserted_at: DateTime<Utc>) -> NormaliseContext {
        let mut ctx = self.bare_context(inserted_at);
        for drive in &self.monitored {
            ctx.add_drive(drive.clone());
        }
        ctx
    }

    /// The context of the ingest's first pass, which knows no drives.
    pub fn bare_context(&self, inserted_at: DateTime<Utc>) -> NormaliseContext {
        NormaliseContext::new(TrustedDomains::new([self.domain.as_str()]), inserted_at)
    }
}

fn lane_name(lane: BlobLane) -> &'static str {
    match lane {
        BlobLane::Normal => "normal",
        BlobLane::Late => "late",
        BlobLane::Duplicate => "duplicate",
        BlobLane::Direct => "direct",
    }
}

/// Builds the corpus in a simulator of its own (in this process, stopped before returning):
/// `operations` random activities over the OneDrives of users `0..users`, of which the first
/// `monitored` are monitored.
pub async fn audit_corpus(seed: u64, users: u64, monitored: u64, operations: usize) -> Result<AuditCorpus, BenchError> {
    let sim = m365_sim::spawn(audit_tenant(seed, users))
        .await
        .map_err(|e| BenchError::Stack {
            step: "starting the simulator".to_owned(),
            detail: format!("{e:#}"),
        })?;
    let drives = drive_ids(&sim, users)?;
    inject_random(&sim, &drives, operations, seed)?;
    let tenant = sim.tenant().clone();
    let mut known = Vec::new();
    for i in 0..monitored.min(users) {
        let user = tenant.user(i);
        let Some(drive) = tenant.drive_of_user(i) else {
            continue;
        };
        known.push(KnownDrive {
            drive_id: drive.id,
            owner_upn: user.user_principal_name,
            web_url: drive.web_url,
        });
    }
    let published = sim.audit().blobs();
    sim.shutdown().await;
    let mut blobs_by_lane = BTreeMap::new();
    let mut records = 0;
    let mut blobs = Vec::with_capacity(published.len());
    for blob in published {
        *blobs_by_lane.entry(lane_name(blob.lane)).or_default() += 1;
        records += blob.record_ids.len() as u64;
        blobs.push(blob.body.into_bytes());
    }
    Ok(AuditCorpus {
        blobs,
        records,
        blobs_by_lane,
        operations,
        unmonitored: drives.len() - known.len(),
        monitored: known,
        domain: tenant.domain().to_owned(),
    })
}

/// One blob whose events are awaited.
#[derive(Debug, Clone)]
struct Watched {
    available_at: DateTime<Utc>,
    /// Every record the blob holds (events or not), for the cross-check with the simulator.
    records: BTreeSet<String>,
    /// Keys of the events the blob must yield.
    expected: BTreeSet<String>,
    /// Those not read back yet.
    pending: BTreeSet<String>,
    /// When the last of them was read back.
    done_at: Option<DateTime<Utc>>,
}

/// One blob's latency: from its `contentCreated` to all its events readable.
#[derive(Debug, Clone, PartialEq)]
pub struct BlobLatency {
    pub content_id: String,
    pub available_at: DateTime<Utc>,
    pub events: usize,
    pub seconds: f64,
}

/// The blobs of injected activity that must yield events, and when their events were read back.
/// Duplicate blobs are left out: their records' events come from the first copy, so they are
/// readable before the duplicate blob exists.
#[derive(Debug, Default)]
pub struct BlobWatch {
    connection: String,
    blobs: BTreeMap<String, Watched>,
    /// Blobs that hold no record of a monitored drive that becomes an event.
    without_events: BTreeSet<String>,
}

impl BlobWatch {
    /// A watch of the events of `connection`.
    pub fn new(connection: &str) -> Self {
        Self {
            connection: connection.to_owned(),
            ..Self::default()
        }
    }

    /// Adds the blobs the records of `outcomes` went to (their first copy), with the keys of the
    /// events they must yield: records on a drive of `monitored` whose operation is recorded.
    pub fn add(&mut self, outcomes: &[ActivityOutcome], monitored: &BTreeSet<String>) {
        for op in outcomes {
            let on_monitored = monitored.contains(&op.drive_id);
            for record in &op.records {
                let (Some(content_id), Some(available_at)) = (&record.content_id, record.available_at) else {
                    continue;
                };
                let blob = self.blobs.entry(content_id.clone()).or_insert_with(|| Watched {
                    available_at,
                    records: BTreeSet::new(),
                    expected: BTreeSet::new(),
                    pending: BTreeSet::new(),
                    done_at: None,
                });
                blob.records.insert(record.id.clone());
                if becomes_event(on_monitored, &record.operation) {
                    let key = event_key(&self.connection, &record.id);
                    blob.expected.insert(key.clone());
                    blob.pending.insert(key);
                    blob.done_at = None;
                }
            }
        }
        let empty: Vec<String> = self
            .blobs
            .iter()
            .filter(|(_, b)| b.expected.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in empty {
            self.blobs.remove(&id);
            self.without_events.insert(id);
        }
    }

    /// Keys still awaited of the blobs available at `now`.
    pub fn due(&self, now: DateTime<Utc>) -> Vec<String> {
        self.blobs
            .values()
            .filter(|b| b.done_at.is_none() && b.available_at <= now)
            .flat_map(|b| b.pending.iter().cloned())
            .collect()
    }

    /// Notes that the events with `keys` were readable at `at`; a blob whose last awaited event
    /// this is is done at `at`.
    pub fn readable<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, at: DateTime<Utc>) {
        let keys: BTreeSet<&str> = keys.into_iter().collect();
        for blob in self.blobs.values_mut().filter(|b| b.done_at.is_none()) {
            blob.pending.retain(|k| !keys.contains(k.as_str()));
            if blob.pending.is_empty() {
                blob.done_at = Some(at);
            }
        }
    }

    /// Whether every watched blob is done.
    pub fn all_done(&self) -> bool {
        self.blobs.values().all(|b| b.done_at.is_some())
    }

    /// Blobs watched (those that must yield events).
    pub fn watched(&self) -> usize {
        self.blobs.len()
    }

    /// Blobs of injected activity left out because they yield no event.
    pub fn without_events(&self) -> usize {
        self.without_events.len()
    }

    /// Events awaited in all.
    pub fn expected_events(&self) -> usize {
        self.blobs.values().map(|b| b.expected.len()).sum()
    }

    /// The latest `contentCreated` of the watched blobs.
    pub fn last_available(&self) -> Option<DateTime<Utc>> {
        self.blobs.values().map(|b| b.available_at).max()
    }

    /// Blobs not done, with how many events each still awaits.
    pub fn unfinished(&self) -> Vec<(String, usize)> {
        self.blobs
            .iter()
            .filter(|(_, b)| b.done_at.is_none())
            .map(|(id, b)| (id.clone(), b.pending.len()))
            .collect()
    }

    /// The latency of each done blob, in `contentCreated` order.
    pub fn latencies(&self) -> Vec<BlobLatency> {
        let mut out: Vec<BlobLatency> = self
            .blobs
            .iter()
            .filter_map(|(id, b)| {
                let done = b.done_at?;
                Some(BlobLatency {
                    content_id: id.clone(),
                    available_at: b.available_at,
                    events: b.expected.len(),
                    seconds: (done - b.available_at).as_seconds_f64(),
                })
            })
            .collect();
        out.sort_by_key(|l| l.available_at);
        out
    }

    /// Checks the watch against what the simulator says it published: every watched blob exists,
    /// is a normal or late blob, became available when the injector said, and holds exactly the
    /// records the watch attributed to it. Returns what differs (empty when all agree).
    pub fn disagreements(&self, published: &[PublishedBlob]) -> Vec<String> {
        let by_id: HashMap<&str, &PublishedBlob> = published.iter().map(|b| (b.content_id.as_str(), b)).collect();
        let mut out = Vec::new();
        for (id, watched) in &self.blobs {
            let Some(blob) = by_id.get(id.as_str()) else {
                out.push(format!("blob {id} was not published"));
                continue;
            };
            if !matches!(blob.lane, BlobLane::Normal | BlobLane::Late) {
                out.push(format!("blob {id} is a {} blob", lane_name(blob.lane)));
            }
            if blob.content_created != watched.available_at {
                out.push(format!(
                    "blob {id} became available at {}, the injector said {}",
                    blob.content_created, watched.available_at
                ));
            }
            let records: BTreeSet<String> = blob.record_ids.iter().flatten().cloned().collect();
            if records != watched.records {
                out.push(format!(
                    "blob {id} holds {} records, the injector put {} there",
                    records.len(),
                    watched.records.len()
                ));
            }
        }
        out
    }
}

/// Seconds from `available_at` to the first poll that started at or after it: the wait polling
/// alone imposes. `None` if no poll started after it.
pub fn polling_wait(available_at: DateTime<Utc>, poll_starts: &[DateTime<Utc>]) -> Option<f64> {
    poll_starts
        .iter()
        .filter(|s| **s >= available_at)
        .min()
        .map(|s| (*s - available_at).as_seconds_f64())
}
