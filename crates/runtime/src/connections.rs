//! Microsoft clients per connection, built on first use and reused across invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use filetrail_aws::config::AwsResources;
use filetrail_aws::secrets::SecretsStore;
use filetrail_core::PortError;
use filetrail_core::model::Connection;
use filetrail_m365::activity::ActivityClient;
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use tokio::sync::RwLock;
use tracing::{info, warn};

use crate::FunctionSettings;

/// The connection a job names (`stored`, as the state table answered for `id`), when work may
/// run for it. A job of an unknown connection, or of one that takes no work now (deauthorized,
/// removed), is done: logged with the reason (`job` names it: "hash job"), never retried.
pub fn accepting(stored: Option<Connection>, id: &str, job: &str) -> Option<Connection> {
    let Some(connection) = stored else {
        warn!(connection = id, "{job} of an unknown connection ignored");
        return None;
    };
    match connection.why_no_work() {
        None => Some(connection),
        Some(why) => {
            info!(connection = id, "{job} dropped: {why}");
            None
        }
    }
}

struct Cached<C> {
    client: Arc<C>,
    built_at: Instant,
}

type Cache<C> = RwLock<HashMap<String, Cached<C>>>;

/// Builds and caches one [`GraphClient`] and one Management Activity API client
/// ([`ActivityClient`]) per connection: the connection's cloud (or custom endpoints), its tenant
/// and app id, and the client secret read from Secrets Manager. Clients share one HTTP
/// connection pool. A cached client is rebuilt after `ttl` (so a rotated secret is picked up) or
/// at once after [`Self::forget`] (called when the service refused the credentials).
pub struct ConnectionClients {
    http: reqwest::Client,
    secrets: SecretsStore,
    policy: RetryPolicy,
    ttl: Duration,
    graph: Cache<GraphClient>,
    activity: Cache<ActivityClient>,
}

impl ConnectionClients {
    pub fn new(http: reqwest::Client, secrets: SecretsStore, policy: RetryPolicy, ttl: Duration) -> Self {
        Self {
            http,
            secrets,
            policy,
            ttl,
            graph: RwLock::new(HashMap::new()),
            activity: RwLock::new(HashMap::new()),
        }
    }

    /// The clients of a deployed function: one HTTP connection pool, the app secrets under the
    /// deployment's prefix, the default retry policy, credentials reused for
    /// `settings.credentials_ttl`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS roots).
    pub fn for_function(
        sdk: &aws_config::SdkConfig,
        resources: &AwsResources,
        settings: &FunctionSettings,
    ) -> anyhow::Result<Self> {
        let http = http_client(HttpTimeouts::default()).context("building the HTTP client")?;
        let secrets = SecretsStore::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            resources.require_secret_prefix()?,
        );
        Ok(Self::new(
            http,
            secrets,
            RetryPolicy::default(),
            settings.credentials_ttl,
        ))
    }

    /// The Graph client of `connection`. Fails with a terminal error when the connection's cloud
    /// settings are invalid or its secret cannot be read.
    pub async fn graph(&self, connection: &Connection) -> Result<Arc<GraphClient>, PortError> {
        self.cached(&self.graph, connection, |http, cloud, credentials, policy| {
            GraphClient::connect(http, cloud, credentials, &connection.id, policy)
        })
        .await
    }

    /// The Management Activity API client of `connection` (its own token, for the Management
    /// API's resource). Fails like [`Self::graph`], and when the tenant id is not a GUID.
    pub async fn activity(&self, connection: &Connection) -> Result<Arc<ActivityClient>, PortError> {
        self.cached(&self.activity, connection, |http, cloud, credentials, policy| {
            ActivityClient::connect(http, cloud, credentials, &connection.id, policy)
        })
        .await
    }

    async fn cached<C>(
        &self,
        cache: &Cache<C>,
        connection: &Connection,
        build: impl FnOnce(reqwest::Client, &Cloud, Credentials, RetryPolicy) -> Result<C, filetrail_m365::M365Error>,
    ) -> Result<Arc<C>, PortError> {
        if let Some(c) = cache.read().await.get(&connection.id)
            && c.built_at.elapsed() < self.ttl
        {
            return Ok(c.client.clone());
        }
        let mut cache = cache.write().await;
        if let Some(c) = cache.get(&connection.id)
            && c.built_at.elapsed() < self.ttl
        {
            return Ok(c.client.clone());
        }
        let (cloud, credentials) = self
            .credentials(connection, &connection.client_id, &connection.secret_id)
            .await?;
        let client = build(self.http.clone(), &cloud, credentials, self.policy.clone()).map_err(PortError::from)?;
        info!(
            connection = connection.id,
            cloud = cloud.name(),
            client = std::any::type_name::<C>().rsplit("::").next().unwrap_or_default(),
            "client ready"
        );
        let client = Arc::new(client);
        cache.insert(
            connection.id.clone(),
            Cached {
                client: client.clone(),
                built_at: Instant::now(),
            },
        );
        Ok(client)
    }

    /// A Graph client of `connection`'s write-mode app, for one admin action (`filetrail sharing
    /// revoke`): its own token (with `Files.ReadWrite.All`), built anew and never cached beside
    /// the pipeline's read-only clients. Fails (terminal) when write mode is off.
    pub async fn write_graph(&self, connection: &Connection) -> Result<GraphClient, PortError> {
        let Some(app) = &connection.write_app else {
            return Err(PortError::terminal(
                "write_mode_off",
                format!("connection {} has no write-mode app", connection.id),
                format!(
                    "register one with `filetrail connection write-mode {} --client-id …`",
                    connection.id
                ),
            ));
        };
        let (cloud, credentials) = self.credentials(connection, &app.client_id, &app.secret_id).await?;
        info!(
            connection = connection.id,
            cloud = cloud.name(),
            "write-mode client ready"
        );
        GraphClient::connect(
            self.http.clone(),
            &cloud,
            credentials,
            &connection.id,
            self.policy.clone(),
        )
        .map_err(PortError::from)
    }

    /// The cloud of `connection` and the credentials of its app `client_id` (secret `secret_id`).
    async fn credentials(
        &self,
        connection: &Connection,
        client_id: &str,
        secret_id: &str,
    ) -> Result<(Cloud, Credentials), PortError> {
        let cloud = Cloud::for_connection(&connection.cloud, connection.endpoints.as_ref()).map_err(PortError::from)?;
        let secret = self.secrets.get_app_secret(secret_id).await.map_err(PortError::from)?;
        let credentials = Credentials {
            tenant_id: connection.tenant_id.clone(),
            client_id: client_id.to_owned(),
            secret: ClientSecret::new(secret.client_secret.expose()),
        };
        Ok((cloud, credentials))
    }

    /// Drops the cached clients of a connection so the next use re-reads its secret.
    pub async fn forget(&self, connection: &str) {
        self.graph.write().await.remove(connection);
        self.activity.write().await.remove(connection);
    }

    /// Graph requests issued by every client built so far (for benchmarks and summaries).
    pub async fn graph_requests(&self) -> u64 {
        self.graph.read().await.values().map(|c| c.client.requests()).sum()
    }
}
