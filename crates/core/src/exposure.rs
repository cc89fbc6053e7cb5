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

use crate::audit::TrustedDomains;
pub use crate::permissions::{Grant, Grantee, ListedPermission, Reach, SharingState, sharing_state};

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
