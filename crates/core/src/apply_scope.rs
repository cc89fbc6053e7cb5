//! Applying a scope upload: an admin put a CSV under `scoping/<connection>/` in the bucket.
//!
//! Contract:
//! - every object put under `scoping/` (the bucket notifies every one, whatever its name or
//!   folder) gets a result document at `scoping/<connection>/results/<upload id>.json`, and the
//!   connection's status keeps the latest one: applied, or refused with the reason and the key
//!   that would work. An object the connection cannot be told from (a file right under
//!   `scoping/` with several connections registered, a folder no connection is named like) has
//!   its result at `scoping/results/<upload id>.json`. Results and folder markers are not
//!   uploads;
//! - a rejected upload changes nothing: the scope in force stays;
//! - an accepted upload replaces the whole scope in one write and starts discovery at once;
//! - idempotent under redelivery, and an older upload processed late never replaces a newer
//!   scope (uploads are ordered by their S3 event time, and an object replaced since its event
//!   is not read at all).

use chrono::{DateTime, Utc};
use tracing::{debug, info};

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

/// The folder name results are written to (`scoping/<connection>/results/`, and
/// `scoping/results/` for uploads of no connection); no connection can be named so.
pub const RESULTS_FOLDER: &str = "results";

/// The folder of results of uploads that name no connection.
pub fn unplaced_results_prefix() -> String {
    format!("{SCOPING_PREFIX}{RESULTS_FOLDER}/")
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

/// Reads `scoping/<connection>/<name>`; `None` for keys outside that layout.
pub fn parse_upload_key(key: &str) -> Option<UploadTarget> {
    match classify_key(key) {
        ScopingKey::Upload { folder, name } => Some(UploadTarget {
            connection: folder,
            kind: kind_of_name(&name),
        }),
        _ => None,
    }
}

/// The scope a file name sets (`users.csv`, `Groups.CSV`), if it is one of [`UPLOAD_NAMES`].
pub fn kind_of_name(name: &str) -> Option<ScopeKind> {
    UPLOAD_NAMES
        .iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
        .map(|(_, k)| *k)
}

/// The upload name an admin most likely meant by `name` (`Users.txt` → `users.csv`).
fn meant_name(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("group") {
        "groups.csv"
    } else if lower.starts_with("all") {
        "all.csv"
    } else {
        "users.csv"
    }
}

/// What an object key under the bucket is, for apply-scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopingKey {
    /// `scoping/<folder>/<name>`: an upload for the connection `folder` names.
    Upload { folder: String, name: String },
    /// Anything else under `scoping/` that is a file: directly under it (`folder` `None`) or in a
    /// subfolder of a connection folder. Refused, with the key that would work.
    Misplaced { folder: Option<String>, name: String },
    /// A result filetrail wrote (`scoping/<folder>/results/…`, `scoping/results/…`).
    Result,
    /// A folder marker (a key ending in `/`, as consoles create) or a key outside `scoping/`.
    NotAFile,
}

/// Sorts a key (already URL-decoded) into what apply-scope does with it.
pub fn classify_key(key: &str) -> ScopingKey {
    let Some(rest) = key.strip_prefix(SCOPING_PREFIX) else {
        return ScopingKey::NotAFile;
    };
    if rest.is_empty() || rest.ends_with('/') {
        return ScopingKey::NotAFile;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.len() > 1 && (parts[0] == RESULTS_FOLDER || parts.get(1) == Some(&RESULTS_FOLDER) && parts.len() > 2) {
        return ScopingKey::Result;
    }
    let name = parts.last().copied().unwrap_or_default().to_owned();
    match parts.as_slice() {
        [_] => ScopingKey::Misplaced { folder: None, name },
        [folder, _] if !folder.is_empty() => ScopingKey::Upload {
            folder: (*folder).to_owned(),
            name,
        },
        [folder, ..] => ScopingKey::Misplaced {
            folder: (!folder.is_empty()).then(|| (*folder).to_owned()),
            name,
        },
        [] => ScopingKey::NotAFile,
    }
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
    let (folder, name, nested) = match classify_key(&event.key) {
        ScopingKey::Upload { folder, name } => (Some(folder), name, false),
        ScopingKey::Misplaced { folder, name } => (folder, name, true),
        ScopingKey::Result | ScopingKey::NotAFile => {
            debug!(
                key = event.key,
                "not an upload (a result, a folder marker or outside scoping/)"
            );
            return Ok(ApplyOutcome::Ignored {
                reason: format!("{} is not a file under scoping/<connection>/", event.key),
            });
        }
    };
    let placement = place(ports, folder.as_deref()).await?;
    let (connection, results) = match (&placement, &folder) {
        (Placement::Exact(c, _) | Placement::Meant(c), _) => (c.clone(), results_prefix(c)),
        (Placement::Unknown { .. }, Some(f)) => (f.clone(), results_prefix(f)),
        (Placement::Unknown { .. }, None) => (String::new(), unplaced_results_prefix()),
    };
    let target = UploadTarget {
        connection,
        kind: kind_of_name(&name),
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
        error: misplaced(&placement, folder.as_deref(), &name, nested),
        result_key: format!("{results}{upload_id}.json"),
    };

    let decided = match (&result.error, &placement) {
        (None, Placement::Exact(_, kind)) => decide(ports, event, &target, *kind, &mut result).await?,
        _ => None,
    };
    match decided {
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
    if let Placement::Exact(c, _) | Placement::Meant(c) = &placement {
        ports.scopes.record_scope_upload(c, &result).await?;
    }
    Ok(ApplyOutcome::Done(Box::new(result)))
}

/// Which connection an upload's folder names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    /// The folder is a connection's id (and the connection's kind).
    Exact(String, ConnectionKind),
    /// The upload is meant for this connection but is not in its folder: the folder names it in
    /// another case (`Contoso/` for `contoso`), or the file sits right under `scoping/` and this
    /// is the only cloud connection.
    Meant(String),
    /// No connection can be told: the ids of the registered ones.
    Unknown { ids: Vec<String> },
}

async fn place(ports: &ApplyPorts<'_>, folder: Option<&str>) -> Result<Placement, PortError> {
    if let Some(f) = folder
        && let Some(c) = ports.connections.connection(f).await?
    {
        return Ok(Placement::Exact(f.to_owned(), c.kind));
    }
    let all = ports.connections.connections().await?;
    let meant = match folder {
        Some(f) => all.iter().find(|c| c.id.eq_ignore_ascii_case(f)),
        None => match all
            .iter()
            .filter(|c| c.kind == ConnectionKind::Cloud)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [only] => Some(*only),
            _ => None,
        },
    };
    Ok(match meant {
        Some(c) => Placement::Meant(c.id.clone()),
        None => Placement::Unknown {
            ids: all.into_iter().map(|c| c.id).collect(),
        },
    })
}

/// Why an upload is in the wrong place, with the key that would work; `None` when it is where
/// its connection's uploads go.
fn misplaced(placement: &Placement, folder: Option<&str>, name: &str, nested: bool) -> Option<String> {
    let meant = meant_name(name);
    match (placement, folder) {
        (Placement::Exact(..), _) if !nested => None,
        (Placement::Exact(c, _), _) => Some(format!(
            "files in subfolders of scoping/{c}/ are not read: upload to scoping/{c}/{meant}"
        )),
        (Placement::Meant(c), Some(f)) => Some(format!(
            "the folder scoping/{f}/ is not connection {c}'s (connection ids are lowercase): upload to scoping/{c}/{meant}"
        )),
        (Placement::Meant(c), None) => Some(format!(
            "scope files go in their connection's folder: upload to scoping/{c}/{meant}"
        )),
        (Placement::Unknown { ids }, folder) => {
            let known = if ids.is_empty() {
                "no connection is registered yet: register one first (filetrail connection add)".to_owned()
            } else {
                format!(
                    "upload to scoping/<connection>/{meant}, where <connection> is one of: {}",
                    ids.join(", ")
                )
            };
            Some(match folder {
                Some(f) => format!("no connection is named {f:?}: {known}"),
                None => format!("scope files go in their connection's folder: {known}"),
            })
        }
    }
}

/// Checks the upload and reads it into a scope; `None` (with `result.error` set) when the upload
/// must be rejected.
async fn decide(
    ports: &ApplyPorts<'_>,
    event: &UploadEvent,
    target: &UploadTarget,
    connection_kind: ConnectionKind,
    result: &mut ScopeUploadResult,
) -> Result<Option<Scope>, PortError> {
    let connection = &target.connection;
    let Some(kind) = target.kind else {
        let name = event.key.rsplit('/').next().unwrap_or_default();
        result.error = Some(format!(
            "{name} is not a scope file name: upload users.csv (a list of users), groups.csv (a list of groups) or \
             all.csv (every user) under scoping/{connection}/, e.g. scoping/{connection}/{}",
            meant_name(name)
        ));
        return Ok(None);
    };
    if connection_kind != ConnectionKind::Cloud {
        result.error = Some(format!(
            "connection {connection} is an email connection; OneDrive scope applies to cloud connections"
        ));
        return Ok(None);
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
    fn every_key_under_scoping_is_an_upload_a_misplaced_file_a_result_or_no_file() {
        let upload = |f: &str, n: &str| ScopingKey::Upload {
            folder: f.into(),
            name: n.into(),
        };
        let misplaced = |f: Option<&str>, n: &str| ScopingKey::Misplaced {
            folder: f.map(Into::into),
            name: n.into(),
        };
        assert_eq!(
            classify_key("scoping/contoso/Users.CSV"),
            upload("contoso", "Users.CSV")
        );
        assert_eq!(
            classify_key("scoping/Contoso/notes.txt"),
            upload("Contoso", "notes.txt")
        );
        assert_eq!(classify_key("scoping/users.csv"), misplaced(None, "users.csv"));
        assert_eq!(
            classify_key("scoping/contoso/2026/users.csv"),
            misplaced(Some("contoso"), "users.csv")
        );
        assert_eq!(classify_key("scoping//users.csv"), misplaced(None, "users.csv"));
        assert_eq!(classify_key("scoping/contoso/results/x.json"), ScopingKey::Result);
        assert_eq!(classify_key("scoping/results/x.json"), ScopingKey::Result);
        assert_eq!(classify_key("scoping/contoso/results"), upload("contoso", "results"));
        assert_eq!(classify_key("scoping/contoso/archive/"), ScopingKey::NotAFile);
        assert_eq!(classify_key("scoping/"), ScopingKey::NotAFile);
        assert_eq!(classify_key("exports/contoso/x.json.gz"), ScopingKey::NotAFile);
        assert_eq!(kind_of_name("GROUPS.csv"), Some(ScopeKind::Groups));
        assert_eq!(meant_name("Groups.txt"), "groups.csv");
        assert_eq!(meant_name("finance.csv"), "users.csv");
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
