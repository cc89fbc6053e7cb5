//! What a connection monitors: every user, a list of users, or the transitive members of a list
//! of groups. Admins set it by uploading a CSV (see [`csv`]); discovery resolves it against the
//! directory on every run, so membership changes are picked up without a new upload.

pub mod csv;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The most entries a scope list may hold.
pub const MAX_SCOPE_ENTRIES: usize = 1_000;

/// Which kind of scope a connection has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScopeKind {
    /// Every user of the tenant.
    All,
    /// The users named in a CSV.
    Users,
    /// The transitive user members of the groups named in a CSV.
    Groups,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Users => "users",
            Self::Groups => "groups",
        }
    }
}

impl std::fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a scope list names a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum UserSelector {
    /// A sign-in name or email address: matches `userPrincipalName` or `mail`, ignoring case.
    Email(String),
    /// A display name, for rows without an email: matches `displayName` exactly (every user
    /// carrying that name is in scope).
    DisplayName(String),
}

/// How a scope list names a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum GroupSelector {
    /// The group's exact display name (every group carrying it is in scope).
    DisplayName(String),
    /// The group's mail address.
    Mail(String),
}

/// One line of a scope list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ScopeEntry {
    User(UserSelector),
    Group(GroupSelector),
}

impl ScopeEntry {
    /// The entry as an admin wrote it.
    pub fn value(&self) -> &str {
        match self {
            Self::User(UserSelector::Email(v) | UserSelector::DisplayName(v))
            | Self::Group(GroupSelector::DisplayName(v) | GroupSelector::Mail(v)) => v,
        }
    }
}

impl std::fmt::Display for ScopeEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(UserSelector::Email(v)) => write!(f, "user {v}"),
            Self::User(UserSelector::DisplayName(v)) => write!(f, "user named {v:?}"),
            Self::Group(GroupSelector::DisplayName(v)) => write!(f, "group {v:?}"),
            Self::Group(GroupSelector::Mail(v)) => write!(f, "group {v}"),
        }
    }
}

/// A group as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryGroup {
    pub id: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
}

/// Where a scope came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSource {
    /// The S3 key of the upload (`scoping/<connection>/users.csv`).
    pub key: String,
    pub etag: String,
    /// The upload's id, which also names its result object.
    pub upload_id: String,
}

/// A connection's scope in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub kind: ScopeKind,
    #[serde(default)]
    pub entries: Vec<ScopeEntry>,
    /// Changes with every applied upload; a discovery run started under another version
    /// restarts.
    pub version: String,
    pub applied_at: DateTime<Utc>,
    /// When the upload that set it happened (S3 event time): an older upload processed late
    /// never replaces a newer scope.
    pub uploaded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ScopeSource>,
}

impl Scope {
    /// The scope of a connection nobody has scoped yet: every user.
    pub fn all_users() -> Self {
        Self {
            kind: ScopeKind::All,
            entries: Vec::new(),
            version: "all".to_owned(),
            applied_at: DateTime::<Utc>::UNIX_EPOCH,
            uploaded_at: DateTime::<Utc>::UNIX_EPOCH,
            source: None,
        }
    }
}

/// An entry discovery could not resolve on its last run (a group or user that does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnresolvedEntry {
    pub entry: ScopeEntry,
    pub reason: String,
}

/// One rejected row of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// 1-based line of the file where the row starts.
    pub line: u64,
    /// The cell as written (plain text, never interpreted).
    pub value: String,
    pub reason: String,
}

/// The machine-readable result of one upload, written next to it in S3 and summarised in the
/// connection's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeUploadResult {
    pub upload_id: String,
    pub connection: String,
    pub key: String,
    pub etag: String,
    /// `users`, `groups` or `all` (absent when the key names no kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ScopeKind>,
    pub uploaded_at: DateTime<Utc>,
    pub processed_at: DateTime<Utc>,
    /// Whether the upload replaced the scope.
    pub accepted: bool,
    /// Distinct entries accepted (0 when the file was rejected).
    pub entries: u64,
    /// Rows naming an entry already listed above them.
    pub duplicates: u64,
    #[serde(default)]
    pub rejected_rows: Vec<RejectedRow>,
    /// Why the whole file was rejected, with what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where this result object is.
    pub result_key: String,
}
