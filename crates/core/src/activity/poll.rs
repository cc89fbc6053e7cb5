//! Polling one connection's audit feed: list the content blobs that became available since the
//! checkpoint and enqueue each one once.
//!
//! Contract:
//! - windows are at most 24 hours, never start before the retention (7 days, less a margin so a
//!   window's start is still inside it when the request arrives), and end no later than now;
//! - every poll lists again from `listed_until - overlap`, so content that shows up late in a
//!   window already listed is still enqueued; blobs enqueued before are recognised by content id
//!   and not enqueued again;
//! - the checkpoint is saved after each page's blobs are enqueued (and marked), so a crash
//!   lists at most that page again;
//! - a terminal problem (audit log off, permission missing) is recorded on the connection with
//!   its fix and clears itself on the next poll that works.

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use tracing::{info, warn};

use crate::activity::{
    ACTIVITY_ERROR_PREFIX, ActivityCheckpoint, ContentBlob, OpenWindow, SHAREPOINT_CONTENT_TYPE, max_window, retention,
};
use crate::budget::Budget;
use crate::error::PortError;
use crate::jobs::BlobJob;
use crate::model::{Connection, ConnectionError};
use crate::ports::{ActivityFeed, ActivityState, BlobQueue, ConnectionStore};

/// The ports polling needs. `feed` is the connection's own Management Activity API client.
pub struct PollPorts<'a> {
    /// Where a connection's problem is recorded for status.
    pub connections: &'a dyn ConnectionStore,
    pub activity: &'a dyn ActivityState,
    pub feed: &'a dyn ActivityFeed,
    pub queue: &'a dyn BlobQueue,
}

/// How far back and how much again polling lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollSettings {
    /// Listed again on every poll, before `listed_until`, to catch late content.
    pub overlap: Duration,
    /// Where a connection's first poll starts, before now (at most the retention).
    pub initial_lookback: Duration,
    /// Kept between a window's start and the retention limit.
    pub retention_margin: Duration,
    /// Blobs are remembered as enqueued this long after they expire.
    pub dedupe_margin: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            overlap: Duration::hours(1),
            initial_lookback: retention(),
            retention_margin: Duration::minutes(10),
            dedupe_margin: Duration::days(1),
        }
    }
}

/// How polling one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// Listed everything available up to `until`.
    Caught {
        until: DateTime<Utc>,
        pages: u64,
        enqueued: u64,
    },
    /// The budget ran out between pages; the next poll continues the open window.
    OutOfTime { pages: u64, enqueued: u64 },
    /// A problem a person must fix (recorded on the connection with its fix).
    Blocked(ConnectionError),
    /// A transient failure (throttling, a server error): the next poll retries.
    Deferred { pages: u64, enqueued: u64, error: String },
    /// Not a cloud connection, or not active.
    Skipped,
}

/// Polls `connection`'s `Audit.SharePoint` content.
///
/// # Errors
/// A failure of the state store or the queue (the feed's own failures are outcomes).
pub async fn poll_connection(
    ports: &PollPorts<'_>,
    connection: &Connection,
    settings: &PollSettings,
    budget: &dyn Budget,
    now: DateTime<Utc>,
) -> Result<PollOutcome, PortError> {
    use crate::model::{ConnectionKind, ConnectionState};
    if connection.kind != ConnectionKind::Cloud || connection.state != ConnectionState::Active {
        return Ok(PollOutcome::Skipped);
    }
    let content_type = SHAREPOINT_CONTENT_TYPE;
    // The API takes times to the second ("List available content" in
    // https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference):
    // windows end on a whole second, so the checkpoint says exactly what was asked.
    let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
    let floor = now - retention() + settings.retention_margin;
    let mut cp = match ports.activity.activity_checkpoint(&connection.id, content_type).await? {
        Some(cp) => cp,
        None => ActivityCheckpoint {
            listed_until: (now - settings.initial_lookback.min(retention())).max(floor),
            window: None,
            last_poll_at: None,
            last_success_at: None,
            blobs_enqueued: 0,
            last_error: None,
        },
    };
    cp.last_poll_at = Some(now);

    if let Err(e) = ports.feed.ensure_subscription(content_type).await {
        return fail(ports, connection, content_type, cp, e, 0, 0).await;
    }

    let mut pages = 0u64;
    let mut enqueued = 0u64;
    // Cursors followed in this poll: a feed that hands one back again would page for ever.
    let mut followed: std::collections::HashSet<String> = std::collections::HashSet::new();
    // An open window older than the retention cannot be continued: list from the floor.
    let mut window = cp
        .window
        .take()
        .filter(|w| w.start >= floor)
        .map(|w| (w.start, w.end, Some(w.next_page)));
    loop {
        let (start, end, next_page) = match window.take() {
            Some(w) => w,
            None => {
                let start = (cp.listed_until - settings.overlap).max(floor);
                let end = (start + max_window()).min(now);
                if end <= start {
                    break;
                }
                (start, end, None)
            }
        };
        if !budget.has_time_for_more() {
            cp.window = next_page.map(|next_page| OpenWindow { start, end, next_page });
            ports
                .activity
                .save_activity_checkpoint(&connection.id, content_type, &cp)
                .await?;
            return Ok(PollOutcome::OutOfTime { pages, enqueued });
        }
        if let Some(asked) = &next_page {
            followed.insert(asked.clone());
        }
        let page = match ports
            .feed
            .content_page(content_type, start, end, next_page.as_deref())
            .await
        {
            Ok(page) => page,
            Err(e) => {
                cp.window = next_page.map(|next_page| OpenWindow { start, end, next_page });
                return fail(ports, connection, content_type, cp, e, pages, enqueued).await;
            }
        };
        pages += 1;
        let fresh = enqueue_new(ports, connection, &page.blobs, settings).await?;
        enqueued += fresh;
        cp.blobs_enqueued += fresh;
        if page.next_page.as_ref().is_some_and(|n| followed.contains(n)) {
            // A feed that hands back a cursor already followed would keep the poll paging until
            // its Lambda times out, every run. Nothing is skipped: the window stays open at the
            // cursor, the connection shows the problem, and each poll tries again.
            cp.window = next_page.map(|next_page| OpenWindow { start, end, next_page });
            let e = PortError::terminal(
                "feed_cursor_repeated",
                format!(
                    "the Management Activity API handed back a page cursor it had already given ({}), listing content \
                     created between {start} and {end}",
                    page.next_page.unwrap_or_default()
                ),
                "nothing is skipped: each poll asks for that page again; if this persists for hours, open a \
                 Microsoft support case for the tenant's Management Activity API (content listing paging)",
            );
            return fail(ports, connection, content_type, cp, e, pages, enqueued).await;
        }
        if let Some(n) = &page.next_page {
            followed.insert(n.clone());
        }
        let next_page = page.next_page;
        match next_page {
            Some(next_page) => {
                cp.window = Some(OpenWindow {
                    start,
                    end,
                    next_page: next_page.clone(),
                });
                ports
                    .activity
                    .save_activity_checkpoint(&connection.id, content_type, &cp)
                    .await?;
                window = Some((start, end, Some(next_page)));
            }
            None => {
                cp.window = None;
                cp.listed_until = cp.listed_until.max(end);
                ports
                    .activity
                    .save_activity_checkpoint(&connection.id, content_type, &cp)
                    .await?;
                // The window reaching now ends the poll: the next window would start an overlap
                // before it and list the same content again.
                if end >= now {
                    break;
                }
            }
        }
    }

    cp.last_success_at = Some(now);
    cp.last_error = None;
    ports
        .activity
        .save_activity_checkpoint(&connection.id, content_type, &cp)
        .await?;
    if connection
        .last_error
        .as_ref()
        .is_some_and(|e| e.code.starts_with(ACTIVITY_ERROR_PREFIX))
    {
        info!(connection = connection.id, "audit feed works again; clearing its error");
        ports.connections.set_connection_error(&connection.id, None).await?;
    }
    info!(connection = connection.id, pages, enqueued, until = %cp.listed_until, "audit feed polled");
    Ok(PollOutcome::Caught {
        until: cp.listed_until,
        pages,
        enqueued,
    })
}

/// Enqueues the blobs of a page not enqueued before, then remembers them. Returns how many.
async fn enqueue_new(
    ports: &PollPorts<'_>,
    connection: &Connection,
    blobs: &[ContentBlob],
    settings: &PollSettings,
) -> Result<u64, PortError> {
    if blobs.is_empty() {
        return Ok(0);
    }
    let mut ids: Vec<String> = blobs.iter().map(|b| b.content_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let known = ports.activity.known_blobs(&connection.id, &ids).await?;
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<&ContentBlob> = blobs
        .iter()
        .filter(|b| !known.contains(&b.content_id) && seen.insert(b.content_id.clone()))
        .collect();
    if fresh.is_empty() {
        return Ok(0);
    }
    let jobs: Vec<BlobJob> = fresh
        .iter()
        .map(|b| BlobJob {
            connection: connection.id.clone(),
            blob: (*b).clone(),
            parked: false,
        })
        .collect();
    // Enqueue, then remember: a crash in between enqueues the blobs again on the next poll,
    // which ingestion absorbs (events are keyed by record id); the other order could lose them.
    ports.queue.enqueue_blobs(&jobs).await?;
    let keep_until = fresh.iter().map(|b| b.expires_at()).max().unwrap_or_else(Utc::now) + settings.dedupe_margin;
    let marked: Vec<ContentBlob> = fresh.into_iter().cloned().collect();
    ports
        .activity
        .mark_blobs_enqueued(&connection.id, &marked, keep_until)
        .await?;
    Ok(marked.len() as u64)
}

/// Records a feed failure: terminal ones on the connection (with the fix), transient ones only
/// in the checkpoint and the log.
#[allow(clippy::too_many_arguments)]
async fn fail(
    ports: &PollPorts<'_>,
    connection: &Connection,
    content_type: &str,
    mut cp: ActivityCheckpoint,
    e: PortError,
    pages: u64,
    enqueued: u64,
) -> Result<PollOutcome, PortError> {
    let at = cp.last_poll_at.unwrap_or_else(Utc::now);
    if e.is_terminal() {
        let problem = ConnectionError {
            code: format!("{ACTIVITY_ERROR_PREFIX}{}", e.code),
            message: format!("audit feed: {}", e.message),
            fix: e
                .fix
                .clone()
                .unwrap_or_else(|| "check the connection's Office 365 Management API access".to_owned()),
            at,
        };
        warn!(
            connection = connection.id,
            code = e.code,
            "audit feed blocked: {}",
            e.message
        );
        cp.last_error = Some(problem.clone());
        ports
            .activity
            .save_activity_checkpoint(&connection.id, content_type, &cp)
            .await?;
        ports
            .connections
            .set_connection_error(&connection.id, Some(&problem))
            .await?;
        return Ok(PollOutcome::Blocked(problem));
    }
    warn!(
        connection = connection.id,
        code = e.code,
        "audit feed deferred: {}",
        e.message
    );
    ports
        .activity
        .save_activity_checkpoint(&connection.id, content_type, &cp)
        .await?;
    Ok(PollOutcome::Deferred {
        pages,
        enqueued,
        error: e.to_string(),
    })
}
