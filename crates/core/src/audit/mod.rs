//! Normalising Management Activity API audit records (`Audit.SharePoint` content) into file
//! events. Pure: bytes or JSON in, a [`FileEvent`], a counted skip or a quarantine entry out.
//!
//! # What the ingest use case does with this
//! 1. Fetch a content blob (a JSON array of records) and call [`normalise_blob`] with a
//!    [`NormaliseContext`] built from the connection's trusted domains and its monitored drives
//!    ([`NormaliseContext::with_drives`]).
//! 2. Write every [`FileEvent`] idempotently keyed by its `id` (the record's `Id`: Microsoft
//!    delivers duplicates by design), count the skips by [`SkipReason::code`], and keep every
//!    [`Quarantine`] with its reason and raw record, so unknown operations and malformed
//!    records are visible and can be replayed once the mapping learns them.
//! 3. Drop events whose `drive_id` is `None` because their site is not a monitored drive
//!    (`unresolved == Some(DriveNotKnown)`), or keep them as unmonitored activity.
//! 4. Resolve the item of each remaining event through the resolver port: look up
//!    [`FileEvent::lookup_path`] in the drive (Graph `GET /drives/{drive-id}/root:{path}`, path
//!    segments percent-encoded, or the inventory row with that path), or the record's
//!    `list_item_unique_id` where the inventory knows it. Set `item_id` and clear `unresolved`,
//!    or set `unresolved = Some(ItemNotFound)` and keep the event (a file deleted since).
//!    [`location::drive_relative_path`] turns a drive's `webUrl` and a file URL into that path.
//! 5. Enqueue a hash job for events where [`FileEvent::needs_hash`] holds, and for files never
//!    hashed.
//!
//! # Which records become events
//! - Kept: `Workload` `OneDrive` (or, when `Workload` is absent, a `SiteUrl`/`ObjectId` under
//!   `/personal/`), `RecordType` 4, 6, 7 or 14, an `Operation` of [`operations::OPERATIONS`].
//! - Skipped, counted, with a [`SkipReason`]: other workloads (SharePoint team and
//!   communication sites, Exchange, AIP's colliding `FileDeleted`); other record types (DLP,
//!   list operations, labels); operations of [`operations::NOT_RECORDED`]; sharing records on
//!   a list or page rather than a file, folder or the drive; a library's own view pages
//!   (`/Forms/*.aspx`).
//! - Quarantined: an operation in neither table, or a record that is not JSON, misses a
//!   mandatory field (`Id`, `RecordType`, `Operation`, `CreationTime`, `UserId`) or carries a
//!   field of the wrong type; the reason names the field.

pub mod location;
mod normalise;
pub mod operations;
pub mod record;
pub mod sharing;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::DriveRecord;

pub use operations::{FileEventType, LinkScope, OPERATIONS, OperationMapping, Signal};
pub use sharing::{Permission, SharingTarget, TargetKind, TrustedDomains};

/// Record types that carry OneDrive file and sharing activity (`AuditLogRecordType` in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>):
/// 4 SharePoint (site permissions), 6 SharePointFileOperation (where OneDrive file events really
/// arrive, as observed in real records), 7 OneDrive (documented, rarely seen), 14
/// SharePointSharingOperation.
pub const FILE_RECORD_TYPES: [i64; 4] = [4, 6, 7, 14];

/// The longest record `Id` accepted. Ids are GUIDs, 36 characters (the API schema's common schema); a longer
/// value is not an Id, and event keys must stay far below DynamoDB's 2,048-byte partition key.
pub const MAX_RECORD_ID_LEN: usize = 256;

/// How much of a quarantined record is kept verbatim: 64 KiB, well under DynamoDB's 400 KB item
/// limit; real SharePoint records are 1–3 KB.
pub const MAX_QUARANTINE_RAW_BYTES: usize = 64 * 1024;

/// How much of a sharing record's `EventData` is kept on the event: 4 KiB (real values are tens
/// of bytes in the records observed).
pub const MAX_EVENT_DATA_BYTES: usize = 4 * 1024;

/// What normalisation needs besides the record. Built once per blob.
#[derive(Debug, Clone)]
pub struct NormaliseContext {
    /// Email domains inside the organisation, for the external flags.
    pub trusted_domains: TrustedDomains,
    /// Stamped on every event as `inserted_at`.
    pub inserted_at: DateTime<Utc>,
    /// Monitored drives by personal site key ([`location::personal_site_key`] of their web URL):
    /// they give events their drive id, owner and exact library.
    pub drives: HashMap<String, KnownDrive>,
}

/// A monitored OneDrive as normalisation needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDrive {
    pub drive_id: String,
    pub owner_upn: String,
    /// Graph's `webUrl` of the drive (`https://…/personal/alice_contoso_com/Documents`).
    pub web_url: String,
}

impl NormaliseContext {
    /// A context without known drives: events keep `drive_id` `None` with the reason
    /// [`UnresolvedReason::DriveNotKnown`], and their paths assume the drive is the library
    /// named by the first segment of the record's site-relative URL (`Documents`).
    pub fn new(trusted_domains: TrustedDomains, inserted_at: DateTime<Utc>) -> Self {
        Self {
            trusted_domains,
            inserted_at,
            drives: HashMap::new(),
        }
    }

    /// Adds the drives of the connection; drives without a web URL under `/personal/` cannot be
    /// matched to records and are left out.
    pub fn with_drives<'a>(mut self, drives: impl IntoIterator<Item = &'a DriveRecord>) -> Self {
        for d in drives {
            if let Some(web_url) = &d.web_url {
                self.add_drive(KnownDrive {
                    drive_id: d.drive_id.clone(),
                    owner_upn: d.owner_upn.clone(),
                    web_url: web_url.clone(),
                });
            }
        }
        self
    }

    /// Adds one drive, keyed by its web URL's personal site key; returns whether it could be.
    pub fn add_drive(&mut self, drive: KnownDrive) -> bool {
        let decoded = location::percent_decode(&drive.web_url);
        match location::personal_site_key(&decoded) {
            Some(key) => {
                self.drives.insert(key, drive);
                true
            }
            None => false,
        }
    }
}

/// The outcome for a record that is not quarantined.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    Event(Box<FileEvent>),
    Skip(SkipReason),
}

/// Why a well-formed record produces no event. Counted by the caller, never an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// Not OneDrive activity: a SharePoint site, another workload.
    NotOneDrive {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        workload: Option<String>,
    },
    /// A OneDrive record of a type that carries no file activity (DLP, list operations, labels).
    RecordType { record_type: i64 },
    /// An operation filetrail knows and does not record ([`operations::NOT_RECORDED`]).
    NotRecorded { operation: String, why: String },
    /// A sharing or permission record about a list or a page, not a file, folder or drive.
    NotAFile { item_type: String },
    /// One of a library's own view pages (`/Forms/AllItems.aspx`).
    LibraryPage,
}

impl SkipReason {
    /// A stable name for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotOneDrive { .. } => "not_onedrive",
            Self::RecordType { .. } => "record_type",
            Self::NotRecorded { .. } => "not_recorded",
            Self::NotAFile { .. } => "not_a_file",
            Self::LibraryPage => "library_page",
        }
    }
}

/// A record kept aside instead of becoming an event, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("audit record {} quarantined: {reason}", record_id.as_deref().unwrap_or("(no Id)"))]
pub struct Quarantine {
    /// The record's `Id`, when it has a usable one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    pub reason: QuarantineReason,
    /// The record as received (at most [`MAX_QUARANTINE_RAW_BYTES`]), for replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// Why a record was quarantined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuarantineReason {
    /// A OneDrive file-activity record whose `Operation` is in neither mapping table.
    #[error("unknown operation {operation:?}: add it to the audit mapping table or to NOT_RECORDED")]
    UnknownOperation { operation: String },
    /// A field is missing, of the wrong type, or unreadable. `field` is the record's own name
    /// for it (`CreationTime`), `record` for the record as a whole, `blob` for a content blob.
    #[error("field {field}: {detail}")]
    Malformed { field: String, detail: String },
}

impl QuarantineReason {
    /// A stable name for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownOperation { .. } => "unknown_operation",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    File,
    Folder,
    /// The whole OneDrive (a site-level share, permission or admin change).
    Drive,
}

/// Who did it, as far as the record tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A person of the organisation's directory.
    User,
    /// A B2B guest (`#EXT#` UPN or `UserType` 10).
    Guest,
    /// An application: `app@sharepoint` (SharePoint app-only access for retention, eDiscovery,
    /// Groups and Teams provisioning) or `UserType` 5/6.
    Application,
    /// A system account (`SHAREPOINT\system`, `NT AUTHORITY\…`, `S-1-5-…`, `UserType` 4/8).
    System,
    /// Someone who used an anonymous link.
    Anonymous,
}

/// The actor of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `UserId`, verbatim (empty only for an anonymous link use that names no one).
    pub id: String,
    /// `UserId` in lowercase when it is an address (a UPN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// The person's address: the UPN of a member, the invited address of a guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub kind: ActorKind,
    /// `UserType`, as its number (unknown values kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<i64>,
    /// `UserKey` (PUID-style alternate id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// Whether the actor is outside the trusted domains; `None` when it cannot be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

/// Where a moved, copied or renamed item went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Path from the drive root, when the destination is in the same library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `DestinationRelativeUrl` + `DestinationFileName`, relative to the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
}

/// Sharing details of a sharing, link, invitation or permission event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sharing {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_scope: Option<LinkScope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Permission>,
    /// The permission word as the record wrote it (`Contribute`, `Edit`, `Limited Access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_detail: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<SharingTarget>,
    /// Whether the share reaches outside the organisation: an anonymous link, or a target
    /// outside the trusted domains. `None` when the record does not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_sharing_id: Option<String>,
    /// `EventData`, verbatim (at most [`MAX_EVENT_DATA_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_data: Option<String>,
}

/// Why an event has no `item_id` (or no `drive_id`) yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnresolvedReason {
    /// The site is not one of the monitored drives the context knows.
    DriveNotKnown,
    /// The drive is known; the item is to be looked up by path (the resolver's job).
    ItemNotLookedUp,
    /// The record's URL is in another list or library of the site, not in the drive.
    OutsideDrive,
    /// The record names no URL to look up.
    NoLocation,
    /// The resolver found no item at the path (deleted or moved since).
    ItemNotFound,
}

impl UnresolvedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DriveNotKnown => "drive not known: the site is not a monitored OneDrive",
            Self::ItemNotLookedUp => "item not looked up yet",
            Self::OutsideDrive => "the URL is outside the drive's library",
            Self::NoLocation => "the record names no file URL",
            Self::ItemNotFound => "no item at the path (deleted or moved since)",
        }
    }
}

/// One file event, normalised from one audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEvent {
    /// The audit record's `Id`: the idempotency key.
    pub id: String,
    pub event_type: FileEventType,
    /// Recorded but noisy: reads and previews, side effects of another event, and reads by
    /// applications or system accounts.
    pub low_signal: bool,
    /// The record's `Operation`, verbatim.
    pub operation: String,
    pub record_type: i64,
    pub item_kind: ItemKind,
    pub actor: Actor,
    /// The OneDrive owner's UPN: from the monitored drive, or the actor when their UPN is the
    /// one the site was named after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_upn: Option<String>,
    /// The personal site key (`alice_contoso_com`) of the OneDrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_key: Option<String>,
    /// `SiteUrl` without its trailing slash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_url: Option<String>,
    /// `ObjectId`, verbatim: the item's full URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_url: Option<String>,
    /// Set for files and folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Path from the drive root (`/Reports/q3.xlsx`), the inventory's form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lowercase, without the dot; files only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_item_unique_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drive_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// Why `drive_id` or `item_id` is missing; `None` once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved: Option<UnresolvedReason>,
    /// When it happened: the record's `CreationTime`, in UTC.
    pub observed_at: DateTime<Utc>,
    /// When filetrail normalised it.
    pub inserted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `ResultStatus`, verbatim, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_status: Option<String>,
    /// Set for sharing, link, invitation and permission events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<Sharing>,
}

impl FileEvent {
    /// The drive path a resolver looks the item up by: where a moved or renamed item is now, or
    /// the new file a copy made (the destination), else the path the record names.
    pub fn lookup_path(&self) -> Option<&str> {
        let moved = matches!(
            self.event_type,
            FileEventType::Moved | FileEventType::Renamed | FileEventType::Copied
        );
        let destination = self.destination.as_ref().and_then(|d| d.path.as_deref());
        if moved && destination.is_some() {
            destination
        } else {
            self.path.as_deref()
        }
    }

    /// Whether the file's content may have changed, so it should be hashed again.
    pub fn needs_hash(&self) -> bool {
        self.item_kind == ItemKind::File && self.event_type.may_change_content()
    }
}

/// Normalises one audit record given as JSON bytes. Never panics, whatever the bytes.
///
/// # Errors
/// A [`Quarantine`] for bytes that are not a JSON object, for a missing or mistyped mandatory
/// field (named in the reason), and for an operation in neither mapping table.
pub fn normalise(raw: &[u8], ctx: &NormaliseContext) -> Result<Normalised, Quarantine> {
    // serde reads a struct from a JSON array too (field by position); a record is an object.
    let is_object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let parsed = if is_object {
        serde_json::from_slice::<record::RawRecord<'_>>(raw).map_err(|e| e.to_string())
    } else {
        Err("a record is a JSON object".to_owned())
    };
    match parsed {
        Ok(rec) => normalise::record(&rec, ctx).map_err(|q| q.with_raw(|| lossy_capped(raw))),
        Err(e) => Err(not_a_record(e, lossy_capped(raw))),
    }
}

/// Normalises one audit record already parsed as a JSON value. Same contract as [`normalise`].
///
/// # Errors
/// As [`normalise`].
pub fn normalise_value(raw: &serde_json::Value, ctx: &NormaliseContext) -> Result<Normalised, Quarantine> {
    let capped = || record::truncate(&raw.to_string(), MAX_QUARANTINE_RAW_BYTES).to_owned();
    let parsed = if raw.is_object() {
        record::RawRecord::deserialize(raw).map_err(|e| e.to_string())
    } else {
        Err("a record is a JSON object".to_owned())
    };
    match parsed {
        Ok(rec) => normalise::record(&rec, ctx).map_err(|q| q.with_raw(capped)),
        Err(e) => Err(not_a_record(e, capped())),
    }
}

fn not_a_record(error: String, raw: String) -> Quarantine {
    Quarantine {
        record_id: None,
        reason: QuarantineReason::Malformed {
            field: "record".to_owned(),
            detail: format!("not a JSON audit record: {error}"),
        },
        raw: Some(raw),
    }
}

/// Everything one content blob produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlobOutcome {
    pub events: Vec<FileEvent>,
    /// Skipped records by [`SkipReason::code`].
    pub skipped: BTreeMap<&'static str, u64>,
    pub quarantined: Vec<Quarantine>,
}

impl BlobOutcome {
    pub fn records(&self) -> u64 {
        self.events.len() as u64 + self.skipped.values().sum::<u64>() + self.quarantined.len() as u64
    }
}

/// Normalises a content blob: the JSON array of records `GET {contentUri}` returns ("Retrieve
/// content" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
/// Each record is normalised on its own, so one bad record never costs the others.
///
/// # Errors
/// A [`Quarantine`] with field `blob` when the bytes are not a JSON array (nothing can be
/// split out of them).
pub fn normalise_blob(blob: &[u8], ctx: &NormaliseContext) -> Result<BlobOutcome, Quarantine> {
    let records: Vec<&serde_json::value::RawValue> = serde_json::from_slice(blob).map_err(|e| Quarantine {
        record_id: None,
        reason: QuarantineReason::Malformed {
            field: "blob".to_owned(),
            detail: format!("not a JSON array of audit records: {e}"),
        },
        raw: Some(lossy_capped(blob)),
    })?;
    let mut out = BlobOutcome::default();
    for rec in records {
        match normalise(rec.get().as_bytes(), ctx) {
            Ok(Normalised::Event(event)) => out.events.push(*event),
            Ok(Normalised::Skip(reason)) => *out.skipped.entry(reason.code()).or_default() += 1,
            Err(q) => out.quarantined.push(q),
        }
    }
    Ok(out)
}

impl Quarantine {
    fn with_raw(mut self, raw: impl FnOnce() -> String) -> Self {
        self.raw = Some(raw());
        self
    }
}

fn lossy_capped(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    record::truncate(&text, MAX_QUARANTINE_RAW_BYTES).to_owned()
}
