//! Item content: `GET …/items/{id}/content` (302 to a pre-authenticated download URL, 304 on a
//! matching `if-none-match`), the download URL itself (`Range`, 206/416, expiry, throttling,
//! connections cut in the middle of a body) and the bytes of every file version.
//!
//! **Bytes.** A file version's content is a pure function of `(drive id, item id, cTag, size)`:
//! SipHash of those four keys a counter-mode generator (64-bit word `i` is the SplitMix64 output
//! of `key + i·γ`), so any offset is reachable in O(1), nothing is stored, and a modified file (new
//! cTag or size, see `SimHandle::apply_drive_change`) has new bytes. Bodies are generated on the
//! fly in [`CHUNK_BYTES`] chunks, so a response of many GiB holds one chunk in memory.
//! [`Content`] gives the same bytes without HTTP (tests and benchmarks hash them independently).
//!
//! **Download URLs** look like SharePoint's (`…/_layouts/15/download.aspx?UniqueId=…&tempauth=…`;
//! the redirect to them: <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>) on
//! the simulator's own host and port. `tempauth` is a sealed token (MAC'd, not forgeable) naming
//! the drive, the item, an expiry and an *epoch*; `expire_download_urls` bumps the epoch, so every
//! URL issued before answers 401. The URL designates the item, not a version: like SharePoint it
//! serves the item's *current* content, and sends its `ETag` so a client can notice a change
//! between two ranges.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query as AxumQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::json;

use crate::faults::{self, Fault};
use crate::graph::drives::{self, current_item, resolve};
use crate::graph::{Ctx, DriveSel, GraphResponse};
use crate::prng::{Rng, hash3, siphash24, splitmix64, tag};
use crate::server::SimState;
use crate::stats::bump;
use crate::tenant::{SimDrive, SimItem};

/// Default lifetime of a download URL: one hour, as the driveItem resource says
/// (<https://learn.microsoft.com/en-us/graph/api/resources/driveitem>; the get-content page says "a
/// few minutes": <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>, the two
/// disagree). Configurable with `SimConfig::download_url_lifetime`.
pub const DOWNLOAD_URL_LIFETIME_DEFAULT_SECS: u64 = 3600;

/// Bytes generated per body chunk: 256 KiB (large enough that per-chunk overhead is noise at
/// > 1 GB/s, small enough that a response costs a quarter MiB of memory).
pub const CHUNK_BYTES: usize = 256 << 10;

/// SplitMix64's increment (the golden ratio), the generator's counter step.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const K_CONTENT_KEY: u64 = tag(b"content-key");
const K_CONTENT_FAULT: u64 = tag(b"content-fault");
/// Prefix of a sealed `tempauth` payload, so no other sealed token (delta, skiptoken) opens as
/// one.
const TEMPAUTH_MAGIC: &[u8; 8] = b"tempauth";

/// The bytes of one file version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Content {
    key: u64,
    size: u64,
}

impl Content {
    /// The content of the version `(drive_id, item_id, ctag, size)`.
    #[must_use]
    pub fn new(drive_id: &str, item_id: &str, ctag: &str, size: u64) -> Self {
        let mut data = Vec::with_capacity(drive_id.len() + item_id.len() + ctag.len() + 11);
        for part in [drive_id, item_id, ctag] {
            data.extend_from_slice(part.as_bytes());
            data.push(0);
        }
        data.extend_from_slice(&size.to_le_bytes());
        let key = siphash24(K_CONTENT_KEY, !K_CONTENT_KEY, &data);
        Self { key, size }
    }

    /// The content of a file item in this drive (its current cTag and size); `None` for folders.
    #[must_use]
    pub fn of(drive_id: &str, item: &SimItem) -> Option<Self> {
        (!item.is_folder).then(|| Self::new(drive_id, &item.id, item.ctag.as_deref().unwrap_or(""), item.size))
    }

    /// Length in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    fn word(&self, index: u64) -> [u8; 8] {
        splitmix64(self.key.wrapping_add(index.wrapping_mul(GAMMA))).to_le_bytes()
    }

    /// Writes the bytes at `offset..` into `buf` (fewer at the end of the content); returns how
    /// many were written (0 at or past the end).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) -> usize {
        let available = self.size.saturating_sub(offset);
        let n = usize::try_from(available).unwrap_or(usize::MAX).min(buf.len());
        let mut out = &mut buf[..n];
        let mut pos = offset;
        let skip = (pos % 8) as usize;
        if skip != 0 && !out.is_empty() {
            let w = self.word(pos / 8);
            let take = (8 - skip).min(out.len());
            out[..take].copy_from_slice(&w[skip..skip + take]);
            pos += take as u64;
            out = &mut out[take..];
        }
        let mut index = pos / 8;
        let mut words = out.chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&self.word(index));
            index += 1;
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let len = rest.len();
            rest.copy_from_slice(&self.word(index)[..len]);
        }
        n
    }

    /// A reader of the whole content.
    #[must_use]
    pub fn reader(&self) -> ContentReader {
        self.reader_from(0)
    }

    /// A reader of the content from `offset` on.
    #[must_use]
    pub fn reader_from(&self, offset: u64) -> ContentReader {
        ContentReader {
            content: *self,
            pos: offset.min(self.size),
        }
    }
}

/// The current content of a file item (see [`Content::of`]) as a reader: what a download of
/// it serves.
#[must_use]
pub fn bytes_of(drive_id: &str, item: &SimItem) -> Option<ContentReader> {
    Content::of(drive_id, item).map(|c| c.reader())
}

/// Reads a [`Content`] sequentially (`std::io::Read`), generating bytes as asked.
#[derive(Debug, Clone)]
pub struct ContentReader {
    content: Content,
    pos: u64,
}

impl ContentReader {
    /// The offset of the next byte.
    #[must_use]
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl std::io::Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.content.fill(self.pos, buf);
        self.pos += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state.

/// Download-URL settings and counters of one server.
#[derive(Debug)]
pub(crate) struct ContentState {
    lifetime: RwLock<Duration>,
    epoch: AtomicU32,
    fault_seq: AtomicU64,
}

impl ContentState {
    pub(crate) fn new(lifetime: Duration) -> Self {
        Self {
            lifetime: RwLock::new(lifetime),
            epoch: AtomicU32::new(0),
            fault_seq: AtomicU64::new(0),
        }
    }

    /// Every download URL issued so far answers 401 from now on; later ones work.
    pub(crate) fn expire_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Lifetime of URLs issued from now on.
    pub(crate) fn set_lifetime(&self, lifetime: Duration) {
        *self.lifetime.write().unwrap_or_else(std::sync::PoisonError::into_inner) = lifetime;
    }

    fn lifetime(&self) -> Duration {
        *self.lifetime.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A decoded `tempauth`.
struct TempAuth {
    epoch: u32,
    not_before: i64,
    expires: i64,
    drive_id: String,
    item_id: String,
    /// A previous version's id (`2.0`) for a URL from `…/versions/{id}/content`; empty for the
    /// current content.
    version: String,
}

fn seal_tempauth(state: &SimState, drive_id: &str, item_id: &str, version: &str) -> String {
    let now = Utc::now().timestamp();
    let lifetime = i64::try_from(state.content.lifetime().as_secs()).unwrap_or(i64::MAX);
    let mut p = Vec::with_capacity(32 + drive_id.len() + item_id.len());
    p.extend_from_slice(TEMPAUTH_MAGIC);
    p.extend_from_slice(&state.content.epoch.load(Ordering::Acquire).to_le_bytes());
    p.extend_from_slice(&now.to_le_bytes());
    p.extend_from_slice(&now.saturating_add(lifetime).to_le_bytes());
    p.push(u8::try_from(drive_id.len()).unwrap_or(u8::MAX));
    p.extend_from_slice(drive_id.as_bytes());
    p.push(u8::try_from(item_id.len()).unwrap_or(u8::MAX));
    p.extend_from_slice(item_id.as_bytes());
    p.extend_from_slice(version.as_bytes());
    state.seal(&p)
}

fn open_tempauth(state: &SimState, token: &str) -> Option<TempAuth> {
    let p = state.unseal(token)?;
    let rest = p.strip_prefix(TEMPAUTH_MAGIC.as_slice())?;
    let epoch = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let not_before = i64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
    let expires = i64::from_le_bytes(rest.get(12..20)?.try_into().ok()?);
    let drive_len = usize::from(*rest.get(20)?);
    let drive_id = std::str::from_utf8(rest.get(21..21 + drive_len)?).ok()?.to_owned();
    let rest = rest.get(21 + drive_len..)?;
    let item_len = usize::from(*rest.first()?);
    let item_id = std::str::from_utf8(rest.get(1..1 + item_len)?).ok()?.to_owned();
    let version = std::str::from_utf8(rest.get(1 + item_len..)?).ok()?.to_owned();
    Some(TempAuth {
        epoch,
        not_before,
        expires,
        drive_id,
        item_id,
        version,
    })
}

/// The GUID inside an eTag `"{GUID},N"`: SharePoint's `UniqueId` of the file.
fn unique_id(item: &SimItem) -> &str {
    let s = item.etag.trim_matches('"');
    let s = s.split(',').next().unwrap_or(s);
    s.trim_matches(|c| c == '{' || c == '}')
}

/// A fresh pre-authenticated download URL for a file of this drive, shaped like SharePoint's
/// (`{site}/_layouts/15/download.aspx?UniqueId=…&Translate=false&tempauth=…&ApiVersion=2.0`),
/// served by this simulator. The same value goes into `@microsoft.graph.downloadUrl` and the
/// `Location` of `/content`.
pub(crate) fn download_url(state: &SimState, drive: &SimDrive, item: &SimItem) -> String {
    download_url_of(state, drive, item, "")
}

/// [`download_url`] of a previous version (`version` its id) or, with an empty one, of the
/// current content.
fn download_url_of(state: &SimState, drive: &SimDrive, item: &SimItem, version: &str) -> String {
    // The site path of the drive's web URL: `/personal/{name}` or `/sites/{name}`.
    let site = drive
        .web_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(_, path)| path);
    let site = site.rsplit_once('/').map_or(site, |(s, _)| s);
    format!(
        "{}/{site}/_layouts/15/download.aspx?UniqueId={}&Translate=false&tempauth={}&ApiVersion=2.0",
        state.base_url,
        unique_id(item),
        seal_tempauth(state, &drive.id, &item.id, version)
    )
}

/// The 302 of `…/versions/{version}/content` (the version exists and is not the current one).
pub(crate) fn version_redirect(ctx: &Ctx<'_>, drive: &SimDrive, item: &SimItem, version: &str) -> GraphResponse {
    let state = ctx.state;
    if let Some(fault) = content_fault(state) {
        return ctx.fault(&fault);
    }
    bump(&state.counters.content_redirects);
    GraphResponse {
        status: StatusCode::FOUND,
        headers: vec![("Location".to_owned(), download_url_of(state, drive, item, version))],
        body: None,
    }
}

// ---------------------------------------------------------------------------------------------
// GET …/items/{id}/content

/// Whether `if-none-match` names the item's current eTag or cTag (quotes and a weak `W/` prefix
/// ignored; `*` matches any existing item). Graph's tags hold a comma (`"{GUID},3"`), so the list
/// is split only at commas outside quotes; an unquoted value is taken whole.
fn none_match_hits(header: &str, item: &SimItem) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches("W/").trim_matches('"').to_owned();
    let etag = norm(&item.etag);
    let ctag = item.ctag.as_deref().map(norm);
    let hit = |v: &str| {
        let v = norm(v);
        !v.is_empty() && (v == "*" || v == etag || ctag.as_deref() == Some(v.as_str()))
    };
    if hit(header) {
        return true;
    }
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in header.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    parts.into_iter().any(hit)
}

/// `GET …/items/{id}/content` (<https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>):
/// 302 with `Location:` the download URL; 304 when `if-none-match` names the current eTag or cTag;
/// 404 `itemNotFound` for an unknown or deleted item; 422 `notSupported` for a folder. A `Range`
/// header is ignored here (it belongs on the download URL).
pub(crate) fn redirect(ctx: &Ctx<'_>, sel: &DriveSel, item_id: &str) -> GraphResponse {
    let state = ctx.state;
    if let Some(fault) = content_fault(state) {
        return ctx.fault(&fault);
    }
    let (d, drive) = match resolve(ctx, sel) {
        Ok(v) => v,
        Err(e) => return e,
    };
    let Some(item) = current_item(ctx, d, &drive, item_id) else {
        return drives::item_not_found(ctx);
    };
    if item.is_folder {
        // Only items with the `file` facet can be downloaded
        // (https://learn.microsoft.com/en-us/graph/api/driveitem-get-content). The error shape is
        // not documented; this mirrors what Graph answers for the converse (children of a file).
        return GraphResponse::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error": {
                "code": "notSupported",
                "message": "Content cannot be downloaded from an item that is not a file",
                "innerError": ctx.inner_error(Some("unprocessableEntity")),
            }}),
        );
    }
    if ctx.if_none_match.as_deref().is_some_and(|h| none_match_hits(h, &item)) {
        bump(&state.counters.content_not_modified);
        return GraphResponse {
            status: StatusCode::NOT_MODIFIED,
            headers: vec![("ETag".to_owned(), item.etag.clone())],
            body: None,
        };
    }
    bump(&state.counters.content_redirects);
    GraphResponse {
        status: StatusCode::FOUND,
        headers: vec![("Location".to_owned(), download_url(state, &drive, &item))],
        body: None,
    }
}

/// Draws the content throttling fault for the next `/content` or download request.
fn content_fault(state: &SimState) -> Option<Fault> {
    let cfg = state.fault_config();
    if cfg.content_throttle_rate <= 0.0 {
        return None;
    }
    let n = state.content.fault_seq.fetch_add(1, Ordering::Relaxed);
    let mut r = Rng::new(hash3(state.tenant.seed(), K_CONTENT_FAULT, n));
    if r.unit() >= cfg.content_throttle_rate {
        return None;
    }
    let retry_after = faults::retry_after(&mut r, cfg.retry_after_secs);
    bump(&state.counters.content_throttled);
    Some(if r.unit() < faults::SHARE_429 {
        bump(&state.counters.throttled_429);
        Fault::TooManyRequests { retry_after }
    } else {
        bump(&state.counters.unavailable_503);
        Fault::Unavailable { retry_after }
    })
}

/// Where to cut the next download body, if at all: after `n` bytes, drawn in the configured range.
fn drop_after(state: &SimState) -> Option<u64> {
    let cfg = state.fault_config();
    if cfg.content_drop_rate <= 0.0 {
        return None;
    }
    let n = state.content.fault_seq.fetch_add(1, Ordering::Relaxed);
    let mut r = Rng::new(hash3(state.tenant.seed(), K_CONTENT_FAULT, n));
    if r.unit() >= cfg.content_drop_rate {
        return None;
    }
    let (lo, hi) = cfg.content_drop_after_bytes;
    Some(r.range(lo, hi.max(lo)))
}

// ---------------------------------------------------------------------------------------------
// GET {site}/_layouts/15/download.aspx?…&tempauth=…

/// A `Range` header, resolved against a content of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeAsk {
    /// No usable range: the whole content, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// Nothing of the content lies in the range: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` (RFC 9110 §14.1.2). Several ranges or a
/// malformed value are ignored (the whole content is served, as the RFC allows).
fn parse_range(value: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        (true, false) => match num(b) {
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part {
                start: size - n.min(size),
                end: size - 1,
            },
            None => RangeAsk::Whole,
        },
        (false, _) => {
            let Some(start) = num(a) else { return RangeAsk::Whole };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                None => RangeAsk::Whole,
                Some(end) if end < start => RangeAsk::Whole,
                Some(_) if start >= size => RangeAsk::Unsatisfiable,
                Some(end) => RangeAsk::Part {
                    start,
                    end: end.min(size - 1),
                },
            }
        }
        (true, true) => RangeAsk::Whole,
    }
}

/// Query of a download URL.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct DownloadQuery {
    #[serde(default)]
    tempauth: Option<String>,
}

/// SharePoint's answer to a `tempauth` it refuses: 401 with OneDrive's `unauthenticated` envelope
/// and an inner `expiredToken` (or `invalidToken`) code and its validity window, as seen for an
/// expired pre-authenticated upload URL (OneDrive/onedrive-api-docs issue #1073).
fn unauthenticated(inner: &str, message: String) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": "unauthenticated", "message": message, "innerError": {"code": inner}}}).to_string(),
    )
        .into_response()
}

fn sp_time(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%-m/%-d/%Y %-I:%M:%S %p")
        .to_string()
}

/// `GET {site}/_layouts/15/download.aspx?…&tempauth=…`: the pre-authenticated download URL. No
/// `Authorization` needed (one that is sent anyway is counted, never checked). 200 with the whole
/// current content, 206 for a satisfiable `Range` (`Content-Range: bytes a-b/total`), 416
/// `invalidRange` otherwise; 401 once the URL expired; 404 if the item is gone. Faults: 429/503
/// (`content_throttle_rate`) and bodies cut after some bytes (`content_drop_rate`).
pub(crate) async fn download(
    State(state): State<Arc<SimState>>,
    AxumQuery(query): AxumQuery<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    bump(&state.counters.http_requests);
    bump(&state.counters.content_downloads);
    if headers.contains_key(header::AUTHORIZATION) {
        bump(&state.counters.content_with_authorization);
    }
    let ctx = Ctx::new(&state, &headers);
    let Some(auth) = query.tempauth.as_deref().and_then(|t| open_tempauth(&state, t)) else {
        bump(&state.counters.content_expired);
        return unauthenticated("invalidToken", "Invalid JWT token. The token is not valid.".to_owned());
    };
    let now = Utc::now().timestamp();
    if auth.epoch != state.content.epoch.load(Ordering::Acquire) || now >= auth.expires {
        bump(&state.counters.content_expired);
        tracing::debug!(item = %auth.item_id, "download URL expired");
        return unauthenticated(
            "expiredToken",
            format!(
                "The access token has expired. It's valid from '{}' and to '{}'.",
                sp_time(auth.not_before),
                sp_time(auth.expires)
            ),
        );
    }
    if let Some(fault) = content_fault(&state) {
        return ctx.fault(&fault).into_http(&ctx);
    }
    let found = resolve(&ctx, &DriveSel::Drive(auth.drive_id.clone()))
        .ok()
        .and_then(|(d, drive)| current_item(&ctx, d, &drive, &auth.item_id).map(|item| (d, drive, item)));
    let Some((d, drive, item)) = found else {
        return drives::item_not_found(&ctx).into_http(&ctx);
    };
    let content = if auth.version.is_empty() {
        Content::of(&drive.id, &item)
    } else {
        // A previous version: its bytes while it is kept.
        crate::graph::versions::history(&state, d, &drive, &item.id)
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.label == auth.version)
            .map(|v| {
                bump(&state.counters.version_downloads);
                Content::new(&drive.id, &item.id, &v.ctag, v.size)
            })
    };
    let Some(content) = content else {
        return drives::item_not_found(&ctx).into_http(&ctx);
    };
    let size = content.size();
    let range = parse_range(headers.get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    let (status, start, end) = match range {
        RangeAsk::Whole => (StatusCode::OK, 0, size),
        RangeAsk::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end + 1),
        RangeAsk::Unsatisfiable => {
            bump(&state.counters.content_range_unsatisfiable);
            // crates/m365/tests/fixtures/onedrive-error-invalidrange.json: OneDrive's code for a range it cannot use.
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::CONTENT_RANGE, format!("bytes */{size}")),
                ],
                json!({"error": {
                    "code": "invalidRange",
                    "message": format!("The requested range cannot be satisfied: the file has {size} bytes."),
                }})
                .to_string(),
            )
                .into_response();
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        bump(&state.counters.content_range);
    }
    let cut = drop_after(&state).filter(|n| *n < end - start);
    if cut.is_some() {
        bump(&state.counters.content_dropped);
    }
    let body = Body::from_stream(body_stream(Arc::clone(&state), content, start, end, cut));
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let disposition = format!(
        "attachment; filename*=UTF-8''{}",
        utf8_percent_encode(&item.name, NON_ALPHANUMERIC)
    );
    let mut sent = vec![(header::CONTENT_DISPOSITION, disposition)];
    if auth.version.is_empty() {
        // A previous version's bytes are not the item's current eTag.
        sent.push((header::ETAG, item.etag.clone()));
        sent.push((header::LAST_MODIFIED, httpdate_of(item.modified)));
    }
    for (name, value) in sent {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

fn httpdate_of(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// The body `start..end` of `content`, generated a chunk at a time; after `cut` bytes it fails,
/// which makes the server abort the connection mid-body (the client sees a truncated body).
fn body_stream(
    state: Arc<SimState>,
    content: Content,
    start: u64,
    end: u64,
    cut: Option<u64>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let stop = cut.map_or(end, |n| start + n);
    futures_util::stream::unfold(start, move |pos| {
        let state = Arc::clone(&state);
        async move {
            if pos >= stop {
                if pos < end {
                    // Let the server flush what was sent before failing the body (else hyper may
                    // abort before the headers leave, and the cut would look like a refused
                    // request rather than a body cut after `n` bytes).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    tracing::debug!(at = pos, "fault: cutting a download body");
                    return Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionAborted,
                            "m365-sim: injected mid-body drop",
                        )),
                        end,
                    ));
                }
                return None;
            }
            let len = usize::try_from(stop - pos).unwrap_or(CHUNK_BYTES).min(CHUNK_BYTES);
            let mut buf = vec![0u8; len];
            let n = content.fill(pos, &mut buf);
            buf.truncate(n);
            state.counters.content_bytes.fetch_add(n as u64, Ordering::Relaxed);
            Some((Ok(Bytes::from(buf)), pos + n as u64))
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn bytes_at_any_offset_equal_the_sequential_stream() {
        let c = Content::new("b!drive", "01ITEM", "\"c:{X},1\"", 10_000);
        let mut all = Vec::new();
        c.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 10_000);
        for (offset, len) in [(0, 1), (1, 7), (3, 64), (7, 9), (8, 8), (9_995, 100), (10_000, 5)] {
            let mut buf = vec![0u8; len];
            let n = c.fill(offset, &mut buf);
            let expect = &all[(offset as usize).min(10_000)..(offset as usize + len).min(10_000)];
            assert_eq!(&buf[..n], expect, "offset {offset} len {len}");
        }
    }

    #[test]
    fn another_version_has_other_bytes() {
        let a = Content::new("b!d", "01I", "\"c:{X},1\"", 64);
        let b = Content::new("b!d", "01I", "\"c:{X},2\"", 64);
        let (mut x, mut y) = (vec![0; 64], vec![0; 64]);
        a.fill(0, &mut x);
        b.fill(0, &mut y);
        assert_ne!(x, y);
        assert_eq!(a, Content::new("b!d", "01I", "\"c:{X},1\"", 64));
    }

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeAsk::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Part { start: 0, end: 3 });
        assert_eq!(parse_range(Some("bytes=4-"), 10), Part { start: 4, end: 9 });
        assert_eq!(parse_range(Some("bytes=4-100"), 10), Part { start: 4, end: 9 });
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part { start: 7, end: 9 });
        assert_eq!(parse_range(Some("bytes=-30"), 10), Part { start: 0, end: 9 });
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
    }

    #[test]
    fn generating_64_mib_has_no_slow_path() {
        // Release builds run at several GB/s; debug builds at optimisation level 0 are slower, so
        // this only guards against an accidental quadratic or per-byte path.
        let c = Content::new("b!d", "01I", "c", 64 << 20);
        let mut buf = vec![0u8; CHUNK_BYTES];
        let t = std::time::Instant::now();
        let mut pos = 0;
        while pos < c.size() {
            pos += c.fill(pos, &mut buf) as u64;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
}
