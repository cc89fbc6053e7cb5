//! Settings of the simulated Office 365 Management Activity API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long content stays retrievable after it became available: `contentExpiration` =
/// `contentCreated` + 7 days (`AF20051`: "Content older than 7 days cannot be retrieved", "Errors"
/// in <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const CONTENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Widest `/subscriptions/content` window: 24 hours (`AF20030`'s message, "Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const MAX_CONTENT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How far back `startTime` may reach: 7 days (`AF20030`'s message, "Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const MAX_START_AGE: Duration = CONTENT_RETENTION;
/// Default publication delay for local runs: 2 s. The real service typically takes 60–90
/// minutes for SharePoint/OneDrive events
/// (<https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>);
/// tests and the demo cannot wait that long.
pub const PUBLICATION_DELAY_DEFAULT: Duration = Duration::from_secs(2);
/// Default number of content blobs per `/subscriptions/content` page (undocumented upstream:
/// "the number of results returned is limited"; 100 is our choice).
pub const CONTENT_PAGE_SIZE_DEFAULT: usize = 100;

/// The paging header the API reference documents ("Pagination").
pub const NEXT_PAGE_HEADER_DEFAULT: &str = "NextPageUri";

/// The Management Activity API's behaviour: publication latency, blob grouping, duplicates, late
/// blobs, paging and its own faults (`AF429`, `AF50000`). Deserialisation fills missing fields with
/// their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivityConfig {
    /// Whether the tenant's unified audit log is on. When off, every Management API call fails
    /// with `…DataServiceException: Tenant <tenantID> does not exist.`
    /// (<https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
    pub audit_log_enabled: bool,
    /// How long turning the audit log on takes to apply, on the audit clock (upstream: up to 60
    /// minutes,
    /// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
    /// Default 0: at once.
    #[serde(with = "millis")]
    pub audit_log_enable_delay: Duration,
    /// Whether the app's Management API tokens carry the `ActivityFeed.Read` role (admin consent
    /// granted). When off, tokens carry no `roles` claim and every call is refused with `AF10001`.
    pub activity_feed_read_granted: bool,
    /// Time from publishing a record to its blob becoming available (`contentCreated`).
    #[serde(with = "millis")]
    pub publication_delay: Duration,
    /// Records published within this time of a blob's first record share that blob (while it is
    /// not yet available and holds fewer than `max_records_per_blob`).
    #[serde(with = "millis")]
    pub blob_window: Duration,
    /// Most records in one blob.
    pub max_records_per_blob: usize,
    /// Share of published records that are delivered a second time, in another blob that becomes
    /// available later, with their keys in another order (duplicates are expected by design:
    /// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
    pub duplicate_rate: f64,
    /// Share of published records that go into a *late* blob: available `late_extra_delay` after
    /// the normal delay, so it comes after blobs holding newer records (blobs are not in event order:
    /// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
    pub late_rate: f64,
    /// Extra delay of late blobs; duplicate blobs get half of it.
    #[serde(with = "millis")]
    pub late_extra_delay: Duration,
    /// Content blobs per `/subscriptions/content` page before a `NextPageUri` header is sent.
    pub content_page_size: usize,
    /// Name of the paging header: `NextPageUri` per the API reference ("Pagination"); its FAQ says
    /// `NextPageUrl`
    /// (<https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>),
    /// so clients must accept both.
    pub next_page_header: String,
    /// Share of Management API calls answered `AF429` (too many requests).
    pub af429_rate: f64,
    /// Share of those `AF429` answers sent as HTTP 429 with `Retry-After` instead of the
    /// documented HTTP 403 with a single-quoted body.
    pub af429_as_429_share: f64,
    /// `Retry-After` range in seconds `(min, max)` of the HTTP 429 variant.
    pub retry_after_secs: (f64, f64),
    /// Share of Management API calls answered 500 `AF50000`.
    pub af50000_rate: f64,
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            audit_log_enabled: true,
            audit_log_enable_delay: Duration::ZERO,
            activity_feed_read_granted: true,
            publication_delay: PUBLICATION_DELAY_DEFAULT,
            blob_window: Duration::from_secs(1),
            max_records_per_blob: 100,
            duplicate_rate: 0.02,
            late_rate: 0.02,
            late_extra_delay: Duration::from_secs(6),
            content_page_size: CONTENT_PAGE_SIZE_DEFAULT,
            next_page_header: NEXT_PAGE_HEADER_DEFAULT.to_owned(),
            af429_rate: 0.0,
            af429_as_429_share: 0.3,
            retry_after_secs: (0.05, 0.5),
            af50000_rate: 0.0,
        }
    }
}

impl ActivityConfig {
    /// Checks rates and sizes; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("duplicate_rate", self.duplicate_rate),
            ("late_rate", self.late_rate),
            ("af429_rate", self.af429_rate),
            ("af429_as_429_share", self.af429_as_429_share),
            ("af50000_rate", self.af50000_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("activity.{name} must be within 0..=1, got {r}"));
            }
        }
        if self.af429_rate + self.af50000_rate > 1.0 + 1e-9 {
            return Err("activity.af429_rate + activity.af50000_rate must not exceed 1".into());
        }
        if self.max_records_per_blob == 0 {
            return Err("activity.max_records_per_blob must be at least 1".into());
        }
        if axum::http::HeaderName::from_bytes(self.next_page_header.as_bytes()).is_err() {
            return Err(format!(
                "activity.next_page_header must be a valid header name, got '{}'",
                self.next_page_header
            ));
        }
        if self.content_page_size == 0 {
            return Err("activity.content_page_size must be at least 1".into());
        }
        let (lo, hi) = self.retry_after_secs;
        if !(lo.is_finite() && hi.is_finite()) || lo < 0.0 || hi < lo {
            return Err(format!(
                "activity.retry_after_secs must be (min, max) with 0 <= min <= max, got ({lo}, {hi})"
            ));
        }
        Ok(())
    }
}

/// Durations as integer milliseconds in JSON (`"publication_delay": 2000`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}
