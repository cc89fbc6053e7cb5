//! `GET /users` (paged) and `GET /users/{id | userPrincipalName}`.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::{Ctx, GraphResponse, Query, encode_query_value};
use crate::config::{USERS_PAGE_DEFAULT, USERS_PAGE_MAX};
use crate::server::SimState;
use crate::tenant::SimUser;

/// The properties `GET /users` returns without `$select`, in the order of
/// samples/graph-users-page.json (FACTS.md §2).
const DEFAULT_PROPERTIES: &[&str] = &[
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
const SELECTABLE: &[&str] = &[
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

/// The requested properties in canonical spelling, or the 400 Graph gives for an unknown one.
fn selection(ctx: &Ctx<'_>, q: &Query) -> Result<Option<Vec<&'static str>>, GraphResponse> {
    let Some(raw) = q.get("$select") else {
        return Ok(None);
    };
    let mut props = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(canonical) = SELECTABLE.iter().find(|p| p.eq_ignore_ascii_case(name)) else {
            return Err(ctx.bad_request(
                "Request_BadRequest",
                format!("Could not find a property named '{name}' on type 'microsoft.graph.user'."),
            ));
        };
        if !props.contains(canonical) {
            props.push(*canonical);
        }
    }
    Ok(Some(props))
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

/// `GET /users`: `$top` (1..=999, default 100), `$select`, `$skiptoken` (opaque, only from our
/// own `@odata.nextLink`).
pub(crate) fn list(ctx: &Ctx<'_>, q: &Query) -> GraphResponse {
    if let Some(opt) = q.unsupported(&["$top", "$select", "$skiptoken"]) {
        return ctx.bad_request(
            "Request_UnsupportedQuery",
            format!("The query option '{opt}' is not supported by m365-sim on users."),
        );
    }
    let top = match q.get("$top") {
        None => USERS_PAGE_DEFAULT,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if (1..=USERS_PAGE_MAX).contains(&n) => n,
            _ => {
                return ctx.bad_request(
                    "Request_UnsupportedQuery",
                    format!("Invalid page size specified: '{v}'. Must be between 1 and {USERS_PAGE_MAX} inclusive."),
                );
            }
        },
    };
    let props = match selection(ctx, q) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let start = match q.get("$skiptoken") {
        None => 0,
        Some(t) => match ctx.unseal(t).and_then(|b| decode_skiptoken(&b)) {
            Some(i) => i,
            None => {
                return ctx.bad_request(
                    "Directory_ExpiredPageToken",
                    "The specified page token value has expired and can no longer be included in your request.",
                );
            }
        },
    };
    let tenant = &ctx.state.tenant;
    let end = start.saturating_add(top).min(tenant.user_count());
    let shown = props.as_deref().unwrap_or(DEFAULT_PROPERTIES);
    let value: Vec<Value> = (start..end).map(|i| render(&tenant.user(i), shown)).collect();
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(context(ctx, props.as_deref(), false)));
    if end < tenant.user_count() {
        let link = page_link(ctx.state, end, top, q.get("$select"));
        body.insert("@odata.nextLink".into(), json!(link));
    }
    body.insert("value".into(), Value::Array(value));
    GraphResponse::ok(Value::Object(body))
}

/// The absolute URL of the `/users` page starting at `start`, as put in `@odata.nextLink`.
pub(crate) fn page_link(state: &SimState, start: u64, top: u64, select: Option<&str>) -> String {
    let mut token = vec![SKIPTOKEN_TAG];
    token.extend_from_slice(&start.to_le_bytes());
    let mut link = format!("{}/users?$top={top}", state.graph_url);
    if let Some(raw) = select {
        link.push_str(&format!("&$select={}", encode_query_value(raw)));
    }
    link.push_str(&format!("&$skiptoken={}", state.seal(&token)));
    link
}

fn decode_skiptoken(bytes: &[u8]) -> Option<u64> {
    let (&tag, rest) = bytes.split_first()?;
    let raw: [u8; 8] = rest.try_into().ok()?;
    (tag == SKIPTOKEN_TAG).then(|| u64::from_le_bytes(raw))
}

/// The user, or Graph's 404 for an unknown id/UPN (`Request_ResourceNotFound`).
pub(crate) fn lookup(ctx: &Ctx<'_>, id_or_upn: &str) -> Result<SimUser, GraphResponse> {
    ctx.state.tenant.find_user(id_or_upn).ok_or_else(|| {
        ctx.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!(
                "Resource '{id_or_upn}' does not exist or one of its queried reference-property objects are not present."
            ),
        )
    })
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
