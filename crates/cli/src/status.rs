//! `filetrail status`: per connection, where its drives are and what needs a person's attention.

use chrono::{DateTime, Utc};
use filetrail_core::activity::{ActivityCheckpoint, BlobTotals, SHAREPOINT_CONTENT_TYPE, drop_reason};
use filetrail_core::export::{ExportCheckpoint, ExportCheckpoints};
use filetrail_core::model::ConnectionKind;
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
    /// Opt-in write mode (`filetrail connection write-mode`): a write app is registered.
    pub write_mode: bool,
    /// How far the initial indexing of the monitored drives got.
    pub indexing: IndexingProgress,
    /// When the newest recorded event happened (today's or yesterday's), filled by
    /// [`add_deployment`]; `None` when none or not read.
    pub newest_event_at: Option<DateTime<Utc>>,
    /// Content blobs with records set aside (quarantine documents in S3), filled by
    /// [`add_deployment`].
    pub quarantined_blobs: Option<u64>,
    /// Audit records set aside (unreadable or of an unknown operation) across those documents.
    pub quarantined_records: Option<u64>,
    /// The deployment's queues (shared by every connection), filled by [`add_deployment`].
    pub queues: Vec<QueueStatus>,
    /// Where the hourly export to S3 stands, filled by [`add_deployment`]; `None` when not read.
    pub export: Option<ExportStatus>,
    /// What became of the audit records ingested (cloud connections).
    pub feed: Option<FeedStatus>,
}

/// What became of a connection's audit records: events, drops by reason, and records parked
/// until discovery finds their OneDrive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedStatus {
    /// Summed over the blobs ingested in the last month.
    pub totals: BlobTotals,
    /// Blobs parked now for want of a drive.
    pub parked_blobs: u64,
    /// Blobs parked unread: they came while the connection was deauthorized.
    #[serde(default)]
    pub unread_blobs: u64,
    /// Records in them waiting for their OneDrive.
    pub parked_records: u64,
    /// When the longest-waiting blob was parked.
    pub oldest_parked_at: Option<DateTime<Utc>>,
    /// When the first parked blob's content expires at Microsoft (the feed keeps content 7 days).
    pub first_expiry: Option<DateTime<Utc>>,
}

/// The export of a connection's events to S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportStatus {
    /// `None` before the first scheduled export.
    pub checkpoint: Option<ExportCheckpoint>,
    /// Exported hours whose files were hashed since, waiting to be written again.
    pub hours_to_rewrite: u64,
}

/// Initial indexing of a connection's monitored drives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexingProgress {
    /// Drives whose first walk finished (indexed).
    pub drives_done: u64,
    /// Drives monitored (pending, indexing or indexed).
    pub drives_total: u64,
    /// Items (files and folders) written so far across those drives.
    pub items_indexed: u64,
}

/// One work queue: messages waiting and in flight, and its dead-letter queue's depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// The queue's name (`…-HashQueue`).
    pub queue: String,
    /// `ApproximateNumberOfMessages`: waiting to be worked on.
    pub waiting: u64,
    /// `ApproximateNumberOfMessagesNotVisible`: being worked on.
    pub in_flight: u64,
    /// The dead-letter queue named by the queue's redrive policy, if any.
    pub dead_letter_queue: Option<String>,
    /// Messages on that dead-letter queue: work that failed repeatedly.
    pub dead_letters: u64,
    /// When the oldest of the dead letters read (up to ten) was first sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_dead_letter_at: Option<DateTime<Utc>>,
    /// Of the audit blobs among them, when the first one's content expires at Microsoft: after
    /// that it cannot be fetched, redriven or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_blob_expiry: Option<DateTime<Utc>>,
}

impl QueueStatus {
    /// Whether this is the queue of files waiting to be hashed.
    pub fn is_hash_queue(&self) -> bool {
        self.queue.ends_with("HashQueue")
    }
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
    let mut items_indexed = 0;
    for s in [DriveState::Indexing, DriveState::Indexed] {
        let mut cursor = None;
        loop {
            let (ids, next) = state.drive_ids_in_state(&c.id, s, cursor).await?;
            for d in state.drives(&ids).await? {
                items_indexed += d.index.items;
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    let indexing = IndexingProgress {
        drives_done: drives.indexed,
        drives_total: drives.monitored,
        items_indexed,
    };
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
    let feed = if c.kind == ConnectionKind::Cloud {
        let parked = state.parked_blobs(&c.id).await?;
        Some(FeedStatus {
            totals: state.ingest_totals(&c.id).await?,
            parked_blobs: parked.iter().filter(|p| !p.unread).count() as u64,
            unread_blobs: parked.iter().filter(|p| p.unread).count() as u64,
            parked_records: parked.iter().map(|p| p.records).sum(),
            oldest_parked_at: parked.iter().map(|p| p.parked_at).min(),
            first_expiry: parked.iter().map(|p| p.blob.expires_at()).min(),
        })
    } else {
        None
    };
    Ok(ConnectionStatus {
        feed,
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
        write_mode: c.write_app.is_some(),
        indexing,
        newest_event_at: None,
        quarantined_blobs: None,
        quarantined_records: None,
        queues: Vec::new(),
        export: None,
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
        let ix = &st.indexing;
        let _ = writeln!(
            s,
            "  indexing          {}/{} drives done, {} items indexed",
            ix.drives_done, ix.drives_total, ix.items_indexed
        );
        let _ = writeln!(s, "  without OneDrive  {} users", st.users_without_onedrive);
        let _ = writeln!(
            s,
            "  write mode        {}",
            if st.write_mode {
                "on (`filetrail sharing revoke` may remove sharing)"
            } else {
                "off (read only)"
            }
        );
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
                if l.drives_of_other_connections > 0 {
                    let _ = writeln!(
                        s,
                        "  other connection  {} OneDrives found are recorded by another connection and left to it \
                         (is this tenant registered twice? `filetrail connection list`)",
                        l.drives_of_other_connections
                    );
                }
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
        if st.state == "removed" {
            let _ = writeln!(
                s,
                "  removed           no work runs and its secret is deleted; its history stays searchable until \
                 `filetrail connection remove {} --purge`",
                st.connection
            );
        }
        if st.state == "deauthorized" {
            let _ = writeln!(
                s,
                "  paused            deauthorized: no work runs; `filetrail connection resume {}` restarts it",
                st.connection
            );
        }
        if let Some(t) = st.newest_event_at {
            let _ = writeln!(
                s,
                "  newest event      {} ({} behind)",
                t.format("%Y-%m-%d %H:%M:%SZ"),
                ago(now, t)
            );
        } else if st.kind == "cloud" && !st.queues.is_empty() {
            s.push_str("  newest event      none today or yesterday\n");
        }
        if let Some(export) = &st.export {
            s.push_str(&render_export(export, &st.connection, now));
        }
        if let Some(feed) = &st.feed {
            s.push_str(&render_feed(feed, now));
        }
        if let (Some(records), Some(blobs)) = (st.quarantined_records, st.quarantined_blobs) {
            let _ = writeln!(
                s,
                "  quarantined       {records} records in {blobs} blob{} (s3 quarantine/{}/)",
                if blobs == 1 { "" } else { "s" },
                st.connection
            );
        }
        let errors = current_errors(st);
        if errors.is_empty() {
            s.push_str("  error             none\n");
        }
        for e in errors {
            let _ = writeln!(
                s,
                "  error             {} since {}: {}",
                e.code,
                e.at.format("%Y-%m-%d %H:%M:%SZ"),
                first_line(&e.message)
            );
            let _ = writeln!(s, "  fix               {}", e.fix);
        }
    }
    if let Some(first) = statuses.first()
        && !first.queues.is_empty()
    {
        s.push_str(&render_queues(&first.queues));
    }
    s
}

/// The audit records line (what became of them) and, when some wait, the parked line.
fn render_feed(feed: &FeedStatus, now: DateTime<Utc>) -> String {
    let t = &feed.totals;
    let mut out = String::new();
    if t.records > 0 || feed.parked_records > 0 {
        let dropped: u64 = t.dropped.values().sum();
        let mut reasons: Vec<(&String, &u64)> = t.dropped.iter().filter(|(_, n)| **n > 0).collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let why: Vec<String> = reasons
            .iter()
            .map(|(reason, n)| format!("{n} {}", drop_reason::describe(reason)))
            .collect();
        out.push_str(&format!(
            "  audit records     {} in {} blob{} (last month): {} events, {} repeats, {} dropped{}, {} quarantined, {} parked\n",
            t.records,
            t.blobs,
            if t.blobs == 1 { "" } else { "s" },
            t.events_inserted,
            t.events_duplicate,
            dropped,
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            },
            t.quarantined,
            feed.parked_records
        ));
    }
    if feed.unread_blobs > 0 {
        out.push_str(&format!(
            "  unread            {} blob{} came while the connection was deauthorized; read once it is resumed \
             (`filetrail connection resume`) and a discovery run finishes{}\n",
            feed.unread_blobs,
            if feed.unread_blobs == 1 { "" } else { "s" },
            feed.first_expiry
                .map(|t| format!(
                    " (the first parked blob's content expires at Microsoft {}: records still unread then are lost)",
                    t.format("%Y-%m-%d %H:%MZ")
                ))
                .unwrap_or_default()
        ));
    }
    if feed.parked_blobs > 0 {
        out.push_str(&format!(
            "  parked            {} record{} in {} blob{} wait for discovery to find their OneDrive{}; ingested again when a \
             discovery run finishes{}\n",
            feed.parked_records,
            if feed.parked_records == 1 { "" } else { "s" },
            feed.parked_blobs,
            if feed.parked_blobs == 1 { "" } else { "s" },
            feed.oldest_parked_at
                .map(|t| format!(", the oldest for {}", ago(now, t)))
                .unwrap_or_default(),
            feed.first_expiry
                .map(|t| format!(
                    " (the first blob's content expires at Microsoft {}: records still parked then are lost and counted)",
                    t.format("%Y-%m-%d %H:%MZ")
                ))
                .unwrap_or_default()
        ));
    }
    out
}

/// The export line: how far the hourly export got, and hours waiting to be written again.
fn render_export(export: &ExportStatus, connection: &str, now: DateTime<Utc>) -> String {
    let Some(cp) = &export.checkpoint else {
        return format!(
            "  export            not run yet (hourly; `filetrail export {connection} --since 7d` writes a range now)\n"
        );
    };
    let mut line = format!(
        "  export            events recorded before {} in S3 ({} events)",
        cp.next_window.format("%Y-%m-%d %H:%MZ"),
        cp.events_exported
    );
    if let Some(run) = cp.last_run_at {
        line.push_str(&format!(", last run {} ago", ago(now, run)));
    }
    if export.hours_to_rewrite > 0 {
        line.push_str(&format!(
            "; {} hour{} to write again with digests recorded since",
            export.hours_to_rewrite,
            if export.hours_to_rewrite == 1 { "" } else { "s" }
        ));
    }
    line.push('\n');
    line
}

/// Every problem of a connection a person must fix: the connection's own and the audit feed's.
pub fn current_errors(st: &ConnectionStatus) -> Vec<&ConnectionError> {
    let mut out: Vec<&ConnectionError> = st.error.iter().collect();
    if let Some(e) = st.activity.as_ref().and_then(|a| a.last_error.as_ref())
        && !out.iter().any(|o| o.code == e.code)
    {
        out.push(e);
    }
    out
}

/// The deployment's queues: backlog, in flight, dead letters, with the fix for dead letters.
pub fn render_queues(queues: &[QueueStatus]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("queues (all connections)\n");
    let width = queues.iter().map(|q| q.queue.len()).max().unwrap_or(0);
    for q in queues {
        let _ = writeln!(
            s,
            "  {:<width$}  {} waiting, {} in flight, {} dead letters",
            q.queue, q.waiting, q.in_flight, q.dead_letters
        );
    }
    if let Some(h) = queues.iter().find(|q| q.is_hash_queue()) {
        let _ = writeln!(
            s,
            "  hashing backlog   {} files waiting to be hashed",
            h.waiting + h.in_flight
        );
    }
    for q in queues.iter().filter(|q| q.dead_letters > 0) {
        let mut since = Vec::new();
        if let Some(at) = q.oldest_dead_letter_at {
            since.push(format!("the oldest read first sent {}", at.format("%Y-%m-%d %H:%MZ")));
        }
        if let Some(at) = q.first_blob_expiry {
            since.push(format!(
                "the first blob's content expires at Microsoft {}: redrive before",
                at.format("%Y-%m-%d %H:%MZ")
            ));
        }
        let _ = writeln!(
            s,
            "  error             {} messages of {} failed repeatedly and wait on {}{}",
            q.dead_letters,
            q.queue,
            q.dead_letter_queue.as_deref().unwrap_or("its dead-letter queue"),
            if since.is_empty() {
                String::new()
            } else {
                format!(" ({})", since.join("; "))
            }
        );
        let name = crate::redrive::queue_index(&q.queue)
            .map(|i| crate::redrive::QUEUES[i])
            .unwrap_or(q.queue.as_str());
        let _ = writeln!(
            s,
            "  fix               fix the cause the function logs name, then move them back: `filetrail redrive {name}`{}",
            if name == "activity" {
                " (a blob still there when the audit feed's 7-day retention ends is lost)"
            } else {
                ""
            }
        );
    }
    s
}

/// Reads a queue's depths and, through its redrive policy, its dead-letter queue's.
pub async fn queue_status(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<QueueStatus> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(A::RedrivePolicy)
        .send()
        .await?;
    let get = |a: &A| attrs.attributes().and_then(|m| m.get(a)).cloned();
    let num = |a: &A| get(a).and_then(|v| v.parse().ok()).unwrap_or(0);
    let dlq_name = get(&A::RedrivePolicy).and_then(|p| crate::redrive::dead_letter_queue_of(&p));
    let mut dead_letters = 0;
    let (mut oldest_dead_letter_at, mut first_blob_expiry) = (None, None);
    if let Some(name) = &dlq_name {
        let dlq_url = sqs.get_queue_url().queue_name(name).send().await?;
        if let Some(dlq_url) = dlq_url.queue_url() {
            let d = sqs
                .get_queue_attributes()
                .queue_url(dlq_url)
                .attribute_names(A::ApproximateNumberOfMessages)
                .send()
                .await?;
            dead_letters = d
                .attributes()
                .and_then(|m| m.get(&A::ApproximateNumberOfMessages))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if dead_letters > 0 {
                (oldest_dead_letter_at, first_blob_expiry) = peek_dead_letters(sqs, dlq_url).await?;
            }
        }
    }
    Ok(QueueStatus {
        queue: url.rsplit('/').next().unwrap_or(url).to_owned(),
        waiting: num(&A::ApproximateNumberOfMessages),
        in_flight: num(&A::ApproximateNumberOfMessagesNotVisible),
        dead_letter_queue: dlq_name,
        dead_letters,
        oldest_dead_letter_at,
        first_blob_expiry,
    })
}

/// Reads up to ten dead letters without taking them (visibility timeout 0): when the oldest was
/// first sent (SQS keeps a message's original `SentTimestamp` when it moves it to the
/// dead-letter queue), and when the first audit blob among them expires at Microsoft.
async fn peek_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    dlq_url: &str,
) -> anyhow::Result<(Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
    use aws_sdk_sqs::types::MessageSystemAttributeName as M;
    let read = sqs
        .receive_message()
        .queue_url(dlq_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_system_attribute_names(M::SentTimestamp)
        .send()
        .await?;
    let mut oldest: Option<DateTime<Utc>> = None;
    let mut expiry: Option<DateTime<Utc>> = None;
    for m in read.messages() {
        let sent = m
            .attributes()
            .and_then(|a| a.get(&M::SentTimestamp))
            .and_then(|t| t.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis);
        if let Some(sent) = sent {
            oldest = Some(oldest.map_or(sent, |o| o.min(sent)));
        }
        if let Ok(job) = serde_json::from_str::<filetrail_core::jobs::BlobJob>(m.body().unwrap_or_default()) {
            let at = job.blob.expires_at();
            expiry = Some(expiry.map_or(at, |e| e.min(at)));
        }
    }
    Ok((oldest, expiry))
}

/// The newest event of a connection observed today or yesterday (UTC): one newest-first query per
/// `by_day` shard.
pub async fn newest_event(
    ddb: &aws_sdk_dynamodb::Client,
    events_table: &str,
    connection: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use filetrail_aws::events::{BY_DAY, DAY_PK, DAY_SHARDS, OBSERVED_SK, day_pk};
    for day in [now, now - chrono::Duration::days(1)] {
        let mut newest: Option<DateTime<Utc>> = None;
        for shard in 0..DAY_SHARDS {
            let out = ddb
                .query()
                .table_name(events_table)
                .index_name(BY_DAY)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", DAY_PK)
                .expression_attribute_values(":p", AttributeValue::S(day_pk(connection, &day, shard)))
                .scan_index_forward(false)
                .limit(1)
                .send()
                .await?;
            let at = out
                .items()
                .first()
                .and_then(|i| i.get(OBSERVED_SK))
                .and_then(|v| v.as_s().ok())
                .and_then(|sk| sk.split('#').next())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            newest = newest.max(at);
        }
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

/// Quarantine documents (one per content blob with records set aside) of a connection in S3,
/// and the records they hold: `(blobs, records)`.
pub async fn quarantined(s3: &aws_sdk_s3::Client, bucket: &str, connection: &str) -> anyhow::Result<(u64, u64)> {
    let prefix = format!("{}{connection}/", filetrail_aws::objects::QUARANTINE_PREFIX);
    let (mut blobs, mut records) = (0, 0);
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(&prefix)
            .set_continuation_token(token)
            .send()
            .await?;
        for key in out.contents().iter().filter_map(|o| o.key()) {
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await?
                .body
                .collect()
                .await?;
            let doc: filetrail_aws::objects::QuarantineDocument = serde_json::from_slice(&body.into_bytes())?;
            blobs += 1;
            records += doc.records.len() as u64;
        }
        match out.next_continuation_token() {
            Some(t) => token = Some(t.to_owned()),
            None => return Ok((blobs, records)),
        }
    }
}

/// Where the deployment-wide figures come from.
pub struct Deployment<'a> {
    pub sqs: &'a aws_sdk_sqs::Client,
    pub ddb: &'a aws_sdk_dynamodb::Client,
    pub s3: &'a aws_sdk_s3::Client,
    /// The work queues' URLs (discover, index, activity, hash).
    pub queue_urls: Vec<String>,
    pub events_table: Option<&'a str>,
    pub bucket: Option<&'a str>,
    /// Export checkpoints and their marks (the state table).
    pub exports: Option<&'a dyn ExportCheckpoints>,
}

/// Adds what lives outside the state table: queue depths and dead letters (the same for every
/// connection), the newest event and the quarantine count. A figure that cannot be read stays
/// empty and the failure is returned as a warning line, so status still prints.
pub async fn add_deployment(statuses: &mut [ConnectionStatus], d: &Deployment<'_>, now: DateTime<Utc>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut queues = Vec::new();
    for url in &d.queue_urls {
        match queue_status(d.sqs, url).await {
            Ok(q) => queues.push(q),
            Err(e) => warnings.push(format!("could not read queue {url}: {e}")),
        }
    }
    for st in statuses.iter_mut() {
        st.queues.clone_from(&queues);
        if let Some(table) = d.events_table {
            match newest_event(d.ddb, table, &st.connection, now).await {
                Ok(t) => st.newest_event_at = t,
                Err(e) => warnings.push(format!("could not read the newest event of {}: {e}", st.connection)),
            }
        }
        if let Some(exports) = d.exports {
            match export_status(exports, &st.connection).await {
                Ok(e) => st.export = Some(e),
                Err(e) => warnings.push(format!(
                    "could not read the export checkpoint of {}: {e}",
                    st.connection
                )),
            }
        }
        if let Some(bucket) = d.bucket {
            match quarantined(d.s3, bucket, &st.connection).await {
                Ok((blobs, records)) => {
                    st.quarantined_blobs = Some(blobs);
                    st.quarantined_records = Some(records);
                }
                Err(e) => warnings.push(format!("could not count quarantined blobs of {}: {e}", st.connection)),
            }
        }
    }
    warnings
}

async fn export_status(exports: &dyn ExportCheckpoints, connection: &str) -> PortResult<ExportStatus> {
    Ok(ExportStatus {
        checkpoint: exports.export_checkpoint(connection).await?,
        hours_to_rewrite: exports.stale_windows(connection).await?.len() as u64,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn status() -> ConnectionStatus {
        ConnectionStatus {
            connection: "contoso".into(),
            kind: "cloud".into(),
            tenant_id: "t-1".into(),
            cloud: "worldwide".into(),
            state: "active".into(),
            drives: DriveCounts {
                monitored: 4,
                pending: 0,
                indexing: 1,
                indexed: 3,
                unmonitored: 0,
            },
            users_without_onedrive: 1,
            last_discovery: None,
            discovery_in_progress: None,
            error: None,
            scope: ScopeStatus {
                kind: ScopeKind::All,
                entries: 0,
                source: None,
                applied_at: None,
            },
            last_scope_upload: None,
            activity: Some(ActivityCheckpoint {
                listed_until: at("2026-11-30T09:55:00Z"),
                window: None,
                last_poll_at: Some(at("2026-11-30T09:55:00Z")),
                last_success_at: Some(at("2026-11-30T09:55:00Z")),
                blobs_enqueued: 7,
                last_error: Some(ConnectionError {
                    code: "AF10001".into(),
                    message: "The permission set () did not include ActivityFeed.Read".into(),
                    fix: "grant ActivityFeed.Read".into(),
                    at: at("2026-11-30T09:50:00Z"),
                }),
            }),
            write_mode: false,
            indexing: IndexingProgress {
                drives_done: 3,
                drives_total: 4,
                items_indexed: 1234,
            },
            newest_event_at: Some(at("2026-11-30T09:30:00Z")),
            export: Some(ExportStatus {
                checkpoint: Some(ExportCheckpoint {
                    next_window: at("2026-11-30T09:00:00Z"),
                    events_exported: 1843,
                    last_run_at: Some(at("2026-11-30T09:25:00Z")),
                }),
                hours_to_rewrite: 2,
            }),
            quarantined_blobs: Some(2),
            quarantined_records: Some(5),
            feed: Some(FeedStatus {
                totals: BlobTotals {
                    blobs: 12,
                    records: 150,
                    events_inserted: 100,
                    quarantined: 5,
                    dropped: [
                        (drop_reason::DRIVE_NOT_MONITORED.to_owned(), 30),
                        ("not_onedrive".to_owned(), 12),
                    ]
                    .into_iter()
                    .collect(),
                    parked: 3,
                    ..BlobTotals::default()
                },
                parked_blobs: 1,
                unread_blobs: 2,
                parked_records: 3,
                oldest_parked_at: Some(at("2026-11-30T09:15:00Z")),
                first_expiry: Some(at("2026-12-07T08:00:00Z")),
            }),
            queues: vec![
                QueueStatus {
                    queue: "ft-HashQueue".into(),
                    waiting: 40,
                    in_flight: 2,
                    dead_letter_queue: Some("ft-HashDeadLetterQueue".into()),
                    dead_letters: 0,
                    oldest_dead_letter_at: None,
                    first_blob_expiry: None,
                },
                QueueStatus {
                    queue: "ft-ActivityQueue".into(),
                    waiting: 0,
                    in_flight: 0,
                    dead_letter_queue: Some("ft-ActivityDeadLetterQueue".into()),
                    dead_letters: 2,
                    oldest_dead_letter_at: Some(at("2026-11-30T08:05:00Z")),
                    first_blob_expiry: Some(at("2026-12-07T08:00:00Z")),
                },
                QueueStatus {
                    queue: "ft-IndexQueue".into(),
                    waiting: 0,
                    in_flight: 1,
                    dead_letter_queue: Some("ft-IndexDeadLetterQueue".into()),
                    dead_letters: 3,
                    oldest_dead_letter_at: Some(at("2026-11-30T09:40:00Z")),
                    first_blob_expiry: None,
                },
            ],
        }
    }

    #[test]
    fn the_dashboard_shows_progress_lag_backlog_quarantine_and_every_error_with_its_fix() {
        let text = render(&[status()], at("2026-11-30T10:00:00Z"));
        for expected in [
            "indexing          3/4 drives done, 1234 items indexed",
            "write mode        off (read only)",
            "newest event      2026-11-30 09:30:00Z (30m behind)",
            "quarantined       5 records in 2 blobs",
            "error             AF10001 since 2026-11-30 09:50:00Z",
            "fix               grant ActivityFeed.Read",
            "hashing backlog   42 files waiting to be hashed",
            "export            events recorded before 2026-11-30 09:00Z in S3 (1843 events), last run 35m ago; \
             2 hours to write again with digests recorded since",
            "3 messages of ft-IndexQueue failed repeatedly and wait on ft-IndexDeadLetterQueue (the oldest read first \
             sent 2026-11-30 09:40Z)",
            "fix               fix the cause the function logs name, then move them back: `filetrail redrive index`",
            "2 messages of ft-ActivityQueue failed repeatedly and wait on ft-ActivityDeadLetterQueue (the oldest read \
             first sent 2026-11-30 08:05Z; the first blob's content expires at Microsoft 2026-12-07 08:00Z: redrive before)",
            "`filetrail redrive activity` (a blob still there when the audit feed's 7-day retention ends is lost)",
            "audit records     150 in 12 blobs (last month): 100 events, 0 repeats, 42 dropped (30 the OneDrive is outside \
             the connection's scope; 12 a team or communication site, or another workload), 5 quarantined, 3 parked",
            "parked            3 records in 1 blob wait for discovery to find their OneDrive, the oldest for 45m; \
             ingested again when a discovery run finishes (the first blob's content expires at Microsoft \
             2026-12-07 08:00Z",
            "unread            2 blobs came while the connection was deauthorized; read once it is resumed \
             (`filetrail connection resume`) and a discovery run finishes (the first parked blob's content expires at \
             Microsoft 2026-12-07 08:00Z: records still unread then are lost)",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn onedrives_left_to_another_connection_are_named_with_where_to_look() {
        let mut st = status();
        let summary = |others| DiscoverySummary {
            run_id: "run-1".into(),
            started_at: at("2026-11-30T09:00:00Z"),
            finished_at: at("2026-11-30T09:05:00Z"),
            users_seen: 12,
            drives_found: 10,
            drives_new: 0,
            users_without_drive: 2,
            scope: filetrail_core::scope::ScopeKind::All,
            unresolved: Vec::new(),
            drives_unmonitored: 0,
            drives_returned: 0,
            drives_over_cap: 0,
            scope_version: None,
            drives_of_other_connections: others,
        };
        st.last_discovery = Some(summary(10));
        let text = render(std::slice::from_ref(&st), at("2026-11-30T10:00:00Z"));
        assert!(
            text.contains(
                "other connection  10 OneDrives found are recorded by another connection and left to it (is this \
                 tenant registered twice? `filetrail connection list`)"
            ),
            "{text}"
        );
        st.last_discovery = Some(summary(0));
        let text = render(&[st], at("2026-11-30T10:00:00Z"));
        assert!(!text.contains("other connection"), "{text}");
    }

    #[test]
    fn a_deauthorized_connection_says_it_is_paused_and_how_to_resume() {
        let mut st = status();
        st.state = "deauthorized".into();
        st.activity = None;
        st.queues.clear();
        let text = render(&[st], at("2026-11-30T10:00:00Z"));
        assert!(
            text.contains("paused            deauthorized: no work runs; `filetrail connection resume contoso`"),
            "{text}"
        );
        assert!(text.contains("error             none"), "{text}");
        assert!(!text.contains("queues"), "{text}");
    }
}
