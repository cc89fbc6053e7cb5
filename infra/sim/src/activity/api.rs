//! HTTP handlers of the Management Activity API and of its `/_sim/audit` controls.
//!
//! Sources: the API reference
//! (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>)
//! and the API FAQ
//! (<https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
//!
//! Status codes are not documented per `AF` code (the API reference lists codes and messages only);
//! the simulator's choices: 400 for parameter, window, subscription, content-id, expired-content
//! and audit-log-disabled errors (the last as real tenants report it), 401 for `AF10001` and
//! refused tokens, 403 for `AF20010` and (as the API FAQ shows) `AF429`, 404 for `AF20050`, 500 for
//! `AF50000`.

// Checks return the finished error answer as their `Err`: the handler sends it as is.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use chrono::{DateTime, DurationRound as _, NaiveDateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::config::ActivityConfig;
use super::store::{AuditLog, ContentType, DisabledBy, StoredRecord, Subscription};
use super::window::{self, WindowError};
use crate::auth::Resource;
use crate::prng::{Rng, guid, hash3, tag};
use crate::server::SimState;
use crate::stats::bump;

const K_AF_FAULT: u64 = tag(b"activity-fault");
const K_CORR: u64 = tag(b"activity-corr");

/// The role every Management Activity API call needs ("Activity API operations" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
const ACTIVITY_FEED_READ: &str = "ActivityFeed.Read";
/// What the API FAQ's AF429 sample shows when no `PublisherIdentifier` was sent.
const NO_PUBLISHER: &str = "00000000-0000-0000-0000-000000000000";

/// Query values in the `NextPageUri` we build.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b':');

/// Management Activity API counters (a snapshot lives in [`crate::Stats::activity`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivityStats {
    /// Every request under `/api/v1.0/{tenant}/activity/feed/` (and `/api/v1/`).
    pub requests: u64,
    /// Requests that carried a `PublisherIdentifier` query parameter.
    pub with_publisher_identifier: u64,
    /// Requests without one (they share the common quota upstream; our client must never do it).
    pub without_publisher_identifier: u64,
    /// `POST subscriptions/start`, any outcome.
    pub subscriptions_start: u64,
    /// Successful starts of a subscription that was already enabled (the API FAQ asks to wait 15
    /// minutes between repeated starts; a client should list first).
    pub subscriptions_start_repeated: u64,
    /// `POST subscriptions/stop`.
    pub subscriptions_stop: u64,
    /// `GET subscriptions/list`.
    pub subscriptions_list: u64,
    /// `GET subscriptions/content` pages (first pages and `nextPage` ones).
    pub content_list: u64,
    /// `GET subscriptions/content` requests carrying `nextPage`.
    pub content_list_next_page: u64,
    /// `GET {contentUri}` blob reads, any outcome.
    pub blob: u64,
    /// Blob reads answered 200.
    pub blob_served: u64,
    /// Other operations (`subscriptions/notifications`, `resources/dlpSensitiveTypes`, unknown).
    pub other: u64,
    /// Requests refused 401 for a missing, invalid, expired or non-Management token.
    pub unauthorized: u64,
    /// `AF10001` (token without `ActivityFeed.Read`).
    pub af10001: u64,
    /// `AF20010` (URL tenant ≠ token tenant).
    pub af20010: u64,
    /// `AF20022` (no subscription) answers.
    pub af20022: u64,
    /// `AF20023` (subscription disabled) answers.
    pub af20023: u64,
    /// `AF20051` (content expired) answers.
    pub af20051: u64,
    /// Other `AF2xxxx` client errors (parameters, window, content ids).
    pub client_errors: u64,
    /// Calls refused because the tenant's unified audit log is off.
    pub audit_log_disabled: u64,
    /// Injected `AF429` answered as HTTP 403 (the documented form).
    pub af429: u64,
    /// Injected `AF429` answered as HTTP 429 with `Retry-After`.
    pub af429_as_429: u64,
    /// Injected `AF50000` (HTTP 500).
    pub af50000: u64,
}

macro_rules! activity_counters {
    ($($field:ident),* $(,)?) => {
        /// The live counters behind [`ActivityStats`].
        #[derive(Debug, Default)]
        pub(crate) struct ActivityCounters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl ActivityCounters {
            pub(crate) fn snapshot(&self) -> ActivityStats {
                ActivityStats {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }

            pub(crate) fn reset(&self) {
                $(self.$field.store(0, Ordering::Relaxed);)*
            }
        }

        impl ActivityStats {
            /// The counts between two snapshots of the same simulator (`self - before`).
            #[must_use]
            pub fn since(&self, before: &Self) -> Self {
                Self {
                    $($field: self.$field.saturating_sub(before.$field),)*
                }
            }
        }
    };
}

activity_counters!(
    requests,
    with_publisher_identifier,
    without_publisher_identifier,
    subscriptions_start,
    subscriptions_start_repeated,
    subscriptions_stop,
    subscriptions_list,
    content_list,
    content_list_next_page,
    blob,
    blob_served,
    other,
    unauthorized,
    af10001,
    af20010,
    af20022,
    af20023,
    af20051,
    client_errors,
    audit_log_disabled,
    af429,
    af429_as_429,
    af50000,
);

pub(super) fn routes() -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/{version}/{tenant}/activity/feed/{*rest}", any(entry))
        .route("/_sim/audit/records", post(sim_publish))
        .route("/_sim/audit/blobs", get(sim_blobs))
        .route("/_sim/audit/log", post(sim_audit_log))
        .route("/_sim/audit/permission", post(sim_permission))
        .route("/_sim/audit/clock/advance", post(sim_advance_clock))
        .route("/_sim/audit/config", get(sim_config_get).post(sim_config_set))
        .route(
            "/_sim/audit/subscriptions/{content_type}/disable",
            post(sim_disable_subscription),
        )
}

/// The operation a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Start,
    Stop,
    List,
    Content,
    Notifications,
    Blob(String),
    DlpSensitiveTypes,
    Unknown,
}

impl Op {
    fn parse(method: &Method, rest: &str) -> Self {
        let rest = rest.trim_end_matches('/');
        let lower = rest.to_ascii_lowercase();
        match (method, lower.as_str()) {
            (&Method::POST, "subscriptions/start") => Self::Start,
            (&Method::POST, "subscriptions/stop") => Self::Stop,
            (&Method::GET, "subscriptions/list") => Self::List,
            (&Method::GET, "subscriptions/content") => Self::Content,
            (&Method::GET, "subscriptions/notifications") => Self::Notifications,
            (&Method::GET, "resources/dlpsensitivetypes") => Self::DlpSensitiveTypes,
            (&Method::GET, l) if l.starts_with("audit/") => Self::Blob(rest["audit/".len()..].to_owned()),
            _ => Self::Unknown,
        }
    }

    /// The method name the service puts in `AF429` messages (`Method=GetBlob` in the API FAQ).
    fn name(&self) -> &'static str {
        match self {
            Self::Start => "StartSubscription",
            Self::Stop => "StopSubscription",
            Self::List => "ListSubscriptions",
            Self::Content => "ListContent",
            Self::Notifications => "ListNotifications",
            Self::Blob(_) => "GetBlob",
            Self::DlpSensitiveTypes => "GetDlpSensitiveTypes",
            Self::Unknown => "Unknown",
        }
    }
}

/// A request's context for building answers.
struct Req<'a> {
    state: &'a SimState,
    log: &'a AuditLog,
    query: HashMap<String, String>,
    publisher: Option<String>,
    app_id: String,
}

impl Req<'_> {
    fn counters(&self) -> &ActivityCounters {
        &self.state.counters.activity
    }

    /// A query parameter, its name matched ignoring case.
    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// `{"error":{"code","message"}}` (the API reference, "Errors").
fn af_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}).to_string())
}

fn unauthorized() -> Response {
    let mut resp = af_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "Authorization has been denied for this request.",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
    );
    resp
}

/// Every Management Activity API request: count, authenticate, inject faults, dispatch.
async fn entry(
    State(state): State<Arc<SimState>>,
    Path((version, tenant, rest)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    bump(&state.counters.http_requests);
    let counters = &state.counters.activity;
    bump(&counters.requests);
    if version != "v1.0" && version != "v1" {
        bump(&counters.other);
        return af_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("m365-sim serves no '{}'", uri.path()),
        );
    }
    // The raw path: a content id's `$` must arrive as is
    // (https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api),
    // so no decoding here.
    let raw_rest = uri
        .path()
        .split_once("/activity/feed/")
        .map_or(rest.as_str(), |(_, r)| r)
        .to_owned();
    let op = Op::parse(&method, &raw_rest);
    bump(match op {
        Op::Start => &counters.subscriptions_start,
        Op::Stop => &counters.subscriptions_stop,
        Op::List => &counters.subscriptions_list,
        Op::Content => &counters.content_list,
        Op::Blob(_) => &counters.blob,
        Op::Notifications | Op::DlpSensitiveTypes | Op::Unknown => &counters.other,
    });
    let query: HashMap<String, String> = url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let publisher = query
        .get("publisheridentifier")
        .filter(|v| !v.trim().is_empty())
        .cloned();
    bump(if publisher.is_some() {
        &counters.with_publisher_identifier
    } else {
        &counters.without_publisher_identifier
    });
    if op == Op::Content && query.contains_key("nextpage") {
        bump(&counters.content_list_next_page);
    }

    let claims = match state.auth.claims(&headers, Resource::Manage) {
        Ok(claims) => claims,
        Err(failure) => {
            bump(&counters.unauthorized);
            tracing::debug!(?failure, "management API: token refused");
            return unauthorized();
        }
    };
    let token_tenant = claims["tid"].as_str().unwrap_or_default();
    if crate::prng::parse_guid(&tenant).is_none() {
        bump(&counters.client_errors);
        return af_error(
            StatusCode::BAD_REQUEST,
            "AF20013",
            &format!("The tenant ID passed in the URL ({tenant}) is not a valid GUID."),
        );
    }
    if !tenant.eq_ignore_ascii_case(token_tenant) {
        bump(&counters.af20010);
        return af_error(
            StatusCode::FORBIDDEN,
            "AF20010",
            &format!(
                "The tenant ID passed in the URL ({tenant}) does not match the tenant ID passed in the access token ({token_tenant})."
            ),
        );
    }
    let roles: Vec<&str> = claims["roles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !roles.contains(&ACTIVITY_FEED_READ) {
        bump(&counters.af10001);
        return af_error(
            StatusCode::UNAUTHORIZED,
            "AF10001",
            &format!(
                "The permission set ({}) sent in the request did not include the expected permission ActivityFeed.Read.",
                roles.join(",")
            ),
        );
    }

    let req = Req {
        state: &state,
        log: &state.activity,
        query,
        publisher,
        app_id: claims["appid"].as_str().unwrap_or_default().to_owned(),
    };
    if let Some(fault) = injected_fault(&req, &op) {
        return fault;
    }
    if !req.log.audit_log_enabled() {
        bump(&counters.audit_log_disabled);
        return audit_log_disabled(&req, &op);
    }
    match op {
        Op::Start => start(&req, &body),
        Op::Stop => stop(&req),
        Op::List => list(&req),
        Op::Content => content(&req),
        Op::Notifications => notifications(&req),
        Op::Blob(id) => blob(&req, &id),
        Op::DlpSensitiveTypes => json_response(
            StatusCode::OK,
            json!([{"id": "50842eb7-edc8-4019-85dd-5a5c1f2bb085", "name": "CreditCardNumber"}]).to_string(),
        ),
        Op::Unknown => af_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("m365-sim serves no '{method} {}'", uri.path()),
        ),
    }
}

/// Draws this request's fault: `AF429` (as 403 with the API FAQ's single-quoted body, or as 429
/// with `Retry-After`) or `AF50000`, seeded by a request counter.
fn injected_fault(req: &Req<'_>, op: &Op) -> Option<Response> {
    let cfg = req.log.config();
    if cfg.af429_rate <= 0.0 && cfg.af50000_rate <= 0.0 {
        return None;
    }
    let n = req.log.fault_seq.fetch_add(1, Ordering::Relaxed);
    let mut r = Rng::new(hash3(req.log.seed(), K_AF_FAULT, n));
    let (u, kind, v) = (r.unit(), r.unit(), r.unit());
    let publisher = req.publisher.as_deref().unwrap_or(NO_PUBLISHER);
    let message = format!("Too many requests. Method={}, PublisherId={publisher}", op.name());
    if u < cfg.af429_rate {
        if kind < cfg.af429_as_429_share {
            bump(&req.counters().af429_as_429);
            let (lo, hi) = cfg.retry_after_secs;
            let secs = lo + (hi - lo) * v;
            let mut resp = af_error(StatusCode::TOO_MANY_REQUESTS, "AF429", &message);
            if let Ok(value) = HeaderValue::from_str(&format!("{secs:.3}")) {
                resp.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return Some(resp);
        }
        bump(&req.counters().af429);
        // the API FAQ prints the body as a Python dict: single quotes, not JSON.
        let body = format!("{{'error':{{'code':'AF429','message':'{message}'}}}}");
        return Some(json_response(StatusCode::FORBIDDEN, body));
    }
    if u < cfg.af429_rate + cfg.af50000_rate {
        bump(&req.counters().af50000);
        return Some(af_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "AF50000",
            "An internal error occurred. Retry the request.",
        ));
    }
    None
}

/// The answer of a tenant whose unified audit log is off: HTTP 400 with the operation, the
/// correlation and the `DataServiceException` split across `code` and `message`, as real tenants
/// get it (the API FAQ names the string; the shape is from public reports of `StartSubscription`).
fn audit_log_disabled(req: &Req<'_>, op: &Op) -> Response {
    let n = req.state.next_request_number();
    let seed = req.log.seed();
    let corr = guid(hash3(seed, K_CORR, n), hash3(seed, K_CORR, !n));
    let tenant = req.log.tenant_id();
    let content_type = req.param("contentType").unwrap_or_default();
    let publisher = req.publisher.as_deref().unwrap_or(NO_PUBLISHER);
    let app = &req.app_id;
    let code = format!(
        "{} [CorrId={corr}][TenantId={tenant},ContentType={content_type},ApplicationId={app},PublisherId={publisher}][AppId",
        op.name()
    );
    let message = format!(
        "{}] failed. Exception: Microsoft.Office.Compliance.Audit.DataServiceException: Tenant {tenant} does not exist.\r\n   at Microsoft.Office.Compliance.Audit.API.AzureManager.<GetSubscriptionTableClientForTenantAsync>d__52.MoveNext()\r\n--- End of stack trace from previous location where exception was thrown ---\r\n   at System.Runtime.CompilerServices.TaskAwaiter.HandleNonSuccessAndDebuggerNotification(Task task)",
        app.get(1..).unwrap_or_default()
    );
    af_error(StatusCode::BAD_REQUEST, &code, &message)
}

fn client_error(req: &Req<'_>, code: &str, message: &str) -> Response {
    bump(&req.counters().client_errors);
    af_error(StatusCode::BAD_REQUEST, code, message)
}

/// The `contentType` parameter: AF20001 when missing, AF20020 when not a documented type.
fn content_type_param(req: &Req<'_>) -> Result<ContentType, Response> {
    match req.param("contentType") {
        None => Err(client_error(req, "AF20001", "Missing parameter: contentType.")),
        Some(v) if v.trim().is_empty() => Err(client_error(req, "AF20001", "Missing parameter: contentType.")),
        Some(v) => ContentType::parse(v)
            .ok_or_else(|| client_error(req, "AF20020", "The specified content type is not valid.")),
    }
}

/// Listing and reading content need an enabled subscription: AF20022 when none was started
/// (or it was stopped), AF20023 when an admin disabled it.
fn require_enabled(req: &Req<'_>, content_type: ContentType) -> Result<(), Response> {
    let subs = req
        .log
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match subs.get(&content_type) {
        Some(s) if s.started => match s.disabled {
            None => Ok(()),
            Some(by) => {
                bump(&req.counters().af20023);
                Err(af_error(
                    StatusCode::BAD_REQUEST,
                    "AF20023",
                    &format!("The subscription was disabled by {}.", by.phrase()),
                ))
            }
        },
        _ => {
            bump(&req.counters().af20022);
            Err(af_error(
                StatusCode::BAD_REQUEST,
                "AF20022",
                "No subscription found for the specified content type.",
            ))
        }
    }
}

fn subscription_json(content_type: ContentType, s: &Subscription) -> Value {
    let status = if s.started && s.disabled.is_none() {
        "enabled"
    } else {
        "disabled"
    };
    json!({
        "contentType": content_type.as_str(),
        "status": status,
        "webhook": s.webhook.clone().unwrap_or(Value::Null),
    })
}

/// `POST subscriptions/start`. Starting a subscription that exists updates its webhook (the API reference
/// "Start a subscription": the same operation updates, re-enables or removes a webhook) and is
/// accepted; the API FAQ asks clients to wait 15 minutes between repeated start requests, so repeats
/// are counted (`subscriptions_start_repeated`). A disabled or stopped subscription is enabled
/// again; content that became available while it was stopped stays unlisted.
fn start(req: &Req<'_>, body: &[u8]) -> Response {
    let content_type = match content_type_param(req) {
        Ok(ct) => ct,
        Err(resp) => return resp,
    };
    let webhook = match parse_webhook(req, body) {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let now = req.log.now();
    let mut subs = req
        .log
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sub = subs.entry(content_type).or_insert_with(|| Subscription {
        disabled: None,
        webhook: None,
        started: false,
        stopped: Vec::new(),
    });
    if sub.started && sub.disabled.is_none() {
        bump(&req.counters().subscriptions_start_repeated);
    }
    if let Some((_, open @ None)) = sub.stopped.last_mut() {
        // To the millisecond, as contentCreated is (a blob created at the restart is listed).
        *open = Some(to_millis(now));
    }
    sub.started = true;
    sub.disabled = None;
    if let Some(webhook) = webhook {
        sub.webhook = webhook;
    }
    tracing::debug!(%content_type, "management API: subscription started");
    json_response(StatusCode::OK, subscription_json(content_type, sub).to_string())
}

/// The optional `{"webhook": {address, authId, expiration}}` body: `Some(None)` removes the
/// webhook, `None` leaves it. The address must be HTTPS (AF20021); no validation request is sent.
#[allow(clippy::option_option)]
fn parse_webhook(req: &Req<'_>, body: &[u8]) -> Result<Option<Option<Value>>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return Err(client_error(
            req,
            "AF20002",
            "Invalid parameter type: webhook. Expected type: json",
        ));
    };
    let Some(webhook) = parsed.get("webhook") else {
        return Ok(None);
    };
    if webhook.is_null() {
        return Ok(Some(None));
    }
    let address = webhook.get("address").and_then(Value::as_str).unwrap_or_default();
    if !address.to_ascii_lowercase().starts_with("https://") {
        return Err(client_error(
            req,
            "AF20021",
            &format!("The webhook endpoint {{{address}) could not be validated. The address must begin with HTTPS."),
        ));
    }
    let expiration = match webhook
        .get("expiration")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        None => Value::Null,
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) if t.with_timezone(&Utc) < req.log.now() => {
                return Err(client_error(
                    req,
                    "AF20003",
                    &format!("Expiration {text} provided is set to past date and time."),
                ));
            }
            _ => Value::String(text.to_owned()),
        },
    };
    Ok(Some(Some(json!({
        "status": "enabled",
        "address": address,
        "authId": webhook.get("authId").cloned().unwrap_or(Value::Null),
        "expiration": expiration,
    }))))
}

/// `POST subscriptions/stop`: 200 with an empty body; AF20022 when nothing is started.
fn stop(req: &Req<'_>) -> Response {
    let content_type = match content_type_param(req) {
        Ok(ct) => ct,
        Err(resp) => return resp,
    };
    let now = req.log.now();
    let mut subs = req
        .log
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match subs.get_mut(&content_type) {
        Some(s) if s.started => {
            s.started = false;
            s.stopped.push((to_millis(now), None));
            StatusCode::OK.into_response()
        }
        _ => {
            bump(&req.counters().af20022);
            af_error(
                StatusCode::BAD_REQUEST,
                "AF20022",
                "No subscription found for the specified content type.",
            )
        }
    }
}

/// `GET subscriptions/list`: every subscription ever started, stopped ones as `disabled`.
fn list(req: &Req<'_>) -> Response {
    let subs = req
        .log
        .subscriptions
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let list: Vec<Value> = ContentType::ALL
        .iter()
        .filter_map(|ct| subs.get(ct).map(|s| subscription_json(*ct, s)))
        .collect();
    json_response(StatusCode::OK, Value::Array(list).to_string())
}

fn window_error(req: &Req<'_>, e: &WindowError) -> Response {
    match e {
        WindowError::InvalidType(name) => client_error(
            req,
            "AF20002",
            &format!("Invalid parameter type: {name}. Expected type: datetime"),
        ),
        WindowError::Invalid => client_error(
            req,
            "AF20030",
            "Start time and end time must both be specified (or both omitted) and must be less than or equal to 24 hours apart, with the start time no more than 7 days in the past.",
        ),
        WindowError::StartAfterEnd => client_error(
            req,
            "AF20055",
            "Start time and end time are invalid: the start time is after the end time.",
        ),
    }
}

/// A `nextPage` cursor: the `(contentCreated, creation order)` of the first blob of the page.
fn next_page_token(created: DateTime<Utc>, seq: u64) -> String {
    format!("{}R{seq:012}", created.format("%Y%m%d%H%M%S%3f"))
}

fn parse_next_page(token: &str) -> Option<(DateTime<Utc>, u64)> {
    let (time, seq) = token.split_once('R')?;
    let created = NaiveDateTime::parse_from_str(time, "%Y%m%d%H%M%S%3f").ok()?.and_utc();
    Some((created, seq.parse().ok()?))
}

/// An instant to the millisecond, the precision of the API's times.
fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::TimeDelta::milliseconds(1)).unwrap_or(t)
}

fn time_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// `GET subscriptions/content`: available blobs with `startTime <= contentCreated < endTime`, in
/// the order they became available, `content_page_size` per page, then a `NextPageUri` header
/// whose URL repeats the window as given (computed when omitted) and adds `nextPage`.
fn content(req: &Req<'_>) -> Response {
    let content_type = match content_type_param(req) {
        Ok(ct) => ct,
        Err(resp) => return resp,
    };
    if let Err(resp) = require_enabled(req, content_type) {
        return resp;
    }
    let now = req.log.now();
    let window = match window::resolve(req.param("startTime"), req.param("endTime"), now) {
        Ok(w) => w,
        Err(e) => return window_error(req, &e),
    };
    let cursor = match req.param("nextPage") {
        None => None,
        Some(token) => match parse_next_page(token) {
            Some(c) => Some(c),
            None => return client_error(req, "AF20031", &format!("Invalid nextPage Input: {token}.")),
        },
    };
    let cfg = req.log.config();
    let blobs = req.log.available(content_type, window.start, window.end, now);
    let mut rest = blobs
        .into_iter()
        .filter(|b| cursor.is_none_or(|c| (b.content_created, b.seq) >= c))
        .peekable();
    let tenant = req.log.tenant_id();
    let base = &req.state.base_url;
    let mut page = Vec::new();
    while page.len() < cfg.content_page_size {
        let Some(b) = rest.next() else { break };
        page.push(json!({
            "contentType": content_type.as_str(),
            "contentId": b.content_id,
            "contentUri": format!("{base}/api/v1.0/{tenant}/activity/feed/audit/{}", b.content_id),
            "contentCreated": time_text(b.content_created),
            "contentExpiration": time_text(b.content_expiration()),
        }));
    }
    let mut resp = json_response(StatusCode::OK, Value::Array(page).to_string());
    if let Some(next) = rest.peek() {
        // the API reference's sample: `/api/v1/` (not v1.0), start/end repeated, `nextPage` added.
        let link = format!(
            "{base}/api/v1/{tenant}/activity/feed/subscriptions/content?contentType={}&startTime={}&endTime={}&nextPage={}",
            content_type.as_str(),
            utf8_percent_encode(&window.start_text, QUERY_VALUE),
            utf8_percent_encode(&window.end_text, QUERY_VALUE),
            next_page_token(next.content_created, next.seq)
        );
        let name = axum::http::HeaderName::from_bytes(cfg.next_page_header.as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(&link)) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

/// `GET subscriptions/notifications`: no webhook notifications are ever sent, so an empty list
/// (after the same checks as `/content`).
fn notifications(req: &Req<'_>) -> Response {
    let content_type = match content_type_param(req) {
        Ok(ct) => ct,
        Err(resp) => return resp,
    };
    if let Err(resp) = require_enabled(req, content_type) {
        return resp;
    }
    json_response(StatusCode::OK, "[]".to_owned())
}

/// `GET {contentUri}`: the blob's JSON array. AF20052 for an id that is not shaped like ours (a
/// `$` sent as `%24` included), AF20050 for an unknown or not yet available one, AF20051 once
/// `contentExpiration` has passed.
fn blob(req: &Req<'_>, id: &str) -> Response {
    if !AuditLog::is_well_formed_id(id) {
        return client_error(req, "AF20052", &format!("Content ID {id} in the URL is invalid."));
    }
    let now = req.log.now();
    let Some(blob) = req.log.blob(id).filter(|b| b.content_created <= now) else {
        bump(&req.counters().client_errors);
        return af_error(
            StatusCode::NOT_FOUND,
            "AF20050",
            &format!("The specified content ({id}) does not exist."),
        );
    };
    if let Err(resp) = require_enabled(req, blob.content_type) {
        return resp;
    }
    if now >= blob.content_expiration() {
        bump(&req.counters().af20051);
        return af_error(
            StatusCode::BAD_REQUEST,
            "AF20051",
            &format!(
                "Content requested with the key {id} has already expired. Content older than 7 days cannot be retrieved."
            ),
        );
    }
    bump(&req.counters().blob_served);
    json_response(StatusCode::OK, blob.render())
}

// ---------------------------------------------------------------------------------------------
// `/_sim/audit` controls.

fn bad_request(message: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": "BadRequest", "message": message.into()}}).to_string(),
    )
        .into_response()
}

/// Body of `POST /_sim/audit/records`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PublishRequest {
    /// Content type; default `Audit.SharePoint`.
    #[serde(default)]
    content_type: Option<String>,
    /// JSON records.
    #[serde(default)]
    records: Vec<Value>,
    /// Raw record texts served verbatim (e.g. not JSON).
    #[serde(default)]
    raw: Vec<String>,
    /// When the blob becomes available (RFC 3339); default now + the publication delay.
    #[serde(default)]
    content_created: Option<DateTime<Utc>>,
    /// Publish each JSON record through the normal path (grouping, duplicates, late blobs)
    /// instead of as one blob.
    #[serde(default)]
    grouped: bool,
}

/// `POST /_sim/audit/records`: publishes records as one blob (default) or through the normal
/// publishing path (`"grouped": true`). Returns the blob (or one `Published` per record).
async fn sim_publish(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let req: PublishRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"contentType\", \"records\": [...], \"raw\": [...]}}: {e}"
            ));
        }
    };
    let content_type = match req.content_type.as_deref() {
        None => ContentType::SharePoint,
        Some(v) => match ContentType::parse(v) {
            Some(ct) => ct,
            None => return bad_request(format!("unknown content type '{v}'")),
        },
    };
    let log = &state.activity;
    let now = log.now();
    if req.grouped {
        if !req.raw.is_empty() || req.content_created.is_some() {
            return bad_request("\"grouped\" publishes JSON records only, at the audit clock's now");
        }
        let published: Vec<_> = req
            .records
            .into_iter()
            .map(|r| log.publish(content_type, r, now))
            .collect();
        return axum::Json(published).into_response();
    }
    let mut records: Vec<StoredRecord> = req
        .records
        .into_iter()
        .map(|value| StoredRecord::Json {
            value,
            reversed_keys: false,
        })
        .collect();
    records.extend(req.raw.into_iter().map(StoredRecord::Raw));
    if records.is_empty() {
        return bad_request("no records to publish");
    }
    axum::Json(log.publish_blob(content_type, records, now, req.content_created)).into_response()
}

/// `GET /_sim/audit/blobs`: every blob (ground truth), available or not.
async fn sim_blobs(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.activity.blobs()).into_response()
}

fn flag(body: &[u8], name: &str) -> Option<bool> {
    serde_json::from_slice::<Value>(body).ok()?.get(name)?.as_bool()
}

/// `POST /_sim/audit/log` with `{"enabled": bool}`: turns the unified audit log on or off.
async fn sim_audit_log(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match flag(&body, "enabled") {
        Some(enabled) => {
            state.activity.set_audit_log_enabled(enabled);
            StatusCode::NO_CONTENT.into_response()
        }
        None => bad_request("expected {\"enabled\": true|false}"),
    }
}

/// Grants or revokes `ActivityFeed.Read` for tokens issued from now on.
pub(super) fn set_permission(state: &SimState, granted: bool) {
    let mut cfg = state.activity.config();
    cfg.activity_feed_read_granted = granted;
    let _ = state.activity.set_config(cfg);
    state.auth.set_activity_feed_read(granted);
}

/// `POST /_sim/audit/permission` with `{"granted": bool}`.
async fn sim_permission(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match flag(&body, "granted") {
        Some(granted) => {
            set_permission(&state, granted);
            StatusCode::NO_CONTENT.into_response()
        }
        None => bad_request("expected {\"granted\": true|false}"),
    }
}

/// `POST /_sim/audit/clock/advance` with `{"seconds": n}`.
async fn sim_advance_clock(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let secs = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("seconds").and_then(Value::as_f64))
        .filter(|s| s.is_finite() && *s >= 0.0);
    match secs {
        Some(secs) => {
            state.activity.advance_clock(Duration::from_secs_f64(secs));
            axum::Json(json!({"now": time_text(state.activity.now())})).into_response()
        }
        None => bad_request("expected {\"seconds\": <non-negative number>}"),
    }
}

async fn sim_config_get(State(state): State<Arc<SimState>>) -> Response {
    axum::Json(state.activity.config()).into_response()
}

/// `POST /_sim/audit/config` with a (partial) [`ActivityConfig`]; missing fields take defaults.
async fn sim_config_set(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let parsed: Result<ActivityConfig, String> = serde_json::from_slice(&body).map_err(|e| e.to_string());
    match parsed.and_then(|cfg| state.activity.set_config(cfg.clone()).map(|()| cfg)) {
        Ok(cfg) => {
            state.auth.set_activity_feed_read(cfg.activity_feed_read_granted);
            axum::Json(cfg).into_response()
        }
        Err(e) => bad_request(e),
    }
}

/// `POST /_sim/audit/subscriptions/{contentType}/disable` (optional `{"by": "service_admin"}`):
/// 204, or 404 when that subscription is not started.
async fn sim_disable_subscription(
    State(state): State<Arc<SimState>>,
    Path(content_type): Path<String>,
    body: Bytes,
) -> Response {
    let Some(ct) = ContentType::parse(&content_type) else {
        return bad_request(format!("unknown content type '{content_type}'"));
    };
    let by = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("by").cloned())
        .and_then(|v| serde_json::from_value::<DisabledBy>(v).ok())
        .unwrap_or(DisabledBy::TenantAdmin);
    if state.activity.disable_subscription(ct, by) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn next_page_tokens_round_trip_and_garbage_is_refused() {
        let t = DateTime::parse_from_rfc3339("2026-11-30T05:06:07.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let token = next_page_token(t, 42);
        assert_eq!(parse_next_page(&token), Some((t, 42)));
        assert_eq!(parse_next_page("2015101900R022885001761"), None);
        assert_eq!(parse_next_page("nonsense"), None);
    }
}
