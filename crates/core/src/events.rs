//! File events as filetrail stores them: a normalised [`FileEvent`] with the connection it came
//! from and the digests of the file version it concerns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::FileEvent;
use crate::model::ConnectionId;

/// Where an event was observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventSource {
    /// The Management Activity API's `Audit.SharePoint` feed, OneDrive records.
    OneDrive,
    /// Sent mail with attachments.
    Email,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneDrive => "onedrive",
            Self::Email => "email",
        }
    }
}

/// The MD5 and SHA-256 of one file version, with what was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHashes {
    /// Lowercase hex.
    pub md5: String,
    /// Lowercase hex.
    pub sha256: String,
    /// The cTag of the version hashed (`"c:{GUID},N"`): the content version.
    pub ctag: String,
    /// Bytes hashed.
    pub size: u64,
    /// When this content version began: the newest content change (upload, modification,
    /// copy, restore) the file's events show at or before the version's `lastModifiedDateTime`;
    /// `None` when no event shows it. Events from then on concern this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<DateTime<Utc>>,
    pub hashed_at: DateTime<Utc>,
    /// A previous version hashed through `…/versions` (its id, `2.0`): Graph gives previous
    /// versions no cTag, so `ctag` is empty then. `None` for the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// The outcome of hashing, as recorded on events and inventory rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HashOutcome {
    Hashed(FileHashes),
    /// No digest: why, in words an analyst reads in search results.
    Unavailable {
        reason: String,
    },
}

/// Why an event has no digest.
pub mod unavailable {
    /// The file was deleted before it could be downloaded.
    pub const DELETED_BEFORE_HASHING: &str = "file deleted before it could be hashed";
    /// The file changed again before this event's version could be downloaded.
    pub const CHANGED_BEFORE_HASHING: &str = "file changed again before this version could be hashed";
    /// The event concerns a folder, a list or the drive, which have no content.
    pub const NO_CONTENT: &str = "no file content (folder, list or drive)";
    /// The event's item could not be resolved to a drive item.
    pub const ITEM_NOT_RESOLVED: &str = "file could not be located in the drive";
    /// The event's version was replaced before it was hashed, and OneDrive no longer keeps it
    /// (its version history is off or limited).
    pub const VERSION_NOT_KEPT: &str = "OneDrive no longer keeps the version this event concerns";
}

/// One stored file event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub connection: ConnectionId,
    pub source: EventSource,
    #[serde(flatten)]
    pub event: FileEvent,
    /// The digests of the file version the event concerns, once hashed, or why there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<HashOutcome>,
}

impl EventRecord {
    pub fn onedrive(connection: &str, event: FileEvent) -> Self {
        Self {
            connection: connection.to_owned(),
            source: EventSource::OneDrive,
            event,
            hash: None,
        }
    }

    /// The event's key: record ids are unique per tenant, and one tenant may be registered once
    /// per kind, so the connection and the id together are unique in the table.
    pub fn key(&self) -> String {
        event_key(&self.connection, &self.event.id)
    }

    pub fn hashes(&self) -> Option<&FileHashes> {
        match &self.hash {
            Some(HashOutcome::Hashed(h)) => Some(h),
            _ => None,
        }
    }
}

/// The key of event `id` of `connection`.
pub fn event_key(connection: &str, id: &str) -> String {
    format!("{connection}#{id}")
}
