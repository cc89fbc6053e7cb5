//! `filetrail scope upload|show`: change and inspect what a connection monitors.
//!
//! An upload from the CLI is the same as one from the S3 console: the CSV goes to
//! `scoping/<connection>/<kind>.csv` in the deployment bucket, the bucket notifies apply-scope,
//! and the CLI waits for the result apply-scope records ([`put`], then [`PendingUpload::result`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use filetrail_aws::objects::BucketObjects;
use filetrail_core::apply_scope::upload_key;
use filetrail_core::ports::StateStore;
use filetrail_core::scope::{Scope, ScopeKind, ScopeUploadResult};

/// How long `scope upload` waits for apply-scope by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);
/// Slack for clocks: a result counts as this upload's if S3 saw it at most this long before the
/// CLI started the upload.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// Decides whether a file is a users or a groups list when `--kind` is not given: from the
/// file name (`*group*`, `*user*`), else from its header row. Fails asking for `--kind` when
/// neither tells.
pub fn detect_kind(path: &Path, bytes: &[u8]) -> anyhow::Result<ScopeKind> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.contains("group") {
        return Ok(ScopeKind::Groups);
    }
    if name.contains("user") {
        return Ok(ScopeKind::Users);
    }
    let text = String::from_utf8_lossy(bytes);
    let header = text.trim_start_matches('\u{feff}').lines().next().unwrap_or_default();
    let normalise = |h: &str| {
        h.trim()
            .trim_matches('"')
            .chars()
            .filter(|c| !matches!(c, ' ' | '_' | '-'))
            .collect::<String>()
            .to_lowercase()
    };
    let columns: Vec<String> = header.split(',').map(normalise).collect();
    let has = |names: &[&str]| names.iter().any(|n| columns.contains(&normalise(n)));
    // `Display Name` / `Email` fit both kinds; these columns name one.
    let group_only = ["Groups"];
    let user_only = ["OwnerPrincipalName", "UserPrincipalName", "Owner"];
    match (has(&group_only), has(&user_only)) {
        (true, false) => Ok(ScopeKind::Groups),
        (false, true) => Ok(ScopeKind::Users),
        _ => bail!(
            "cannot tell whether {} lists users or groups from its name or header; pass --kind users or --kind groups",
            path.display()
        ),
    }
}

/// An upload S3 has accepted, whose result apply-scope has yet to record.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub bucket: String,
    pub connection: String,
    pub key: String,
    pub etag: String,
    started: DateTime<Utc>,
}

/// Puts the list where an admin would (`scoping/<connection>/<kind>.csv`), after checking the
/// connection exists.
pub async fn put(
    objects: &BucketObjects,
    state: &dyn StateStore,
    connection: &str,
    kind: ScopeKind,
    body: Vec<u8>,
) -> anyhow::Result<PendingUpload> {
    if state.connection(connection).await?.is_none() {
        bail!("no connection named {connection:?}; `filetrail status` lists them all");
    }
    let key = upload_key(connection, kind);
    let started = Utc::now();
    let etag = objects
        .put(&key, body, "text/csv")
        .await
        .with_context(|| format!("uploading to s3://{}/{key}", objects.bucket()))?;
    Ok(PendingUpload {
        bucket: objects.bucket().to_owned(),
        connection: connection.to_owned(),
        key,
        etag,
        started,
    })
}

impl PendingUpload {
    /// Waits up to `wait` for apply-scope's result of this upload.
    pub async fn result(&self, state: &dyn StateStore, wait: Duration) -> anyhow::Result<ScopeUploadResult> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(result) = state.last_scope_upload(&self.connection).await?
                && is_result_of(&result, &self.etag, self.started)
            {
                return Ok(result);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no result for s3://{}/{} after {}s: apply-scope has not processed it. Locally, run \
                     `filetrail local run` (infra/local/demo --keep keeps it running); on AWS, check the \
                     ApplyScopeFunction logs and the scope dead-letter queue",
                    self.bucket,
                    self.key,
                    wait.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn is_result_of(result: &ScopeUploadResult, etag: &str, started: DateTime<Utc>) -> bool {
    result.etag.trim_matches('"') == etag && result.uploaded_at >= started - CLOCK_SKEW
}

/// Renders an upload's result for a terminal.
pub fn render_result(result: &ScopeUploadResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if result.accepted {
        let kind = result.kind.map(|k| k.as_str()).unwrap_or("?");
        let _ = writeln!(
            s,
            "Accepted {}: {} {kind} entries{}; the previous scope is replaced and discovery has started.",
            result.key,
            result.entries,
            if result.duplicates > 0 {
                format!(" ({} duplicate rows counted once)", result.duplicates)
            } else {
                String::new()
            }
        );
    } else {
        let _ = writeln!(
            s,
            "Rejected {}: {}\nThe previous scope stays in force.",
            result.key,
            result.error.as_deref().unwrap_or("see the rejected rows")
        );
    }
    if !result.rejected_rows.is_empty() {
        let _ = writeln!(s, "{} rows were skipped:", result.rejected_rows.len());
        for row in result.rejected_rows.iter().take(20) {
            let _ = writeln!(s, "  line {:>5}  {:?}: {}", row.line, row.value, row.reason);
        }
        if result.rejected_rows.len() > 20 {
            let _ = writeln!(s, "  … {} more in the result file", result.rejected_rows.len() - 20);
        }
    }
    let _ = writeln!(s, "Result file: {}", result.result_key);
    s
}

/// Renders a connection's scope in force and its latest upload.
pub fn render_scope(
    connection: &str,
    scope: Option<&Scope>,
    last_upload: Option<&ScopeUploadResult>,
    unresolved: &[filetrail_core::scope::UnresolvedEntry],
    limit: usize,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    match scope {
        None => {
            let _ = writeln!(
                s,
                "{connection}: every user (never scoped; upload a users or groups CSV to narrow it)"
            );
        }
        Some(scope) => {
            let from = scope.source.as_ref().map(|src| src.key.as_str()).unwrap_or("default");
            let what = match scope.kind {
                ScopeKind::All => "every user".to_owned(),
                ScopeKind::Users => format!("{} users", scope.entries.len()),
                ScopeKind::Groups => format!("members of {} groups (nested groups included)", scope.entries.len()),
            };
            let _ = writeln!(
                s,
                "{connection}: {what}, from {from}, applied {}",
                scope.applied_at.format("%Y-%m-%d %H:%M:%SZ")
            );
            for entry in scope.entries.iter().take(limit) {
                let _ = writeln!(s, "  {entry}");
            }
            if scope.entries.len() > limit {
                let _ = writeln!(s, "  … {} more (--all lists every entry)", scope.entries.len() - limit);
            }
        }
    }
    if !unresolved.is_empty() {
        let _ = writeln!(
            s,
            "Not found on the last discovery run ({}; looked up again on every run):",
            unresolved.len()
        );
        for u in unresolved.iter().take(limit) {
            let _ = writeln!(s, "  {}: {}", u.entry, u.reason);
        }
    }
    if let Some(last) = last_upload {
        let verdict = if last.accepted {
            format!("accepted, {} entries", last.entries)
        } else {
            format!("rejected: {}", last.error.as_deref().unwrap_or("see the result file"))
        };
        let _ = writeln!(
            s,
            "Last upload: {} at {}: {verdict}{} (result {})",
            last.key,
            last.uploaded_at.format("%Y-%m-%d %H:%M:%SZ"),
            if last.rejected_rows.is_empty() {
                String::new()
            } else {
                format!("; {} rows skipped", last.rejected_rows.len())
            },
            last.result_key
        );
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_comes_from_the_file_name_then_the_header() {
        let users = detect_kind(Path::new("/tmp/sales-users.csv"), b"Email\n").unwrap();
        assert_eq!(users, ScopeKind::Users);
        let groups = detect_kind(Path::new("Groups.CSV"), b"Email\n").unwrap();
        assert_eq!(groups, ScopeKind::Groups);
        let by_header = detect_kind(Path::new("list.csv"), "\u{feff}Display Name,Groups\n".as_bytes()).unwrap();
        assert_eq!(by_header, ScopeKind::Groups);
        let by_header = detect_kind(Path::new("list.csv"), b"UserPrincipalName\n").unwrap();
        assert_eq!(by_header, ScopeKind::Users);
        let err = detect_kind(Path::new("list.csv"), b"Email\n").unwrap_err().to_string();
        assert!(err.contains("--kind"), "{err}");
    }
}
