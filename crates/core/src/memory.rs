//! In-memory adapters of the storage and queue ports, for tests of the use cases and for
//! dry runs. They keep the same contracts as the DynamoDB and SQS adapters (conditional
//! checkpoint saves, idempotent inserts), so a use-case test here means the same thing there.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::PortError;
use crate::jobs::{DiscoverJob, IndexJob};
use crate::model::{
    Connection, ConnectionError, DirectoryUser, DiscoverySummary, DriveRecord, DriveState, IndexProgress, InventoryRow,
};
use crate::ports::{
    CheckpointVersion, DiscoverQueue, DiscoveryCheckpoint, IndexQueue, InventoryStore, PortResult, RunPage, RunSeen,
    ScopeObjects, StateStore, UploadRead,
};
use crate::scope::{Scope, ScopeUploadResult};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// State in memory.
#[derive(Debug, Default)]
pub struct MemoryState {
    connections: Mutex<BTreeMap<String, Connection>>,
    drives: Mutex<BTreeMap<String, DriveRecord>>,
    without_drive: Mutex<BTreeMap<(String, String), (DirectoryUser, String)>>,
    checkpoints: Mutex<HashMap<String, DiscoveryCheckpoint>>,
    scopes: Mutex<HashMap<String, Scope>>,
    uploads: Mutex<HashMap<String, ScopeUploadResult>>,
    runs: Mutex<BTreeMap<(String, String, u64), RunPage>>,
}

impl MemoryState {
    pub fn all_drives(&self) -> Vec<DriveRecord> {
        lock(&self.drives).values().cloned().collect()
    }
}

#[async_trait]
impl StateStore for MemoryState {
    async fn connection(&self, id: &str) -> PortResult<Option<Connection>> {
        Ok(lock(&self.connections).get(id).cloned())
    }

    async fn connections(&self) -> PortResult<Vec<Connection>> {
        Ok(lock(&self.connections).values().cloned().collect())
    }

    async fn put_connection(&self, connection: &Connection) -> PortResult<()> {
        lock(&self.connections).insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn set_connection_error(&self, id: &str, error: Option<&ConnectionError>) -> PortResult<()> {
        if let Some(c) = lock(&self.connections).get_mut(id) {
            c.last_error = error.cloned();
        }
        Ok(())
    }

    async fn set_last_discovery(&self, id: &str, summary: &DiscoverySummary) -> PortResult<()> {
        if let Some(c) = lock(&self.connections).get_mut(id) {
            c.last_discovery = Some(summary.clone());
        }
        Ok(())
    }

    async fn drive(&self, drive_id: &str) -> PortResult<Option<DriveRecord>> {
        Ok(lock(&self.drives).get(drive_id).cloned())
    }

    async fn drives(&self, drive_ids: &[String]) -> PortResult<Vec<DriveRecord>> {
        let drives = lock(&self.drives);
        Ok(drive_ids.iter().filter_map(|id| drives.get(id).cloned()).collect())
    }

    async fn insert_new_drives(&self, new: &[DriveRecord]) -> PortResult<Vec<String>> {
        let mut drives = lock(&self.drives);
        let mut inserted = Vec::new();
        for d in new {
            if !drives.contains_key(&d.drive_id) {
                drives.insert(d.drive_id.clone(), d.clone());
                inserted.push(d.drive_id.clone());
            }
        }
        Ok(inserted)
    }

    async fn transition_drive(&self, drive_id: &str, from: DriveState, to: DriveState) -> PortResult<bool> {
        match lock(&self.drives).get_mut(drive_id) {
            Some(d) if d.state == from => {
                d.state = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn save_index_progress(
        &self,
        drive_id: &str,
        expected: &IndexProgress,
        progress: &IndexProgress,
        state: DriveState,
    ) -> PortResult<bool> {
        match lock(&self.drives).get_mut(drive_id) {
            Some(d)
                if d.index.pages == expected.pages
                    && d.index.generation == expected.generation
                    && d.state != DriveState::Unmonitored =>
            {
                d.index = progress.clone();
                d.state = state;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn set_drive_parked(&self, drive_id: &str, reason: Option<&str>) -> PortResult<()> {
        if let Some(d) = lock(&self.drives).get_mut(drive_id) {
            d.parked = reason.map(str::to_owned);
        }
        Ok(())
    }

    async fn drive_ids_in_state(
        &self,
        connection: &str,
        state: DriveState,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        const PAGE: usize = 100;
        let drives = lock(&self.drives);
        // Drives are keyed by id: a page starts right after the cursor, not at the first drive.
        let from = cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let ids: Vec<String> = drives
            .range::<String, _>((from, Bound::Unbounded))
            .map(|(_, d)| d)
            .filter(|d| d.connection == connection && d.state == state)
            .map(|d| d.drive_id.clone())
            .take(PAGE + 1)
            .collect();
        if ids.len() > PAGE {
            let page: Vec<String> = ids[..PAGE].to_vec();
            let next = page.last().cloned();
            Ok((page, next))
        } else {
            Ok((ids, None))
        }
    }

    async fn count_drives(&self, connection: &str, state: DriveState) -> PortResult<u64> {
        Ok(lock(&self.drives)
            .values()
            .filter(|d| d.connection == connection && d.state == state)
            .count() as u64)
    }

    async fn record_users_without_drive(&self, connection: &str, users: &[(DirectoryUser, String)]) -> PortResult<()> {
        let mut map = lock(&self.without_drive);
        for (u, reason) in users {
            map.insert((connection.to_owned(), u.id.clone()), (u.clone(), reason.clone()));
        }
        Ok(())
    }

    async fn clear_users_without_drive(&self, connection: &str, user_ids: &[String]) -> PortResult<()> {
        let mut map = lock(&self.without_drive);
        for id in user_ids {
            map.remove(&(connection.to_owned(), id.clone()));
        }
        Ok(())
    }

    async fn count_users_without_drive(&self, connection: &str) -> PortResult<u64> {
        Ok(lock(&self.without_drive)
            .keys()
            .filter(|(c, _)| c == connection)
            .count() as u64)
    }

    async fn user_ids_without_drive(
        &self,
        connection: &str,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        const PAGE: usize = 100;
        let map = lock(&self.without_drive);
        let from = cursor.map_or(Bound::Unbounded, |cur| Bound::Excluded((connection.to_owned(), cur)));
        let ids: Vec<String> = map
            .range((from, Bound::Unbounded))
            .map(|(key, _)| key)
            .filter(|(c, _)| c == connection)
            .map(|(_, id)| id.clone())
            .take(PAGE + 1)
            .collect();
        if ids.len() > PAGE {
            let page = ids[..PAGE].to_vec();
            let next = page.last().cloned();
            Ok((page, next))
        } else {
            Ok((ids, None))
        }
    }

    async fn scope(&self, connection: &str) -> PortResult<Option<Scope>> {
        Ok(lock(&self.scopes).get(connection).cloned())
    }

    async fn replace_scope(&self, connection: &str, scope: &Scope) -> PortResult<bool> {
        let mut scopes = lock(&self.scopes);
        if scopes
            .get(connection)
            .is_some_and(|s| s.uploaded_at > scope.uploaded_at)
        {
            return Ok(false);
        }
        scopes.insert(connection.to_owned(), scope.clone());
        Ok(true)
    }

    async fn record_scope_upload(&self, connection: &str, result: &ScopeUploadResult) -> PortResult<()> {
        let mut uploads = lock(&self.uploads);
        if uploads
            .get(connection)
            .is_none_or(|r| r.uploaded_at <= result.uploaded_at)
        {
            uploads.insert(connection.to_owned(), result.clone());
        }
        Ok(())
    }

    async fn last_scope_upload(&self, connection: &str) -> PortResult<Option<ScopeUploadResult>> {
        Ok(lock(&self.uploads).get(connection).cloned())
    }

    async fn record_run_page(&self, connection: &str, run_id: &str, page: u64, seen: &RunPage) -> PortResult<()> {
        lock(&self.runs).insert((connection.to_owned(), run_id.to_owned(), page), seen.clone());
        Ok(())
    }

    async fn run_seen(&self, connection: &str, run_id: &str) -> PortResult<RunSeen> {
        let mut all = RunSeen::default();
        for ((c, r, _), page) in lock(&self.runs).iter() {
            if c == connection && r == run_id {
                all.drives.extend(page.drives.iter().cloned());
                all.users_without_drive.extend(page.users_without_drive.iter().cloned());
            }
        }
        Ok(all)
    }

    async fn delete_run(&self, connection: &str, run_id: &str) -> PortResult<()> {
        lock(&self.runs).retain(|(c, r, _), _| !(c == connection && r == run_id));
        Ok(())
    }

    async fn discovery_checkpoint(&self, connection: &str) -> PortResult<Option<DiscoveryCheckpoint>> {
        Ok(lock(&self.checkpoints).get(connection).cloned())
    }

    async fn save_discovery_checkpoint(
        &self,
        connection: &str,
        checkpoint: Option<&DiscoveryCheckpoint>,
        expected: Option<&CheckpointVersion>,
    ) -> PortResult<bool> {
        let mut map = lock(&self.checkpoints);
        if map.get(connection).map(DiscoveryCheckpoint::version).as_ref() != expected {
            return Ok(false);
        }
        match checkpoint {
            Some(cp) => map.insert(connection.to_owned(), cp.clone()),
            None => map.remove(connection),
        };
        Ok(true)
    }
}

/// Inventory in memory, counting writes like the DynamoDB adapter's batches would.
#[derive(Debug, Default)]
pub struct MemoryInventory {
    rows: Mutex<BTreeMap<(String, String), InventoryRow>>,
    puts: Mutex<u64>,
}

impl MemoryInventory {
    pub fn rows(&self, drive_id: &str) -> Vec<InventoryRow> {
        lock(&self.rows)
            .values()
            .filter(|r| r.drive_id == drive_id)
            .cloned()
            .collect()
    }

    /// Row writes so far (each row counts once per write, overwrites included).
    pub fn row_writes(&self) -> u64 {
        *lock(&self.puts)
    }
}

#[async_trait]
impl InventoryStore for MemoryInventory {
    async fn put_rows(&self, rows: &[InventoryRow]) -> PortResult<()> {
        let mut map = lock(&self.rows);
        for r in rows {
            map.insert((r.drive_id.clone(), r.item_id.clone()), r.clone());
        }
        *lock(&self.puts) += rows.len() as u64;
        Ok(())
    }

    async fn delete_rows(&self, drive_id: &str, item_ids: &[String]) -> PortResult<()> {
        let mut map = lock(&self.rows);
        for id in item_ids {
            map.remove(&(drive_id.to_owned(), id.clone()));
        }
        Ok(())
    }

    async fn paths(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, String)>> {
        let map = lock(&self.rows);
        Ok(item_ids
            .iter()
            .filter_map(|id| {
                map.get(&(drive_id.to_owned(), id.clone()))
                    .map(|r| (id.clone(), r.path.clone()))
            })
            .collect())
    }

    async fn delete_older_than(&self, drive_id: &str, generation: u64) -> PortResult<u64> {
        let mut map = lock(&self.rows);
        let before = map.len();
        map.retain(|(d, _), r| d != drive_id || r.generation >= generation);
        Ok((before - map.len()) as u64)
    }
}

/// A queue in memory that can be told to fail.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    index: Mutex<Vec<IndexJob>>,
    discover: Mutex<Vec<DiscoverJob>>,
    fail: Mutex<bool>,
}

impl MemoryQueue {
    pub fn index_jobs(&self) -> Vec<IndexJob> {
        lock(&self.index).clone()
    }

    pub fn take_index_jobs(&self) -> Vec<IndexJob> {
        std::mem::take(&mut *lock(&self.index))
    }

    pub fn discover_jobs(&self) -> Vec<DiscoverJob> {
        lock(&self.discover).clone()
    }

    /// Makes every following enqueue fail (a queue outage).
    pub fn set_failing(&self, failing: bool) {
        *lock(&self.fail) = failing;
    }

    fn check(&self) -> PortResult<()> {
        if *lock(&self.fail) {
            return Err(PortError::transient(
                "QueueUnavailable",
                "the queue is unavailable (injected)",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl IndexQueue for MemoryQueue {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        self.check()?;
        lock(&self.index).extend_from_slice(jobs);
        Ok(())
    }
}

#[async_trait]
impl DiscoverQueue for MemoryQueue {
    async fn enqueue_discover(&self, jobs: &[DiscoverJob]) -> PortResult<()> {
        self.check()?;
        lock(&self.discover).extend_from_slice(jobs);
        Ok(())
    }
}

/// A bucket in memory: objects with an ETag each.
#[derive(Debug, Default)]
pub struct MemoryObjects {
    objects: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    puts: Mutex<u64>,
}

impl MemoryObjects {
    /// Puts an object; its ETag is a counter, so every put has a new one. Returns it.
    pub fn put(&self, key: &str, body: &[u8]) -> String {
        let mut puts = lock(&self.puts);
        *puts += 1;
        let etag = format!("etag-{puts}");
        lock(&self.objects).insert(key.to_owned(), (body.to_vec(), etag.clone()));
        etag
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        lock(&self.objects).get(key).map(|(b, _)| b.clone())
    }

    pub fn keys(&self) -> Vec<String> {
        lock(&self.objects).keys().cloned().collect()
    }
}

#[async_trait]
impl ScopeObjects for MemoryObjects {
    async fn read_upload(&self, key: &str, etag: &str, max_bytes: u64) -> PortResult<UploadRead> {
        Ok(match lock(&self.objects).get(key) {
            None => UploadRead::Missing,
            Some((_, stored)) if stored != etag => UploadRead::Replaced,
            Some((body, _)) if body.len() as u64 > max_bytes => UploadRead::TooLarge {
                size: body.len() as u64,
            },
            Some((body, _)) => UploadRead::Bytes(body.clone()),
        })
    }

    async fn write_result(&self, key: &str, body: &[u8]) -> PortResult<()> {
        lock(&self.objects).insert(key.to_owned(), (body.to_vec(), "result".to_owned()));
        Ok(())
    }
}
