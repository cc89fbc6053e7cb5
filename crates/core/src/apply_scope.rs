//! Applying a scope upload: an admin put a CSV under `scoping/<connection>/` in the bucket.
//!
//! Contract:
//! - every upload, accepted or rejected, gets a result document at
//!   `scoping/<connection>/results/<upload id>.json`, and the connection's status keeps the
//!   latest one;
//! - a rejected upload changes nothing: the scope in force stays;
//! - an accepted upload replaces the whole scope in one write and starts discovery at once;
//! - idempotent under redelivery, and an older upload processed late never replaces a newer
//!   scope (uploads are ordered by their S3 event time, and an object replaced since its event
//!   is not read at all).

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::error::PortError;
use crate::jobs::DiscoverJob;
use crate::model::ConnectionKind;
use crate::ports::{ConnectionStore, DiscoverQueue, ScopeObjects, ScopeStore, UploadRead};
use crate::scope::csv::{CsvError, ListKind, MAX_CSV_BYTES, check_size, parse_scope_csv};
use crate::scope::{Scope, ScopeKind, ScopeSource, ScopeUploadResult};

/// Where uploads go: `scoping/<connection>/<kind>.csv`.
pub const SCOPING_PREFIX: &str = "scoping/";
/// The file names an upload may have, and the scope each sets.
pub const UPLOAD_NAMES: [(&str, ScopeKind); 3] = [
    ("users.csv", ScopeKind::Users),
    ("groups.csv", ScopeKind::Groups),
    ("all.csv", ScopeKind::All),
];

/// The key an upload of `kind` for `connection` goes to.
pub fn upload_key(connection: &str, kind: ScopeKind) -> String {
    format!("{SCOPING_PREFIX}{connection}/{}.csv", kind.as_str())
}

/// The folder of a connection's upload results.
pub fn results_prefix(connection: &str) -> String {
    format!("{SCOPING_PREFIX}{connection}/results/")
}

/// One object-created event of the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadEvent {
    /// The object key, already URL-decoded.
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// When S3 saw the upload.
    pub time: DateTime<Utc>,
}

impl UploadEvent {
    /// A stable id for the upload: its event time, file name and ETag. A redelivered event has
    /// the same id, so its result overwrites itself.
    pub fn upload_id(&self) -> String {
        let name = self.key.rsplit('/').next().unwrap_or_default().trim_end_matches(".csv");
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let etag: String = self.etag.trim_matches('"').chars().take(12).collect();
        format!("{}-{name}-{etag}", self.time.format("%Y%m%dT%H%M%S%.3fZ"))
    }
}

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadTarget {
    pub connection: String,
    /// `None` when the file name is not one of [`UPLOAD_NAMES`].
    pub kind: Option<ScopeKind>,
}

/// Reads `scoping/<connection>/<name>`; `None` for keys outside that layout (nowhere to put a
/// result that the uploader would find).
pub fn parse_upload_key(key: &str) -> Option<UploadTarget> {
    let rest = key.strip_prefix(SCOPING_PREFIX)?;
    let (connection, name) = rest.split_once('/')?;
    if connection.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    let kind = UPLOAD_NAMES
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, k)| *k);
    Some(UploadTarget {
        connection: connection.to_owned(),
        kind,
    })
}

/// The ports applying an upload needs.
pub struct ApplyPorts<'a> {
    /// Whether the upload's connection exists.
    pub connections: &'a dyn ConnectionStore,
    pub scopes: &'a dyn ScopeStore,
    pub objects: &'a dyn ScopeObjects,
    pub discover_queue: &'a dyn DiscoverQueue,
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The key is outside `scoping/<connection>/<name>`: nothing to apply, nowhere to report.
    Ignored { reason: String },
    /// Processed; the result says whether the scope changed.
    Done(Box<ScopeUploadResult>),
}

/// Validates one upload, replaces the scope when it is acceptable, reports the result, and
/// starts discovery. Errors are transient port failures only (retry the message): every
/// problem with the upload itself becomes a rejected result.
pub async fn apply_upload(
    ports: &ApplyPorts<'_>,
    event: &UploadEvent,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, PortError> {
    let Some(target) = parse_upload_key(&event.key) else {
        warn!(key = event.key, "object outside scoping/<connection>/<file> ignored");
        return Ok(ApplyOutcome::Ignored {
            reason: format!("{} is not scoping/<connection>/<file>", event.key),
        });
    };
    let upload_id = event.upload_id();
    let mut result = ScopeUploadResult {
        upload_id: upload_id.clone(),
        connection: target.connection.clone(),
        key: event.key.clone(),
        etag: event.etag.clone(),
        kind: target.kind,
        uploaded_at: event.time,
        processed_at: now,
        accepted: false,
        entries: 0,
        duplicates: 0,
        rejected_rows: Vec::new(),
        error: None,
        result_key: format!("{}{upload_id}.json", results_prefix(&target.connection)),
    };

    match decide(ports, event, &target, &mut result).await? {
        Some(scope) => {
            let already = ports
                .scopes
                .scope(&target.connection)
                .await?
                .is_some_and(|s| s.version == scope.version);
            if already || ports.scopes.replace_scope(&target.connection, &scope).await? {
                result.accepted = true;
                ports
                    .discover_queue
                    .enqueue_discover(&[DiscoverJob::Discover {
                        connection: target.connection.clone(),
                        reason: "scope".to_owned(),
                    }])
                    .await?;
                info!(
                    connection = target.connection,
                    upload = upload_id,
                    kind = %scope.kind,
                    entries = scope.entries.len(),
                    "scope replaced; discovery started"
                );
            } else {
                result.entries = 0;
                result.error = Some(
                    "a later upload is already in force, so this one was not applied; upload the file again if it \
                     should win"
                        .to_owned(),
                );
            }
        }
        None => {
            info!(
                connection = target.connection,
                upload = upload_id,
                error = result.error.as_deref().unwrap_or_default(),
                "scope upload rejected; the previous scope stays in force"
            );
        }
    }

    let body = serde_json::to_vec_pretty(&result).map_err(|e| {
        PortError::terminal(
            "encode",
            format!("cannot encode the upload result: {e}"),
            "report a bug",
        )
    })?;
    ports.objects.write_result(&result.result_key, &body).await?;
    if ports.connections.connection(&target.connection).await?.is_some() {
        ports.scopes.record_scope_upload(&target.connection, &result).await?;
    }
    Ok(ApplyOutcome::Done(Box::new(result)))
}

/// Checks the upload and reads it into a scope; `None` (with `result.error` set) when the upload
/// must be rejected.
async fn decide(
    ports: &ApplyPorts<'_>,
    event: &UploadEvent,
    target: &UploadTarget,
    result: &mut ScopeUploadResult,
) -> Result<Option<Scope>, PortError> {
    let connection = &target.connection;
    let Some(kind) = target.kind else {
        result.error = Some(format!(
            "{} is not a scope file name: upload users.csv (a list of users), groups.csv (a list of groups) or \
             all.csv (every user) under scoping/{connection}/",
            event.key.rsplit('/').next().unwrap_or_default()
        ));
        return Ok(None);
    };
    match ports.connections.connection(connection).await? {
        None => {
            result.error = Some(format!(
                "no connection is named {connection:?}: register it first (filetrail connection add) or upload under \
                 the folder of an existing connection (filetrail status lists them)"
            ));
            return Ok(None);
        }
        Some(c) if c.kind != ConnectionKind::Cloud => {
            result.error = Some(format!(
                "connection {connection} is an email connection; OneDrive scope applies to cloud connections"
            ));
            return Ok(None);
        }
        Some(_) => {}
    }
    if event.size > MAX_CSV_BYTES {
        result.error = Some(too_large(event.size));
        return Ok(None);
    }
    let bytes = match ports
        .objects
        .read_upload(&event.key, &event.etag, MAX_CSV_BYTES)
        .await?
    {
        UploadRead::Bytes(b) => b,
        UploadRead::TooLarge { size } => {
            result.error = Some(too_large(size));
            return Ok(None);
        }
        UploadRead::Replaced => {
            result.error =
                Some("the file was replaced by a newer upload before it could be read; the newer one applies".into());
            return Ok(None);
        }
        UploadRead::Missing => {
            result.error = Some("the file was deleted before it could be read; upload it again".into());
            return Ok(None);
        }
    };

    let source = ScopeSource {
        key: event.key.clone(),
        etag: event.etag.clone(),
        upload_id: result.upload_id.clone(),
    };
    let scope = |entries| Scope {
        kind,
        entries,
        version: result.upload_id.clone(),
        applied_at: result.processed_at,
        uploaded_at: event.time,
        source: Some(source.clone()),
    };
    let list_kind = match kind {
        // The content of all.csv does not matter: its presence says "every user".
        ScopeKind::All => return Ok(Some(scope(Vec::new()))),
        ScopeKind::Users => ListKind::Users,
        ScopeKind::Groups => ListKind::Groups,
    };
    match parse_scope_csv(list_kind, &bytes) {
        Ok(parsed) => {
            result.entries = parsed.entries.len() as u64;
            result.duplicates = parsed.duplicates;
            result.rejected_rows = parsed.rejected;
            Ok(Some(scope(parsed.entries)))
        }
        Err(e) => {
            if let CsvError::NoValidEntry { rejected, .. } = &e {
                result.rejected_rows = rejected.clone();
            }
            result.error = Some(e.to_string());
            Ok(None)
        }
    }
}

fn too_large(size: u64) -> String {
    check_size(size).err().map(|e| e.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_connection_and_a_kind() {
        assert_eq!(
            parse_upload_key("scoping/contoso/users.csv"),
            Some(UploadTarget {
                connection: "contoso".into(),
                kind: Some(ScopeKind::Users)
            })
        );
        assert_eq!(
            parse_upload_key("scoping/contoso/GROUPS.CSV").and_then(|t| t.kind),
            Some(ScopeKind::Groups)
        );
        assert_eq!(
            parse_upload_key("scoping/contoso/people.csv").map(|t| t.kind),
            Some(None)
        );
        assert_eq!(parse_upload_key("scoping/users.csv"), None);
        assert_eq!(parse_upload_key("scoping/contoso/sub/users.csv"), None);
        assert_eq!(parse_upload_key("other/contoso/users.csv"), None);
    }

    #[test]
    fn upload_ids_are_stable_and_safe_as_key_parts() {
        let event = UploadEvent {
            key: "scoping/contoso/users.csv".into(),
            etag: "\"0123456789abcdef0123\"".into(),
            size: 10,
            time: DateTime::parse_from_rfc3339("2026-11-22T07:24:51.444Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        };
        assert_eq!(event.upload_id(), "20261122T072451.444Z-users-0123456789ab");
        assert_eq!(event.upload_id(), event.clone().upload_id());
    }
}
