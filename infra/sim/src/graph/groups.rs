//! `GET /groups` (paged; `$filter` on `displayName`, `mail` or `id`), `GET /groups/{id}`, and the
//! member listings `…/members` and `…/transitiveMembers` with their OData casts.
//!
//! Quirks reproduced (<https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers>,
//! <https://learn.microsoft.com/en-us/graph/aad-advanced-queries>, <https://learn.microsoft.com/en-us/graph/paging>):
//! - without a cast, members carry `"@odata.type"` (`#microsoft.graph.user` or `…group`); with
//!   the cast `…/microsoft.graph.user` they do not, and the collection is `users`;
//! - a cast is an *advanced query*: it needs `ConsistencyLevel: eventual` **and** `$count=true`,
//!   on every page (the header is not carried over by nextLinks), else 400
//!   `Request_UnsupportedQuery`;
//! - `@odata.count` is only on the first page, and only with `ConsistencyLevel: eventual`
//!   (`$count=true` without it is silently ignored);
//! - casting a Microsoft 365 group's members to `microsoft.graph.group` is 400
//!   `Request_UnsupportedQuery` ("Microsoft 365 groups can't have other groups as members");
//! - an unknown group id is 404 `Request_ResourceNotFound`, a malformed one 400
//!   `Request_BadRequest` "Invalid object identifier".

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::users::{self, decode_tagged, expired_token, parse_filter, select_from, tagged};
use super::{Cast, Ctx, GraphResponse, Query};
use crate::config::{GROUPS_PAGE_DEFAULT, GROUPS_PAGE_MAX};
use crate::prng::parse_guid;
use crate::tenant::{GroupKind, SimGroup, UserCursor};

/// The properties `GET /groups` returns without `$select`, in the order of
/// Example 1 of <https://learn.microsoft.com/en-us/graph/api/group-list>. All of them are selectable.
const DEFAULT_PROPERTIES: &[&str] = &[
    "id",
    "deletedDateTime",
    "classification",
    "createdDateTime",
    "description",
    "displayName",
    "expirationDateTime",
    "groupTypes",
    "isAssignableToRole",
    "mail",
    "mailEnabled",
    "mailNickname",
    "membershipRule",
    "membershipRuleProcessingState",
    "onPremisesLastSyncDateTime",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "renewedDateTime",
    "resourceBehaviorOptions",
    "resourceProvisioningOptions",
    "securityEnabled",
    "theme",
    "visibility",
    "onPremisesProvisioningErrors",
];

/// Properties `$filter` may compare on groups (`eq` works by default on each,
/// concepts/aad-advanced-queries.md; group.md lists `mail` as filterable).
const FILTERABLE: &[&str] = &["displayName", "mail", "id"];

/// Skiptoken payload tags: group listings, and member listings (followed by a phase byte).
const GROUPS_SKIPTOKEN_TAG: u8 = b'G';
const MEMBERS_SKIPTOKEN_TAG: u8 = b'M';

fn property(g: &SimGroup, name: &str) -> Value {
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
    let created = || json!(g.created.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    match name {
        "id" => json!(g.id),
        "createdDateTime" | "renewedDateTime" => created(),
        "description" => opt(&g.description),
        "displayName" => json!(g.display_name),
        "groupTypes" => json!(g.kind.group_types()),
        "mail" => opt(&g.mail),
        "mailEnabled" => json!(g.kind.mail_enabled()),
        "mailNickname" => json!(g.mail_nickname),
        "proxyAddresses" => json!(g.mail.iter().map(|m| format!("SMTP:{m}")).collect::<Vec<_>>()),
        "resourceBehaviorOptions" | "resourceProvisioningOptions" | "onPremisesProvisioningErrors" => json!([]),
        "securityEnabled" => json!(g.kind.security_enabled()),
        "visibility" => opt(&g.visibility),
        _ => Value::Null,
    }
}

/// A group as Graph renders it, restricted to `props`.
fn render(g: &SimGroup, props: &[&str]) -> Value {
    let mut obj = Map::new();
    for p in props {
        obj.insert((*p).to_owned(), property(g, p));
    }
    Value::Object(obj)
}

fn context(ctx: &Ctx<'_>, collection: &str, props: Option<&[&str]>, entity: bool) -> String {
    let sel = props.map(|p| format!("({})", p.join(","))).unwrap_or_default();
    let suffix = if entity { "/$entity" } else { "" };
    format!("{}/$metadata#{collection}{sel}{suffix}", ctx.graph_url())
}

fn unsupported_option(ctx: &Ctx<'_>, q: &Query, allowed: &[&str], on: &str) -> Option<GraphResponse> {
    q.unsupported(allowed).map(|opt| {
        ctx.bad_request(
            "Request_UnsupportedQuery",
            format!("The query option '{opt}' is not supported by m365-sim on {on}."),
        )
    })
}

/// The group index behind an id in a path, or Graph's 400 (not a GUID) / 404 (unknown).
fn lookup(ctx: &Ctx<'_>, id: &str) -> Result<u64, GraphResponse> {
    if parse_guid(id).is_none() {
        return Err(ctx.bad_request("Request_BadRequest", format!("Invalid object identifier '{id}'.")));
    }
    ctx.state.tenant.group_index(id).ok_or_else(|| ctx.not_found(id))
}

/// `GET /groups`: `$top` (1..=999, default 100), `$select`, `$filter`, `$count`, `$skiptoken`.
pub(crate) fn list(ctx: &Ctx<'_>, q: &Query) -> GraphResponse {
    let allowed = ["$top", "$select", "$skiptoken", "$filter", "$count"];
    if let Some(e) = unsupported_option(ctx, q, &allowed, "groups") {
        return e;
    }
    let top = match q.top(ctx, GROUPS_PAGE_DEFAULT, GROUPS_PAGE_MAX) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let props = match select_from(ctx, q, DEFAULT_PROPERTIES, "microsoft.graph.group") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let tenant = &ctx.state.tenant;
    let matches: Option<BTreeSet<u64>> = match q.get("$filter") {
        None => None,
        Some(raw) => match parse_filter(ctx, raw, FILTERABLE, "Group") {
            Err(e) => return e,
            Ok(clauses) => Some(
                clauses
                    .iter()
                    .flat_map(|(property, value)| match *property {
                        "displayName" => tenant.group_indexes_by_display_name(value),
                        "mail" => tenant.group_index_by_mail(value).into_iter().collect(),
                        _ => tenant.group_index(value).into_iter().collect(),
                    })
                    .collect(),
            ),
        },
    };
    let start = match q.get("$skiptoken") {
        None => 0,
        Some(t) => match ctx.unseal(t).and_then(|b| decode_tagged(&b, GROUPS_SKIPTOKEN_TAG)) {
            Some(i) => i,
            None => return expired_token(ctx),
        },
    };
    let take = usize::try_from(top).unwrap_or(usize::MAX);
    let found: Vec<u64> = match &matches {
        Some(m) => m.range(start..).copied().take(take.saturating_add(1)).collect(),
        None => (start..tenant.group_count()).take(take.saturating_add(1)).collect(),
    };
    let shown = props.as_deref().unwrap_or(DEFAULT_PROPERTIES);
    let mut body = Map::new();
    body.insert(
        "@odata.context".into(),
        json!(context(ctx, "groups", props.as_deref(), false)),
    );
    if q.count() && ctx.eventual && q.get("$skiptoken").is_none() {
        let total = matches.as_ref().map_or(tenant.group_count(), |m| m.len() as u64);
        body.insert("@odata.count".into(), json!(total));
    }
    if let Some(&next) = found.get(take) {
        let token = ctx.seal(&tagged(GROUPS_SKIPTOKEN_TAG, next));
        let keep = ["$filter", "$select", "$count", "$top"];
        body.insert(
            "@odata.nextLink".into(),
            json!(q.next_link(ctx, "/groups", &keep, &token)),
        );
    }
    let value: Vec<Value> = found
        .iter()
        .take(take)
        .filter_map(|g| tenant.group(*g))
        .map(|g| render(&g, shown))
        .collect();
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

/// `GET /groups/{id}` with optional `$select`.
pub(crate) fn get(ctx: &Ctx<'_>, id: &str, q: &Query) -> GraphResponse {
    if let Some(e) = unsupported_option(ctx, q, &["$select"], "a group") {
        return e;
    }
    let props = match select_from(ctx, q, DEFAULT_PROPERTIES, "microsoft.graph.group") {
        Ok(p) => p,
        Err(e) => return e,
    };
    let group = match lookup(ctx, id) {
        Ok(g) => ctx.state.tenant.group(g),
        Err(e) => return e,
    };
    let Some(group) = group else {
        return ctx.not_found(id);
    };
    let mut body = render(&group, props.as_deref().unwrap_or(DEFAULT_PROPERTIES));
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "@odata.context".into(),
            json!(context(ctx, "groups", props.as_deref(), true)),
        );
    }
    GraphResponse::ok(body)
}

/// Where a member listing stands: the member groups (by position in the list), then the users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Groups(u64),
    Users(UserCursor),
}

impl Cursor {
    fn encode(self) -> Vec<u8> {
        let (phase, value) = match self {
            Self::Groups(i) => (0u8, i),
            Self::Users(UserCursor::Position(p)) => (1, p),
            Self::Users(UserCursor::Added(u)) => (2, u),
        };
        let mut payload = vec![MEMBERS_SKIPTOKEN_TAG, phase];
        payload.extend_from_slice(&value.to_le_bytes());
        payload
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let [tag, phase, rest @ ..] = bytes else { return None };
        let raw: [u8; 8] = rest.try_into().ok()?;
        let value = u64::from_le_bytes(raw);
        match (*tag, *phase) {
            (MEMBERS_SKIPTOKEN_TAG, 0) => Some(Self::Groups(value)),
            (MEMBERS_SKIPTOKEN_TAG, 1) => Some(Self::Users(UserCursor::Position(value))),
            (MEMBERS_SKIPTOKEN_TAG, 2) => Some(Self::Users(UserCursor::Added(value))),
            _ => None,
        }
    }
}

/// One listed member.
enum Member {
    Group(u64),
    User(u64),
}

/// `GET /groups/{id}/members` and `…/transitiveMembers`, optionally cast: `$top` (1..=999,
/// default 100), `$select`, `$count`, `$skiptoken`. Members are listed as nested groups first,
/// then users; each user once, even when several nested groups hold it.
pub(crate) fn members(ctx: &Ctx<'_>, id: &str, transitive: bool, cast: Option<Cast>, q: &Query) -> GraphResponse {
    let allowed = ["$top", "$select", "$skiptoken", "$count"];
    if let Some(e) = unsupported_option(ctx, q, &allowed, "group members") {
        return e;
    }
    let segment = if transitive { "transitiveMembers" } else { "members" };
    let cast_name = match cast {
        None => None,
        Some(Cast::User) => Some("microsoft.graph.user"),
        Some(Cast::Group) => Some("microsoft.graph.group"),
        Some(Cast::Absent) => Some("microsoft.graph.directoryObject"),
    };
    if let Some(name) = cast_name {
        if !(ctx.eventual && q.count()) {
            // The documented shape of a query that needs advanced query parameters
            // (concepts/aad-advanced-queries.md, "Error handling for advanced queries").
            return ctx.bad_request(
                "Request_UnsupportedQuery",
                format!(
                    "The OData cast '{name}' on '{segment}' is not supported because the required parameters might be \
                     missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to \
                     https://aka.ms/graph-docs/advanced-queries for more information"
                ),
            );
        }
    }
    let top = match q.top(ctx, GROUPS_PAGE_DEFAULT, GROUPS_PAGE_MAX) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let (selectable, type_name): (Vec<&'static str>, &str) = match cast {
        Some(Cast::User) => (users::SELECTABLE.to_vec(), "microsoft.graph.user"),
        Some(Cast::Group) => (DEFAULT_PROPERTIES.to_vec(), "microsoft.graph.group"),
        _ => (
            users::SELECTABLE.iter().chain(DEFAULT_PROPERTIES).copied().collect(),
            "microsoft.graph.directoryObject",
        ),
    };
    let props = match select_from(ctx, q, &selectable, type_name) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let g = match lookup(ctx, id) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let tenant = &ctx.state.tenant;
    if cast == Some(Cast::Group) && tenant.group(g).is_some_and(|x| x.kind == GroupKind::Microsoft365) {
        return ctx.bad_request(
            "Request_UnsupportedQuery",
            "The OData cast 'microsoft.graph.group' is not supported on a Microsoft 365 group: it cannot have \
             groups as members.",
        );
    }
    let start = match q.get("$skiptoken") {
        None => Cursor::Groups(0),
        Some(t) => match ctx.unseal(t).and_then(|b| Cursor::decode(&b)) {
            Some(c) => c,
            None => return expired_token(ctx),
        },
    };

    let (with_groups, with_users) = match cast {
        None => (true, true),
        Some(Cast::User) => (false, true),
        Some(Cast::Group) => (true, false),
        Some(Cast::Absent) => (false, false),
    };
    let groups: Vec<u64> = if !with_groups {
        Vec::new()
    } else if transitive {
        tenant.transitive_group_indexes(g)
    } else {
        tenant.group(g).map(|x| x.member_groups).unwrap_or_default()
    };
    let set = tenant.member_set(g, transitive);
    let take = usize::try_from(top).unwrap_or(usize::MAX);
    let (group_from, user_from) = match start {
        Cursor::Groups(i) => (usize::try_from(i).unwrap_or(usize::MAX), UserCursor::START),
        Cursor::Users(c) => (usize::MAX, c),
    };
    let group_items = groups
        .iter()
        .enumerate()
        .skip(group_from)
        .map(|(i, h)| (Cursor::Groups(i as u64), Member::Group(*h)));
    let user_items = with_users
        .then(|| set.walk(user_from))
        .into_iter()
        .flatten()
        .map(|(c, u)| (Cursor::Users(c), Member::User(u)));
    let page: Vec<(Cursor, Member)> = group_items.chain(user_items).take(take.saturating_add(1)).collect();

    let mut body = Map::new();
    let collection = match cast {
        Some(Cast::User) => "users",
        Some(Cast::Group) => "groups",
        _ => "directoryObjects",
    };
    body.insert(
        "@odata.context".into(),
        json!(context(ctx, collection, props.as_deref(), false)),
    );
    if q.count() && ctx.eventual && q.get("$skiptoken").is_none() {
        let users = if with_users { set.count() } else { 0 };
        body.insert("@odata.count".into(), json!(groups.len() as u64 + users));
    }
    if let Some((next, _)) = page.get(take) {
        let token = ctx.seal(&next.encode());
        let path = match cast_name {
            Some(name) => format!("/groups/{id}/{segment}/{name}"),
            None => format!("/groups/{id}/{segment}"),
        };
        let keep = ["$select", "$count", "$top"];
        body.insert("@odata.nextLink".into(), json!(q.next_link(ctx, &path, &keep, &token)));
    }
    let typed = cast.is_none();
    let value: Vec<Value> = page
        .iter()
        .take(take)
        .filter_map(|(_, m)| render_member(tenant, m, props.as_deref(), typed))
        .collect();
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

/// A member as listed: its `$select`ed properties that exist on its type (all defaults without
/// `$select`), preceded by `@odata.type` in uncast listings.
fn render_member(
    tenant: &crate::tenant::Tenant,
    member: &Member,
    props: Option<&[&'static str]>,
    typed: bool,
) -> Option<Value> {
    let (odata_type, mut value) = match member {
        Member::User(u) => {
            let user = tenant.user(*u);
            let shown: Vec<&str> = match props {
                Some(p) => p.iter().copied().filter(|p| users::SELECTABLE.contains(p)).collect(),
                None => users::DEFAULT_PROPERTIES.to_vec(),
            };
            ("#microsoft.graph.user", users::render(&user, &shown))
        }
        Member::Group(h) => {
            let group = tenant.group(*h)?;
            let shown: Vec<&str> = match props {
                Some(p) => p.iter().copied().filter(|p| DEFAULT_PROPERTIES.contains(p)).collect(),
                None => DEFAULT_PROPERTIES.to_vec(),
            };
            ("#microsoft.graph.group", render(&group, &shown))
        }
    };
    if typed {
        let mut obj = Map::new();
        obj.insert("@odata.type".into(), json!(odata_type));
        if let Value::Object(rest) = value {
            obj.extend(rest);
        }
        value = Value::Object(obj);
    }
    Some(value)
}
