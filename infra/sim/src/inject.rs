//! The activity injector: user activity on OneDrive files, applied to the drive *and* written to
//! the audit log, as Microsoft 365 would do both.
//!
//! One [`Activity`] (an upload, a rename, a download, an anonymous link…) by an actor at a time
//! (a) appends its drive change to the drive's change log (`changes.rs`), so item reads and Graph
//! delta show it — uploads and copies create items with fresh ids, renames and moves change name,
//! path and parent, deletes delete, reads change nothing, links, shares and revocations change
//! the item's permissions (`crate::sharing`: permission list, `shared` facet, a sharing marker
//! for delta; never eTag or cTag) — and (b) builds the audit
//! record(s) Microsoft emits for it and publishes them to the simulator's audit log (content type
//! `Audit.SharePoint`), from which the Management Activity API serves them after its publication
//! delay.
//!
//! Records follow the documented schema
//! (<https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>,
//! <https://learn.microsoft.com/en-us/purview/audit-log-activities>) and the shapes observed in
//! real records, not filetrail's normaliser: `RecordType` 6 (file operations) or 14 (sharing) with
//! `Workload` `OneDrive`; `CreationTime` without a zone; `ItemType` as the string `"File"`;
//! `ObjectId` the file's full, unencoded URL under the drive's `webUrl`
//! (`…/personal/{upn_}/Documents/…`); `SiteUrl` with a trailing `/` on file records and without on
//! sharing records; a file record's `SourceRelativeUrl` is the folder (`Documents/Reports`), a
//! sharing record's ends with the file name; `EventData` is the non-XML fragment SharePoint writes
//! (`<Permissions granted>…`).
//!
//! Operations are applied in order under one lock, so a batch sees its own earlier changes. The
//! response gives, per activity, the ground truth an end-to-end test needs: record ids (and the
//! blobs they went to), drive id, item id, resulting path, cTag, eTag, size.
//!
//! Simplifications: only files are acted on (no folder operations); names are not checked for
//! collisions; a restore puts the item back where it was, even if its folder has gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::activity::ContentType;
use crate::changes::Entry;
use crate::prng::{Rng, guid, hash3, hash4, siphash24, splitmix64, tag};
use crate::server::SimState;
use crate::tenant::{DriveRef, SimDrive, SimIdentity, SimItem, SimUser};

const K_RECORD_ID: u64 = tag(b"inject-record-id");
const K_CORRELATION: u64 = tag(b"inject-correlation");
const K_LIST: u64 = tag(b"inject-list");
const K_LIST_ITEM: u64 = tag(b"inject-list-item");
const K_PUID: u64 = tag(b"inject-puid");
const K_ANON: u64 = tag(b"inject-anon");
const K_NEW_ETAG: u64 = tag(b"inject-etag");
const K_XOR: u64 = tag(b"inject-quick-xor");
const K_SIZE: u64 = tag(b"inject-size");
const K_MACHINE: u64 = tag(b"inject-machine");
const K_RANDOM: u64 = tag(b"inject-random");

/// Record type of file operations (`SharePointFileOperation`, `AuditLogRecordType` in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>;
/// OneDrive file events arrive as 6, not 7, in the records observed).
const RECORD_TYPE_FILE: u8 = 6;
/// Record type of sharing and permission operations (`SharePointSharingOperation`, same table).
const RECORD_TYPE_SHARING: u8 = 14;

/// What a browser in the fixtures of our reference notes sends.
const BROWSER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) \
                             Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
/// The OneDrive sync app (OneDrive.exe) as it names itself in `UserAgent`.
const SYNC_AGENT: &str = "Microsoft SkyDriveSync 24.201.1006.0003 ship; Windows NT 10.0 (19045)";
/// `EventData` of `SharingInheritanceBroken`, as observed in real records.
const INHERITANCE_BROKEN_DATA: &str =
    "<copyRoleAssignments>False</copyRoleAssignments><clearSubScopes>False</clearSubScopes>";
/// Random activities retry this many candidates before falling back to an upload.
const PICK_ATTEMPTS: usize = 8;
/// Default number of drives a random mix uses when the request names none.
const RANDOM_DEFAULT_DRIVES: usize = 5;
/// Largest random mix one request may ask for (a benchmark of 2,000 operations fits 50 times).
pub const RANDOM_MAX_COUNT: usize = 100_000;

/// Characters kept as-is in item web URLs (as `tenant/tree.rs` encodes them).
const URL_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// External domains random guests come from (reserved or fictitious names).
use crate::sharing::{GUEST_DOMAINS, GUEST_NAMES, SimGrantee};
const UPLOAD_STEMS: &[&str] = &[
    "Invoice",
    "Budget",
    "Meeting notes",
    "Contract",
    "Roadmap",
    "Scan",
    "Photo",
    "Report",
    "Payroll",
    "Résumé",
];
const MIME_TYPES: &[(&str, &str)] = &[
    (
        "docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    (
        "pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
    ("csv", "text/csv"),
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("zip", "application/x-zip-compressed"),
    ("mp4", "video/mp4"),
    ("json", "application/json"),
];

// ---------------------------------------------------------------------------------------------
// Public request and response types.

/// What happens to a file. Serialised in snake_case (`sync_upload`, `anonymous_link_created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A new file uploaded in the browser: `FileUploaded`.
    Upload,
    /// A new file uploaded by the sync app: `FileSyncUploadedFull`.
    SyncUpload,
    /// A new version of a file (new cTag, eTag, size, modified time): `FileModified`.
    Modify,
    /// `FileRenamed`, in the same folder.
    Rename,
    /// `FileMoved` to another folder.
    Move,
    /// `FileCopied`: a new file (new id) in the destination folder.
    Copy,
    /// Deleted into the recycle bin: `FileRecycled`.
    Recycle,
    /// Deleted: `FileDeleted`.
    Delete,
    /// Restored from the recycle bin where it was: `FileRestored`.
    Restore,
    /// `FileDownloaded` (browser).
    Download,
    /// `FileSyncDownloadedFull` (sync app).
    SyncDownload,
    /// `FilePreviewed`.
    Preview,
    /// `FileAccessed`.
    Access,
    /// An "Anyone" link: `SharingInheritanceBroken` (first share), `AnonymousLinkCreated`, `SharingSet`.
    AnonymousLinkCreated,
    /// Someone used the anyone link (actor anonymous by default): `AnonymousLinkUsed`.
    AnonymousLinkUsed,
    /// `AnonymousLinkRemoved`.
    AnonymousLinkRemoved,
    /// An organisation link: `SharingInheritanceBroken` (first share), `CompanyLinkCreated`, `SharingSet`.
    CompanyLinkCreated,
    /// `CompanyLinkUsed` (by a member).
    CompanyLinkUsed,
    /// `CompanyLinkRemoved`.
    CompanyLinkRemoved,
    /// A specific-people link: `SharingInheritanceBroken` (first share), `SecureLinkCreated`,
    /// one `AddedToSecureLink` per target, `SharingSet`.
    SecureLinkCreated,
    /// `SecureLinkUsed` (by the first target unless an actor is given).
    SecureLinkUsed,
    /// `SecureLinkDeleted`.
    SecureLinkDeleted,
    /// Direct sharing per target: a member of the tenant gets `SharingSet`; an existing guest
    /// (`…#EXT#@…`) gets `AddedToGroup` + `SharingSet`; an outside address not in the directory
    /// gets `SharingInvitationCreated` (<https://learn.microsoft.com/en-us/purview/audit-log-sharing>).
    Share,
    /// `SharingRevoked`, per target.
    SharingRevoked,
    /// A permission level of the OneDrive's site collection changed: `PermissionLevelModified`
    /// (a drive-level record, `ItemType` `Web`).
    PermissionLevelModified,
}

impl ActivityKind {
    /// Every kind, in declaration order.
    pub const ALL: [Self; 25] = [
        Self::Upload,
        Self::SyncUpload,
        Self::Modify,
        Self::Rename,
        Self::Move,
        Self::Copy,
        Self::Recycle,
        Self::Delete,
        Self::Restore,
        Self::Download,
        Self::SyncDownload,
        Self::Preview,
        Self::Access,
        Self::AnonymousLinkCreated,
        Self::AnonymousLinkUsed,
        Self::AnonymousLinkRemoved,
        Self::CompanyLinkCreated,
        Self::CompanyLinkUsed,
        Self::CompanyLinkRemoved,
        Self::SecureLinkCreated,
        Self::SecureLinkUsed,
        Self::SecureLinkDeleted,
        Self::Share,
        Self::SharingRevoked,
        Self::PermissionLevelModified,
    ];

    /// The audit `Operation` that names this activity (the main one when several are emitted;
    /// for [`Self::Share`] it depends on the target).
    #[must_use]
    pub fn operation(self) -> &'static str {
        match self {
            Self::Upload => "FileUploaded",
            Self::SyncUpload => "FileSyncUploadedFull",
            Self::Modify => "FileModified",
            Self::Rename => "FileRenamed",
            Self::Move => "FileMoved",
            Self::Copy => "FileCopied",
            Self::Recycle => "FileRecycled",
            Self::Delete => "FileDeleted",
            Self::Restore => "FileRestored",
            Self::Download => "FileDownloaded",
            Self::SyncDownload => "FileSyncDownloadedFull",
            Self::Preview => "FilePreviewed",
            Self::Access => "FileAccessed",
            Self::AnonymousLinkCreated => "AnonymousLinkCreated",
            Self::AnonymousLinkUsed => "AnonymousLinkUsed",
            Self::AnonymousLinkRemoved => "AnonymousLinkRemoved",
            Self::CompanyLinkCreated => "CompanyLinkCreated",
            Self::CompanyLinkUsed => "CompanyLinkUsed",
            Self::CompanyLinkRemoved => "CompanyLinkRemoved",
            Self::SecureLinkCreated => "SecureLinkCreated",
            Self::SecureLinkUsed => "SecureLinkUsed",
            Self::SecureLinkDeleted => "SecureLinkDeleted",
            Self::Share => "SharingSet",
            Self::SharingRevoked => "SharingRevoked",
            Self::PermissionLevelModified => "PermissionLevelModified",
        }
    }

    fn is_sync(self) -> bool {
        matches!(self, Self::SyncUpload | Self::SyncDownload)
    }

    fn link(self) -> Option<LinkScope> {
        match self {
            Self::AnonymousLinkCreated | Self::AnonymousLinkUsed | Self::AnonymousLinkRemoved => {
                Some(LinkScope::Anonymous)
            }
            Self::CompanyLinkCreated | Self::CompanyLinkUsed | Self::CompanyLinkRemoved => {
                Some(LinkScope::Organization)
            }
            Self::SecureLinkCreated | Self::SecureLinkUsed | Self::SecureLinkDeleted => Some(LinkScope::SpecificPeople),
            _ => None,
        }
    }
}

/// The access a link or share grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLevel {
    /// View only (`<Type>View</Type>`, `Read`).
    #[default]
    View,
    /// Edit (`<Type>Edit</Type>`, `Contribute`).
    Edit,
}

impl AccessLevel {
    fn type_word(self) -> &'static str {
        match self {
            Self::View => "View",
            Self::Edit => "Edit",
        }
    }

    fn permission_word(self) -> &'static str {
        match self {
            Self::View => "Read",
            Self::Edit => "Contribute",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LinkScope {
    Anonymous,
    Organization,
    SpecificPeople,
}

impl LinkScope {
    /// The link kind inside a sharing-link group name (`SharingLinks.{item}.AnonymousView.{id}`).
    fn group_kind(self, access: AccessLevel) -> String {
        match self {
            Self::Anonymous => format!("Anonymous{}", access.type_word()),
            Self::Organization => format!("Organization{}", access.type_word()),
            Self::SpecificPeople => "Flexible".to_owned(),
        }
    }

    /// The permission model's scope.
    fn wire(self) -> crate::sharing::LinkScope {
        match self {
            Self::Anonymous => crate::sharing::LinkScope::Anonymous,
            Self::Organization => crate::sharing::LinkScope::Organization,
            Self::SpecificPeople => crate::sharing::LinkScope::Users,
        }
    }
}

/// One activity to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    /// What happens.
    pub op: ActivityKind,
    /// The OneDrive: its drive id, or its owner's user principal name or object id.
    pub drive: String,
    /// The file acted on (not for uploads): its item id, or its path from the drive root
    /// (`/Reports/q3.xlsx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Who does it: a user of the tenant (UPN or object id), a guest (`dana@fabrikam.com` or
    /// `dana_fabrikam.com#EXT#@contoso.onmicrosoft.com`), or `anonymous`. Default: the drive's
    /// owner (the link's first target for `secure_link_used`, `anonymous` for
    /// `anonymous_link_used`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// When it happens (the records' `CreationTime`, the item's modification time). Default:
    /// now on the audit clock (wall clock plus what `AuditControl::advance_clock` added).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    /// Upload, rename, copy: the new file name (default: generated for uploads, the source
    /// name for copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Upload, move, copy: the destination folder, by item id or path (default: the root for
    /// uploads, the source's folder for copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Upload, modify: the new size in bytes (default: derived from the item and version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Links and shares: view (default) or edit.
    #[serde(default)]
    pub access: AccessLevel,
    /// Specific-people links, shares, revocations: who (UPNs of members, guests' addresses).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Overrides the actor's `ClientIP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// Overrides the `UserAgent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Activity {
    /// An activity with every option at its default.
    #[must_use]
    pub fn new(op: ActivityKind, drive: impl Into<String>) -> Self {
        Self {
            op,
            drive: drive.into(),
            item: None,
            actor: None,
            at: None,
            name: None,
            folder: None,
            size: None,
            access: AccessLevel::View,
            targets: Vec::new(),
            client_ip: None,
            user_agent: None,
        }
    }

    /// Sets the item (id or path).
    #[must_use]
    pub fn item(mut self, item: impl Into<String>) -> Self {
        self.item = Some(item.into());
        self
    }

    /// Sets the actor.
    #[must_use]
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Sets the name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the destination folder (id or path).
    #[must_use]
    pub fn folder(mut self, folder: impl Into<String>) -> Self {
        self.folder = Some(folder.into());
        self
    }

    /// Sets the targets.
    #[must_use]
    pub fn targets(mut self, targets: &[&str]) -> Self {
        self.targets = targets.iter().map(|t| (*t).to_owned()).collect();
        self
    }
}

/// A seeded random mix of activities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomActivity {
    /// How many activities (at most [`RANDOM_MAX_COUNT`]).
    pub count: usize,
    /// Same seed, same tenant, same prior state: same activities, items, paths and records.
    pub seed: u64,
    /// OneDrives to act on (drive ids or owners' UPNs / ids), picked uniformly. Default: the
    /// first five users' OneDrives.
    #[serde(default)]
    pub drives: Vec<String>,
    /// Relative weights by kind; kinds left out do not occur. Default: [`default_mix`].
    #[serde(default)]
    pub mix: Option<BTreeMap<ActivityKind, u32>>,
    /// Time of the first activity. Default: now on the audit clock.
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// Milliseconds between consecutive activities (default 0: all at `start`).
    #[serde(default)]
    pub step_ms: u64,
}

/// The default random mix: content changes and reads dominate, sharing is rarer, as in real
/// tenants.
#[must_use]
pub fn default_mix() -> BTreeMap<ActivityKind, u32> {
    use ActivityKind as K;
    [
        (K::Upload, 12),
        (K::SyncUpload, 4),
        (K::Modify, 18),
        (K::Rename, 6),
        (K::Move, 5),
        (K::Copy, 4),
        (K::Recycle, 5),
        (K::Delete, 2),
        (K::Restore, 2),
        (K::Download, 10),
        (K::SyncDownload, 4),
        (K::Preview, 6),
        (K::Access, 6),
        (K::AnonymousLinkCreated, 2),
        (K::AnonymousLinkUsed, 2),
        (K::AnonymousLinkRemoved, 1),
        (K::CompanyLinkCreated, 2),
        (K::CompanyLinkUsed, 1),
        (K::CompanyLinkRemoved, 1),
        (K::SecureLinkCreated, 2),
        (K::SecureLinkUsed, 1),
        (K::SecureLinkDeleted, 1),
        (K::Share, 3),
        (K::SharingRevoked, 1),
        (K::PermissionLevelModified, 1),
    ]
    .into_iter()
    .collect()
}

/// The body of `POST /_sim/activity`: explicit activities, a random mix, or both (explicit
/// ones first).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityRequest {
    /// Activities applied in order.
    #[serde(default)]
    pub operations: Vec<Activity>,
    /// A random mix applied after them.
    #[serde(default)]
    pub random: Option<RandomActivity>,
    /// Whether the response carries the full audit records (default: only their ids).
    #[serde(default)]
    pub return_records: bool,
}

/// One audit record an activity produced, and where it was published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordRef {
    /// The record's `Id`.
    pub id: String,
    /// Its `Operation`.
    pub operation: String,
    /// Its `RecordType`.
    pub record_type: u8,
    /// The content blob it went to, when published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_id: Option<String>,
    /// When that blob becomes available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_at: Option<DateTime<Utc>>,
    /// The blob holding its duplicate, if one was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_content_id: Option<String>,
    /// Whether it went into a late blob.
    #[serde(default)]
    pub late: bool,
}

/// The ground truth of one applied activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityOutcome {
    /// Position in the request (explicit activities first, then the random ones).
    pub index: usize,
    /// What was done (a random pick may fall back to another kind; this is what happened).
    pub op: ActivityKind,
    /// The records, in emission order.
    pub records: Vec<RecordRef>,
    /// The drive.
    pub drive_id: String,
    /// The drive owner's UPN.
    pub owner: String,
    /// The records' `UserId`.
    pub actor: String,
    /// The item the activity leaves behind (the new copy for copies); `None` for drive-level
    /// activities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// For copies: the item copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_item_id: Option<String>,
    /// The item's path from the drive root after the activity (its last path when deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For renames and moves: the path before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
    /// The item's cTag after the activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctag: Option<String>,
    /// The item's eTag after the activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The item's size after the activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Whether the item is deleted afterwards.
    pub deleted: bool,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The drive's change-log version after the activity.
    pub drive_version: u64,
    /// The records themselves, when the request asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_records: Option<Vec<Value>>,
}

/// What an injection did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityResponse {
    /// One outcome per activity, in order.
    pub operations: Vec<ActivityOutcome>,
    /// Number of audit records published.
    pub records: usize,
}

/// Why an activity could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// No drive has this id, and no user with a OneDrive this UPN or id.
    #[error("unknown drive '{0}': give a OneDrive's id or its owner's UPN or id")]
    UnknownDrive(String),
    /// The drive is a team-site library, not a OneDrive.
    #[error("drive '{0}' is a team-site library, not a OneDrive: only OneDrive activity is injected")]
    NotOneDrive(String),
    /// The actor or a target names no user of the tenant.
    #[error("unknown user '{0}' (a tenant user by UPN or id, a guest by an outside address, or 'anonymous')")]
    UnknownUser(String),
    /// The activity needs an item and none was given.
    #[error("'{0}' needs an 'item' (item id or path)")]
    MissingItem(&'static str),
    /// The item does not exist (or is deleted).
    #[error("no item '{item}' in drive '{drive}'")]
    NoSuchItem {
        /// The drive.
        drive: String,
        /// The item as given.
        item: String,
    },
    /// The item is a folder where a file is needed.
    #[error("'{0}' is a folder: only files are acted on")]
    NotAFile(String),
    /// The destination is not a folder.
    #[error("'{0}' is not a folder")]
    NotAFolder(String),
    /// A restore of an item that is not deleted.
    #[error("item '{0}' is not deleted: nothing to restore")]
    NotDeleted(String),
    /// A value is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// An injection that stopped at an activity: what was applied before it stays applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("activity {index}: {error}")]
pub struct InjectFailure {
    /// Position of the failing activity.
    pub index: usize,
    /// Why it failed.
    pub error: InjectError,
    /// The activities applied before it.
    pub applied: Vec<ActivityOutcome>,
}

// ---------------------------------------------------------------------------------------------
// State.

/// The injector's own state, held by the simulator state.
#[derive(Debug, Default)]
pub(crate) struct Injector {
    inner: Mutex<InjectorInner>,
}

#[derive(Debug, Default)]
struct InjectorInner {
    /// Records built so far (numbers their ids).
    records: u64,
    /// Activities applied so far (numbers correlation ids and generated names).
    activities: u64,
    /// Items whose sharing inheritance was broken by an injected share: (drive key, item id).
    unique_permissions: HashSet<(u64, String)>,
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/// Applies a request: its explicit activities in order, then its random mix. Serialised with
/// every other injection. Stops at the first activity that cannot be applied; the ones before it
/// stay applied and are returned with the error.
pub(crate) fn inject(state: &SimState, request: &ActivityRequest) -> Result<ActivityResponse, InjectFailure> {
    let mut inner = state
        .injector
        .inner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out: Vec<ActivityOutcome> = Vec::new();
    let fail =
        |index: usize, error: InjectError, applied: Vec<ActivityOutcome>| InjectFailure { index, error, applied };
    for activity in &request.operations {
        let index = out.len();
        match apply(state, &mut inner, activity, index, request.return_records) {
            Ok(outcome) => out.push(outcome),
            Err(e) => return Err(fail(index, e, out)),
        }
    }
    if let Some(random) = &request.random {
        if let Err((index, e)) = run_random(state, &mut inner, random, request.return_records, &mut out) {
            return Err(fail(index, e, out));
        }
    }
    let records = out.iter().map(|o| o.records.len()).sum();
    Ok(ActivityResponse {
        operations: out,
        records,
    })
}

/// `POST /_sim/activity`: body [`ActivityRequest`]; 200 with [`ActivityResponse`]; 400 for a
/// malformed body or value, 404 for an unknown drive, user or item, 409 for a restore of an item
/// that is not deleted — each error with the activities applied before it (`applied`).
pub(crate) async fn handle(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let request: ActivityRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("expected an activity request: {e}"),
                None,
                &[],
            );
        }
    };
    match inject(&state, &request) {
        Ok(response) => axum::Json(response).into_response(),
        Err(f) => {
            let status = match f.error {
                InjectError::UnknownDrive(_) | InjectError::UnknownUser(_) | InjectError::NoSuchItem { .. } => {
                    StatusCode::NOT_FOUND
                }
                InjectError::NotDeleted(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            error_response(status, &f.error.to_string(), Some(f.index), &f.applied)
        }
    }
}

fn error_response(status: StatusCode, message: &str, index: Option<usize>, applied: &[ActivityOutcome]) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "error": {"code": "BadActivity", "message": message, "index": index},
            "applied": applied,
        })
        .to_string(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Drive helpers.

/// A OneDrive resolved for injection.
struct Target {
    d: DriveRef,
    drive: SimDrive,
    owner: SimUser,
}

impl Target {
    /// `https://{t}-my.sharepoint.com/personal/{upn_}` (the drive's `webUrl` minus the library).
    fn site_url(&self) -> &str {
        self.drive
            .web_url
            .rsplit_once('/')
            .map_or(&self.drive.web_url, |(s, _)| s)
    }

    /// The library's URL name (`Documents`).
    fn library(&self) -> &str {
        self.drive.web_url.rsplit_once('/').map_or("Documents", |(_, l)| l)
    }
}

/// The id of a drive's document library: the records' `ListId`, `sharepointIds.listId`.
pub(crate) fn list_id(seed: u64, d: DriveRef) -> String {
    guid(hash3(seed, K_LIST, d.key()), hash4(seed, K_LIST, d.key(), 1))
}

/// An item's list item unique id: the records' `ListItemUniqueId` and the item's
/// `sharepointIds.listItemUniqueId` on Graph. Fixed for the item's life (renames and moves
/// keep it); a copy is a new item with its own.
pub(crate) fn list_item_unique_id(seed: u64, d: DriveRef, item_id: &str) -> String {
    let h = siphash24(seed, K_LIST_ITEM, item_id.as_bytes());
    guid(h, hash4(seed, K_LIST_ITEM, d.key(), h))
}

fn resolve_drive(state: &SimState, drive: &str) -> Result<Target, InjectError> {
    let tenant = &state.tenant;
    let d = match tenant.decode_drive_id(drive) {
        Some(d) => d,
        None => {
            let user = tenant
                .find_user(drive)
                .filter(|u| u.has_drive)
                .ok_or_else(|| InjectError::UnknownDrive(drive.to_owned()))?;
            DriveRef::User(user.index)
        }
    };
    let sim_drive = tenant
        .drive(d)
        .ok_or_else(|| InjectError::UnknownDrive(drive.to_owned()))?;
    let owner = match d {
        DriveRef::User(i) => tenant.user(i),
        DriveRef::Site(_) => return Err(InjectError::NotOneDrive(drive.to_owned())),
    };
    Ok(Target {
        d,
        drive: sim_drive,
        owner,
    })
}

/// The current state of an item by id: the latest logged change, else the generated base.
fn current(state: &SimState, t: &Target, item_id: &str) -> Option<SimItem> {
    let tenant = &state.tenant;
    let ordinal = tenant.decode_item_id(t.d, item_id)?;
    match state.drives.latest(t.d.key(), item_id) {
        Some(Entry::Present(item)) => Some(*item),
        Some(Entry::Deleted { .. }) => None,
        Some(Entry::Shared { .. }) | None => {
            let tree = state.trees.get(tenant, t.d);
            (ordinal < tree.len()).then(|| tree.item(tenant, &t.drive, ordinal))
        }
    }
}

/// The last state a deleted item had, by id or by its last path from the drive root.
fn last_present(state: &SimState, t: &Target, sel: &str) -> Option<SimItem> {
    let log = state.drives.entries(t.d.key(), 0, u64::MAX);
    let by_path = sel.starts_with('/');
    let wanted = sel.trim_end_matches('/');
    let matches = |item: &SimItem| {
        if by_path {
            item.path.eq_ignore_ascii_case(wanted)
        } else {
            item.id == sel
        }
    };
    let logged = log.iter().rev().find_map(|e| match e {
        Entry::Present(item) if matches(item) && current(state, t, &item.id).is_none() => Some((**item).clone()),
        _ => None,
    });
    logged.or_else(|| {
        let tree = state.trees.get(&state.tenant, t.d);
        let ordinal = if by_path {
            (1..tree.len()).find(|&o| tree.path(o).eq_ignore_ascii_case(wanted))?
        } else {
            state.tenant.decode_item_id(t.d, sel)?
        };
        let item = (ordinal < tree.len()).then(|| tree.item(&state.tenant, &t.drive, ordinal))?;
        current(state, t, &item.id).is_none().then_some(item)
    })
}

/// An existing item by id or by path from the drive root (`/` is the root).
fn find(state: &SimState, t: &Target, sel: &str) -> Option<SimItem> {
    let sel = sel.trim();
    if sel == "/" || sel.eq_ignore_ascii_case("root") {
        return current(state, t, &state.tenant.item_id(t.d, 0));
    }
    if !sel.starts_with('/') {
        return current(state, t, sel);
    }
    crate::graph::drives::item_at_path(state, t.d, &t.drive, sel)
}

fn find_file(state: &SimState, t: &Target, a: &Activity) -> Result<SimItem, InjectError> {
    let sel = a.item.as_deref().ok_or(InjectError::MissingItem(a.op.operation()))?;
    let item = find(state, t, sel).ok_or_else(|| InjectError::NoSuchItem {
        drive: t.drive.id.clone(),
        item: sel.to_owned(),
    })?;
    if item.is_folder {
        return Err(InjectError::NotAFile(sel.to_owned()));
    }
    Ok(item)
}

fn find_folder(state: &SimState, t: &Target, sel: &str) -> Result<SimItem, InjectError> {
    let item = find(state, t, sel).ok_or_else(|| InjectError::NoSuchItem {
        drive: t.drive.id.clone(),
        item: sel.to_owned(),
    })?;
    if item.is_folder {
        Ok(item)
    } else {
        Err(InjectError::NotAFolder(sel.to_owned()))
    }
}

/// The name OneDrive gives a copy in its source's own folder: `Report - Copy.docx`.
fn copy_name(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} - Copy.{ext}"),
        _ => format!("{name} - Copy"),
    }
}

fn child_path(parent: &SimItem, name: &str) -> String {
    if parent.is_root || parent.path == "/" {
        format!("/{name}")
    } else {
        format!("{}/{name}", parent.path)
    }
}

fn item_web_url(t: &Target, path: &str) -> String {
    let encoded: Vec<String> = path
        .split('/')
        .skip(1)
        .map(|seg| utf8_percent_encode(seg, URL_SEGMENT).to_string())
        .collect();
    format!("{}/{}", t.drive.web_url, encoded.join("/"))
}

fn extension(name: &str) -> Option<&str> {
    name.rsplit_once('.').map(|(_, e)| e).filter(|e| !e.is_empty())
}

fn mime_type(name: &str) -> String {
    let ext = extension(name).unwrap_or_default().to_ascii_lowercase();
    MIME_TYPES
        .iter()
        .find(|(e, _)| *e == ext)
        .map_or("application/octet-stream", |(_, m)| m)
        .to_owned()
}

/// `"{GUID},N"` → `"{GUID},N+1"` (also `"c:{GUID},N"`); unchanged if it does not parse.
fn bump_version(tag: &str) -> String {
    let body = tag.trim_end_matches('"');
    match body.rsplit_once(',') {
        Some((head, n)) => match n.parse::<u64>() {
            Ok(n) => format!("{head},{}\"", n + 1),
            Err(_) => tag.to_owned(),
        },
        None => tag.to_owned(),
    }
}

fn fresh_tags(seed: u64, t: &Target, item_id: &str) -> (String, String) {
    let h = siphash24(seed, K_NEW_ETAG, item_id.as_bytes());
    let g = guid(hash3(seed, K_NEW_ETAG, h), hash4(seed, K_NEW_ETAG, t.d.key(), h)).to_uppercase();
    (format!("\"{{{g}}},1\""), format!("\"c:{{{g}}},1\""))
}

/// A `quickXorHash`-shaped value derived from the version (no content is generated here).
fn derived_quick_xor(seed: u64, item_id: &str, ctag: &str, size: u64) -> String {
    let key = siphash24(seed, K_XOR, format!("{item_id}|{ctag}|{size}").as_bytes());
    let mut bytes = [0u8; 20];
    for (j, chunk) in bytes.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&hash3(seed, key, j as u64).to_be_bytes()[..4]);
    }
    STANDARD.encode(bytes)
}

fn derived_size(seed: u64, item_id: &str, version: u64) -> u64 {
    let h = hash3(seed, K_SIZE, siphash24(seed, version, item_id.as_bytes()));
    1_024 + h % 4_000_000
}

/// Appends an item state to the change log; returns the new drive version.
fn upsert(state: &SimState, t: &Target, item: SimItem) -> u64 {
    state.drives.append(t.d.key(), Entry::Present(Box::new(item)))
}

/// Updates the ancestors of a changed file, root first, as ODB does (delta reports changed
/// items' parents): folder sizes by `size_delta`, the direct parent's child count by
/// `count_delta`, new eTags and modification times. Appended before the item itself so a delta
/// round lists parents before children.
fn touch_ancestors(
    state: &SimState,
    t: &Target,
    parent_id: Option<&str>,
    size_delta: i128,
    count_delta: i64,
    at: DateTime<Utc>,
) {
    let mut chain: Vec<SimItem> = Vec::new();
    let mut cur = parent_id.map(str::to_owned);
    while let Some(id) = cur {
        let Some(folder) = current(state, t, &id) else { break };
        cur = folder.parent_id.clone();
        chain.push(folder);
        if chain.len() > 64 {
            break; // a cycle cannot happen with files only; stay bounded anyway
        }
    }
    for (depth, mut folder) in chain.into_iter().enumerate().rev() {
        let size = i128::from(folder.size) + size_delta;
        folder.size = u64::try_from(size.max(0)).unwrap_or(u64::MAX);
        if depth == 0 {
            let count = i64::from(folder.child_count) + count_delta;
            folder.child_count = u32::try_from(count.max(0)).unwrap_or(u32::MAX);
        }
        folder.etag = bump_version(&folder.etag);
        folder.modified = at;
        upsert(state, t, folder);
    }
}

// ---------------------------------------------------------------------------------------------
// Actors.

#[derive(Debug, Clone)]
enum Who {
    User(Box<SimUser>),
    /// A B2B guest: the address invited, and the guest UPN in this tenant.
    Guest {
        email: String,
        upn: String,
    },
    Anonymous,
}

/// The identity fields of a record.
struct ActorFields {
    user_id: String,
    user_key: String,
    user_type: u8,
    client_ip: String,
    identity: SimIdentity,
}

fn guest_upn(email: &str, tenant_domain: &str) -> String {
    format!("{}#EXT#@{tenant_domain}", email.replace('@', "_"))
}

/// Parses a person: `anonymous`, a tenant user (UPN or id), an existing guest UPN
/// (`x_domain#EXT#@tenant`), or an outside address (a guest).
fn resolve_person(state: &SimState, who: &str) -> Result<Who, InjectError> {
    let tenant = &state.tenant;
    let who = who.trim();
    if who.eq_ignore_ascii_case("anonymous") {
        return Ok(Who::Anonymous);
    }
    if let Some(user) = tenant.find_user(who) {
        return Ok(Who::User(Box::new(user)));
    }
    let lower = who.to_ascii_lowercase();
    if let Some((local, _)) = lower.split_once("#ext#@") {
        if let Some((name, domain)) = local.rsplit_once('_') {
            let email = format!("{name}@{domain}");
            return Ok(Who::Guest {
                upn: guest_upn(&email, tenant.domain()),
                email,
            });
        }
    }
    match lower.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && domain != tenant.domain() => {
            Ok(Who::Guest {
                upn: guest_upn(&lower, tenant.domain()),
                email: lower,
            })
        }
        _ => Err(InjectError::UnknownUser(who.to_owned())),
    }
}

fn actor_fields(state: &SimState, who: &Who, salt: u64) -> ActorFields {
    let seed = state.tenant.seed();
    match who {
        Who::User(u) => {
            let puid = hash3(seed, K_PUID, u.index) & 0xFFFF_FFFF_FFFF;
            ActorFields {
                user_id: u.user_principal_name.clone(),
                user_key: format!("i:0h.f|membership|1003{puid:012x}@live.com"),
                user_type: 0,
                client_ip: format!("203.0.113.{}", 1 + u.index % 254),
                identity: SimIdentity {
                    id: u.id.clone(),
                    display_name: u.display_name.clone(),
                    email: Some(u.user_principal_name.clone()),
                },
            }
        }
        Who::Guest { email, upn } => {
            let h = siphash24(seed, K_PUID, email.as_bytes());
            ActorFields {
                user_id: upn.clone(),
                user_key: format!("i:0h.f|membership|1003{:012x}@live.com", h & 0xFFFF_FFFF_FFFF),
                user_type: 0,
                client_ip: format!("198.51.100.{}", 1 + h % 254),
                identity: SimIdentity {
                    id: guid(hash3(seed, K_PUID, h), h),
                    display_name: email.split('@').next().unwrap_or_default().to_owned(),
                    email: Some(email.clone()),
                },
            }
        }
        Who::Anonymous => {
            let a = hash3(seed, K_ANON, salt);
            let b = hash4(seed, K_ANON, salt, 1);
            let id = format!(
                "urn:spo:anon#{a:016x}{b:016x}{:016x}{:016x}",
                splitmix64(a),
                splitmix64(b)
            );
            ActorFields {
                user_key: id.clone(),
                user_id: id,
                user_type: 0,
                client_ip: format!("192.0.2.{}", 1 + a % 254),
                identity: SimIdentity {
                    id: String::new(),
                    display_name: "Anonymous".to_owned(),
                    email: None,
                },
            }
        }
    }
}

/// `TargetUserOrGroupName` and `TargetUserOrGroupType` of a person.
fn target_fields(who: &Who) -> (String, &'static str) {
    match who {
        Who::User(u) => (u.user_principal_name.clone(), "Member"),
        Who::Guest { email, .. } => (email.clone(), "Guest"),
        Who::Anonymous => ("Anonymous".to_owned(), "Guest"),
    }
}

// ---------------------------------------------------------------------------------------------
// Records.

/// Everything the records of one activity share.
struct RecordCtx<'a> {
    state: &'a SimState,
    t: &'a Target,
    at: DateTime<Utc>,
    correlation: String,
    actor: ActorFields,
    user_agent: String,
    sync_machine: Option<String>,
    /// Number of the activity in this simulator (names generated uploads).
    activity_no: u64,
}

impl RecordCtx<'_> {
    fn list_id(&self) -> String {
        list_id(self.state.tenant.seed(), self.t.d)
    }

    fn list_item_id(&self, item_id: &str) -> String {
        list_item_unique_id(self.state.tenant.seed(), self.t.d, item_id)
    }

    /// The link's `UniqueSharingId`, also the id of its permission (`crate::sharing`).
    fn sharing_id(&self, item_id: &str, scope: LinkScope) -> String {
        crate::sharing::sharing_id(self.state.tenant.seed(), self.t.d.key(), item_id, scope.wire())
    }

    /// The common schema and the SharePoint base schema.
    fn base(&self, inner: &mut InjectorInner, operation: &str, record_type: u8, item_type: &str) -> Map<String, Value> {
        let seed = self.state.tenant.seed();
        let n = inner.records;
        inner.records += 1;
        let id = guid(hash3(seed, K_RECORD_ID, n), hash4(seed, K_RECORD_ID, n, 1));
        let site_id = &self.t.drive.site_id;
        let mut parts = site_id.split(',').skip(1);
        let site_guid = parts.next().unwrap_or_default();
        let web_guid = parts.next().unwrap_or_default();
        let mut r = Map::new();
        r.insert("Id".into(), json!(id));
        r.insert("RecordType".into(), json!(record_type));
        r.insert(
            "CreationTime".into(),
            json!(self.at.format("%Y-%m-%dT%H:%M:%S").to_string()),
        );
        r.insert("Operation".into(), json!(operation));
        r.insert("OrganizationId".into(), json!(self.state.tenant.tenant_id()));
        r.insert("UserType".into(), json!(self.actor.user_type));
        r.insert("UserKey".into(), json!(self.actor.user_key));
        r.insert("Workload".into(), json!("OneDrive"));
        r.insert("ClientIP".into(), json!(self.actor.client_ip));
        r.insert("UserId".into(), json!(self.actor.user_id));
        r.insert("Version".into(), json!(1));
        r.insert("CorrelationId".into(), json!(self.correlation));
        r.insert("EventSource".into(), json!("SharePoint"));
        r.insert("ItemType".into(), json!(item_type));
        r.insert("Site".into(), json!(site_guid));
        r.insert("UserAgent".into(), json!(self.user_agent));
        r.insert("WebId".into(), json!(web_guid));
        if let Some(machine) = &self.sync_machine {
            r.insert(
                "MachineDomainInfo".into(),
                json!(domain_label(self.state.tenant.domain())),
            );
            r.insert("MachineId".into(), json!(machine));
        }
        r
    }

    /// Location fields of a file: file records name the folder in `SourceRelativeUrl` and end
    /// `SiteUrl` with `/`; sharing records name the file and do not (as observed in real records).
    fn locate(&self, r: &mut Map<String, Value>, item: &SimItem, sharing: bool) {
        let site = self.t.site_url();
        let library = self.t.library();
        let folder = item.path.rsplit_once('/').map_or("", |(p, _)| p);
        r.insert("ListId".into(), json!(self.list_id()));
        r.insert("ListItemUniqueId".into(), json!(self.list_item_id(&item.id)));
        r.insert(
            "ObjectId".into(),
            json!(format!("{}{}", self.t.drive.web_url, item.path)),
        );
        if sharing {
            r.insert("SiteUrl".into(), json!(site));
            r.insert("SourceRelativeUrl".into(), json!(format!("{library}{}", item.path)));
        } else {
            r.insert("SiteUrl".into(), json!(format!("{site}/")));
            r.insert("SourceRelativeUrl".into(), json!(format!("{library}{folder}")));
        }
        r.insert("SourceFileName".into(), json!(item.name));
        r.insert(
            "SourceFileExtension".into(),
            json!(extension(&item.name).unwrap_or_default()),
        );
    }

    fn file_record(&self, inner: &mut InjectorInner, operation: &str, item: &SimItem) -> Map<String, Value> {
        let mut r = self.base(inner, operation, RECORD_TYPE_FILE, "File");
        self.locate(&mut r, item, false);
        r
    }

    /// A file record with `Destination*` fields: where the item went.
    fn destination_record(
        &self,
        inner: &mut InjectorInner,
        operation: &str,
        from: &SimItem,
        to: &SimItem,
    ) -> Map<String, Value> {
        let mut r = self.file_record(inner, operation, from);
        let folder = to.path.rsplit_once('/').map_or("", |(p, _)| p);
        r.insert(
            "DestinationRelativeUrl".into(),
            json!(format!("{}{folder}", self.t.library())),
        );
        r.insert("DestinationFileName".into(), json!(to.name));
        r.insert(
            "DestinationFileExtension".into(),
            json!(extension(&to.name).unwrap_or_default()),
        );
        r
    }

    fn sharing_record(&self, inner: &mut InjectorInner, operation: &str, item: &SimItem) -> Map<String, Value> {
        let mut r = self.base(inner, operation, RECORD_TYPE_SHARING, "File");
        self.locate(&mut r, item, true);
        r
    }

    /// A record about the OneDrive as a whole (`ItemType` `Web`, `ObjectId` the site).
    fn site_record(&self, inner: &mut InjectorInner, operation: &str) -> Map<String, Value> {
        let mut r = self.base(inner, operation, RECORD_TYPE_SHARING, "Web");
        r.insert("ObjectId".into(), json!(self.t.site_url()));
        r.insert("SiteUrl".into(), json!(self.t.site_url()));
        r
    }
}

fn domain_label(domain: &str) -> String {
    domain.split('.').next().unwrap_or(domain).to_ascii_uppercase()
}

fn set(r: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    r.insert(key.to_owned(), value.into());
}

// ---------------------------------------------------------------------------------------------
// Applying one activity.

fn apply(
    state: &SimState,
    inner: &mut InjectorInner,
    a: &Activity,
    index: usize,
    return_records: bool,
) -> Result<ActivityOutcome, InjectError> {
    let t = resolve_drive(state, &a.drive)?;
    let seed = state.tenant.seed();
    let at = a.at.unwrap_or_else(|| state.activity.now());
    let activity_no = inner.activities;
    inner.activities += 1;

    // Targets first (they may decide the actor of a secure-link use).
    let targets: Vec<Who> = a
        .targets
        .iter()
        .map(|t| match resolve_person(state, t)? {
            Who::Anonymous => Err(InjectError::Invalid(
                "'anonymous' cannot be a target: use an anonymous link".to_owned(),
            )),
            who => Ok(who),
        })
        .collect::<Result<_, _>>()?;
    if matches!(
        a.op,
        ActivityKind::SecureLinkCreated | ActivityKind::Share | ActivityKind::SharingRevoked
    ) && targets.is_empty()
    {
        return Err(InjectError::Invalid(format!(
            "'{}' needs at least one target",
            a.op.operation()
        )));
    }
    let who = match (&a.actor, a.op) {
        (Some(actor), _) => resolve_person(state, actor)?,
        (None, ActivityKind::AnonymousLinkUsed) => Who::Anonymous,
        (None, ActivityKind::SecureLinkUsed) if !targets.is_empty() => targets[0].clone(),
        (None, _) => Who::User(Box::new(t.owner.clone())),
    };
    let mut actor = actor_fields(state, &who, activity_no);
    if let Some(ip) = &a.client_ip {
        actor.client_ip.clone_from(ip);
    }
    let user_agent = a.user_agent.clone().unwrap_or_else(|| {
        if a.op.is_sync() {
            SYNC_AGENT.to_owned()
        } else {
            BROWSER_AGENT.to_owned()
        }
    });
    let sync_machine = a.op.is_sync().then(|| {
        let h = siphash24(seed, K_MACHINE, actor.user_id.as_bytes());
        format!("{h:016x}{:016x}", splitmix64(h))
    });
    let ctx = RecordCtx {
        state,
        t: &t,
        at,
        correlation: guid(
            hash3(seed, K_CORRELATION, activity_no),
            hash4(seed, K_CORRELATION, activity_no, 1),
        ),
        actor,
        user_agent,
        sync_machine,
        activity_no,
    };

    let mut fx = Effect::default();
    let item = match a.op {
        ActivityKind::Upload | ActivityKind::SyncUpload | ActivityKind::Copy => {
            create(&ctx, inner, a, &targets, &mut fx)?
        }
        ActivityKind::Modify => modify(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::Rename | ActivityKind::Move => relocate(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::Recycle | ActivityKind::Delete => remove(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::Restore => restore(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::Download | ActivityKind::SyncDownload | ActivityKind::Preview | ActivityKind::Access => {
            read(&ctx, inner, a, &targets, &mut fx)?
        }
        ActivityKind::AnonymousLinkCreated | ActivityKind::CompanyLinkCreated | ActivityKind::SecureLinkCreated => {
            link_created(&ctx, inner, a, &targets, &mut fx)?
        }
        ActivityKind::AnonymousLinkUsed
        | ActivityKind::AnonymousLinkRemoved
        | ActivityKind::CompanyLinkUsed
        | ActivityKind::CompanyLinkRemoved
        | ActivityKind::SecureLinkUsed
        | ActivityKind::SecureLinkDeleted => link_event(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::Share => share(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::SharingRevoked => revoke(&ctx, inner, a, &targets, &mut fx)?,
        ActivityKind::PermissionLevelModified => permission_level(&ctx, inner, a, &targets, &mut fx)?,
    };

    let drive_version = state.drives.version(t.d.key());
    let values: Vec<Value> = fx.records.into_iter().map(Value::Object).collect();
    let refs = publish(state, &values);
    Ok(ActivityOutcome {
        index,
        op: a.op,
        records: refs,
        drive_id: t.drive.id.clone(),
        owner: t.owner.user_principal_name.clone(),
        actor: ctx.actor.user_id.clone(),
        item_id: item.as_ref().map(|i| i.id.clone()),
        source_item_id: fx.source_item_id,
        path: item.as_ref().map(|i| i.path.clone()),
        previous_path: fx.previous_path,
        ctag: item.as_ref().and_then(|i| i.ctag.clone()),
        etag: item.as_ref().map(|i| i.etag.clone()),
        size: item.as_ref().map(|i| i.size),
        deleted: fx.deleted,
        at,
        drive_version,
        audit_records: return_records.then_some(values),
    })
}

/// What applying an activity produced besides the item it leaves behind.
#[derive(Default)]
struct Effect {
    records: Vec<Map<String, Value>>,
    previous_path: Option<String>,
    source_item_id: Option<String>,
    deleted: bool,
}

/// A new file: an upload, a sync-app upload or a copy.
fn create(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t, seed, at, activity_no) = (ctx.state, ctx.t, ctx.state.tenant.seed(), ctx.at, ctx.activity_no);
    let source = (a.op == ActivityKind::Copy)
        .then(|| find_file(state, t, a))
        .transpose()?;
    let folder = match (&a.folder, &source) {
        (Some(f), _) => find_folder(state, t, f)?,
        (None, Some(src)) => {
            let parent = src.parent_id.clone().unwrap_or_default();
            find_folder(state, t, &parent)?
        }
        (None, None) => find_folder(state, t, "/")?,
    };
    let name = match (&a.name, &source) {
        (Some(n), _) => n.trim().to_owned(),
        (None, Some(src)) if src.parent_id.as_deref() == Some(folder.id.as_str()) => copy_name(&src.name),
        (None, Some(src)) => src.name.clone(),
        (None, None) => format!("Upload {activity_no}.docx"),
    };
    if name.is_empty() || name.contains(['/', '\\']) {
        return Err(InjectError::Invalid(format!("'{name}' is not a file name")));
    }
    let ordinal = state
        .drives
        .allocate(t.d.key(), state.tenant.drive_item_count(&t.drive.id));
    let id = state.tenant.item_id(t.d, ordinal);
    let (etag, ctag) = fresh_tags(seed, t, &id);
    let size = match (&source, a.size) {
        (Some(src), _) => src.size,
        (None, Some(s)) => s,
        (None, None) => derived_size(seed, &id, 1),
    };
    let path = child_path(&folder, &name);
    let by = ctx.actor.identity.clone();
    let created = SimItem {
        web_url: item_web_url(t, &path),
        quick_xor_hash: Some(match &source {
            Some(src) => src.quick_xor_hash.clone().unwrap_or_default(),
            None => derived_quick_xor(seed, &id, &ctag, size),
        }),
        mime_type: Some(mime_type(&name)),
        id,
        name,
        path,
        parent_id: Some(folder.id.clone()),
        is_folder: false,
        is_root: false,
        size,
        created: at,
        modified: at,
        etag,
        ctag: Some(ctag),
        created_by: by.clone(),
        modified_by: by,
        child_count: 0,
    };
    touch_ancestors(state, t, Some(&folder.id), i128::from(size), 1, at);
    upsert(state, t, created.clone());
    match &source {
        Some(src) => {
            fx.source_item_id = Some(src.id.clone());
            fx.records
                .push(ctx.destination_record(inner, "FileCopied", src, &created));
        }
        None => fx.records.push(ctx.file_record(inner, a.op.operation(), &created)),
    }
    Ok(Some(created))
}

/// A new version of a file.
fn modify(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t, seed, at) = (ctx.state, ctx.t, ctx.state.tenant.seed(), ctx.at);
    let mut item = find_file(state, t, a)?;
    let version = item
        .ctag
        .as_deref()
        .and_then(|c| c.trim_end_matches('"').rsplit_once(','))
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .unwrap_or(1)
        + 1;
    let size = a.size.unwrap_or_else(|| derived_size(seed, &item.id, version));
    let old_size = item.size;
    item.etag = bump_version(&item.etag);
    item.ctag = Some(match &item.ctag {
        Some(c) => bump_version(c),
        None => fresh_tags(seed, t, &item.id).1,
    });
    item.size = size;
    item.modified = at;
    item.modified_by = ctx.actor.identity.clone();
    item.quick_xor_hash = Some(derived_quick_xor(
        seed,
        &item.id,
        item.ctag.as_deref().unwrap_or_default(),
        size,
    ));
    touch_ancestors(
        state,
        t,
        item.parent_id.as_deref(),
        i128::from(size) - i128::from(old_size),
        0,
        at,
    );
    upsert(state, t, item.clone());
    fx.records.push(ctx.file_record(inner, "FileModified", &item));
    Ok(Some(item))
}

/// A rename in place or a move to another folder.
fn relocate(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t, at) = (ctx.state, ctx.t, ctx.at);
    let before = find_file(state, t, a)?;
    let mut item = before.clone();
    if a.op == ActivityKind::Rename {
        let name = a
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.contains(['/', '\\']))
            .ok_or_else(|| InjectError::Invalid("'FileRenamed' needs a new file 'name'".to_owned()))?;
        item.name = name.to_owned();
        let parent_path = before.path.rsplit_once('/').map_or("", |(p, _)| p);
        item.path = format!("{parent_path}/{name}");
        item.mime_type = Some(mime_type(name));
    } else {
        let sel = a
            .folder
            .as_deref()
            .ok_or_else(|| InjectError::Invalid("'FileMoved' needs a destination 'folder'".to_owned()))?;
        let folder = find_folder(state, t, sel)?;
        if before.parent_id.as_deref() == Some(folder.id.as_str()) {
            return Err(InjectError::Invalid(format!(
                "'{}' already is in '{sel}': a move needs another folder",
                before.path
            )));
        }
        item.path = child_path(&folder, &item.name);
        item.parent_id = Some(folder.id.clone());
        touch_ancestors(state, t, before.parent_id.as_deref(), -i128::from(item.size), -1, at);
        touch_ancestors(state, t, Some(&folder.id), i128::from(item.size), 1, at);
    }
    item.web_url = item_web_url(t, &item.path);
    item.etag = bump_version(&item.etag);
    item.modified = at;
    item.modified_by = ctx.actor.identity.clone();
    upsert(state, t, item.clone());
    fx.previous_path = Some(before.path.clone());
    fx.records
        .push(ctx.destination_record(inner, a.op.operation(), &before, &item));
    Ok(Some(item))
}

/// A delete or a recycle.
fn remove(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t, at) = (ctx.state, ctx.t, ctx.at);
    let item = find_file(state, t, a)?;
    touch_ancestors(state, t, item.parent_id.as_deref(), -i128::from(item.size), -1, at);
    state.drives.append(
        t.d.key(),
        Entry::Deleted {
            id: item.id.clone(),
            parent_id: item.parent_id.clone(),
            is_folder: false,
            at,
        },
    );
    fx.deleted = true;
    fx.records.push(ctx.file_record(inner, a.op.operation(), &item));
    Ok(Some(item))
}

/// A restore from the recycle bin, at the item's last path.
fn restore(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t, at) = (ctx.state, ctx.t, ctx.at);
    let sel = a.item.as_deref().ok_or(InjectError::MissingItem("FileRestored"))?;
    if find(state, t, sel).is_some() {
        return Err(InjectError::NotDeleted(sel.to_owned()));
    }
    let mut item = last_present(state, t, sel).ok_or_else(|| InjectError::NoSuchItem {
        drive: t.drive.id.clone(),
        item: sel.to_owned(),
    })?;
    item.etag = bump_version(&item.etag);
    item.modified = at;
    touch_ancestors(state, t, item.parent_id.as_deref(), i128::from(item.size), 1, at);
    upsert(state, t, item.clone());
    fx.records.push(ctx.file_record(inner, "FileRestored", &item));
    Ok(Some(item))
}

/// A read: nothing changes.
fn read(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t) = (ctx.state, ctx.t);
    let item = find_file(state, t, a)?;
    fx.records.push(ctx.file_record(inner, a.op.operation(), &item));
    Ok(Some(item))
}

/// A sharing link: inheritance broken on first share, the link, its grant.
fn link_created(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t) = (ctx.state, ctx.t);
    let item = find_file(state, t, a)?;
    let scope = a.op.link().unwrap_or(LinkScope::Anonymous);
    break_inheritance(ctx, inner, &item, &mut fx.records);
    let sharing_id = ctx.sharing_id(&item.id, scope);
    let mut created = ctx.sharing_record(inner, a.op.operation(), &item);
    set(
        &mut created,
        "EventData",
        format!("<Type>{}</Type>", a.access.type_word()),
    );
    set(&mut created, "UniqueSharingId", sharing_id.clone());
    fx.records.push(created);
    for target in targets {
        let (name, kind) = target_fields(target);
        let mut added = ctx.sharing_record(inner, "AddedToSecureLink", &item);
        set(&mut added, "TargetUserOrGroupName", name);
        set(&mut added, "TargetUserOrGroupType", kind);
        set(&mut added, "UniqueSharingId", sharing_id.clone());
        fx.records.push(added);
    }
    let mut granted = ctx.sharing_record(inner, "SharingSet", &item);
    set(
        &mut granted,
        "TargetUserOrGroupName",
        format!(
            "SharingLinks.{}.{}.{sharing_id}",
            ctx.list_item_id(&item.id),
            scope.group_kind(a.access)
        ),
    );
    set(&mut granted, "TargetUserOrGroupType", "SharePointGroup");
    set(
        &mut granted,
        "EventData",
        format!(
            "<Permissions granted>{}</Permissions granted>",
            a.access.permission_word()
        ),
    );
    set(&mut granted, "UniqueSharingId", sharing_id.clone());
    fx.records.push(granted);
    let people: Vec<SimGrantee> = targets
        .iter()
        .filter_map(|w| grantee_of(state, w, &a.targets))
        .collect();
    let link = crate::sharing::link_permission(
        &state.tenant,
        t.d,
        &t.drive,
        &item,
        (scope.wire(), a.access),
        people,
        ctx.at,
    );
    crate::sharing::update(state, t.d, &t.drive, &item, ctx.at, |perms| {
        match perms.iter_mut().find(|p| p.id == sharing_id) {
            // SharePoint hands back the item's existing link of a scope: it now grants this
            // access, and a specific-people link also the new people.
            Some(existing) => {
                existing.roles.clone_from(&link.roles);
                if let Some(l) = existing.link.as_mut() {
                    l.access = a.access;
                }
                for g in link.grantees {
                    if !existing.grantees.iter().any(|e| e.login_name == g.login_name) {
                        existing.grantees.push(g);
                    }
                }
            }
            None => perms.push(link),
        }
    });
    Ok(Some(item))
}

/// The grantee a sharing target becomes: a member, an existing guest (given as its `#EXT#`
/// UPN), or an outside address invited (no directory account).
fn grantee_of(state: &SimState, who: &Who, specs: &[String]) -> Option<SimGrantee> {
    match who {
        Who::User(u) => Some(crate::sharing::member_grantee(&state.tenant, u.index)),
        Who::Guest { email, .. } if is_existing_guest_spec(specs, who) => {
            Some(crate::sharing::guest_grantee(&state.tenant, email))
        }
        Who::Guest { email, .. } => Some(crate::sharing::invitee_grantee(email)),
        Who::Anonymous => None,
    }
}

/// A link used or removed.
fn link_event(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t) = (ctx.state, ctx.t);
    let item = find_file(state, t, a)?;
    let scope = a.op.link().unwrap_or(LinkScope::Anonymous);
    let sharing_id = ctx.sharing_id(&item.id, scope);
    let mut r = ctx.sharing_record(inner, a.op.operation(), &item);
    set(&mut r, "UniqueSharingId", sharing_id.clone());
    fx.records.push(r);
    if matches!(
        a.op,
        ActivityKind::AnonymousLinkRemoved | ActivityKind::CompanyLinkRemoved | ActivityKind::SecureLinkDeleted
    ) {
        crate::sharing::update(state, t.d, &t.drive, &item, ctx.at, |perms| {
            perms.retain(|p| p.id != sharing_id);
        });
    }
    Ok(Some(item))
}

/// Direct sharing, per target.
fn share(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t) = (ctx.state, ctx.t);
    let item = find_file(state, t, a)?;
    break_inheritance(ctx, inner, &item, &mut fx.records);
    for target in targets {
        let (name, kind) = target_fields(target);
        let existing_guest = is_existing_guest_spec(&a.targets, target);
        match target {
            Who::Guest { upn, .. } if existing_guest => {
                let mut group = ctx.site_record(inner, "AddedToGroup");
                set(&mut group, "TargetUserOrGroupName", upn.clone());
                set(&mut group, "TargetUserOrGroupType", "Guest");
                set(&mut group, "EventData", "<Group>Limited Access System Group</Group>");
                fx.records.push(group);
                let mut r = ctx.sharing_record(inner, "SharingSet", &item);
                set(&mut r, "TargetUserOrGroupName", upn.clone());
                set(&mut r, "TargetUserOrGroupType", "Guest");
                set(
                    &mut r,
                    "EventData",
                    format!(
                        "<Permissions granted>{}</Permissions granted>",
                        a.access.permission_word()
                    ),
                );
                fx.records.push(r);
            }
            Who::Guest { .. } | Who::Anonymous => {
                let mut r = ctx.sharing_record(inner, "SharingInvitationCreated", &item);
                set(&mut r, "TargetUserOrGroupName", name);
                set(&mut r, "TargetUserOrGroupType", kind);
                set(&mut r, "EventData", format!("<Type>{}</Type>", a.access.type_word()));
                fx.records.push(r);
            }
            Who::User(_) => {
                let mut r = ctx.sharing_record(inner, "SharingSet", &item);
                set(&mut r, "TargetUserOrGroupName", name);
                set(&mut r, "TargetUserOrGroupType", kind);
                set(
                    &mut r,
                    "EventData",
                    format!(
                        "<Permissions granted>{}</Permissions granted>",
                        a.access.permission_word()
                    ),
                );
                fx.records.push(r);
            }
        }
    }
    let grants: Vec<_> = targets
        .iter()
        .filter_map(|w| grantee_of(state, w, &a.targets))
        .map(|g| crate::sharing::grant_permission(state.tenant.seed(), g, a.access, ctx.at))
        .collect();
    crate::sharing::update(state, t.d, &t.drive, &item, ctx.at, |perms| {
        for grant in grants {
            match perms.iter_mut().find(|p| p.id == grant.id) {
                Some(existing) => existing.roles = grant.roles,
                None => perms.push(grant),
            }
        }
    });
    Ok(Some(item))
}

/// The address a sharing target is known by in grants (a member's UPN, a guest's address).
fn target_email(who: &Who) -> Option<String> {
    match who {
        Who::User(u) => Some(u.user_principal_name.to_ascii_lowercase()),
        Who::Guest { email, .. } => Some(email.to_ascii_lowercase()),
        Who::Anonymous => None,
    }
}

/// Sharing revoked, per target.
fn revoke(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let (state, t) = (ctx.state, ctx.t);
    let item = find_file(state, t, a)?;
    for target in targets {
        let (name, kind) = match target {
            Who::Guest { upn, .. } if is_existing_guest_spec(&a.targets, target) => (upn.clone(), "Guest"),
            other => target_fields(other),
        };
        let mut r = ctx.sharing_record(inner, "SharingRevoked", &item);
        set(&mut r, "TargetUserOrGroupName", name);
        set(&mut r, "TargetUserOrGroupType", kind);
        fx.records.push(r);
    }
    // The people lose their direct grants and their place on a specific-people link (a link
    // left with nobody goes too).
    let emails: Vec<String> = targets.iter().filter_map(target_email).collect();
    let named = |g: &SimGrantee| {
        g.email
            .as_deref()
            .is_some_and(|e| emails.iter().any(|x| x.eq_ignore_ascii_case(e)))
    };
    crate::sharing::update(state, t.d, &t.drive, &item, ctx.at, |perms| {
        perms.retain(|p| p.link.is_some() || !p.grantees.iter().any(named));
        for p in perms.iter_mut().filter(|p| p.link.is_some()) {
            p.grantees.retain(|g| !named(g));
        }
        perms.retain(|p| {
            p.link
                .as_ref()
                .is_none_or(|l| l.scope != crate::sharing::LinkScope::Users || !p.grantees.is_empty())
        });
    });
    Ok(Some(item))
}

/// A permission level of the OneDrive's site changed.
fn permission_level(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    a: &Activity,
    _targets: &[Who],
    fx: &mut Effect,
) -> Result<Option<SimItem>, InjectError> {
    let mut r = ctx.site_record(inner, "PermissionLevelModified");
    set(
        &mut r,
        "EventData",
        format!("<PermissionLevel>{}</PermissionLevel>", a.access.permission_word()),
    );
    fx.records.push(r);
    Ok(None)
}

/// Whether a guest target was given as an existing guest's UPN (`…#EXT#@…`) rather than as an
/// outside address.
fn is_existing_guest_spec(specs: &[String], target: &Who) -> bool {
    let Who::Guest { upn, .. } = target else { return false };
    specs.iter().any(|s| s.trim().eq_ignore_ascii_case(upn))
}

/// `SharingInheritanceBroken` on an item's first share (as observed in real records).
fn break_inheritance(
    ctx: &RecordCtx<'_>,
    inner: &mut InjectorInner,
    item: &SimItem,
    records: &mut Vec<Map<String, Value>>,
) {
    if inner.unique_permissions.insert((ctx.t.d.key(), item.id.clone())) {
        let mut r = ctx.sharing_record(inner, "SharingInheritanceBroken", item);
        set(&mut r, "EventData", INHERITANCE_BROKEN_DATA);
        records.push(r);
    }
}

// ---------------------------------------------------------------------------------------------
// Publishing.

/// Publishes the records of one activity to the audit log, in order, under `Audit.SharePoint`,
/// at the audit clock's now (the records keep their own `CreationTime`).
fn publish(state: &SimState, records: &[Value]) -> Vec<RecordRef> {
    records
        .iter()
        .map(|r| {
            let published = state
                .activity
                .publish(ContentType::SharePoint, r.clone(), state.activity.now());
            RecordRef {
                id: r["Id"].as_str().unwrap_or_default().to_owned(),
                operation: r["Operation"].as_str().unwrap_or_default().to_owned(),
                record_type: r["RecordType"]
                    .as_u64()
                    .and_then(|n| u8::try_from(n).ok())
                    .unwrap_or_default(),
                content_id: Some(published.content_id),
                available_at: Some(published.available_at),
                duplicate_content_id: published.duplicate_content_id,
                late: published.late,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Random mixes.

/// Per-drive state of a random run.
struct Pool {
    drive: String,
    owner_index: u64,
    base_files: Vec<u32>,
    folders: Vec<u32>,
    created: Vec<String>,
    recycled: Vec<String>,
    /// Items with a link of this kind created in this run: (item, creating kind, targets).
    links: Vec<(String, ActivityKind, Vec<String>)>,
    /// Items shared directly in this run: (item, target).
    shares: Vec<(String, String)>,
}

fn run_random(
    state: &SimState,
    inner: &mut InjectorInner,
    spec: &RandomActivity,
    return_records: bool,
    out: &mut Vec<ActivityOutcome>,
) -> Result<(), (usize, InjectError)> {
    let first = out.len();
    if spec.count > RANDOM_MAX_COUNT {
        return Err((
            first,
            InjectError::Invalid(format!(
                "random.count {} is over the maximum of {RANDOM_MAX_COUNT}",
                spec.count
            )),
        ));
    }
    let mix: Vec<(ActivityKind, u32)> = spec
        .mix
        .clone()
        .unwrap_or_else(default_mix)
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .collect();
    if mix.is_empty() && spec.count > 0 {
        return Err((
            first,
            InjectError::Invalid("random.mix has no kind with a weight above 0".to_owned()),
        ));
    }
    let tenant = &state.tenant;
    let names: Vec<String> = if spec.drives.is_empty() {
        (0..tenant.user_count())
            .filter_map(|i| tenant.drive_of_user(i))
            .take(RANDOM_DEFAULT_DRIVES)
            .map(|d| d.id)
            .collect()
    } else {
        spec.drives.clone()
    };
    let mut pools = Vec::with_capacity(names.len());
    for name in &names {
        let t = resolve_drive(state, name).map_err(|e| (first, e))?;
        let tree = state.trees.get(tenant, t.d);
        let (mut base_files, mut folders) = (Vec::new(), Vec::new());
        for o in 0..tree.len() {
            if tree.node(o).is_folder {
                folders.push(o as u32);
            } else {
                base_files.push(o as u32);
            }
        }
        pools.push(Pool {
            drive: t.drive.id.clone(),
            owner_index: t.owner.index,
            base_files,
            folders,
            created: Vec::new(),
            recycled: Vec::new(),
            links: Vec::new(),
            shares: Vec::new(),
        });
    }
    if pools.is_empty() && spec.count > 0 {
        return Err((
            first,
            InjectError::Invalid("random mix: no OneDrive to act on".to_owned()),
        ));
    }
    let start = spec.start.unwrap_or_else(|| state.activity.now());
    let mut rng = Rng::new(hash3(tenant.seed(), K_RANDOM, spec.seed));
    for n in 0..spec.count {
        let index = out.len();
        let p = rng.below(pools.len() as u64) as usize;
        let kind = mix[rng.pick_weighted(&mix, |(_, w)| *w)].0;
        let at = start
            + chrono::TimeDelta::milliseconds(i64::try_from(spec.step_ms.saturating_mul(n as u64)).unwrap_or(i64::MAX));
        let activity = plan(state, &mut rng, &mut pools[p], kind, at);
        let outcome = apply(state, inner, &activity, index, return_records).map_err(|e| (index, e))?;
        remember(&mut pools[p], &activity, &outcome);
        out.push(outcome);
    }
    Ok(())
}

fn other_user(state: &SimState, rng: &mut Rng, owner: u64) -> String {
    let users = state.tenant.user_count();
    let mut i = rng.below(users);
    if i == owner && users > 1 {
        i = (i + 1) % users;
    }
    state.tenant.user(i).user_principal_name
}

fn random_guest(rng: &mut Rng) -> String {
    format!(
        "{}.{}@{}",
        rng.pick(GUEST_NAMES),
        rng.below(1000),
        rng.pick(GUEST_DOMAINS)
    )
}

/// A live file of the pool: one created in this run or a generated one, checked against the
/// drive's current state.
fn pick_file(state: &SimState, rng: &mut Rng, pool: &Pool) -> Option<String> {
    let t = resolve_drive(state, &pool.drive).ok()?;
    for _ in 0..PICK_ATTEMPTS {
        let candidate = if !pool.created.is_empty() && (pool.base_files.is_empty() || rng.chance(0.3)) {
            pool.created[rng.below(pool.created.len() as u64) as usize].clone()
        } else if !pool.base_files.is_empty() {
            let o = pool.base_files[rng.below(pool.base_files.len() as u64) as usize];
            state.tenant.item_id(t.d, o as usize)
        } else {
            return None;
        };
        if current(state, &t, &candidate).is_some_and(|i| !i.is_folder) {
            return Some(candidate);
        }
    }
    None
}

fn pick_folder(state: &SimState, rng: &mut Rng, pool: &Pool) -> String {
    let Ok(t) = resolve_drive(state, &pool.drive) else {
        return "/".to_owned();
    };
    let o = if pool.folders.is_empty() {
        0
    } else {
        pool.folders[rng.below(pool.folders.len() as u64) as usize]
    };
    let id = state.tenant.item_id(t.d, o as usize);
    if current(state, &t, &id).is_some_and(|i| i.is_folder) {
        id
    } else {
        state.tenant.item_id(t.d, 0)
    }
}

/// Turns a drawn kind into a concrete activity on the pool's drive; a kind that needs what the
/// drive lacks (a file, a link, a recycled item) becomes an upload or the matching creation.
fn plan(state: &SimState, rng: &mut Rng, pool: &mut Pool, kind: ActivityKind, at: DateTime<Utc>) -> Activity {
    use ActivityKind as K;
    let owner = state.tenant.user(pool.owner_index).user_principal_name;
    let mut a = Activity::new(kind, pool.drive.clone());
    a.at = Some(at);
    let upload = |rng: &mut Rng, pool: &Pool, kind: ActivityKind| {
        let mut a = Activity::new(kind, pool.drive.clone());
        a.at = Some(at);
        let stem = rng.pick(UPLOAD_STEMS);
        let ext = rng.pick(MIME_TYPES).0;
        a.name = Some(format!("{stem} {:06}.{ext}", rng.below(1_000_000)));
        if rng.chance(0.7) {
            a.folder = Some(pick_folder(state, rng, pool));
        }
        a.size = Some(match rng.below(10) {
            0 => rng.range(0, 1_024),
            1..=7 => rng.range(10_000, 2_000_000),
            _ => rng.range(2_000_000, 30_000_000),
        });
        if rng.chance(0.8) {
            a.actor = Some(owner.clone());
        } else {
            a.actor = Some(other_user(state, rng, pool.owner_index));
        }
        a
    };
    match kind {
        K::Upload | K::SyncUpload => return upload(rng, pool, kind),
        K::Restore => {
            if pool.recycled.is_empty() {
                return upload(rng, pool, K::Upload);
            }
            let i = rng.below(pool.recycled.len() as u64) as usize;
            a.item = Some(pool.recycled.swap_remove(i));
            return a;
        }
        K::PermissionLevelModified => {
            a.access = if rng.chance(0.5) {
                AccessLevel::Edit
            } else {
                AccessLevel::View
            };
            return a;
        }
        _ => {}
    }
    let link_of = |pool: &Pool, created: ActivityKind| -> Vec<usize> {
        pool.links
            .iter()
            .enumerate()
            .filter(|(_, (_, k, _))| *k == created)
            .map(|(i, _)| i)
            .collect()
    };
    let link_follow_up = match kind {
        K::AnonymousLinkUsed | K::AnonymousLinkRemoved => Some(K::AnonymousLinkCreated),
        K::CompanyLinkUsed | K::CompanyLinkRemoved => Some(K::CompanyLinkCreated),
        K::SecureLinkUsed | K::SecureLinkDeleted => Some(K::SecureLinkCreated),
        _ => None,
    };
    if let Some(created) = link_follow_up {
        let candidates = link_of(pool, created);
        let live = candidates.into_iter().find(|&i| {
            resolve_drive(state, &pool.drive)
                .ok()
                .and_then(|t| current(state, &t, &pool.links[i].0))
                .is_some()
        });
        if let Some(i) = live {
            let (item, _, targets) = pool.links[i].clone();
            a.item = Some(item);
            match kind {
                K::CompanyLinkUsed => a.actor = Some(other_user(state, rng, pool.owner_index)),
                K::SecureLinkUsed => a.actor = targets.first().cloned(),
                K::AnonymousLinkRemoved | K::CompanyLinkRemoved | K::SecureLinkDeleted => {
                    pool.links.swap_remove(i);
                }
                _ => {}
            }
            return a;
        }
        a.op = created;
    }
    if kind == K::SharingRevoked {
        if let Some(i) = (!pool.shares.is_empty()).then(|| rng.below(pool.shares.len() as u64) as usize) {
            let (item, target) = pool.shares.swap_remove(i);
            if resolve_drive(state, &pool.drive)
                .ok()
                .and_then(|t| current(state, &t, &item))
                .is_some()
            {
                a.item = Some(item);
                a.targets = vec![target];
                return a;
            }
        }
        a.op = K::Share;
    }
    let Some(file) = pick_file(state, rng, pool) else {
        return upload(rng, pool, K::Upload);
    };
    if a.op == K::Move {
        // A move goes to another folder; a file with nowhere to go is renamed instead.
        let parent = resolve_drive(state, &pool.drive)
            .ok()
            .and_then(|t| current(state, &t, &file))
            .and_then(|i| i.parent_id);
        let destination = (0..PICK_ATTEMPTS)
            .map(|_| pick_folder(state, rng, pool))
            .find(|f| parent.as_ref() != Some(f));
        match destination {
            Some(f) => a.folder = Some(f),
            None => a.op = K::Rename,
        }
    }
    a.item = Some(file);
    match a.op {
        K::Modify => {
            a.actor = Some(if rng.chance(0.85) {
                owner
            } else {
                other_user(state, rng, pool.owner_index)
            });
            a.size = Some(rng.range(1_000, 5_000_000));
        }
        K::Rename => {
            let stem = rng.pick(UPLOAD_STEMS);
            let ext = rng.pick(MIME_TYPES).0;
            a.name = Some(format!("{stem} renamed {:05}.{ext}", rng.below(100_000)));
        }
        K::Move => {}
        K::Copy => {
            a.folder = Some(pick_folder(state, rng, pool));
            if rng.chance(0.5) {
                a.name = Some(format!(
                    "Copy {:06} of file.{}",
                    rng.below(1_000_000),
                    rng.pick(MIME_TYPES).0
                ));
            }
        }
        K::Download | K::SyncDownload | K::Preview | K::Access if rng.chance(0.4) => {
            a.actor = Some(other_user(state, rng, pool.owner_index));
        }
        K::AnonymousLinkCreated | K::CompanyLinkCreated => {
            a.access = if rng.chance(0.4) {
                AccessLevel::Edit
            } else {
                AccessLevel::View
            };
        }
        K::SecureLinkCreated | K::Share => {
            let target = if rng.chance(0.5) {
                other_user(state, rng, pool.owner_index)
            } else if rng.chance(0.5) {
                guest_upn(&random_guest(rng), state.tenant.domain())
            } else {
                random_guest(rng)
            };
            a.targets = vec![target];
            a.access = if rng.chance(0.4) {
                AccessLevel::Edit
            } else {
                AccessLevel::View
            };
        }
        _ => {}
    }
    a
}

/// Records what a random activity left behind, for later picks.
fn remember(pool: &mut Pool, a: &Activity, outcome: &ActivityOutcome) {
    use ActivityKind as K;
    let Some(item) = outcome.item_id.clone() else { return };
    match outcome.op {
        K::Upload | K::SyncUpload | K::Copy => pool.created.push(item),
        K::Recycle | K::Delete => pool.recycled.push(item),
        K::AnonymousLinkCreated | K::CompanyLinkCreated | K::SecureLinkCreated => {
            pool.links.push((item, outcome.op, a.targets.clone()));
        }
        K::Share => {
            if let Some(target) = a.targets.first() {
                pool.shares.push((item, target.clone()));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_etags_and_ctags_are_bumped_and_odd_tags_left_alone() {
        assert_eq!(bump_version("\"{ABC},3\""), "\"{ABC},4\"");
        assert_eq!(bump_version("\"c:{ABC},9\""), "\"c:{ABC},10\"");
        assert_eq!(bump_version("\"no version\""), "\"no version\"");
        assert_eq!(bump_version("\"{ABC},x\""), "\"{ABC},x\"");
    }

    #[test]
    fn a_copy_in_its_own_folder_is_named_as_onedrive_names_it() {
        assert_eq!(copy_name("Report.docx"), "Report - Copy.docx");
        assert_eq!(copy_name("README"), "README - Copy");
        assert_eq!(copy_name(".profile"), ".profile - Copy");
    }

    #[test]
    fn request_bodies_parse_with_defaults_and_refuse_unknown_fields() {
        let r: ActivityRequest =
            serde_json::from_str(r#"{"operations": [{"op": "sync_upload", "drive": "d"}]}"#).expect("parses");
        assert_eq!(r.operations[0].op, ActivityKind::SyncUpload);
        assert_eq!(r.operations[0].access, AccessLevel::View);
        assert!(!r.return_records);
        let mix: ActivityRequest =
            serde_json::from_str(r#"{"random": {"count": 3, "seed": 1, "mix": {"anonymous_link_used": 2}}}"#)
                .expect("parses");
        let weights = mix.random.and_then(|r| r.mix).expect("mix");
        assert_eq!(weights.get(&ActivityKind::AnonymousLinkUsed), Some(&2));
        assert!(
            serde_json::from_str::<ActivityRequest>(r#"{"operations": [{"op": "upload", "drive": "d", "colour": 1}]}"#)
                .is_err()
        );
    }

    #[test]
    fn every_kind_has_a_default_weight_and_an_operation_name() {
        let mix = default_mix();
        for kind in ActivityKind::ALL {
            assert!(mix.get(&kind).is_some_and(|w| *w > 0), "{kind:?}");
            assert!(!kind.operation().is_empty());
        }
    }
}
