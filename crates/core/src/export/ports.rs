//! The ports an export reads events, writes objects and keeps its checkpoint through.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::window::{ExportWindow, StaleWindow, floor_hour};
#[cfg(doc)]
use super::{EXPORT_PREFIX, merge_key};
use crate::events::EventRecord;
use crate::model::Connection;
use crate::ports::PortResult;

/// One page of one shard of a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InsertedPage {
    /// In the index's order (see [`merge_key`]).
    pub events: Vec<EventRecord>,
    /// Whether the shard has more events in the window after these.
    pub more: bool,
}

/// A connection's events by insertion time (the events table's insertion index).
#[async_trait]
pub trait InsertedEvents: Send + Sync {
    /// How many shards a connection's day is spread over.
    fn shards(&self) -> u64;
    /// Up to `limit` events of `connection` inserted in `window` in shard `shard`, in
    /// [`merge_key`] order, starting after `after` (an event an earlier page returned) or at
    /// the window's start.
    async fn inserted_page(
        &self,
        connection: &str,
        window: &ExportWindow,
        shard: u64,
        after: Option<&EventRecord>,
        limit: usize,
    ) -> PortResult<InsertedPage>;
    /// The days between `from` and `to` (inclusive) on which events of `connection` were
    /// recorded, in any order: an export over a long range reads only those days' hours.
    async fn days_with_events(&self, connection: &str, from: NaiveDate, to: NaiveDate) -> PortResult<Vec<NaiveDate>>;
}

/// Where exported objects go.
#[async_trait]
pub trait ExportSink: Send + Sync {
    /// Writes (or replaces) the object at `key`.
    async fn put_object(&self, key: &str, body: Vec<u8>) -> PortResult<()>;
    /// Where [`EXPORT_PREFIX`] is, for people (`s3://bucket/exports/events/`).
    fn location(&self) -> String;
}

/// What a connection's export keeps between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCheckpoint {
    /// The first window not exported yet.
    pub next_window: DateTime<Utc>,
    /// Events exported by the schedule so far (windows count once, however often retried).
    #[serde(default)]
    pub events_exported: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<DateTime<Utc>>,
}

impl ExportCheckpoint {
    /// Where a connection without a checkpoint starts: the hour it was registered (no event
    /// of it can be older).
    pub fn initial(connection: &Connection) -> Self {
        Self {
            next_window: floor_hour(connection.created_at),
            events_exported: 0,
            last_run_at: None,
        }
    }
}

/// The export checkpoints (state table).
#[async_trait]
pub trait ExportCheckpoints: Send + Sync {
    async fn export_checkpoint(&self, connection: &str) -> PortResult<Option<ExportCheckpoint>>;
    /// Saves `checkpoint` only if the stored one still has `expected`'s `next_window` (`None`:
    /// there is none): two exports of one connection never both move it. Returns whether it
    /// saved.
    async fn save_export_checkpoint(
        &self,
        connection: &str,
        expected: Option<&ExportCheckpoint>,
        checkpoint: &ExportCheckpoint,
    ) -> PortResult<bool>;
    /// The connection's stale windows ([`StaleExportMarks::mark_stale`]), oldest first.
    async fn stale_windows(&self, connection: &str) -> PortResult<Vec<StaleWindow>>;
    /// Removes a mark unless it was renewed after `stale.marked_at`; whether it removed it.
    async fn clear_stale(&self, connection: &str, stale: &StaleWindow) -> PortResult<bool>;
}

/// Where functions that change exported events (hash-file) note the windows to write again.
#[async_trait]
pub trait StaleExportMarks: Send + Sync {
    /// Marks `windows` of `connection` stale at `at` (a second mark of a window renews it).
    async fn mark_stale(&self, connection: &str, windows: &[ExportWindow], at: DateTime<Utc>) -> PortResult<()>;
}

/// The ports an export uses.
pub struct ExportPorts<'a> {
    pub events: &'a dyn InsertedEvents,
    pub sink: &'a dyn ExportSink,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::export::test_support::t;

    #[tokio::test]
    async fn a_stale_export_does_not_move_a_checkpoint_another_moved() {
        let checkpoints = crate::memory::MemoryState::default();
        let first = ExportCheckpoint {
            next_window: t("2026-11-22T10:00:00Z"),
            events_exported: 0,
            last_run_at: None,
        };
        assert!(checkpoints.save_export_checkpoint("c", None, &first).await.unwrap());
        assert!(!checkpoints.save_export_checkpoint("c", None, &first).await.unwrap());
    }
}
