//! Connection app credentials in Secrets Manager, stored as `{"client_secret":"…"}` under
//! `{prefix}{connection}/app`. Values never appear in `Debug` output, logs or errors.

use std::fmt;

use aws_sdk_secretsmanager::Client;
use serde::{Deserialize, Serialize};

use crate::config::SECRET_PREFIX_VAR;
use crate::error::{AwsError, Target, from_sdk};

/// A secret string. `Debug` prints `Secret(***)`; there is no `Display`; read it with
/// [`Secret::expose`] where it is sent, and nowhere else.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// A connection's Entra app credential as stored in Secrets Manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecret {
    pub client_secret: Secret,
}

/// Reads and writes connection secrets.
#[derive(Debug, Clone)]
pub struct SecretsStore {
    client: Client,
    prefix: String,
    kms_key_id: Option<String>,
}

impl SecretsStore {
    /// Secrets are named `{prefix}{connection}/app` (`prefix` from `FILETRAIL_SECRET_PREFIX`:
    /// `filetrail/{stack name}/` in a deployment). Makes no request.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            kms_key_id: None,
        }
    }

    /// New secrets are encrypted with this customer-managed key (`FILETRAIL_KMS_KEY_ID`) instead
    /// of Secrets Manager's AWS-managed key; `None` keeps the latter.
    #[must_use]
    pub fn with_kms_key(mut self, kms_key_id: Option<String>) -> Self {
        self.kms_key_id = kms_key_id;
        self
    }

    /// The name of a connection's app secret.
    pub fn app_secret_name(&self, connection: &str) -> String {
        format!("{}{connection}/app", self.prefix)
    }

    fn target<'a>(secret_id: &'a str) -> Target<'a> {
        Target {
            service: "SecretsManager",
            resource: secret_id,
            setting: SECRET_PREFIX_VAR,
        }
    }

    /// Stores `secret` as the connection's app secret, creating it or adding a new current
    /// version, and returns its secret id (the name) for [`Connection::secret_id`]. Idempotent.
    /// Fails with [`AwsError::BadSecret`] for an empty client secret.
    ///
    /// [`Connection::secret_id`]: filetrail_core::model::Connection::secret_id
    pub async fn put_app_secret(&self, connection: &str, secret: &AppSecret) -> Result<String, AwsError> {
        let name = self.app_secret_name(connection);
        let body = Self::body(&name, secret)?;
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description(format!("filetrail app credential of connection {connection}"))
            .set_kms_key_id(self.kms_key_id.clone())
            .secret_string(body.clone())
            .send()
            .await;
        match created {
            Ok(_) => {
                tracing::info!(secret_id = %name, "created app secret");
                Ok(name)
            }
            Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_exists_exception()) => {
                self.client
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(body)
                    .send()
                    .await
                    .map_err(|e| from_sdk("PutSecretValue", Self::target(&name), e))?;
                tracing::info!(secret_id = %name, "stored a new version of the app secret");
                Ok(name)
            }
            Err(e) => Err(from_sdk("CreateSecret", Self::target(&name), e)),
        }
    }

    /// Stores `secret` as the new current version of the existing secret `secret_id` (a
    /// connection's [`Connection::secret_id`], wherever it was created): a rotation. Fails with
    /// [`AwsError::BadSecret`] for an empty client secret, and when the secret does not exist.
    ///
    /// [`Connection::secret_id`]: filetrail_core::model::Connection::secret_id
    pub async fn rotate_app_secret(&self, secret_id: &str, secret: &AppSecret) -> Result<(), AwsError> {
        let body = Self::body(secret_id, secret)?;
        self.client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(body)
            .send()
            .await
            .map_err(|e| from_sdk("PutSecretValue", Self::target(secret_id), e))?;
        tracing::info!(secret_id, "stored a new version of the app secret");
        Ok(())
    }

    /// The stored form of `secret`; an empty client secret is refused.
    fn body(secret_id: &str, secret: &AppSecret) -> Result<String, AwsError> {
        if secret.client_secret.expose().trim().is_empty() {
            return Err(AwsError::BadSecret {
                secret_id: secret_id.to_owned(),
                detail: "the client secret is empty".into(),
                fix: "pass the app registration's client secret value (not its id)".into(),
            });
        }
        serde_json::to_string(secret).map_err(|e| AwsError::Encode {
            what: "app secret",
            detail: e.to_string(),
        })
    }

    /// Reads an app secret by name or ARN. Fails (terminal) when it does not exist or does not
    /// hold `{"client_secret":"…"}`; the error names the secret id, never its value.
    pub async fn get_app_secret(&self, secret_id: &str) -> Result<AppSecret, AwsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| from_sdk("GetSecretValue", Self::target(secret_id), e))?;
        let fix = || "store it again with `filetrail connection add` (a JSON {\"client_secret\": \"…\"})".to_owned();
        let Some(text) = out.secret_string() else {
            return Err(AwsError::BadSecret {
                secret_id: secret_id.to_owned(),
                detail: "the secret has no string value".into(),
                fix: fix(),
            });
        };
        // serde_json errors can quote the input; report only where parsing stopped.
        serde_json::from_str(text).map_err(|e| AwsError::BadSecret {
            secret_id: secret_id.to_owned(),
            detail: format!(
                "the value is not a JSON object with a string client_secret ({:?} error at line {}, column {})",
                e.classify(),
                e.line(),
                e.column()
            ),
            fix: fix(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_an_app_secret_hides_the_value() {
        let secret = AppSecret {
            client_secret: Secret::new("s3cr3t-value"),
        };
        let shown = format!("{secret:?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn app_secret_is_stored_as_a_client_secret_document() {
        let secret = AppSecret {
            client_secret: Secret::new("v"),
        };
        assert_eq!(serde_json::to_string(&secret).unwrap(), r#"{"client_secret":"v"}"#);
    }
}
