//! `filetrail connection add`: registers a Microsoft 365 tenant.

use chrono::Utc;
use filetrail_core::model::{Connection, ConnectionKind, ConnectionState, Endpoints};
use filetrail_core::ports::StateStore;

/// Default drive cap: generous, so the cap protects against a mis-scoped tenant rather than
/// limiting a real one (issue: scope).
pub const DEFAULT_DRIVE_CAP: u64 = 1_000_000;

/// What an admin gives to register a tenant.
#[derive(Debug, Clone)]
pub struct NewConnection {
    pub id: String,
    pub kind: ConnectionKind,
    pub tenant_id: String,
    pub client_id: String,
    pub cloud: String,
    pub endpoints: Option<Endpoints>,
    pub trusted_domains: Vec<String>,
    pub drive_cap: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectionAddError {
    #[error(
        "connection id {0:?} is not valid: use 1-48 lowercase letters, digits and dashes, starting with a letter (e.g. `contoso-cloud`)"
    )]
    BadId(String),
    #[error("a connection named {0:?} already exists; choose another id or remove it first")]
    IdTaken(String),
    #[error(
        "tenant {tenant} is already registered as a {kind} connection ({existing:?}); a tenant can be registered once per kind: deauthorize or remove {existing:?} first"
    )]
    AlreadyRegistered {
        tenant: String,
        kind: String,
        existing: String,
    },
    #[error(transparent)]
    Store(#[from] filetrail_core::PortError),
}

/// Checks a connection id: it appears in keys, secret names and on the command line.
pub fn validate_id(id: &str) -> Result<(), ConnectionAddError> {
    let ok = (1..=48).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ConnectionAddError::BadId(id.to_owned()))
    }
}

/// Refuses a duplicate id or a tenant already registered with the same kind.
pub async fn check_unique(state: &dyn StateStore, new: &NewConnection) -> Result<(), ConnectionAddError> {
    validate_id(&new.id)?;
    for c in state.connections().await? {
        if c.id == new.id {
            return Err(ConnectionAddError::IdTaken(new.id.clone()));
        }
        if c.kind == new.kind && c.tenant_id.eq_ignore_ascii_case(&new.tenant_id) {
            return Err(ConnectionAddError::AlreadyRegistered {
                tenant: new.tenant_id.clone(),
                kind: format!("{:?}", new.kind).to_lowercase(),
                existing: c.id,
            });
        }
    }
    Ok(())
}

/// The record stored for a new connection whose secret lives at `secret_id`.
pub fn record(new: &NewConnection, secret_id: String) -> Connection {
    Connection {
        id: new.id.clone(),
        kind: new.kind,
        tenant_id: new.tenant_id.clone(),
        client_id: new.client_id.clone(),
        secret_id,
        cloud: new.cloud.clone(),
        endpoints: new.endpoints.clone(),
        trusted_domains: new.trusted_domains.clone(),
        drive_cap: new.drive_cap,
        state: ConnectionState::Active,
        last_error: None,
        last_discovery: None,
        created_at: Utc::now(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_lowercase_slugs() {
        assert!(validate_id("contoso-cloud").is_ok());
        for bad in ["", "Contoso", "1abc", "a b", "a/b", &"a".repeat(49)] {
            let e = validate_id(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
