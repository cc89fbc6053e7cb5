//! `filetrail status`: per connection, where its drives are and what needs a person's attention.

use chrono::{DateTime, Utc};
use filetrail_core::activity::{ActivityCheckpoint, SHAREPOINT_CONTENT_TYPE};
use filetrail_core::model::{Connection, ConnectionError, DiscoverySummary, DriveState};
use filetrail_core::ports::{ActivityState, DiscoveryCheckpoint, PortResult, StateStore};
use filetrail_core::scope::{ScopeKind, ScopeUploadResult};
use serde::Serialize;

/// The status of one connection, as printed and as `--json` emits it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionStatus {
    pub connection: String,
    pub kind: String,
    pub tenant_id: String,
    pub cloud: String,
    pub state: String,
    pub drives: DriveCounts,
    pub users_without_onedrive: u64,
    pub last_discovery: Option<DiscoverySummary>,
    pub discovery_in_progress: Option<DiscoveryCheckpoint>,
    pub error: Option<ConnectionError>,
    pub scope: ScopeStatus,
    /// The result of the latest scope upload, accepted or rejected.
    pub last_scope_upload: Option<ScopeUploadResult>,
    /// Where polling the audit feed (`Audit.SharePoint`) stands; `None` before the first poll.
    pub activity: Option<ActivityCheckpoint>,
}

/// The scope in force, in brief (`filetrail scope show` lists the entries).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScopeStatus {
    pub kind: ScopeKind,
    pub entries: usize,
    pub source: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
}

/// Drive counts by state. `monitored` is every drive filetrail keeps working on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DriveCounts {
    pub monitored: u64,
    pub pending: u64,
    pub indexing: u64,
    pub indexed: u64,
    pub unmonitored: u64,
}

/// Reads the status of every connection (or one) from the state store.
pub async fn collect<S: StateStore + ActivityState>(
    state: &S,
    only: Option<&str>,
) -> PortResult<Vec<ConnectionStatus>> {
    let mut out = Vec::new();
    for c in state.connections().await? {
        if only.is_some_and(|id| id != c.id) {
            continue;
        }
        out.push(connection_status(state, c).await?);
    }
    Ok(out)
}

async fn connection_status<S: StateStore + ActivityState>(state: &S, c: Connection) -> PortResult<ConnectionStatus> {
    let mut drives = DriveCounts::default();
    for s in DriveState::ALL {
        let n = state.count_drives(&c.id, s).await?;
        match s {
            DriveState::Pending => drives.pending = n,
            DriveState::Indexing => drives.indexing = n,
            DriveState::Indexed => drives.indexed = n,
            DriveState::Unmonitored => drives.unmonitored = n,
        }
    }
    drives.monitored = drives.pending + drives.indexing + drives.indexed;
    let scope = match state.scope(&c.id).await? {
        Some(sc) => ScopeStatus {
            kind: sc.kind,
            entries: sc.entries.len(),
            source: sc.source.map(|src| src.key),
            applied_at: Some(sc.applied_at),
        },
        None => ScopeStatus {
            kind: ScopeKind::All,
            entries: 0,
            source: None,
            applied_at: None,
        },
    };
    Ok(ConnectionStatus {
        scope,
        last_scope_upload: state.last_scope_upload(&c.id).await?,
        users_without_onedrive: state.count_users_without_drive(&c.id).await?,
        discovery_in_progress: state.discovery_checkpoint(&c.id).await?,
        activity: state.activity_checkpoint(&c.id, SHAREPOINT_CONTENT_TYPE).await?,
        connection: c.id,
        kind: serde_json::to_value(c.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        tenant_id: c.tenant_id,
        cloud: c.cloud,
        state: format!("{:?}", c.state).to_lowercase(),
        drives,
        last_discovery: c.last_discovery,
        error: c.last_error,
    })
}

/// Renders the statuses for a terminal.
pub fn render(statuses: &[ConnectionStatus], now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if statuses.is_empty() {
        s.push_str("No connections yet. Register one with `filetrail connection add`.\n");
        return s;
    }
    for st in statuses {
        let _ = writeln!(
            s,
            "{} ({} connection, tenant {}, cloud {}, {})",
            st.connection, st.kind, st.tenant_id, st.cloud, st.state
        );
        let d = &st.drives;
        let _ = writeln!(
            s,
            "  drives            {} monitored: {} indexing, {} indexed{}; {} unmonitored",
            d.monitored,
            d.indexing,
            d.indexed,
            if d.pending > 0 {
                format!(", {} pending", d.pending)
            } else {
                String::new()
            },
            d.unmonitored
        );
        let _ = writeln!(s, "  without OneDrive  {} users", st.users_without_onedrive);
        let sc = &st.scope;
        let what = match sc.kind {
            ScopeKind::All => "every user".to_owned(),
            ScopeKind::Users => format!("{} users", sc.entries),
            ScopeKind::Groups => format!("members of {} groups", sc.entries),
        };
        let _ = writeln!(
            s,
            "  scope             {what}{}",
            match (&sc.source, sc.applied_at) {
                (Some(src), Some(at)) => format!(" from {src}, applied {}", at.format("%Y-%m-%d %H:%M:%SZ")),
                _ => String::new(),
            }
        );
        if let Some(unresolved) = st.last_discovery.as_ref().map(|d| &d.unresolved)
            && !unresolved.is_empty()
        {
            let names: Vec<String> = unresolved.iter().take(5).map(|u| u.entry.to_string()).collect();
            let _ = writeln!(
                s,
                "  not found         {} ({}{}); looked up again every run",
                unresolved.len(),
                names.join(", "),
                if unresolved.len() > 5 { ", …" } else { "" }
            );
        }
        if let Some(up) = &st.last_scope_upload {
            let verdict = if up.accepted {
                format!("accepted, {} entries", up.entries)
            } else {
                format!(
                    "rejected: {}",
                    first_line(up.error.as_deref().unwrap_or("see the result file"))
                )
            };
            let _ = writeln!(
                s,
                "  last upload       {} at {}: {verdict} ({})",
                up.key,
                up.uploaded_at.format("%Y-%m-%d %H:%M:%SZ"),
                up.result_key
            );
        }
        if st.kind == "cloud" {
            match &st.activity {
                Some(a) => {
                    let polled = a
                        .last_poll_at
                        .map(|t| format!("polled {} ({} ago)", t.format("%Y-%m-%d %H:%M:%SZ"), ago(now, t)))
                        .unwrap_or_else(|| "not polled".to_owned());
                    let _ = writeln!(
                        s,
                        "  audit feed        {polled}: content listed up to {}, {} blobs enqueued{}",
                        a.listed_until.format("%Y-%m-%d %H:%M:%SZ"),
                        a.blobs_enqueued,
                        if a.last_error.is_some() {
                            "; blocked (see error)"
                        } else {
                            ""
                        }
                    );
                }
                None => s.push_str("  audit feed        not polled yet\n"),
            }
        }
        match &st.last_discovery {
            Some(l) => {
                let _ = writeln!(
                    s,
                    "  last discovery    {} ({} ago): {} users, {} drives ({} new{}{}), {} without a OneDrive",
                    l.finished_at.format("%Y-%m-%d %H:%M:%SZ"),
                    ago(now, l.finished_at),
                    l.users_seen,
                    l.drives_found,
                    l.drives_new,
                    if l.drives_returned > 0 {
                        format!(", {} back in scope", l.drives_returned)
                    } else {
                        String::new()
                    },
                    if l.drives_unmonitored > 0 {
                        format!(", {} left the scope", l.drives_unmonitored)
                    } else {
                        String::new()
                    },
                    l.users_without_drive
                );
            }
            None => s.push_str("  last discovery    never finished\n"),
        }
        if let Some(cp) = &st.discovery_in_progress {
            let _ = writeln!(
                s,
                "  discovery run     in progress since {}: {} users, {} drives so far",
                cp.started_at.format("%Y-%m-%d %H:%M:%SZ"),
                cp.users_seen,
                cp.drives_found
            );
        }
        match &st.error {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "  error             {} since {}: {}",
                    e.code,
                    e.at.format("%Y-%m-%d %H:%M:%SZ"),
                    first_line(&e.message)
                );
                let _ = writeln!(s, "  fix               {}", e.fix);
            }
            None => s.push_str("  error             none\n"),
        }
    }
    s
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d", secs / 86_400),
    }
}
