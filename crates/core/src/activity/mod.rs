//! The audit feed: polling the Management Activity API for content blobs ([`poll`]) and
//! ingesting each blob into file events ([`ingest`]).
//!
//! Polling lists what became available since its checkpoint in windows of at most 24 hours
//! within the 7-day retention (FACTS §12: the window filters on `contentCreated`, start
//! inclusive, end exclusive), page by page, and enqueues each blob once: blobs already enqueued
//! are remembered by content id past the retention, and a trailing overlap is listed again on
//! every poll so blobs that show up late in a window already listed are still caught. The
//! checkpoint moves only after a page's blobs are enqueued, so a crash lists that page again
//! and the dedupe keeps it from being enqueued twice.
//!
//! Ingesting normalises a blob ([`crate::audit`]), keeps the events of monitored drives (the
//! file owner's drive: activity of a monitored user on someone else's unmonitored drive is not
//! captured), resolves their items, writes each event once (keyed by the record `Id`, which the
//! feed repeats by design), quarantines what cannot be normalised and asks for hashes.

pub mod ingest;
pub mod poll;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::model::ConnectionError;

/// The content type carrying SharePoint and OneDrive activity.
pub const SHAREPOINT_CONTENT_TYPE: &str = "Audit.SharePoint";

/// How long the feed keeps content (FACTS §12: `contentExpiration` = created + 7 days).
pub fn retention() -> Duration {
    Duration::days(7)
}

/// The longest window one listing may ask for (FACTS §12).
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
}

/// Connection error codes set by the audit feed carry this prefix, so a poll that succeeds
/// clears its own error and never another component's.
pub const ACTIVITY_ERROR_PREFIX: &str = "activity:";
