//! An item's sharing as Graph lists its permissions, and the sharing state filetrail keeps of
//! it: who each grant reaches and whether that is outside the organisation. The use cases that
//! refresh it and report exposure are in [`crate::exposure`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::TrustedDomains;

/// What a link lets in (`link.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reach {
    /// Anyone with the link, no sign-in.
    Anonymous,
    /// Signed-in people of the tenant.
    Organization,
    /// The people named (a specific-people link or a direct grant).
    SpecificPeople,
}

impl Reach {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Organization => "organization",
            Self::SpecificPeople => "specific_people",
        }
    }
}

/// One person or group a permission names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grantee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Lowercase address, when Graph gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Outside the trusted domains; `None` when there is no address to tell by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

impl Grantee {
    pub fn label(&self) -> String {
        self.email
            .clone()
            .or_else(|| self.name.clone())
            .unwrap_or_else(|| "?".to_owned())
    }
}

/// One non-owner permission of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Graph's permission id (what `sharing revoke --permission` takes).
    pub id: String,
    pub reach: Reach,
    /// `read`, `write`…
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Whether the grant is a sharing link (else a direct grant or invitation).
    pub link: bool,
    /// The link's URL, when Graph returns it to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grantees: Vec<Grantee>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Inherited from a parent folder (only the parent's own grant can be removed).
    #[serde(default)]
    pub inherited: bool,
    /// When filetrail first saw this permission (or the sharing event that created it).
    pub since: DateTime<Utc>,
}

impl Grant {
    /// Whether this grant reaches outside the organisation.
    pub fn is_external(&self) -> bool {
        self.reach == Reach::Anonymous || self.grantees.iter().any(|g| g.external == Some(true))
    }
}

/// An item's sharing as last read from Graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingState {
    pub connection: String,
    pub drive_id: String,
    pub item_id: String,
    /// The non-owner permissions; empty when the item is shared with no one.
    pub grants: Vec<Grant>,
    pub refreshed_at: DateTime<Utc>,
}

impl SharingState {
    /// Whether the item is reachable from outside: an anonymous link or an external grantee.
    pub fn is_exposed(&self) -> bool {
        self.grants.iter().any(Grant::is_external)
    }

    /// The grants that make it exposed.
    pub fn external_grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.iter().filter(|g| g.is_external())
    }
}

/// A permission as the Graph adapter reads it, before filetrail's rules apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedPermission {
    pub id: String,
    pub roles: Vec<String>,
    /// `link.scope` when the permission is a link: `anonymous`, `organization`, `users`, or
    /// another value Graph may add.
    pub link_scope: Option<String>,
    pub link_url: Option<String>,
    /// `(display name, email)` of each identity granted, invited or named on the link.
    pub grantees: Vec<(Option<String>, Option<String>)>,
    pub expires_at: Option<DateTime<Utc>>,
    pub inherited: bool,
}

impl ListedPermission {
    /// The owner's own permission, which is not sharing.
    pub fn is_owner(&self) -> bool {
        self.link_scope.is_none() && self.roles.iter().any(|r| r.eq_ignore_ascii_case("owner"))
    }
}

/// Builds an item's sharing state from its listed permissions: owner permissions dropped,
/// grantees judged against the trusted domains, `since` carried over from `previous` for
/// permissions already known, else `seen_at`.
pub fn sharing_state(
    (connection, drive_id, item_id): (&str, &str, &str),
    listed: &[ListedPermission],
    trusted: &TrustedDomains,
    previous: Option<&SharingState>,
    seen_at: DateTime<Utc>,
) -> SharingState {
    let grants = listed
        .iter()
        .filter(|p| !p.is_owner())
        .map(|p| {
            let reach = match p.link_scope.as_deref().map(str::to_ascii_lowercase).as_deref() {
                Some("anonymous") => Reach::Anonymous,
                Some("organization") => Reach::Organization,
                // `users`, `existingAccess`, a direct grant or invitation, or a scope not yet
                // known: the grantees listed decide.
                _ => Reach::SpecificPeople,
            };
            let grantees = (p.grantees.iter())
                .map(|(name, email)| {
                    let email = email
                        .as_deref()
                        .map(|e| e.trim().to_lowercase())
                        .filter(|e| !e.is_empty());
                    Grantee {
                        name: name.clone(),
                        external: email
                            .as_deref()
                            .and_then(|e| trusted.is_internal(e))
                            .map(|inside| !inside),
                        email,
                    }
                })
                .collect();
            let since = previous
                .and_then(|prev| prev.grants.iter().find(|g| g.id == p.id))
                .map_or(seen_at, |g| g.since);
            Grant {
                id: p.id.clone(),
                reach,
                roles: p.roles.clone(),
                link: p.link_scope.is_some(),
                url: p.link_url.clone(),
                grantees,
                expires_at: p.expires_at,
                inherited: p.inherited,
                since,
            }
        })
        .collect();
    SharingState {
        connection: connection.to_owned(),
        drive_id: drive_id.to_owned(),
        item_id: item_id.to_owned(),
        grants,
        refreshed_at: Utc::now(),
    }
}
