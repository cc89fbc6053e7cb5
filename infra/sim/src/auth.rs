//! The Entra ID token endpoint (client credentials) and bearer-token validation for Graph.
//!
//! Tokens are JWT-shaped (`header.claims.signature`, base64url) with realistic app-only claims
//! (`aud`, `tid`, `appid`, `roles`, `exp`), signed with SipHash under a per-server key. Clients must
//! treat them as opaque, as they must with Entra's. A token is valid while its millisecond expiry
//! is in the future and its *generation* equals the server's: [`TokenAuthority::expire_all`] bumps
//! the generation, invalidating every token issued so far.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use crate::graph::{Ctx, GraphResponse, Route};
use crate::prng::{guid, hash3, siphash24, tag};
use crate::server::SimState;
use crate::stats::Kind;

/// Graph's App ID URI; scope `https://graph.microsoft.com/.default`
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
pub(crate) const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";
/// Graph's well-known application id, also accepted as a scope prefix.
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
/// Management Activity API resource; scope `https://manage.office.com/.default`
/// (<https://learn.microsoft.com/office/office-365-management-api/get-started-with-office-365-management-apis>).
pub(crate) const MANAGE_RESOURCE: &str = "https://manage.office.com";
/// The Management API's application id, also accepted as a scope prefix.
const MANAGE_APP_ID: &str = "c5393580-f805-4401-95e8-94b7a6ef2fc2";

/// Graph application roles granted by default: what the README asks an admin to consent to
/// (`Directory.Read.All`, `Files.Read.All`, `Mail.Read` for email connections) plus the narrower
/// read roles that also cover the calls made (`User.Read.All`, `GroupMember.Read.All`,
/// `Sites.Read.All`; <https://learn.microsoft.com/en-us/graph/permissions-reference>).
pub const DEFAULT_GRAPH_ROLES: &[&str] = &[
    "User.Read.All",
    "GroupMember.Read.All",
    "Directory.Read.All",
    "Files.Read.All",
    "Sites.Read.All",
    "Mail.Read",
];
/// Management Activity API application roles granted by default ("Activity API operations" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const DEFAULT_MANAGE_ROLES: &[&str] = &[ACTIVITY_FEED_READ];
const ACTIVITY_FEED_READ: &str = "ActivityFeed.Read";

/// Any one of these lets an app read users (Graph permissions reference, user-list.md).
const USER_READ_ROLES: &[&str] = &[
    "User.Read.All",
    "User.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Any one of these lets an app read groups and their (transitive) members (group-list.md,
/// group-list-transitivemembers.md).
const GROUP_READ_ROLES: &[&str] = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "Group.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
/// Any one of these lets an app read drives and driveItems (drive-get.md, driveitem-delta.md).
const FILES_READ_ROLES: &[&str] = &[
    "Files.Read.All",
    "Files.ReadWrite.All",
    "Sites.Read.All",
    "Sites.ReadWrite.All",
    "Sites.FullControl.All",
];
/// Any one of these lets an app change driveItems or their permissions (permission-delete.md).
const FILES_WRITE_ROLES: &[&str] = &["Files.ReadWrite.All", "Sites.ReadWrite.All", "Sites.FullControl.All"];
/// Any one of these lets an app read a site resource (site-get.md).
const SITES_READ_ROLES: &[&str] = &["Sites.Read.All", "Sites.ReadWrite.All", "Sites.FullControl.All"];

const K_TOKEN_KEY: u64 = tag(b"token-key");
const K_TRACE: u64 = tag(b"trace");

/// Which API a token is for (its audience).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resource {
    Graph,
    Manage,
}

impl Resource {
    fn audience(self) -> &'static str {
        match self {
            Self::Graph => GRAPH_RESOURCE,
            Self::Manage => MANAGE_RESOURCE,
        }
    }

    /// Application roles an admin-consented, read-only filetrail app holds by default (README
    /// "Registering the app in Entra ID"; <https://learn.microsoft.com/en-us/graph/permissions-reference>).
    /// All are read permissions.
    fn default_roles(self) -> &'static [&'static str] {
        match self {
            Self::Graph => DEFAULT_GRAPH_ROLES,
            Self::Manage => DEFAULT_MANAGE_ROLES,
        }
    }

    /// Parses one v2 scope value (`<resource>/.default`, case-insensitive host).
    fn from_scope(scope: &str) -> Option<Self> {
        let lower = scope.to_ascii_lowercase();
        let base = lower.strip_suffix("/.default")?;
        let base = base.trim_end_matches('/');
        match base {
            GRAPH_RESOURCE | GRAPH_APP_ID => Some(Self::Graph),
            MANAGE_RESOURCE | MANAGE_APP_ID => Some(Self::Manage),
            _ => None,
        }
    }

    /// Parses a v1 `resource` value.
    fn from_resource(resource: &str) -> Option<Self> {
        match resource.to_ascii_lowercase().trim_end_matches('/') {
            GRAPH_RESOURCE | GRAPH_APP_ID => Some(Self::Graph),
            MANAGE_RESOURCE | MANAGE_APP_ID => Some(Self::Manage),
            _ => None,
        }
    }
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// No `Authorization: Bearer` header, or an empty token.
    Missing,
    /// Not a token this server could have issued.
    Malformed,
    /// Signature does not verify.
    BadSignature,
    /// Past its expiry, or issued before [`TokenAuthority::expire_all`].
    Expired,
    /// Issued for another resource.
    WrongAudience,
}

impl AuthFailure {
    /// Graph's 401 message for each case. The code is always `InvalidAuthenticationToken`.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Missing => "Access token is empty.",
            Self::Malformed => "CompactToken parsing failed with error code: 80049217",
            Self::BadSignature => "Access token validation failure.",
            Self::Expired => "Access token has expired or is not yet valid.",
            Self::WrongAudience => "Access token validation failure. Invalid audience.",
        }
    }
}

/// Issues and validates tokens for the one registered application.
#[derive(Debug)]
pub(crate) struct TokenAuthority {
    k0: u64,
    k1: u64,
    generation: AtomicU64,
    nonce: AtomicU64,
    lifetime: Duration,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) tenant_id: String,
    pub(crate) domain: String,
    service_principal_id: String,
    /// Application roles Graph tokens issued from now on carry; none means no `roles` claim.
    graph_roles: RwLock<Vec<String>>,
    /// Application roles Management API tokens issued from now on carry (`ActivityFeed.Read` is
    /// toggled by `crate::activity` too); none means no `roles` claim ("Controlling tokens without
    /// the roles claim" in
    /// <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow>).
    manage_roles: RwLock<Vec<String>>,
    /// Further app registrations of the tenant (a separate write-mode app, say), each with its
    /// own secret and Graph roles; they hold no Management API role.
    other_apps: RwLock<Vec<OtherApp>>,
}

/// An app registration besides the main one.
#[derive(Debug, Clone)]
struct OtherApp {
    client_id: String,
    client_secret: String,
    graph_roles: Vec<String>,
}

/// Which registered app a token request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientApp {
    Main,
    Other(String),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl TokenAuthority {
    pub(crate) fn new(
        seed: u64,
        lifetime: Duration,
        client_id: String,
        client_secret: String,
        tenant_id: String,
        domain: String,
    ) -> Self {
        let secret_hash = siphash24(seed, 0, client_secret.as_bytes());
        Self {
            k0: hash3(seed, K_TOKEN_KEY, secret_hash),
            k1: hash3(seed, K_TOKEN_KEY, !secret_hash),
            generation: AtomicU64::new(0),
            nonce: AtomicU64::new(0),
            lifetime,
            service_principal_id: guid(hash3(seed, K_TOKEN_KEY, 1), hash3(seed, K_TOKEN_KEY, 2)),
            client_id,
            client_secret,
            tenant_id,
            domain,
            graph_roles: RwLock::new(owned(Resource::Graph.default_roles())),
            manage_roles: RwLock::new(owned(Resource::Manage.default_roles())),
            other_apps: RwLock::new(Vec::new()),
        }
    }

    /// Registers (or replaces) another app of the tenant, consented to `graph_roles`.
    pub(crate) fn register_app(&self, client_id: &str, client_secret: &str, graph_roles: &[String]) {
        let mut apps = self
            .other_apps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        apps.retain(|a| !a.client_id.eq_ignore_ascii_case(client_id));
        apps.push(OtherApp {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            graph_roles: graph_roles.to_vec(),
        });
    }

    /// The secret of the app `client_id`, and which app it is; `None` for an unknown app.
    fn registration(&self, client_id: &str) -> Option<(ClientApp, String)> {
        if client_id.eq_ignore_ascii_case(&self.client_id) {
            return Some((ClientApp::Main, self.client_secret.clone()));
        }
        let apps = self
            .other_apps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        apps.iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
            .map(|a| (ClientApp::Other(a.client_id.clone()), a.client_secret.clone()))
    }

    fn roles_lock(&self, resource: Resource) -> &RwLock<Vec<String>> {
        match resource {
            Resource::Graph => &self.graph_roles,
            Resource::Manage => &self.manage_roles,
        }
    }

    /// The application roles tokens for `resource` issued from now on carry.
    pub(crate) fn roles(&self, resource: Resource) -> Vec<String> {
        self.roles_lock(resource)
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the application roles granted for `resource` (admin consent given or withdrawn);
    /// tokens issued earlier keep theirs, as Entra's do until they expire.
    pub(crate) fn set_roles(&self, resource: Resource, roles: &[String]) {
        let mut deduped: Vec<String> = Vec::with_capacity(roles.len());
        for r in roles {
            let r = r.trim();
            if !r.is_empty() && !deduped.iter().any(|d| d.eq_ignore_ascii_case(r)) {
                deduped.push(r.to_owned());
            }
        }
        *self
            .roles_lock(resource)
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = deduped;
    }

    /// Grants or revokes `ActivityFeed.Read` for Management API tokens issued from now on, keeping
    /// any other Management API role.
    pub(crate) fn set_activity_feed_read(&self, granted: bool) {
        let mut roles = self
            .manage_roles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        roles.retain(|r| !r.eq_ignore_ascii_case(ACTIVITY_FEED_READ));
        if granted {
            roles.push(ACTIVITY_FEED_READ.to_owned());
        }
    }

    /// Access-token lifetime in whole seconds (at least 1), as sent in `expires_in`.
    pub(crate) fn lifetime_secs(&self) -> u64 {
        self.lifetime.as_secs().max(1)
    }

    /// Invalidates every token issued so far.
    pub(crate) fn expire_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn sign(&self, input: &[u8]) -> String {
        let mut sig = [0u8; 16];
        sig[..8].copy_from_slice(&siphash24(self.k0, self.k1, input).to_le_bytes());
        sig[8..].copy_from_slice(&siphash24(self.k1, self.k0, input).to_le_bytes());
        URL_SAFE_NO_PAD.encode(sig)
    }

    /// Issues a token of the main app for `resource`; returns it with its absolute expiry (Unix
    /// seconds).
    #[cfg(test)]
    pub(crate) fn issue(&self, resource: Resource) -> (String, u64) {
        self.issue_to(&ClientApp::Main, resource)
    }

    /// Issues a token of `app` for `resource`, carrying that app's id and roles.
    pub(crate) fn issue_to(&self, app: &ClientApp, resource: Resource) -> (String, u64) {
        let (appid, roles, principal) = match app {
            ClientApp::Main => (
                self.client_id.clone(),
                self.roles(resource),
                self.service_principal_id.clone(),
            ),
            ClientApp::Other(id) => {
                let apps = self
                    .other_apps
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let roles = match resource {
                    Resource::Graph => apps
                        .iter()
                        .find(|a| &a.client_id == id)
                        .map(|a| a.graph_roles.clone())
                        .unwrap_or_default(),
                    Resource::Manage => Vec::new(),
                };
                let h = siphash24(self.k0, self.k1, id.as_bytes());
                (id.clone(), roles, guid(h, !h))
            }
        };
        let now = now_ms();
        let exp_ms = now + self.lifetime.as_millis() as u64;
        let iat = now / 1000;
        let header = json!({"typ": "JWT", "alg": "SIM-SIPHASH", "kid": "m365-sim"});
        let mut claims = json!({
            "aud": resource.audience(),
            "iss": format!("https://sts.windows.net/{}/", self.tenant_id),
            "iat": iat,
            "nbf": iat,
            "exp": exp_ms.div_ceil(1000),
            "app_displayname": "filetrail",
            "appid": appid,
            "appidacr": "1",
            "idp": format!("https://sts.windows.net/{}/", self.tenant_id),
            "idtyp": "app",
            "oid": principal,
            "roles": roles,
            "sub": principal,
            "tid": self.tenant_id,
            "uti": URL_SAFE_NO_PAD.encode(self.nonce.fetch_add(1, Ordering::Relaxed).to_le_bytes()),
            "ver": "1.0",
            "sim_gen": self.generation.load(Ordering::SeqCst),
            "sim_exp_ms": exp_ms,
        });
        // With no role granted Entra issues the token without a `roles` claim ("Controlling tokens
        // without the roles claim" in
        // https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
        if claims["roles"].as_array().is_some_and(Vec::is_empty)
            && let Some(map) = claims.as_object_mut()
        {
            map.remove("roles");
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.sign(input.as_bytes());
        (format!("{input}.{sig}"), exp_ms.div_ceil(1000))
    }

    /// Validates the `Authorization` header of a request for `resource`.
    #[cfg(test)]
    pub(crate) fn check(&self, headers: &HeaderMap, resource: Resource) -> Result<(), AuthFailure> {
        self.claims(headers, resource).map(|_| ())
    }

    /// Validates the `Authorization` header of a request for `resource` and returns the token's
    /// claims (`tid`, `roles`, …).
    pub(crate) fn claims(&self, headers: &HeaderMap, resource: Resource) -> Result<Value, AuthFailure> {
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ if value.is_empty() => return Err(AuthFailure::Missing),
            _ => return Err(AuthFailure::Malformed),
        };
        if token.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let (input, sig) = token.rsplit_once('.').ok_or(AuthFailure::Malformed)?;
        let (_, claims) = input.split_once('.').ok_or(AuthFailure::Malformed)?;
        if self.sign(input.as_bytes()) != sig {
            return Err(AuthFailure::BadSignature);
        }
        let claims: Value = URL_SAFE_NO_PAD
            .decode(claims)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(AuthFailure::Malformed)?;
        let generation = claims["sim_gen"].as_u64().ok_or(AuthFailure::Malformed)?;
        let exp_ms = claims["sim_exp_ms"].as_u64().ok_or(AuthFailure::Malformed)?;
        if generation != self.generation.load(Ordering::SeqCst) || exp_ms <= now_ms() {
            return Err(AuthFailure::Expired);
        }
        if claims["aud"].as_str() != Some(resource.audience()) {
            return Err(AuthFailure::WrongAudience);
        }
        Ok(claims)
    }

    fn tenant_matches(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id) || tenant.eq_ignore_ascii_case(&self.domain)
    }
}

fn owned(roles: &[&str]) -> Vec<String> {
    roles.iter().map(|r| (*r).to_owned()).collect()
}

/// The `roles` claim of validated token claims; `None` when the token carries none.
pub(crate) fn token_roles(claims: &Value) -> Option<Vec<String>> {
    claims["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// What a Graph route asks of the caller's application roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requirement {
    /// Directory reads of users: [`USER_READ_ROLES`].
    ReadUsers,
    /// Directory reads of groups and members: [`GROUP_READ_ROLES`].
    ReadGroups,
    /// Site reads: [`SITES_READ_ROLES`].
    ReadSites,
    /// Drive and driveItem reads: [`FILES_READ_ROLES`].
    ReadFiles,
    /// Drive and driveItem changes (any method but GET/HEAD): [`FILES_WRITE_ROLES`].
    WriteFiles,
}

impl Requirement {
    /// What `method` on `route` needs; `None` for routes that need no role (`$batch`, which
    /// checks its inner requests one by one, and routes answered with 400 anyway).
    pub(crate) fn of(method: &Method, route: &Route) -> Option<Self> {
        let read = *method == Method::GET || *method == Method::HEAD;
        match route {
            Route::Users | Route::User(_) => Some(Self::ReadUsers),
            Route::Groups | Route::Group(_) | Route::GroupMembers { .. } => Some(Self::ReadGroups),
            Route::Site(_) => Some(Self::ReadSites),
            Route::SiteDrives(_) | Route::Drive(..) if read => Some(Self::ReadFiles),
            Route::SiteDrives(_) | Route::Drive(..) => Some(Self::WriteFiles),
            _ => None,
        }
    }

    /// The roles any one of which satisfies this requirement.
    pub(crate) fn any_of(self) -> &'static [&'static str] {
        match self {
            Self::ReadUsers => USER_READ_ROLES,
            Self::ReadGroups => GROUP_READ_ROLES,
            Self::ReadSites => SITES_READ_ROLES,
            Self::ReadFiles => FILES_READ_ROLES,
            Self::WriteFiles => FILES_WRITE_ROLES,
        }
    }

    fn is_directory(self) -> bool {
        matches!(self, Self::ReadUsers | Self::ReadGroups)
    }
}

/// Graph's 403 when the token's application roles do not cover `method` on `route`, or `None`
/// when they do. Directory routes answer like Entra's directory service
/// (`Authorization_RequestDenied`, "Insufficient privileges to complete the operation."); drive
/// routes like SharePoint (`accessDenied`; "Either scp or roles claim need to be present in the
/// token." when the token carries no role at all). Counted in `Stats::forbidden`.
pub(crate) fn authorize(ctx: &Ctx<'_>, method: &Method, route: &Route) -> Option<GraphResponse> {
    let need = Requirement::of(method, route)?;
    let held = ctx.roles.as_deref().unwrap_or_default();
    if need
        .any_of()
        .iter()
        .any(|r| held.iter().any(|h| h.eq_ignore_ascii_case(r)))
    {
        return None;
    }
    ctx.state.counters.count_forbidden(method, route.kind(), ctx.in_batch);
    let resp = if need.is_directory() {
        ctx.error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        )
    } else if ctx.roles.is_none() {
        ctx.error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "Either scp or roles claim need to be present in the token.",
        )
    } else {
        ctx.error(
            StatusCode::FORBIDDEN,
            "accessDenied",
            "Access denied. You do not have permission to perform this action or access this resource.",
        )
    };
    Some(resp)
}

/// An Entra error (`AADSTS…`), rendered in the documented shape (the error response under "Get a
/// token" in <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>;
/// a copy is `crates/m365/tests/fixtures/aad-token-error-invalid-scope.json`).
struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(status: StatusCode, error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    fn render(self, state: &SimState, correlation: Option<&str>) -> Response {
        let n = state.next_request_number();
        let seed = state.tenant.seed();
        let trace_id = guid(hash3(seed, K_TRACE, n), hash3(seed, K_TRACE, !n));
        let correlation_id = correlation
            .map(str::to_owned)
            .unwrap_or_else(|| guid(hash3(seed, K_TRACE, n ^ 0x5555), hash3(seed, K_TRACE, n ^ 0xAAAA)));
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let body = json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        token_response(self.status, &body, Some(&trace_id))
    }
}

fn token_response(status: StatusCode, body: &Value, trace_id: Option<&str>) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store, no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(id) = trace_id.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert("x-ms-request-id", id);
    }
    resp
}

/// The parsed token request: form fields, with client credentials possibly from Basic auth.
struct TokenRequest {
    fields: Vec<(String, String)>,
}

impl TokenRequest {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        let mut fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        // RFC 6749 §2.3.1: client_id:client_secret, each form-urlencoded, in HTTP Basic.
        let basic = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((id, secret)) = basic.as_deref().and_then(|s| s.split_once(':')) {
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("v={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            if !fields.iter().any(|(k, _)| k == "client_id") {
                fields.push(("client_id".into(), decode(id)));
            }
            if !fields.iter().any(|(k, _)| k == "client_secret") {
                fields.push(("client_secret".into(), decode(secret)));
            }
        }
        Self { fields }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }
}

fn missing(param: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        900_144,
        format!("The request body must contain the following parameter: '{param}'."),
    )
}

/// The tenant in the URL must be the simulated tenant's id or initial domain (AADSTS90002).
fn check_tenant(auth: &TokenAuthority, tenant: &str) -> Result<(), EntraError> {
    if !auth.tenant_matches(tenant) {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90_002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    Ok(())
}

/// Checks tenant, grant type and client credentials — common to v1 and v2 — and says which app
/// authenticated.
fn authenticate_client(auth: &TokenAuthority, tenant: &str, req: &TokenRequest) -> Result<ClientApp, EntraError> {
    check_tenant(auth, tenant)?;
    match req.get("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70_003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let client_id = req.get("client_id").ok_or_else(|| missing("client_id"))?;
    let Some((app, app_secret)) = auth.registration(client_id) else {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700_016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
                auth.domain
            ),
        ));
    };
    match (req.get("client_secret"), req.get("client_assertion")) {
        (None, None) => Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )),
        (None, Some(_)) => Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700_027,
            "Client assertion failed signature validation. (m365-sim registers a client secret only.)",
        )),
        (Some(secret), _) if secret != app_secret => Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7_000_215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        )),
        (Some(_), _) => Ok(app),
    }
}

/// Resolves the v2 `scope` parameter to exactly one resource.
fn scope_resource(req: &TokenRequest) -> Result<Resource, EntraError> {
    let Some(scope) = req.get("scope") else {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70_011,
            "The provided request must include a 'scope' input parameter.",
        ));
    };
    let mut resource = None;
    for s in scope.split_whitespace() {
        let Some(r) = Resource::from_scope(s) else {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70_011,
                format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
            ));
        };
        match resource {
            Some(prev) if prev != r => {
                // One resource per token request ("Get a token" in
                // https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow).
                return Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    700_022,
                    format!(
                        "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
                    ),
                ));
            }
            _ => resource = Some(r),
        }
    }
    resource.ok_or_else(|| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70_011,
            "The provided request must include a 'scope' input parameter.",
        )
    })
}

fn correlation(headers: &HeaderMap) -> Option<String> {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /{tenant}/oauth2/v2.0/token` — the v2 client-credentials grant
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
pub(crate) async fn token_v2(
    State(state): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count_http(Kind::Token);
    let req = TokenRequest::parse(&headers, &body);
    let corr = correlation(&headers);
    if let Err(e) = check_tenant(&state.auth, &tenant) {
        return e.render(&state, corr.as_deref());
    }
    if req.get("resource").is_some() {
        // The v2 endpoint rejects the legacy parameter (AADSTS901002,
        // https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes).
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            901_002,
            "The 'resource' request parameter is not supported.",
        )
        .render(&state, corr.as_deref());
    }
    let granted = authenticate_client(&state.auth, &tenant, &req).and_then(|app| Ok((app, scope_resource(&req)?)));
    match granted {
        Err(e) => e.render(&state, corr.as_deref()),
        Ok((app, resource)) => {
            let (token, _) = state.auth.issue_to(&app, resource);
            let lifetime = state.auth.lifetime_secs();
            let body = json!({
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            });
            token_response(StatusCode::OK, &body, None)
        }
    }
}

/// `POST /{tenant}/oauth2/token` — the v1 endpoint the Management API docs still show, with
/// `resource=` and numbers sent as JSON strings (the token response sample of
/// <https://learn.microsoft.com/office/office-365-management-api/get-started-with-office-365-management-apis>).
pub(crate) async fn token_v1(
    State(state): State<Arc<SimState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count_http(Kind::Token);
    let req = TokenRequest::parse(&headers, &body);
    let corr = correlation(&headers);
    let app = match authenticate_client(&state.auth, &tenant, &req) {
        Ok(app) => app,
        Err(e) => return e.render(&state, corr.as_deref()),
    };
    let Some(resource_param) = req.get("resource") else {
        return missing("resource").render(&state, corr.as_deref());
    };
    let Some(resource) = Resource::from_resource(resource_param) else {
        return EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500_011,
            format!(
                "The resource principal named {resource_param} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
                state.auth.domain
            ),
        )
        .render(&state, corr.as_deref());
    };
    let (token, expires_on) = state.auth.issue_to(&app, resource);
    let lifetime = state.auth.lifetime_secs();
    let not_before = expires_on.saturating_sub(lifetime);
    let body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime.to_string(),
        "ext_expires_in": lifetime.to_string(),
        "expires_on": expires_on.to_string(),
        "not_before": not_before.to_string(),
        "resource": resource.audience(),
        "access_token": token,
    });
    token_response(StatusCode::OK, &body, None)
}

// ---------------------------------------------------------------------------------------------
// Controls: which application roles the app holds (admin consent given or withdrawn).

/// Sets the granted roles of `resource` and keeps the audit log's `activity_feed_read_granted`
/// setting in step with the Management API roles.
fn grant(state: &SimState, resource: Resource, roles: &[String]) {
    state.auth.set_roles(resource, roles);
    if resource == Resource::Manage {
        let granted = roles.iter().any(|r| r.eq_ignore_ascii_case(ACTIVITY_FEED_READ));
        let mut cfg = state.activity.config();
        if cfg.activity_feed_read_granted != granted {
            cfg.activity_feed_read_granted = granted;
            let _ = state.activity.set_config(cfg);
        }
    }
}

fn to_owned_roles(roles: &[&str]) -> Vec<String> {
    roles.iter().map(|r| (*r).to_owned()).collect()
}

/// The roles control shared by [`crate::SimControl`] and [`crate::SimHandle`].
macro_rules! roles_control {
    ($t:ty) => {
        impl $t {
            /// Sets the Microsoft Graph application roles the app holds, as an admin granting or
            /// withdrawing consent would (default: [`DEFAULT_GRAPH_ROLES`]). Tokens issued from now
            /// on carry them in their `roles` claim (none: no claim at all); tokens issued earlier
            /// keep theirs until they expire (see `expire_tokens`). Graph refuses with 403 what
            /// the token's roles do not cover: users without `User.Read.All` or
            /// `Directory.Read.All` (or their write forms), groups and members without
            /// `GroupMember.Read.All`, `Group.Read.All` or `Directory.Read.All`
            /// (`Authorization_RequestDenied`); drives and items without `Files.Read.All`,
            /// `Files.ReadWrite.All` or a `Sites.*.All` role, and any non-GET drive request
            /// without `Files.ReadWrite.All`, `Sites.ReadWrite.All` or `Sites.FullControl.All`
            /// (`accessDenied`). Inside `$batch` the inner responses carry the 403.
            pub fn set_graph_roles(&self, roles: &[&str]) {
                grant(&self.state, Resource::Graph, &to_owned_roles(roles));
            }

            /// Sets the Office 365 Management APIs application roles the app holds (default:
            /// [`DEFAULT_MANAGE_ROLES`], `ActivityFeed.Read`). Without `ActivityFeed.Read` every
            /// Management Activity API call is refused with `AF10001`. Same token rules as
            /// [`Self::set_graph_roles`]; `AuditControl::set_activity_feed_read_granted` toggles the
            /// one role and keeps the others.
            pub fn set_manage_roles(&self, roles: &[&str]) {
                grant(&self.state, Resource::Manage, &to_owned_roles(roles));
            }

            /// The Microsoft Graph application roles granted now (carried by new tokens).
            #[must_use]
            pub fn graph_roles(&self) -> Vec<String> {
                self.state.auth.roles(Resource::Graph)
            }

            /// The Office 365 Management APIs application roles granted now.
            #[must_use]
            pub fn manage_roles(&self) -> Vec<String> {
                self.state.auth.roles(Resource::Manage)
            }

            /// Registers another app in the tenant (or replaces one of that id), consented to
            /// `graph_roles` and no Management API role: a separate write-mode app holding
            /// `Files.ReadWrite.All`, say. Its tokens carry its own `appid` and roles.
            pub fn register_app(&self, client_id: &str, client_secret: &str, graph_roles: &[&str]) {
                self.state
                    .auth
                    .register_app(client_id, client_secret, &to_owned_roles(graph_roles));
            }

            /// Grants the defaults again: [`DEFAULT_GRAPH_ROLES`] and [`DEFAULT_MANAGE_ROLES`].
            pub fn reset_roles(&self) {
                self.set_graph_roles(DEFAULT_GRAPH_ROLES);
                self.set_manage_roles(DEFAULT_MANAGE_ROLES);
            }
        }
    };
}

roles_control!(crate::SimControl);
roles_control!(crate::SimHandle);

fn roles_body(state: &SimState) -> Response {
    axum::Json(json!({
        "graph": state.auth.roles(Resource::Graph),
        "manage": state.auth.roles(Resource::Manage),
    }))
    .into_response()
}

/// `GET /_sim/auth/roles`: `{"graph": [...], "manage": [...]}`, the application roles granted now.
pub(crate) async fn sim_roles_get(State(state): State<Arc<SimState>>) -> Response {
    roles_body(&state)
}

/// `POST /_sim/auth/roles` with `{"graph": [...], "manage": [...]}` (either key may be left out to
/// keep that resource's roles; `"default"` instead of a list restores the default): sets the
/// application roles tokens issued from now on carry, and answers like `GET`. 400 with the reason
/// for any other body.
pub(crate) async fn sim_roles_set(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    fn parse(v: &Value, defaults: &[&str]) -> Result<Option<Vec<String>>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) if s == "default" => Ok(Some(to_owned_roles(defaults))),
            Value::Array(a) => a
                .iter()
                .map(|r| {
                    r.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("not a role name: {r}"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(format!("expected a list of role names or \"default\", got {other}")),
        }
    }
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|doc| {
            if !doc.is_object() {
                return Err("expected {\"graph\": [...], \"manage\": [...]}".to_owned());
            }
            if let Some(k) = doc
                .as_object()
                .and_then(|o| o.keys().find(|k| *k != "graph" && *k != "manage"))
            {
                return Err(format!("unknown key '{k}': expected \"graph\" and/or \"manage\""));
            }
            Ok((
                parse(&doc["graph"], DEFAULT_GRAPH_ROLES)?,
                parse(&doc["manage"], DEFAULT_MANAGE_ROLES)?,
            ))
        });
    match parsed {
        Ok((graph, manage)) => {
            if let Some(g) = graph {
                grant(&state, Resource::Graph, &g);
            }
            if let Some(m) = manage {
                grant(&state, Resource::Manage, &m);
            }
            roles_body(&state)
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": {"code": "BadRequest", "message": e}}).to_string(),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority(lifetime: Duration) -> TokenAuthority {
        TokenAuthority::new(
            1,
            lifetime,
            "cid".into(),
            "secret".into(),
            "tid".into(),
            "contoso.onmicrosoft.com".into(),
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        h
    }

    #[test]
    fn issued_token_validates_for_its_resource_only() {
        let a = authority(Duration::from_secs(60));
        let (t, _) = a.issue(Resource::Graph);
        assert_eq!(a.check(&bearer(&t), Resource::Graph), Ok(()));
        assert_eq!(a.check(&bearer(&t), Resource::Manage), Err(AuthFailure::WrongAudience));
    }

    #[test]
    fn another_app_authenticates_with_its_own_secret_and_its_tokens_carry_its_id_and_roles() {
        let a = authority(Duration::from_secs(60));
        a.register_app("write-app", "write~secret", &["Files.ReadWrite.All".to_owned()]);
        let form = |id: &str, secret: &str| TokenRequest {
            fields: vec![
                ("grant_type".into(), "client_credentials".into()),
                ("client_id".into(), id.into()),
                ("client_secret".into(), secret.into()),
            ],
        };
        let Ok(app) = authenticate_client(&a, "tid", &form("write-app", "write~secret")) else {
            panic!("the app signs in with its secret");
        };
        assert_eq!(app, ClientApp::Other("write-app".into()));
        assert!(authenticate_client(&a, "tid", &form("write-app", &a.client_secret.clone())).is_err());
        assert!(authenticate_client(&a, "tid", &form("unknown-app", "write~secret")).is_err());

        let (t, _) = a.issue_to(&app, Resource::Graph);
        let claims = a.claims(&bearer(&t), Resource::Graph).expect("a valid token");
        assert_eq!(claims["appid"], "write-app");
        assert_eq!(token_roles(&claims), Some(vec!["Files.ReadWrite.All".to_owned()]));
        let (main, _) = a.issue(Resource::Graph);
        let main = a.claims(&bearer(&main), Resource::Graph).expect("a valid token");
        assert_ne!(main["oid"], claims["oid"], "each app has its own service principal");
        assert!(
            !token_roles(&main)
                .unwrap_or_default()
                .iter()
                .any(|r| r.contains("ReadWrite"))
        );
    }

    #[test]
    fn expire_all_invalidates_earlier_tokens_only() {
        let a = authority(Duration::from_secs(60));
        let (old, _) = a.issue(Resource::Graph);
        a.expire_all();
        let (new, _) = a.issue(Resource::Graph);
        assert_eq!(a.check(&bearer(&old), Resource::Graph), Err(AuthFailure::Expired));
        assert_eq!(a.check(&bearer(&new), Resource::Graph), Ok(()));
    }

    #[test]
    fn tampered_missing_and_garbage_tokens_are_refused() {
        let a = authority(Duration::from_secs(60));
        let (t, _) = a.issue(Resource::Graph);
        let mut tampered = t.clone();
        tampered.insert(10, 'x');
        assert_eq!(
            a.check(&bearer(&tampered), Resource::Graph),
            Err(AuthFailure::BadSignature)
        );
        assert_eq!(a.check(&HeaderMap::new(), Resource::Graph), Err(AuthFailure::Missing));
        assert_eq!(
            a.check(&bearer("garbage"), Resource::Graph),
            Err(AuthFailure::Malformed)
        );
    }

    #[test]
    fn scope_must_name_one_known_resource() {
        let req = |s: &str| TokenRequest {
            fields: vec![("scope".into(), s.into())],
        };
        assert!(matches!(
            scope_resource(&req("https://graph.microsoft.com/.default")),
            Ok(Resource::Graph)
        ));
        assert!(matches!(
            scope_resource(&req("https://manage.office.com/.default")),
            Ok(Resource::Manage)
        ));
        assert!(matches!(scope_resource(&req("https://foo.microsoft.com/.default")), Err(e) if e.code == 70_011));
        assert!(matches!(
            scope_resource(&req("https://graph.microsoft.com/.default https://manage.office.com/.default")),
            Err(e) if e.code == 700_022
        ));
    }
}
