//! `POST /$batch` — JSON batching (<https://learn.microsoft.com/en-us/graph/json-batching>).
//!
//! Up to 20 requests; ids unique case-insensitively; each request routed through [`dispatch`]
//! exactly like a top-level one (its own `headers`, e.g. `ConsistencyLevel`, apply to it alone)
//! and fault-injected on its own (inner 429 with `Retry-After` in its
//! own headers while the envelope stays 200). Responses come back in a deterministic but
//! *different* order than requested, as the docs warn they may.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Ctx, GraphResponse, Route, dispatch, request_kind};
use crate::faults::{self, Fault};
use crate::prng::{Rng, hash3, tag};
use crate::stats::bump;

/// Maximum requests in one batch: 20. Source:
/// <https://learn.microsoft.com/en-us/graph/json-batching#batch-size-limitations>.
pub(crate) const BATCH_MAX_REQUESTS: usize = 20;

const K_BATCH_ORDER: u64 = tag(b"batch-order");

fn invalid_payload(ctx: &Ctx<'_>, detail: &str) -> GraphResponse {
    ctx.bad_request("BadRequest", format!("Invalid batch payload format. {detail}"))
}

/// One request of the envelope, validated.
struct Inner {
    id: String,
    method: String,
    url: String,
    headers: Map<String, Value>,
    has_body: bool,
    depends_on: Vec<String>,
}

fn parse(ctx: &Ctx<'_>, body: &[u8]) -> Result<Vec<Inner>, GraphResponse> {
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| invalid_payload(ctx, &format!("The body is not valid JSON: {e}.")))?;
    let requests = doc
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid_payload(ctx, "Expected an object with a 'requests' array."))?;
    if requests.len() > BATCH_MAX_REQUESTS {
        return Err(ctx.bad_request("BadRequest", "Number of requests inside batch exceeds the limit."));
    }
    let mut out: Vec<Inner> = Vec::with_capacity(requests.len());
    for r in requests {
        let field = |name: &str| match r.get(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (Some(id), Some(method), Some(url)) = (field("id"), field("method"), field("url")) else {
            return Err(invalid_payload(
                ctx,
                "Each request needs string 'id', 'method' and 'url'.",
            ));
        };
        if out.iter().any(|o| o.id.eq_ignore_ascii_case(&id)) {
            return Err(ctx.bad_request("BadRequest", format!("Request Id {id} has to be unique in a batch.")));
        }
        let headers = r.get("headers").and_then(Value::as_object).cloned().unwrap_or_default();
        let depends_on = r
            .get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        out.push(Inner {
            id,
            method,
            url,
            headers,
            has_body: r.get("body").is_some_and(|b| !b.is_null()),
            depends_on,
        });
    }
    Ok(out)
}

fn header_map(headers: &Map<String, Value>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(k.as_bytes()),
            v.as_str().map(HeaderValue::from_str),
        ) {
            h.insert(name, value);
        }
    }
    h
}

/// Runs one inner request: inner faults first, then the normal routing.
fn run_inner(outer: &Ctx<'_>, r: &Inner, failed: &[(String, u16)]) -> GraphResponse {
    let state = outer.state;
    let ctx = outer.inner(&header_map(&r.headers));
    let (path, query) = r.url.split_once('?').unwrap_or((r.url.as_str(), ""));
    let route = Route::parse(path);
    bump(&state.counters.batch_inner);
    let kind = request_kind(&route, query);
    state.counters.count_kind(kind);
    if let Ok(m) = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()) {
        state.counters.record_request(&m, kind, true);
    }

    if r.depends_on
        .iter()
        .any(|d| failed.iter().any(|(id, s)| id.eq_ignore_ascii_case(d) && *s >= 400))
    {
        return ctx.error(
            StatusCode::FAILED_DEPENDENCY,
            "FailedDependency",
            "The request was not executed because a request it depends on failed.",
        );
    }
    if r.url.starts_with("http://") || r.url.starts_with("https://") {
        return ctx.bad_request("BadRequest", "Batch request URLs must be relative to the version root.");
    }
    let Ok(method) = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()) else {
        return ctx.bad_request("BadRequest", format!("Invalid HTTP method '{}'.", r.method));
    };
    if r.has_body && !r.headers.keys().any(|k| k.eq_ignore_ascii_case("content-type")) {
        return ctx.bad_request(
            "BadRequest",
            "A Content-Type header is required when a body is present.",
        );
    }
    if route == Route::Batch {
        return ctx.bad_request("BadRequest", "Nested batch requests are not supported.");
    }
    let cfg = state.fault_config();
    let n = state.next_inner_fault_number();
    match faults::decide_inner(&cfg, state.tenant.seed(), n) {
        Some(f @ Fault::TooManyRequests { .. }) => {
            bump(&state.counters.batch_inner_throttled);
            return ctx.fault(&f);
        }
        Some(f @ Fault::ServerError(_)) => {
            bump(&state.counters.batch_inner_server_error);
            return ctx.fault(&f);
        }
        _ => {}
    }
    dispatch(&ctx, &method, &route, query)
}

/// `POST /$batch`.
pub(crate) fn handle(ctx: &Ctx<'_>, body: &[u8]) -> GraphResponse {
    let requests = match parse(ctx, body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut failed: Vec<(String, u16)> = Vec::with_capacity(requests.len());
    let mut responses: Vec<Value> = Vec::with_capacity(requests.len());
    for r in &requests {
        let resp = run_inner(ctx, r, &failed);
        failed.push((r.id.clone(), resp.status.as_u16()));
        let mut entry = Map::new();
        entry.insert("id".into(), json!(r.id));
        entry.insert("status".into(), json!(resp.status.as_u16()));
        entry.insert("headers".into(), Value::Object(resp.batch_headers()));
        if let Some(b) = resp.body {
            entry.insert("body".into(), b);
        }
        responses.push(Value::Object(entry));
    }
    // Responses may come in a different order (https://learn.microsoft.com/en-us/graph/json-batching):
    // a seeded Fisher–Yates shuffle, reversed when the shuffle happens to keep the request order.
    let n = ctx.state.next_batch_number();
    let mut rng = Rng::new(hash3(ctx.state.tenant.seed(), K_BATCH_ORDER, n));
    let original: Vec<Value> = responses.iter().map(|r| r["id"].clone()).collect();
    for i in (1..responses.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        responses.swap(i, j);
    }
    if responses.len() > 1 && responses.iter().map(|r| &r["id"]).eq(original.iter()) {
        responses.reverse();
    }
    GraphResponse::ok(json!({"responses": responses}))
}
