//! The mapping from SharePoint/OneDrive audit `Operation` names to filetrail event types.
//!
//! Every operation name below is one Microsoft documents: the "File and page", "Folder", "Sharing
//! and access request", "Synchronization" and "Site permissions" tables of the Purview audit-log
//! activities page (<https://learn.microsoft.com/en-us/purview/audit-log-activities>), or the
//! `SharePointAuditOperation` enum of the Management Activity API schema
//! (<https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>).
//! Names seen only in third-party tooling are deliberately absent: such a record is quarantined as
//! an unknown operation, counted, and can be replayed once the table learns the name.
//!
//! Three outcomes exist for an operation of a OneDrive record:
//! - listed in [`OPERATIONS`]: normalised into a file event;
//! - listed in [`NOT_RECORDED`]: skipped on purpose, with the reason given there;
//! - in neither: quarantined as [`super::QuarantineReason::UnknownOperation`].

use serde::{Deserialize, Serialize};

/// What happened to a file, as filetrail records it. Serialised in snake_case (`anonymous_link_created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileEventType {
    /// A file arrived: uploaded in the browser or by the sync app (a new file, or a new version
    /// uploaded over one), or a folder was created.
    Created,
    /// Content or properties changed.
    Modified,
    Renamed,
    Moved,
    Copied,
    /// Deleted (on OneDrive, usually into the recycle bin; see also `Recycled`).
    Deleted,
    /// Moved into the recycle bin.
    Recycled,
    /// Removed from the first- or second-stage recycle bin: gone for good.
    Purged,
    /// Restored from the recycle bin.
    Restored,
    /// Downloaded in the browser or to a computer by the sync app.
    Downloaded,
    /// Opened or read. Low signal: logged for system accounts and deduplicated by Microsoft.
    Accessed,
    /// Previewed. Low signal: can come from thumbnails and prefetch.
    Previewed,
    AnonymousLinkCreated,
    AnonymousLinkUpdated,
    /// Someone used an "Anyone" link; the actor is usually not identifiable, the IP is.
    AnonymousLinkUsed,
    AnonymousLinkRemoved,
    /// A link for everyone in the organisation ("company link").
    OrganizationLinkCreated,
    OrganizationLinkUsed,
    OrganizationLinkRemoved,
    /// A "specific people" link ("secure link").
    SpecificPeopleLinkCreated,
    SpecificPeopleLinkUsed,
    SpecificPeopleLinkRemoved,
    /// A person was added to a specific-people link: the target names who.
    AddedToSpecificPeopleLink,
    RemovedFromSpecificPeopleLink,
    /// A sharing link of unstated kind (the schema's older `SharedLinkCreated`).
    SharingLinkCreated,
    /// A sharing link of unstated kind disabled (the schema's older `SharedLinkDisabled`).
    SharingLinkRemoved,
    /// Shared with someone who is not in the directory: an invitation was sent.
    InvitationCreated,
    InvitationUpdated,
    InvitationAccepted,
    InvitationRevoked,
    /// An invitation refused by the tenant's domain allow/deny policy.
    InvitationBlocked,
    /// Shared directly with a user or group in the directory (member or guest), or a link's
    /// system group was granted access.
    SharingSet,
    /// Unshared.
    SharingRevoked,
    /// The item stopped inheriting permissions (happens on its first share).
    SharingInheritanceBroken,
    /// The item inherits permissions again: its own grants are gone.
    SharingInheritanceReset,
    /// A user or group joined a SharePoint group; often the side effect of a share.
    AddedToGroup,
    RemovedFromGroup,
    /// A permission level of the drive's site collection was added, changed or removed, or
    /// permission-level inheritance was broken.
    PermissionLevelChanged,
    /// Someone became a site collection admin of the drive (also logged when an admin gives
    /// themselves access to a user's OneDrive).
    SiteAdminAdded,
    SiteAdminRemoved,
}

/// Whether an event is worth an analyst's attention on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    High,
    /// Recorded and searchable, but noisy: reads, previews, side effects of another event.
    Low,
}

/// What a sharing link lets in. Serialised `anonymous`, `organization`, `specific_people`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkScope {
    /// Anyone with the link, no sign-in.
    Anonymous,
    /// Signed-in members of the tenant.
    Organization,
    /// The people named on the link.
    SpecificPeople,
}

/// What the operation acts on, as its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// `File*` operations (and `RecordDelete`): always a file.
    File,
    /// `Folder*` operations: always a folder.
    Folder,
    /// Sharing and permission operations: a file, a folder or the whole drive, as the record's
    /// `ItemType` says.
    Any,
}

/// One row of the mapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationMapping {
    /// The audit record's `Operation`, verbatim.
    pub operation: &'static str,
    pub event_type: FileEventType,
    pub signal: Signal,
    pub subject: Subject,
}

const fn map(operation: &'static str, event_type: FileEventType, signal: Signal, subject: Subject) -> OperationMapping {
    OperationMapping {
        operation,
        event_type,
        signal,
        subject,
    }
}

use FileEventType as T;
use Signal::{High, Low};
use Subject::{Any, File, Folder};

/// Every operation filetrail records, with the event type it becomes.
pub const OPERATIONS: &[OperationMapping] = &[
    // Files: content and location.
    map("FileUploaded", T::Created, High, File),
    map("FileSyncUploadedFull", T::Created, High, File),
    // Deprecated with the Groove.exe sync app; kept so old records still map.
    map("FileSyncUploadedPartial", T::Modified, High, File),
    map("FileModified", T::Modified, High, File),
    // Continual modification by the same person: a modify for every purpose (hashing included).
    map("FileModifiedExtended", T::Modified, High, File),
    map("FileRenamed", T::Renamed, High, File),
    map("FileMoved", T::Moved, High, File),
    map("FileCopied", T::Copied, High, File),
    map("FileDeleted", T::Deleted, High, File),
    // A document marked as a record was deleted.
    map("RecordDelete", T::Deleted, High, File),
    map("FileRecycled", T::Recycled, High, File),
    map("FileDeletedFirstStageRecycleBin", T::Purged, High, File),
    map("FileDeletedSecondStageRecycleBin", T::Purged, High, File),
    map("FileRestored", T::Restored, High, File),
    // Files: reads.
    map("FileDownloaded", T::Downloaded, High, File),
    map("FileSyncDownloadedFull", T::Downloaded, High, File),
    map("FileSyncDownloadedPartial", T::Downloaded, High, File),
    map("FileAccessed", T::Accessed, Low, File),
    map("FileAccessedExtended", T::Accessed, Low, File),
    // Deprecated names replaced by FileAccessed.
    map("FileFetched", T::Accessed, Low, File),
    map("FileViewed", T::Accessed, Low, File),
    map("FilePreviewed", T::Previewed, Low, File),
    // Folders: a folder deleted, moved or renamed changes every file below it, and may be logged
    // only once for all of them.
    map("FolderCreated", T::Created, Low, Folder),
    map("FolderRenamed", T::Renamed, High, Folder),
    map("FolderMoved", T::Moved, High, Folder),
    map("FolderCopied", T::Copied, High, Folder),
    map("FolderDeleted", T::Deleted, High, Folder),
    map("FolderRecycled", T::Recycled, High, Folder),
    map("FolderDeletedFirstStageRecycleBin", T::Purged, High, Folder),
    map("FolderDeletedSecondStageRecycleBin", T::Purged, High, Folder),
    map("FolderRestored", T::Restored, High, Folder),
    // Links.
    map("AnonymousLinkCreated", T::AnonymousLinkCreated, High, Any),
    map("AnonymousLinkUpdated", T::AnonymousLinkUpdated, High, Any),
    map("AnonymousLinkUsed", T::AnonymousLinkUsed, High, Any),
    map("AnonymousLinkRemoved", T::AnonymousLinkRemoved, High, Any),
    map("CompanyLinkCreated", T::OrganizationLinkCreated, High, Any),
    // A member opening an organisation link is a read like FileAccessed.
    map("CompanyLinkUsed", T::OrganizationLinkUsed, Low, Any),
    map("CompanyLinkRemoved", T::OrganizationLinkRemoved, High, Any),
    map("SecureLinkCreated", T::SpecificPeopleLinkCreated, High, Any),
    map("SecureLinkUsed", T::SpecificPeopleLinkUsed, High, Any),
    map("SecureLinkDeleted", T::SpecificPeopleLinkRemoved, High, Any),
    map("AddedToSecureLink", T::AddedToSpecificPeopleLink, High, Any),
    map("RemovedFromSecureLink", T::RemovedFromSpecificPeopleLink, High, Any),
    // The schema enum's names for links of unstated kind.
    map("SharedLinkCreated", T::SharingLinkCreated, High, Any),
    map("SharedLinkDisabled", T::SharingLinkRemoved, High, Any),
    // Invitations (people not in the directory), under current and older names.
    map("SharingInvitationCreated", T::InvitationCreated, High, Any),
    map("SharingInvitationUpdated", T::InvitationUpdated, High, Any),
    map("SharingInvitationAccepted", T::InvitationAccepted, High, Any),
    map("SharingInvitationRevoked", T::InvitationRevoked, High, Any),
    map("SharingInvitationBlocked", T::InvitationBlocked, High, Any),
    map("AccessInvitationCreated", T::InvitationCreated, High, Any),
    map("AccessInvitationUpdated", T::InvitationUpdated, High, Any),
    map("AccessInvitationAccepted", T::InvitationAccepted, High, Any),
    map("AccessInvitationRevoked", T::InvitationRevoked, High, Any),
    // Direct grants and permissions.
    map("SharingSet", T::SharingSet, High, Any),
    map("SharingRevoked", T::SharingRevoked, High, Any),
    // Logged on an item's first share, next to the share itself.
    map("SharingInheritanceBroken", T::SharingInheritanceBroken, Low, Any),
    map("SharingInheritanceReset", T::SharingInheritanceReset, High, Any),
    // Usually the side effect of a SharingSet, which carries the share.
    map("AddedToGroup", T::AddedToGroup, Low, Any),
    map("RemovedFromGroup", T::RemovedFromGroup, Low, Any),
    // The schema enum's names for the same two.
    map("UserAddedToGroup", T::AddedToGroup, Low, Any),
    map("UserRemovedFromGroup", T::RemovedFromGroup, Low, Any),
    map("PermissionLevelAdded", T::PermissionLevelChanged, High, Any),
    map("PermissionLevelModified", T::PermissionLevelChanged, High, Any),
    map("PermissionLevelRemoved", T::PermissionLevelChanged, High, Any),
    map(
        "PermissionLevelsInheritanceBroken",
        T::PermissionLevelChanged,
        High,
        Any,
    ),
    // Deprecated in SharePoint Online, kept so old records still map.
    map("SitePermissionsModified", T::PermissionLevelChanged, High, Any),
    map("SiteCollectionAdminAdded", T::SiteAdminAdded, High, Any),
    map("SiteCollectionAdminRemoved", T::SiteAdminRemoved, High, Any),
];

/// Documented operations of OneDrive records that filetrail skips on purpose, with why. A skip
/// is counted, never an error.
pub const NOT_RECORDED: &[(&str, &str)] = &[
    ("FolderModified", FOLDER_METADATA),
    ("FileCheckedIn", CHECK_OUT),
    ("FileCheckedOut", CHECK_OUT),
    ("FileCheckOutDiscarded", CHECK_OUT),
    ("FileVersionRecycled", VERSIONS),
    ("FileVersionsAllRecycled", VERSIONS),
    ("FileVersionsAllMinorsRecycled", VERSIONS),
    ("FileMalwareDetected", DETECTION),
    ("DocumentSensitivityMismatchDetected", LABELS),
    ("ComplianceSettingChanged", LABELS),
    ("LockRecord", LABELS),
    ("UnlockRecord", LABELS),
    ("SearchQueryPerformed", NOT_A_FILE),
    ("PageViewed", NOT_A_FILE),
    ("PageViewedExtended", NOT_A_FILE),
    ("ClientViewSignaled", NOT_A_FILE),
    ("PagePrefetched", NOT_A_FILE),
    ("AccessRequestCreated", REQUESTS),
    ("AccessRequestAccepted", REQUESTS),
    ("AccessRequestApproved", REQUESTS),
    ("AccessRequestDenied", REQUESTS),
    ("AccessRequestRejected", REQUESTS),
    ("AccessRequestUpdated", REQUESTS),
    (
        "AccessInvitationExpired",
        "the invitation lapsed unaccepted: nobody gained or lost access",
    ),
    ("GroupAdded", GROUPS),
    ("GroupRemoved", GROUPS),
    ("GroupUpdated", GROUPS),
    ("ManagedSyncClientAllowed", SYNC_CLIENT),
    ("UnmanagedSyncClientBlocked", SYNC_CLIENT),
    ("SyncGetChanges", SYNC_CLIENT),
];

const FOLDER_METADATA: &str = "folder tags and properties only: no file content, name or location changes";
const CHECK_OUT: &str = "check-out state only: the edits themselves are logged as FileModified or FileUploaded";
const VERSIONS: &str = "version-history housekeeping: the current file is unchanged";
const DETECTION: &str = "an antivirus verdict, not user activity";
const LABELS: &str = "labels and records management, not file activity";
const NOT_A_FILE: &str = "searches and page views, not files";
const REQUESTS: &str = "an access request grants nothing; a grant is logged as SharingSet or AddedToGroup";
const GROUPS: &str =
    "SharePoint group housekeeping (the first link share adds a system group); the share itself is logged";
const SYNC_CLIENT: &str = "a sync-client relationship, not a file";

/// The table row for an operation name: exact match first, then ignoring ASCII case.
pub fn lookup(operation: &str) -> Option<&'static OperationMapping> {
    OPERATIONS
        .iter()
        .find(|m| m.operation == operation)
        .or_else(|| OPERATIONS.iter().find(|m| m.operation.eq_ignore_ascii_case(operation)))
}

/// Why an operation is skipped, when it is one filetrail knows and does not record.
pub fn not_recorded(operation: &str) -> Option<&'static str> {
    NOT_RECORDED
        .iter()
        .find(|(op, _)| op.eq_ignore_ascii_case(operation))
        .map(|(_, why)| *why)
}

impl FileEventType {
    /// The snake_case name used in storage and on the CLI.
    /// Every event type, in declaration order.
    pub const ALL: [FileEventType; 40] = [
        Self::Created,
        Self::Modified,
        Self::Renamed,
        Self::Moved,
        Self::Copied,
        Self::Deleted,
        Self::Recycled,
        Self::Purged,
        Self::Restored,
        Self::Downloaded,
        Self::Accessed,
        Self::Previewed,
        Self::AnonymousLinkCreated,
        Self::AnonymousLinkUpdated,
        Self::AnonymousLinkUsed,
        Self::AnonymousLinkRemoved,
        Self::OrganizationLinkCreated,
        Self::OrganizationLinkUsed,
        Self::OrganizationLinkRemoved,
        Self::SpecificPeopleLinkCreated,
        Self::SpecificPeopleLinkUsed,
        Self::SpecificPeopleLinkRemoved,
        Self::AddedToSpecificPeopleLink,
        Self::RemovedFromSpecificPeopleLink,
        Self::SharingLinkCreated,
        Self::SharingLinkRemoved,
        Self::InvitationCreated,
        Self::InvitationUpdated,
        Self::InvitationAccepted,
        Self::InvitationRevoked,
        Self::InvitationBlocked,
        Self::SharingSet,
        Self::SharingRevoked,
        Self::SharingInheritanceBroken,
        Self::SharingInheritanceReset,
        Self::AddedToGroup,
        Self::RemovedFromGroup,
        Self::PermissionLevelChanged,
        Self::SiteAdminAdded,
        Self::SiteAdminRemoved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Modified => "modified",
            Self::Renamed => "renamed",
            Self::Moved => "moved",
            Self::Copied => "copied",
            Self::Deleted => "deleted",
            Self::Recycled => "recycled",
            Self::Purged => "purged",
            Self::Restored => "restored",
            Self::Downloaded => "downloaded",
            Self::Accessed => "accessed",
            Self::Previewed => "previewed",
            Self::AnonymousLinkCreated => "anonymous_link_created",
            Self::AnonymousLinkUpdated => "anonymous_link_updated",
            Self::AnonymousLinkUsed => "anonymous_link_used",
            Self::AnonymousLinkRemoved => "anonymous_link_removed",
            Self::OrganizationLinkCreated => "organization_link_created",
            Self::OrganizationLinkUsed => "organization_link_used",
            Self::OrganizationLinkRemoved => "organization_link_removed",
            Self::SpecificPeopleLinkCreated => "specific_people_link_created",
            Self::SpecificPeopleLinkUsed => "specific_people_link_used",
            Self::SpecificPeopleLinkRemoved => "specific_people_link_removed",
            Self::AddedToSpecificPeopleLink => "added_to_specific_people_link",
            Self::RemovedFromSpecificPeopleLink => "removed_from_specific_people_link",
            Self::SharingLinkCreated => "sharing_link_created",
            Self::SharingLinkRemoved => "sharing_link_removed",
            Self::InvitationCreated => "invitation_created",
            Self::InvitationUpdated => "invitation_updated",
            Self::InvitationAccepted => "invitation_accepted",
            Self::InvitationRevoked => "invitation_revoked",
            Self::InvitationBlocked => "invitation_blocked",
            Self::SharingSet => "sharing_set",
            Self::SharingRevoked => "sharing_revoked",
            Self::SharingInheritanceBroken => "sharing_inheritance_broken",
            Self::SharingInheritanceReset => "sharing_inheritance_reset",
            Self::AddedToGroup => "added_to_group",
            Self::RemovedFromGroup => "removed_from_group",
            Self::PermissionLevelChanged => "permission_level_changed",
            Self::SiteAdminAdded => "site_admin_added",
            Self::SiteAdminRemoved => "site_admin_removed",
        }
    }

    /// Sharing, link, invitation and permission events: they carry [`super::Sharing`] details.
    pub fn is_sharing(self) -> bool {
        !matches!(
            self,
            Self::Created
                | Self::Modified
                | Self::Renamed
                | Self::Moved
                | Self::Copied
                | Self::Deleted
                | Self::Recycled
                | Self::Purged
                | Self::Restored
                | Self::Downloaded
                | Self::Accessed
                | Self::Previewed
        )
    }

    /// The link scope the operation itself implies, if any (a `SharingSet` learns its scope
    /// from its target instead).
    pub fn link_scope(self) -> Option<LinkScope> {
        match self {
            Self::AnonymousLinkCreated
            | Self::AnonymousLinkUpdated
            | Self::AnonymousLinkUsed
            | Self::AnonymousLinkRemoved => Some(LinkScope::Anonymous),
            Self::OrganizationLinkCreated | Self::OrganizationLinkUsed | Self::OrganizationLinkRemoved => {
                Some(LinkScope::Organization)
            }
            Self::SpecificPeopleLinkCreated
            | Self::SpecificPeopleLinkUsed
            | Self::SpecificPeopleLinkRemoved
            | Self::AddedToSpecificPeopleLink
            | Self::RemovedFromSpecificPeopleLink => Some(LinkScope::SpecificPeople),
            _ => None,
        }
    }

    /// Events after which a file's content may differ from what was last hashed: the ingest
    /// use case enqueues a hash job for these (on files, not folders).
    pub fn may_change_content(self) -> bool {
        matches!(self, Self::Created | Self::Modified | Self::Copied | Self::Restored)
    }

    /// Events after which the drive's tree or content differs: its inventory needs an
    /// incremental index round.
    pub fn changes_inventory(self) -> bool {
        matches!(
            self,
            Self::Created
                | Self::Modified
                | Self::Renamed
                | Self::Moved
                | Self::Copied
                | Self::Deleted
                | Self::Recycled
                | Self::Purged
                | Self::Restored
        )
    }

    /// Reads: the content left Microsoft or was shown, nothing changed.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Self::Downloaded
                | Self::Accessed
                | Self::Previewed
                | Self::AnonymousLinkUsed
                | Self::OrganizationLinkUsed
                | Self::SpecificPeopleLinkUsed
        )
    }
}

impl std::fmt::Display for FileEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
