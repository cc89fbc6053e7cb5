//! The shared HTTP client and the request pipeline: every request (Graph, `$batch`, token
//! endpoint) goes through one pipeline, which applies the [`RetryPolicy`], the shared
//! throttling [`Gate`] and the request counters.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::HeaderMap;

use crate::error::{M365Error, TransportKind};
use crate::retry::{Counters, Gate, RetryPolicy, retry_after_from_headers};
use crate::token::{AccessToken, TokenProvider};
use std::future::Future;

/// `User-Agent` of every request: `ISV|CompanyName|AppName/Version`, because undecorated traffic
/// is deprioritised when SharePoint throttles ("How to decorate your http traffic" in
/// <https://learn.microsoft.com/sharepoint/dev/general-development/how-to-avoid-getting-throttled-or-blocked-in-sharepoint-online>).
pub const USER_AGENT: &str = concat!("ISV|filetrail|filetrail/", env!("CARGO_PKG_VERSION"));

/// Default time to open a TCP+TLS connection (our choice: long enough for a cold TLS handshake
/// across regions, short enough to retry a dead endpoint quickly).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for one whole request, body included (our choice: a 999-user page or a large
/// delta page arrives well within it; a hung request is retried).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(100);
/// How long an idle pooled connection is kept (below the 120 s idle timeout common to Azure
/// front doors, so we rarely reuse a connection the server has closed).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Timeouts of the shared HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    pub connect: Duration,
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// Builds the one `reqwest::Client` a process shares (rustls, timeouts, `User-Agent`). Build it
/// once at start-up and clone it (a clone shares the connection pool).
pub fn http_client(timeouts: HttpTimeouts) -> Result<reqwest::Client, M365Error> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(timeouts.connect)
        .timeout(timeouts.request)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(redirect_policy())
        .build()
        .map_err(|e| M365Error::Config {
            message: format!("cannot build the HTTP client: {}", error_chain(&e)),
            fix: "check the TLS setup of this machine (rustls with platform roots)".to_owned(),
        })
}

/// Redirects reqwest follows by itself: reqwest's default (at most 10), except the 302 of a
/// driveItem `…/content` request, which [`crate::content`] follows itself: it keeps the download
/// URL for `Range` resumes, and the Graph token must never travel to the download host (the URL
/// is pre-authenticated: <https://learn.microsoft.com/en-us/graph/api/driveitem-get-content>).
fn redirect_policy() -> reqwest::redirect::Policy {
    /// reqwest's default limit.
    const MAX_REDIRECTS: usize = 10;
    reqwest::redirect::Policy::custom(|attempt| {
        let from_content = attempt
            .previous()
            .last()
            .is_some_and(|u| u.path().to_ascii_lowercase().ends_with("/content"));
        if from_content {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A response read to the end.
#[derive(Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Names the headers and the body's length only: a `Location` header holds a pre-authenticated
/// download URL, and a body may hold file bytes or a token.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(reqwest::header::HeaderName::as_str).collect();
        f.debug_struct("Reply")
            .field("status", &self.status)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn retry_after(&self) -> Option<Duration> {
        retry_after_from_headers(&self.headers, SystemTime::now())
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    }
}

/// What to do with a response.
pub(crate) enum Verdict {
    /// Hand the response to the caller.
    Done,
    /// Send again after `after` (or a backoff); `pause_all` closes the client's gate.
    Retry {
        after: Option<Duration>,
        pause_all: bool,
        cause: M365Error,
    },
    /// The token was rejected: get a new one and send again, once.
    Reauth(M365Error),
    /// Give up with this error.
    Fail(M365Error),
}

/// The retry machinery one client shares across its requests.
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    pub http: reqwest::Client,
    pub policy: RetryPolicy,
    pub gate: Arc<Gate>,
    pub counters: Arc<Counters>,
    pub connection: Arc<str>,
}

/// Where a retry loop stands: attempts made and time waited, checked against the policy.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    pub attempts: u32,
    pub waited: Duration,
}

impl Budget {
    /// The wait before the next attempt, or the error to return when the budget is spent.
    pub fn next_wait(
        &mut self,
        policy: &RetryPolicy,
        after: Option<Duration>,
        cause: M365Error,
    ) -> Result<Duration, M365Error> {
        let wait = after.unwrap_or_else(|| policy.backoff(self.attempts));
        if self.attempts >= policy.max_attempts.max(1) || self.waited + wait > policy.max_total_wait {
            return Err(M365Error::RetriesExhausted {
                attempts: self.attempts,
                waited: self.waited,
                last: Box::new(cause),
            });
        }
        Ok(wait)
    }
}

impl Pipeline {
    pub fn new(http: reqwest::Client, policy: RetryPolicy, connection: &str) -> Self {
        Self {
            http,
            policy,
            gate: Arc::new(Gate::default()),
            counters: Arc::new(Counters::default()),
            connection: Arc::from(connection),
        }
    }

    /// Waits `wait` before a retry: through the shared gate when the service asked every request
    /// to pause, else only this request sleeps.
    pub async fn pause(&self, wait: Duration, pause_all: bool) {
        if pause_all {
            self.gate.close_for(wait);
        } else {
            tokio::time::sleep(wait).await;
        }
    }

    /// Sends a request built by `build` (with a bearer token from `tokens`, when given) until
    /// `classify` accepts the response, the error is not retryable, or the budget is spent.
    /// Connect failures, timeouts and dropped connections (before or during the response) are
    /// retried with backoff; a rejected token is replaced once.
    pub async fn execute<A, B, C>(&self, operation: &str, auth: &A, build: B, classify: C) -> Result<Reply, M365Error>
    where
        A: Auth,
        B: Fn(&reqwest::Client, Option<&AccessToken>) -> reqwest::RequestBuilder,
        C: Fn(&Reply) -> Verdict,
    {
        let mut budget = Budget::default();
        let mut reauthed = false;
        loop {
            budget.waited += self.gate.wait().await;
            budget.attempts += 1;
            let token = auth.token().await?;
            self.counters.request();
            let again = match self.send(build(&self.http, token.as_ref()), operation).await {
                Ok(reply) => match classify(&reply) {
                    Verdict::Done => return Ok(reply),
                    Verdict::Fail(e) => return Err(e),
                    Verdict::Reauth(cause) => Again::Reauth(cause),
                    Verdict::Retry {
                        after,
                        pause_all,
                        cause,
                    } => Again::Wait {
                        after,
                        pause_all,
                        cause,
                    },
                },
                Err(e @ M365Error::Config { .. }) => return Err(e),
                Err(cause) => Again::Wait {
                    after: None,
                    pause_all: false,
                    cause,
                },
            };
            match again {
                Again::Reauth(cause) => match token {
                    Some(used) if !reauthed => {
                        tracing::info!(connection = %self.connection, operation, "token rejected; fetching a new one");
                        auth.reject(&used).await;
                        reauthed = true;
                        self.counters.retry(1);
                    }
                    _ => return Err(cause),
                },
                Again::Wait {
                    after,
                    pause_all,
                    cause,
                } => {
                    let code = cause.code();
                    let wait = match budget.next_wait(&self.policy, after, cause) {
                        Ok(wait) => wait,
                        Err(exhausted) => {
                            if pause_all {
                                self.counters.throttle(1);
                            }
                            return Err(exhausted);
                        }
                    };
                    tracing::debug!(
                        connection = %self.connection,
                        operation,
                        code,
                        attempt = budget.attempts,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        pause_all,
                        "retrying"
                    );
                    self.counters.retry(1);
                    // A throttle closes the shared gate at once (the next loop turn waits on it);
                    // it is counted only then, so the counter never runs ahead of the gate.
                    self.pause(wait, pause_all).await;
                    if pause_all {
                        self.counters.throttle(1);
                    } else {
                        budget.waited += wait;
                    }
                }
            }
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, operation: &str) -> Result<Reply, M365Error> {
        let response = request.send().await.map_err(|e| self.transport_error(operation, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(operation, &e))?;
        Ok(Reply { status, headers, body })
    }

    fn transport_error(&self, operation: &str, e: &reqwest::Error) -> M365Error {
        if e.is_builder() {
            return M365Error::Config {
                message: format!(
                    "connection `{}`: {operation}: invalid request: {}",
                    self.connection,
                    error_chain(e)
                ),
                fix: "check the configured Microsoft base URLs".to_owned(),
            };
        }
        let kind = if e.is_timeout() {
            TransportKind::Timeout
        } else if e.is_connect() {
            TransportKind::Connect
        } else {
            TransportKind::Dropped
        };
        M365Error::Transport {
            connection: self.connection.to_string(),
            operation: operation.to_owned(),
            kind,
            message: error_chain(e),
        }
    }
}

/// Where a request's bearer token comes from.
pub(crate) trait Auth: Sync {
    /// The token to send, or `None` for unauthenticated requests (the token endpoint itself).
    fn token(&self) -> impl Future<Output = Result<Option<AccessToken>, M365Error>> + Send;
    /// The service rejected `token`: drop it so the next call fetches a new one.
    fn reject(&self, token: &AccessToken) -> impl Future<Output = ()> + Send;
}

/// No token (the token endpoint).
pub(crate) struct NoAuth;

impl Auth for NoAuth {
    fn token(&self) -> impl Future<Output = Result<Option<AccessToken>, M365Error>> + Send {
        std::future::ready(Ok(None))
    }

    fn reject(&self, _: &AccessToken) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

impl Auth for TokenProvider {
    async fn token(&self) -> Result<Option<AccessToken>, M365Error> {
        TokenProvider::token(self).await.map(Some)
    }

    fn reject(&self, token: &AccessToken) -> impl Future<Output = ()> + Send {
        TokenProvider::reject(self, token)
    }
}

/// A failed attempt that may be sent again.
enum Again {
    Reauth(M365Error),
    Wait {
        after: Option<Duration>,
        pause_all: bool,
        cause: M365Error,
    },
}

/// An error and its sources, without the URL (links can be long and carry tokens).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![strip_url(e)];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn strip_url(e: &reqwest::Error) -> String {
    let text = e.to_string();
    match e.url() {
        Some(url) => text
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), "<url>"),
        None => text,
    }
}
