//! The Office 365 Management Activity API client
//! (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>):
//! keeps subscriptions started, lists available content blobs page by page (`NextPageUri`) and
//! fetches blobs as raw bytes (the normalisation is `filetrail_core::audit::normalise_blob`'s job).
//!
//! Every request carries `PublisherIdentifier` (the blob GET included: the API reference says
//! requests without it share a common quota) and goes through the crate's one retry pipeline:
//! `AF429` is throttling whatever the HTTP status (403 as the API's FAQ shows it,
//! <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>,
//! or 429), honouring `Retry-After` when present and pausing every request of the client; `AF50000`
//! and 5xx are retried with backoff; a refused token is replaced once. The audit log being off, a
//! missing `ActivityFeed.Read` permission and expired content (`AF20051`) fail with their own codes
//! ([`crate::error::MGMT_AUDIT_LOG_DISABLED`], [`crate::error::MGMT_PERMISSION_MISSING`],
//! [`crate::error::MGMT_CONTENT_EXPIRED`]) and a fix that says what an admin must do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::cloud::{Cloud, origin_of};
use crate::error::{ErrorBody, M365Error, MGMT_PERMISSION_MISSING, ServiceErrorKind, management_error};
use crate::http::{Pipeline, Reply, Verdict};
use crate::retry::{RequestStats, RetryPolicy};
use crate::token::{AccessToken, Credentials, TokenProvider};

/// The content type of SharePoint and OneDrive activity
/// (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const AUDIT_SHAREPOINT: &str = "Audit.SharePoint";
/// Widest `startTime`..`endTime` window the API accepts: 24 hours (`AF20030`; "List available
/// content" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const MAX_CONTENT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long content stays retrievable: 7 days after it became available (`AF20051`; "Errors" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>).
pub const CONTENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most `/subscriptions/content` pages followed in one listing (our guard against a service that
/// keeps answering `NextPageUri`; a 24-hour window of even a large tenant is far fewer pages).
pub const MAX_CONTENT_PAGES: usize = 10_000;
/// The paging header: `NextPageUri` per the API reference ("Pagination" in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>),
/// `NextPageUrl` per its FAQ
/// (<https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
/// Header names are case-insensitive, so these two cover every spelling.
const NEXT_PAGE_HEADERS: [&str; 2] = ["NextPageUri", "NextPageUrl"];
/// The query parameter every call carries
/// (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>,
/// <https://learn.microsoft.com/office/office-365-management-api/troubleshooting-the-office-365-management-activity-api>).
const PUBLISHER_PARAM: &str = "PublisherIdentifier";

/// A subscription as `subscriptions/list` and `subscriptions/start` return it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub content_type: String,
    /// `enabled` or `disabled`; the API reference's `subscriptions/list` sample omits it for one entry.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub webhook: Option<serde_json::Value>,
}

impl Subscription {
    /// Whether content can be listed and fetched.
    pub fn is_enabled(&self) -> bool {
        self.status
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("enabled"))
    }
}

/// What [`ActivityClient::ensure_subscription`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionOutcome {
    /// The subscription was already enabled; nothing was sent but the list.
    AlreadyEnabled,
    /// It was missing, stopped or disabled and has been started.
    Started,
}

/// One available content blob (`subscriptions/content`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentBlob {
    pub content_type: String,
    pub content_id: String,
    /// The URL to fetch, used as given (it contains `$`).
    pub content_uri: String,
    /// When the blob became available.
    #[serde(deserialize_with = "service_time")]
    pub content_created: DateTime<Utc>,
    /// After this the blob cannot be fetched (`AF20051`).
    #[serde(deserialize_with = "service_time")]
    pub content_expiration: DateTime<Utc>,
}

/// One page of a content listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentPage {
    pub blobs: Vec<ContentBlob>,
    /// The next page's URL (`NextPageUri`), as the service gave it.
    pub next_page: Option<String>,
}

/// A Management Activity API client for one connection (one tenant). Cheap to clone (clones share
/// the HTTP pool, the token cache, the throttling gate and the counters).
#[derive(Debug, Clone)]
pub struct ActivityClient {
    pipeline: Pipeline,
    tokens: Arc<TokenProvider>,
    /// `{management}/api/v1.0/{tenant}/activity/feed`.
    feed: Arc<str>,
    /// Scheme and host every URL we send the token to must have.
    origin: Arc<str>,
    publisher: Arc<str>,
}

impl ActivityClient {
    /// A client for tenant `tenant_id` (a GUID: the API's URLs take no domain, `AF20013` in
    /// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>)
    /// on `cloud`'s Management Activity API, with Management API tokens from `tokens`.
    /// `PublisherIdentifier` defaults to `tenant_id`: the API reference wants the GUID of the tenant of the
    /// organisation running the code, which for a deployment monitoring its own tenant is this
    /// one; a deployment serving other tenants sets its own with
    /// [`Self::with_publisher_identifier`]. Fails when the tenant id is not a GUID or the
    /// management URL is not absolute.
    pub fn new(
        http: reqwest::Client,
        cloud: &Cloud,
        tenant_id: &str,
        tokens: Arc<TokenProvider>,
        connection: &str,
        policy: RetryPolicy,
    ) -> Result<Self, M365Error> {
        let tenant = tenant_id.trim();
        if !is_guid(tenant) {
            return Err(M365Error::Config {
                message: format!(
                    "connection `{connection}`: the Management Activity API needs the tenant id as a GUID, got `{tenant}`"
                ),
                fix: "register the connection with the tenant's Directory (tenant) ID from Entra ID > Overview"
                    .to_owned(),
            });
        }
        let management = cloud.management().trim_end_matches('/');
        let origin = origin_of(management).ok_or_else(|| M365Error::Config {
            message: format!("the Management Activity API URL `{management}` is not an absolute http(s) URL"),
            fix: "give the management base in full, for example `https://manage.office.com`".to_owned(),
        })?;
        Ok(Self {
            pipeline: Pipeline::new(http, policy, connection),
            tokens,
            feed: Arc::from(format!("{management}/api/v1.0/{tenant}/activity/feed")),
            origin: Arc::from(origin),
            publisher: Arc::from(tenant),
        })
    }

    /// A client for `cloud` with its own Management API token provider (same retry policy).
    pub fn connect(
        http: reqwest::Client,
        cloud: &Cloud,
        credentials: Credentials,
        connection: &str,
        policy: RetryPolicy,
    ) -> Result<Self, M365Error> {
        let tenant = credentials.tenant_id.clone();
        let tokens = TokenProvider::for_management(http.clone(), cloud, credentials, connection, policy.clone());
        Self::new(http, cloud, &tenant, Arc::new(tokens), connection, policy)
    }

    /// Sends `publisher` (the GUID of the deploying organisation's tenant) as
    /// `PublisherIdentifier` instead of the connection's tenant id.
    pub fn with_publisher_identifier(mut self, publisher: &str) -> Self {
        self.publisher = Arc::from(publisher.trim());
        self
    }

    /// The `PublisherIdentifier` sent on every request.
    pub fn publisher_identifier(&self) -> &str {
        &self.publisher
    }

    /// The connection label used in messages.
    pub fn connection(&self) -> &str {
        &self.pipeline.connection
    }

    /// `{management}/api/v1.0/{tenant}/activity/feed`.
    pub fn feed_url(&self) -> &str {
        &self.feed
    }

    /// Requests, retries and throttled answers so far (token requests not included).
    pub fn stats(&self) -> RequestStats {
        self.pipeline.counters.snapshot()
    }

    /// `GET subscriptions/list`: every subscription of the tenant.
    pub async fn list_subscriptions(&self) -> Result<Vec<Subscription>, M365Error> {
        let url = self.with_publisher(&format!("{}/subscriptions/list", self.feed));
        let reply = self.send(reqwest::Method::GET, &url).await?;
        self.decode(&reply, &url)
    }

    /// `POST subscriptions/start` for `content_type` (no webhook: filetrail polls). Starting an
    /// enabled subscription is harmless but the API's FAQ asks for 15 minutes between repeated
    /// starts, so prefer [`Self::ensure_subscription`].
    pub async fn start_subscription(&self, content_type: &str) -> Result<Subscription, M365Error> {
        let url = self.with_publisher(&format!(
            "{}/subscriptions/start?contentType={}",
            self.feed,
            encode(content_type)
        ));
        let reply = self.send(reqwest::Method::POST, &url).await?;
        let subscription: Subscription = self.decode(&reply, &url)?;
        tracing::info!(
            connection = %self.connection(),
            content_type,
            status = ?subscription.status,
            "activity subscription started"
        );
        Ok(subscription)
    }

    /// Makes sure `content_type` has an enabled subscription: lists, and starts it only when it
    /// is missing, stopped or disabled. Idempotent; an enabled subscription costs one list call.
    pub async fn ensure_subscription(&self, content_type: &str) -> Result<SubscriptionOutcome, M365Error> {
        let subscriptions = self.list_subscriptions().await?;
        let enabled = subscriptions
            .iter()
            .any(|s| s.content_type.eq_ignore_ascii_case(content_type) && s.is_enabled());
        if enabled {
            return Ok(SubscriptionOutcome::AlreadyEnabled);
        }
        self.start_subscription(content_type).await?;
        Ok(SubscriptionOutcome::Started)
    }

    /// Every content blob of `content_type` that became available in `[start, end)`, following
    /// `NextPageUri` (or `NextPageUrl`) to the last page, in the service's order. The window
    /// must not exceed [`MAX_CONTENT_WINDOW`] nor start more than [`CONTENT_RETENTION`] ago
    /// (the service answers `AF20030`). A subscription found missing or disabled (`AF20022`,
    /// `AF20023`) is started and the page asked again, once.
    pub async fn list_content(
        &self,
        content_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Vec<ContentBlob>, M365Error> {
        let mut blobs = Vec::new();
        let mut page = self.content_page(content_type, start, end, None).await?;
        let mut pages = 1;
        loop {
            blobs.append(&mut page.blobs);
            let Some(next) = page.next_page.take() else {
                return Ok(blobs);
            };
            if pages >= MAX_CONTENT_PAGES {
                return Err(M365Error::Decode {
                    connection: self.connection().to_owned(),
                    operation: "GET /subscriptions/content".to_owned(),
                    message: format!("still a NextPageUri after {MAX_CONTENT_PAGES} pages"),
                });
            }
            page = self.content_page(content_type, start, end, Some(&next)).await?;
            pages += 1;
        }
    }

    /// One page of [`Self::list_content`]: the first when `next_page` is `None`, else the page
    /// behind a `next_page` returned earlier (used as given, `PublisherIdentifier` added when it
    /// lacks one). Lets a caller checkpoint between pages.
    pub async fn content_page(
        &self,
        content_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        next_page: Option<&str>,
    ) -> Result<ContentPage, M365Error> {
        let url = match next_page {
            Some(link) => self.checked_link(link)?,
            None => {
                check_window(self.connection(), start, end)?;
                format!(
                    "{}/subscriptions/content?contentType={}&startTime={}&endTime={}",
                    self.feed,
                    encode(content_type),
                    wire_time(start),
                    wire_time(end)
                )
            }
        };
        let url = self.with_publisher(&url);
        let reply = match self.send(reqwest::Method::GET, &url).await {
            Err(e) if needs_start(&e) => {
                tracing::info!(
                    connection = %self.connection(),
                    content_type,
                    code = e.code(),
                    "activity subscription missing or disabled; starting it"
                );
                self.start_subscription(content_type).await?;
                self.send(reqwest::Method::GET, &url).await?
            }
            other => other?,
        };
        let blobs: Vec<ContentBlob> = self.decode(&reply, &url)?;
        let next_page = NEXT_PAGE_HEADERS
            .iter()
            .find_map(|name| reply.header(name))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        tracing::debug!(
            connection = %self.connection(),
            content_type,
            blobs = blobs.len(),
            more = next_page.is_some(),
            "activity content page"
        );
        Ok(ContentPage { blobs, next_page })
    }

    /// `GET {content_uri}` (+ `PublisherIdentifier`): the blob's raw bytes, a JSON array of audit
    /// records. The URI is used as given (its `$` are not re-encoded) and must point at this
    /// connection's Management API host. Expired content fails with `AF20051`, terminal.
    pub async fn fetch_blob(&self, content_uri: &str) -> Result<Bytes, M365Error> {
        let url = self.with_publisher(&self.checked_link(content_uri)?);
        let reply = self.send(reqwest::Method::GET, &url).await?;
        Ok(reply.body)
    }

    /// A URL from the service (a `NextPageUri`, a `contentUri`), accepted only on the Management
    /// API origin, so a stored or forged link cannot send the token elsewhere.
    fn checked_link(&self, link: &str) -> Result<String, M365Error> {
        let link = link.trim();
        if origin_of(link).as_deref() == Some(&*self.origin) {
            return Ok(link.to_owned());
        }
        Err(M365Error::Config {
            message: format!(
                "connection `{}`: the link `{}` does not point at the Management Activity API host {}",
                self.connection(),
                link.split('?').next().unwrap_or(link),
                self.origin
            ),
            fix: "links must come from this connection's Management Activity API responses".to_owned(),
        })
    }

    /// `url` with `PublisherIdentifier` appended unless it already has one; nothing else of the
    /// URL is touched.
    fn with_publisher(&self, url: &str) -> String {
        let has = url.split_once('?').is_some_and(|(_, q)| {
            q.split('&')
                .any(|p| p.to_ascii_lowercase().starts_with("publisheridentifier="))
        });
        if has {
            return url.to_owned();
        }
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{PUBLISHER_PARAM}={}", encode(&self.publisher))
    }

    async fn send(&self, method: reqwest::Method, url: &str) -> Result<Reply, M365Error> {
        let op = operation(method.as_str(), url);
        self.pipeline
            .execute(
                &op,
                &*self.tokens,
                |http, token| authorized(http.request(method.clone(), url), token),
                |r| self.verdict(r, &op),
            )
            .await
    }

    fn verdict(&self, reply: &Reply, op: &str) -> Verdict {
        if reply.is_success() {
            return Verdict::Done;
        }
        let retry_after = reply.retry_after();
        let error = management_error(
            self.connection(),
            op.to_owned(),
            reply.status,
            &ErrorBody::parse(&reply.body),
            retry_after,
        );
        match error.kind {
            ServiceErrorKind::InvalidAuthenticationToken => Verdict::Reauth(error.into()),
            // A token issued before admin consent carries no role: get a fresh one, once.
            ServiceErrorKind::AccessDenied
                if error
                    .codes
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(MGMT_PERMISSION_MISSING)) =>
            {
                Verdict::Reauth(error.into())
            }
            kind if kind.is_retryable() => Verdict::Retry {
                after: retry_after,
                pause_all: kind.pauses_client(),
                cause: error.into(),
            },
            _ => Verdict::Fail(error.into()),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, reply: &Reply, url: &str) -> Result<T, M365Error> {
        serde_json::from_slice(&reply.body).map_err(|e| M365Error::Decode {
            connection: self.connection().to_owned(),
            operation: operation("GET", url),
            message: e.to_string(),
        })
    }
}

/// The core port, over this client. (Kept here rather than in `ports.rs` so the adapter lives
/// with the client it adapts.)
#[async_trait::async_trait]
impl filetrail_core::ports::ActivityFeed for ActivityClient {
    /// See [`ActivityClient::ensure_subscription`].
    async fn ensure_subscription(&self, content_type: &str) -> filetrail_core::ports::PortResult<()> {
        ActivityClient::ensure_subscription(self, content_type)
            .await
            .map(|_| ())
            .map_err(Into::into)
    }

    /// See [`ActivityClient::content_page`]: the `NextPageUri` verbatim, blobs as listed.
    async fn content_page(
        &self,
        content_type: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        next_page: Option<&str>,
    ) -> filetrail_core::ports::PortResult<filetrail_core::activity::ContentPage> {
        let page = ActivityClient::content_page(self, content_type, start, end, next_page).await?;
        Ok(filetrail_core::activity::ContentPage {
            blobs: page
                .blobs
                .into_iter()
                .map(|b| filetrail_core::activity::ContentBlob {
                    content_type: b.content_type,
                    content_id: b.content_id,
                    content_uri: b.content_uri,
                    content_created: b.content_created,
                    content_expiration: Some(b.content_expiration),
                })
                .collect(),
            next_page: page.next_page,
        })
    }

    /// See [`ActivityClient::fetch_blob`]: expired content fails with the terminal code
    /// `AF20051`.
    async fn fetch_blob(&self, content_uri: &str) -> filetrail_core::ports::PortResult<Vec<u8>> {
        Ok(ActivityClient::fetch_blob(self, content_uri).await?.to_vec())
    }
}

/// Whether a listing failed because the subscription is missing (`AF20022`) or disabled
/// (`AF20023`): starting it fixes that.
fn needs_start(e: &M365Error) -> bool {
    e.service()
        .is_some_and(|s| s.codes.iter().any(|c| c == "AF20022" || c == "AF20023"))
}

fn check_window(connection: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Result<(), M365Error> {
    let span = (end - start).to_std().ok();
    match span {
        Some(span) if span <= MAX_CONTENT_WINDOW && wire_time(start) != wire_time(end) => Ok(()),
        _ => Err(M365Error::Config {
            message: format!(
                "connection `{connection}`: content window {} .. {} must run forward and span at most 24 hours",
                wire_time(start),
                wire_time(end)
            ),
            fix: "list activity in windows of at most 24 hours within the last 7 days".to_owned(),
        }),
    }
}

/// `YYYY-MM-DDTHH:MM:SS`, the longest format the API documents (UTC, no offset).
fn wire_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn authorized(request: reqwest::RequestBuilder, token: Option<&AccessToken>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => request.bearer_auth(t.secret()),
        None => request,
    }
}

/// `GET /api/v1.0/{tenant}/activity/feed/subscriptions/content`: method and path, for messages.
fn operation(method: &str, url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let path = path
        .find("://")
        .and_then(|i| path[i + 3..].find('/').map(|j| &path[i + 3 + j..]));
    format!("{method} {}", path.unwrap_or(url))
}

/// `contentCreated` as the service writes it (`2015-05-23T17:35:00.000Z`); a time without an
/// offset is taken as UTC.
fn service_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    DateTime::parse_from_rfc3339(raw.trim())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(raw.trim(), "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .map_err(|e| serde::de::Error::custom(format!("bad time `{raw}`: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_content_list_sample_parses() {
        let sample = r#"[{"contentType":"Audit.SharePoint","contentId":"492638008028$492638008028$f28ab78ad40140608012736e373933ebspo2015043022$4a81a7c326fc4aed89c62e6039ab833b$04","contentUri":"https://manage.office.com/api/v1.0/f28ab78a-d401-4060-8012-736e373933eb/activity/feed/audit/492638008028$492638008028$f28ab78ad40140608012736e373933ebspo2015043022$4a81a7c326fc4aed89c62e6039ab833b$04","contentCreated":"2015-05-23T17:35:00.000Z","contentExpiration":"2015-05-30T17:35:00.000Z"}]"#;
        let blobs: Vec<ContentBlob> = serde_json::from_str(sample).unwrap();
        assert_eq!(blobs[0].content_created.to_rfc3339(), "2015-05-23T17:35:00+00:00");
        assert!(blobs[0].content_uri.contains('$'));
    }

    fn classify(status: u16, body: &str) -> crate::error::ServiceError {
        management_error(
            "c",
            "GET /x".to_owned(),
            status,
            &ErrorBody::parse(body.as_bytes()),
            None,
        )
    }

    #[test]
    fn management_errors_are_classified_by_code_and_text_whatever_the_status() {
        // The shape public reports show when unified audit logging is off: the exception is split
        // across a truncated `code` and the `message`.
        let off = classify(
            400,
            r#"{"error":{"code":"StartSubscription [CorrId=1be932f4-b140-45b6-a970-83c131738fd7][TenantId=ead03517-1798-484e-b93e-0b73f75e43dd,ContentType=Audit.General,ApplicationId=4864ee8e-abc0-41dd-b038-d3226d26d252,PublisherId=4864ee8e-abc0-41dd-b038-d3226d26d252][AppId","message":"864ee8e-abc0-41dd-b038-d3226d26d252] failed. Exception: Microsoft.Office.Compliance.Audit.DataServiceException: Tenant ead03517-1798-484e-b93e-0b73f75e43dd does not exist.\r\n   at Microsoft.Office.Compliance.Audit.API.AzureManager.<GetSubscriptionTableClientForTenantAsync>d__50.MoveNext()"}}"#,
        );
        assert_eq!(off.kind, ServiceErrorKind::AuditLogDisabled);
        assert_eq!(off.code, crate::error::MGMT_AUDIT_LOG_DISABLED);
        assert!(
            off.message.contains("tenant ead03517-1798-484e-b93e-0b73f75e43dd"),
            "{}",
            off.message
        );
        assert!(off.fix.as_deref().unwrap().contains("Purview"));

        let no_role = classify(
            401,
            r#"{"error":{"code":"AF10001","message":"The permission set (ServiceHealth.Read) sent in the request did not include the expected permission ActivityFeed.Read."}}"#,
        );
        assert_eq!(no_role.kind, ServiceErrorKind::AccessDenied);
        assert!(no_role.fix.as_deref().unwrap().contains("Office 365 Management APIs"));

        let expired = classify(
            400,
            r#"{"error":{"code":"AF20051","message":"Content requested with the key x has already expired."}}"#,
        );
        assert_eq!(expired.kind, ServiceErrorKind::ContentExpired);
        assert!(!expired.kind.is_retryable());

        let throttled = classify(
            403,
            "{'error':{'code':'AF429','message':'Too many requests. Method=GetBlob, PublisherId=00000000-0000-0000-0000-000000000000'}}",
        );
        assert_eq!(throttled.kind, ServiceErrorKind::Throttled);
        let internal = classify(
            500,
            r#"{"error":{"code":"AF50000","message":"An internal error occurred. Retry the request."}}"#,
        );
        assert_eq!(internal.kind, ServiceErrorKind::ServerError);
        let missing = classify(
            400,
            r#"{"error":{"code":"AF20022","message":"No subscription found for the specified content type."}}"#,
        );
        assert_eq!(missing.kind, ServiceErrorKind::Other);
    }

    #[test]
    fn subscription_list_entries_without_status_are_not_enabled() {
        let list: Vec<Subscription> = serde_json::from_str(
            r#"[{"contentType":"Audit.SharePoint","status":"enabled","webhook":null},{"contentType":"Audit.Exchange","webhook":null}]"#,
        )
        .unwrap();
        assert!(list[0].is_enabled());
        assert!(!list[1].is_enabled());
    }

    #[test]
    fn windows_over_24_hours_or_backwards_are_refused_before_any_request() {
        let t = Utc::now();
        assert!(check_window("c", t - chrono::TimeDelta::hours(24), t).is_ok());
        assert!(check_window("c", t - chrono::TimeDelta::hours(25), t).is_err());
        assert!(check_window("c", t, t - chrono::TimeDelta::hours(1)).is_err());
    }

    #[test]
    fn operations_name_the_path_without_the_query() {
        assert_eq!(
            operation(
                "GET",
                "https://manage.office.com/api/v1.0/t/activity/feed/audit/1$2$x$y$04?PublisherIdentifier=p"
            ),
            "GET /api/v1.0/t/activity/feed/audit/1$2$x$y$04"
        );
        assert!(is_guid("41463f53-8812-40f4-890f-865bf6e35190"));
        assert!(!is_guid("contoso.onmicrosoft.com"));
    }
}
