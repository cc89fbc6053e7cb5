//! The ports the use cases ask for. Each is small and named after a capability; adapters
//! implement them over Microsoft Graph, DynamoDB and SQS, and tests over memory.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::audit::Quarantine;
use crate::error::PortError;
use crate::events::{EventRecord, FileHashes, HashOutcome};
use crate::feed::{ActivityCheckpoint, BlobCounts, BlobTotals, ContentBlob, ContentPage, ParkedBlob};
use crate::jobs::{BlobJob, DiscoverJob, HashJob, IndexJob};
use std::collections::HashSet;

use crate::model::{
    Connection, ConnectionError, DeltaPage, DirectoryUser, DiscoverySummary, DriveLookup, DriveRecord, DriveState,
    InventoryRow, KnownItem, PendingItem,
};
use crate::scope::{DirectoryGroup, GroupSelector, Scope, ScopeUploadResult, UnresolvedEntry, UserSelector};

pub type PortResult<T> = Result<T, PortError>;

/// One page of the directory's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersPage {
    pub users: Vec<DirectoryUser>,
    /// The link to the next page, verbatim; `None` on the last page.
    pub next_link: Option<String>,
}

/// The tenant's user directory.
#[async_trait]
pub trait Directory: Send + Sync {
    /// Fetches a page of users: the first page when `link` is `None`, else the page behind a
    /// `next_link` returned earlier (used verbatim, so a checkpointed link resumes exactly).
    async fn users_page(&self, link: Option<&str>) -> PortResult<UsersPage>;

    /// Looks up users named by a scope list: one answer per selector, in order, each the users
    /// it matches (empty when none does). Batched as the service allows.
    async fn find_users(&self, selectors: &[UserSelector]) -> PortResult<Vec<Vec<DirectoryUser>>>;

    /// Looks up groups named by a scope list: one answer per selector, in order, each the
    /// groups it matches (empty when none does). Batched as the service allows.
    async fn find_groups(&self, selectors: &[GroupSelector]) -> PortResult<Vec<Vec<DirectoryGroup>>>;

    /// Fetches a page of a group's transitive *user* members (members of nested groups
    /// included, groups and devices left out): the first page when `link` is `None`, else the
    /// page behind a `next_link` returned earlier, used verbatim. An unknown group fails with
    /// the code `group_not_found`.
    async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> PortResult<UsersPage>;
}

/// Finds users' OneDrives.
#[async_trait]
pub trait DriveFinder: Send + Sync {
    /// Looks up the OneDrive of each user, in as few requests as the service allows. Returns one
    /// answer per user, in the order given; retries throttled lookups itself, and fails as a whole
    /// only when a lookup keeps failing.
    async fn find_drives(&self, users: &[DirectoryUser]) -> PortResult<Vec<DriveLookup>>;
}

/// Graph delta over one drive.
#[async_trait]
pub trait DriveDelta: Send + Sync {
    /// Fetches one page: the start of a full walk when `link` is `None`, else the page behind a
    /// next link or delta link returned earlier. A token the service no longer accepts fails with
    /// [`DeltaError::ResyncRequired`].
    async fn delta_page(&self, drive_id: &str, link: Option<&str>) -> Result<DeltaPage, DeltaError>;
}

/// Why a delta page could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeltaError {
    /// HTTP 410: the token expired. Restart from `restart_link` (from the `Location` header) or,
    /// when absent, from the beginning, and reconcile.
    #[error("delta token no longer valid ({code}); full resync required")]
    ResyncRequired { code: String, restart_link: Option<String> },
    #[error(transparent)]
    Port(#[from] PortError),
}

/// Everything discovery keeps: connections, their drives, scopes and runs. Each use case asks
/// for the part it uses (ingest reads a scope, indexing writes drives, polling reports a
/// connection's problem); discovery and the CLI take the whole.
pub trait StateStore: ConnectionStore + DriveStore + ScopeStore + DiscoveryRunStore {}

impl<T: ConnectionStore + DriveStore + ScopeStore + DiscoveryRunStore + ?Sized> StateStore for T {}

/// The connections: their state, the problem status shows, their last discovery and write mode.
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    async fn connection(&self, id: &str) -> PortResult<Option<Connection>>;
    async fn connections(&self) -> PortResult<Vec<Connection>>;
    async fn put_connection(&self, connection: &Connection) -> PortResult<()>;
    /// Records (or clears, with `None`) the problem shown on the connection's status.
    async fn set_connection_error(&self, id: &str, error: Option<&ConnectionError>) -> PortResult<()>;
    async fn set_last_discovery(&self, id: &str, summary: &DiscoverySummary) -> PortResult<()>;
    /// Turns write mode on (the app) or off (`None`), touching nothing else of the record, so a
    /// function updating the connection meanwhile loses nothing.
    async fn set_write_app(&self, id: &str, app: Option<&crate::model::WriteApp>) -> PortResult<()>;
}

/// A connection's OneDrives (state, index progress, parking) and its users without one.
#[async_trait]
pub trait DriveStore: Send + Sync {
    async fn drive(&self, drive_id: &str) -> PortResult<Option<DriveRecord>>;
    /// Reads many drives at once; missing ones are simply absent from the result.
    async fn drives(&self, drive_ids: &[String]) -> PortResult<Vec<DriveRecord>>;
    /// Inserts drives that are not known yet, leaving known ones untouched. Returns the ids that
    /// were inserted. Idempotent: a repeated call inserts nothing.
    async fn insert_new_drives(&self, drives: &[DriveRecord]) -> PortResult<Vec<String>>;
    /// Moves a drive of `connection` from `from` to `to`; returns false (and changes nothing) if
    /// it was not in `from` or belongs to another connection.
    ///
    /// Every write of a drive names the connection it acts for and changes only a drive of that
    /// connection: no run of one connection can touch another's drives.
    async fn transition_drive(
        &self,
        connection: &str,
        drive_id: &str,
        from: DriveState,
        to: DriveState,
    ) -> PortResult<bool>;
    /// Stores a drive's index progress, only if the drive belongs to `connection` and its stored
    /// `pages` and `generation` still equal `expected` (optimistic concurrency: a redelivered or
    /// concurrent worker cannot move the checkpoint backwards). Returns false when the condition
    /// failed.
    async fn save_index_progress(
        &self,
        connection: &str,
        drive_id: &str,
        expected: &crate::model::IndexProgress,
        progress: &crate::model::IndexProgress,
        state: DriveState,
    ) -> PortResult<bool>;
    /// Parks (or unparks, with `None`) a drive's work on a connection problem. Fails (terminal)
    /// when `connection` has no such drive.
    async fn set_drive_parked(&self, connection: &str, drive_id: &str, reason: Option<&str>) -> PortResult<()>;
    /// Ids of a connection's drives in a state, one page at a time (`cursor` from the previous
    /// call).
    async fn drive_ids_in_state(
        &self,
        connection: &str,
        state: DriveState,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)>;
    async fn count_drives(&self, connection: &str, state: DriveState) -> PortResult<u64>;

    /// Records users who have no OneDrive (idempotent), so status can count them.
    async fn record_users_without_drive(&self, connection: &str, users: &[(DirectoryUser, String)]) -> PortResult<()>;
    /// Removes the "no OneDrive" mark of users whose drive now exists.
    async fn clear_users_without_drive(&self, connection: &str, user_ids: &[String]) -> PortResult<()>;
    async fn count_users_without_drive(&self, connection: &str) -> PortResult<u64>;
    /// Ids of the users recorded without a OneDrive, one page at a time.
    async fn user_ids_without_drive(
        &self,
        connection: &str,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)>;
}

/// The scope in force per connection and the result of its latest upload.
#[async_trait]
pub trait ScopeStore: Send + Sync {
    /// The connection's scope in force; `None` when it was never scoped (every user).
    async fn scope(&self, connection: &str) -> PortResult<Option<Scope>>;
    /// Replaces the scope in one write, unless the stored scope comes from a later upload
    /// (`uploaded_at`): a late, redelivered or out-of-order upload never replaces a newer scope.
    /// Returns whether it replaced.
    async fn replace_scope(&self, connection: &str, scope: &Scope) -> PortResult<bool>;
    /// Keeps the result of the connection's latest upload (by `uploaded_at`), for status.
    async fn record_scope_upload(&self, connection: &str, result: &ScopeUploadResult) -> PortResult<()>;
    async fn last_scope_upload(&self, connection: &str) -> PortResult<Option<ScopeUploadResult>>;
}

/// An open discovery run's checkpoint and what each of its pages saw.
#[async_trait]
pub trait DiscoveryRunStore: Send + Sync {
    /// Records what a discovery run saw on one of its pages. Idempotent per `(run_id, page)`:
    /// a re-processed page overwrites its own record.
    async fn record_run_page(&self, connection: &str, run_id: &str, page: u64, seen: &RunPage) -> PortResult<()>;
    /// Everything a run recorded, merged.
    async fn run_seen(&self, connection: &str, run_id: &str) -> PortResult<RunSeen>;
    /// Forgets a run's records (finished or abandoned runs).
    async fn delete_run(&self, connection: &str, run_id: &str) -> PortResult<()>;

    async fn discovery_checkpoint(&self, connection: &str) -> PortResult<Option<DiscoveryCheckpoint>>;
    /// Saves the run checkpoint (`None` closes the run) if the stored one is still the one the
    /// caller read: `expected` is its [`CheckpointVersion`], `None` when no run was open.
    /// Returns `false`, writing nothing, when another invocation saved or closed it first: two
    /// discovery invocations of one connection (a schedule and a scope upload, a redelivery)
    /// never both advance a run.
    async fn save_discovery_checkpoint(
        &self,
        connection: &str,
        checkpoint: Option<&DiscoveryCheckpoint>,
        expected: Option<&CheckpointVersion>,
    ) -> PortResult<bool>;
}

/// Which save of which run a checkpoint is: a run id (never reused) and a sequence number each
/// save increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVersion {
    pub run_id: String,
    pub seq: u64,
}

/// What a discovery run saw on one page.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunPage {
    /// In-scope drives that are monitored.
    pub drives: Vec<String>,
    /// In-scope users without a OneDrive.
    pub users_without_drive: Vec<String>,
}

/// What a whole discovery run saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSeen {
    pub drives: HashSet<String>,
    pub users_without_drive: HashSet<String>,
}

/// An open discovery run: where to continue and what it has seen so far.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiscoveryCheckpoint {
    pub run_id: String,
    /// Saves of this run so far; see [`StateStore::save_discovery_checkpoint`].
    #[serde(default)]
    pub seq: u64,
    pub started_at: DateTime<Utc>,
    /// The users page (all users) or group members page (groups) to read next, a verbatim
    /// Graph link; `None` before the first page.
    pub next_link: Option<String>,
    pub pages: u64,
    pub users_seen: u64,
    pub drives_found: u64,
    pub drives_new: u64,
    pub users_without_drive: u64,
    /// The scope version the run resolves; a run of another version is abandoned.
    #[serde(default = "all_scope_version")]
    pub scope_version: String,
    /// Users scope: the next entry to resolve. Groups scope: the next group of `groups`.
    #[serde(default)]
    pub position: usize,
    /// Groups scope: the ids of the groups the entries resolved to, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Entries that resolved to nothing so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<UnresolvedEntry>,
    /// In-scope drives that are monitored (known ones plus those admitted under the cap).
    #[serde(default)]
    pub drives_monitored: u64,
    /// In-scope drives not monitored because the drive cap was reached.
    #[serde(default)]
    pub drives_over_cap: u64,
    /// Drives that came back into scope.
    #[serde(default)]
    pub drives_returned: u64,
    /// Drives found that another connection recorded first: left to it.
    #[serde(default)]
    pub drives_of_other_connections: u64,
}

fn all_scope_version() -> String {
    "all".to_owned()
}

impl DiscoveryCheckpoint {
    /// A run that has processed nothing yet.
    pub fn new(run_id: String, started_at: DateTime<Utc>, scope_version: String) -> Self {
        Self {
            run_id,
            seq: 0,
            started_at,
            next_link: None,
            pages: 0,
            users_seen: 0,
            drives_found: 0,
            drives_new: 0,
            users_without_drive: 0,
            scope_version,
            position: 0,
            groups: None,
            unresolved: Vec::new(),
            drives_monitored: 0,
            drives_over_cap: 0,
            drives_returned: 0,
            drives_of_other_connections: 0,
        }
    }

    /// The version a save of this checkpoint must find stored.
    pub fn version(&self) -> CheckpointVersion {
        CheckpointVersion {
            run_id: self.run_id.clone(),
            seq: self.seq,
        }
    }
}

/// The inventory table.
#[async_trait]
pub trait InventoryStore: Send + Sync {
    /// Writes rows (upsert by drive + item). Idempotent.
    async fn put_rows(&self, rows: &[InventoryRow]) -> PortResult<()>;
    /// Deletes rows by item id (missing ones are fine), keeping a tombstone ([`KnownItem`] with
    /// `deleted_at`) for each file with a list item unique id, so late audit records of a file
    /// deleted meanwhile still find it.
    async fn delete_rows(&self, drive_id: &str, item_ids: &[String], at: DateTime<Utc>) -> PortResult<()>;
    /// Paths of the given items where they are known (folders seen on earlier pages).
    async fn paths(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, String)>>;
    /// Deletes the rows of a drive whose generation is older than `generation` (with
    /// tombstones, as [`InventoryStore::delete_rows`]); returns how many.
    async fn delete_older_than(&self, drive_id: &str, generation: u64, at: DateTime<Utc>) -> PortResult<u64>;
    /// The drive's rows now: `(files, folders)` (status shows rows, not delta entries).
    async fn count_rows(&self, drive_id: &str) -> PortResult<(u64, u64)>;
}

/// Queues work for the index-drive function.
#[async_trait]
pub trait IndexQueue: Send + Sync {
    /// Enqueues the jobs (in batches as the queue allows). All-or-error.
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()>;
}

/// Queues work for the discover function.
#[async_trait]
pub trait DiscoverQueue: Send + Sync {
    async fn enqueue_discover(&self, jobs: &[DiscoverJob]) -> PortResult<()>;
}

/// What reading an uploaded object found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadRead {
    Bytes(Vec<u8>),
    /// The key now holds another upload (its ETag differs): a newer upload replaced it.
    Replaced,
    /// The object was deleted before it could be read.
    Missing,
    /// Larger than the limit asked for; not downloaded.
    TooLarge {
        size: u64,
    },
}

/// The bucket admins upload scope lists to.
#[async_trait]
pub trait ScopeObjects: Send + Sync {
    /// Reads the object at `key` if it is still the upload `etag` names and at most `max_bytes`
    /// long.
    async fn read_upload(&self, key: &str, etag: &str, max_bytes: u64) -> PortResult<UploadRead>;
    /// Writes a result document (JSON) at `key`, replacing any previous one.
    async fn write_result(&self, key: &str, body: &[u8]) -> PortResult<()>;
}

// ---------------------------------------------------------------- activity, events, hashing

/// The Management Activity API of one connection's tenant.
#[async_trait]
pub trait ActivityFeed: Send + Sync {
    /// Makes sure the subscription to `content_type` is started (idempotent).
    async fn ensure_subscription(&self, content_type: &str) -> PortResult<()>;
    /// One page of the content available in `[start, end)` (by when it became available):
    /// the first page when `next_page` is `None`, else the page behind a `NextPageUri`.
    async fn content_page(
        &self,
        content_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        next_page: Option<&str>,
    ) -> PortResult<ContentPage>;
    /// The raw bytes of a content blob (a JSON array of audit records).
    async fn fetch_blob(&self, content_uri: &str) -> PortResult<Vec<u8>>;
}

/// What polling and ingesting the audit feed keep between runs.
#[async_trait]
pub trait ActivityState: Send + Sync {
    async fn activity_checkpoint(&self, connection: &str, content_type: &str)
    -> PortResult<Option<ActivityCheckpoint>>;
    async fn save_activity_checkpoint(
        &self,
        connection: &str,
        content_type: &str,
        checkpoint: &ActivityCheckpoint,
    ) -> PortResult<()>;
    /// Which of `content_ids` were enqueued before.
    async fn known_blobs(&self, connection: &str, content_ids: &[String]) -> PortResult<HashSet<String>>;
    /// Remembers blobs as enqueued until `keep_until` (past the feed's retention).
    async fn mark_blobs_enqueued(
        &self,
        connection: &str,
        blobs: &[ContentBlob],
        keep_until: DateTime<Utc>,
    ) -> PortResult<()>;
    /// Records what ingesting one blob produced (replacing an earlier record of the same blob).
    async fn record_blob_ingested(&self, connection: &str, content_id: &str, counts: &BlobCounts) -> PortResult<()>;
    /// What the last pass over one blob recorded, `None` before its first.
    async fn blob_counts(&self, connection: &str, content_id: &str) -> PortResult<Option<BlobCounts>>;
    /// Keeps a blob whose records wait for their drive (replacing an earlier entry of the same
    /// blob, but keeping its first `parked_at`).
    async fn park_blob(&self, connection: &str, parked: &ParkedBlob) -> PortResult<()>;
    /// Forgets a parked blob (every record placed, or the blob expired).
    async fn unpark_blob(&self, connection: &str, content_id: &str) -> PortResult<()>;
    /// The connection's parked blobs, oldest first (all pages, strongly consistent).
    async fn parked_blobs(&self, connection: &str) -> PortResult<Vec<ParkedBlob>>;
    /// What ingesting the connection's blobs produced, summed over the ingest records kept.
    async fn ingest_totals(&self, connection: &str) -> PortResult<BlobTotals>;
    /// The connection's drives whose web URL has one of these personal site keys
    /// (`alice_contoso_com`), whatever their state.
    async fn drives_by_site_key(&self, connection: &str, site_keys: &[String]) -> PortResult<Vec<DriveRecord>>;
}

/// One conditional change of an event's hash outcome ([`EventStore::change_event_hashes`]).
#[derive(Debug, Clone, Copy)]
pub struct HashChange<'a> {
    pub key: &'a str,
    /// The outcome the caller read (`None`: none yet).
    pub was: Option<&'a HashOutcome>,
    pub outcome: &'a HashOutcome,
}

/// File events.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Inserts each event unless one with its key is stored already; returns the keys inserted.
    async fn insert_events(&self, events: &[EventRecord]) -> PortResult<Vec<String>>;
    /// The stored events with these keys (as last written), in the order of `keys`; missing
    /// ones are left out.
    async fn stored_events(&self, keys: &[String]) -> PortResult<Vec<EventRecord>>;
    /// Events of one file (drive + item), newest first, at most `limit`.
    async fn file_events(&self, drive_id: &str, item_id: &str, limit: usize) -> PortResult<Vec<EventRecord>>;
    /// Records the hash outcome on the events with these keys, whatever they had (seeding and
    /// repairs; the use cases decide from what they read, so they use
    /// [`EventStore::change_event_hashes`]).
    async fn set_event_hash(&self, keys: &[String], outcome: &HashOutcome) -> PortResult<()>;
    /// Records each change whose event still has the outcome the caller read (`was`), or has
    /// `outcome` already; returns the keys of the others, whose outcome another writer changed
    /// meanwhile: they are left as they are, for the caller to decide again from a fresh read.
    /// Unknown keys are skipped; a key listed twice counts once (its first change).
    async fn change_event_hashes(&self, changes: &[HashChange<'_>]) -> PortResult<Vec<String>>;
    /// Gives a stored event without an item its item, clearing its `unresolved` reason, with
    /// `outcome` as its hash outcome (`None` removes the one it had, so hash-file sets it).
    /// Returns the event as now stored; `None` when there is no such event or it has an item
    /// already (an event's item, once set, never changes).
    async fn resolve_item(
        &self,
        key: &str,
        item_id: &str,
        outcome: Option<&HashOutcome>,
    ) -> PortResult<Option<EventRecord>>;
}

/// The inventory's files by list item unique id, and the events waiting for one.
#[async_trait]
pub trait ItemIdentities: Send + Sync {
    /// The drive's files (and tombstones of deleted ones) with these ids; unknown ids are left
    /// out.
    async fn items_by_uid(&self, drive_id: &str, uids: &[String]) -> PortResult<Vec<KnownItem>>;
    /// Records events stored without their item (idempotent).
    async fn add_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()>;
    /// The drive's events waiting for their item.
    async fn pending(&self, drive_id: &str) -> PortResult<Vec<PendingItem>>;
    /// Forgets these waiting events (missing ones are fine).
    async fn remove_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()>;
}

/// Where records that could not be normalised are kept, with their reason.
#[async_trait]
pub trait QuarantineStore: Send + Sync {
    /// Stores the quarantined records of one blob (replacing an earlier write of the same blob).
    async fn put_quarantined(&self, connection: &str, content_id: &str, records: &[Quarantine]) -> PortResult<()>;
}

/// Resolves drive paths to item ids.
#[async_trait]
pub trait ItemResolver: Send + Sync {
    /// The item id at each path of the drive that exists; absent paths are left out.
    async fn resolve_paths(&self, drive_id: &str, paths: &[String]) -> PortResult<Vec<(String, String)>>;
}

/// The digests recorded on inventory rows.
#[async_trait]
pub trait InventoryHashes: Send + Sync {
    /// The hashes stored for these items (items without a row or without hashes are left out).
    async fn file_hashes(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, FileHashes)>>;
    /// Records the outcome for the item. Kept apart from the row index-drive writes (which
    /// replaces whole rows), so neither overwrites the other whatever their order.
    async fn set_file_hash(
        &self,
        connection: &str,
        drive_id: &str,
        item_id: &str,
        outcome: &HashOutcome,
    ) -> PortResult<()>;
}

/// Queues blobs for the ingest-activity function.
#[async_trait]
pub trait BlobQueue: Send + Sync {
    async fn enqueue_blobs(&self, jobs: &[BlobJob]) -> PortResult<()>;
}

/// Queues files for the hash-file function.
#[async_trait]
pub trait HashQueue: Send + Sync {
    async fn enqueue_hashes(&self, jobs: &[HashJob]) -> PortResult<()>;
    /// Enqueues jobs that become visible only after `delay` (at most 15 minutes, SQS's
    /// `DelaySeconds`): a job waiting for another worker's download of the same version.
    async fn enqueue_hashes_after(&self, jobs: &[HashJob], delay: std::time::Duration) -> PortResult<()>;
}

/// Reads items' permissions (Graph `GET /drives/{d}/items/{i}/permissions`, batched).
#[async_trait]
pub trait PermissionReader: Send + Sync {
    /// One answer per item in the given order: its permissions, or `None` when it is gone.
    async fn permissions(
        &self,
        items: &[(String, String)],
    ) -> PortResult<Vec<((String, String), Option<Vec<crate::permissions::ListedPermission>>)>>;
}

/// Where items' sharing states are kept (beside the inventory).
#[async_trait]
pub trait SharingStore: Send + Sync {
    /// The stored states of these items (drive, item); items without one are left out.
    async fn sharing(&self, items: &[(String, String)]) -> PortResult<Vec<crate::permissions::SharingState>>;
    /// Stores an item's state, replacing the previous one; a state without grants removes it.
    async fn put_sharing(&self, state: &crate::permissions::SharingState) -> PortResult<()>;
    /// Every exposed item of a connection, without reading the rest of the inventory.
    async fn exposed(&self, connection: &str) -> PortResult<Vec<crate::permissions::SharingState>>;
}
