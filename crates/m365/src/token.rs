//! App-only tokens from Entra ID (OAuth2 client credentials, v2 endpoint), cached per resource
//! and refreshed early, one refresh at a time.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use crate::cloud::Cloud;
use crate::error::{AuthContext, EntraErrorBody, M365Error};
use crate::http::{NoAuth, Pipeline, Reply, Verdict};
use crate::retry::{RequestStats, RetryPolicy};

/// Refresh a token this long before it expires. The default lifetime is random between 60 and 90
/// minutes (<https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#token-lifetime>);
/// trust `expires_in` and refresh early, e.g. 5 minutes before.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed when a token response carries neither `expires_in` nor `expires_on`
/// (never seen from Entra; the lower bound of the documented 60–90 minutes,
/// <https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#token-lifetime>).
pub const ASSUMED_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// How long a terminal token failure (bad secret, no consent) is remembered, so concurrent and
/// repeated callers get the same answer without asking Entra again (no retry storms). A new
/// secret means a new [`TokenProvider`], so this does not delay a fix.
pub const TERMINAL_FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// An app's client secret. Its `Debug` is redacted and it has no `Display`, so it cannot end up
/// in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the token request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// A bearer token. `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// The token, for an `Authorization` header.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// What identifies the app in a tenant.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Tenant GUID or verified domain.
    pub tenant_id: String,
    pub client_id: String,
    pub secret: ClientSecret,
}

#[derive(Debug, Clone)]
struct CachedToken {
    token: AccessToken,
    refresh_at: Instant,
}

/// Issues and caches the app-only token of one connection for one resource (Graph and the
/// Management API need separate tokens: one resource per token request,
/// <https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow#get-a-token>).
///
/// `token()` returns the cached token until [`TOKEN_REFRESH_MARGIN`] before it expires, then
/// fetches a new one; concurrent callers share one fetch. Throttling (AADSTS90055, 429) and
/// 5xx/network failures are retried under the [`RetryPolicy`]; terminal refusals (wrong or expired
/// secret, missing consent…) fail at once with an [`crate::AuthError`] naming the connection and
/// the fix, and are remembered for [`TERMINAL_FAILURE_MEMORY`].
pub struct TokenProvider {
    pipeline: Pipeline,
    token_url: String,
    credentials: Credentials,
    ctx: AuthContext,
    cached: RwLock<Option<CachedToken>>,
    /// Held while fetching (single flight); keeps the last terminal failure.
    refresh: Mutex<Option<(Instant, M365Error)>>,
}

impl fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenProvider")
            .field("connection", &self.ctx.connection)
            .field("token_url", &self.token_url)
            .field("client_id", &self.credentials.client_id)
            .field("scope", &self.ctx.scope)
            .finish_non_exhaustive()
    }
}

impl TokenProvider {
    /// A provider for tokens to `resource` (an App ID URI such as `https://graph.microsoft.com`;
    /// the scope sent is `{resource}/.default`). `connection` labels every message.
    pub fn new(
        http: reqwest::Client,
        cloud: &Cloud,
        credentials: Credentials,
        resource: &str,
        connection: &str,
        policy: RetryPolicy,
    ) -> Self {
        let scope = format!("{}/.default", resource.trim_end_matches('/'));
        let ctx = AuthContext {
            connection: connection.to_owned(),
            client_id: credentials.client_id.clone(),
            tenant_id: credentials.tenant_id.clone(),
            login: cloud.login().to_owned(),
            scope,
        };
        Self {
            pipeline: Pipeline::new(http, policy, connection),
            token_url: cloud.token_url(&credentials.tenant_id),
            credentials,
            ctx,
            cached: RwLock::new(None),
            refresh: Mutex::new(None),
        }
    }

    /// A provider of Microsoft Graph tokens for `cloud`.
    pub fn for_graph(
        http: reqwest::Client,
        cloud: &Cloud,
        credentials: Credentials,
        connection: &str,
        policy: RetryPolicy,
    ) -> Self {
        Self::new(http, cloud, credentials, cloud.graph_resource(), connection, policy)
    }

    /// A provider of Office 365 Management Activity API tokens for `cloud`.
    pub fn for_management(
        http: reqwest::Client,
        cloud: &Cloud,
        credentials: Credentials,
        connection: &str,
        policy: RetryPolicy,
    ) -> Self {
        Self::new(
            http,
            cloud,
            credentials,
            cloud.management_resource(),
            connection,
            policy,
        )
    }

    /// The scope requested (`https://graph.microsoft.com/.default`).
    pub fn scope(&self) -> &str {
        &self.ctx.scope
    }

    /// The connection label used in messages.
    pub fn connection(&self) -> &str {
        &self.ctx.connection
    }

    /// A valid token: the cached one while it is fresh, else a new one (one fetch shared by all
    /// concurrent callers).
    pub async fn token(&self) -> Result<AccessToken, M365Error> {
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        let mut last_failure = self.refresh.lock().await;
        if let Some(token) = self.fresh().await {
            return Ok(token);
        }
        if let Some((at, error)) = last_failure.as_ref() {
            if at.elapsed() < TERMINAL_FAILURE_MEMORY {
                return Err(error.clone());
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                *last_failure = None;
                let token = fresh.token.clone();
                *self.cached.write().await = Some(fresh);
                Ok(token)
            }
            Err(error) => {
                if error.retry_class() == filetrail_core::RetryClass::Terminal {
                    tracing::warn!(connection = %self.ctx.connection, code = %error.code(), "token request refused");
                    *last_failure = Some((Instant::now(), error.clone()));
                }
                Err(error)
            }
        }
    }

    /// Drops the cached token so the next [`Self::token`] fetches a new one (after a 401
    /// `InvalidAuthenticationToken`), and forgets a remembered terminal failure.
    pub async fn invalidate(&self) {
        *self.cached.write().await = None;
        *self.refresh.lock().await = None;
    }

    /// Drops the cached token only if it is still `rejected` (a concurrent caller may already
    /// have replaced it).
    pub async fn reject(&self, rejected: &AccessToken) {
        let mut cached = self.cached.write().await;
        if cached.as_ref().is_some_and(|c| &c.token == rejected) {
            *cached = None;
        }
    }

    /// Token endpoint requests sent (retries included).
    pub fn requests(&self) -> u64 {
        self.pipeline.counters.snapshot().requests
    }

    /// Token endpoint counters.
    pub fn stats(&self) -> RequestStats {
        self.pipeline.counters.snapshot()
    }

    async fn fresh(&self) -> Option<AccessToken> {
        let cached = self.cached.read().await;
        cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    async fn fetch(&self) -> Result<CachedToken, M365Error> {
        let operation = "POST token";
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.credentials.client_id.as_str()),
            ("client_secret", self.credentials.secret.expose()),
            ("scope", self.ctx.scope.as_str()),
        ];
        let started = Instant::now();
        let reply = self
            .pipeline
            .execute(
                operation,
                &NoAuth,
                |http, _| http.post(&self.token_url).form(&form),
                |reply| self.verdict(reply),
            )
            .await?;
        let parsed: TokenResponse = serde_json::from_slice(&reply.body).map_err(|e| M365Error::Decode {
            connection: self.ctx.connection.clone(),
            operation: operation.to_owned(),
            message: format!("token response: {e}"),
        })?;
        let lifetime = parsed.lifetime();
        tracing::debug!(connection = %self.ctx.connection, scope = %self.ctx.scope, lifetime_s = lifetime.as_secs(), "token issued");
        Ok(CachedToken {
            token: AccessToken(Arc::from(parsed.access_token)),
            refresh_at: started + refresh_after(lifetime),
        })
    }

    fn verdict(&self, reply: &Reply) -> Verdict {
        if reply.is_success() {
            return Verdict::Done;
        }
        let retry_after = reply.retry_after();
        let error = self
            .ctx
            .error(reply.status, &EntraErrorBody::parse(&reply.body), retry_after);
        if error.failure.is_retryable() {
            let pause_all = error.failure == crate::error::AuthFailure::Throttled;
            Verdict::Retry {
                after: retry_after,
                pause_all,
                cause: error.into(),
            }
        } else {
            Verdict::Fail(error.into())
        }
    }
}

/// When to refresh a token of `lifetime`: [`TOKEN_REFRESH_MARGIN`] before it expires, or half-way
/// through a lifetime too short for the margin (so a short-lived token is not fetched per call).
fn refresh_after(lifetime: Duration) -> Duration {
    if lifetime > TOKEN_REFRESH_MARGIN * 2 {
        lifetime - TOKEN_REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}

/// The token response, v2 (`expires_in` a number) or v1 (`expires_in`/`expires_on` strings).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    expires_on: Option<Value>,
}

impl TokenResponse {
    fn lifetime(&self) -> Duration {
        if let Some(secs) = self.expires_in.as_ref().and_then(lenient_u64) {
            return Duration::from_secs(secs);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        match self.expires_on.as_ref().and_then(lenient_u64) {
            Some(on) => Duration::from_secs(on.saturating_sub(now)),
            None => ASSUMED_TOKEN_LIFETIME,
        }
    }
}

fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_token_debug_are_redacted() {
        let creds = Credentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            secret: ClientSecret::new("super-secret-value"),
        };
        let shown = format!("{creds:?}");
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(shown.contains("redacted"));
        let token = AccessToken(Arc::from("eyJ0eXAi"));
        assert!(!format!("{token:?}").contains("eyJ0eXAi"));
    }

    #[test]
    fn v2_and_v1_token_responses_both_give_a_lifetime() {
        let v2: TokenResponse =
            serde_json::from_str(r#"{"token_type":"Bearer","expires_in":3599,"access_token":"a"}"#).unwrap();
        assert_eq!(v2.lifetime(), Duration::from_secs(3599));
        let v1: TokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":"3599","expires_on":"1431659094","not_before":"1431655194","resource":"https://manage.office.com","access_token":"e"}"#,
        )
        .unwrap();
        assert_eq!(v1.lifetime(), Duration::from_secs(3599));
        let bare: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert_eq!(bare.lifetime(), ASSUMED_TOKEN_LIFETIME);
    }

    #[test]
    fn tokens_refresh_five_minutes_early_or_half_way_when_short_lived() {
        assert_eq!(refresh_after(Duration::from_secs(3599)), Duration::from_secs(3299));
        assert_eq!(refresh_after(Duration::from_secs(120)), Duration::from_secs(60));
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }
}
