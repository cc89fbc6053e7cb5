//! Who can reach a file: a driveItem's permissions (sharing links, direct grants, invitations),
//! one item at a time or many through `$batch`, and the removal of one permission
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions>,
//! <https://learn.microsoft.com/en-us/graph/api/permission-delete>).
//!
//! Every permission request costs **5 resource units** upstream, five times a delta page
//! (<https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>);
//! an exposure report should start from delta's `shared` facet and sharing-change
//! annotations ([`filetrail_core::model::DeltaItem::shared_scope`], `sharing_changed`) and list
//! permissions only for the items those point at.
//!
//! Parsing is lenient: unknown fields are ignored, a field of an unexpected type is treated as
//! absent, the deprecated `grantedTo` / `grantedToIdentities` are read when the V2 forms are
//! missing, identities may be users, groups, site users or site groups (with or without an
//! email), and a permission without an id is skipped rather than failing the whole list.

use chrono::{DateTime, Utc};
use percent_encoding::utf8_percent_encode;
use serde_json::Value;

use crate::error::{M365Error, ServiceErrorKind};
use crate::graph::{BatchGet, GraphClient, PATH_SEGMENT, authorized, operation};

/// The application permission that lists permissions (with `Sites.Read.All`,
/// <https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions#permissions>).
pub const PERMISSIONS_READ: &str = "Files.Read.All";
/// The application permission that deletes permissions (`Sites.ReadWrite.All` also does,
/// permission-delete.md).
pub const PERMISSIONS_WRITE: &str = "Files.ReadWrite.All";
/// The code of a deletion that found no such permission (or no such item) any more.
pub const PERMISSION_NOT_FOUND: &str = "permissionNotFound";
/// The code of a deletion refused because the permission is inherited from a parent folder.
pub const PERMISSION_INHERITED: &str = "permissionInherited";
/// `expirationDateTime` of a permission that never expires, as Graph writes it
/// (<https://learn.microsoft.com/en-us/graph/api/resources/permission#properties>).
const NEVER_EXPIRES: &str = "0001-01-01T00:00:00Z";

/// What a sharing link lets through (`link.type`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKind {
    View,
    Edit,
    /// OneDrive personal only.
    Embed,
    /// Anything else Graph sends (the raw value; empty when absent).
    Other(String),
}

/// Who a sharing link lets in (`link.scope`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkScope {
    /// Anyone with the link, without signing in.
    Anonymous,
    /// Signed-in people of the tenant.
    Organization,
    /// Specific people.
    Users,
    /// Anything else (`existingAccess`, …; empty when absent, as on OneDrive personal).
    Other(String),
}

impl LinkScope {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Anonymous => "anonymous",
            Self::Organization => "organization",
            Self::Users => "users",
            Self::Other(s) => s,
        }
    }
}

/// A sharing link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharingLink {
    pub kind: LinkKind,
    pub scope: LinkScope,
    /// The link (returned only to callers that could have created it,
    /// <https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions>).
    pub web_url: Option<String>,
    pub prevents_download: bool,
}

/// What kind of identity a grantee is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GranteeKind {
    User,
    Group,
    SiteUser,
    SiteGroup,
    Application,
    Device,
    Other(String),
}

/// Someone (or some group) a permission is granted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grantee {
    pub kind: GranteeKind,
    pub id: Option<String>,
    pub display_name: Option<String>,
    /// The address, when Graph gives one (a `siteUser`'s is used when the `user` has none).
    pub email: Option<String>,
    /// SharePoint's claims login (`i:0#.f|membership|…`), when a `siteUser` or `siteGroup` has one.
    pub login_name: Option<String>,
}

/// One permission of a driveItem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPermission {
    pub id: String,
    /// `read`, `write`, `owner` (or what else Graph sends).
    pub roles: Vec<String>,
    pub link: Option<SharingLink>,
    /// The direct grantee (`grantedToV2`) or a specific-people link's people
    /// (`grantedToIdentitiesV2`); the deprecated forms when the V2 ones are absent.
    pub grantees: Vec<Grantee>,
    /// The address invited, for an invitation.
    pub invitation_email: Option<String>,
    /// `None` when it never expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// Inherited from a parent (`inheritedFrom`): it can only be removed where it is defined.
    pub inherited: bool,
}

impl ItemPermission {
    /// The owner's permission (never removed by Graph: a deletion answers 204 and changes
    /// nothing).
    pub fn is_owner(&self) -> bool {
        self.roles.iter().any(|r| r.eq_ignore_ascii_case("owner"))
    }

    /// Parses one permission object; `None` when it has no id.
    pub fn from_value(v: &Value) -> Option<Self> {
        let id = str_of(v, "id")?;
        let roles = v
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let link = v.get("link").filter(|l| l.is_object()).map(|l| SharingLink {
            kind: match str_of(l, "type").map(|t| t.to_ascii_lowercase()) {
                Some(t) if t == "view" => LinkKind::View,
                Some(t) if t == "edit" => LinkKind::Edit,
                Some(t) if t == "embed" => LinkKind::Embed,
                other => LinkKind::Other(other.unwrap_or_default()),
            },
            scope: match str_of(l, "scope").map(|s| s.to_ascii_lowercase()) {
                Some(s) if s == "anonymous" => LinkScope::Anonymous,
                Some(s) if s == "organization" => LinkScope::Organization,
                Some(s) if s == "users" => LinkScope::Users,
                other => LinkScope::Other(other.unwrap_or_default()),
            },
            web_url: str_of(l, "webUrl"),
            prevents_download: l.get("preventsDownload").and_then(Value::as_bool).unwrap_or(false),
        });
        let mut grantees: Vec<Grantee> = Vec::new();
        let single = |key: &str| v.get(key).filter(|g| g.is_object()).and_then(grantee);
        let many = |key: &str| -> Option<Vec<Grantee>> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(grantee).collect())
        };
        if let Some(g) = single("grantedToV2").or_else(|| single("grantedTo")) {
            grantees.push(g);
        }
        let people = many("grantedToIdentitiesV2")
            .filter(|p| !p.is_empty())
            .or_else(|| many("grantedToIdentities"))
            .unwrap_or_default();
        for g in people {
            if !grantees.contains(&g) {
                grantees.push(g);
            }
        }
        let invitation_email = v.get("invitation").and_then(|i| str_of(i, "email"));
        let expires_at = str_of(v, "expirationDateTime")
            .filter(|t| t != NEVER_EXPIRES)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .filter(|t| t.timestamp() > 0);
        let inherited = v
            .get("inheritedFrom")
            .is_some_and(|i| i.as_object().is_some_and(|o| !o.is_empty()));
        Some(Self {
            id,
            roles,
            link,
            grantees,
            invitation_email,
            expires_at,
            inherited,
        })
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// One grantee from an identity set (`sharePointIdentitySet`): the most specific identity it
/// holds (user, group, site group, site user, application, device), its email completed from
/// the `siteUser` when the user has none.
fn grantee(set: &Value) -> Option<Grantee> {
    /// Identity facets, most specific first.
    const KINDS: [&str; 6] = ["user", "group", "siteGroup", "siteUser", "application", "device"];
    fn kind_of(key: &str) -> GranteeKind {
        match key {
            "user" => GranteeKind::User,
            "group" => GranteeKind::Group,
            "siteGroup" => GranteeKind::SiteGroup,
            "siteUser" => GranteeKind::SiteUser,
            "application" => GranteeKind::Application,
            "device" => GranteeKind::Device,
            other => GranteeKind::Other(other.to_owned()),
        }
    }
    let site_user = set.get("siteUser").filter(|s| s.is_object());
    let (key, kind) = KINDS
        .iter()
        .find(|k| set.get(**k).is_some_and(Value::is_object))
        .map(|k| (*k, kind_of(k)))
        .or_else(|| {
            // An identity kind this parser does not know, e.g. a future facet.
            set.as_object()?
                .iter()
                .find(|(_, v)| v.is_object())
                .map(|(k, _)| (k.as_str(), GranteeKind::Other(k.clone())))
        })?;
    let identity = &set[key];
    let email = str_of(identity, "email").or_else(|| site_user.and_then(|s| str_of(s, "email")));
    let login_name = str_of(identity, "loginName").or_else(|| site_user.and_then(|s| str_of(s, "loginName")));
    Some(Grantee {
        kind,
        id: str_of(identity, "id"),
        display_name: str_of(identity, "displayName"),
        email,
        login_name,
    })
}

/// A page of permissions: the parsed entries and the next link, if any.
fn parse_page(body: &Value) -> (Vec<ItemPermission>, Option<String>) {
    let permissions = body
        .get("value")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ItemPermission::from_value).collect())
        .unwrap_or_default();
    (permissions, str_of(body, "@odata.nextLink"))
}

fn permissions_path(drive: &str, item: &str) -> String {
    format!(
        "/drives/{}/items/{}/permissions",
        utf8_percent_encode(drive, PATH_SEGMENT),
        utf8_percent_encode(item, PATH_SEGMENT)
    )
}

fn is_gone(e: &M365Error) -> bool {
    e.service()
        .is_some_and(|s| s.status == 404 || s.kind == ServiceErrorKind::NotFound)
}

impl GraphClient {
    /// One item's permissions, the owner's included; `Ok(None)` when the item (or its drive) no
    /// longer exists (404). Throttling and transient failures are retried like every request;
    /// a 403 names the missing [`PERMISSIONS_READ`]. Costs 5 RU per page
    /// (<https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online#resource-units>).
    pub async fn item_permissions(&self, drive: &str, item: &str) -> Result<Option<Vec<ItemPermission>>, M365Error> {
        let url = self.resolve(&permissions_path(drive, item))?;
        let first = match self.get_with(&url, &[]).await {
            Ok(reply) => self.decode::<Value>(&reply, &operation("GET", &url))?,
            Err(e) if is_gone(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        self.rest_of_permissions(first).await.map(Some)
    }

    /// Many items' permissions, one answer per `(drive, item)` in the given order (`None` where
    /// the item no longer exists), through `$batch` envelopes of 20 requests. Throttled (inner
    /// 429/503) and failed entries are sent again — only those, after the longest inner
    /// `Retry-After` — within the retry budget, like the other batched lookups; any other error
    /// fails the whole call. Each entry costs 5 RU upstream.
    pub async fn items_permissions(
        &self,
        items: &[(String, String)],
    ) -> Result<Vec<((String, String), Option<Vec<ItemPermission>>)>, M365Error> {
        let gets: Vec<BatchGet> = items
            .iter()
            .map(|(drive, item)| BatchGet {
                url: permissions_path(drive, item),
                label: format!("GET /drives/{drive}/items/{item}/permissions"),
            })
            .collect();
        let pages = self
            .batch_gets(
                &gets,
                PERMISSIONS_READ,
                &|body: Value, _op: &str| Ok(Some(body)),
                &|e: &crate::error::ServiceError| {
                    (e.status == 404 || e.kind == ServiceErrorKind::NotFound).then_some(None)
                },
            )
            .await?;
        let mut out = Vec::with_capacity(items.len());
        for (key, page) in items.iter().cloned().zip(pages) {
            let permissions = match page {
                Some(body) => Some(self.rest_of_permissions(body).await?),
                None => None,
            };
            out.push((key, permissions));
        }
        Ok(out)
    }

    /// The permissions of a first page and of every page after it (next links followed).
    async fn rest_of_permissions(&self, first: Value) -> Result<Vec<ItemPermission>, M365Error> {
        let (mut all, mut next) = parse_page(&first);
        while let Some(link) = next {
            let url = self.resolve(&link)?;
            let reply = self.get_with(&url, &[]).await?;
            let body: Value = self.decode(&reply, &operation("GET", &url))?;
            let (more, after) = parse_page(&body);
            all.extend(more);
            next = after;
        }
        Ok(all)
    }

    /// Removes one permission from an item: `Ok(())` on 204. Graph answers 204 to a deletion of
    /// the **owner's** permission and removes nothing (check [`ItemPermission::is_owner`] first).
    /// Throttling and transient failures are retried; a deletion retried after a lost answer may
    /// come back 404.
    ///
    /// Errors, each with its fix: 403 — the app lacks [`PERMISSIONS_WRITE`] (or
    /// `Sites.ReadWrite.All`), a write permission filetrail needs only to revoke sharing; 404 —
    /// code [`PERMISSION_NOT_FOUND`], the permission or the item is gone; a refusal because the
    /// permission is inherited — code [`PERMISSION_INHERITED`] (only permissions defined on the
    /// item itself can be removed, <https://learn.microsoft.com/en-us/graph/api/permission-delete>).
    pub async fn delete_permission(&self, drive: &str, item: &str, permission_id: &str) -> Result<(), M365Error> {
        let url = self.resolve(&format!(
            "{}/{}",
            permissions_path(drive, item),
            utf8_percent_encode(permission_id, PATH_SEGMENT)
        ))?;
        let op = operation("DELETE", &url);
        let result = self
            .pipeline()
            .execute(
                &op,
                &**self.tokens(),
                |http, token| authorized(http.delete(&url), token),
                |reply| self.verdict(reply, &op, PERMISSIONS_WRITE),
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(explain_delete_error(e, self.connection(), drive, item, permission_id)),
        }
    }
}

/// Gives a failed deletion its filetrail code and fix.
fn explain_delete_error(error: M365Error, connection: &str, drive: &str, item: &str, permission_id: &str) -> M365Error {
    let M365Error::Service(mut e) = error else {
        return error;
    };
    let text = format!("{} {}", e.codes.join(" "), e.message).to_ascii_lowercase();
    if text.contains("inherit") {
        e.code = PERMISSION_INHERITED.to_owned();
        e.fix = Some(format!(
            "permission {permission_id} of item {item} is inherited from a parent folder: remove it on the folder \
             that defines it (list that folder's permissions), or stop sharing the folder"
        ));
    } else if e.status == 404 || e.kind == ServiceErrorKind::NotFound {
        e.code = PERMISSION_NOT_FOUND.to_owned();
        e.fix = Some(format!(
            "permission {permission_id} no longer exists on item {item} of drive {drive} (or the item is gone): \
             nothing left to revoke; list the item's permissions again to see what remains"
        ));
    } else if e.status == 403 || e.kind == ServiceErrorKind::AccessDenied {
        e.fix = Some(format!(
            "revoking sharing needs the application permission {PERMISSIONS_WRITE} (or Sites.ReadWrite.All), \
             which a read-only connection does not hold: a Global Administrator adds it to the app of connection \
             `{connection}` in Entra ID > App registrations > API permissions > Add a permission > Microsoft Graph \
             > Application permissions > {PERMISSIONS_WRITE}, then Grant admin consent; new tokens carry it"
        ));
    }
    M365Error::Service(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documented_samples_parse() {
        // The example of https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions:
        // OneDrive personal links without scope, inheritedFrom.
        let list = json!({"value": [
            {"id": "1", "roles": ["write"], "link": {"webUrl": "https://onedrive.live.com/redir?resid=5D33", "type": "edit"}},
            {"id": "2", "roles": ["write"], "grantedTo": {"user": {"id": "5D33DD65C6932946", "displayName": "John Doe"}},
             "inheritedFrom": {"driveId": "1234567890ABD", "id": "1234567890ABC!123", "path": "/drive/root:/Documents"}},
            {"id": "3", "roles": ["write"], "link": {"webUrl": "https://x", "type": "edit",
             "application": {"id": "12345", "displayName": "Contoso Time Manager"}}}
        ]});
        let (perms, next) = parse_page(&list);
        assert!(next.is_none());
        assert_eq!(perms.len(), 3);
        assert_eq!(perms[0].link.as_ref().unwrap().kind, LinkKind::Edit);
        assert_eq!(perms[0].link.as_ref().unwrap().scope, LinkScope::Other(String::new()));
        assert!(perms[1].inherited);
        assert_eq!(perms[1].grantees[0].display_name.as_deref(), Some("John Doe"));
        assert_eq!(perms[1].grantees[0].email, None);
        assert!(!perms[0].inherited);
    }

    #[test]
    fn specific_people_link_reads_v2_identities_and_site_user_emails() {
        let p = ItemPermission::from_value(&json!({
            "id": "3",
            "@deprecated.GrantedToIdentities": "deprecated",
            "grantedToIdentities": [{"user": {"id": "35f", "displayName": "Misty Suarez"}}],
            "grantedToIdentitiesV2": [
                {"user": {"id": "35f", "displayName": "Misty Suarez"},
                 "siteUser": {"id": "1", "displayName": "Misty Suarez", "loginName": "Misty Suarez", "email": "misty@contoso.com"}},
                {"siteUser": {"id": "2", "displayName": "dana@fabrikam.com", "email": "dana@fabrikam.com",
                 "loginName": "i:0#.f|membership|urn:spo:guest#dana@fabrikam.com"}}
            ],
            "roles": ["write"],
            "link": {"webUrl": "https://contoso.sharepoint.com/:w:/t/design/a577", "scope": "users", "type": "view"},
            "shareId": "!LKj1lkdlals90j1nlkascl",
            "expirationDateTime": "0001-01-01T00:00:00Z",
            "someFutureField": {"nested": [1, 2]}
        }))
        .unwrap();
        assert_eq!(p.grantees.len(), 2);
        assert_eq!(p.grantees[0].kind, GranteeKind::User);
        assert_eq!(p.grantees[0].email.as_deref(), Some("misty@contoso.com"));
        assert_eq!(p.grantees[1].kind, GranteeKind::SiteUser);
        assert!(p.grantees[1].id.is_some());
        assert_eq!(p.link.as_ref().unwrap().scope, LinkScope::Users);
        assert_eq!(p.expires_at, None, "0001-01-01 means never");
    }

    #[test]
    fn invitation_site_group_and_odd_types_are_tolerated() {
        let p = ItemPermission::from_value(&json!({
            "id": "1",
            "roles": ["write"],
            "grantedToV2": {"siteGroup": {"id": "3", "displayName": "Owners", "loginName": "Owners"}},
            "invitation": {"email": "jd@outlook.com", "signInRequired": true},
            "expirationDateTime": "2027-05-01T00:00:00Z",
            "link": "not an object",
            "inheritedFrom": null
        }))
        .unwrap();
        assert_eq!(p.grantees[0].kind, GranteeKind::SiteGroup);
        assert_eq!(p.invitation_email.as_deref(), Some("jd@outlook.com"));
        assert!(p.expires_at.is_some());
        assert!(p.link.is_none());
        assert!(!p.inherited);
        assert!(
            ItemPermission::from_value(&json!({"roles": ["read"]})).is_none(),
            "no id, skipped"
        );
        let odd =
            ItemPermission::from_value(&json!({"id": "x", "roles": "read", "grantedToV2": {"robot": {"id": "r1"}}}))
                .unwrap();
        assert!(odd.roles.is_empty());
        assert_eq!(odd.grantees[0].kind, GranteeKind::Other("robot".into()));
    }
}
