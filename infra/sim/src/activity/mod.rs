//! The Office 365 Management Activity API
//! (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>),
//! served at the simulator's origin: `/api/v1.0/{tenant_id}/activity/feed/…` (also `/api/v1/…`,
//! the version the reference's `NextPageUri` sample shows).
//!
//! # Publishing API (for the activity injector)
//!
//! Audit records enter the log through one crate-visible call, stable for other modules:
//!
//! ```ignore
//! // state: &SimState
//! let now = state.activity.now();                       // the audit clock (see below)
//! let published: Published = state.activity.publish(ContentType::SharePoint, record, now);
//! ```
//!
//! - `publish(content_type: ContentType, record: serde_json::Value, now: DateTime<Utc>) ->
//!   Published` stores the record as given (any shape; normalisation is the consumer's job) in the
//!   open blob of that content type. The blob becomes available (`contentCreated`) at
//!   `now + publication_delay`; records published within `blob_window` of the blob's first record
//!   share it (up to `max_records_per_blob`). Seeded draws (by publishing order) put a share
//!   `late_rate` of records into *late* blobs (available `late_extra_delay` later, after blobs with
//!   newer records) and copy a share `duplicate_rate` into *duplicate* blobs (same `Id`, keys in
//!   reverse order, available `late_extra_delay / 2` later). [`Published`] tells where it went.
//! - `now()` is the audit clock: wall-clock UTC plus what [`AuditControl::advance_clock`] added.
//!   Pass it as `now` unless a specific publication instant is wanted.
//! - `publish_blob(content_type, records, now, content_created)` publishes records as one blob of
//!   their own (no duplicates, no late copies); `POST /_sim/audit/records` is its HTTP form.
//!
//! # Behaviour (documented service, quirks included)
//! - Tokens: Management API audience (`https://manage.office.com`) only; `tid` must equal the URL
//!   tenant (else `AF20010`); the `ActivityFeed.Read` role must be present (else `AF10001`, 401).
//! - `PublisherIdentifier` is accepted on every call and counted (with/without) in the stats.
//! - Unified audit log off: every call fails 400 with the `StartSubscription […] failed.
//!   Exception: Microsoft.Office.Compliance.Audit.DataServiceException: Tenant <id> does not
//!   exist.` body real tenants get.
//! - Faults: `AF429` as HTTP 403 with the single-quoted body of the API FAQ (or, for a share, as 429
//!   with `Retry-After`), `AF50000` as 500; seeded by a request counter like the Graph faults.
//!
//! See infra/sim/README.md for the HTTP surface and every error.

mod api;
pub mod config;
mod store;
mod window;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::Value;

pub use config::ActivityConfig;
pub use store::{BlobLane, ContentType, DisabledBy, Published, PublishedBlob, SubscriptionState};

pub(crate) use api::ActivityCounters;
pub use api::ActivityStats;
pub(crate) use store::{AuditLog, StoredRecord};

use crate::server::SimState;

/// The routes of the Management Activity API and its `/_sim/audit` controls.
pub(crate) fn routes() -> Router<Arc<SimState>> {
    api::routes()
}

/// Controls and ground truth of the simulated audit log, from Rust (tests, benches). Cheap to
/// clone.
#[derive(Clone)]
pub struct AuditControl {
    pub(crate) state: Arc<SimState>,
}

impl AuditControl {
    fn log(&self) -> &AuditLog {
        &self.state.activity
    }

    /// The audit clock (wall clock plus [`Self::advance_clock`]).
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        self.log().now()
    }

    /// Moves the audit clock forward: pending blobs become available, old ones expire (AF20051).
    pub fn advance_clock(&self, by: Duration) {
        self.log().advance_clock(by);
    }

    /// Publishes one audit record now (see the module doc for grouping, duplicates, late blobs).
    pub fn publish(&self, content_type: ContentType, record: Value) -> Published {
        let now = self.log().now();
        self.log().publish(content_type, record, now)
    }

    /// Publishes `records` as one blob available at `content_created` (default: now + the
    /// publication delay). Records are served verbatim.
    pub fn publish_blob(
        &self,
        content_type: ContentType,
        records: Vec<Value>,
        content_created: Option<DateTime<Utc>>,
    ) -> PublishedBlob {
        let now = self.log().now();
        let records = records
            .into_iter()
            .map(|value| StoredRecord::Json {
                value,
                reversed_keys: false,
            })
            .collect();
        self.log().publish_blob(content_type, records, now, content_created)
    }

    /// Publishes raw texts as the records of one blob (e.g. a record that is not JSON).
    pub fn publish_raw_blob(
        &self,
        content_type: ContentType,
        records: Vec<String>,
        content_created: Option<DateTime<Utc>>,
    ) -> PublishedBlob {
        let now = self.log().now();
        let records = records.into_iter().map(StoredRecord::Raw).collect();
        self.log().publish_blob(content_type, records, now, content_created)
    }

    /// Ground truth: every blob created so far, available or not, in creation order.
    #[must_use]
    pub fn blobs(&self) -> Vec<PublishedBlob> {
        self.log().blobs()
    }

    /// Ground truth: every published record in publishing order of its blob, duplicates
    /// included (parsed; raw records that are not JSON are left out).
    #[must_use]
    pub fn records(&self) -> Vec<Value> {
        self.blobs()
            .iter()
            .filter_map(|b| serde_json::from_str::<Vec<Value>>(&b.body).ok())
            .flatten()
            .collect()
    }

    /// The state of a content type's subscription.
    #[must_use]
    pub fn subscription(&self, content_type: ContentType) -> SubscriptionState {
        self.log().subscription_state(content_type)
    }

    /// Disables a started subscription as a tenant admin would (then AF20023); `false` if none.
    pub fn disable_subscription(&self, content_type: ContentType) -> bool {
        self.log().disable_subscription(content_type, DisabledBy::TenantAdmin)
    }

    /// Turns the tenant's unified audit log on or off.
    pub fn set_audit_log_enabled(&self, enabled: bool) {
        self.log().set_audit_log_enabled(enabled);
    }

    /// Grants or revokes the app's `ActivityFeed.Read` permission: tokens issued afterwards carry
    /// the role or no `roles` claim at all.
    pub fn set_activity_feed_read_granted(&self, granted: bool) {
        api::set_permission(&self.state, granted);
    }

    /// The settings in force.
    #[must_use]
    pub fn config(&self) -> ActivityConfig {
        self.log().config()
    }

    /// Replaces the settings (an invalid configuration is refused with the reason).
    pub fn set_config(&self, config: ActivityConfig) -> Result<(), String> {
        let granted = config.activity_feed_read_granted;
        self.log().set_config(config)?;
        self.state.auth.set_activity_feed_read(granted);
        Ok(())
    }

    /// The Management Activity API root for this tenant: `{base}/api/v1.0/{tenant}/activity/feed`.
    #[must_use]
    pub fn feed_url(&self) -> String {
        format!(
            "{}/api/v1.0/{}/activity/feed",
            self.state.base_url,
            self.state.tenant.tenant_id()
        )
    }
}
