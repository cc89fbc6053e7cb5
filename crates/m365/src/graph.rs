//! Microsoft Graph: users, users' drives through `$batch`, and driveItem delta.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use filetrail_core::model::{DeltaItem, DeltaNext, DeltaPage, DirectoryUser, DriveInfo, DriveLookup, UserRef};
use filetrail_core::ports::{DeltaError, UsersPage};
use futures_util::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::cloud::{Cloud, origin_of};
use crate::error::{ErrorBody, M365Error, ServiceError, ServiceErrorKind};
use crate::http::{Budget, Pipeline, Reply, Verdict};
use crate::retry::{RequestStats, RetryPolicy};
use crate::token::{Credentials, TokenProvider};

/// Most requests in one `$batch` (FACTS §10: "Max 20 requests").
pub const BATCH_MAX_REQUESTS: usize = 20;
/// Page size of `/users` (FACTS §2: max 999 when `signInActivity` is not selected).
pub const USERS_PAGE_SIZE: u32 = 999;
/// `$batch` envelopes of one `user_drives` call in flight at once (our choice: discovery of a
/// large tenant is bounded by batch latency; more parallelism only earns 429s, and a 429 pauses
/// every request of the client anyway).
pub const DEFAULT_BATCH_CONCURRENCY: usize = 4;

/// Properties read from `/users` (FACTS §2: use `$select`).
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,mail";
/// Properties read from `/users/{id}/drive`.
pub const DRIVE_SELECT: &str = "id,driveType,webUrl";
/// Properties the inventory needs from delta (FACTS §4, §5).
pub const DELTA_SELECT: &str = "id,name,size,createdDateTime,lastModifiedDateTime,eTag,cTag,createdBy,lastModifiedBy,\
                                parentReference,file,folder,root,deleted";

/// Characters escaped in a path segment (ids go into paths: `/drives/{id}`).
pub(crate) const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'|')
    .add(b'\\')
    .add(b'^')
    .add(b'[')
    .add(b']');

/// A Microsoft Graph client for one connection. Cheap to clone (clones share the HTTP pool, the
/// token cache, the throttling gate and the counters).
///
/// Every request goes through one retry policy: `Retry-After` (integer, decimal, HTTP date) and
/// `RateLimit-Reset` honoured, a 429/503 pauses every request of the client, backoff with full
/// jitter otherwise, a bounded budget, one token refresh on a 401.
#[derive(Debug, Clone)]
pub struct GraphClient {
    pipeline: Pipeline,
    tokens: Arc<TokenProvider>,
    base: Arc<str>,
    origin: Arc<str>,
    batch_concurrency: usize,
}

impl GraphClient {
    /// A client for the Graph base `graph_base` (with the version: `https://graph.microsoft.com/v1.0`)
    /// using `tokens` for bearer tokens. Fails when the base is not an absolute http(s) URL.
    pub fn new(
        http: reqwest::Client,
        graph_base: &str,
        tokens: Arc<TokenProvider>,
        connection: &str,
        policy: RetryPolicy,
    ) -> Result<Self, M365Error> {
        let base = graph_base.trim().trim_end_matches('/').to_owned();
        let origin = origin_of(&base).ok_or_else(|| M365Error::Config {
            message: format!("the Graph URL `{graph_base}` is not an absolute http(s) URL"),
            fix: "give the Graph base in full, for example `https://graph.microsoft.com/v1.0`".to_owned(),
        })?;
        Ok(Self {
            pipeline: Pipeline::new(http, policy, connection),
            tokens,
            base: Arc::from(base),
            origin: Arc::from(origin),
            batch_concurrency: DEFAULT_BATCH_CONCURRENCY,
        })
    }

    /// A client for `cloud` with its own Graph token provider (same retry policy).
    pub fn connect(
        http: reqwest::Client,
        cloud: &Cloud,
        credentials: Credentials,
        connection: &str,
        policy: RetryPolicy,
    ) -> Result<Self, M365Error> {
        let tokens = TokenProvider::for_graph(http.clone(), cloud, credentials, connection, policy.clone());
        Self::new(http, cloud.graph(), Arc::new(tokens), connection, policy)
    }

    /// How many `$batch` envelopes [`Self::user_drives`] keeps in flight (at least 1).
    pub fn with_batch_concurrency(mut self, n: usize) -> Self {
        self.batch_concurrency = n.max(1);
        self
    }

    /// The connection label used in messages.
    pub fn connection(&self) -> &str {
        &self.pipeline.connection
    }

    /// The Graph base URL (with the version).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The token provider (to invalidate it, or to count token requests).
    pub fn tokens(&self) -> &Arc<TokenProvider> {
        &self.tokens
    }

    /// HTTP requests sent to Graph (a `$batch` counts once; token requests not included).
    pub fn requests(&self) -> u64 {
        self.pipeline.counters.snapshot().requests
    }

    /// Requests and batch entries sent again after a failure.
    pub fn retries(&self) -> u64 {
        self.pipeline.counters.snapshot().retries
    }

    /// Throttled responses and batch entries (429, 503, throttling codes).
    pub fn throttled(&self) -> u64 {
        self.pipeline.counters.snapshot().throttled
    }

    /// All counters at once.
    pub fn stats(&self) -> RequestStats {
        self.pipeline.counters.snapshot()
    }

    /// GETs a Graph resource and parses it as `T`. `url_or_path` is either a path below the base
    /// (`/users/x/drive`) or an absolute link returned by Graph (used verbatim; it must point at
    /// the configured Graph host, so a stored link cannot send the token elsewhere).
    pub async fn get_json<T: DeserializeOwned>(&self, url_or_path: &str) -> Result<T, M365Error> {
        let url = self.resolve(url_or_path)?;
        let reply = self.get(&url).await?;
        self.decode(&reply, &operation("GET", &url))
    }

    /// One page of the tenant's users: the first (`$select`ed, `$top=999`) when `link` is `None`,
    /// else the page behind a `next_link` returned earlier, used verbatim.
    pub async fn users_page(&self, link: Option<&str>) -> Result<UsersPage, M365Error> {
        let url = match link {
            Some(link) => self.resolve(link)?,
            None => format!("{}/users?$select={USER_SELECT}&$top={USERS_PAGE_SIZE}", self.base),
        };
        let page: WireUsersPage = self.get_json(&url).await?;
        let users = page
            .value
            .into_iter()
            .map(|u| DirectoryUser {
                id: u.id,
                user_principal_name: u.user_principal_name.unwrap_or_default(),
                display_name: u.display_name,
                mail: u.mail,
            })
            .collect();
        Ok(UsersPage {
            users,
            next_link: page.next_link,
        })
    }

    /// The OneDrive of each user, one answer per user in the given order, looked up with `$batch`
    /// ([`BATCH_MAX_REQUESTS`] per envelope). A 404 (`ResourceNotFound`, `UnknownError`…) or a 400
    /// "Unable to retrieve user's mysite URL." means [`DriveLookup::NoDrive`] with the reason kept
    /// (FACTS §3); a drive of another type than `business` is still `Found` (the caller decides).
    /// Throttled or failed entries (429, 503, 5xx) are sent again — only those, after the longest
    /// inner `Retry-After` — within the retry budget; any other error fails the whole call.
    pub async fn user_drives(&self, users: &[DirectoryUser]) -> Result<Vec<DriveLookup>, M365Error> {
        let batches: Vec<_> = users
            .chunks(BATCH_MAX_REQUESTS)
            .map(|chunk| self.drives_batch(chunk))
            .collect();
        let answers: Vec<Vec<DriveLookup>> = futures_util::stream::iter(batches)
            .buffered(self.batch_concurrency)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// One page of a drive's delta: the start of a full walk (`$select`ed) when `link` is `None`,
    /// else the page behind a next link or delta link, used verbatim. A 410 (or a `resync*`
    /// code) fails with [`DeltaError::ResyncRequired`] carrying the `Location` restart link.
    pub async fn delta_page(&self, drive_id: &str, link: Option<&str>) -> Result<DeltaPage, DeltaError> {
        self.delta_page_raw(drive_id, link)
            .await
            .map_err(|e| match resync_of(&e) {
                Some(resync) => resync,
                None => DeltaError::Port(e.into()),
            })
    }

    async fn delta_page_raw(&self, drive_id: &str, link: Option<&str>) -> Result<DeltaPage, M365Error> {
        let url = match link {
            Some(link) => self.resolve(link)?,
            None => format!(
                "{}/drives/{}/root/delta?$select={DELTA_SELECT}",
                self.base,
                utf8_percent_encode(drive_id, PATH_SEGMENT)
            ),
        };
        let page: WireDeltaPage = self.get_json(&url).await?;
        let next = match (page.next_link, page.delta_link) {
            (Some(next), _) => DeltaNext::NextLink(next),
            (None, Some(delta)) => DeltaNext::DeltaLink(delta),
            (None, None) => {
                return Err(M365Error::Decode {
                    connection: self.connection().to_owned(),
                    operation: operation("GET", &url),
                    message: "delta page has neither @odata.nextLink nor @odata.deltaLink".to_owned(),
                });
            }
        };
        Ok(DeltaPage {
            items: page.value.into_iter().map(WireItem::into_delta_item).collect(),
            next,
        })
    }

    /// Looks up the drives of at most [`BATCH_MAX_REQUESTS`] users in one `$batch`, sending again
    /// only the entries that failed transiently, until all are answered or the budget is spent.
    async fn drives_batch(&self, users: &[DirectoryUser]) -> Result<Vec<DriveLookup>, M365Error> {
        let url = format!("{}/$batch", self.base);
        let op = operation("POST", &url);
        let mut answers: Vec<Option<DriveLookup>> = vec![None; users.len()];
        let mut pending: Vec<usize> = (0..users.len()).collect();
        let mut budget = Budget::default();
        let mut reauthed = false;
        while !pending.is_empty() {
            budget.attempts += 1;
            let requests: Vec<Value> = pending
                .iter()
                .map(|&i| {
                    let user = utf8_percent_encode(&users[i].id, PATH_SEGMENT);
                    json!({ "id": i.to_string(), "method": "GET", "url": format!("/users/{user}/drive?$select={DRIVE_SELECT}") })
                })
                .collect();
            let body = json!({ "requests": requests });
            self.pipeline.counters.batched(pending.len() as u64);
            let reply = self
                .pipeline
                .execute(
                    &op,
                    &*self.tokens,
                    |http, token| authorized(http.post(&url).json(&body), token),
                    |r| self.verdict(r, &op, "Files.Read.All"),
                )
                .await?;
            let batch: WireBatchResponse = self.decode(&reply, &op)?;
            // Answers come in any order (FACTS §10): match them by id.
            let mut by_id: HashMap<usize, WireBatchEntry> = batch
                .responses
                .into_iter()
                .filter_map(|e| e.id.trim().parse::<usize>().ok().map(|i| (i, e)))
                .filter(|(i, _)| pending.contains(i))
                .collect();

            let mut again = Vec::new();
            let (mut longest, mut pause_all, mut reauth) = (None::<Duration>, false, false);
            let mut last_cause = None;
            for &i in &pending {
                match self.batch_entry(by_id.remove(&i), &users[i], &op, reauthed)? {
                    EntryOutcome::Answer(lookup) => answers[i] = Some(lookup),
                    EntryOutcome::Again {
                        after,
                        throttled,
                        rejected_token,
                        cause,
                    } => {
                        if throttled {
                            pause_all = true;
                            self.pipeline.counters.throttle(1);
                        }
                        reauth |= rejected_token;
                        longest = longest.max(after);
                        last_cause = Some(cause);
                        again.push(i);
                    }
                }
            }
            let Some(cause) = last_cause else { break };
            if reauth {
                reauthed = true;
                self.tokens.invalidate().await;
            }
            let wait = if reauth && longest.is_none() && !pause_all {
                Duration::ZERO
            } else {
                budget.next_wait(&self.pipeline.policy, longest, cause)?
            };
            tracing::debug!(
                connection = %self.connection(),
                entries = again.len(),
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying $batch entries"
            );
            self.pipeline.counters.retry(again.len() as u64);
            self.pipeline.pause(wait, pause_all).await;
            budget.waited += wait;
            pending = again;
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// Decides one `$batch` entry: an answer (found / no drive), a transient failure to send
    /// again, or an error that fails the whole lookup.
    fn batch_entry(
        &self,
        entry: Option<WireBatchEntry>,
        user: &DirectoryUser,
        batch_op: &str,
        reauthed: bool,
    ) -> Result<EntryOutcome, M365Error> {
        let Some(entry) = entry else {
            let cause = M365Error::Decode {
                connection: self.connection().to_owned(),
                operation: batch_op.to_owned(),
                message: format!("the $batch response has no answer for user {}", user.id),
            };
            return Ok(EntryOutcome::Again {
                after: None,
                throttled: false,
                rejected_token: false,
                cause,
            });
        };
        let op = format!("GET /users/{}/drive (in $batch)", user.id);
        if (200..300).contains(&entry.status) {
            let drive: WireDrive = serde_json::from_value(entry.body).map_err(|e| M365Error::Decode {
                connection: self.connection().to_owned(),
                operation: op,
                message: e.to_string(),
            })?;
            return Ok(EntryOutcome::Answer(DriveLookup::Found(DriveInfo {
                id: drive.id,
                drive_type: drive.drive_type.unwrap_or_default(),
                web_url: drive.web_url,
            })));
        }
        let after = entry.retry_after();
        let body = ErrorBody::parse(entry.body.to_string().as_bytes());
        let error = ServiceError::new(
            self.connection(),
            op,
            entry.status,
            &body,
            after,
            None,
            "Files.Read.All",
        );
        if let Some(reason) = no_drive_reason(&error) {
            return Ok(EntryOutcome::Answer(DriveLookup::NoDrive { reason }));
        }
        match error.kind {
            ServiceErrorKind::InvalidAuthenticationToken if !reauthed => Ok(EntryOutcome::Again {
                after: None,
                throttled: false,
                rejected_token: true,
                cause: error.into(),
            }),
            ServiceErrorKind::InvalidAuthenticationToken => Err(error.into()),
            kind if kind.is_retryable() => Ok(EntryOutcome::Again {
                after,
                throttled: kind.pauses_client(),
                rejected_token: false,
                cause: error.into(),
            }),
            _ => Err(error.into()),
        }
    }

    async fn get(&self, url: &str) -> Result<Reply, M365Error> {
        let op = operation("GET", url);
        let permission = permission_for(url);
        self.pipeline
            .execute(
                &op,
                &*self.tokens,
                |http, token| authorized(http.get(url), token),
                |r| self.verdict(r, &op, permission),
            )
            .await
    }

    fn verdict(&self, reply: &Reply, op: &str, permission: &str) -> Verdict {
        if reply.is_success() {
            return Verdict::Done;
        }
        let retry_after = reply.retry_after();
        let error = ServiceError::new(
            self.connection(),
            op.to_owned(),
            reply.status,
            &ErrorBody::parse(&reply.body),
            retry_after,
            reply.header("location"),
            permission,
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

    fn decode<T: DeserializeOwned>(&self, reply: &Reply, op: &str) -> Result<T, M365Error> {
        serde_json::from_slice(&reply.body).map_err(|e| M365Error::Decode {
            connection: self.connection().to_owned(),
            operation: op.to_owned(),
            message: e.to_string(),
        })
    }

    /// A path below the base, or an absolute link that must point at the Graph origin.
    fn resolve(&self, url_or_path: &str) -> Result<String, M365Error> {
        let s = url_or_path.trim();
        if s.starts_with("http://") || s.starts_with("https://") {
            if origin_of(s).as_deref() == Some(&*self.origin) {
                return Ok(s.to_owned());
            }
            return Err(M365Error::Config {
                message: format!(
                    "connection `{}`: the link `{}` does not point at the Graph host {}",
                    self.connection(),
                    truncate_link(s),
                    self.origin
                ),
                fix: "links must come from this connection's Graph responses; restart the walk without the stored link"
                    .to_owned(),
            });
        }
        let path = s.strip_prefix(&*self.base).unwrap_or(s);
        Ok(format!("{}/{}", self.base, path.trim_start_matches('/')))
    }
}

/// What became of one `$batch` entry.
enum EntryOutcome {
    Answer(DriveLookup),
    Again {
        after: Option<Duration>,
        throttled: bool,
        rejected_token: bool,
        cause: M365Error,
    },
}

fn authorized(request: reqwest::RequestBuilder, token: Option<&crate::token::AccessToken>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => request.bearer_auth(t.secret()),
        None => request,
    }
}

/// `GET /v1.0/users`: method and path without the query, for messages.
fn operation(method: &str, url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{method} {}", u.path()),
        Err(_) => format!("{method} {}", url.split('?').next().unwrap_or(url)),
    }
}

fn truncate_link(link: &str) -> &str {
    link.split('?').next().unwrap_or(link)
}

/// The application permission a Graph path needs (FACTS §1), for the fix of a 403.
fn permission_for(url: &str) -> &'static str {
    let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    if path.contains("/drive") || path.contains("/items") {
        "Files.Read.All"
    } else if path.contains("/messages") || path.contains("/mailfolders") {
        "Mail.Read"
    } else if path.contains("/groups") {
        "GroupMember.Read.All"
    } else if path.contains("/users") {
        "User.Read.All"
    } else {
        "required by this request"
    }
}

/// Whether a failed drive lookup means "this user has no OneDrive" (FACTS §3: 404
/// `ResourceNotFound` "User's mysite not found.", 404 `UnknownError`, 400 "Unable to retrieve
/// user's mysite URL."), with the reason to keep.
fn no_drive_reason(error: &ServiceError) -> Option<String> {
    let mysite = error.message.to_ascii_lowercase().contains("mysite");
    (error.status == 404 || (error.status == 400 && mysite)).then(|| {
        if error.message.is_empty() {
            error.code.clone()
        } else {
            format!("{}: {}", error.code, error.message)
        }
    })
}

/// The resync error of a delta request, if that is what failed.
fn resync_of(error: &M365Error) -> Option<DeltaError> {
    let service = error.service()?;
    if service.kind != ServiceErrorKind::ResyncRequired && service.status != 410 {
        return None;
    }
    let code = service
        .codes
        .iter()
        .rev()
        .find(|c| c.to_ascii_lowercase().starts_with("resync"))
        .cloned()
        .unwrap_or_else(|| "resyncRequired".to_owned());
    Some(DeltaError::ResyncRequired {
        code,
        restart_link: service.location.clone(),
    })
}

#[derive(Deserialize)]
struct WireUsersPage {
    #[serde(default)]
    value: Vec<WireUser>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUser {
    id: String,
    #[serde(default)]
    user_principal_name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    mail: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDrive {
    id: String,
    #[serde(default)]
    drive_type: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct WireBatchResponse {
    #[serde(default)]
    responses: Vec<WireBatchEntry>,
}

#[derive(Deserialize)]
struct WireBatchEntry {
    #[serde(deserialize_with = "string_or_number")]
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, Value>,
    #[serde(default)]
    body: Value,
}

impl WireBatchEntry {
    /// The entry's own `Retry-After` / `RateLimit-Reset` (FACTS §10: inner 429s carry their own).
    fn retry_after(&self) -> Option<Duration> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&text),
            ) {
                map.insert(n, v);
            }
        }
        crate::retry::retry_after_from_headers(&map, std::time::SystemTime::now())
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[derive(Deserialize)]
struct WireDeltaPage {
    #[serde(default)]
    value: Vec<WireItem>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireItem {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    created_date_time: Option<String>,
    #[serde(default)]
    last_modified_date_time: Option<String>,
    #[serde(rename = "eTag", default)]
    e_tag: Option<String>,
    #[serde(rename = "cTag", default)]
    c_tag: Option<String>,
    #[serde(default)]
    created_by: Option<WireIdentitySet>,
    #[serde(default)]
    last_modified_by: Option<WireIdentitySet>,
    #[serde(default)]
    parent_reference: Option<WireParent>,
    #[serde(default)]
    file: Option<WireFile>,
    #[serde(default)]
    folder: Option<Value>,
    #[serde(default)]
    root: Option<Value>,
    #[serde(default)]
    deleted: Option<Value>,
    #[serde(rename = "@removed", default)]
    removed: Option<Value>,
}

#[derive(Deserialize)]
struct WireIdentitySet {
    #[serde(default)]
    user: Option<WireIdentity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentity {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct WireParent {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFile {
    #[serde(default)]
    mime_type: Option<String>,
}

impl WireItem {
    fn into_delta_item(self) -> DeltaItem {
        let present = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let is_root = present(&self.root);
        let user = |set: Option<WireIdentitySet>| {
            set.and_then(|s| s.user).map(|u| UserRef {
                id: u.id,
                display_name: u.display_name,
                email: u.email,
            })
        };
        DeltaItem {
            is_root,
            is_folder: present(&self.folder) || is_root,
            deleted: present(&self.deleted) || present(&self.removed),
            size: self
                .size
                .as_ref()
                .and_then(|s| s.as_u64().or_else(|| s.as_str().and_then(|t| t.parse().ok()))),
            created_at: parse_time(self.created_date_time.as_deref(), &self.id),
            modified_at: parse_time(self.last_modified_date_time.as_deref(), &self.id),
            parent_id: self.parent_reference.and_then(|p| p.id),
            mime_type: self.file.and_then(|f| f.mime_type),
            created_by: user(self.created_by),
            modified_by: user(self.last_modified_by),
            etag: self.e_tag,
            ctag: self.c_tag,
            name: self.name,
            id: self.id,
        }
    }
}

/// Parses a Graph timestamp; a malformed one is logged and dropped rather than failing the page.
fn parse_time(raw: Option<&str>, item_id: &str) -> Option<DateTime<Utc>> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            tracing::warn!(item_id, value = raw, error = %e, "unreadable timestamp in delta item");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn delta_sample_pages_parse_into_items_and_links() {
        let first: WireDeltaPage =
            serde_json::from_str(include_str!("../tests/fixtures/graph-drive-delta-page-first.json")).unwrap();
        assert!(first.next_link.is_some() && first.delta_link.is_none());
        let items: Vec<_> = first.value.into_iter().map(WireItem::into_delta_item).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_folder && !items[0].deleted);
        assert!(!items[1].is_folder && !items[1].deleted);
        assert!(items[2].deleted);
        let last: WireDeltaPage =
            serde_json::from_str(include_str!("../tests/fixtures/graph-drive-delta-page-last.json")).unwrap();
        assert!(last.delta_link.is_some());
    }

    #[test]
    fn delta_item_maps_root_parent_creator_and_mime_type() {
        let item: WireItem = serde_json::from_value(json!({
            "id": "01A", "name": "report.docx", "size": 1234,
            "createdDateTime": "2024-01-02T03:04:05Z", "lastModifiedDateTime": "not a date",
            "eTag": "\"{E},2\"", "cTag": "\"c:{E},3\"",
            "createdBy": {"user": {"id": "u1", "displayName": "Ada", "email": "ada@contoso.com"}},
            "parentReference": {"driveId": "b!x", "id": "01P"},
            "file": {"mimeType": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
        }))
        .unwrap();
        let d = item.into_delta_item();
        assert_eq!(d.parent_id.as_deref(), Some("01P"));
        assert_eq!(d.size, Some(1234));
        assert!(!d.is_root && !d.is_folder && !d.deleted);
        assert_eq!(d.created_by.unwrap().email.as_deref(), Some("ada@contoso.com"));
        assert!(d.created_at.is_some());
        assert!(d.modified_at.is_none(), "a malformed date is dropped, not fatal");
        assert!(d.mime_type.unwrap().contains("wordprocessingml"));
        let root: WireItem =
            serde_json::from_value(json!({"id": "R", "root": {}, "folder": {"childCount": 3}})).unwrap();
        let root = root.into_delta_item();
        assert!(root.is_root && root.is_folder);
    }

    #[test]
    fn mysite_and_404_shapes_mean_no_drive_but_403_does_not() {
        let shapes = [
            (
                404,
                r#"{"error":{"code":"ResourceNotFound","message":"User's mysite not found."}}"#,
            ),
            (
                404,
                r#"{"error":{"code":"UnknownError","message":"404 FILE NOT FOUND"}}"#,
            ),
            (
                400,
                r#"{"error":{"code":"BadRequest","message":"Unable to retrieve user's mysite URL."}}"#,
            ),
        ];
        for (status, body) in shapes {
            let e = ServiceError::new(
                "c",
                "GET".into(),
                status,
                &ErrorBody::parse(body.as_bytes()),
                None,
                None,
                "x",
            );
            let reason = no_drive_reason(&e).unwrap();
            assert!(
                reason.to_lowercase().contains("not found") || reason.contains("mysite"),
                "{reason}"
            );
        }
        let denied = ServiceError::new(
            "c",
            "GET".into(),
            403,
            &ErrorBody::parse(br#"{"error":{"code":"accessDenied","message":"no"}}"#),
            None,
            None,
            "x",
        );
        assert!(no_drive_reason(&denied).is_none());
        let bad = ServiceError::new(
            "c",
            "GET".into(),
            400,
            &ErrorBody::parse(br#"{"error":{"code":"BadRequest"}}"#),
            None,
            None,
            "x",
        );
        assert!(no_drive_reason(&bad).is_none());
    }

    #[test]
    fn batch_entry_retry_after_is_read_from_inner_headers() {
        let entry: WireBatchEntry = serde_json::from_value(json!({
            "id": 3, "status": 429, "headers": {"Retry-After": "2.5"}, "body": {"error": {"code": "TooManyRequests"}}
        }))
        .unwrap();
        assert_eq!(entry.id, "3");
        assert_eq!(entry.retry_after(), Some(Duration::from_millis(2500)));
    }

    #[test]
    fn permissions_are_named_after_the_path() {
        assert_eq!(permission_for("https://g/v1.0/users?$top=999"), "User.Read.All");
        assert_eq!(permission_for("https://g/v1.0/users/u/drive"), "Files.Read.All");
        assert_eq!(permission_for("https://g/v1.0/drives/d/root/delta"), "Files.Read.All");
    }
}
