//! The crate's error type, and the parsing and classification of Microsoft error bodies.
//!
//! Microsoft errors are classified by the **code in the body** (walking the nested
//! `innerError`/`innererror` chain, case-insensitively), and only then by the HTTP status: `AF429`
//! arrives as a 403, `activityLimitReached` and `resyncRequired` carry their meaning in the code
//! (<https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/errors>,
//! <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).

use std::fmt;
use std::time::Duration;

use filetrail_core::{PortError, RetryClass};
use serde_json::Value;

/// Longest error text kept from a body that is not the documented JSON envelope.
const MAX_RAW_MESSAGE_CHARS: usize = 300;

/// What a Graph (or Management API) error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorKind {
    /// 429, `TooManyRequests`, `activityLimitReached`, `AF429` (even as 403), 509 bandwidth:
    /// wait for `Retry-After`, pausing every request of the client.
    Throttled,
    /// 503 / `serviceNotAvailable`: SharePoint's "server too busy", also with `Retry-After`.
    ServiceUnavailable,
    /// 500, 502, 504, `generalException`: transient, back off.
    ServerError,
    /// 401 / `InvalidAuthenticationToken`: get a new token and retry once.
    InvalidAuthenticationToken,
    /// 403 / `accessDenied` / `Authorization_RequestDenied`: a permission is missing (terminal).
    AccessDenied,
    /// 404 / `itemNotFound` / `ResourceNotFound`.
    NotFound,
    /// 410 / `resyncRequired` and its variants: the delta token is no longer valid.
    ResyncRequired,
    /// Management Activity API: the tenant's unified audit log is off (`…DataServiceException:
    /// Tenant <id> does not exist.`; unified auditing must be on:
    /// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
    /// Terminal until an admin turns it on.
    AuditLogDisabled,
    /// Management Activity API `AF20051`: the content blob is older than 7 days. Terminal.
    ContentExpired,
    /// Anything else (400 `invalidRequest`, 405…): retrying will not help.
    Other,
}

impl ServiceErrorKind {
    /// Whether the request may succeed when sent again (after a wait or a new token).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Throttled | Self::ServiceUnavailable | Self::ServerError | Self::InvalidAuthenticationToken
        )
    }

    /// Whether the wait applies to every request of the client (while throttled, pause all requests:
    /// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>).
    pub fn pauses_client(self) -> bool {
        matches!(self, Self::Throttled | Self::ServiceUnavailable)
    }
}

/// Error codes that mean "slow down", whatever the status (<https://learn.microsoft.com/en-us/graph/throttling>,
/// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/errors>,
/// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
const THROTTLE_CODES: &[&str] = &["TooManyRequests", "activityLimitReached", "AF429", "throttledRequest"];
/// Codes of a delta token the service no longer accepts (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta>,
/// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/errors>).
const RESYNC_CODES: &[&str] = &[
    "resyncRequired",
    "resyncChangesApplyDifferences",
    "resyncChangesUploadDifferences",
    "resyncApplyDifferences",
    "resyncUploadDifferences",
];
const INVALID_TOKEN_CODES: &[&str] = &["InvalidAuthenticationToken", "unauthenticated"];
const ACCESS_DENIED_CODES: &[&str] = &[
    "accessDenied",
    "Authorization_RequestDenied",
    "ErrorAccessDenied",
    MGMT_PERMISSION_MISSING,
];
/// Management Activity API: the token lacks `ActivityFeed.Read` ("Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const MGMT_PERMISSION_MISSING: &str = "AF10001";
/// Management Activity API: the content blob expired (older than 7 days, "Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const MGMT_CONTENT_EXPIRED: &str = "AF20051";
/// The code filetrail gives the Management Activity API's "audit log is off" answer, whose own
/// `code` is a truncated operation description (`StartSubscription [CorrId=…][AppId`).
pub const MGMT_AUDIT_LOG_DISABLED: &str = "AuditLogDisabled";
const NOT_FOUND_CODES: &[&str] = &["itemNotFound", "ResourceNotFound", "Request_ResourceNotFound"];
const UNAVAILABLE_CODES: &[&str] = &["serviceNotAvailable"];
const SERVER_ERROR_CODES: &[&str] = &["generalException", "AF50000"];

fn any_code_in(codes: &[String], known: &[&str]) -> bool {
    codes.iter().any(|c| known.iter().any(|k| k.eq_ignore_ascii_case(c)))
}

/// Classifies a service error by the codes in its body first, then by its status.
pub fn classify(status: u16, codes: &[String]) -> ServiceErrorKind {
    use ServiceErrorKind as K;
    if any_code_in(codes, THROTTLE_CODES) {
        return K::Throttled;
    }
    if any_code_in(codes, RESYNC_CODES) {
        return K::ResyncRequired;
    }
    if any_code_in(codes, &[MGMT_CONTENT_EXPIRED]) {
        return K::ContentExpired;
    }
    if any_code_in(codes, INVALID_TOKEN_CODES) {
        return K::InvalidAuthenticationToken;
    }
    if any_code_in(codes, ACCESS_DENIED_CODES) {
        return K::AccessDenied;
    }
    if any_code_in(codes, NOT_FOUND_CODES) {
        return K::NotFound;
    }
    if any_code_in(codes, UNAVAILABLE_CODES) {
        return K::ServiceUnavailable;
    }
    if any_code_in(codes, SERVER_ERROR_CODES) {
        return K::ServerError;
    }
    match status {
        429 | 509 => K::Throttled,
        503 => K::ServiceUnavailable,
        500 | 502 | 504 => K::ServerError,
        401 => K::InvalidAuthenticationToken,
        403 => K::AccessDenied,
        404 => K::NotFound,
        410 => K::ResyncRequired,
        _ => K::Other,
    }
}

/// The parts of a Graph / OneDrive / Management API error body filetrail uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// Every code in the chain, outermost first (empty codes skipped).
    pub codes: Vec<String>,
    pub message: Option<String>,
    pub request_id: Option<String>,
}

impl ErrorBody {
    /// Parses an error body leniently: the JSON envelope `{"error":{"code","message",
    /// "innerError":{…}}}` with any nesting and either spelling of `innerError`; a body with text
    /// around the JSON; the single-quoted pseudo-JSON of the Management API docs (`AF429`). A body
    /// that is none of these yields its (truncated) text as the message and any known code found
    /// in it. Never fails.
    pub fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        if let Some(value) = lenient_json(&text) {
            if let Some(parsed) = Self::from_value(&value) {
                return parsed;
            }
        }
        let trimmed = text.trim();
        let mut codes = Vec::new();
        for token in trimmed.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            let known = THROTTLE_CODES
                .iter()
                .chain(RESYNC_CODES)
                .chain(INVALID_TOKEN_CODES)
                .chain(ACCESS_DENIED_CODES);
            if known.clone().any(|k| k.eq_ignore_ascii_case(token)) && !codes.iter().any(|c: &String| c == token) {
                codes.push(token.to_owned());
            }
        }
        let message = (!trimmed.is_empty()).then(|| truncate(trimmed, MAX_RAW_MESSAGE_CHARS));
        Self {
            codes,
            message,
            request_id: None,
        }
    }

    fn from_value(value: &Value) -> Option<Self> {
        let error = get_ci(value, "error")?;
        if !error.is_object() {
            return None;
        }
        let mut out = Self::default();
        let mut node = Some(error);
        let mut depth = 0;
        while let Some(n) = node {
            if let Some(code) = get_ci(n, "code")
                .and_then(Value::as_str)
                .filter(|c| !c.trim().is_empty())
            {
                out.codes.push(code.trim().to_owned());
            }
            if out.message.is_none() {
                out.message = get_ci(n, "message").and_then(Value::as_str).map(str::to_owned);
            }
            if out.request_id.is_none() {
                out.request_id = get_ci(n, "request-id")
                    .or_else(|| get_ci(n, "requestId"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            depth += 1;
            node = if depth < 16 {
                get_ci(n, "innerError").filter(|v| v.is_object())
            } else {
                None
            };
        }
        Some(out)
    }

    /// The code to report: the outermost non-empty one.
    pub fn primary_code(&self) -> Option<&str> {
        self.codes.first().map(String::as_str)
    }
}

/// The Entra ID token endpoint's error body
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>,
/// <https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes>).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntraErrorBody {
    /// OAuth error (`invalid_client`, `invalid_scope`…).
    pub error: String,
    pub description: String,
    /// `AADSTS` numbers, from `error_codes` or else from the description.
    pub codes: Vec<u32>,
}

impl EntraErrorBody {
    /// Parses `{"error","error_description","error_codes"}` leniently; never fails.
    pub fn parse(body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let value = lenient_json(&text).unwrap_or(Value::Null);
        let error = get_ci(&value, "error")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let description = get_ci(&value, "error_description")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| truncate(text.trim(), MAX_RAW_MESSAGE_CHARS));
        let mut codes: Vec<u32> = get_ci(&value, "error_codes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect()
            })
            .unwrap_or_default();
        if codes.is_empty() {
            codes.extend(aadsts_in(&description));
        }
        Self {
            error,
            description,
            codes,
        }
    }

    /// The first line of the description (Entra appends trace and correlation ids).
    pub fn headline(&self) -> &str {
        self.description.lines().next().unwrap_or_default().trim()
    }
}

fn aadsts_in(text: &str) -> Option<u32> {
    let at = text.find("AADSTS")?;
    let digits: String = text[at + 6..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn lenient_json(text: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Some(v);
    }
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    let inner = text.get(start..=end)?;
    if let Ok(v) = serde_json::from_str::<Value>(inner) {
        return Some(v);
    }
    // The Management API docs print Python-style dicts: {'error':{'code':'AF429',…}}.
    serde_json::from_str::<Value>(&inner.replace('\'', "\"")).ok()
}

/// A case-insensitive object lookup (Graph spells `innerError` and OneDrive `innererror`).
fn get_ci<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    let map = value.as_object()?;
    map.get(key)
        .or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Why Entra ID refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// AADSTS7000215.
    InvalidSecret,
    /// AADSTS7000222.
    ExpiredSecret,
    /// AADSTS7000218.
    MissingSecret,
    /// AADSTS700016 (app unknown in the tenant, usually not consented) and 500011.
    AppNotFound,
    /// AADSTS90002.
    TenantNotFound,
    /// AADSTS70011 (and 700022, 901002).
    InvalidScope,
    /// AADSTS65001, 650056, 90094.
    ConsentMissing,
    /// AADSTS53003.
    ConditionalAccess,
    /// AADSTS90055, HTTP 429.
    Throttled,
    /// HTTP 5xx, `temporarily_unavailable`.
    Unavailable,
    /// Any other refusal.
    Other,
}

impl AuthFailure {
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Unavailable)
    }
}

/// Entra ID refused to issue a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub connection: String,
    pub client_id: String,
    pub status: u16,
    pub failure: AuthFailure,
    /// `AADSTS7000215`, or the OAuth error when Entra gave no number.
    pub code: String,
    /// The first line of Entra's description.
    pub description: String,
    /// What a person must do, for terminal failures.
    pub fix: Option<String>,
    pub retry_after: Option<Duration>,
}

impl AuthError {
    fn summary(&self) -> String {
        format!(
            "connection `{}`: Entra ID refused a token for app {} (HTTP {} {}): {}",
            self.connection, self.client_id, self.status, self.code, self.description
        )
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for AuthError {}

/// What [`AuthError`] needs to say which connection failed and how to fix it.
#[derive(Debug, Clone)]
pub(crate) struct AuthContext {
    pub connection: String,
    pub client_id: String,
    pub tenant_id: String,
    pub login: String,
    pub scope: String,
}

impl AuthContext {
    /// Turns a token endpoint refusal into an [`AuthError`] with the concrete fix.
    pub(crate) fn error(&self, status: u16, body: &EntraErrorBody, retry_after: Option<Duration>) -> AuthError {
        use AuthFailure as F;
        let number = body.codes.first().copied();
        let failure = match number {
            Some(7_000_215) => F::InvalidSecret,
            Some(7_000_222) => F::ExpiredSecret,
            Some(7_000_218) => F::MissingSecret,
            Some(700_016 | 500_011) => F::AppNotFound,
            Some(90_002) => F::TenantNotFound,
            Some(70_011 | 700_022 | 901_002) => F::InvalidScope,
            Some(65_001 | 650_056 | 90_094) => F::ConsentMissing,
            Some(53_003) => F::ConditionalAccess,
            Some(90_055) => F::Throttled,
            _ if status == 429 => F::Throttled,
            _ if status >= 500 || body.error == "temporarily_unavailable" => F::Unavailable,
            _ => F::Other,
        };
        let (connection, app, tenant) = (&self.connection, &self.client_id, &self.tenant_id);
        let new_secret = format!(
            "create a new client secret for app {app} in Entra ID > App registrations > Certificates & secrets \
             and store it with `filetrail connection set-secret {connection}`"
        );
        let consent = format!(
            "a Global Administrator of tenant {tenant} must grant admin consent to app {app}: open \
             {}/{tenant}/adminconsent?client_id={app} (or Entra ID > Enterprise applications > Permissions > \
             Grant admin consent)",
            self.login
        );
        let fix = match failure {
            F::InvalidSecret => Some(format!("the stored secret is wrong: {new_secret}")),
            F::ExpiredSecret => Some(format!("the client secret expired: {new_secret}")),
            F::MissingSecret => Some(format!(
                "store the client secret of app {app} with `filetrail connection set-secret {connection}`"
            )),
            F::AppNotFound => Some(format!(
                "check that client id {app} and tenant {tenant} are right for connection `{connection}`; if they \
                 are, the app is not installed in the tenant: {consent}"
            )),
            F::TenantNotFound => Some(format!(
                "tenant `{tenant}` does not exist in this cloud: check the tenant id (a GUID or a verified domain) \
                 and the cloud of connection `{connection}`"
            )),
            F::InvalidScope => Some(format!(
                "the scope `{}` is not valid here: check the cloud (worldwide, gcc, gcc-high, dod, china) of \
                 connection `{connection}`",
                self.scope
            )),
            F::ConsentMissing => Some(consent),
            F::ConditionalAccess => Some(format!(
                "a Conditional Access policy of tenant {tenant} blocks app {app}: exclude the app's service \
                 principal (workload identity) from that policy or allow the location filetrail runs from"
            )),
            F::Throttled | F::Unavailable => None,
            F::Other => Some(format!(
                "check client id {app}, tenant {tenant} and the secret of connection `{connection}`; Entra said: {}",
                body.headline()
            )),
        };
        let code = match number {
            Some(n) => format!("AADSTS{n}"),
            None if !body.error.is_empty() => body.error.clone(),
            None => format!("HTTP{status}"),
        };
        AuthError {
            connection: self.connection.clone(),
            client_id: self.client_id.clone(),
            status,
            failure,
            code,
            description: body.headline().to_owned(),
            fix,
            retry_after,
        }
    }
}

/// A Microsoft service answered with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub connection: String,
    /// What was asked, without the query string (`GET /drives/b!x/root/delta`).
    pub operation: String,
    pub status: u16,
    pub kind: ServiceErrorKind,
    /// The outermost non-empty code, or `HTTP<status>`.
    pub code: String,
    /// Every code of the nested chain.
    pub codes: Vec<String>,
    pub message: String,
    pub request_id: Option<String>,
    pub retry_after: Option<Duration>,
    /// The `Location` header (the restart link of a 410 on delta).
    pub location: Option<String>,
    /// What a person must do, for terminal errors.
    pub fix: Option<String>,
}

impl ServiceError {
    /// Builds the error from a response's parts; `permission` names the Graph permission the
    /// operation needs, for the fix of an access-denied error.
    pub(crate) fn new(
        connection: &str,
        operation: String,
        status: u16,
        body: &ErrorBody,
        retry_after: Option<Duration>,
        location: Option<String>,
        permission: &str,
    ) -> Self {
        let kind = classify(status, &body.codes);
        let code = body
            .primary_code()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP{status}"));
        let fix = match kind {
            ServiceErrorKind::AccessDenied => Some(format!(
                "the app of connection `{connection}` lacks the application permission {permission}: add it in \
                 Entra ID > App registrations > API permissions > Microsoft Graph > Application permissions, then \
                 Grant admin consent"
            )),
            ServiceErrorKind::NotFound => {
                Some("the user, drive or item no longer exists; the next discovery run updates the list".to_owned())
            }
            ServiceErrorKind::ResyncRequired => Some("restart the walk from the beginning and reconcile".to_owned()),
            ServiceErrorKind::Other if status < 500 => Some(format!(
                "Microsoft Graph rejected the request; report it with the request-id ({})",
                body.request_id.as_deref().unwrap_or("none")
            )),
            _ => None,
        };
        Self {
            connection: connection.to_owned(),
            operation,
            status,
            kind,
            code,
            codes: body.codes.clone(),
            message: body.message.clone().unwrap_or_default(),
            request_id: body.request_id.clone(),
            retry_after,
            location,
            fix,
        }
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "connection `{}`: {} failed with HTTP {} {}: {}",
            self.connection, self.operation, self.status, self.code, self.message
        );
        if let Some(id) = &self.request_id {
            s.push_str(&format!(" (request-id {id})"));
        }
        s
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

/// Classifies a Management Activity API error ("Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>)
/// and says what to do: [`classify`]
/// (so `AF429` is throttling whatever the status, `AF50000` a server error), plus the audit log
/// being off (recognised by its `DataServiceException … does not exist` text, wherever the
/// service puts it), `AF10001` (permission missing) and `AF20051` (expired content), each with
/// its own fix.
pub(crate) fn management_error(
    connection: &str,
    operation: String,
    status: u16,
    body: &ErrorBody,
    retry_after: Option<Duration>,
) -> ServiceError {
    let mut e = ServiceError::new(
        connection,
        operation,
        status,
        body,
        retry_after,
        None,
        "ActivityFeed.Read",
    );
    let text = format!(
        "{} {}",
        body.codes.join(" "),
        body.message.as_deref().unwrap_or_default()
    );
    if let Some(tenant) = audit_log_off_tenant(&text) {
        e.kind = ServiceErrorKind::AuditLogDisabled;
        e.code = MGMT_AUDIT_LOG_DISABLED.to_owned();
        e.message = format!(
            "unified audit logging is turned off for tenant {tenant}, so the Office 365 Management Activity API \
             has no audit log to serve (it answered \"Microsoft.Office.Compliance.Audit.DataServiceException: \
             Tenant {tenant} does not exist.\")"
        );
        e.fix = Some(format!(
            "an administrator of tenant {tenant} must turn on audit logging in Microsoft Purview (Audit > \"Start \
             recording user and admin activity\", or in Exchange Online PowerShell `Set-AdminAuditLogConfig \
             -UnifiedAuditLogIngestionEnabled $true`); it can take up to 60 minutes to take effect, after which \
             connection `{connection}` resumes by itself"
        ));
    } else if any_code_in(&body.codes, &[MGMT_PERMISSION_MISSING]) {
        e.fix = Some(format!(
            "the app of connection `{connection}` lacks the application permission ActivityFeed.Read of the Office \
             365 Management APIs: add it in Entra ID > App registrations > API permissions > Add a permission > \
             Office 365 Management APIs > Application permissions > ActivityFeed.Read, then Grant admin consent"
        ));
    } else if e.kind == ServiceErrorKind::ContentExpired {
        e.fix = Some(
            "the content blob is older than the 7 days the Management Activity API keeps it and is lost; poll \
             activity more often than every 7 days"
                .to_owned(),
        );
    }
    e
}

/// The tenant named in the "audit log is off" answer: `…DataServiceException: Tenant <id> does
/// not exist.` (an empty id when the text names none).
fn audit_log_off_tenant(text: &str) -> Option<String> {
    let at = text.find("DataServiceException")?;
    let rest = &text[at..];
    let start = rest.find("Tenant ")? + "Tenant ".len();
    let end = rest[start..].find(" does not exist")?;
    Some(rest[start..start + end].trim().to_owned())
}

/// How a request failed before a usable response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Connect,
    Timeout,
    /// The connection dropped (before or during the response).
    Dropped,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect failed",
            Self::Timeout => "timed out",
            Self::Dropped => "connection dropped",
        })
    }
}

/// Everything that can go wrong talking to Microsoft.
#[derive(Debug, Clone, thiserror::Error)]
pub enum M365Error {
    /// Entra ID refused a token.
    #[error(transparent)]
    Auth(Box<AuthError>),
    /// The service answered with an error.
    #[error(transparent)]
    Service(Box<ServiceError>),
    /// No usable response: connect failure, timeout, dropped connection.
    #[error("connection `{connection}`: {operation}: {kind}: {message}")]
    Transport {
        connection: String,
        operation: String,
        kind: TransportKind,
        message: String,
    },
    /// A 2xx response whose body is not what the API documents.
    #[error("connection `{connection}`: {operation} returned a body filetrail cannot read: {message}")]
    Decode {
        connection: String,
        operation: String,
        message: String,
    },
    /// The retry budget ran out; `last` is the last failure.
    #[error("{last} (gave up after {attempts} attempts and {waited:?} of waiting)")]
    RetriesExhausted {
        attempts: u32,
        waited: Duration,
        last: Box<M365Error>,
    },
    /// Bad configuration (cloud name, URL, a link pointing elsewhere).
    #[error("{message}; fix: {fix}")]
    Config { message: String, fix: String },
}

impl M365Error {
    /// What the caller should do: terminal (a person must act), retry after the service's delay,
    /// or back off.
    pub fn retry_class(&self) -> RetryClass {
        let after_or_backoff = |d: Option<Duration>| d.map(RetryClass::RetryAfter).unwrap_or(RetryClass::Backoff);
        match self {
            Self::Auth(e) if e.failure.is_retryable() => after_or_backoff(e.retry_after),
            Self::Auth(_) | Self::Config { .. } => RetryClass::Terminal,
            Self::Service(e) => match e.kind {
                ServiceErrorKind::Throttled | ServiceErrorKind::ServiceUnavailable => after_or_backoff(e.retry_after),
                ServiceErrorKind::ServerError | ServiceErrorKind::InvalidAuthenticationToken => RetryClass::Backoff,
                ServiceErrorKind::Other if e.status >= 500 => RetryClass::Backoff,
                _ => RetryClass::Terminal,
            },
            Self::Transport { .. } | Self::Decode { .. } => RetryClass::Backoff,
            Self::RetriesExhausted { last, .. } => last.retry_class(),
        }
    }

    /// The service's error code (`AADSTS7000215`, `TooManyRequests`, `resyncRequired`…), or a
    /// filetrail code for local failures.
    pub fn code(&self) -> String {
        match self {
            Self::Auth(e) => e.code.clone(),
            Self::Service(e) => e.code.clone(),
            Self::Transport {
                kind: TransportKind::Connect,
                ..
            } => "connect_failed".to_owned(),
            Self::Transport {
                kind: TransportKind::Timeout,
                ..
            } => "timeout".to_owned(),
            Self::Transport {
                kind: TransportKind::Dropped,
                ..
            } => "connection_dropped".to_owned(),
            Self::Decode { .. } => "unreadable_response".to_owned(),
            Self::RetriesExhausted { last, .. } => last.code(),
            Self::Config { .. } => "invalid_config".to_owned(),
        }
    }

    /// What a person must do, when retrying cannot help.
    pub fn fix(&self) -> Option<&str> {
        match self {
            Self::Auth(e) => e.fix.as_deref(),
            Self::Service(e) => e.fix.as_deref(),
            Self::Config { fix, .. } => Some(fix),
            Self::RetriesExhausted { last, .. } => last.fix(),
            Self::Transport { .. } | Self::Decode { .. } => None,
        }
    }

    /// The message without the fix.
    pub fn summary(&self) -> String {
        match self {
            Self::Auth(e) => e.summary(),
            Self::Service(e) => e.summary(),
            Self::Config { message, .. } => message.clone(),
            Self::RetriesExhausted { attempts, waited, last } => {
                format!(
                    "{} (gave up after {attempts} attempts and {waited:?} of waiting)",
                    last.summary()
                )
            }
            other => other.to_string(),
        }
    }

    /// The service error, if the service answered (looking through an exhausted retry budget).
    pub fn service(&self) -> Option<&ServiceError> {
        match self {
            Self::Service(e) => Some(e),
            Self::RetriesExhausted { last, .. } => last.service(),
            _ => None,
        }
    }

    /// The token refusal, if Entra refused (looking through an exhausted retry budget).
    pub fn auth(&self) -> Option<&AuthError> {
        match self {
            Self::Auth(e) => Some(e),
            Self::RetriesExhausted { last, .. } => last.auth(),
            _ => None,
        }
    }
}

impl From<AuthError> for M365Error {
    fn from(e: AuthError) -> Self {
        Self::Auth(Box::new(e))
    }
}

impl From<ServiceError> for M365Error {
    fn from(e: ServiceError) -> Self {
        Self::Service(Box::new(e))
    }
}

/// Whether an error code (as carried by a [`PortError`]) means the connection itself is refused
/// (its secret, its consent, its permissions), rather than one resource being gone or broken.
/// Work for a refused connection waits for an admin; work for one broken resource does not stop
/// the others.
pub fn is_connection_problem(code: &str) -> bool {
    let code = code.to_ascii_lowercase();
    code.starts_with("aadsts")
        || matches!(
            code.as_str(),
            "invalid_client"
                | "unauthorized_client"
                | "invalid_request"
                | "invalid_scope"
                | "invalid_grant"
                | "invalid_resource"
                | "interaction_required"
                | "accessdenied"
                | "authorization_requestdenied"
                | "invalidauthenticationtoken"
                | "unauthenticated"
                | "af10001"
                | "auditlogdisabled"
        )
}

impl From<M365Error> for PortError {
    fn from(e: M365Error) -> Self {
        let class = e.retry_class();
        let fix = e.fix().map(str::to_owned).or_else(|| {
            (class == RetryClass::Terminal).then(|| "see the error message; retrying will not help".to_owned())
        });
        PortError {
            class,
            code: e.code(),
            message: e.summary(),
            fix,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).expect("fixture file")
    }

    #[test]
    fn refused_credentials_and_permissions_are_connection_problems_missing_items_are_not() {
        for code in [
            "AADSTS7000215",
            "invalid_client",
            "accessDenied",
            "Authorization_RequestDenied",
        ] {
            assert!(is_connection_problem(code), "{code}");
        }
        for code in ["itemNotFound", "ResourceNotFound", "resyncRequired", "generalException"] {
            assert!(!is_connection_problem(code), "{code}");
        }
    }

    #[test]
    fn graph_429_sample_is_throttled_with_its_request_id() {
        let body = ErrorBody::parse(&sample("graph-error-429.json"));
        assert_eq!(body.codes, vec!["TooManyRequests", "429"]);
        assert_eq!(body.message.as_deref(), Some("Please retry again later."));
        assert_eq!(body.request_id.as_deref(), Some("94fb3b52-452a-4535-a601-69e0a90e3aa2"));
        assert_eq!(classify(429, &body.codes), ServiceErrorKind::Throttled);
    }

    #[test]
    fn onedrive_lowercase_innererror_chain_is_walked() {
        let body = ErrorBody::parse(&sample("onedrive-error-invalidrange.json"));
        assert_eq!(body.codes, vec!["invalidRange", "fragmentOverlap"]);
        assert_eq!(classify(416, &body.codes), ServiceErrorKind::Other);
    }

    #[test]
    fn nested_resync_code_is_found_case_insensitively_whatever_the_status() {
        let body = ErrorBody::parse(
            br#"{"error":{"code":"invalidRequest","InnerError":{"code":"RESYNCREQUIRED","innererror":{"code":"resyncChangesApplyDifferences"}}}}"#,
        );
        assert_eq!(body.codes.len(), 3);
        assert_eq!(classify(400, &body.codes), ServiceErrorKind::ResyncRequired);
    }

    #[test]
    fn af429_single_quoted_text_parses_and_is_throttling_despite_403() {
        let body = ErrorBody::parse(&sample("mgmt-error-af429.txt"));
        assert_eq!(body.primary_code(), Some("AF429"));
        assert!(body.message.unwrap().starts_with("Too many requests"));
        assert_eq!(classify(403, &body.codes), ServiceErrorKind::Throttled);
    }

    #[test]
    fn garbage_bodies_do_not_crash_and_fall_back_to_status() {
        for raw in [
            &b""[..],
            b"<html>502 Bad Gateway</html>",
            b"{'error':",
            b"\xff\xfe{",
            b"{\"error\":\"x\"}",
        ] {
            let body = ErrorBody::parse(raw);
            assert!(body.codes.is_empty(), "{raw:?}");
            assert_eq!(classify(502, &body.codes), ServiceErrorKind::ServerError);
        }
    }

    #[test]
    fn batch_sample_inner_bodies_classify_by_code_then_status() {
        let v: Value = serde_json::from_slice(&sample("graph-batch-response.json")).unwrap();
        let kinds: Vec<_> = v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["status"].as_u64() != Some(200))
            .map(|r| {
                let body = ErrorBody::parse(r["body"].to_string().as_bytes());
                let status = u16::try_from(r["status"].as_u64().unwrap()).unwrap();
                (r["id"].as_str().unwrap().to_owned(), classify(status, &body.codes))
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("2".to_owned(), ServiceErrorKind::AccessDenied),
                ("3".to_owned(), ServiceErrorKind::AccessDenied),
                ("4".to_owned(), ServiceErrorKind::Other),
            ]
        );
    }

    #[test]
    fn codes_beat_status_for_activity_limit_and_general_exception() {
        assert_eq!(
            classify(403, &["activityLimitReached".to_owned()]),
            ServiceErrorKind::Throttled
        );
        assert_eq!(
            classify(400, &["generalException".to_owned()]),
            ServiceErrorKind::ServerError
        );
        assert_eq!(
            classify(503, &["serviceNotAvailable".to_owned()]),
            ServiceErrorKind::ServiceUnavailable
        );
        assert_eq!(classify(509, &[]), ServiceErrorKind::Throttled);
        assert_eq!(
            classify(401, &["InvalidAuthenticationToken".to_owned()]),
            ServiceErrorKind::InvalidAuthenticationToken
        );
        assert_eq!(classify(404, &["itemNotFound".to_owned()]), ServiceErrorKind::NotFound);
    }

    fn ctx() -> AuthContext {
        AuthContext {
            connection: "contoso-cloud".to_owned(),
            client_id: "11111111-2222-3333-4444-555555555555".to_owned(),
            tenant_id: "contoso.onmicrosoft.com".to_owned(),
            login: "https://login.microsoftonline.com".to_owned(),
            scope: "https://graph.microsoft.com/.default".to_owned(),
        }
    }

    #[test]
    fn invalid_scope_sample_is_terminal_and_names_the_connection() {
        let body = EntraErrorBody::parse(&sample("aad-token-error-invalid-scope.json"));
        assert_eq!(body.error, "invalid_scope");
        assert_eq!(body.codes, vec![70011]);
        let err = M365Error::from(ctx().error(400, &body, None));
        assert_eq!(err.retry_class(), RetryClass::Terminal);
        assert_eq!(err.code(), "AADSTS70011");
        let text = err.to_string();
        assert!(text.contains("contoso-cloud"), "{text}");
        assert!(!text.contains("Trace ID"), "only the headline is kept: {text}");
    }

    #[test]
    fn invalid_secret_fix_says_where_to_create_and_how_to_store_it() {
        let body = EntraErrorBody::parse(
            br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#,
        );
        let err = M365Error::from(ctx().error(401, &body, None));
        let port = PortError::from(err);
        assert!(port.is_terminal());
        assert_eq!(port.code, "AADSTS7000215");
        let fix = port.fix.unwrap();
        assert!(fix.contains("Certificates & secrets"), "{fix}");
        assert!(fix.contains("filetrail connection set-secret contoso-cloud"), "{fix}");
        assert!(fix.contains("11111111-2222-3333-4444-555555555555"), "{fix}");
    }

    #[test]
    fn entra_codes_map_to_their_failures() {
        let cases = [
            (7_000_222, AuthFailure::ExpiredSecret),
            (7_000_218, AuthFailure::MissingSecret),
            (700_016, AuthFailure::AppNotFound),
            (90_002, AuthFailure::TenantNotFound),
            (65_001, AuthFailure::ConsentMissing),
            (650_056, AuthFailure::ConsentMissing),
            (90_094, AuthFailure::ConsentMissing),
            (53_003, AuthFailure::ConditionalAccess),
            (90_055, AuthFailure::Throttled),
        ];
        for (code, failure) in cases {
            let body = EntraErrorBody {
                error: "x".into(),
                description: format!("AADSTS{code}: d"),
                codes: vec![],
            };
            let body = EntraErrorBody {
                codes: aadsts_in(&body.description).into_iter().collect(),
                ..body
            };
            let e = ctx().error(400, &body, None);
            assert_eq!(e.failure, failure, "{code}");
            assert_eq!(e.fix.is_none(), failure.is_retryable(), "{code}");
        }
        let consent = ctx().error(
            400,
            &EntraErrorBody {
                codes: vec![65_001],
                ..Default::default()
            },
            None,
        );
        assert!(consent.fix.unwrap().contains("adminconsent?client_id=11111111"));
    }

    #[test]
    fn entra_5xx_and_throttling_are_retryable_with_the_given_delay() {
        let e = M365Error::from(ctx().error(503, &EntraErrorBody::parse(b"Service Unavailable"), None));
        assert_eq!(e.retry_class(), RetryClass::Backoff);
        let body = EntraErrorBody {
            codes: vec![90_055],
            ..Default::default()
        };
        let e = M365Error::from(ctx().error(400, &body, Some(Duration::from_secs(7))));
        assert_eq!(e.retry_class(), RetryClass::RetryAfter(Duration::from_secs(7)));
    }

    #[test]
    fn access_denied_names_the_missing_permission_and_admin_consent() {
        let body = ErrorBody::parse(
            br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges"}}"#,
        );
        let e = ServiceError::new(
            "contoso-cloud",
            "GET /users".into(),
            403,
            &body,
            None,
            None,
            "User.Read.All",
        );
        let port = PortError::from(M365Error::from(e));
        assert!(port.is_terminal());
        let fix = port.fix.unwrap();
        assert!(
            fix.contains("User.Read.All") && fix.contains("Grant admin consent"),
            "{fix}"
        );
    }

    #[test]
    fn exhausted_budget_keeps_the_last_cause_and_its_retry_after() {
        let body = ErrorBody::parse(&sample("graph-error-429.json"));
        let last = ServiceError::new(
            "c",
            "GET /users".into(),
            429,
            &body,
            Some(Duration::from_secs(3)),
            None,
            "-",
        );
        let e = M365Error::RetriesExhausted {
            attempts: 5,
            waited: Duration::from_secs(9),
            last: Box::new(last.into()),
        };
        assert_eq!(e.retry_class(), RetryClass::RetryAfter(Duration::from_secs(3)));
        assert_eq!(e.code(), "TooManyRequests");
        assert!(e.to_string().contains("5 attempts"));
        assert!(e.service().is_some());
    }
}
