//! Streaming a driveItem's content
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>) into a sink — for hash-file, a
//! [`filetrail_core::digest::DualHasher`] — with bounded memory and nothing written to disk.
//!
//! How one download goes:
//! 1. `GET /drives/{d}/items/{i}` (1 RU): the version to hash (`cTag`, `eTag`, `size`) and a
//!    pre-authenticated `@microsoft.graph.downloadUrl`. The version comes from this item GET, not
//!    from download headers: ODB's delta omits `cTag`
//!    (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>) and the download host sends no
//!    `cTag`, while the hash must be recorded against the content version. The item GET also
//!    tells a deleted item (404) from a folder before any byte moves. The download host's `ETag`
//!    is compared with the item's `eTag` on every response, so a file modified between the GET
//!    and the last byte is reported as [`DownloadOutcome::Changed`] rather than hashed as a mix
//!    (the eTag also moves on a rename: then the caller downloads again, never hashes wrongly).
//! 2. `GET {downloadUrl}` without our `Authorization` header (the URL is pre-authenticated; the
//!    Graph token must not travel to another host). A dropped connection or a body error resumes
//!    with `Range: bytes={received}-` on the same URL: a 206 must start where asked (its
//!    `Content-Range` is checked), a 200 to a range request (the `Range` header may be ignored:
//!    <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#partial-range-downloads>) has its first
//!    `received` bytes skipped.
//! 3. When the URL has expired (401/403 from the download host) or the item JSON carried none, a
//!    new one comes from `GET …/items/{i}/content`, whose 302 is not followed by reqwest (see
//!    [`crate::http::http_client`]) but read here.
//!
//! 429/503 (`Retry-After`, decimal included) and 5xx go through the client's retry policy and
//! shared throttling gate; failures without progress spend one retry budget, any byte of
//! progress starts a new one. A deadline stops the download cleanly between chunks: the caller
//! gets the offset reached and continues later with [`DownloadRequest::starting_at`] (and the
//! version, so a file changed in between is noticed). Download URLs are never logged (their
//! `tempauth` is a credential).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use filetrail_core::digest::{DualHasher, HashError};
use filetrail_core::hashing::KeptVersion;
use percent_encoding::utf8_percent_encode;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, ETAG, RANGE};
use serde::Deserialize;

use crate::error::{ErrorBody, M365Error, ServiceError, ServiceErrorKind, TransportKind};
use crate::graph::{GraphClient, PATH_SEGMENT};
use crate::http::{Budget, Reply, Verdict};

/// Longest wait for the next body chunk before the connection counts as dropped and the download
/// resumes with `Range` (our choice: a healthy download delivers many chunks a second; a minute
/// of silence is a dead connection).
pub const CHUNK_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one download request may last, body included, overriding the client's request timeout
/// (which is sized for JSON pages): a 15-minute Lambda cannot use more, and a longer download is
/// continued by the next request with `Range` anyway.
pub const DOWNLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Download URLs fetched again in a row without a byte of progress before giving up (our choice:
/// one refresh is the normal case after an expiry; a URL that is refused again at once means the
/// app lost access to the file).
pub const MAX_URL_REFRESHES_WITHOUT_PROGRESS: u32 = 3;

/// The application permission downloads need
/// (<https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#permissions>).
const PERMISSION: &str = "Files.Read.All";

/// A file version: what was downloaded and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVersion {
    /// `eTag` (changes with metadata too).
    pub etag: Option<String>,
    /// `cTag` (changes with content only,
    /// <https://learn.microsoft.com/en-us/graph/api/resources/driveitem#properties>).
    pub ctag: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

impl FileVersion {
    /// Whether `other` designates the same content: same size and, where both know it, the same
    /// cTag (else the same eTag).
    pub fn same_content(&self, other: &Self) -> bool {
        if self.size != other.size {
            return false;
        }
        match (&self.ctag, &other.ctag, &self.etag, &other.etag) {
            (Some(a), Some(b), _, _) => a == b,
            (_, _, Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// What an item GET tells about an item's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    /// Whether the item has the `file` facet (only files have content,
    /// <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>).
    pub is_file: bool,
    /// Its current version (`size` 0 and no `cTag` for folders).
    pub version: FileVersion,
    /// `lastModifiedDateTime`.
    pub modified_at: Option<DateTime<Utc>>,
}

/// Receives the content, chunk by chunk, in order, each byte once.
pub trait ContentSink: Send {
    /// Why the sink could not take a chunk.
    type Error;
    /// Takes the next chunk. An error stops the download ([`DownloadError::Sink`]).
    fn accept(&mut self, chunk: Bytes) -> Result<(), Self::Error>;
}

impl ContentSink for DualHasher {
    type Error = HashError;

    fn accept(&mut self, chunk: Bytes) -> Result<(), HashError> {
        self.update(chunk)
    }
}

impl<E, F: FnMut(Bytes) -> Result<(), E> + Send> ContentSink for F {
    type Error = E;

    fn accept(&mut self, chunk: Bytes) -> Result<(), E> {
        self(chunk)
    }
}

/// What to download: an item, from which offset, until when.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    pub drive_id: String,
    pub item_id: String,
    /// Bytes the sink already holds (0 for a new download).
    pub offset: u64,
    /// The version those bytes belong to: a continuation of a download whose content changed
    /// since ends with [`DownloadOutcome::Changed`].
    pub expected: Option<FileVersion>,
    /// When to stop (between chunks) and report how far it got.
    pub deadline: Option<Instant>,
    /// A previous version (its id and size, from `…/versions`) instead of the current content:
    /// fetched through `…/versions/{id}/content`, never changing under the download.
    pub previous: Option<(String, u64)>,
}

impl DownloadRequest {
    /// The whole content of an item, no deadline.
    pub fn new(drive_id: &str, item_id: &str) -> Self {
        Self {
            drive_id: drive_id.to_owned(),
            item_id: item_id.to_owned(),
            offset: 0,
            expected: None,
            deadline: None,
            previous: None,
        }
    }

    /// A previous version of the item (`id` as `…/versions` lists it, `size` its bytes); a
    /// version no longer kept ends with [`DownloadOutcome::NotFound`].
    pub fn previous_version(mut self, id: &str, size: u64) -> Self {
        self.previous = Some((id.to_owned(), size));
        self
    }

    /// Continues a download of `version` after its first `offset` bytes.
    pub fn starting_at(mut self, offset: u64, version: FileVersion) -> Self {
        self.offset = offset;
        self.expected = Some(version);
        self
    }

    /// Stops at `deadline` with [`DownloadOutcome::Stopped`].
    pub fn until(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// How a download ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadOutcome {
    /// The sink holds every byte of `version` (`version.size` bytes, counting those it held
    /// before a continuation).
    Complete { version: FileVersion },
    /// The deadline came first: the sink holds the first `offset` bytes of `version`; continue
    /// with [`DownloadRequest::starting_at`].
    Stopped { version: FileVersion, offset: u64 },
    /// The item does not exist (deleted before or while it was downloaded): record "deleted
    /// before hashing".
    NotFound,
    /// The item is not a file (a folder): nothing to hash.
    NotAFile,
    /// The content is no longer the version the sink's bytes belong to (`expected` of a
    /// continuation, or a change noticed in the middle): discard the sink and start over.
    /// `current` is the newest version seen.
    Changed { current: FileVersion },
}

/// A download's outcome and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    pub outcome: DownloadOutcome,
    /// Bytes handed to the sink by this call.
    pub bytes_delivered: u64,
    /// Requests to the download host.
    pub download_requests: u32,
    /// Of those, resumes after a dropped connection or body error.
    pub resumes: u32,
    /// Download URLs fetched through `…/content` (after an expiry, or none in the item JSON).
    pub url_refreshes: u32,
    /// Range requests answered 200 with the whole content (skipped up to the offset).
    pub ranges_ignored: u32,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError<E> {
    /// Graph or the download host failed beyond the retry budget, or answered what the API does
    /// not document.
    #[error(transparent)]
    Service(#[from] M365Error),
    /// The sink refused a chunk.
    #[error("the content sink failed")]
    Sink(#[source] E),
}

/// The parts of a driveItem the download needs.
#[derive(Deserialize)]
struct WireFileItem {
    #[serde(default)]
    size: Option<u64>,
    #[serde(rename = "eTag", default)]
    etag: Option<String>,
    #[serde(rename = "cTag", default)]
    ctag: Option<String>,
    #[serde(rename = "lastModifiedDateTime", default)]
    modified_at: Option<DateTime<Utc>>,
    #[serde(default)]
    file: Option<serde_json::Value>,
    #[serde(default)]
    deleted: Option<serde_json::Value>,
    #[serde(rename = "@microsoft.graph.downloadUrl", default)]
    download_url: Option<String>,
}

/// Everything but the pre-authenticated download URL, which anyone holding it can use for a
/// while without a token: only whether there is one.
impl std::fmt::Debug for WireFileItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireFileItem")
            .field("size", &self.size)
            .field("etag", &self.etag)
            .field("ctag", &self.ctag)
            .field("modified_at", &self.modified_at)
            .field("file", &self.file.is_some())
            .field("deleted", &self.deleted.is_some())
            .field("download_url", &self.download_url.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A page of `…/versions`.
#[derive(Debug, Deserialize)]
struct WireVersions {
    #[serde(default)]
    value: Vec<WireVersion>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireVersion {
    id: String,
    #[serde(rename = "lastModifiedDateTime", default)]
    modified_at: Option<DateTime<Utc>>,
    #[serde(default)]
    size: Option<u64>,
}

/// The item as the download sees it.
enum ItemState {
    Missing,
    Present {
        info: ItemInfo,
        download_url: Option<String>,
    },
}

/// What the download host answered, once classified.
enum Attempt {
    /// The body was read to `offset` (maybe cut short: then resume).
    Progress,
    /// The URL is no longer accepted: get another through `/content`.
    UrlRefused,
    /// Nothing more to read (a 416 at the end of the content).
    AtEnd,
    Gone,
    Changed(FileVersion),
    Stopped,
    /// A transient failure: wait (`after`, or a backoff) and send again.
    Retry {
        after: Option<Duration>,
        pause_all: bool,
        cause: M365Error,
    },
}

impl GraphClient {
    /// The item's current version: `None` if it does not exist (404, or a `deleted` facet). One
    /// item GET, through the retry policy.
    pub async fn item_info(&self, drive_id: &str, item_id: &str) -> Result<Option<ItemInfo>, M365Error> {
        Ok(match self.file_item(drive_id, item_id).await? {
            ItemState::Missing => None,
            ItemState::Present { info, .. } => Some(info),
        })
    }

    /// Streams the whole content of a file into `sink` (see the module documentation). Returns
    /// the outcome: complete with the version hashed, not found (deleted), not a file, or changed
    /// while it was downloaded. Errors: Graph or the download host failing beyond the retry
    /// budget, or the sink failing.
    pub async fn download<S: ContentSink>(
        &self,
        drive_id: &str,
        item_id: &str,
        sink: &mut S,
    ) -> Result<Download, DownloadError<S::Error>> {
        self.download_from(&DownloadRequest::new(drive_id, item_id), sink).await
    }

    /// Streams a file's content from `request.offset` into `sink`, stopping at
    /// `request.deadline` if it comes first ([`DownloadOutcome::Stopped`] with the offset
    /// reached). A continuation whose `expected` version is no longer current ends with
    /// [`DownloadOutcome::Changed`] before any byte is delivered.
    pub async fn download_from<S: ContentSink>(
        &self,
        request: &DownloadRequest,
        sink: &mut S,
    ) -> Result<Download, DownloadError<S::Error>> {
        let (drive_id, item_id) = (request.drive_id.as_str(), request.item_id.as_str());
        let mut report = Download {
            outcome: DownloadOutcome::NotFound,
            bytes_delivered: 0,
            download_requests: 0,
            resumes: 0,
            url_refreshes: 0,
            ranges_ignored: 0,
        };
        let previous = request.previous.as_ref().map(|(id, _)| id.as_str());
        let (version, mut url) = match &request.previous {
            // A previous version's bytes never change: no eTag to compare, its size to reach.
            Some((_, size)) => (
                FileVersion {
                    etag: None,
                    ctag: None,
                    size: *size,
                },
                None,
            ),
            None => match self.file_item(drive_id, item_id).await? {
                ItemState::Missing => return Ok(report),
                ItemState::Present { info, .. } if !info.is_file => {
                    report.outcome = DownloadOutcome::NotAFile;
                    return Ok(report);
                }
                ItemState::Present { info, download_url } => (info.version, download_url),
            },
        };
        let changed = request.expected.as_ref().is_some_and(|e| !e.same_content(&version));
        if changed || request.offset > version.size {
            report.outcome = DownloadOutcome::Changed { current: version };
            return Ok(report);
        }
        let mut offset = request.offset;
        let mut budget = Budget::default();
        let mut refreshes_in_a_row = 0;
        loop {
            if offset == version.size {
                report.outcome = DownloadOutcome::Complete { version };
                break;
            }
            if request.deadline.is_some_and(|d| Instant::now() >= d) {
                report.outcome = DownloadOutcome::Stopped { version, offset };
                break;
            }
            let Some(current_url) = url.clone() else {
                if refreshes_in_a_row >= MAX_URL_REFRESHES_WITHOUT_PROGRESS {
                    return Err(self.refused_error(drive_id, item_id).into());
                }
                refreshes_in_a_row += 1;
                report.url_refreshes += 1;
                match self.content_location(drive_id, item_id, previous).await? {
                    Located::Url(u) => url = Some(u),
                    Located::Missing => {
                        report.outcome = DownloadOutcome::NotFound;
                        break;
                    }
                    Located::NotAFile => {
                        report.outcome = DownloadOutcome::NotAFile;
                        break;
                    }
                }
                continue;
            };
            budget.waited += self.pipeline().gate.wait().await;
            report.download_requests += 1;
            let before = offset;
            let attempt = self
                .download_once(
                    &current_url,
                    &download_operation(drive_id, item_id),
                    &version,
                    &mut offset,
                    request.deadline,
                    sink,
                    &mut report,
                )
                .await?;
            if offset > before {
                report.bytes_delivered += offset - before;
                budget = Budget::default();
                refreshes_in_a_row = 0;
            }
            match attempt {
                Attempt::Progress => {
                    if offset < version.size {
                        report.resumes += 1;
                        tracing::debug!(
                            connection = %self.connection(), drive_id, item_id, offset, size = version.size,
                            "download cut short; resuming with Range"
                        );
                        self.wait_before_resume(&mut budget, offset > before, drive_id, item_id)
                            .await?;
                    }
                }
                Attempt::AtEnd => {
                    if offset != version.size {
                        report.outcome = DownloadOutcome::Changed { current: version };
                        break;
                    }
                }
                Attempt::UrlRefused => {
                    tracing::info!(connection = %self.connection(), drive_id, item_id, offset, "download URL refused (expired?); getting a new one");
                    url = None;
                }
                Attempt::Gone => {
                    report.outcome = DownloadOutcome::NotFound;
                    break;
                }
                Attempt::Changed(current) => {
                    report.outcome = DownloadOutcome::Changed { current };
                    break;
                }
                Attempt::Stopped => {
                    report.outcome = DownloadOutcome::Stopped { version, offset };
                    break;
                }
                Attempt::Retry {
                    after,
                    pause_all,
                    cause,
                } => {
                    budget.attempts += 1;
                    let wait = budget.next_wait(&self.pipeline().policy, after, cause)?;
                    if request.deadline.is_some_and(|d| Instant::now() + wait >= d) {
                        // Waiting out the service would pass the deadline: hand over now.
                        if pause_all {
                            self.pipeline().gate.close_for(wait);
                        }
                        report.outcome = DownloadOutcome::Stopped { version, offset };
                        break;
                    }
                    self.pipeline().counters.retry(1);
                    if pause_all {
                        self.pipeline().counters.throttle(1);
                    }
                    tracing::debug!(
                        connection = %self.connection(), drive_id, item_id,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), pause_all,
                        "download throttled or failed; retrying"
                    );
                    self.pipeline().pause(wait, pause_all).await;
                    if !pause_all {
                        budget.waited += wait;
                    }
                }
            }
        }
        tracing::info!(
            connection = %self.connection(), drive_id, item_id,
            outcome = outcome_name(&report.outcome), bytes = report.bytes_delivered,
            requests = report.download_requests, resumes = report.resumes, url_refreshes = report.url_refreshes,
            "download finished"
        );
        Ok(report)
    }

    /// After a cut body: resume at once when bytes arrived, else back off within the budget.
    async fn wait_before_resume(
        &self,
        budget: &mut Budget,
        progressed: bool,
        drive_id: &str,
        item_id: &str,
    ) -> Result<(), M365Error> {
        self.pipeline().counters.retry(1);
        if progressed {
            return Ok(());
        }
        let cause = M365Error::Transport {
            connection: self.connection().to_owned(),
            operation: download_operation(drive_id, item_id),
            kind: TransportKind::Dropped,
            message: "the download connection closed before any byte arrived".to_owned(),
        };
        budget.attempts += 1;
        let wait = budget.next_wait(&self.pipeline().policy, None, cause)?;
        tokio::time::sleep(wait).await;
        budget.waited += wait;
        Ok(())
    }

    /// One request to the download host from `offset`, its body streamed into the sink.
    #[allow(clippy::too_many_arguments)]
    async fn download_once<S: ContentSink>(
        &self,
        url: &str,
        operation: &str,
        version: &FileVersion,
        offset: &mut u64,
        deadline: Option<Instant>,
        sink: &mut S,
        report: &mut Download,
    ) -> Result<Attempt, DownloadError<S::Error>> {
        let pipeline = self.pipeline();
        // No bearer token: the URL is pre-authenticated
        // (https://learn.microsoft.com/en-us/graph/api/driveitem-get-content).
        let mut builder = pipeline.http.get(url).timeout(DOWNLOAD_REQUEST_TIMEOUT);
        if *offset > 0 {
            builder = builder.header(RANGE, format!("bytes={offset}-"));
        }
        pipeline.counters.request();
        let sent = match deadline {
            Some(d) => match tokio::time::timeout(d.saturating_duration_since(Instant::now()), builder.send()).await {
                Ok(sent) => sent,
                Err(_) => return Ok(Attempt::Stopped),
            },
            None => builder.send().await,
        };
        let mut response = match sent {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return Err(M365Error::Config {
                    message: format!(
                        "connection `{}`: {operation}: the download URL is not usable: {}",
                        self.connection(),
                        e.without_url()
                    ),
                    fix: "report it: the URL came from Microsoft Graph".to_owned(),
                }
                .into());
            }
            Err(e) => {
                return Ok(Attempt::Retry {
                    after: None,
                    pause_all: false,
                    cause: self.transport(operation, e),
                });
            }
        };
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let (Some(sent_etag), Some(known)) = (header(ETAG), version.etag.as_deref()) {
            if status.is_success() && sent_etag != known {
                // The item changed after its GET: its bytes are no longer the version we hash.
                return Ok(Attempt::Changed(FileVersion {
                    etag: Some(sent_etag),
                    ctag: None,
                    size: version.size,
                }));
            }
        }
        let mut skip = 0;
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let Some((start, total)) = header(CONTENT_RANGE).as_deref().and_then(parse_content_range) else {
                    return Err(self.protocol(operation, "a 206 without a valid Content-Range").into());
                };
                if total != version.size {
                    return Ok(Attempt::Changed(FileVersion {
                        etag: None,
                        ctag: None,
                        size: total,
                    }));
                }
                if start > *offset {
                    return Err(self
                        .protocol(
                            operation,
                            &format!("asked from byte {offset}, got a 206 from byte {start}"),
                        )
                        .into());
                }
                skip = *offset - start;
            }
            StatusCode::OK => {
                let length = header(CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
                if length.is_some_and(|l| l != version.size) {
                    return Ok(Attempt::Changed(FileVersion {
                        etag: None,
                        ctag: None,
                        size: length.unwrap_or_default(),
                    }));
                }
                if *offset > 0 {
                    // The Range may be ignored; skip what the sink already has
                    // (https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#partial-range-downloads).
                    report.ranges_ignored += 1;
                    skip = *offset;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => return Ok(Attempt::AtEnd),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Ok(Attempt::UrlRefused),
            StatusCode::NOT_FOUND | StatusCode::GONE => return Ok(Attempt::Gone),
            _ => {
                let retry_after =
                    crate::retry::retry_after_from_headers(response.headers(), std::time::SystemTime::now());
                let body = read_error_body(response).await;
                let error = ServiceError::new(
                    self.connection(),
                    operation.to_owned(),
                    status.as_u16(),
                    &ErrorBody::parse(&body),
                    retry_after,
                    None,
                    PERMISSION,
                );
                return Ok(match error.kind {
                    kind if kind.is_retryable() && kind != ServiceErrorKind::InvalidAuthenticationToken => {
                        Attempt::Retry {
                            after: retry_after,
                            pause_all: kind.pauses_client(),
                            cause: error.into(),
                        }
                    }
                    _ => return Err(M365Error::from(error).into()),
                });
            }
        }
        loop {
            let next = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left.min(CHUNK_STALL_TIMEOUT), response.chunk()).await {
                        Ok(next) => next,
                        Err(_) if Instant::now() >= d => return Ok(Attempt::Stopped),
                        Err(_) => return Ok(Attempt::Progress),
                    }
                }
                None => match tokio::time::timeout(CHUNK_STALL_TIMEOUT, response.chunk()).await {
                    Ok(next) => next,
                    Err(_) => return Ok(Attempt::Progress),
                },
            };
            let mut chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Ok(Attempt::Progress),
                Err(e) => {
                    tracing::debug!(connection = %self.connection(), error = %e.without_url(), "download body interrupted");
                    return Ok(Attempt::Progress);
                }
            };
            if skip > 0 {
                let k = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                chunk = chunk.slice(k..);
                skip -= k as u64;
            }
            let room = version.size - *offset;
            if chunk.len() as u64 > room {
                return Err(self
                    .protocol(operation, &format!("more than the item's {} bytes", version.size))
                    .into());
            }
            if !chunk.is_empty() {
                *offset += chunk.len() as u64;
                sink.accept(chunk).map_err(DownloadError::Sink)?;
            }
            if *offset == version.size {
                return Ok(Attempt::Progress);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Attempt::Stopped);
            }
        }
    }

    /// `GET /drives/{d}/items/{i}/versions`: the versions OneDrive keeps of the file, newest
    /// first, the current one included (next links followed); `None` when the item does not
    /// exist. Which versions exist depends on the library's settings and limits
    /// (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-versions>).
    pub async fn versions(&self, drive_id: &str, item_id: &str) -> Result<Option<Vec<KeptVersion>>, M365Error> {
        let mut next = Some(format!(
            "/drives/{}/items/{}/versions",
            utf8_percent_encode(drive_id, PATH_SEGMENT),
            utf8_percent_encode(item_id, PATH_SEGMENT)
        ));
        let mut versions = Vec::new();
        while let Some(path) = next.take() {
            let page: WireVersions = match self.get_json(&path).await {
                Ok(page) => page,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e),
            };
            versions.extend(page.value.into_iter().map(|v| KeptVersion {
                id: v.id,
                modified_at: v.modified_at,
                size: v.size.unwrap_or_default(),
            }));
            next = page.next_link;
        }
        Ok(Some(versions))
    }

    /// `GET /drives/{d}/items/{i}`: the item's version and download URL.
    async fn file_item(&self, drive_id: &str, item_id: &str) -> Result<ItemState, M365Error> {
        let path = format!(
            "/drives/{}/items/{}",
            utf8_percent_encode(drive_id, PATH_SEGMENT),
            utf8_percent_encode(item_id, PATH_SEGMENT)
        );
        let item: WireFileItem = match self.get_json(&path).await {
            Ok(item) => item,
            Err(e) if is_not_found(&e) => return Ok(ItemState::Missing),
            Err(e) => return Err(e),
        };
        if item.deleted.is_some() {
            return Ok(ItemState::Missing);
        }
        let is_file = item.file.is_some();
        Ok(ItemState::Present {
            info: ItemInfo {
                is_file,
                version: FileVersion {
                    etag: item.etag,
                    ctag: if is_file { item.ctag } else { None },
                    size: if is_file { item.size.unwrap_or_default() } else { 0 },
                },
                modified_at: item.modified_at,
            },
            download_url: item.download_url.filter(|_| is_file),
        })
    }

    /// `GET …/items/{i}/content` (or `…/items/{i}/versions/{v}/content` for a previous version):
    /// the 302's `Location`, read here rather than followed, through the retry policy (429/503
    /// with `Retry-After`, 5xx, one token refresh).
    async fn content_location(
        &self,
        drive_id: &str,
        item_id: &str,
        previous: Option<&str>,
    ) -> Result<Located, M365Error> {
        let version_path = previous
            .map(|v| format!("/versions/{}", utf8_percent_encode(v, PATH_SEGMENT)))
            .unwrap_or_default();
        let url = format!(
            "{}/drives/{}/items/{}{version_path}/content",
            self.base_url(),
            utf8_percent_encode(drive_id, PATH_SEGMENT),
            utf8_percent_encode(item_id, PATH_SEGMENT)
        );
        let operation = format!("GET /drives/{drive_id}/items/{item_id}{version_path}/content");
        let reply = self
            .pipeline()
            .execute(
                &operation,
                &**self.tokens(),
                |http, token| {
                    let request = http.get(&url);
                    match token {
                        Some(t) => request.bearer_auth(t.secret()),
                        None => request,
                    }
                },
                |reply| self.content_verdict(reply, &operation),
            )
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) if is_not_found(&e) => return Ok(Located::Missing),
            Err(e) => return Err(e),
        };
        match reply.status {
            422 => Ok(Located::NotAFile),
            _ => {
                // An absolute URL in practice (the example response of driveitem-get-content); a
                // relative one is resolved against the request, as HTTP allows.
                let location = reply
                    .header("location")
                    .and_then(|l| url::Url::parse(&url).and_then(|base| base.join(&l)).ok());
                match location {
                    Some(location) => Ok(Located::Url(location.into())),
                    None => Err(self.protocol(&operation, "a redirect without a usable Location header")),
                }
            }
        }
    }

    fn content_verdict(&self, reply: &Reply, operation: &str) -> Verdict {
        match reply.status {
            301 | 302 | 303 | 307 | 308 | 422 => return Verdict::Done,
            200..=299 => {
                return Verdict::Fail(M365Error::Config {
                    message: format!(
                        "connection `{}`: {operation} was answered with the content itself: the HTTP client followed \
                         the redirect (with the Graph token)",
                        self.connection()
                    ),
                    fix: "build the HTTP client with filetrail_m365::http_client, which leaves /content redirects to \
                          the download code"
                        .to_owned(),
                });
            }
            _ => {}
        }
        let retry_after = reply.retry_after();
        let error = ServiceError::new(
            self.connection(),
            operation.to_owned(),
            reply.status,
            &ErrorBody::parse(&reply.body),
            retry_after,
            None,
            PERMISSION,
        );
        match error.kind {
            ServiceErrorKind::InvalidAuthenticationToken => Verdict::Reauth(error.into()),
            kind if kind.is_retryable() => Verdict::Retry {
                after: retry_after,
                pause_all: kind.pauses_client(),
                cause: error.into(),
            },
            _ => Verdict::Fail(error.into()),
        }
    }

    fn transport(&self, operation: &str, e: reqwest::Error) -> M365Error {
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Dropped
        };
        M365Error::Transport {
            connection: self.connection().to_owned(),
            operation: operation.to_owned(),
            kind,
            // Without the URL: its `tempauth` is a credential.
            message: e.without_url().to_string(),
        }
    }

    fn protocol(&self, operation: &str, what: &str) -> M365Error {
        M365Error::Decode {
            connection: self.connection().to_owned(),
            operation: operation.to_owned(),
            message: format!("the download host answered {what}"),
        }
    }

    fn refused_error(&self, drive_id: &str, item_id: &str) -> M365Error {
        M365Error::Config {
            message: format!(
                "connection `{}`: the download host refused {MAX_URL_REFRESHES_WITHOUT_PROGRESS} fresh download URLs \
                 of item {item_id} in drive {drive_id} in a row",
                self.connection()
            ),
            fix: format!(
                "check that the app still has {PERMISSION} and that the file is not blocked (e.g. malware) in \
                 SharePoint"
            ),
        }
    }
}

/// What `/content` pointed at.
enum Located {
    Url(String),
    Missing,
    NotAFile,
}

fn is_not_found(e: &M365Error) -> bool {
    e.service()
        .is_some_and(|s| s.status == 404 || s.kind == ServiceErrorKind::NotFound)
}

/// How messages name a download (never with the URL).
fn download_operation(drive_id: &str, item_id: &str) -> String {
    format!("download of /drives/{drive_id}/items/{item_id}")
}

fn outcome_name(outcome: &DownloadOutcome) -> &'static str {
    match outcome {
        DownloadOutcome::Complete { .. } => "complete",
        DownloadOutcome::Stopped { .. } => "stopped",
        DownloadOutcome::NotFound => "not_found",
        DownloadOutcome::NotAFile => "not_a_file",
        DownloadOutcome::Changed { .. } => "changed",
    }
}

/// An error body, read up to a small limit (an error page is never large; a misbehaving server
/// must not make us buffer a file).
async fn read_error_body(mut response: reqwest::Response) -> Vec<u8> {
    const MAX: usize = 64 << 10;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(MAX - body.len())]);
        if body.len() >= MAX {
            break;
        }
    }
    body
}

/// `bytes a-b/total` → `(a, total)`.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end) = (start.trim().parse::<u64>().ok()?, end.trim().parse::<u64>().ok()?);
    let total = total.trim().parse::<u64>().ok()?;
    (start <= end && end < total).then_some((start, total))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_driveitem_shown_for_debugging_hides_its_download_url() {
        let url =
            "https://contoso-my.sharepoint.com/personal/megan/_layouts/15/download.aspx?UniqueId=1&tempauth=eyJ0eXAi";
        let item: WireFileItem = serde_json::from_value(serde_json::json!({
            "size": 12, "cTag": "\"c:{1},2\"", "file": {}, "@microsoft.graph.downloadUrl": url,
        }))
        .unwrap();
        let shown = format!("{item:?}");
        assert!(
            !shown.contains("tempauth") && !shown.contains("download.aspx"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>") && shown.contains("c:{1},2"), "{shown}");
        let reply = crate::http::Reply {
            status: 302,
            headers: [(
                reqwest::header::LOCATION,
                reqwest::header::HeaderValue::from_static(url),
            )]
            .into_iter()
            .collect(),
            body: bytes::Bytes::from_static(b"file bytes"),
        };
        let shown = format!("{reply:?}");
        assert!(!shown.contains("tempauth") && !shown.contains("file bytes"), "{shown}");
        assert!(shown.contains("location") && shown.contains("302"), "{shown}");
    }

    #[test]
    fn content_range_is_parsed_and_checked() {
        assert_eq!(parse_content_range("bytes 0-1023/2048"), Some((0, 2048)));
        assert_eq!(parse_content_range("bytes 1024-2047/2048"), Some((1024, 2048)));
        assert_eq!(parse_content_range("bytes 5-2/10"), None);
        assert_eq!(parse_content_range("bytes 0-10/10"), None);
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }

    #[test]
    fn same_content_prefers_ctag_then_etag() {
        let v = |etag: Option<&str>, ctag: Option<&str>, size| FileVersion {
            etag: etag.map(str::to_owned),
            ctag: ctag.map(str::to_owned),
            size,
        };
        assert!(v(Some("e1"), Some("c1"), 5).same_content(&v(Some("e2"), Some("c1"), 5)));
        assert!(!v(Some("e1"), Some("c1"), 5).same_content(&v(Some("e1"), Some("c2"), 5)));
        assert!(!v(None, Some("c1"), 5).same_content(&v(None, Some("c1"), 6)));
        assert!(!v(Some("e1"), None, 5).same_content(&v(Some("e2"), None, 5)));
    }
}
