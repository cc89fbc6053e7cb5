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

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::budget::Budget;
use crate::error::PortError;
use crate::jobs::BlobJob;
use crate::jobs::IndexJob;
use crate::model::{
    Connection, ConnectionError, DirectoryUser, DiscoverySummary, DriveLookup, DriveRecord, DriveState, IndexProgress,
};
use crate::ports::{
    ActivityState, BlobQueue, Directory, DiscoveryCheckpoint, DriveFinder, IndexQueue, RunPage, StateStore,
};
use crate::scope::{GroupSelector, Scope, ScopeEntry, ScopeKind, UnresolvedEntry, UserSelector};

/// The ports discovery needs.
pub struct DiscoverPorts<'a> {
    pub state: &'a dyn StateStore,
    pub directory: &'a dyn Directory,
    pub finder: &'a dyn DriveFinder,
    pub index_queue: &'a dyn IndexQueue,
    /// Where audit blobs parked for want of a drive wait ([`crate::activity::ParkedBlob`]): a
    /// finished run enqueues them to be ingested again. `None` only where no audit feed runs
    /// (benchmarks of discovery alone).
    pub parked: Option<ParkedWork<'a>>,
}

/// The parked audit blobs of a connection and the queue that ingests them.
#[derive(Clone, Copy)]
pub struct ParkedWork<'a> {
    pub activity: &'a dyn ActivityState,
    pub blob_queue: &'a dyn BlobQueue,
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

/// Status code of the error shown when more drives are in scope than the connection's cap.
pub const DRIVE_CAP_EXCEEDED: &str = "drive_cap_exceeded";

/// Scope entries resolved per step (users scope): ten `$batch` requests of 20.
const USER_ENTRIES_PER_STEP: usize = 200;
/// Group members gathered before their drives are looked up: enough to fill whole `$batch`
/// requests across many small groups.
const MEMBERS_PER_STEP: usize = 1_000;

/// Runs (or continues) discovery for one connection until it finishes or the budget runs out.
///
/// The scope decides where users come from: every user of the directory, the users a list
/// names, or the transitive members of the groups a list names. Whatever the source, each step's
/// users have their OneDrive looked up, new drives recorded and enqueued (up to the drive cap),
/// and the checkpoint saved. When the run finishes, monitored drives it did not see left the
/// scope and become unmonitored.
pub async fn discover(
    ports: &DiscoverPorts<'_>,
    connection_id: &str,
    budget: &dyn Budget,
    now: impl Fn() -> DateTime<Utc>,
    new_run_id: impl Fn() -> String,
) -> Result<DiscoverOutcome, DiscoverError> {
    let err = |source: PortError| DiscoverError::Port {
        connection: connection_id.to_owned(),
        source,
    };
    let Some(connection) = ports.state.connection(connection_id).await.map_err(err)? else {
        return Err(DiscoverError::UnknownConnection(connection_id.to_owned()));
    };
    if let Some(reason) = connection.why_no_work() {
        return Ok(DiscoverOutcome::Skipped { reason });
    }
    let scope = ports
        .state
        .scope(connection_id)
        .await
        .map_err(err)?
        .unwrap_or_else(Scope::all_users);

    let Some(mut checkpoint) = claim_run(ports, connection_id, &scope, &now, &new_run_id)
        .await
        .map_err(err)?
    else {
        return Ok(superseded(connection_id));
    };
    let mut connection_checked = false;
    // Users already looked up in this invocation (a user in several groups is looked up once).
    let mut looked_up: HashSet<String> = HashSet::new();

    loop {
        if !budget.has_time_for_more() {
            return Ok(DiscoverOutcome::Continue {
                users_seen: checkpoint.users_seen,
            });
        }
        let step = match next_users(ports, &scope, &mut checkpoint).await {
            Ok(step) => step,
            Err(e) => return Err(record_if_terminal(ports, &connection, e, now()).await),
        };
        if !connection_checked {
            // The credentials work: clear a previous problem and resume work it parked.
            recover_connection(ports, &connection).await.map_err(err)?;
            connection_checked = true;
        }
        let users: Vec<DirectoryUser> = step
            .users
            .into_iter()
            .filter(|u| looked_up.insert(u.id.clone()))
            .collect();
        let lookups = if users.is_empty() {
            Vec::new()
        } else {
            match ports.finder.find_drives(&users).await {
                Ok(l) => l,
                Err(e) => return Err(record_if_terminal(ports, &connection, e, now()).await),
            }
        };
        let seen = record_page(ports, &connection, &mut checkpoint, &users, lookups, now())
            .await
            .map_err(err)?;
        ports
            .state
            .record_run_page(connection_id, &checkpoint.run_id, checkpoint.pages, &seen)
            .await
            .map_err(err)?;
        checkpoint.pages += 1;
        checkpoint.users_seen += users.len() as u64;

        let read = checkpoint.version();
        if step.done {
            // Close the run first: of two invocations reaching its end, one sweeps.
            if !ports
                .state
                .save_discovery_checkpoint(connection_id, None, Some(&read))
                .await
                .map_err(err)?
            {
                return Ok(superseded(connection_id));
            }
            let summary = finish_run(ports, &connection, &scope, &checkpoint, now())
                .await
                .map_err(err)?;
            return Ok(DiscoverOutcome::Finished(summary));
        }
        checkpoint.seq += 1;
        if !ports
            .state
            .save_discovery_checkpoint(connection_id, Some(&checkpoint), Some(&read))
            .await
            .map_err(err)?
        {
            return Ok(superseded(connection_id));
        }
    }
}

/// Another invocation advanced, closed or replaced the run this one was working on: that one
/// carries it on, this one stops without a continuation.
fn superseded(connection_id: &str) -> DiscoverOutcome {
    info!(
        connection = connection_id,
        "another invocation is running this discovery; stopping this one"
    );
    DiscoverOutcome::Skipped {
        reason: format!("another invocation is running discovery for {connection_id}"),
    }
}

/// How often [`claim_run`] re-reads a checkpoint another invocation changed under it.
const CLAIM_ATTEMPTS: usize = 3;

/// The run this invocation works on: the open run if it resolves the scope in force, else a new
/// one (abandoning a run of an older scope). `None` when other invocations keep changing the
/// checkpoint: one of them is running discovery under the current scope.
async fn claim_run(
    ports: &DiscoverPorts<'_>,
    connection_id: &str,
    scope: &Scope,
    now: &impl Fn() -> DateTime<Utc>,
    new_run_id: &impl Fn() -> String,
) -> Result<Option<DiscoveryCheckpoint>, PortError> {
    for _ in 0..CLAIM_ATTEMPTS {
        let open = ports.state.discovery_checkpoint(connection_id).await?;
        if let Some(cp) = &open
            && cp.scope_version == scope.version
        {
            info!(
                connection = connection_id,
                run_id = cp.run_id,
                users_seen = cp.users_seen,
                "continuing discovery run"
            );
            return Ok(open);
        }
        let cp = DiscoveryCheckpoint::new(new_run_id(), now(), scope.version.clone());
        let expected = open.as_ref().map(DiscoveryCheckpoint::version);
        if !ports
            .state
            .save_discovery_checkpoint(connection_id, Some(&cp), expected.as_ref())
            .await?
        {
            continue;
        }
        if let Some(old) = &open {
            info!(
                connection = connection_id,
                run_id = old.run_id,
                "the scope changed during the run; starting over under the new scope"
            );
            ports.state.delete_run(connection_id, &old.run_id).await?;
        }
        info!(
            connection = connection_id,
            run_id = cp.run_id,
            scope = %scope.kind,
            "discovery run started"
        );
        return Ok(Some(cp));
    }
    Ok(None)
}

/// The users of one step of a run, and whether the run has no more.
struct Step {
    users: Vec<DirectoryUser>,
    done: bool,
}

/// Reads the next users from the scope's source, moving the checkpoint's position past them
/// (in memory; the caller saves it once their drives are recorded).
async fn next_users(ports: &DiscoverPorts<'_>, scope: &Scope, cp: &mut DiscoveryCheckpoint) -> Result<Step, PortError> {
    match scope.kind {
        ScopeKind::All => {
            let page = ports.directory.users_page(cp.next_link.as_deref()).await?;
            cp.next_link = page.next_link;
            Ok(Step {
                users: page.users,
                done: cp.next_link.is_none(),
            })
        }
        ScopeKind::Users => {
            let selectors: Vec<(&ScopeEntry, &UserSelector)> = scope
                .entries
                .iter()
                .filter_map(|e| match e {
                    ScopeEntry::User(s) => Some((e, s)),
                    ScopeEntry::Group(_) => None,
                })
                .skip(cp.position)
                .take(USER_ENTRIES_PER_STEP)
                .collect();
            let wanted: Vec<UserSelector> = selectors.iter().map(|(_, s)| (*s).clone()).collect();
            let found = if wanted.is_empty() {
                Vec::new()
            } else {
                ports.directory.find_users(&wanted).await?
            };
            let mut users = Vec::new();
            for ((entry, selector), matches) in selectors.iter().zip(found) {
                if matches.is_empty() {
                    let reason = match selector {
                        UserSelector::Email(_) => "no user has this sign-in name or email address",
                        UserSelector::DisplayName(_) => "no user has this display name",
                    };
                    cp.unresolved.push(UnresolvedEntry {
                        entry: (*entry).clone(),
                        reason: reason.to_owned(),
                    });
                }
                users.extend(matches);
            }
            cp.position += selectors.len();
            let total = scope
                .entries
                .iter()
                .filter(|e| matches!(e, ScopeEntry::User(_)))
                .count();
            Ok(Step {
                users,
                done: cp.position >= total,
            })
        }
        ScopeKind::Groups => {
            let Some(groups) = cp.groups.clone() else {
                cp.groups = Some(resolve_groups(ports, scope, cp).await?);
                cp.position = 0;
                cp.next_link = None;
                return Ok(Step {
                    users: Vec::new(),
                    done: cp.groups.as_ref().is_none_or(Vec::is_empty),
                });
            };
            let mut users = Vec::new();
            while users.len() < MEMBERS_PER_STEP {
                let Some(group_id) = groups.get(cp.position) else { break };
                match ports
                    .directory
                    .group_members_page(group_id, cp.next_link.as_deref())
                    .await
                {
                    Ok(page) => {
                        users.extend(page.users);
                        cp.next_link = page.next_link;
                    }
                    Err(e) if e.code == GROUP_NOT_FOUND => {
                        // Deleted since the run resolved it: its members are simply not in scope.
                        warn!(group_id, "group disappeared during the run");
                        cp.next_link = None;
                    }
                    Err(e) => return Err(e),
                }
                if cp.next_link.is_none() {
                    cp.position += 1;
                }
            }
            Ok(Step {
                users,
                done: cp.position >= groups.len(),
            })
        }
    }
}

/// Error code of [`Directory::group_members_page`] for a group that does not exist.
///
/// [`Directory::group_members_page`]: crate::ports::Directory::group_members_page
pub const GROUP_NOT_FOUND: &str = "group_not_found";

/// Resolves the groups a scope names to their ids (deduplicated, in list order); groups that
/// cannot be found are listed as unresolved on the checkpoint.
async fn resolve_groups(
    ports: &DiscoverPorts<'_>,
    scope: &Scope,
    cp: &mut DiscoveryCheckpoint,
) -> Result<Vec<String>, PortError> {
    let entries: Vec<(&ScopeEntry, &GroupSelector)> = scope
        .entries
        .iter()
        .filter_map(|e| match e {
            ScopeEntry::Group(s) => Some((e, s)),
            ScopeEntry::User(_) => None,
        })
        .collect();
    let selectors: Vec<GroupSelector> = entries.iter().map(|(_, s)| (*s).clone()).collect();
    let found = if selectors.is_empty() {
        Vec::new()
    } else {
        ports.directory.find_groups(&selectors).await?
    };
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for ((entry, selector), groups) in entries.iter().zip(found) {
        if groups.is_empty() {
            let reason = match selector {
                GroupSelector::DisplayName(_) => "no group has this display name",
                GroupSelector::Mail(_) => "no group has this mail address",
            };
            cp.unresolved.push(UnresolvedEntry {
                entry: (*entry).clone(),
                reason: reason.to_owned(),
            });
        }
        ids.extend(groups.into_iter().map(|g| g.id).filter(|id| seen.insert(id.clone())));
    }
    info!(
        groups = ids.len(),
        not_found = cp.unresolved.len(),
        "scope groups resolved"
    );
    Ok(ids)
}

/// Closes a run: drives it did not see leave the scope, users it did not see lose their "no
/// OneDrive" mark, the drive cap error is set or cleared, and the summary is recorded.
async fn finish_run(
    ports: &DiscoverPorts<'_>,
    connection: &Connection,
    scope: &Scope,
    cp: &DiscoveryCheckpoint,
    now: DateTime<Utc>,
) -> Result<DiscoverySummary, PortError> {
    let seen = ports.state.run_seen(&connection.id, &cp.run_id).await?;
    let mut unmonitored = 0u64;
    for state in [DriveState::Pending, DriveState::Indexing, DriveState::Indexed] {
        let mut cursor = None;
        loop {
            let (ids, next) = ports.state.drive_ids_in_state(&connection.id, state, cursor).await?;
            for id in ids.iter().filter(|id| !seen.drives.contains(*id)) {
                if ports
                    .state
                    .transition_drive(&connection.id, id, state, DriveState::Unmonitored)
                    .await?
                {
                    info!(
                        connection = connection.id,
                        drive_id = id,
                        "drive left the scope; unmonitored"
                    );
                    unmonitored += 1;
                }
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let mut stale = Vec::new();
    let mut cursor = None;
    loop {
        let (ids, next) = ports.state.user_ids_without_drive(&connection.id, cursor).await?;
        stale.extend(ids.into_iter().filter(|id| !seen.users_without_drive.contains(id)));
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    if !stale.is_empty() {
        ports.state.clear_users_without_drive(&connection.id, &stale).await?;
    }

    let cap_error = connection
        .last_error
        .as_ref()
        .is_some_and(|e| e.code == DRIVE_CAP_EXCEEDED);
    if cp.drives_over_cap > 0 {
        let in_scope = cp.drives_monitored + cp.drives_over_cap;
        let problem = ConnectionError {
            code: DRIVE_CAP_EXCEEDED.to_owned(),
            message: format!(
                "{in_scope} OneDrives are in scope but the drive cap is {}: {} of them are not monitored",
                connection.drive_cap, cp.drives_over_cap
            ),
            fix: format!(
                "narrow the scope with a users or groups CSV (filetrail scope upload {} FILE), or raise the \
                 connection's drive cap above {in_scope}",
                connection.id
            ),
            at: now,
        };
        warn!(
            connection = connection.id,
            in_scope,
            cap = connection.drive_cap,
            "drive cap exceeded"
        );
        ports.state.set_connection_error(&connection.id, Some(&problem)).await?;
    } else if cap_error {
        ports.state.set_connection_error(&connection.id, None).await?;
    }

    let summary = DiscoverySummary {
        run_id: cp.run_id.clone(),
        started_at: cp.started_at,
        finished_at: now,
        users_seen: cp.users_seen,
        drives_found: cp.drives_found,
        drives_new: cp.drives_new,
        users_without_drive: seen.users_without_drive.len() as u64,
        scope: scope.kind,
        unresolved: cp.unresolved.clone(),
        drives_unmonitored: unmonitored,
        drives_returned: cp.drives_returned,
        drives_over_cap: cp.drives_over_cap,
        scope_version: Some(cp.scope_version.clone()),
        drives_of_other_connections: cp.drives_of_other_connections,
    };
    ports.state.set_last_discovery(&connection.id, &summary).await?;
    ports.state.delete_run(&connection.id, &cp.run_id).await?;
    if let Some(parked) = &ports.parked {
        requeue_parked(parked, &connection.id).await?;
    }
    info!(
        connection = connection.id,
        scope = %scope.kind,
        users = summary.users_seen,
        drives = summary.drives_found,
        new = summary.drives_new,
        returned = summary.drives_returned,
        unmonitored = summary.drives_unmonitored,
        over_cap = summary.drives_over_cap,
        of_other_connections = summary.drives_of_other_connections,
        unresolved = summary.unresolved.len(),
        without_drive = summary.users_without_drive,
        "discovery run finished"
    );
    Ok(summary)
}

/// Enqueues the connection's parked blobs to be ingested again, now that a finished run has
/// recorded the drives it found (after the summary is saved, so ingest sees this run). A blob
/// whose records still cannot be placed is parked again by that ingest.
async fn requeue_parked(parked: &ParkedWork<'_>, connection: &str) -> Result<(), PortError> {
    let blobs = parked.activity.parked_blobs(connection).await?;
    if blobs.is_empty() {
        return Ok(());
    }
    let records: u64 = blobs.iter().map(|b| b.records).sum();
    let jobs: Vec<BlobJob> = blobs
        .into_iter()
        .map(|p| BlobJob {
            connection: connection.to_owned(),
            blob: p.blob,
            parked: true,
        })
        .collect();
    parked.blob_queue.enqueue_blobs(&jobs).await?;
    info!(
        connection,
        blobs = jobs.len(),
        records,
        "parked audit blobs enqueued again after discovery"
    );
    Ok(())
}

/// Records one step's lookups: new drives are inserted and enqueued while the cap allows,
/// drives back in scope resume, and the checkpoint's counters move. Returns what the step saw.
async fn record_page(
    ports: &DiscoverPorts<'_>,
    connection: &Connection,
    cp: &mut DiscoveryCheckpoint,
    users: &[DirectoryUser],
    lookups: Vec<DriveLookup>,
    now: DateTime<Utc>,
) -> Result<RunPage, PortError> {
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
    cp.drives_found += records.len() as u64;
    let mut seen = RunPage {
        drives: Vec::new(),
        users_without_drive: without.iter().map(|(u, _)| u.id.clone()).collect(),
    };

    let ids: Vec<String> = records.iter().map(|r| r.drive_id.clone()).collect();
    let known: HashMap<String, DriveRecord> = if ids.is_empty() {
        HashMap::new()
    } else {
        ports
            .state
            .drives(&ids)
            .await?
            .into_iter()
            .map(|d| (d.drive_id.clone(), d))
            .collect()
    };
    let admit = |cp: &mut DiscoveryCheckpoint| {
        if cp.drives_monitored < connection.drive_cap {
            cp.drives_monitored += 1;
            true
        } else {
            cp.drives_over_cap += 1;
            false
        }
    };
    let mut new = Vec::new();
    let mut to_enqueue = Vec::new();
    let mut returning = Vec::new();
    for record in records {
        match known.get(&record.drive_id) {
            Some(stored) if stored.connection != connection.id => {
                // The same OneDrive recorded by another connection (the tenant registered twice
                // before its id was normalised, or a tenant moved): it stays that connection's.
                cp.drives_of_other_connections += 1;
                warn!(
                    connection = connection.id,
                    drive_id = record.drive_id,
                    owner_connection = stored.connection,
                    "drive already recorded by another connection; left to it"
                );
            }
            None => {
                if admit(cp) {
                    seen.drives.push(record.drive_id.clone());
                    new.push(record);
                }
            }
            Some(stored) if stored.state == DriveState::Unmonitored => {
                if admit(cp) {
                    seen.drives.push(record.drive_id.clone());
                    returning.push(stored.clone());
                }
            }
            Some(stored) => {
                cp.drives_monitored += 1;
                seen.drives.push(record.drive_id.clone());
                // A known drive still pending was recorded by a run that stopped before its
                // enqueue was confirmed: enqueue it again (indexing is idempotent).
                if stored.state == DriveState::Pending {
                    to_enqueue.push(record.drive_id);
                }
            }
        }
    }

    let inserted = ports.state.insert_new_drives(&new).await?;
    cp.drives_new += inserted.len() as u64;
    to_enqueue.extend(inserted.iter().cloned());
    if !to_enqueue.is_empty() {
        ports
            .index_queue
            .enqueue_index(&IndexJob::for_drives(&connection.id, &to_enqueue))
            .await?;
        for id in &to_enqueue {
            ports
                .state
                .transition_drive(&connection.id, id, DriveState::Pending, DriveState::Indexing)
                .await?;
        }
    }
    for drive in &returning {
        // Back in scope: a finished walk continues from its delta link (or resyncs if the
        // link expired); an interrupted one from its checkpoint.
        let to = if drive.index.completed_at.is_some() && drive.index.delta_link.is_some() {
            DriveState::Indexed
        } else {
            DriveState::Indexing
        };
        if ports
            .state
            .transition_drive(&connection.id, &drive.drive_id, DriveState::Unmonitored, to)
            .await?
        {
            ports
                .index_queue
                .enqueue_index(&IndexJob::for_drives(&connection.id, [&drive.drive_id]))
                .await?;
            cp.drives_returned += 1;
            info!(
                connection = connection.id,
                drive_id = drive.drive_id,
                state = to.as_str(),
                "drive back in scope; resuming"
            );
        }
    }
    if !inserted.is_empty() {
        let owners: Vec<String> = new
            .iter()
            .filter(|r| inserted.contains(&r.drive_id))
            .map(|r| r.owner_id.clone())
            .collect();
        ports.state.clear_users_without_drive(&connection.id, &owners).await?;
    }
    if !without.is_empty() {
        ports.state.record_users_without_drive(&connection.id, &without).await?;
    }
    cp.users_without_drive += without.len() as u64;
    Ok(seen)
}

/// Clears a recorded connection problem and re-enqueues drives whose work it parked.
async fn recover_connection(ports: &DiscoverPorts<'_>, connection: &Connection) -> Result<(), PortError> {
    // The drive cap error is not about credentials: the end of the run sets or clears it. The
    // audit feed's errors (audit log off, permission missing) are cleared by the next poll that
    // works, not by Graph working.
    if connection
        .last_error
        .as_ref()
        .is_none_or(|e| e.code == DRIVE_CAP_EXCEEDED || e.code.starts_with(crate::activity::ACTIVITY_ERROR_PREFIX))
    {
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
                ports.state.set_drive_parked(&connection.id, id, None).await?;
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
