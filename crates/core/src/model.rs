//! The records filetrail keeps: connections, drives with their lifecycle, users without a
//! OneDrive, and inventory rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A connection's short, human-chosen identifier (`contoso-cloud`), used in keys and on the CLI.
pub type ConnectionId = String;

/// What a connection monitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// OneDrive for Business.
    Cloud,
    /// Office 365 mail.
    Email,
}

/// Whether work may run for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionState {
    #[default]
    Active,
    /// Stopped by an admin; history stays searchable.
    Deauthorized,
    /// Removed by an admin without `--purge`: its credentials are deleted and no work runs,
    /// while its record stays so its history is searchable by its name until it is purged.
    Removed,
}

/// A problem a person must fix, shown by `filetrail status` until it clears.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionError {
    /// The service's error code (`invalid_client`, `AADSTS7000215`, `drive_cap_exceeded`…).
    pub code: String,
    pub message: String,
    /// What to do about it, in one sentence a person can act on.
    pub fix: String,
    pub at: DateTime<Utc>,
}

/// A registered Microsoft 365 tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: ConnectionId,
    pub kind: ConnectionKind,
    pub tenant_id: String,
    pub client_id: String,
    /// Secrets Manager name or ARN of the app credentials (never the secret itself).
    pub secret_id: String,
    /// Named cloud preset (`worldwide`, `gcc`, `gcc-high`, `dod`, `china`) or `custom`.
    pub cloud: String,
    /// Base URLs when `cloud` is `custom` (a simulator or a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    #[serde(default)]
    pub trusted_domains: Vec<String>,
    pub drive_cap: u64,
    #[serde(default)]
    pub state: ConnectionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<ConnectionError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_discovery: Option<DiscoverySummary>,
    pub created_at: DateTime<Utc>,
    /// Opt-in write mode (`filetrail connection write-mode`): the separate app registration, with
    /// `Files.ReadWrite.All`, that `filetrail sharing revoke` uses and nothing else does. `None`:
    /// filetrail only reads. (Records of the earlier write mode, which reused the connection's
    /// own app, read as read-only.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_app: Option<WriteApp>,
}

/// The app registration of a connection's write mode. Its secret is stored under a prefix no
/// function may read (`FILETRAIL_WRITE_SECRET_PREFIX`), so the pipeline's tokens stay read-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteApp {
    pub client_id: String,
    /// Secrets Manager name of its credentials (never the secret itself).
    pub secret_id: String,
    pub enabled_at: DateTime<Utc>,
}

impl Connection {
    /// Whether write mode is on: a write app is registered.
    #[must_use]
    pub fn write_mode(&self) -> bool {
        self.write_app.is_some()
    }

    /// Whether filetrail does any work for this connection (discover, index, poll, ingest, hash).
    /// A deauthorized connection gets none: its jobs are acknowledged and dropped, never failed
    /// or dead-lettered, and its history stays searchable. `resume` makes it active again and
    /// work restarts from the stored checkpoints.
    #[must_use]
    pub fn accepts_work(&self) -> bool {
        match self.state {
            ConnectionState::Active => true,
            ConnectionState::Deauthorized | ConnectionState::Removed => false,
        }
    }

    /// Why a job of this connection is dropped, or `None` when it [`Self::accepts_work`].
    #[must_use]
    pub fn why_no_work(&self) -> Option<String> {
        match self.state {
            ConnectionState::Active => None,
            ConnectionState::Deauthorized => Some(format!(
                "connection {} is deauthorized; `filetrail connection resume {}` restarts its work",
                self.id, self.id
            )),
            ConnectionState::Removed => Some(format!(
                "connection {} was removed (its history is kept; `filetrail connection remove {} --purge` deletes it)",
                self.id, self.id
            )),
        }
    }
}

/// Microsoft base URLs for one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Entra ID token authority, without the tenant (`https://login.microsoftonline.com`).
    pub login: String,
    /// Graph base including the version (`https://graph.microsoft.com/v1.0`).
    pub graph: String,
}

/// The outcome of the last finished discovery run of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverySummary {
    pub run_id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub users_seen: u64,
    pub drives_found: u64,
    pub drives_new: u64,
    pub users_without_drive: u64,
    /// The scope the run resolved (`all`, `users`, `groups`).
    #[serde(default = "scope_all")]
    pub scope: crate::scope::ScopeKind,
    /// Scope entries that resolved to nothing (a group not found): looked up again next run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<crate::scope::UnresolvedEntry>,
    /// Drives that left the scope in this run and became unmonitored.
    #[serde(default)]
    pub drives_unmonitored: u64,
    /// Drives that came back into scope and resumed.
    #[serde(default)]
    pub drives_returned: u64,
    /// In-scope drives not monitored because the connection's drive cap was reached.
    #[serde(default)]
    pub drives_over_cap: u64,
    /// The version of the scope the run resolved ([`crate::scope::Scope::version`]): a record
    /// of a OneDrive this run did not find is outside the scope only while the scope is the
    /// same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_version: Option<String>,
    /// OneDrives the run found that another connection recorded first (the same tenant
    /// registered twice): left untouched, monitored by that connection only.
    #[serde(default)]
    pub drives_of_other_connections: u64,
}

fn scope_all() -> crate::scope::ScopeKind {
    crate::scope::ScopeKind::All
}

/// Where a drive is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DriveState {
    /// Recorded by discovery, its index job not yet confirmed enqueued.
    Pending,
    /// Its initial walk is queued or under way.
    Indexing,
    /// Its initial walk finished; incremental deltas from its stored delta link.
    Indexed,
    /// Left the monitored scope: no new work, history kept.
    Unmonitored,
}

impl DriveState {
    pub const ALL: [DriveState; 4] = [Self::Pending, Self::Indexing, Self::Indexed, Self::Unmonitored];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Indexing => "indexing",
            Self::Indexed => "indexed",
            Self::Unmonitored => "unmonitored",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Monitored drives are the ones filetrail keeps working on.
    pub fn is_monitored(self) -> bool {
        !matches!(self, Self::Unmonitored)
    }
}

/// A person as Graph names them in an identity set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// One user's OneDrive as filetrail tracks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriveRecord {
    pub connection: ConnectionId,
    pub drive_id: String,
    pub owner_id: String,
    pub owner_upn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    pub state: DriveState,
    pub discovered_at: DateTime<Utc>,
    #[serde(default)]
    pub index: IndexProgress,
    /// Set when work for this drive stopped on a connection problem (bad secret): the work is kept
    /// here, not in a queue, and discovery re-enqueues it once the connection works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
}

/// The indexing checkpoint and counters of one drive.
///
/// `next_link` is the delta page link to fetch next; it advances only after the page before it
/// is committed to the inventory, so a crash re-reads at most one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexProgress {
    /// Increments each time a walk (re)starts from scratch; rows carry it so a resync can drop
    /// the rows the new walk did not see.
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_link: Option<String>,
    pub pages: u64,
    pub items: u64,
    pub files: u64,
    pub folders: u64,
    pub bytes: u64,
    pub deleted: u64,
    pub resyncs: u64,
    /// True while the current walk is a full enumeration after a resync: when it completes, rows
    /// of older generations (items the new walk no longer saw) are removed.
    #[serde(default)]
    pub reconcile: bool,
    /// Id of the drive's root item, once a page has listed it: children of the root on later
    /// pages (possibly in another invocation) resolve their paths from it, as the root has no
    /// inventory row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// Why an inventory row has no MD5/SHA-256.
pub const HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING: &str = "not modified since initial indexing";

/// One item of a monitored drive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryRow {
    pub drive_id: String,
    pub item_id: String,
    pub connection: ConnectionId,
    pub name: String,
    /// Path from the drive root, `/Documents/report.docx`; the root itself is `/`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    pub is_folder: bool,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The file's SharePoint list item unique id (`sharepointIds.listItemUniqueId`), the
    /// `ListItemUniqueId` of its audit records: unlike the path it survives renames and moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_item_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Why the hashes are absent, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_unavailable: Option<String>,
    pub generation: u64,
    pub indexed_at: DateTime<Utc>,
}

/// A user as the directory lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryUser {
    pub id: String,
    pub user_principal_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
}

/// A drive as Graph describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveInfo {
    pub id: String,
    /// `business` for OneDrive for Business, `personal` for consumer OneDrive, `documentLibrary`
    /// for SharePoint libraries (team sites, Teams, group libraries).
    pub drive_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

impl DriveInfo {
    /// Only a user's own OneDrive for Business is monitored; SharePoint document libraries
    /// (shared libraries, team sites) never are, whatever path led to them.
    pub fn is_personal_onedrive(&self) -> bool {
        self.drive_type.eq_ignore_ascii_case("business")
    }
}

/// The answer to "where is this user's OneDrive?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveLookup {
    Found(DriveInfo),
    /// The user has no provisioned OneDrive (unlicensed, never signed in). Not an error.
    NoDrive {
        reason: String,
    },
}

/// One item from a delta page, already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaItem {
    pub id: String,
    pub name: Option<String>,
    pub parent_id: Option<String>,
    pub is_root: bool,
    pub is_folder: bool,
    pub deleted: bool,
    pub size: Option<u64>,
    pub created_at: Option<DateTime<Utc>>,
    pub modified_at: Option<DateTime<Utc>>,
    pub etag: Option<String>,
    pub ctag: Option<String>,
    pub created_by: Option<UserRef>,
    pub modified_by: Option<UserRef>,
    pub mime_type: Option<String>,
    /// `sharepointIds.listItemUniqueId`, normalised by [`list_item_uid`]; absent on deletions
    /// (ODB omits all but the id and the `deleted` facet).
    pub list_item_uid: Option<String>,
    /// The scope of the item's `shared` facet (`anonymous`, `organization`, `users`, or what
    /// else Graph sends) when it is shared; `None` when the facet is absent or has no scope.
    pub shared_scope: Option<String>,
    /// Delta annotated the item `"@microsoft.graph.sharedChanged": "True"`: it is reported
    /// because its sharing changed (Graph does so only for requests with the sharing `Prefer`
    /// values and a token holding `Sites.FullControl.All`,
    /// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>).
    pub sharing_changed: bool,
}

/// One page of a delta walk.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPage {
    pub items: Vec<DeltaItem>,
    pub next: DeltaNext,
}

/// Where a delta walk goes after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaNext {
    /// More pages: fetch this link next.
    NextLink(String),
    /// The walk is complete; store this link for the next incremental round.
    DeltaLink(String),
}

/// A list item unique id as filetrail keys it: the GUID in lowercase without braces. Audit
/// records (`ListItemUniqueId`) and Graph (`sharepointIds.listItemUniqueId`) spell the same id;
/// `None` for an empty one.
pub fn list_item_uid(raw: &str) -> Option<String> {
    let id = raw.trim().trim_start_matches('{').trim_end_matches('}').trim();
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// A file as the inventory knows it by its list item unique id: where it is now, or where it
/// was when it was deleted (a tombstone, kept for [`TOMBSTONE_DAYS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownItem {
    /// The list item unique id ([`list_item_uid`]).
    pub uid: String,
    pub item_id: String,
    /// The item's path now, or its last path before it was deleted.
    pub path: String,
    /// When indexing learned the item was deleted; `None` while it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// How long a deleted file's tombstone is kept: the Management API keeps content 7 days, and a
/// parked blob or a late index round may come a few days after that.
pub const TOMBSTONE_DAYS: i64 = 30;

/// An event stored without its item although its record named the file's list item unique id:
/// the item was renamed or moved before the inventory knew it. The next index round of the
/// drive that learns the id gives the event its item (`activity::resolve_pending`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PendingItem {
    pub uid: String,
    /// The stored event's key.
    pub event_key: String,
    pub connection: ConnectionId,
    /// When the event was stored without its item.
    pub since: DateTime<Utc>,
}

/// How long an event waits for its item: past the feed's 7-day retention no record of the file
/// comes any more, and an index round runs at least hourly.
pub const PENDING_ITEM_DAYS: i64 = 14;
