//! The audit feed's records of its own work, shared by the poll and ingest use cases
//! ([`crate::activity`]), their ports and the queues: content blobs and pages, the poll's
//! checkpoint, what ingesting a blob produced and why records were dropped, blobs parked until
//! discovery places their records.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ConnectionError;

/// The content type carrying SharePoint and OneDrive activity.
pub const SHAREPOINT_CONTENT_TYPE: &str = "Audit.SharePoint";

/// How long the feed keeps content (`contentExpiration` = created + 7 days; "List available
/// content" and "Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub fn retention() -> Duration {
    Duration::days(7)
}

/// The longest window one listing may ask for ("List available content" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub fn max_window() -> Duration {
    Duration::hours(24)
}

/// A content blob as the feed lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentBlob {
    pub content_type: String,
    pub content_id: String,
    /// Verbatim: it contains `$` characters that must not be re-encoded.
    pub content_uri: String,
    pub content_created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_expiration: Option<DateTime<Utc>>,
}

impl ContentBlob {
    /// When the feed stops serving the blob.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.content_expiration
            .unwrap_or_else(|| self.content_created + retention())
    }
}

/// One page of a content listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentPage {
    pub blobs: Vec<ContentBlob>,
    /// The `NextPageUri` header, verbatim; `None` on the last page.
    pub next_page: Option<String>,
}

/// A listing window not finished yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWindow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// The page to list next.
    pub next_page: String,
}

/// Where polling one connection's content type stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityCheckpoint {
    /// Content that became available before this instant is listed and enqueued.
    pub listed_until: DateTime<Utc>,
    /// A window whose listing stopped between pages (a time budget, a throttled page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<OpenWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_poll_at: Option<DateTime<Utc>>,
    /// The end of the last poll that listed everything up to its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    /// Blobs enqueued by this connection's polls so far.
    #[serde(default)]
    pub blobs_enqueued: u64,
    /// Why the last poll could not list, until a poll succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ConnectionError>,
}

/// What ingesting one blob produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCounts {
    pub records: u64,
    /// Events of monitored drives written for the first time.
    pub events_inserted: u64,
    /// Events of monitored drives already stored (a duplicate record or a redelivery).
    pub events_duplicate: u64,
    /// OneDrive events of drives that are not monitored.
    pub events_unmonitored: u64,
    /// Records skipped by rule (other workloads, operations not recorded…).
    pub skipped: u64,
    pub quarantined: u64,
    pub hash_jobs: u64,
    /// Drives given an incremental index round.
    #[serde(default)]
    pub index_jobs: u64,
    /// The blob had expired before it could be fetched.
    #[serde(default)]
    pub expired: bool,
    pub ingested_at: Option<DateTime<Utc>>,
    /// Records not turned into events, by why (a [`drop_reason`] or a skip code): every
    /// record is an event, parked, quarantined or counted here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, u64>,
    /// Records of OneDrives not known yet, kept for a later pass ([`ParkedBlob`]).
    #[serde(default)]
    pub parked: u64,
    /// How many times the blob was ingested (a parked blob is ingested again).
    #[serde(default)]
    pub passes: u64,
}

impl BlobCounts {
    /// This pass's counts carried over the earlier passes of the same blob (`previous`): events
    /// inserted by an earlier pass count as inserted, not as duplicates of this one.
    #[must_use]
    pub fn after(mut self, previous: Option<&BlobCounts>) -> Self {
        let Some(prev) = previous else {
            self.passes = 1;
            return self;
        };
        let carried = prev.events_inserted.min(self.events_duplicate);
        self.events_inserted += carried;
        self.events_duplicate -= carried;
        self.hash_jobs += prev.hash_jobs;
        self.index_jobs += prev.index_jobs;
        self.passes = prev.passes.max(1) + 1;
        self
    }

    /// Adds one record dropped for `reason`.
    pub fn drop_record(&mut self, reason: &str) {
        *self.dropped.entry(reason.to_owned()).or_default() += 1;
    }
}

/// What ingesting a connection's blobs produced, summed over the ingest records kept (a month).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BlobTotals {
    /// Blobs with an ingest record.
    pub blobs: u64,
    pub records: u64,
    pub events_inserted: u64,
    pub events_duplicate: u64,
    pub events_unmonitored: u64,
    pub skipped: u64,
    pub quarantined: u64,
    pub hash_jobs: u64,
    pub index_jobs: u64,
    /// Blobs that expired before they could be fetched.
    pub expired: u64,
    /// Records not turned into events, by reason ([`BlobCounts::dropped`]).
    pub dropped: BTreeMap<String, u64>,
    /// Records parked now (the latest pass of each blob).
    pub parked: u64,
    pub last_ingested_at: Option<DateTime<Utc>>,
}

impl BlobTotals {
    pub fn add(&mut self, c: &BlobCounts) {
        self.blobs += 1;
        self.records += c.records;
        self.events_inserted += c.events_inserted;
        self.events_duplicate += c.events_duplicate;
        self.events_unmonitored += c.events_unmonitored;
        self.skipped += c.skipped;
        self.quarantined += c.quarantined;
        self.hash_jobs += c.hash_jobs;
        self.index_jobs += c.index_jobs;
        self.expired += u64::from(c.expired);
        for (reason, n) in &c.dropped {
            *self.dropped.entry(reason.clone()).or_default() += n;
        }
        self.parked += c.parked;
        self.last_ingested_at = self.last_ingested_at.max(c.ingested_at);
    }
}

/// Why a record of the feed did not become an event, besides the normaliser's skip codes
/// ([`crate::audit::SkipReason::code`]).
pub mod drop_reason {
    /// The record's OneDrive is known and outside the connection's scope.
    pub const DRIVE_NOT_MONITORED: &str = "drive_not_monitored";
    /// No monitored user owns the record's OneDrive: a discovery run of the current scope that
    /// started after the record happened did not find it (out of scope, or over the drive cap).
    pub const OWNER_NOT_MONITORED: &str = "owner_not_monitored";
    /// The record names no personal site (it cannot belong to a OneDrive).
    pub const NOT_PERSONAL_SITE: &str = "not_personal_site";
    /// The record was parked and its blob expired (the feed's 7-day retention) before a
    /// discovery run could tell whose OneDrive it belongs to.
    pub const EXPIRED_WHILE_PARKED: &str = "expired_while_parked";

    /// What each reason means, for status and docs.
    pub fn describe(reason: &str) -> &'static str {
        match reason {
            DRIVE_NOT_MONITORED => "the OneDrive is outside the connection's scope",
            OWNER_NOT_MONITORED => "no monitored user owns the OneDrive (outside the scope or over the drive cap)",
            NOT_PERSONAL_SITE => "not in a personal OneDrive site",
            EXPIRED_WHILE_PARKED => "parked, and its content expired before discovery could place it",
            "not_onedrive" => "a team or communication site, or another workload",
            "record_type" => "a record type without file activity",
            "not_recorded" => "an operation filetrail does not record",
            "not_a_file" => "about a list or page, not a file",
            "library_page" => "a library's own view page",
            _ => "other",
        }
    }
}

/// A blob with records whose OneDrive no discovery has recorded yet. They are not dropped: the
/// blob stays here until a finished discovery run of the current scope can place every record
/// (its drive found, or its owner shown to be outside the scope), when the blob is ingested
/// again (events are written once, so the records already stored are not repeated). Parked
/// blobs expire only with the feed's own retention of the content, and status shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedBlob {
    pub blob: ContentBlob,
    /// When the blob was first parked.
    pub parked_at: DateTime<Utc>,
    /// When it was parked by its latest pass.
    pub updated_at: DateTime<Utc>,
    /// Records waiting for their drive.
    pub records: u64,
    /// The oldest of those records (when it happened).
    pub oldest_record: DateTime<Utc>,
    /// The personal site keys nobody has placed yet (`alice_contoso_com`).
    pub site_keys: Vec<String>,
    /// Not read yet: the connection could not fetch it (deauthorized when it came); its
    /// records are counted once it is read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unread: bool,
}

/// Connection error codes set by the audit feed carry this prefix, so a poll that succeeds
/// clears its own error and never another component's.
pub const ACTIVITY_ERROR_PREFIX: &str = "activity:";
