//! Microsoft Graph: users, users' drives through `$batch`, user and group lookups for scoping
//! (`$filter` through `$batch`), groups' transitive user members, and driveItem delta.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use filetrail_core::discover::GROUP_NOT_FOUND;
use filetrail_core::model::{DeltaPage, DirectoryUser, DriveInfo, DriveLookup};
use filetrail_core::ports::{DeltaError, UsersPage};
use filetrail_core::scope::{DirectoryGroup, GroupSelector, UserSelector};
use futures_util::{StreamExt, TryStreamExt};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::cloud::{Cloud, origin_of};
use crate::error::{ErrorBody, M365Error, ServiceError, ServiceErrorKind};
use crate::http::{Budget, Pipeline, Reply, Verdict};
use crate::retry::{RequestStats, RetryPolicy};
use crate::token::{Credentials, TokenProvider};
use crate::wire::{self, BatchAnswer, HasId, WireDrive, WireGroup, WirePage, WireUser};

/// Most requests in one `$batch` (20: <https://learn.microsoft.com/en-us/graph/json-batching#batch-size-limitations>).
pub const BATCH_MAX_REQUESTS: usize = 20;
/// Page size of `/users` (max 999 when `signInActivity` is not selected:
/// <https://learn.microsoft.com/en-us/graph/api/user-list#optional-query-parameters>).
pub const USERS_PAGE_SIZE: u32 = 999;
/// `$batch` envelopes of one batched lookup (`user_drives`, `find_users`, `find_groups`) in flight
/// at once (our choice: discovery of a large tenant is bounded by batch latency; more parallelism
/// only earns 429s, and a 429 pauses every request of the client anyway).
pub const DEFAULT_BATCH_CONCURRENCY: usize = 4;

/// Properties read from `/users` (use `$select`:
/// <https://learn.microsoft.com/en-us/graph/api/user-list#optional-query-parameters>).
pub const USER_SELECT: &str = "id,userPrincipalName,displayName,mail";
/// Properties read from `/users/{id}/drive`.
pub const DRIVE_SELECT: &str = "id,driveType,webUrl";
/// Properties the inventory needs from delta (<https://learn.microsoft.com/en-us/graph/api/resources/driveitem>,
/// <https://learn.microsoft.com/en-us/graph/api/driveitem-delta>). `sharepointIds` is returned only
/// when selected; its `listItemUniqueId` is the `ListItemUniqueId` of the file's audit records
/// (<https://learn.microsoft.com/en-us/graph/api/resources/driveitem#properties>).
pub const DELTA_SELECT: &str = "id,name,size,createdDateTime,lastModifiedDateTime,eTag,cTag,createdBy,lastModifiedBy,\
                                parentReference,file,folder,root,deleted,shared,sharepointIds";
/// Sent on every delta request: sharing changes annotated `@microsoft.graph.sharedChanged`
/// (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>,
/// <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>;
/// the service needs all three values together, and honours them only for an app holding
/// `Sites.FullControl.All` — otherwise the preference is ignored and delta answers as without it).
pub const DELTA_PREFER: &str = "deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges";

/// Properties read from `/groups` (use `$select`:
/// <https://learn.microsoft.com/en-us/graph/api/group-list#optional-query-parameters>).
pub const GROUP_SELECT: &str = "id,displayName,mail";
/// Page size of group member listings (default 100, max 999 for transitive members:
/// <https://learn.microsoft.com/en-us/graph/api/group-list#optional-query-parameters>).
pub const MEMBERS_PAGE_SIZE: u32 = 999;
/// The advanced-query header: the OData cast on `transitiveMembers` requires it (with
/// `$count=true`: <https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers>), and next links do not
/// carry it (<https://learn.microsoft.com/en-us/graph/paging>).
const CONSISTENCY_LEVEL_EVENTUAL: (&str, &str) = ("ConsistencyLevel", "eventual");

/// Characters escaped in a query value: all but unreserved ones and `'` (readable OData
/// literals).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'\'');

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

    /// How many `$batch` envelopes a batched lookup ([`Self::user_drives`], [`Self::find_users`],
    /// [`Self::find_groups`]) keeps in flight (at least 1).
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

    /// The request pipeline (HTTP client, retry policy, throttling gate, counters), for the
    /// content download in [`crate::content`].
    pub(crate) fn pipeline(&self) -> &Pipeline {
        &self.pipeline
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
        let reply = self.get(&url).await?;
        wire::users_page(&reply.body).map_err(|message| self.decode_failure(&operation("GET", &url), message))
    }

    /// The OneDrive of each user, one answer per user in the given order, looked up with `$batch`
    /// ([`BATCH_MAX_REQUESTS`] per envelope). A 404 (`ResourceNotFound`, `UnknownError`…) or a 400
    /// "Unable to retrieve user's mysite URL." means [`DriveLookup::NoDrive`] with the reason kept
    /// (<https://learn.microsoft.com/en-us/graph/api/drive-get>); a drive of another type than `business` is still
    /// `Found` (the caller decides).
    /// Throttled or failed entries (429, 503, 5xx) are sent again — only those, after the longest
    /// inner `Retry-After` — within the retry budget; any other error fails the whole call.
    pub async fn user_drives(&self, users: &[DirectoryUser]) -> Result<Vec<DriveLookup>, M365Error> {
        let gets: Vec<BatchGet> = users
            .iter()
            .map(|user| {
                let id = utf8_percent_encode(&user.id, PATH_SEGMENT);
                BatchGet {
                    url: format!("/users/{id}/drive?$select={DRIVE_SELECT}"),
                    label: format!("GET /users/{}/drive", user.id),
                }
            })
            .collect();
        let decode_drive = |body: Value, op: &str| {
            let drive: WireDrive = serde_json::from_value(body).map_err(|e| self.decode_error(op, &e))?;
            Ok(DriveLookup::Found(DriveInfo {
                id: drive.id,
                drive_type: drive.drive_type.unwrap_or_default(),
                web_url: drive.web_url,
            }))
        };
        let no_drive = |error: &ServiceError| no_drive_reason(error).map(|reason| DriveLookup::NoDrive { reason });
        self.batch_gets(&gets, "Files.Read.All", &decode_drive, &no_drive).await
    }

    /// The item id at each drive path (`/Reports/q3.xlsx`, from the drive root), one answer per
    /// path in the given order, `None` where no item is (deleted or moved since). Addressed as
    /// `/drives/{drive-id}/root:{path}` with each segment percent-encoded, in `$batch` envelopes
    /// like [`Self::user_drives`] (same retries of throttled entries).
    pub async fn items_by_path(&self, drive_id: &str, paths: &[String]) -> Result<Vec<Option<String>>, M365Error> {
        let drive = utf8_percent_encode(drive_id, PATH_SEGMENT);
        let gets: Vec<BatchGet> = paths
            .iter()
            .map(|path| {
                let encoded: Vec<String> = path
                    .split('/')
                    .filter(|segment| !segment.is_empty())
                    .map(|segment| utf8_percent_encode(segment, PATH_SEGMENT).to_string())
                    .collect();
                BatchGet {
                    url: format!("/drives/{drive}/root:/{}?$select=id", encoded.join("/")),
                    label: format!("GET /drives/{drive_id}/root:{path}"),
                }
            })
            .collect();
        let decode_id = |body: Value, op: &str| {
            let item: WireId = serde_json::from_value(body).map_err(|e| self.decode_error(op, &e))?;
            Ok(Some(item.id))
        };
        let absent = |error: &ServiceError| (error.status == 404).then_some(None);
        self.batch_gets(&gets, "Files.Read.All", &decode_id, &absent).await
    }

    /// The users each selector names, one answer per selector in the given order (empty when no
    /// user matches), looked up with `$batch` like [`Self::user_drives`] (same retries of
    /// throttled entries). An email matches `userPrincipalName` or `mail`, a display name
    /// `displayName`, both ignoring case; a display name shared by more users than a page holds
    /// is followed through its next links. A user is listed once per selector.
    pub async fn find_users(&self, selectors: &[UserSelector]) -> Result<Vec<Vec<DirectoryUser>>, M365Error> {
        let filters: Vec<String> = selectors
            .iter()
            .map(|selector| match selector {
                UserSelector::Email(v) => {
                    let v = odata_string(v);
                    format!("userPrincipalName eq {v} or mail eq {v}")
                }
                UserSelector::DisplayName(v) => format!("displayName eq {}", odata_string(v)),
            })
            .collect();
        let answers = self
            .filter_all::<WireUser>("/users", USER_SELECT, &filters, "User.Read.All")
            .await?;
        Ok(answers
            .into_iter()
            .map(|users| users.into_iter().map(WireUser::into_directory_user).collect())
            .collect())
    }

    /// Every object of `collection` matching each filter, one answer per filter in the given
    /// order: the first pages in `$batch` requests, the rest by their next links.
    async fn filter_all<T: DeserializeOwned + HasId>(
        &self,
        collection: &str,
        select: &str,
        filters: &[String],
        permission: &str,
    ) -> Result<Vec<Vec<T>>, M365Error> {
        let gets: Vec<BatchGet> = filters
            .iter()
            .map(|filter| BatchGet {
                url: format!("{collection}?$filter={}&$select={select}", encode_query_value(filter)),
                label: format!("GET {collection}?$filter={filter}"),
            })
            .collect();
        let pages = self
            .batch_gets(&gets, permission, &|body, op| self.decode_value(body, op), &no_answer)
            .await?;
        let mut answers = Vec::with_capacity(pages.len());
        for first in pages {
            answers.push(self.rest_of::<T>(first).await?);
        }
        Ok(answers)
    }

    /// The groups each selector names, one answer per selector in the given order (empty when no
    /// group matches), looked up with `$batch` like [`Self::find_users`]: a display name matches
    /// `displayName` (several groups may share one), a mail address `mail`, both ignoring case.
    pub async fn find_groups(&self, selectors: &[GroupSelector]) -> Result<Vec<Vec<DirectoryGroup>>, M365Error> {
        let filters: Vec<String> = selectors
            .iter()
            .map(|selector| match selector {
                GroupSelector::DisplayName(v) => format!("displayName eq {}", odata_string(v)),
                GroupSelector::Mail(v) => format!("mail eq {}", odata_string(v)),
            })
            .collect();
        let answers = self
            .filter_all::<WireGroup>("/groups", GROUP_SELECT, &filters, "GroupMember.Read.All")
            .await?;
        Ok(answers
            .into_iter()
            .map(|groups| {
                groups
                    .into_iter()
                    .map(|g| DirectoryGroup {
                        id: g.id,
                        display_name: g.display_name.unwrap_or_default(),
                        mail: g.mail,
                    })
                    .collect()
            })
            .collect())
    }

    /// One page of a group's transitive *user* members (nested groups' users included, each
    /// once): the first (`$select`ed, `$top=999`, `$count=true`) when `link` is `None`, else the
    /// page behind a `next_link` returned earlier, used verbatim. Every page is requested with
    /// `ConsistencyLevel: eventual`, which the OData cast requires and next links do not carry
    /// (<https://learn.microsoft.com/en-us/graph/api/group-list-transitivemembers>,
    /// <https://learn.microsoft.com/en-us/graph/paging>). A group that does not exist (404) fails with the code
    /// [`GROUP_NOT_FOUND`], terminal; other errors are retried or classified like every request.
    pub async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> Result<UsersPage, M365Error> {
        let url = match link {
            Some(link) => self.resolve(link)?,
            None => format!(
                "{}/groups/{}/transitiveMembers/microsoft.graph.user?$select={USER_SELECT}&$top={MEMBERS_PAGE_SIZE}&$count=true",
                self.base,
                utf8_percent_encode(group_id, PATH_SEGMENT)
            ),
        };
        let reply = self
            .get_with(&url, &[CONSISTENCY_LEVEL_EVENTUAL])
            .await
            .map_err(|e| group_not_found(e, group_id))?;
        wire::users_page(&reply.body).map_err(|message| self.decode_failure(&operation("GET", &url), message))
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
        let reply = self.get_with(&url, &[("Prefer", DELTA_PREFER)]).await?;
        wire::delta_page(&reply.body).map_err(|message| self.decode_failure(&operation("GET", &url), message))
    }

    /// Sends `gets` as `$batch` envelopes of [`BATCH_MAX_REQUESTS`] (several in flight) and
    /// returns one answer per request, in order. A 2xx entry's body becomes an answer through
    /// `on_success`; an error entry becomes one through `on_error` when it returns `Some` (a
    /// missing drive is an answer, not a failure). Otherwise throttled, unavailable, failed or
    /// missing entries are sent again — only those, after the longest inner `Retry-After` —
    /// within the retry budget; a rejected token is replaced once; any other error fails the
    /// whole call. `permission` names what a 403 lacks.
    pub(crate) async fn batch_gets<T, S, E>(
        &self,
        gets: &[BatchGet],
        permission: &str,
        on_success: &S,
        on_error: &E,
    ) -> Result<Vec<T>, M365Error>
    where
        S: Fn(Value, &str) -> Result<T, M365Error>,
        E: Fn(&ServiceError) -> Option<T>,
    {
        let batches: Vec<_> = gets
            .chunks(BATCH_MAX_REQUESTS)
            .map(|chunk| self.batch_envelope(chunk, permission, on_success, on_error))
            .collect();
        let answers: Vec<Vec<T>> = futures_util::stream::iter(batches)
            .buffered(self.batch_concurrency)
            .try_collect()
            .await?;
        Ok(answers.into_iter().flatten().collect())
    }

    /// Answers at most [`BATCH_MAX_REQUESTS`] GETs with one `$batch` envelope, sending again only
    /// the entries that failed transiently, until all are answered or the budget is spent.
    async fn batch_envelope<T, S, E>(
        &self,
        gets: &[BatchGet],
        permission: &str,
        on_success: &S,
        on_error: &E,
    ) -> Result<Vec<T>, M365Error>
    where
        S: Fn(Value, &str) -> Result<T, M365Error>,
        E: Fn(&ServiceError) -> Option<T>,
    {
        let url = format!("{}/$batch", self.base);
        let op = operation("POST", &url);
        let mut answers: Vec<Option<T>> = gets.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..gets.len()).collect();
        let mut budget = Budget::default();
        let mut reauthed = false;
        while !pending.is_empty() {
            budget.attempts += 1;
            let requests: Vec<Value> = pending
                .iter()
                .map(|&i| json!({ "id": i.to_string(), "method": "GET", "url": gets[i].url }))
                .collect();
            let body = json!({ "requests": requests });
            self.pipeline.counters.batched(pending.len() as u64);
            let reply = self
                .pipeline
                .execute(
                    &op,
                    &*self.tokens,
                    |http, token| authorized(http.post(&url).json(&body), token),
                    |r| self.verdict(r, &op, permission),
                )
                .await?;
            let batch = wire::batch_response(&reply.body, SystemTime::now())
                .map_err(|message| self.decode_failure(&op, message))?;
            // Answers come in any order (https://learn.microsoft.com/en-us/graph/json-batching): match them by id.
            let mut by_id: HashMap<usize, BatchAnswer> = batch
                .into_iter()
                .filter_map(|e| e.id.map(|i| (i, e)))
                .filter(|(i, _)| pending.contains(i))
                .collect();

            let mut again = Vec::new();
            let (mut longest, mut pause_all, mut reauth) = (None::<Duration>, false, false);
            let mut last_cause = None;
            for &i in &pending {
                let entry = by_id.remove(&i);
                match self.batch_entry(entry, &gets[i], &op, permission, reauthed, on_success, on_error)? {
                    EntryOutcome::Answer(answer) => answers[i] = Some(answer),
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

    /// Decides one `$batch` entry: an answer, a transient failure to send again, or an error that
    /// fails the whole call.
    #[allow(clippy::too_many_arguments)]
    fn batch_entry<T, S, E>(
        &self,
        entry: Option<BatchAnswer>,
        get: &BatchGet,
        batch_op: &str,
        permission: &str,
        reauthed: bool,
        on_success: &S,
        on_error: &E,
    ) -> Result<EntryOutcome<T>, M365Error>
    where
        S: Fn(Value, &str) -> Result<T, M365Error>,
        E: Fn(&ServiceError) -> Option<T>,
    {
        let Some(entry) = entry else {
            let cause = M365Error::Decode {
                connection: self.connection().to_owned(),
                operation: batch_op.to_owned(),
                message: format!("the $batch response has no answer for {}", get.label),
            };
            return Ok(EntryOutcome::Again {
                after: None,
                throttled: false,
                rejected_token: false,
                cause,
            });
        };
        let op = format!("{} (in $batch)", get.label);
        if (200..300).contains(&entry.status) {
            return on_success(entry.body, &op).map(EntryOutcome::Answer);
        }
        let after = entry.retry_after;
        let body = ErrorBody::parse(entry.body.to_string().as_bytes());
        let error = ServiceError::new(self.connection(), op, entry.status, &body, after, None, permission);
        if let Some(answer) = on_error(&error) {
            return Ok(EntryOutcome::Answer(answer));
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

    /// The items of a first page and of every page after it (next links followed verbatim),
    /// each id once.
    async fn rest_of<T: DeserializeOwned + HasId>(&self, first: WirePage<T>) -> Result<Vec<T>, M365Error> {
        let mut seen = HashSet::new();
        let mut items: Vec<T> = first
            .value
            .into_iter()
            .filter(|i| seen.insert(i.id().to_owned()))
            .collect();
        let mut next = first.next_link;
        while let Some(link) = next {
            let page: WirePage<T> = self.get_json(&link).await?;
            items.extend(page.value.into_iter().filter(|i| seen.insert(i.id().to_owned())));
            next = page.next_link;
        }
        Ok(items)
    }

    async fn get(&self, url: &str) -> Result<Reply, M365Error> {
        self.get_with(url, &[]).await
    }

    /// GETs `url` with extra request headers, through the retry policy.
    pub(crate) async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Result<Reply, M365Error> {
        let op = operation("GET", url);
        let permission = permission_for(url);
        self.pipeline
            .execute(
                &op,
                &*self.tokens,
                |http, token| {
                    let request = headers
                        .iter()
                        .fold(http.get(url), |r, (name, value)| r.header(*name, *value));
                    authorized(request, token)
                },
                |r| self.verdict(r, &op, permission),
            )
            .await
    }

    pub(crate) fn verdict(&self, reply: &Reply, op: &str, permission: &str) -> Verdict {
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

    /// Parses a body as `T`, which Graph sends as a JSON object (see [`wire::Obj`]).
    pub(crate) fn decode<T: DeserializeOwned>(&self, reply: &Reply, op: &str) -> Result<T, M365Error> {
        serde_json::from_slice::<wire::Obj<T>>(&reply.body)
            .map(|o| o.0)
            .map_err(|e| self.decode_error(op, &e))
    }

    /// Parses a `$batch` entry's body as `T` (an object, as [`Self::decode`]).
    fn decode_value<T: DeserializeOwned>(&self, body: Value, op: &str) -> Result<T, M365Error> {
        serde_json::from_value::<wire::Obj<T>>(body)
            .map(|o| o.0)
            .map_err(|e| self.decode_error(op, &e))
    }

    pub(crate) fn decode_error(&self, op: &str, e: &serde_json::Error) -> M365Error {
        self.decode_failure(op, e.to_string())
    }

    /// A body that [`crate::wire`] could not read.
    fn decode_failure(&self, op: &str, message: String) -> M365Error {
        M365Error::Decode {
            connection: self.connection().to_owned(),
            operation: op.to_owned(),
            message,
        }
    }

    /// A path below the base, or an absolute link that must point at the Graph origin.
    pub(crate) fn resolve(&self, url_or_path: &str) -> Result<String, M365Error> {
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

/// One GET sent inside `$batch`: its URL relative to the version root, and how messages name it.
pub(crate) struct BatchGet {
    pub(crate) url: String,
    pub(crate) label: String,
}

/// Any Graph object, by id only.
#[derive(Deserialize)]
struct WireId {
    id: String,
}

/// What became of one `$batch` entry.
enum EntryOutcome<T> {
    Answer(T),
    Again {
        after: Option<Duration>,
        throttled: bool,
        rejected_token: bool,
        cause: M365Error,
    },
}

pub(crate) fn authorized(
    request: reqwest::RequestBuilder,
    token: Option<&crate::token::AccessToken>,
) -> reqwest::RequestBuilder {
    match token {
        Some(t) => request.bearer_auth(t.secret()),
        None => request,
    }
}

/// `GET /v1.0/users`: method and path without the query, for messages.
pub(crate) fn operation(method: &str, url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!("{method} {}", u.path()),
        Err(_) => format!("{method} {}", url.split('?').next().unwrap_or(url)),
    }
}

fn truncate_link(link: &str) -> &str {
    link.split('?').next().unwrap_or(link)
}

/// The application permission a Graph path needs (<https://learn.microsoft.com/en-us/graph/permissions-reference>),
/// for the fix of a 403.
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

/// Whether a failed drive lookup means "this user has no OneDrive"
/// (<https://learn.microsoft.com/en-us/graph/api/drive-get>: 404
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

/// For lookups where every error entry is a failure (or retried), never an answer.
fn no_answer<T>(_: &ServiceError) -> Option<T> {
    None
}

/// An OData string literal: single-quoted, a quote inside doubled (`O'Brien` → `'O''Brien'`).
fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Percent-encodes a query value (a `$filter` expression): everything but unreserved characters
/// and `'`, so `+`, `&`, `#`, `%`, spaces and non-ASCII letters reach Graph intact.
fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// A 404 of a group member listing becomes [`GROUP_NOT_FOUND`]: the group was deleted (or never
/// existed), which the caller reports rather than failing on. Other errors pass unchanged.
fn group_not_found(error: M365Error, group_id: &str) -> M365Error {
    match error {
        M365Error::Service(mut e) if e.status == 404 || e.kind == ServiceErrorKind::NotFound => {
            e.code = GROUP_NOT_FOUND.to_owned();
            e.fix = Some(format!(
                "group {group_id} no longer exists in the directory; remove it from the scope list or upload the \
                 list again"
            ));
            M365Error::Service(e)
        }
        other => other,
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
    fn odata_literals_double_quotes_and_query_values_keep_only_unreserved_characters() {
        assert_eq!(odata_string("O'Brien's"), "'O''Brien''s'");
        assert_eq!(
            encode_query_value("mail eq 'a+b@x.com' or displayName eq 'Zoë & Co #1'"),
            "mail%20eq%20'a%2Bb%40x.com'%20or%20displayName%20eq%20'Zo%C3%AB%20%26%20Co%20%231'"
        );
    }

    #[test]
    fn a_404_on_members_becomes_group_not_found_and_other_errors_pass() {
        let service = |status: u16, code: &str| {
            M365Error::from(ServiceError::new(
                "c",
                "GET /groups/g/transitiveMembers/microsoft.graph.user".into(),
                status,
                &ErrorBody::parse(format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#).as_bytes()),
                None,
                None,
                "GroupMember.Read.All",
            ))
        };
        let gone = group_not_found(service(404, "Request_ResourceNotFound"), "g");
        assert_eq!(gone.code(), GROUP_NOT_FOUND);
        assert_eq!(gone.retry_class(), filetrail_core::RetryClass::Terminal);
        assert!(gone.fix().is_some_and(|f| f.contains("group g")));
        assert_eq!(
            gone.service().map(|e| e.codes.clone()),
            Some(vec!["Request_ResourceNotFound".to_owned()])
        );
        let denied = group_not_found(service(403, "Authorization_RequestDenied"), "g");
        assert_eq!(denied.code(), "Authorization_RequestDenied");
    }

    #[test]
    fn permissions_are_named_after_the_path() {
        assert_eq!(
            permission_for("https://g/v1.0/groups/x/transitiveMembers/microsoft.graph.user?$top=999"),
            "GroupMember.Read.All"
        );
        assert_eq!(permission_for("https://g/v1.0/users?$top=999"), "User.Read.All");
        assert_eq!(permission_for("https://g/v1.0/users/u/drive"), "Files.Read.All");
        assert_eq!(permission_for("https://g/v1.0/drives/d/root/delta"), "Files.Read.All");
    }
}
