//! Port wrappers that time every call, by operation, so a benchmark can say where a use case's
//! wall time goes (which store operation, Graph, the queue) without touching the use case.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use filetrail_core::jobs::IndexJob;
use filetrail_core::model::{
    Connection, ConnectionError, DirectoryUser, DiscoverySummary, DriveLookup, DriveRecord, DriveState, IndexProgress,
};
use filetrail_core::ports::{
    CheckpointVersion, ConnectionStore, Directory, DiscoveryCheckpoint, DiscoveryRunStore, DriveFinder, DriveStore,
    IndexQueue, PortResult, RunPage, RunSeen, ScopeStore, UsersPage,
};
use filetrail_core::scope::{DirectoryGroup, GroupSelector, Scope, ScopeUploadResult, UserSelector};
use serde::Serialize;

/// The calls of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpTime {
    pub calls: u64,
    /// Time spent inside the calls, summed (calls made at once overlap).
    pub seconds: f64,
    /// When the first call started, in seconds since the clock started.
    pub first_call_s: f64,
}

/// Time spent in the operations of `times` whose name starts with `prefix` (`""` for all).
pub fn seconds_in(times: &BTreeMap<&'static str, OpTime>, prefix: &str) -> f64 {
    times
        .iter()
        .filter(|(op, _)| op.starts_with(prefix))
        .map(|(_, t)| t.seconds)
        .sum()
}

/// Call times by operation, shared by the wrappers of one run.
#[derive(Debug)]
pub struct CallTimes {
    started: Instant,
    ops: Mutex<BTreeMap<&'static str, OpTime>>,
}

impl Default for CallTimes {
    fn default() -> Self {
        Self::new()
    }
}

impl CallTimes {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            ops: Mutex::default(),
        }
    }

    /// Every operation called so far.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpTime> {
        self.ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Time spent in the operations whose name starts with `prefix` (`"state."`, `"graph."`).
    pub fn seconds_in(&self, prefix: &str) -> f64 {
        seconds_in(&self.snapshot(), prefix)
    }

    fn record(&self, op: &'static str, start: Instant, took: Duration) {
        let mut ops = self.ops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = ops.entry(op).or_insert_with(|| OpTime {
            first_call_s: start.saturating_duration_since(self.started).as_secs_f64(),
            ..OpTime::default()
        });
        entry.calls += 1;
        entry.seconds += took.as_secs_f64();
    }

    async fn time<T>(&self, op: &'static str, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        self.record(op, start, start.elapsed());
        out
    }
}

/// A port that times each call into [`CallTimes`] under `state.*`, `graph.*` or `queue.*` and
/// otherwise behaves exactly as the port it wraps.
pub struct Timed<'a, P: ?Sized> {
    inner: &'a P,
    times: &'a CallTimes,
}

impl<'a, P: ?Sized> Timed<'a, P> {
    pub fn new(inner: &'a P, times: &'a CallTimes) -> Self {
        Self { inner, times }
    }
}

#[async_trait]
impl<P: ConnectionStore + ?Sized> ConnectionStore for Timed<'_, P> {
    async fn connection(&self, id: &str) -> PortResult<Option<Connection>> {
        self.times.time("state.connection", self.inner.connection(id)).await
    }

    async fn connections(&self) -> PortResult<Vec<Connection>> {
        self.times.time("state.connections", self.inner.connections()).await
    }

    async fn put_connection(&self, connection: &Connection) -> PortResult<()> {
        self.times
            .time("state.put_connection", self.inner.put_connection(connection))
            .await
    }

    async fn set_connection_error(&self, id: &str, error: Option<&ConnectionError>) -> PortResult<()> {
        self.times
            .time("state.set_connection_error", self.inner.set_connection_error(id, error))
            .await
    }

    async fn set_last_discovery(&self, id: &str, summary: &DiscoverySummary) -> PortResult<()> {
        self.times
            .time("state.set_last_discovery", self.inner.set_last_discovery(id, summary))
            .await
    }

    async fn set_write_app(&self, id: &str, app: Option<&filetrail_core::model::WriteApp>) -> PortResult<()> {
        self.times
            .time("state.set_write_app", self.inner.set_write_app(id, app))
            .await
    }
}

#[async_trait]
impl<P: DriveStore + ?Sized> DriveStore for Timed<'_, P> {
    async fn drive(&self, drive_id: &str) -> PortResult<Option<DriveRecord>> {
        self.times.time("state.drive", self.inner.drive(drive_id)).await
    }

    async fn drives(&self, drive_ids: &[String]) -> PortResult<Vec<DriveRecord>> {
        self.times.time("state.drives", self.inner.drives(drive_ids)).await
    }

    async fn insert_new_drives(&self, drives: &[DriveRecord]) -> PortResult<Vec<String>> {
        self.times
            .time("state.insert_new_drives", self.inner.insert_new_drives(drives))
            .await
    }

    async fn transition_drive(
        &self,
        connection: &str,
        drive_id: &str,
        from: DriveState,
        to: DriveState,
    ) -> PortResult<bool> {
        self.times
            .time(
                "state.transition_drive",
                self.inner.transition_drive(connection, drive_id, from, to),
            )
            .await
    }

    async fn save_index_progress(
        &self,
        connection: &str,
        drive_id: &str,
        expected: &IndexProgress,
        progress: &IndexProgress,
        state: DriveState,
    ) -> PortResult<bool> {
        self.times
            .time(
                "state.save_index_progress",
                self.inner
                    .save_index_progress(connection, drive_id, expected, progress, state),
            )
            .await
    }

    async fn set_drive_parked(&self, connection: &str, drive_id: &str, reason: Option<&str>) -> PortResult<()> {
        self.times
            .time(
                "state.set_drive_parked",
                self.inner.set_drive_parked(connection, drive_id, reason),
            )
            .await
    }

    async fn drive_ids_in_state(
        &self,
        connection: &str,
        state: DriveState,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        self.times
            .time(
                "state.drive_ids_in_state",
                self.inner.drive_ids_in_state(connection, state, cursor),
            )
            .await
    }

    async fn count_drives(&self, connection: &str, state: DriveState) -> PortResult<u64> {
        self.times
            .time("state.count_drives", self.inner.count_drives(connection, state))
            .await
    }

    async fn record_users_without_drive(&self, connection: &str, users: &[(DirectoryUser, String)]) -> PortResult<()> {
        self.times
            .time(
                "state.record_users_without_drive",
                self.inner.record_users_without_drive(connection, users),
            )
            .await
    }

    async fn clear_users_without_drive(&self, connection: &str, user_ids: &[String]) -> PortResult<()> {
        self.times
            .time(
                "state.clear_users_without_drive",
                self.inner.clear_users_without_drive(connection, user_ids),
            )
            .await
    }

    async fn count_users_without_drive(&self, connection: &str) -> PortResult<u64> {
        self.times
            .time(
                "state.count_users_without_drive",
                self.inner.count_users_without_drive(connection),
            )
            .await
    }

    async fn user_ids_without_drive(
        &self,
        connection: &str,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        self.times
            .time(
                "state.user_ids_without_drive",
                self.inner.user_ids_without_drive(connection, cursor),
            )
            .await
    }
}

#[async_trait]
impl<P: ScopeStore + ?Sized> ScopeStore for Timed<'_, P> {
    async fn scope(&self, connection: &str) -> PortResult<Option<Scope>> {
        self.times.time("state.scope", self.inner.scope(connection)).await
    }

    async fn replace_scope(&self, connection: &str, scope: &Scope) -> PortResult<bool> {
        self.times
            .time("state.replace_scope", self.inner.replace_scope(connection, scope))
            .await
    }

    async fn record_scope_upload(&self, connection: &str, result: &ScopeUploadResult) -> PortResult<()> {
        self.times
            .time(
                "state.record_scope_upload",
                self.inner.record_scope_upload(connection, result),
            )
            .await
    }

    async fn last_scope_upload(&self, connection: &str) -> PortResult<Option<ScopeUploadResult>> {
        self.times
            .time("state.last_scope_upload", self.inner.last_scope_upload(connection))
            .await
    }
}

#[async_trait]
impl<P: DiscoveryRunStore + ?Sized> DiscoveryRunStore for Timed<'_, P> {
    async fn record_run_page(&self, connection: &str, run_id: &str, page: u64, seen: &RunPage) -> PortResult<()> {
        self.times
            .time(
                "state.record_run_page",
                self.inner.record_run_page(connection, run_id, page, seen),
            )
            .await
    }

    async fn run_seen(&self, connection: &str, run_id: &str) -> PortResult<RunSeen> {
        self.times
            .time("state.run_seen", self.inner.run_seen(connection, run_id))
            .await
    }

    async fn delete_run(&self, connection: &str, run_id: &str) -> PortResult<()> {
        self.times
            .time("state.delete_run", self.inner.delete_run(connection, run_id))
            .await
    }

    async fn discovery_checkpoint(&self, connection: &str) -> PortResult<Option<DiscoveryCheckpoint>> {
        self.times
            .time(
                "state.discovery_checkpoint",
                self.inner.discovery_checkpoint(connection),
            )
            .await
    }

    async fn save_discovery_checkpoint(
        &self,
        connection: &str,
        checkpoint: Option<&DiscoveryCheckpoint>,
        expected: Option<&CheckpointVersion>,
    ) -> PortResult<bool> {
        self.times
            .time(
                "state.save_discovery_checkpoint",
                self.inner.save_discovery_checkpoint(connection, checkpoint, expected),
            )
            .await
    }
}

#[async_trait]
impl<P: Directory + ?Sized> Directory for Timed<'_, P> {
    async fn users_page(&self, link: Option<&str>) -> PortResult<UsersPage> {
        self.times.time("graph.users_page", self.inner.users_page(link)).await
    }

    async fn find_users(&self, selectors: &[UserSelector]) -> PortResult<Vec<Vec<DirectoryUser>>> {
        self.times
            .time("graph.find_users", self.inner.find_users(selectors))
            .await
    }

    async fn find_groups(&self, selectors: &[GroupSelector]) -> PortResult<Vec<Vec<DirectoryGroup>>> {
        self.times
            .time("graph.find_groups", self.inner.find_groups(selectors))
            .await
    }

    async fn group_members_page(&self, group_id: &str, link: Option<&str>) -> PortResult<UsersPage> {
        self.times
            .time(
                "graph.group_members_page",
                self.inner.group_members_page(group_id, link),
            )
            .await
    }
}

#[async_trait]
impl<P: DriveFinder + ?Sized> DriveFinder for Timed<'_, P> {
    async fn find_drives(&self, users: &[DirectoryUser]) -> PortResult<Vec<DriveLookup>> {
        self.times
            .time("graph.find_drives", self.inner.find_drives(users))
            .await
    }
}

#[async_trait]
impl<P: IndexQueue + ?Sized> IndexQueue for Timed<'_, P> {
    async fn enqueue_index(&self, jobs: &[IndexJob]) -> PortResult<()> {
        self.times
            .time("queue.enqueue_index", self.inner.enqueue_index(jobs))
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use filetrail_core::memory::{MemoryQueue, MemoryState};

    #[tokio::test]
    async fn each_call_is_counted_under_its_operation_and_passed_through() {
        let times = CallTimes::new();
        let state = MemoryState::default();
        let queue = MemoryQueue::default();
        let timed_state = Timed::new(&state, &times);
        let timed_queue = Timed::new(&queue, &times);

        assert!(timed_state.connection("none").await.unwrap().is_none());
        assert!(timed_state.connection("other").await.unwrap().is_none());
        timed_queue
            .enqueue_index(&IndexJob::for_drives("c", &["d1".to_owned()]))
            .await
            .unwrap();

        let ops = times.snapshot();
        assert_eq!(ops["state.connection"].calls, 2);
        assert_eq!(ops["queue.enqueue_index"].calls, 1);
        assert_eq!(ops.len(), 2);
        assert_eq!(queue.index_jobs().len(), 1, "the job reached the wrapped queue");
        assert!(times.seconds_in("state.") <= times.seconds_in(""));
    }
}
