//! Request and fault counters, so tests and benchmarks can report Graph calls per drive or file.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::Method;

use serde::{Deserialize, Serialize};

/// What a request was for. Logical Graph requests are counted by kind wherever they arrive — at
/// top level or inside a `$batch` — so `users + user_filter + groups + group_members + drive +
/// delta + item + other` is the number of Graph operations Microsoft would meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Token,
    Users,
    UserFilter,
    Groups,
    GroupMembers,
    Drive,
    Delta,
    Item,
    /// `…/items/{id}/content` (the 302 to the download URL).
    Content,
    /// `…/items/{id}/permissions[/{perm-id}]`: listing, reading or deleting permissions (5 RU
    /// each,
    /// <https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>).
    Permissions,
    Batch,
    Other,
}

impl Kind {
    /// The kind's name in [`RequestCount::kind`] (the [`Stats`] field it is counted in).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Users => "users",
            Self::UserFilter => "user_filter",
            Self::Groups => "groups",
            Self::GroupMembers => "group_members",
            Self::Drive => "drive",
            Self::Delta => "delta",
            Self::Item => "item",
            Self::Content => "content",
            Self::Permissions => "permissions",
            Self::Batch => "batch",
            Self::Other => "other",
        }
    }
}

/// How many Graph requests of one method and path kind the simulator served, at top level or
/// inside `$batch` envelopes, and how many of them it refused for missing application roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCount {
    /// The HTTP method, upper case (`GET`, `POST`, `DELETE`, …).
    pub method: String,
    /// The path kind: `users`, `user_filter`, `groups`, `group_members`, `drive`, `delta`,
    /// `item`, `content`, `batch` or `other` (unknown routes and permission routes included).
    pub kind: String,
    /// Whether these requests were carried inside `$batch` envelopes.
    pub in_batch: bool,
    /// Requests served (any outcome).
    pub count: u64,
    /// Of those, requests refused 403 because the token lacked the application roles.
    pub forbidden: u64,
}

/// A snapshot of the counters (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every HTTP request received, `/_sim` and `/healthz` excluded.
    pub http_requests: u64,
    /// Token endpoint requests (v1 and v2), successful or not.
    pub token: u64,
    /// `GET /users` pages (without `$filter`) and single-user reads.
    pub users: u64,
    /// `GET /users?$filter=…` pages (user lookups by name or address).
    #[serde(default)]
    pub user_filter: u64,
    /// `GET /groups` pages (filtered or not) and single-group reads.
    #[serde(default)]
    pub groups: u64,
    /// Pages of `…/members`, `…/transitiveMembers` and their OData casts.
    #[serde(default)]
    pub group_members: u64,
    /// Drive reads (`/users/{id}/drive`, `/drives/{id}`, `/sites/{id}/drive`, …).
    pub drive: u64,
    /// Delta pages (`…/root/delta`).
    pub delta: u64,
    /// Single driveItem reads.
    pub item: u64,
    /// `$batch` envelopes.
    pub batch: u64,
    /// Requests carried inside `$batch` envelopes (also counted under their own kind).
    pub batch_inner: u64,
    /// Graph requests for anything else (unknown routes included).
    pub other: u64,
    /// Graph requests refused with 401 (missing, invalid or expired token).
    pub unauthorized: u64,
    /// Delta requests answered 410 Gone (`resyncRequired`).
    pub delta_resync: u64,
    /// `…/items/{id}/content` requests (Graph operations, any outcome).
    #[serde(default)]
    pub content: u64,
    /// `/content` requests answered 302 with a download URL.
    #[serde(default)]
    pub content_redirects: u64,
    /// `/content` requests answered 304 (`if-none-match` hit).
    #[serde(default)]
    pub content_not_modified: u64,
    /// Requests to download URLs (any outcome; also counted in `http_requests`).
    #[serde(default)]
    pub content_downloads: u64,
    /// Of those, downloads of a previous version (a URL from `…/versions/{id}/content`).
    #[serde(default)]
    pub version_downloads: u64,
    /// Download requests answered 206 Partial Content (a satisfiable `Range`).
    #[serde(default)]
    pub content_range: u64,
    /// Download requests answered 416 (`invalidRange`).
    #[serde(default)]
    pub content_range_unsatisfiable: u64,
    /// Download requests refused 401 (expired or invalid `tempauth`).
    #[serde(default)]
    pub content_expired: u64,
    /// Download requests that carried an `Authorization` header (pre-authenticated URLs need
    /// none; a client should not send its Graph token to the download host).
    #[serde(default)]
    pub content_with_authorization: u64,
    /// Content bytes sent in download bodies (cut bodies count what was generated).
    #[serde(default)]
    pub content_bytes: u64,
    /// Permission requests (`…/items/{id}/permissions`, `…/permissions/{perm-id}`: list, get,
    /// delete), any outcome, top level and inside `$batch`. Each costs 5 resource units
    /// upstream
    /// (<https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>).
    #[serde(default)]
    pub permissions: u64,
    /// Permissions actually removed by `DELETE …/permissions/{perm-id}` (204 on the owner's
    /// permission removes nothing and is not counted).
    #[serde(default)]
    pub permissions_deleted: u64,
    /// Graph requests refused 403 for want of an application role (top level and inside
    /// `$batch`; `Authorization_RequestDenied` or `accessDenied`).
    #[serde(default)]
    pub forbidden: u64,
    /// Graph requests by method and path kind, top level and inside `$batch`, ordered by
    /// method, kind, then top level first.
    #[serde(default)]
    pub graph_requests: Vec<RequestCount>,
    /// Injected faults.
    pub faults: FaultStats,
    /// Management Activity API requests by kind, `AF429`/`AF50000` faults and
    /// `PublisherIdentifier` presence (`crate::activity`).
    #[serde(default)]
    pub activity: crate::activity::ActivityStats,
}

impl Stats {
    /// Every Graph request that was not a `GET` (method and kind), e.g. the `$batch` envelopes
    /// (`POST batch`) and any write. A read-only client's list holds only top-level
    /// `POST batch` entries.
    #[must_use]
    pub fn non_get_graph_requests(&self) -> Vec<&RequestCount> {
        self.graph_requests.iter().filter(|r| r.method != "GET").collect()
    }
}

/// Counts of injected faults by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// 429 Too Many Requests at top level.
    pub throttled_429: u64,
    /// 503 Service Unavailable at top level.
    pub unavailable_503: u64,
    /// 500/502/504 at top level.
    pub server_error: u64,
    /// Connections closed without a response.
    pub dropped: u64,
    /// Responses delayed by `slow_ms`.
    pub slowed: u64,
    /// Inner 429s inside `$batch` responses.
    pub batch_inner_throttled: u64,
    /// Inner 5xx inside `$batch` responses.
    pub batch_inner_server_error: u64,
    /// `/content` and download requests throttled by `content_throttle_rate` (also counted in
    /// `throttled_429` / `unavailable_503`).
    #[serde(default)]
    pub content_throttled: u64,
    /// Download bodies cut in the middle (`content_drop_rate`).
    #[serde(default)]
    pub content_dropped: u64,
}

/// Graph requests served: `(method, kind name, in_batch) -> (count, forbidden)`.
type RequestLog = BTreeMap<(String, &'static str, bool), (u64, u64)>;

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Management Activity API counters.
    pub(crate) activity: crate::activity::ActivityCounters,
    pub(crate) http_requests: AtomicU64,
    token: AtomicU64,
    users: AtomicU64,
    user_filter: AtomicU64,
    groups: AtomicU64,
    group_members: AtomicU64,
    drive: AtomicU64,
    delta: AtomicU64,
    item: AtomicU64,
    batch: AtomicU64,
    pub(crate) batch_inner: AtomicU64,
    other: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) delta_resync: AtomicU64,
    pub(crate) throttled_429: AtomicU64,
    pub(crate) unavailable_503: AtomicU64,
    pub(crate) server_error: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) slowed: AtomicU64,
    pub(crate) batch_inner_throttled: AtomicU64,
    pub(crate) batch_inner_server_error: AtomicU64,
    content: AtomicU64,
    pub(crate) content_redirects: AtomicU64,
    pub(crate) content_not_modified: AtomicU64,
    pub(crate) content_downloads: AtomicU64,
    pub(crate) version_downloads: AtomicU64,
    pub(crate) content_range: AtomicU64,
    pub(crate) content_range_unsatisfiable: AtomicU64,
    pub(crate) content_expired: AtomicU64,
    pub(crate) content_with_authorization: AtomicU64,
    pub(crate) content_bytes: AtomicU64,
    pub(crate) content_throttled: AtomicU64,
    pub(crate) content_dropped: AtomicU64,
    permissions: AtomicU64,
    pub(crate) permissions_deleted: AtomicU64,
    forbidden: AtomicU64,
    /// `(method, kind, in_batch) -> (count, forbidden)`.
    requests: Mutex<RequestLog>,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn count_kind(&self, kind: Kind) {
        bump(match kind {
            Kind::Token => &self.token,
            Kind::Users => &self.users,
            Kind::UserFilter => &self.user_filter,
            Kind::Groups => &self.groups,
            Kind::GroupMembers => &self.group_members,
            Kind::Drive => &self.drive,
            Kind::Delta => &self.delta,
            Kind::Item => &self.item,
            Kind::Content => &self.content,
            Kind::Permissions => &self.permissions,
            Kind::Batch => &self.batch,
            Kind::Other => &self.other,
        });
    }

    fn requests(&self) -> std::sync::MutexGuard<'_, RequestLog> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one Graph request served: its method and path kind, at top level or in `$batch`.
    pub(crate) fn record_request(&self, method: &Method, kind: Kind, in_batch: bool) {
        let mut map = self.requests();
        map.entry((method.as_str().to_ascii_uppercase(), kind.name(), in_batch))
            .or_default()
            .0 += 1;
    }

    /// Records a Graph request refused 403 for want of an application role (already recorded by
    /// [`Self::record_request`]).
    pub(crate) fn count_forbidden(&self, method: &Method, kind: Kind, in_batch: bool) {
        bump(&self.forbidden);
        self.requests()
            .entry((method.as_str().to_ascii_uppercase(), kind.name(), in_batch))
            .or_default()
            .1 += 1;
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            activity: self.activity.snapshot(),
            http_requests: g(&self.http_requests),
            token: g(&self.token),
            users: g(&self.users),
            user_filter: g(&self.user_filter),
            groups: g(&self.groups),
            group_members: g(&self.group_members),
            drive: g(&self.drive),
            delta: g(&self.delta),
            item: g(&self.item),
            batch: g(&self.batch),
            batch_inner: g(&self.batch_inner),
            other: g(&self.other),
            unauthorized: g(&self.unauthorized),
            delta_resync: g(&self.delta_resync),
            content: g(&self.content),
            content_redirects: g(&self.content_redirects),
            content_not_modified: g(&self.content_not_modified),
            content_downloads: g(&self.content_downloads),
            version_downloads: g(&self.version_downloads),
            content_range: g(&self.content_range),
            content_range_unsatisfiable: g(&self.content_range_unsatisfiable),
            content_expired: g(&self.content_expired),
            content_with_authorization: g(&self.content_with_authorization),
            content_bytes: g(&self.content_bytes),
            permissions: g(&self.permissions),
            permissions_deleted: g(&self.permissions_deleted),
            forbidden: g(&self.forbidden),
            graph_requests: self
                .requests()
                .iter()
                .map(|((method, kind, in_batch), (count, forbidden))| RequestCount {
                    method: method.clone(),
                    kind: (*kind).to_owned(),
                    in_batch: *in_batch,
                    count: *count,
                    forbidden: *forbidden,
                })
                .collect(),
            faults: FaultStats {
                throttled_429: g(&self.throttled_429),
                unavailable_503: g(&self.unavailable_503),
                server_error: g(&self.server_error),
                dropped: g(&self.dropped),
                slowed: g(&self.slowed),
                batch_inner_throttled: g(&self.batch_inner_throttled),
                batch_inner_server_error: g(&self.batch_inner_server_error),
                content_throttled: g(&self.content_throttled),
                content_dropped: g(&self.content_dropped),
            },
        }
    }

    pub(crate) fn reset(&self) {
        self.activity.reset();
        self.requests().clear();
        self.forbidden.store(0, Ordering::Relaxed);
        for c in [
            &self.http_requests,
            &self.token,
            &self.users,
            &self.user_filter,
            &self.groups,
            &self.group_members,
            &self.drive,
            &self.delta,
            &self.item,
            &self.batch,
            &self.batch_inner,
            &self.other,
            &self.unauthorized,
            &self.delta_resync,
            &self.throttled_429,
            &self.unavailable_503,
            &self.server_error,
            &self.dropped,
            &self.slowed,
            &self.batch_inner_throttled,
            &self.batch_inner_server_error,
            &self.content,
            &self.content_redirects,
            &self.content_not_modified,
            &self.content_downloads,
            &self.version_downloads,
            &self.content_range,
            &self.content_range_unsatisfiable,
            &self.content_expired,
            &self.content_with_authorization,
            &self.content_bytes,
            &self.content_throttled,
            &self.content_dropped,
            &self.permissions,
            &self.permissions_deleted,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}
