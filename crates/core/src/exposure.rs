//! Who can reach a file: its sharing state as filetrail keeps it (the item's non-owner
//! permissions as Graph lists them), and the rule that makes a file *exposed*: an anonymous
//! ("anyone") link, or a grant to someone outside the connection's trusted domains.
//!
//! # Where the state comes from
//! Listing an item's permissions costs 5 resource units
//! (<https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>),
//! so filetrail never lists them for every item. It refreshes one item's state when something says
//! its sharing changed: a sharing event of the audit feed (links, invitations, direct shares,
//! unsharing), a delta item carrying the `shared` facet on the first walk, or the
//! `@microsoft.graph.sharedChanged` annotation (returned when the app holds
//! `Sites.FullControl.All`; harmless otherwise).

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

/// What refreshing sharing needs: the connection's Graph permissions reader, the store beside
/// the inventory, and the connection's trusted domains.
pub struct SharingPorts<'a> {
    pub reader: &'a dyn crate::ports::PermissionReader,
    pub store: &'a dyn crate::ports::SharingStore,
    pub trusted: TrustedDomains,
}

/// How a refresh went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefreshCounts {
    /// Items whose permissions were listed.
    pub listed: u64,
    /// Items shared outside the organisation after the refresh.
    pub exposed: u64,
    /// Items gone from the drive (their state removed).
    pub gone: u64,
}

/// Refreshes the sharing state of `items` (drive, item) of one connection: one permissions
/// listing per item (batched by the reader), the state stored (or removed when the item is
/// shared with no one or gone). Idempotent: a retry lists and stores the same state, and a
/// known permission keeps its `since`. `seen_at` is the `since` of permissions seen for the
/// first time (the time of the sharing event that triggered the refresh, or now).
///
/// # Errors
/// The reader's or the store's errors; nothing is half-stored per item.
pub async fn refresh_sharing(
    reader: &dyn crate::ports::PermissionReader,
    store: &dyn crate::ports::SharingStore,
    connection: &str,
    trusted: &TrustedDomains,
    items: &[(String, String)],
    seen_at: DateTime<Utc>,
) -> crate::ports::PortResult<RefreshCounts> {
    let mut unique: Vec<(String, String)> = items.to_vec();
    unique.sort();
    unique.dedup();
    let mut counts = RefreshCounts::default();
    if unique.is_empty() {
        return Ok(counts);
    }
    let previous = store.sharing(&unique).await?;
    let listed = reader.permissions(&unique).await?;
    for ((drive, item), permissions) in listed {
        counts.listed += 1;
        let before = previous.iter().find(|p| p.drive_id == drive && p.item_id == item);
        let state = match permissions {
            Some(perms) => sharing_state((connection, &drive, &item), &perms, trusted, before, seen_at),
            None => {
                counts.gone += 1;
                SharingState {
                    connection: connection.to_owned(),
                    drive_id: drive.clone(),
                    item_id: item.clone(),
                    grants: Vec::new(),
                    refreshed_at: Utc::now(),
                }
            }
        };
        if state.is_exposed() {
            counts.exposed += 1;
        }
        store.put_sharing(&state).await?;
    }
    Ok(counts)
}

/// Which grants `filetrail sharing revoke` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeSelection {
    Permission(String),
    AllExternal,
    AllAnonymous,
}

/// The grants a selection names, and why none can be removed when that is so.
///
/// # Errors
/// A sentence naming the permission or the selection and what the item has.
pub fn select_grants<'a>(state: &'a SharingState, selection: &RevokeSelection) -> Result<Vec<&'a Grant>, String> {
    let chosen: Vec<&Grant> = match selection {
        RevokeSelection::Permission(id) => state.grants.iter().filter(|g| g.id == *id).collect(),
        RevokeSelection::AllExternal => state.external_grants().collect(),
        RevokeSelection::AllAnonymous => state.grants.iter().filter(|g| g.reach == Reach::Anonymous).collect(),
    };
    if chosen.is_empty() {
        let ids: Vec<&str> = state.grants.iter().map(|g| g.id.as_str()).collect();
        return Err(match selection {
            RevokeSelection::Permission(id) => format!(
                "the item has no permission {id:?}; its permissions are: {}",
                if ids.is_empty() {
                    "none".to_owned()
                } else {
                    ids.join(", ")
                }
            ),
            RevokeSelection::AllExternal => "the item is not shared outside the organisation".to_owned(),
            RevokeSelection::AllAnonymous => "the item has no anonymous link".to_owned(),
        });
    }
    if let Some(g) = chosen.iter().find(|g| g.inherited) {
        return Err(format!(
            "permission {:?} is inherited from a parent folder: revoke it on the folder that grants it",
            g.id
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn listed(id: &str, scope: Option<&str>, roles: &[&str], who: &[&str]) -> ListedPermission {
        ListedPermission {
            id: id.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            link_scope: scope.map(str::to_owned),
            link_url: scope.map(|_| format!("https://contoso-my.sharepoint.com/:x:/g/{id}")),
            grantees: who.iter().map(|w| (None, Some((*w).to_owned()))).collect(),
            expires_at: None,
            inherited: false,
        }
    }

    fn trusted() -> TrustedDomains {
        TrustedDomains::new(["contoso.com"])
    }

    #[test]
    fn anonymous_links_and_outside_people_expose_a_file_organisation_links_do_not() {
        let perms = [
            listed("owner", None, &["owner"], &["alex@contoso.com"]),
            listed("org", Some("organization"), &["read"], &[]),
            listed("colleague", None, &["write"], &["megan@contoso.com"]),
        ];
        let s = sharing_state(("c", "d", "i"), &perms, &trusted(), None, t("2026-11-30T10:00:00Z"));
        assert_eq!(s.grants.len(), 2, "the owner's permission is not sharing");
        assert!(!s.is_exposed());

        let mut perms = perms.to_vec();
        perms.push(listed("guest", None, &["read"], &["Bob@Fabrikam.com"]));
        let s = sharing_state(("c", "d", "i"), &perms, &trusted(), None, t("2026-11-30T10:00:00Z"));
        assert!(s.is_exposed());
        assert_eq!(
            s.external_grants().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            ["guest"]
        );

        let s = sharing_state(
            ("c", "d", "i"),
            &[listed("anyone", Some("anonymous"), &["read"], &[])],
            &trusted(),
            None,
            t("2026-11-30T10:00:00Z"),
        );
        assert!(s.is_exposed());
        assert_eq!(s.grants[0].reach, Reach::Anonymous);
    }

    #[test]
    fn a_known_permission_keeps_the_time_it_was_first_seen() {
        let perms = [listed("anyone", Some("anonymous"), &["read"], &[])];
        let first = sharing_state(("c", "d", "i"), &perms, &trusted(), None, t("2026-11-01T00:00:00Z"));
        let later = sharing_state(
            ("c", "d", "i"),
            &perms,
            &trusted(),
            Some(&first),
            t("2026-11-30T00:00:00Z"),
        );
        assert_eq!(later.grants[0].since, t("2026-11-01T00:00:00Z"));
    }

    #[test]
    fn revoke_selections_name_what_is_missing_and_refuse_inherited_grants() {
        let mut perms = vec![
            listed("anyone", Some("anonymous"), &["read"], &[]),
            listed("guest", None, &["read"], &["bob@fabrikam.com"]),
            listed("org", Some("organization"), &["read"], &[]),
        ];
        let s = sharing_state(("c", "d", "i"), &perms, &trusted(), None, t("2026-11-30T10:00:00Z"));
        let ids = |sel| select_grants(&s, &sel).map(|g| g.iter().map(|g| g.id.clone()).collect::<Vec<_>>());
        assert_eq!(ids(RevokeSelection::AllExternal).unwrap(), ["anyone", "guest"]);
        assert_eq!(ids(RevokeSelection::AllAnonymous).unwrap(), ["anyone"]);
        assert_eq!(ids(RevokeSelection::Permission("org".into())).unwrap(), ["org"]);
        let e = ids(RevokeSelection::Permission("nope".into())).unwrap_err();
        assert!(e.contains("\"nope\"") && e.contains("anyone, guest, org"), "{e}");
        perms[0].inherited = true;
        let s = sharing_state(("c", "d", "i"), &perms, &trusted(), None, t("2026-11-30T10:00:00Z"));
        let e = select_grants(&s, &RevokeSelection::AllAnonymous).unwrap_err();
        assert!(e.contains("inherited"), "{e}");
    }
}
