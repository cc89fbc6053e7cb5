//! Microsoft Graph v1.0: routing, the error envelope and the response type shared by top-level
//! requests and requests inside `$batch` (both go through [`dispatch`]).

pub(crate) mod batch;
pub(crate) mod delta;
pub(crate) mod drives;
pub(crate) mod filter;
pub(crate) mod groups;
pub(crate) mod permissions;
pub(crate) mod users;
pub(crate) mod versions;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use crate::auth::AuthFailure;
use crate::faults::Fault;
use crate::prng::{guid, hash3, tag};
use crate::server::SimState;
use crate::stats::Kind;

/// Graph's JSON content type, as in `crates/m365/tests/fixtures/graph-batch-response.json`.
pub(crate) const ODATA_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

const K_REQUEST_ID: u64 = tag(b"request-id");

/// Characters percent-encoded in query values we put into `@odata.nextLink` (keeps `,` and `$`
/// readable, like Graph's own links).
pub(crate) const QUERY_VALUE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Per-request context: the server state, this request's ids and the headers that change how
/// Graph answers.
pub(crate) struct Ctx<'a> {
    pub(crate) state: &'a SimState,
    pub(crate) request_id: String,
    pub(crate) client_request_id: String,
    /// The request carries `ConsistencyLevel: eventual` (advanced query parameters,
    /// <https://learn.microsoft.com/en-us/graph/aad-advanced-queries>). Inside `$batch` it is read
    /// from the inner request's own headers.
    pub(crate) eventual: bool,
    /// The request's `if-none-match` header (`…/content` answers 304 when it names the current
    /// eTag or cTag, <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>).
    pub(crate) if_none_match: Option<String>,
    /// The request's `Prefer` values, lower-cased, every `Prefer` header and comma-separated
    /// value counted (`deltashowsharingchanges` and friends on delta,
    /// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>).
    pub(crate) prefer: Vec<String>,
    /// The application roles of the request's bearer token (`None`: no `roles` claim), checked by
    /// [`crate::auth::authorize`]. Set after authentication; inner `$batch` requests inherit the
    /// envelope's.
    pub(crate) roles: Option<Vec<String>>,
    /// Whether this request is carried inside a `$batch` envelope.
    pub(crate) in_batch: bool,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(state: &'a SimState, headers: &HeaderMap) -> Self {
        let n = state.next_request_number();
        let seed = state.tenant.seed();
        let request_id = guid(hash3(seed, K_REQUEST_ID, n), hash3(seed, K_REQUEST_ID, !n));
        let client_request_id = headers
            .get("client-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map_or_else(|| request_id.clone(), str::to_owned);
        let eventual = headers
            .get("consistencylevel")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
        let if_none_match = headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let prefer = headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        Self {
            state,
            request_id,
            client_request_id,
            eventual,
            if_none_match,
            prefer,
            roles: None,
            in_batch: false,
        }
    }

    /// The context of a request inside this `$batch` envelope: its own headers, the envelope's
    /// token roles.
    pub(crate) fn inner(&self, headers: &HeaderMap) -> Ctx<'a> {
        let mut ctx = Ctx::new(self.state, headers);
        ctx.roles.clone_from(&self.roles);
        ctx.in_batch = true;
        ctx
    }

    /// `{base}/v1.0`, the prefix of every link we emit.
    pub(crate) fn graph_url(&self) -> &str {
        &self.state.graph_url
    }

    /// Graph's error envelope `{"error":{"code","message","innerError":{date,request-id,
    /// client-request-id}}}` (`crates/m365/tests/fixtures/graph-batch-response.json`).
    pub(crate) fn error(&self, status: StatusCode, code: &str, message: impl Into<String>) -> GraphResponse {
        GraphResponse::json(
            status,
            json!({"error": {
                "code": code,
                "message": message.into(),
                "innerError": self.inner_error(None),
            }}),
        )
    }

    /// The `innerError` object, optionally with an inner `code`.
    pub(crate) fn inner_error(&self, code: Option<&str>) -> Value {
        let mut inner = json!({
            "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            "request-id": self.request_id,
            "client-request-id": self.client_request_id,
        });
        if let (Some(code), Some(obj)) = (code, inner.as_object_mut()) {
            obj.insert("code".into(), Value::String(code.into()));
        }
        inner
    }

    /// 401 for a refused bearer token.
    pub(crate) fn unauthorized(&self, failure: AuthFailure) -> GraphResponse {
        self.error(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", failure.message())
            .with_header(
                "WWW-Authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            )
    }

    /// 400 for a query option we reject.
    pub(crate) fn bad_request(&self, code: &str, message: impl Into<String>) -> GraphResponse {
        self.error(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `Request_ResourceNotFound` for a directory object id that designates nothing.
    pub(crate) fn not_found(&self, id: &str) -> GraphResponse {
        self.error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        )
    }

    /// The response for an injected fault (never [`Fault::Drop`], which has none).
    pub(crate) fn fault(&self, fault: &Fault) -> GraphResponse {
        match fault {
            // crates/m365/tests/fixtures/graph-error-429.json
            Fault::TooManyRequests { retry_after } => GraphResponse::json(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": {
                    "code": "TooManyRequests",
                    "innerError": {
                        "code": "429",
                        "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                        "message": "Please retry after",
                        "request-id": self.request_id,
                        "client-request-id": self.client_request_id,
                        "status": "429",
                    },
                    "message": "Please retry again later.",
                }}),
            )
            .with_header("Retry-After", retry_after),
            // SharePoint's "Server Too Busy", in OneDrive's code vocabulary:
            // https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online
            Fault::Unavailable { retry_after } => self
                .error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "serviceNotAvailable",
                    "The service is temporarily unavailable. Please retry after the time in the Retry-After header.",
                )
                .with_header("Retry-After", retry_after),
            Fault::ServerError(status) => self.error(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "generalException",
                "An unspecified error has occurred.",
            ),
            Fault::Drop => self.error(StatusCode::INTERNAL_SERVER_ERROR, "generalException", "dropped"),
        }
    }

    /// Seals an opaque link token (see [`SimState::seal`]).
    pub(crate) fn seal(&self, payload: &[u8]) -> String {
        self.state.seal(payload)
    }

    /// Opens a token sealed by [`Self::seal`]; `None` if it was not issued by this server.
    pub(crate) fn unseal(&self, token: &str) -> Option<Vec<u8>> {
        self.state.unseal(token)
    }
}

/// A Graph response before it becomes HTTP (top level) or a `$batch` entry.
#[derive(Debug, Clone)]
pub(crate) struct GraphResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Value>,
}

impl GraphResponse {
    pub(crate) fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub(crate) fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub(crate) fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Headers as they appear in a `$batch` entry.
    pub(crate) fn batch_headers(&self) -> serde_json::Map<String, Value> {
        let mut h = serde_json::Map::new();
        h.insert("Cache-Control".into(), Value::String("no-cache".into()));
        if self.status.is_success() {
            h.insert("OData-Version".into(), Value::String("4.0".into()));
        }
        h.insert("Content-Type".into(), Value::String(ODATA_JSON.into()));
        for (k, v) in &self.headers {
            h.insert(k.clone(), Value::String(v.clone()));
        }
        h
    }

    /// The top-level HTTP response, with `request-id`/`client-request-id` headers.
    pub(crate) fn into_http(self, ctx: &Ctx<'_>) -> Response {
        let body = self.body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ODATA_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if self.status.is_success() {
            h.insert("OData-Version", HeaderValue::from_static("4.0"));
        }
        for (name, value) in [
            ("request-id", &ctx.request_id),
            ("client-request-id", &ctx.client_request_id),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        }
        for (k, v) in self.headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(&v)) {
                h.insert(name, value);
            }
        }
        resp
    }
}

/// How a drive is addressed in a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DriveSel {
    /// `/drives/{id}`
    Drive(String),
    /// `/users/{id|upn}/drive`
    User(String),
    /// `/sites/{site-id}/drive`
    Site(String),
}

/// What is addressed below a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DrivePart {
    /// The drive resource itself.
    Drive,
    /// An item (`root`, `items/root`, `items/{id}`).
    Item(String),
    /// `root/delta` (or `items/{folder}/delta`), optionally with a token in function-call syntax.
    Delta {
        /// The folder id for `items/{id}/delta`; `None` for the root aliases.
        folder: Option<String>,
        /// A token given as `delta(token='…')`.
        token: Option<String>,
    },
    /// `items/{id}/content`: the 302 to the item's download URL.
    Content(String),
    /// `items/{id}/versions`: the file's kept versions.
    Versions(String),
    /// `items/{id}/versions/{version-id}/content`: the 302 to a previous version's download URL.
    VersionContent {
        /// The item.
        item: String,
        /// The version id (`2.0`).
        version: String,
    },
    /// `root:/{path}` or `root:/{path}:`: an item addressed by its path from the drive root.
    ItemByPath(String),
    /// `items/{id}/permissions` (or `root/permissions`): the item's permissions.
    Permissions(String),
    /// `items/{id}/permissions/{perm-id}`: one permission (GET, DELETE).
    Permission {
        /// The item.
        item: String,
        /// The permission id.
        id: String,
    },
}

/// The OData cast after a member listing (`…/transitiveMembers/microsoft.graph.user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cast {
    /// `microsoft.graph.user`
    User,
    /// `microsoft.graph.group`
    Group,
    /// A member type the simulated groups never hold (`device`, `orgContact`,
    /// `servicePrincipal`): an empty collection.
    Absent,
}

/// A parsed Graph path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Users,
    User(String),
    Groups,
    Group(String),
    /// `/groups/{id}/members` or `/groups/{id}/transitiveMembers`, optionally cast.
    GroupMembers {
        group: String,
        transitive: bool,
        cast: Option<Cast>,
    },
    Site(String),
    SiteDrives(String),
    Drive(DriveSel, DrivePart),
    Batch,
    /// `/me…` is delegated-only.
    Me,
    /// A segment Graph would not recognise.
    Unknown(String),
}

impl Route {
    /// Parses a path below `/v1.0` (leading `/` optional, query excluded).
    pub(crate) fn parse(path: &str) -> Self {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let lower: Vec<String> = s.iter().map(|x| x.to_ascii_lowercase()).collect();
        let l: Vec<&str> = lower.iter().map(String::as_str).collect();
        let unknown = |i: usize| Self::Unknown(s.get(i).copied().unwrap_or("").to_owned());
        match l.as_slice() {
            ["$batch"] => Self::Batch,
            ["me", ..] => Self::Me,
            ["users"] => Self::Users,
            ["users", _] => Self::User(s[1].to_owned()),
            ["users", _, "drive", ..] => {
                drive_route(DriveSel::User(s[1].to_owned()), &s[3..], &l[3..]).unwrap_or_else(|i| unknown(3 + i))
            }
            ["users", _, ..] => unknown(2),
            ["groups"] => Self::Groups,
            ["groups", _] => Self::Group(s[1].to_owned()),
            ["groups", _, m @ ("members" | "transitivemembers"), rest @ ..] => {
                let cast = match rest {
                    [] => None,
                    ["microsoft.graph.user"] => Some(Cast::User),
                    ["microsoft.graph.group"] => Some(Cast::Group),
                    ["microsoft.graph.device" | "microsoft.graph.orgcontact" | "microsoft.graph.serviceprincipal"] => {
                        Some(Cast::Absent)
                    }
                    _ => return unknown(3),
                };
                Self::GroupMembers {
                    group: s[1].to_owned(),
                    transitive: *m == "transitivemembers",
                    cast,
                }
            }
            ["groups", _, ..] => unknown(2),
            ["drives", _, ..] => {
                drive_route(DriveSel::Drive(s[1].to_owned()), &s[2..], &l[2..]).unwrap_or_else(|i| unknown(2 + i))
            }
            ["sites", _] => Self::Site(s[1].to_owned()),
            ["sites", _, "drives"] => Self::SiteDrives(s[1].to_owned()),
            ["sites", _, "drive", ..] => {
                drive_route(DriveSel::Site(s[1].to_owned()), &s[3..], &l[3..]).unwrap_or_else(|i| unknown(3 + i))
            }
            ["sites", _, ..] => unknown(2),
            _ => unknown(0),
        }
    }

    /// The stats bucket of this route.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Self::Users | Self::User(_) => Kind::Users,
            Self::Groups | Self::Group(_) => Kind::Groups,
            Self::GroupMembers { .. } => Kind::GroupMembers,
            Self::Site(_) | Self::SiteDrives(_) | Self::Drive(_, DrivePart::Drive) => Kind::Drive,
            Self::Drive(_, DrivePart::Item(_) | DrivePart::ItemByPath(_)) => Kind::Item,
            Self::Drive(_, DrivePart::Delta { .. }) => Kind::Delta,
            Self::Drive(_, DrivePart::Content(_) | DrivePart::VersionContent { .. }) => Kind::Content,
            Self::Drive(_, DrivePart::Versions(_)) => Kind::Item,
            Self::Drive(_, DrivePart::Permissions(_) | DrivePart::Permission { .. }) => Kind::Permissions,
            Self::Batch => Kind::Batch,
            Self::Me | Self::Unknown(_) => Kind::Other,
        }
    }
}

/// The stats bucket of a request: its route's, except that `/users` with `$filter` is a lookup
/// ([`Kind::UserFilter`]) rather than a listing.
pub(crate) fn request_kind(route: &Route, query: &str) -> Kind {
    if *route == Route::Users && Query::parse(query).get("$filter").is_some() {
        Kind::UserFilter
    } else {
        route.kind()
    }
}

/// Parses `delta`, `delta()`, `delta(token='x')` and `delta(token=x)`; `None` if not a delta
/// segment, `Some(None)` for no token.
fn delta_segment(seg: &str) -> Option<Option<String>> {
    let lower = seg.to_ascii_lowercase();
    if lower == "delta" {
        return Some(None);
    }
    if !lower.starts_with("delta(") {
        return None;
    }
    // The first six bytes are ASCII (they matched "delta(" case-insensitively).
    let inner = seg[6..].strip_suffix(')')?;
    if inner.is_empty() {
        return Some(None);
    }
    let value = if inner.len() >= 6 && inner[..6].eq_ignore_ascii_case("token=") {
        &inner[6..]
    } else {
        inner
    };
    Some(Some(value.trim_matches('\'').to_owned()))
}

/// Parses what follows a drive; `Err(i)` names the first unrecognised segment.
fn drive_route(sel: DriveSel, s: &[&str], l: &[&str]) -> Result<Route, usize> {
    // `root:/a/b.txt` or `root:/a/b.txt:` (path-based addressing); nothing may follow the
    // closing colon here (`:/content` and friends are not simulated).
    if let Some(first) = l.first()
        && let Some(rest) = first.strip_prefix("root:")
    {
        let mut segments: Vec<&str> = Vec::with_capacity(s.len());
        if !rest.is_empty() {
            segments.push(&s[0][5..]);
        }
        segments.extend_from_slice(&s[1..]);
        let mut path = format!("/{}", segments.join("/"));
        if let Some(open) = path.strip_suffix(':') {
            path = open.to_owned();
        } else if path.contains(':') {
            return Err(s.len() - 1);
        }
        return Ok(Route::Drive(sel, DrivePart::ItemByPath(path)));
    }
    let part = match l {
        [] => DrivePart::Drive,
        ["root"] => DrivePart::Item("root".into()),
        ["items", _] => DrivePart::Item(s[1].to_owned()),
        ["items", _, "content"] => DrivePart::Content(s[1].to_owned()),
        ["items", _, "versions"] => DrivePart::Versions(s[1].to_owned()),
        ["items", _, "versions", _, "content"] => DrivePart::VersionContent {
            item: s[1].to_owned(),
            version: s[3].to_owned(),
        },
        ["root", "permissions"] => DrivePart::Permissions("root".into()),
        ["items", _, "permissions"] => DrivePart::Permissions(s[1].to_owned()),
        ["root", "permissions", _] => DrivePart::Permission {
            item: "root".into(),
            id: s[2].to_owned(),
        },
        ["items", _, "permissions", _] => DrivePart::Permission {
            item: s[1].to_owned(),
            id: s[3].to_owned(),
        },
        ["root", d] | ["items", "root", d] => DrivePart::Delta {
            folder: None,
            token: delta_segment(d).ok_or(l.len() - 1)?,
        },
        ["items", _, d] => DrivePart::Delta {
            folder: Some(s[1].to_owned()),
            token: delta_segment(d).ok_or(2usize)?,
        },
        [first, ..] => return Err(usize::from(matches!(*first, "root" | "items"))),
    };
    Ok(Route::Drive(sel, part))
}

/// Query options, decoded; keys compared case-insensitively.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: &str) -> Self {
        Self(url::form_urlencoded::parse(query.as_bytes()).into_owned().collect())
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `$count=true` was asked for.
    pub(crate) fn count(&self) -> bool {
        self.get("$count")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// `$top` within `1..=max`, `default` when absent, or Graph's 400.
    pub(crate) fn top(&self, ctx: &Ctx<'_>, default: u64, max: u64) -> Result<u64, GraphResponse> {
        match self.get("$top") {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ctx.bad_request(
                    "Request_UnsupportedQuery",
                    format!("Invalid page size specified: '{v}'. Must be between 1 and {max} inclusive."),
                )),
            },
        }
    }

    /// The absolute next-page link for `path` (below `/v1.0`): the options named in `keep` as
    /// they were given, then `$skiptoken`.
    pub(crate) fn next_link(&self, ctx: &Ctx<'_>, path: &str, keep: &[&str], skiptoken: &str) -> String {
        let mut link = format!("{}{path}", ctx.graph_url());
        let mut sep = '?';
        for key in keep {
            if let Some(v) = self.get(key) {
                link.push_str(&format!("{sep}{key}={}", encode_query_value(v)));
                sep = '&';
            }
        }
        link.push_str(&format!("{sep}$skiptoken={skiptoken}"));
        link
    }

    /// System query options (`$…`) present other than the allowed ones.
    pub(crate) fn unsupported<'q>(&'q self, allowed: &[&str]) -> Option<&'q str> {
        self.0
            .iter()
            .map(|(k, _)| k.as_str())
            .find(|k| k.starts_with('$') && !allowed.iter().any(|a| a.eq_ignore_ascii_case(k)))
    }
}

/// Routes one Graph request (top level or inside `$batch`), already authenticated and past
/// fault injection, to its handler.
pub(crate) fn dispatch(ctx: &Ctx<'_>, method: &Method, route: &Route, query: &str) -> GraphResponse {
    if let Route::Unknown(seg) = route {
        return ctx.bad_request("BadRequest", format!("Resource not found for the segment '{seg}'."));
    }
    if *route == Route::Me {
        return ctx.bad_request(
            "BadRequest",
            "/me request is only valid with delegated authentication flow.",
        );
    }
    if let Some(denied) = crate::auth::authorize(ctx, method, route) {
        return denied;
    }
    let deletes_permission =
        *method == Method::DELETE && matches!(route, Route::Drive(_, DrivePart::Permission { .. }));
    if method != Method::GET && !deletes_permission {
        // crates/m365/tests/fixtures/graph-batch-response.json, response "4".
        return ctx.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "Specified HTTP method is not allowed for the request target.",
        );
    }
    let q = Query::parse(query);
    match route {
        Route::Users => users::list(ctx, &q),
        Route::User(id) => users::get(ctx, id, &q),
        Route::Groups => groups::list(ctx, &q),
        Route::Group(id) => groups::get(ctx, id, &q),
        Route::GroupMembers {
            group,
            transitive,
            cast,
        } => groups::members(ctx, group, *transitive, *cast, &q),
        Route::Site(site) => drives::site(ctx, site),
        Route::SiteDrives(site) => drives::site_drives(ctx, site),
        Route::Drive(sel, DrivePart::Drive) => drives::drive(ctx, sel),
        Route::Drive(sel, DrivePart::Item(item)) => drives::item(ctx, sel, item),
        Route::Drive(sel, DrivePart::Content(item)) => crate::content::redirect(ctx, sel, item),
        Route::Drive(sel, DrivePart::Versions(item)) => versions::list(ctx, sel, item),
        Route::Drive(sel, DrivePart::VersionContent { item, version }) => versions::content(ctx, sel, item, version),
        Route::Drive(sel, DrivePart::ItemByPath(path)) => drives::item_by_path(ctx, sel, path),
        Route::Drive(sel, DrivePart::Permissions(item)) => permissions::list(ctx, sel, item),
        Route::Drive(sel, DrivePart::Permission { item, id }) if deletes_permission => {
            permissions::delete(ctx, sel, item, id)
        }
        Route::Drive(sel, DrivePart::Permission { item, id }) => permissions::get(ctx, sel, item, id),
        Route::Drive(sel, DrivePart::Delta { folder, token }) => {
            delta::delta(ctx, sel, folder.as_deref(), token.as_deref(), &q)
        }
        Route::Batch | Route::Me | Route::Unknown(_) => ctx.bad_request("BadRequest", "Unsupported request."),
    }
}

/// Percent-encodes a query value for a link we emit.
pub(crate) fn encode_query_value(v: &str) -> String {
    utf8_percent_encode(v, QUERY_VALUE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_the_documented_paths() {
        assert_eq!(Route::parse("/users"), Route::Users);
        assert_eq!(Route::parse("users/abc"), Route::User("abc".into()));
        assert_eq!(Route::parse("/$batch"), Route::Batch);
        assert_eq!(Route::parse("/%24batch"), Route::Batch);
        assert_eq!(
            Route::parse("/users/a@b.com/drive"),
            Route::Drive(DriveSel::User("a@b.com".into()), DrivePart::Drive)
        );
        assert_eq!(
            Route::parse("/drives/b!x/root/delta"),
            Route::Drive(
                DriveSel::Drive("b!x".into()),
                DrivePart::Delta {
                    folder: None,
                    token: None
                }
            )
        );
        assert_eq!(
            Route::parse("/drives/b!x/items/root/delta(token='abc')"),
            Route::Drive(
                DriveSel::Drive("b!x".into()),
                DrivePart::Delta {
                    folder: None,
                    token: Some("abc".into())
                }
            )
        );
        assert_eq!(
            Route::parse("/users/u/drive/root/delta"),
            Route::Drive(
                DriveSel::User("u".into()),
                DrivePart::Delta {
                    folder: None,
                    token: None
                }
            )
        );
        assert_eq!(
            Route::parse("/drives/b!x/items/01ABC"),
            Route::Drive(DriveSel::Drive("b!x".into()), DrivePart::Item("01ABC".into()))
        );
        assert_eq!(Route::parse("/drives/b!x/bogus"), Route::Unknown("bogus".into()));
        assert_eq!(Route::parse("/groups"), Route::Groups);
        assert_eq!(Route::parse("/groups/g1"), Route::Group("g1".into()));
        assert_eq!(
            Route::parse("/groups/g1/transitiveMembers/microsoft.graph.user"),
            Route::GroupMembers {
                group: "g1".into(),
                transitive: true,
                cast: Some(Cast::User)
            }
        );
        assert_eq!(
            Route::parse("/groups/g1/members"),
            Route::GroupMembers {
                group: "g1".into(),
                transitive: false,
                cast: None
            }
        );
        assert_eq!(
            Route::parse("/groups/g1/members/microsoft.graph.bogus"),
            Route::Unknown("microsoft.graph.bogus".into())
        );
        assert_eq!(Route::parse("/groups/g1/owners"), Route::Unknown("owners".into()));
        assert_eq!(Route::parse("/me/drive"), Route::Me);
    }

    #[test]
    fn permission_routes_parse_below_items_and_root() {
        let d = || DriveSel::Drive("b!x".into());
        assert_eq!(
            Route::parse("/drives/b!x/items/01A/permissions"),
            Route::Drive(d(), DrivePart::Permissions("01A".into()))
        );
        assert_eq!(
            Route::parse("/drives/b!x/root/permissions"),
            Route::Drive(d(), DrivePart::Permissions("root".into()))
        );
        assert_eq!(
            Route::parse("/users/u/drive/items/01A/permissions/aTowIy5m"),
            Route::Drive(
                DriveSel::User("u".into()),
                DrivePart::Permission {
                    item: "01A".into(),
                    id: "aTowIy5m".into()
                }
            )
        );
        assert_eq!(
            Route::parse("/drives/b!x/items/01A/permissions").kind(),
            Kind::Permissions
        );
    }
}
