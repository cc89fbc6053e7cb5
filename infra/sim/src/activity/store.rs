//! The in-memory audit log: published records grouped into content blobs, subscriptions, the
//! simulated clock. Everything here is deterministic for a given seed and publishing order.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{ActivityConfig, CONTENT_RETENTION};
use crate::prng::{Rng, hash3, tag};

const K_PUBLISH: u64 = tag(b"audit-publish");
const K_BLOB_ID: u64 = tag(b"audit-blob-id");

/// A Management Activity API content type
/// (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ContentType {
    /// `Audit.AzureActiveDirectory`.
    #[serde(rename = "Audit.AzureActiveDirectory")]
    AzureActiveDirectory,
    /// `Audit.Exchange`.
    #[serde(rename = "Audit.Exchange")]
    Exchange,
    /// `Audit.SharePoint` (SharePoint and OneDrive).
    #[serde(rename = "Audit.SharePoint")]
    SharePoint,
    /// `Audit.General`.
    #[serde(rename = "Audit.General")]
    General,
    /// `DLP.All`.
    #[serde(rename = "DLP.All")]
    DlpAll,
}

impl ContentType {
    /// Every documented content type.
    pub const ALL: [Self; 5] = [
        Self::AzureActiveDirectory,
        Self::Exchange,
        Self::SharePoint,
        Self::General,
        Self::DlpAll,
    ];

    /// The wire name (`Audit.SharePoint`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AzureActiveDirectory => "Audit.AzureActiveDirectory",
            Self::Exchange => "Audit.Exchange",
            Self::SharePoint => "Audit.SharePoint",
            Self::General => "Audit.General",
            Self::DlpAll => "DLP.All",
        }
    }

    /// Parses a wire name, ignoring case; `None` for anything else (the API answers `AF20020`).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The workload tag inside content ids (`…ebspo2015043022$…` in the API reference's sample).
    fn workload_tag(self) -> &'static str {
        match self {
            Self::AzureActiveDirectory => "aad",
            Self::Exchange => "exo",
            Self::SharePoint => "spo",
            Self::General => "gen",
            Self::DlpAll => "dlp",
        }
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a blob exists, which decides when it becomes available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobLane {
    /// Available `publication_delay` after its first record.
    Normal,
    /// Second copies of records (same `Id`, keys in reverse order), available
    /// `publication_delay + late_extra_delay / 2` after its first record.
    Duplicate,
    /// Available `publication_delay + late_extra_delay` after its first record: after blobs
    /// holding newer records.
    Late,
    /// Published as one blob through `POST /_sim/audit/records` or [`super::AuditControl::publish_blob`].
    Direct,
}

/// One record as stored: JSON (rendered with its keys in natural or reversed order) or raw text
/// (rendered verbatim, for malformed-record tests).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoredRecord {
    Json { value: Value, reversed_keys: bool },
    Raw(String),
}

impl StoredRecord {
    fn id(&self) -> Option<String> {
        match self {
            Self::Json { value, .. } => value.get("Id").and_then(Value::as_str).map(str::to_owned),
            Self::Raw(_) => None,
        }
    }

    fn render(&self, out: &mut String) {
        match self {
            Self::Raw(text) => out.push_str(text),
            Self::Json {
                value: Value::Object(map),
                reversed_keys,
            } => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if *reversed_keys {
                    entries.reverse();
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    out.push_str(&v.to_string());
                }
                out.push('}');
            }
            Self::Json { value, .. } => out.push_str(&value.to_string()),
        }
    }
}

/// A content blob as the simulator holds it.
#[derive(Debug, Clone)]
pub(crate) struct Blob {
    /// Creation order, unique across content types.
    pub(crate) seq: u64,
    pub(crate) content_type: ContentType,
    pub(crate) content_id: String,
    pub(crate) opened_at: DateTime<Utc>,
    pub(crate) content_created: DateTime<Utc>,
    pub(crate) lane: BlobLane,
    pub(crate) records: Vec<StoredRecord>,
}

impl Blob {
    pub(crate) fn content_expiration(&self) -> DateTime<Utc> {
        self.content_created + retention()
    }

    /// The blob body: a JSON array of its records.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from("[");
        for (i, r) in self.records.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            r.render(&mut out);
        }
        out.push(']');
        out
    }

    fn summary(&self) -> PublishedBlob {
        PublishedBlob {
            content_type: self.content_type,
            content_id: self.content_id.clone(),
            content_created: self.content_created,
            content_expiration: self.content_expiration(),
            lane: self.lane,
            record_ids: self.records.iter().map(StoredRecord::id).collect(),
            body: self.render(),
        }
    }
}

/// Ground truth about one blob: what it holds and when it is (or was) available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedBlob {
    /// The content type.
    pub content_type: ContentType,
    /// The opaque content id (contains `$`).
    pub content_id: String,
    /// When the blob becomes (became) available.
    pub content_created: DateTime<Utc>,
    /// `content_created` + 7 days.
    pub content_expiration: DateTime<Utc>,
    /// Why the blob exists.
    pub lane: BlobLane,
    /// The `Id` of each record in order (`None` for records without a string `Id`).
    pub record_ids: Vec<Option<String>>,
    /// The body `GET {contentUri}` serves.
    pub body: String,
}

/// What [`AuditLog::publish`] did with a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The blob the record went into.
    pub content_id: String,
    /// When that blob becomes available.
    pub available_at: DateTime<Utc>,
    /// Whether that blob is a late one.
    pub late: bool,
    /// The blob holding the duplicate copy, if the record is duplicated.
    pub duplicate_content_id: Option<String>,
}

/// Why a subscription is disabled (AF20023's two documented wordings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledBy {
    /// "The subscription was disabled by a tenant admin."
    TenantAdmin,
    /// "The subscription was disabled by a service admin."
    ServiceAdmin,
}

impl DisabledBy {
    pub(crate) fn phrase(self) -> &'static str {
        match self {
            Self::TenantAdmin => "a tenant admin",
            Self::ServiceAdmin => "a service admin",
        }
    }
}

/// A subscription's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Subscription {
    pub(crate) disabled: Option<DisabledBy>,
    pub(crate) webhook: Option<Value>,
    /// Whether it is started (false after `stop`).
    pub(crate) started: bool,
    /// Content that became available while stopped is never listed (the API reference "Stop a
    /// subscription"): `(stopped_at, restarted_at)` pairs, the last one open while stopped.
    pub(crate) stopped: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

/// The subscription state of one content type as a test sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Never started, or stopped.
    None,
    /// Started and enabled.
    Enabled,
    /// Started but disabled by an admin (AF20023).
    Disabled,
}

fn retention() -> TimeDelta {
    TimeDelta::from_std(CONTENT_RETENTION).unwrap_or(TimeDelta::days(7))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[derive(Debug, Default)]
struct Blobs {
    /// Every blob ever created, in creation order.
    all: Vec<Blob>,
    /// Index in `all` by content id.
    by_id: HashMap<String, usize>,
    /// The blob still accepting records, per content type and lane.
    open: HashMap<(ContentType, BlobLaneKey), usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BlobLaneKey {
    Normal,
    Duplicate,
    Late,
}

/// The tenant's audit log and its Management Activity API state. Shared by the HTTP handlers,
/// the activity injector and [`super::AuditControl`].
#[derive(Debug)]
pub(crate) struct AuditLog {
    seed: u64,
    tenant_id: String,
    config: RwLock<ActivityConfig>,
    clock_offset_ms: AtomicI64,
    audit_log_enabled: AtomicBool,
    /// Audit-clock instant (ms since the epoch) from which a log turned on takes effect.
    audit_log_effective_ms: AtomicI64,
    publish_seq: AtomicU64,
    pub(crate) fault_seq: AtomicU64,
    blobs: Mutex<Blobs>,
    pub(crate) subscriptions: Mutex<HashMap<ContentType, Subscription>>,
}

impl AuditLog {
    pub(crate) fn new(config: &ActivityConfig, seed: u64, tenant_id: &str) -> Self {
        Self {
            seed,
            tenant_id: tenant_id.to_owned(),
            audit_log_enabled: AtomicBool::new(config.audit_log_enabled),
            audit_log_effective_ms: AtomicI64::new(i64::MIN),
            config: RwLock::new(config.clone()),
            clock_offset_ms: AtomicI64::new(0),
            publish_seq: AtomicU64::new(0),
            fault_seq: AtomicU64::new(0),
            blobs: Mutex::new(Blobs::default()),
            subscriptions: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The settings in force.
    pub(crate) fn config(&self) -> ActivityConfig {
        self.config
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the settings (publishing, paging, faults); an invalid one is refused.
    /// `audit_log_enabled` is applied too (see [`Self::set_audit_log_enabled`]).
    pub(crate) fn set_config(&self, config: ActivityConfig) -> Result<(), String> {
        config.validate()?;
        let enabled = config.audit_log_enabled;
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
        self.set_audit_log_enabled(enabled);
        Ok(())
    }

    /// The audit clock: wall-clock UTC plus the offset moved by [`Self::advance_clock`].
    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.clock_offset_ms.load(Ordering::SeqCst))
    }

    /// Moves the audit clock forward (content becomes available, then expires, sooner).
    pub(crate) fn advance_clock(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.clock_offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// Whether the unified audit log is on and in effect.
    pub(crate) fn audit_log_enabled(&self) -> bool {
        self.audit_log_enabled.load(Ordering::SeqCst)
            && self.now().timestamp_millis() >= self.audit_log_effective_ms.load(Ordering::SeqCst)
    }

    /// Turns the tenant's unified audit log on or off. Turning it on takes effect after
    /// `audit_log_enable_delay` on the audit clock (up to 60 minutes upstream,
    /// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>);
    /// turning it off, at once.
    pub(crate) fn set_audit_log_enabled(&self, enabled: bool) {
        let was = self.audit_log_enabled.swap(enabled, Ordering::SeqCst);
        let delay = {
            let mut cfg = self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            cfg.audit_log_enabled = enabled;
            cfg.audit_log_enable_delay
        };
        if enabled && !was {
            let from = self.now() + delta(delay);
            self.audit_log_effective_ms
                .store(from.timestamp_millis(), Ordering::SeqCst);
        }
    }

    /// Publishes one audit record: it goes into the open blob of its content type (a new blob
    /// when there is none, it is full, its window has passed or it is already available), which
    /// becomes available after the publication delay; a seeded draw may instead put it into a
    /// late blob and may also copy it into a duplicate blob. `now` is the publication instant on
    /// the audit clock ([`Self::now`]). Never fails: the record is stored as given, whatever its
    /// shape.
    pub(crate) fn publish(&self, content_type: ContentType, record: Value, now: DateTime<Utc>) -> Published {
        let cfg = self.config();
        let n = self.publish_seq.fetch_add(1, Ordering::SeqCst);
        let mut rng = Rng::new(hash3(self.seed, K_PUBLISH, n));
        let late = rng.chance(cfg.late_rate);
        let duplicate = rng.chance(cfg.duplicate_rate);
        let mut blobs = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lane = if late { BlobLaneKey::Late } else { BlobLaneKey::Normal };
        let at = self.open_blob(&mut blobs, &cfg, content_type, lane, now);
        blobs.all[at].records.push(StoredRecord::Json {
            value: record.clone(),
            reversed_keys: false,
        });
        let (content_id, available_at) = (blobs.all[at].content_id.clone(), blobs.all[at].content_created);
        let duplicate_content_id = duplicate.then(|| {
            let d = self.open_blob(&mut blobs, &cfg, content_type, BlobLaneKey::Duplicate, now);
            blobs.all[d].records.push(StoredRecord::Json {
                value: record,
                reversed_keys: true,
            });
            blobs.all[d].content_id.clone()
        });
        tracing::debug!(%content_type, content_id, late, duplicate, "audit record published");
        Published {
            content_id,
            available_at,
            late,
            duplicate_content_id,
        }
    }

    /// Publishes `records` as one new blob of their own, available at `content_created` (default:
    /// `now` + the publication delay). No duplicates, no late copies: what is given is what is
    /// served.
    pub(crate) fn publish_blob(
        &self,
        content_type: ContentType,
        records: Vec<StoredRecord>,
        now: DateTime<Utc>,
        content_created: Option<DateTime<Utc>>,
    ) -> PublishedBlob {
        let cfg = self.config();
        let created = content_created.unwrap_or(now + delta(cfg.publication_delay));
        let mut blobs = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let at = self.new_blob(&mut blobs, content_type, BlobLane::Direct, now, created);
        blobs.all[at].records = records;
        blobs.all[at].summary()
    }

    fn open_blob(
        &self,
        blobs: &mut Blobs,
        cfg: &ActivityConfig,
        content_type: ContentType,
        lane: BlobLaneKey,
        now: DateTime<Utc>,
    ) -> usize {
        if let Some(&at) = blobs.open.get(&(content_type, lane)) {
            let b = &blobs.all[at];
            if now < b.opened_at + delta(cfg.blob_window)
                && now < b.content_created
                && b.records.len() < cfg.max_records_per_blob
            {
                return at;
            }
        }
        let (kind, extra) = match lane {
            BlobLaneKey::Normal => (BlobLane::Normal, Duration::ZERO),
            BlobLaneKey::Duplicate => (BlobLane::Duplicate, cfg.late_extra_delay / 2),
            BlobLaneKey::Late => (BlobLane::Late, cfg.late_extra_delay),
        };
        let created = now + delta(cfg.publication_delay) + delta(extra);
        let at = self.new_blob(blobs, content_type, kind, now, created);
        blobs.open.insert((content_type, lane), at);
        at
    }

    fn new_blob(
        &self,
        blobs: &mut Blobs,
        content_type: ContentType,
        lane: BlobLane,
        now: DateTime<Utc>,
        content_created: DateTime<Utc>,
    ) -> usize {
        // The API states times to the millisecond (`contentCreated`, and the `nextPage` cursor
        // built from it): a finer time would make two blobs of one millisecond page forever.
        let content_created = content_created
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap_or(content_created);
        let seq = blobs.all.len() as u64;
        let content_id = self.content_id(content_type, seq, content_created);
        blobs.by_id.insert(content_id.clone(), blobs.all.len());
        blobs.all.push(Blob {
            seq,
            content_type,
            content_id,
            opened_at: now,
            content_created,
            lane,
            records: Vec::new(),
        });
        blobs.all.len() - 1
    }

    /// A content id shaped like the API reference's samples:
    /// `{n}${n}${tenant hex}{workload}{yyyyMMddHH}${32 hex}$04`.
    fn content_id(&self, content_type: ContentType, seq: u64, created: DateTime<Utc>) -> String {
        let n = 100_000_000_000 + (created.timestamp_millis().unsigned_abs() / 1000 % 900_000_000_000);
        let tenant: String = self.tenant_id.chars().filter(char::is_ascii_hexdigit).collect();
        let h = format!(
            "{:016x}{:016x}",
            hash3(self.seed, K_BLOB_ID, seq),
            hash3(self.seed, K_BLOB_ID, !seq)
        );
        format!(
            "{n}${n}${}{}{}${h}$04",
            tenant.to_ascii_lowercase(),
            content_type.workload_tag(),
            created.format("%Y%m%d%H")
        )
    }

    /// Whether `id` has the shape of a content id this service issues (else AF20052).
    pub(crate) fn is_well_formed_id(id: &str) -> bool {
        let parts: Vec<&str> = id.split('$').collect();
        parts.len() == 5
            && parts[..2]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && parts[2].len() > 32
            && parts[2].bytes().all(|b| b.is_ascii_alphanumeric())
            && parts[3].len() == 32
            && parts[3].bytes().all(|b| b.is_ascii_hexdigit())
            && parts[4].len() == 2
            && parts[4].bytes().all(|b| b.is_ascii_digit())
    }

    /// The blob with this id, available or not.
    pub(crate) fn blob(&self, content_id: &str) -> Option<Blob> {
        let blobs = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        blobs.by_id.get(content_id).map(|&i| blobs.all[i].clone())
    }

    /// Available blobs of `content_type` with `start <= contentCreated < end`, in the order they
    /// became available (then creation order), leaving out content that became available while
    /// the subscription was stopped.
    pub(crate) fn available(
        &self,
        content_type: ContentType,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<Blob> {
        let stopped = self
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&content_type)
            .map(|s| s.stopped.clone())
            .unwrap_or_default();
        let blobs = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<Blob> = blobs
            .all
            .iter()
            .filter(|b| {
                b.content_type == content_type
                    && b.content_created <= now
                    && start <= b.content_created
                    && b.content_created < end
                    && !b.records.is_empty()
                    && !stopped
                        .iter()
                        .any(|(from, to)| *from <= b.content_created && to.is_none_or(|to| b.content_created < to))
            })
            .cloned()
            .collect();
        out.sort_by_key(|b| (b.content_created, b.seq));
        out
    }

    /// Ground truth: every blob created so far (available or not), in creation order.
    pub(crate) fn blobs(&self) -> Vec<PublishedBlob> {
        let blobs = self.blobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        blobs
            .all
            .iter()
            .filter(|b| !b.records.is_empty())
            .map(Blob::summary)
            .collect()
    }

    /// The state of a content type's subscription.
    pub(crate) fn subscription_state(&self, content_type: ContentType) -> SubscriptionState {
        let subs = self
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match subs.get(&content_type) {
            Some(s) if s.started && s.disabled.is_some() => SubscriptionState::Disabled,
            Some(s) if s.started => SubscriptionState::Enabled,
            _ => SubscriptionState::None,
        }
    }

    /// Disables a started subscription (as an admin would); returns `false` if there is none.
    pub(crate) fn disable_subscription(&self, content_type: ContentType, by: DisabledBy) -> bool {
        let mut subs = self
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match subs.get_mut(&content_type) {
            Some(s) if s.started => {
                s.disabled = Some(by);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn log(cfg: ActivityConfig) -> AuditLog {
        AuditLog::new(&cfg, 7, "41463f53-8812-40f4-890f-865bf6e35190")
    }

    fn record(i: u32) -> Value {
        serde_json::json!({"Id": format!("id-{i}"), "CreationTime": "2026-01-01T00:00:00", "Operation": "FileModified"})
    }

    #[test]
    fn records_published_together_share_a_blob_that_appears_after_the_delay() {
        let cfg = ActivityConfig {
            duplicate_rate: 0.0,
            late_rate: 0.0,
            ..ActivityConfig::default()
        };
        let log = log(cfg);
        let now = log.now();
        let a = log.publish(ContentType::SharePoint, record(1), now);
        let b = log.publish(ContentType::SharePoint, record(2), now);
        assert_eq!(a.content_id, b.content_id);
        // To the millisecond, as the API states contentCreated.
        let expected = (now + TimeDelta::seconds(2))
            .duration_trunc(TimeDelta::milliseconds(1))
            .unwrap();
        assert_eq!(a.available_at, expected);
        assert!(
            log.available(ContentType::SharePoint, now, now + TimeDelta::hours(1), now)
                .is_empty()
        );
        let later = now + TimeDelta::seconds(3);
        let listed = log.available(ContentType::SharePoint, now, later, later);
        assert_eq!(listed.len(), 1);
        assert!(
            AuditLog::is_well_formed_id(&listed[0].content_id),
            "{}",
            listed[0].content_id
        );
        let body: Value = serde_json::from_str(&listed[0].render()).unwrap();
        assert_eq!(body.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn duplicates_reverse_key_order_and_late_blobs_come_after_newer_ones() {
        let cfg = ActivityConfig {
            duplicate_rate: 1.0,
            late_rate: 0.0,
            ..ActivityConfig::default()
        };
        let log = log(cfg);
        let now = log.now();
        let p = log.publish(ContentType::SharePoint, record(1), now);
        let dup = p.duplicate_content_id.expect("duplicated");
        assert_ne!(dup, p.content_id);
        let original = log.blob(&p.content_id).unwrap().render();
        let copy = log.blob(&dup).unwrap().render();
        assert_ne!(original, copy, "different key order");
        let (a, b): (Value, Value) = (
            serde_json::from_str(&original).unwrap(),
            serde_json::from_str(&copy).unwrap(),
        );
        assert_eq!(a, b, "same record");

        let cfg = ActivityConfig {
            duplicate_rate: 0.0,
            late_rate: 1.0,
            ..ActivityConfig::default()
        };
        log.set_config(cfg).unwrap();
        let late = log.publish(ContentType::SharePoint, record(2), now);
        log.set_config(ActivityConfig {
            late_rate: 0.0,
            duplicate_rate: 0.0,
            ..ActivityConfig::default()
        })
        .unwrap();
        let newer = log.publish(ContentType::SharePoint, record(3), now + TimeDelta::seconds(2));
        assert!(late.late);
        assert!(newer.available_at < late.available_at);
    }

    #[test]
    fn the_same_seed_and_order_give_the_same_blobs() {
        let cfg = ActivityConfig {
            duplicate_rate: 0.3,
            late_rate: 0.3,
            ..ActivityConfig::default()
        };
        let (x, y) = (log(cfg.clone()), log(cfg));
        let now = Utc::now();
        for i in 0..50 {
            let t = now + TimeDelta::milliseconds(i64::from(i) * 300);
            assert_eq!(
                x.publish(ContentType::SharePoint, record(i), t),
                y.publish(ContentType::SharePoint, record(i), t)
            );
        }
        assert_eq!(x.blobs(), y.blobs());
    }
}
