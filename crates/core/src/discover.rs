//! Discovery: find the OneDrive of every user in scope, record new drives and enqueue them for
//! indexing.
//!
//! Contract:
//! - a run is checkpointed per users page: the page's drives are recorded and enqueued before the
//!   checkpoint moves past it, so an interrupted run continues where it stopped;
//! - known drives are never re-enqueued, except ones still `pending` (recorded, enqueue not
//!   confirmed) whose enqueue may have been lost in a crash;
//! - users without a OneDrive are recorded as such, not as errors;
//! - only personal OneDrive for Business drives are recorded, never SharePoint libraries;
//! - a terminal connection problem (bad secret, missing consent) is recorded on the connection with
//!   its fix, and the run stops; once the connection works again, work parked by it resumes.

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::budget::Budget;
use crate::error::PortError;
use crate::jobs::IndexJob;
use crate::model::{
    Connection, ConnectionError, ConnectionState, DirectoryUser, DiscoverySummary, DriveLookup, DriveRecord,
    DriveState, IndexProgress,
};
use crate::ports::{Directory, DiscoveryCheckpoint, DriveFinder, IndexQueue, StateStore};

/// The ports discovery needs.
pub struct DiscoverPorts<'a> {
    pub state: &'a dyn StateStore,
    pub directory: &'a dyn Directory,
    pub finder: &'a dyn DriveFinder,
    pub index_queue: &'a dyn IndexQueue,
}

/// How a discovery invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoverOutcome {
    /// Every user page was processed.
    Finished(DiscoverySummary),
    /// The time budget ran out; the caller must enqueue a continuation.
    Continue { users_seen: u64 },
    /// The connection is deauthorized or not a cloud connection.
    Skipped { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("connection {0:?} is not registered; list connections with `filetrail status`")]
    UnknownConnection(String),
    #[error("connection {connection}: {source}")]
    Port {
        connection: String,
        #[source]
        source: PortError,
    },
}

impl DiscoverError {
    /// Whether retrying the message can help.
    pub fn is_terminal(&self) -> bool {
        match self {
            Self::UnknownConnection(_) => true,
            Self::Port { source, .. } => source.is_terminal(),
        }
    }
}

/// Runs (or continues) discovery for one connection until it finishes or the budget runs out.
pub async fn discover(
    ports: &DiscoverPorts<'_>,
    connection_id: &str,
    budget: &dyn Budget,
    now: impl Fn() -> DateTime<Utc>,
    new_run_id: impl FnOnce() -> String,
) -> Result<DiscoverOutcome, DiscoverError> {
    let err = |source: PortError| DiscoverError::Port {
        connection: connection_id.to_owned(),
        source,
    };
    let Some(connection) = ports.state.connection(connection_id).await.map_err(err)? else {
        return Err(DiscoverError::UnknownConnection(connection_id.to_owned()));
    };
    if connection.state != ConnectionState::Active {
        return Ok(DiscoverOutcome::Skipped {
            reason: format!("connection {connection_id} is deauthorized"),
        });
    }

    let mut checkpoint = match ports.state.discovery_checkpoint(connection_id).await.map_err(err)? {
        Some(cp) => {
            info!(
                connection = connection_id,
                run_id = cp.run_id,
                users_seen = cp.users_seen,
                "continuing discovery run"
            );
            cp
        }
        None => {
            let cp = DiscoveryCheckpoint {
                run_id: new_run_id(),
                started_at: now(),
                next_link: None,
                pages: 0,
                users_seen: 0,
                drives_found: 0,
                drives_new: 0,
                users_without_drive: 0,
            };
            ports
                .state
                .save_discovery_checkpoint(connection_id, Some(&cp))
                .await
                .map_err(err)?;
            info!(connection = connection_id, run_id = cp.run_id, "discovery run started");
            cp
        }
    };
    let mut connection_checked = false;

    loop {
        if !budget.has_time_for_more() {
            return Ok(DiscoverOutcome::Continue {
                users_seen: checkpoint.users_seen,
            });
        }
        let page = match ports.directory.users_page(checkpoint.next_link.as_deref()).await {
            Ok(page) => page,
            Err(e) => return Err(record_if_terminal(ports, &connection, e, now()).await),
        };
        if !connection_checked {
            // The credentials work: clear a previous problem and resume work it parked.
            recover_connection(ports, &connection).await.map_err(err)?;
            connection_checked = true;
        }
        let lookups = match ports.finder.find_drives(&page.users).await {
            Ok(l) => l,
            Err(e) => return Err(record_if_terminal(ports, &connection, e, now()).await),
        };
        let counts = record_page(ports, &connection, &page.users, lookups, now())
            .await
            .map_err(err)?;
        checkpoint.pages += 1;
        checkpoint.users_seen += page.users.len() as u64;
        checkpoint.drives_found += counts.found;
        checkpoint.drives_new += counts.new;
        checkpoint.users_without_drive += counts.without_drive;
        checkpoint.next_link = page.next_link;

        if checkpoint.next_link.is_none() {
            let summary = DiscoverySummary {
                run_id: checkpoint.run_id.clone(),
                started_at: checkpoint.started_at,
                finished_at: now(),
                users_seen: checkpoint.users_seen,
                drives_found: checkpoint.drives_found,
                drives_new: checkpoint.drives_new,
                users_without_drive: checkpoint.users_without_drive,
            };
            ports
                .state
                .set_last_discovery(connection_id, &summary)
                .await
                .map_err(err)?;
            ports
                .state
                .save_discovery_checkpoint(connection_id, None)
                .await
                .map_err(err)?;
            info!(
                connection = connection_id,
                users = summary.users_seen,
                drives = summary.drives_found,
                new = summary.drives_new,
                without_drive = summary.users_without_drive,
                "discovery run finished"
            );
            return Ok(DiscoverOutcome::Finished(summary));
        }
        ports
            .state
            .save_discovery_checkpoint(connection_id, Some(&checkpoint))
            .await
            .map_err(err)?;
    }
}

struct PageCounts {
    found: u64,
    new: u64,
    without_drive: u64,
}

/// Records one page of lookups and enqueues the drives that need indexing.
async fn record_page(
    ports: &DiscoverPorts<'_>,
    connection: &Connection,
    users: &[DirectoryUser],
    lookups: Vec<DriveLookup>,
    now: DateTime<Utc>,
) -> Result<PageCounts, PortError> {
    let mut records = Vec::new();
    let mut without = Vec::new();
    for (user, lookup) in users.iter().zip(lookups) {
        match lookup {
            DriveLookup::Found(info) if info.is_personal_onedrive() => records.push(DriveRecord {
                connection: connection.id.clone(),
                drive_id: info.id,
                owner_id: user.id.clone(),
                owner_upn: user.user_principal_name.clone(),
                web_url: info.web_url,
                state: DriveState::Pending,
                discovered_at: now,
                index: IndexProgress::default(),
                parked: None,
            }),
            DriveLookup::Found(info) => {
                warn!(
                    connection = connection.id,
                    user = user.user_principal_name,
                    drive_id = info.id,
                    drive_type = info.drive_type,
                    "not a personal OneDrive; never monitored"
                );
            }
            DriveLookup::NoDrive { reason } => without.push((user.clone(), reason)),
        }
    }

    let inserted = ports.state.insert_new_drives(&records).await?;
    let known: Vec<String> = records
        .iter()
        .map(|r| r.drive_id.clone())
        .filter(|id| !inserted.contains(id))
        .collect();
    // A known drive still pending was recorded by a run that stopped before its enqueue was
    // confirmed: enqueue it again (indexing is idempotent). Others are never re-enqueued.
    let mut to_enqueue = inserted.clone();
    if !known.is_empty() {
        to_enqueue.extend(
            ports
                .state
                .drives(&known)
                .await?
                .into_iter()
                .filter(|d| d.state == DriveState::Pending)
                .map(|d| d.drive_id),
        );
    }
    if !to_enqueue.is_empty() {
        ports
            .index_queue
            .enqueue_index(&IndexJob::for_drives(&connection.id, &to_enqueue))
            .await?;
        for id in &to_enqueue {
            ports
                .state
                .transition_drive(id, DriveState::Pending, DriveState::Indexing)
                .await?;
        }
    }
    if !inserted.is_empty() {
        let owners: Vec<String> = records
            .iter()
            .filter(|r| inserted.contains(&r.drive_id))
            .map(|r| r.owner_id.clone())
            .collect();
        ports.state.clear_users_without_drive(&connection.id, &owners).await?;
    }
    if !without.is_empty() {
        ports.state.record_users_without_drive(&connection.id, &without).await?;
    }
    Ok(PageCounts {
        found: records.len() as u64,
        new: inserted.len() as u64,
        without_drive: without.len() as u64,
    })
}

/// Clears a recorded connection problem and re-enqueues drives whose work it parked.
async fn recover_connection(ports: &DiscoverPorts<'_>, connection: &Connection) -> Result<(), PortError> {
    if connection.last_error.is_none() {
        return Ok(());
    }
    ports.state.set_connection_error(&connection.id, None).await?;
    let mut cursor = None;
    let mut resumed = 0usize;
    loop {
        let (ids, next) = ports
            .state
            .drive_ids_in_state(&connection.id, DriveState::Indexing, cursor)
            .await?;
        let parked: Vec<String> = ports
            .state
            .drives(&ids)
            .await?
            .into_iter()
            .filter(|d| d.parked.is_some())
            .map(|d| d.drive_id)
            .collect();
        if !parked.is_empty() {
            ports
                .index_queue
                .enqueue_index(&IndexJob::for_drives(&connection.id, &parked))
                .await?;
            for id in &parked {
                ports.state.set_drive_parked(id, None).await?;
            }
            resumed += parked.len();
        }
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    info!(
        connection = connection.id,
        resumed, "connection works again; parked drives re-enqueued"
    );
    Ok(())
}

/// Records a terminal error on the connection (so status shows it with its fix) and wraps it.
async fn record_if_terminal(
    ports: &DiscoverPorts<'_>,
    connection: &Connection,
    error: PortError,
    now: DateTime<Utc>,
) -> DiscoverError {
    if error.is_terminal() {
        let problem = connection_error_from(&error, now);
        if let Err(e) = ports.state.set_connection_error(&connection.id, Some(&problem)).await {
            warn!(connection = connection.id, error = %e, "could not record the connection error");
        }
    }
    DiscoverError::Port {
        connection: connection.id.clone(),
        source: error,
    }
}

/// The status entry for a terminal port error.
pub fn connection_error_from(error: &PortError, now: DateTime<Utc>) -> ConnectionError {
    ConnectionError {
        code: error.code.clone(),
        message: error.message.clone(),
        fix: error
            .fix
            .clone()
            .unwrap_or_else(|| "check the connection's app registration and consent".to_owned()),
        at: now,
    }
}
