//! `GET /users` (paged; `$filter` lookups by `userPrincipalName`, `mail`, `displayName` or `id`,
//! joined by `or`) and `GET /users/{id | userPrincipalName}`.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value, json};

use super::filter::{self, Clause, FilterError};
use super::{Ctx, GraphResponse, Query, encode_query_value};
use crate::config::{USERS_PAGE_DEFAULT, USERS_PAGE_MAX};
use crate::server::SimState;
use crate::tenant::{SimUser, Tenant};

/// The properties `GET /users` returns without `$select`, in the order of
/// the example response of <https://learn.microsoft.com/en-us/graph/api/user-list>.
pub(crate) const DEFAULT_PROPERTIES: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Every property the simulator can return on `$select` (a subset of Graph's user resource).
pub(crate) const SELECTABLE: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
    "accountEnabled",
    "createdDateTime",
    "department",
    "mailNickname",
    "userType",
    "usageLocation",
];

/// Skiptoken payload tag, so a delta token can't be replayed as a skiptoken.
const SKIPTOKEN_TAG: u8 = b'U';
/// Skiptoken payload tag of filtered listings (the next user index to examine).
const FILTER_SKIPTOKEN_TAG: u8 = b'F';
/// Properties `$filter` may compare on users (all support `eq` by default,
/// concepts/aad-advanced-queries.md).
const FILTERABLE: &[&str] = &["userPrincipalName", "mail", "displayName", "id"];

/// The `$select`ed properties in canonical spelling (each among `selectable`), `None` without
/// `$select`, or the 400 Graph gives for an unknown one (naming `type_name`).
pub(crate) fn select_from(
    ctx: &Ctx<'_>,
    q: &Query,
    selectable: &[&'static str],
    type_name: &str,
) -> Result<Option<Vec<&'static str>>, GraphResponse> {
    let Some(raw) = q.get("$select") else {
        return Ok(None);
    };
    let mut props = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(canonical) = selectable.iter().find(|p| p.eq_ignore_ascii_case(name)) else {
            return Err(ctx.bad_request(
                "Request_BadRequest",
                format!("Could not find a property named '{name}' on type '{type_name}'."),
            ));
        };
        if !props.contains(canonical) {
            props.push(*canonical);
        }
    }
    Ok(Some(props))
}

fn selection(ctx: &Ctx<'_>, q: &Query) -> Result<Option<Vec<&'static str>>, GraphResponse> {
    select_from(ctx, q, SELECTABLE, "microsoft.graph.user")
}

/// The 400 for a refused `$filter` on `resource` (`User`, `Group`): `BadRequest` "Invalid filter
/// clause" for malformed ones, `Request_UnsupportedQuery` for the rest (the shapes in
/// concepts/aad-advanced-queries.md and Graph's answers to malformed filters).
pub(crate) fn filter_refused(ctx: &Ctx<'_>, error: &FilterError) -> GraphResponse {
    match error {
        FilterError::Syntax(detail) => ctx.bad_request("BadRequest", format!("Invalid filter clause: {detail}.")),
        FilterError::Unsupported(detail) => ctx.bad_request(
            "Request_UnsupportedQuery",
            format!(
                "Unsupported query: m365-sim supports only `property eq 'value'` comparisons joined by `or` \
                 in $filter, not {detail}."
            ),
        ),
    }
}

/// Parses `$filter` and checks every compared property is among `filterable` (canonical
/// spelling returned in the clauses), or Graph's 400.
pub(crate) fn parse_filter(
    ctx: &Ctx<'_>,
    raw: &str,
    filterable: &[&'static str],
    resource: &str,
) -> Result<Vec<(&'static str, String)>, GraphResponse> {
    let clauses = filter::parse(raw).map_err(|e| filter_refused(ctx, &e))?;
    clauses
        .into_iter()
        .map(|Clause { property, value }| {
            filterable
                .iter()
                .find(|p| p.eq_ignore_ascii_case(&property))
                .map(|p| (*p, value))
                .ok_or_else(|| {
                    ctx.bad_request(
                        "Request_UnsupportedQuery",
                        format!(
                            "Unsupported or invalid query filter clause specified for property '{property}' of resource '{resource}'."
                        ),
                    )
                })
        })
        .collect()
}

/// Which users a `$filter` designates: users found by id, UPN or mail (O(1) lookups), and
/// display-name pairs that need a scan.
struct UserMatcher {
    indexes: BTreeSet<u64>,
    names: HashSet<(usize, usize)>,
}

impl UserMatcher {
    fn new(tenant: &Tenant, clauses: &[(&'static str, String)]) -> Self {
        let mut indexes = BTreeSet::new();
        let mut names = HashSet::new();
        for (property, value) in clauses {
            match *property {
                "userPrincipalName" if value.contains('@') => {
                    indexes.extend(tenant.find_user(value).map(|u| u.index));
                }
                "mail" if value.contains('@') => {
                    let wanted = value.to_lowercase();
                    indexes.extend(
                        tenant
                            .find_user(value)
                            .filter(|u| u.mail.as_deref().is_some_and(|m| m.to_lowercase() == wanted))
                            .map(|u| u.index),
                    );
                }
                "id" if !value.contains('@') => indexes.extend(tenant.find_user(value).map(|u| u.index)),
                "displayName" => names.extend(tenant.name_pairs_matching(value)),
                _ => {}
            }
        }
        Self { indexes, names }
    }

    /// Matching user indexes from `start` on, ascending.
    fn from<'t>(&'t self, tenant: &'t Tenant, start: u64) -> Box<dyn Iterator<Item = u64> + 't> {
        if self.names.is_empty() {
            Box::new(self.indexes.range(start..).copied())
        } else {
            Box::new(
                (start..tenant.user_count())
                    .filter(move |i| self.indexes.contains(i) || self.names.contains(&tenant.name_indexes(*i))),
            )
        }
    }
}

/// `GET /users?$filter=…`: matching users in directory order, paged like the full listing.
fn filtered(ctx: &Ctx<'_>, q: &Query, raw: &str, top: u64, props: Option<&[&'static str]>) -> GraphResponse {
    let clauses = match parse_filter(ctx, raw, FILTERABLE, "User") {
        Ok(c) => c,
        Err(e) => return e,
    };
    let start = match q.get("$skiptoken") {
        None => 0,
        Some(t) => match ctx.unseal(t).and_then(|b| decode_tagged(&b, FILTER_SKIPTOKEN_TAG)) {
            Some(i) => i,
            None => return expired_token(ctx),
        },
    };
    let tenant = &ctx.state.tenant;
    let matcher = UserMatcher::new(tenant, &clauses);
    let take = usize::try_from(top).unwrap_or(usize::MAX);
    let found: Vec<u64> = matcher.from(tenant, start).take(take.saturating_add(1)).collect();
    let shown = props.unwrap_or(DEFAULT_PROPERTIES);
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(ctx, props, false)));
    if q.count() && ctx.eventual && q.get("$skiptoken").is_none() {
        body.insert("@odata.count".into(), json!(matcher.from(tenant, 0).count()));
    }
    if let Some(&next) = found.get(take) {
        let token = ctx.seal(&tagged(FILTER_SKIPTOKEN_TAG, next));
        body.insert(
            "@odata.nextLink".into(),
            json!(q.next_link(ctx, "/users", &["$filter", "$select", "$count", "$top"], &token)),
        );
    }
    let value: Vec<Value> = found
        .iter()
        .take(take)
        .map(|i| render(&tenant.user(*i), shown))
        .collect();
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

/// A sealed-token payload: a one-byte tag and a little-endian index.
pub(crate) fn tagged(tag: u8, index: u64) -> Vec<u8> {
    let mut payload = vec![tag];
    payload.extend_from_slice(&index.to_le_bytes());
    payload
}

/// The index of a payload made by [`tagged`] with this tag.
pub(crate) fn decode_tagged(bytes: &[u8], expected: u8) -> Option<u64> {
    let (&tag, rest) = bytes.split_first()?;
    let raw: [u8; 8] = rest.try_into().ok()?;
    (tag == expected).then(|| u64::from_le_bytes(raw))
}

/// Graph's 400 for a `$skiptoken` it did not issue (or no longer accepts).
pub(crate) fn expired_token(ctx: &Ctx<'_>) -> GraphResponse {
    ctx.bad_request(
        "Directory_ExpiredPageToken",
        "The specified page token value has expired and can no longer be included in your request.",
    )
}

fn property(u: &SimUser, name: &str) -> Value {
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
    match name {
        "businessPhones" => json!(u.business_phones),
        "displayName" => json!(u.display_name),
        "givenName" => json!(u.given_name),
        "jobTitle" => opt(&u.job_title),
        "mail" => opt(&u.mail),
        "mobilePhone" => opt(&u.mobile_phone),
        "officeLocation" => opt(&u.office_location),
        "preferredLanguage" => opt(&u.preferred_language),
        "surname" => json!(u.surname),
        "userPrincipalName" => json!(u.user_principal_name),
        "id" => json!(u.id),
        "accountEnabled" => json!(true),
        "createdDateTime" => json!(u.created.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
        "department" => opt(&u.department),
        "mailNickname" => json!(u.user_principal_name.split('@').next().unwrap_or_default()),
        "userType" => json!("Member"),
        "usageLocation" => json!("US"),
        _ => Value::Null,
    }
}

/// A user as Graph renders it, restricted to `props`.
pub(crate) fn render(u: &SimUser, props: &[&str]) -> Value {
    let mut obj = Map::new();
    for p in props {
        obj.insert((*p).to_owned(), property(u, p));
    }
    Value::Object(obj)
}

fn context(ctx: &Ctx<'_>, props: Option<&[&str]>, entity: bool) -> String {
    let sel = props.map(|p| format!("({})", p.join(","))).unwrap_or_default();
    let suffix = if entity { "/$entity" } else { "" };
    format!("{}/$metadata#users{sel}{suffix}", ctx.graph_url())
}

/// `GET /users`: `$top` (1..=999, default 100), `$select`, `$skiptoken` (opaque, only from our own
/// `@odata.nextLink`), `$filter` (see [`filtered`]) and `$count=true`, which adds `@odata.count` to
/// the first page only with `ConsistencyLevel: eventual` and is silently ignored without it
/// (<https://learn.microsoft.com/en-us/graph/aad-advanced-queries>, <https://learn.microsoft.com/en-us/graph/paging>).
pub(crate) fn list(ctx: &Ctx<'_>, q: &Query) -> GraphResponse {
    if let Some(opt) = q.unsupported(&["$top", "$select", "$skiptoken", "$filter", "$count"]) {
        return ctx.bad_request(
            "Request_UnsupportedQuery",
            format!("The query option '{opt}' is not supported by m365-sim on users."),
        );
    }
    let top = match q.top(ctx, USERS_PAGE_DEFAULT, USERS_PAGE_MAX) {
        Ok(t) => t,
        Err(e) => return e,
    };
    let props = match selection(ctx, q) {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Some(raw) = q.get("$filter") {
        return filtered(ctx, q, raw, top, props.as_deref());
    }
    let start = match q.get("$skiptoken") {
        None => 0,
        Some(t) => match ctx.unseal(t).and_then(|b| decode_tagged(&b, SKIPTOKEN_TAG)) {
            Some(i) => i,
            None => return expired_token(ctx),
        },
    };
    let tenant = &ctx.state.tenant;
    let end = start.saturating_add(top).min(tenant.user_count());
    let shown = props.as_deref().unwrap_or(DEFAULT_PROPERTIES);
    let value: Vec<Value> = (start..end).map(|i| render(&tenant.user(i), shown)).collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(ctx, props.as_deref(), false)));
    if q.count() && ctx.eventual && q.get("$skiptoken").is_none() {
        body.insert("@odata.count".into(), json!(tenant.user_count()));
    }
    if end < tenant.user_count() {
        let link = page_link(ctx.state, end, top, q.get("$select"));
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

/// The absolute URL of the `/users` page starting at `start`, as put in `@odata.nextLink`.
pub(crate) fn page_link(state: &SimState, start: u64, top: u64, select: Option<&str>) -> String {
    let token = tagged(SKIPTOKEN_TAG, start);
    let mut link = format!("{}/users?$top={top}", state.graph_url);
    if let Some(raw) = select {
        link.push_str(&format!("&$select={}", encode_query_value(raw)));
    }
    link.push_str(&format!("&$skiptoken={}", state.seal(&token)));
    link
}

/// The user, or Graph's 404 for an unknown id/UPN (`Request_ResourceNotFound`).
pub(crate) fn lookup(ctx: &Ctx<'_>, id_or_upn: &str) -> Result<SimUser, GraphResponse> {
    ctx.state
        .tenant
        .find_user(id_or_upn)
        .ok_or_else(|| ctx.not_found(id_or_upn))
}

/// `GET /users/{id | userPrincipalName}` with optional `$select`.
pub(crate) fn get(ctx: &Ctx<'_>, id_or_upn: &str, q: &Query) -> GraphResponse {
    let props = match selection(ctx, q) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match lookup(ctx, id_or_upn) {
        Err(e) => e,
        Ok(user) => {
            let mut body = render(&user, props.as_deref().unwrap_or(DEFAULT_PROPERTIES));
            if let Some(obj) = body.as_object_mut() {
                obj.insert("@odata.context".into(), json!(context(ctx, props.as_deref(), true)));
            }
            GraphResponse::ok(body)
        }
    }
}
