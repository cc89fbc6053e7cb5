//! Microsoft clients per connection, built on first use and reused across invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use filetrail_aws::secrets::SecretsStore;
use filetrail_core::PortError;
use filetrail_core::model::Connection;
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, RetryPolicy};
use tokio::sync::RwLock;
use tracing::info;

struct Cached {
    client: Arc<GraphClient>,
    built_at: Instant,
}

/// Builds and caches one [`GraphClient`] per connection: the connection's cloud (or custom
/// endpoints), its tenant and app id, and the client secret read from Secrets Manager. Clients
/// share one HTTP connection pool. A cached client is rebuilt after `ttl` (so a rotated secret is
/// picked up) or at once after [`Self::forget`] (called when the service refused the credentials).
pub struct ConnectionClients {
    http: reqwest::Client,
    secrets: SecretsStore,
    policy: RetryPolicy,
    ttl: Duration,
    cache: RwLock<HashMap<String, Cached>>,
}

impl ConnectionClients {
    pub fn new(http: reqwest::Client, secrets: SecretsStore, policy: RetryPolicy, ttl: Duration) -> Self {
        Self {
            http,
            secrets,
            policy,
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// The Graph client of `connection`. Fails with a terminal error when the connection's cloud
    /// settings are invalid or its secret cannot be read.
    pub async fn graph(&self, connection: &Connection) -> Result<Arc<GraphClient>, PortError> {
        if let Some(c) = self.cache.read().await.get(&connection.id)
            && c.built_at.elapsed() < self.ttl
        {
            return Ok(c.client.clone());
        }
        let mut cache = self.cache.write().await;
        if let Some(c) = cache.get(&connection.id)
            && c.built_at.elapsed() < self.ttl
        {
            return Ok(c.client.clone());
        }
        let cloud = Cloud::for_connection(&connection.cloud, connection.endpoints.as_ref()).map_err(PortError::from)?;
        let secret = self
            .secrets
            .get_app_secret(&connection.secret_id)
            .await
            .map_err(PortError::from)?;
        let credentials = Credentials {
            tenant_id: connection.tenant_id.clone(),
            client_id: connection.client_id.clone(),
            secret: ClientSecret::new(secret.client_secret.expose()),
        };
        let client = GraphClient::connect(
            self.http.clone(),
            &cloud,
            credentials,
            &connection.id,
            self.policy.clone(),
        )
        .map_err(PortError::from)?;
        info!(connection = connection.id, cloud = cloud.name(), "graph client ready");
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

    /// Drops the cached client of a connection so the next use re-reads its secret.
    pub async fn forget(&self, connection: &str) {
        self.cache.write().await.remove(connection);
    }

    /// Graph requests issued by every client built so far (for benchmarks and summaries).
    pub async fn graph_requests(&self) -> u64 {
        self.cache.read().await.values().map(|c| c.client.requests()).sum()
    }
}
