//! Indexing one drive: a Graph delta walk into the inventory, page by page, resumable from its
//! checkpoint.
//!
//! Contract:
//! - a page's rows are committed before the checkpoint moves past it, so a crash or timeout
//!   re-reads at most one page, and re-writing it is an idempotent overwrite;
//! - the checkpoint only moves forward: a redelivered or concurrent worker that finds it moved
//!   stops without writing further (`IndexOutcome::Superseded`);
//! - a 410 resync restarts the walk under a new generation; when that walk completes, rows the
//!   new walk did not see are removed (reconciliation);
//! - the first complete walk stores the delta link and marks the drive indexed; later runs on an
//!   indexed drive apply incremental changes from that link;
//! - a deleted file leaves a tombstone (its id, list item unique id and last path), so audit
//!   records that arrive after the deletion still name the file;
//! - each completed round resolves the drive's events that waited for their item
//!   ([`crate::activity::resolve_pending`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::budget::Budget;
use crate::error::PortError;
use crate::model::{
    DeltaItem, DeltaNext, DriveRecord, DriveState, HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING, IndexProgress,
    InventoryRow,
};
use crate::paths::{PathCache, unresolved_path};
use crate::ports::{DeltaError, DriveDelta, DriveStore, InventoryStore};

/// The ports indexing needs.
pub struct IndexPorts<'a> {
    pub drives: &'a dyn DriveStore,
    pub inventory: &'a dyn InventoryStore,
    pub delta: &'a dyn DriveDelta,
    /// When set, items delta reports as shared (the `shared` facet) or as changed by sharing
    /// (`@microsoft.graph.sharedChanged`) get their sharing state refreshed after their page
    /// is committed: the only items whose permissions are listed.
    pub sharing: Option<crate::exposure::SharingPorts<'a>>,
    /// When set, each completed round gives the drive's events that waited for their item
    /// (renamed or moved before the inventory knew them) the items it learned.
    pub pending: Option<crate::activity::ResolvePorts<'a>>,
}

/// How an indexing invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    /// The walk (or incremental round) reached its delta link; the drive is indexed.
    Completed { pages: u64, items: u64 },
    /// The time budget ran out; the checkpoint is saved and the caller must enqueue a
    /// continuation.
    Continue { pages: u64 },
    /// Nothing to do (unknown or unmonitored drive).
    Skipped { reason: String },
    /// Another worker moved the checkpoint first; this one stopped without side effects beyond
    /// idempotent overwrites.
    Superseded,
}

/// Why indexing stopped with an error. Rows and checkpoint stay consistent in every case.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("drive {drive_id}: {source}")]
    Port {
        drive_id: String,
        #[source]
        source: PortError,
    },
}

impl IndexError {
    pub fn port_error(&self) -> &PortError {
        match self {
            Self::Port { source, .. } => source,
        }
    }
}

/// Walks (or continues walking) one drive of `connection` until it completes or the budget
/// runs out. A drive recorded for another connection is left untouched (skipped): a job names
/// the connection it works for, and no connection's job writes another's drive.
pub async fn index_drive(
    ports: &IndexPorts<'_>,
    connection: &str,
    drive_id: &str,
    budget: &dyn Budget,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<IndexOutcome, IndexError> {
    let err = |source: PortError| IndexError::Port {
        drive_id: drive_id.to_owned(),
        source,
    };
    let Some(mut drive) = ports.drives.drive(drive_id).await.map_err(err)? else {
        return Ok(IndexOutcome::Skipped {
            reason: format!("drive {drive_id} is not known"),
        });
    };
    if drive.connection != connection {
        warn!(
            connection,
            drive_id,
            owner_connection = drive.connection,
            "index job for a drive of another connection; skipped"
        );
        return Ok(IndexOutcome::Skipped {
            reason: format!(
                "drive {drive_id} belongs to connection {}, not {connection}",
                drive.connection
            ),
        });
    }
    match drive.state {
        DriveState::Unmonitored => {
            return Ok(IndexOutcome::Skipped {
                reason: format!("drive {drive_id} is not monitored"),
            });
        }
        DriveState::Pending => {
            // Discovery recorded the drive and enqueued it but stopped before marking it.
            ports
                .drives
                .transition_drive(connection, drive_id, DriveState::Pending, DriveState::Indexing)
                .await
                .map_err(err)?;
            drive.state = DriveState::Indexing;
        }
        DriveState::Indexing | DriveState::Indexed => {}
    }

    let mut progress = drive.index.clone();
    if progress.generation == 0 {
        progress.generation = 1;
    }
    if progress.started_at.is_none() {
        progress.started_at = Some(now());
    }
    let mut stored = drive.index.clone();
    let mut cache = PathCache::with_root(progress.root_id.as_deref());
    let mut pages_this_run = 0u64;
    let mut items_this_run = 0u64;

    loop {
        if !budget.has_time_for_more() {
            if progress != stored {
                // Only the start time or generation changed: persist so the next run agrees.
                if !save(ports, &drive, &stored, &progress, drive.state)
                    .await
                    .map_err(err)?
                {
                    return Ok(IndexOutcome::Superseded);
                }
            }
            info!(
                drive_id,
                pages = pages_this_run,
                "time budget used; handing over to a continuation"
            );
            return Ok(IndexOutcome::Continue { pages: pages_this_run });
        }
        let link = progress.next_link.clone().or_else(|| match drive.state {
            DriveState::Indexed => progress.delta_link.clone(),
            _ => None,
        });
        let page = match ports.delta.delta_page(drive_id, link.as_deref()).await {
            Ok(page) => page,
            Err(DeltaError::ResyncRequired { code, restart_link }) => {
                warn!(
                    drive_id,
                    code, "delta token rejected; restarting the walk and reconciling"
                );
                progress.generation += 1;
                progress.resyncs += 1;
                progress.reconcile = true;
                progress.next_link = restart_link;
                progress.delta_link = None;
                progress.items = 0;
                progress.files = 0;
                progress.folders = 0;
                progress.bytes = 0;
                progress.deleted = 0;
                let state = DriveState::Indexing;
                if !save(ports, &drive, &stored, &progress, state).await.map_err(err)? {
                    return Ok(IndexOutcome::Superseded);
                }
                drive.state = state;
                stored = progress.clone();
                cache = PathCache::with_root(progress.root_id.as_deref());
                continue;
            }
            Err(DeltaError::Port(e)) => return Err(err(e)),
        };

        let items = last_occurrence_wins(page.items);
        if let Some(root) = items.iter().find(|i| i.is_root && !i.deleted) {
            progress.root_id = Some(root.id.clone());
        }
        let applied = apply_page(ports, &drive, &progress, &mut cache, &items, now())
            .await
            .map_err(err)?;
        progress.pages += 1;
        // Entries as they come, for progress; the round's end recounts the rows.
        progress.items += applied.files + applied.folders;
        progress.files += applied.files;
        progress.folders += applied.folders;
        progress.bytes += applied.bytes;
        progress.deleted += applied.deleted;
        pages_this_run += 1;
        items_this_run += applied.files + applied.folders;

        match page.next {
            DeltaNext::NextLink(next) => {
                progress.next_link = Some(next);
                if !save(ports, &drive, &stored, &progress, drive.state)
                    .await
                    .map_err(err)?
                {
                    return Ok(IndexOutcome::Superseded);
                }
                stored = progress.clone();
            }
            DeltaNext::DeltaLink(delta) => {
                if progress.reconcile {
                    let removed = ports
                        .inventory
                        .delete_older_than(drive_id, progress.generation, now())
                        .await
                        .map_err(err)?;
                    info!(
                        drive_id,
                        removed,
                        generation = progress.generation,
                        "reconciled after resync"
                    );
                    progress.reconcile = false;
                }
                // The rows the round left are the drive's items: delta lists an item once per
                // version and lists deletions, and a page applied again after a crash must not
                // count twice, so the count is read, not added up.
                let (files, folders) = ports.inventory.count_rows(drive_id).await.map_err(err)?;
                progress.files = files;
                progress.folders = folders;
                progress.items = files + folders;
                progress.next_link = None;
                progress.delta_link = Some(delta);
                if progress.completed_at.is_none() || drive.state == DriveState::Indexing {
                    progress.completed_at = Some(now());
                }
                if !save(ports, &drive, &stored, &progress, DriveState::Indexed)
                    .await
                    .map_err(err)?
                {
                    return Ok(IndexOutcome::Superseded);
                }
                // After the checkpoint: a crash here leaves the events waiting for the next
                // round, which finds the ids this one wrote.
                if let Some(pending) = &ports.pending {
                    crate::activity::resolve_pending(pending, drive_id, now())
                        .await
                        .map_err(err)?;
                }
                info!(
                    drive_id,
                    pages = progress.pages,
                    items = progress.items,
                    "drive indexed"
                );
                return Ok(IndexOutcome::Completed {
                    pages: pages_this_run,
                    items: items_this_run,
                });
            }
        }
    }
}

async fn save(
    ports: &IndexPorts<'_>,
    drive: &DriveRecord,
    expected: &IndexProgress,
    progress: &IndexProgress,
    state: DriveState,
) -> Result<bool, PortError> {
    let saved = ports
        .drives
        .save_index_progress(&drive.connection, &drive.drive_id, expected, progress, state)
        .await?;
    if !saved {
        // Another delivery of the same job (SQS redelivers) got there first: expected, not a fault.
        info!(
            drive_id = drive.drive_id,
            "checkpoint moved by another worker; stopping"
        );
    }
    Ok(saved)
}

/// The delta feed may list the same item more than once; the last occurrence is its state
/// (<https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>). Keeps page order otherwise.
fn last_occurrence_wins(items: Vec<DeltaItem>) -> Vec<DeltaItem> {
    let mut last: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(item.id.clone(), i);
    }
    items
        .into_iter()
        .enumerate()
        .filter(|(i, item)| last.get(&item.id) == Some(i))
        .map(|(_, item)| item)
        .collect()
}

#[derive(Debug, Default)]
struct Applied {
    files: u64,
    folders: u64,
    bytes: u64,
    deleted: u64,
}

/// Writes one page: live items become rows (with paths), deleted items lose theirs.
async fn apply_page(
    ports: &IndexPorts<'_>,
    drive: &DriveRecord,
    progress: &IndexProgress,
    cache: &mut PathCache,
    items: &[DeltaItem],
    now: DateTime<Utc>,
) -> Result<Applied, PortError> {
    let mut resolved = cache.resolve(items);
    if !resolved.missing_parents.is_empty() {
        let known = ports
            .inventory
            .paths(&drive.drive_id, &resolved.missing_parents)
            .await?;
        debug!(
            drive_id = drive.drive_id,
            asked = resolved.missing_parents.len(),
            found = known.len(),
            "parent paths from the inventory"
        );
        for (id, path) in known {
            cache.insert(id, path);
        }
        let again = cache.resolve(items);
        resolved.paths.extend(again.paths);
    }

    let mut applied = Applied::default();
    let mut rows = Vec::with_capacity(items.len());
    let mut deleted = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        if !seen.insert(item.id.as_str()) {
            continue;
        }
        if item.deleted {
            cache.remove(&item.id);
            deleted.push(item.id.clone());
            applied.deleted += 1;
            continue;
        }
        if item.is_root {
            // The root is the drive itself, not a user's file: its path is cached, no row.
            continue;
        }
        let name = item.name.clone().unwrap_or_else(|| item.id.clone());
        let path = resolved.paths.get(&item.id).cloned().unwrap_or_else(|| {
            warn!(drive_id = drive.drive_id, item_id = item.id, parent = ?item.parent_id, "parent unknown; path marked unresolved");
            unresolved_path(&name)
        });
        if item.is_folder {
            applied.folders += 1;
        } else {
            applied.files += 1;
            applied.bytes += item.size.unwrap_or(0);
        }
        rows.push(InventoryRow {
            drive_id: drive.drive_id.clone(),
            item_id: item.id.clone(),
            connection: drive.connection.clone(),
            name,
            path,
            parent_id: item.parent_id.clone(),
            is_folder: item.is_folder,
            size: item.size.unwrap_or(0),
            created_at: item.created_at,
            modified_at: item.modified_at,
            etag: item.etag.clone(),
            ctag: item.ctag.clone(),
            created_by: item.created_by.clone(),
            modified_by: item.modified_by.clone(),
            mime_type: item.mime_type.clone(),
            list_item_uid: item.list_item_uid.clone(),
            md5: None,
            sha256: None,
            hash_unavailable: (!item.is_folder).then(|| HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING.to_owned()),
            generation: progress.generation,
            indexed_at: now,
        });
    }
    if !rows.is_empty() {
        ports.inventory.put_rows(&rows).await?;
    }
    if !deleted.is_empty() {
        ports.inventory.delete_rows(&drive.drive_id, &deleted, now).await?;
    }
    if let Some(sharing) = &ports.sharing {
        let mut seen = HashSet::new();
        let shared: Vec<(String, String)> = items
            .iter()
            .filter(|i| !i.deleted && !i.is_root && (i.sharing_changed || i.shared_scope.is_some()))
            .filter(|i| seen.insert(i.id.as_str()))
            .map(|i| (drive.drive_id.clone(), i.id.clone()))
            .collect();
        if !shared.is_empty() {
            crate::exposure::refresh_sharing(
                sharing.reader,
                sharing.store,
                &drive.connection,
                &sharing.trusted,
                &shared,
                now,
            )
            .await?;
        }
    }
    Ok(applied)
}
