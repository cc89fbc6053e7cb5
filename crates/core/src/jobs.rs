//! Messages carried by the work queues. They are small, self-describing JSON documents; every
//! handler is idempotent under redelivery, so a message may arrive more than once.

use serde::{Deserialize, Serialize};

use crate::digest::HashCheckpoint;
use crate::model::ConnectionId;

/// A message on the discover queue, or the constant input of the discovery schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DiscoverJob {
    /// The schedule fired: start (or continue) discovery for every active cloud connection.
    DiscoverAll,
    /// Discover one connection, continuing its run checkpoint if one is open.
    Discover {
        connection: ConnectionId,
        /// Why this run started (`schedule`, `continuation`, `scope`, `cli`), for logs.
        #[serde(default)]
        reason: String,
    },
}

/// A message on the index queue: walk (or continue walking) one drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IndexJob {
    IndexDrive { connection: ConnectionId, drive_id: String },
}

impl IndexJob {
    /// The jobs that index `drive_ids` of `connection`.
    pub fn for_drives<'a>(connection: &str, drive_ids: impl IntoIterator<Item = &'a String>) -> Vec<IndexJob> {
        drive_ids
            .into_iter()
            .map(|id| IndexJob::IndexDrive {
                connection: connection.to_owned(),
                drive_id: id.clone(),
            })
            .collect()
    }
}

/// The constant input of the activity schedule: poll every active cloud connection's audit feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PollJob {
    PollAll,
    /// Poll one connection (the CLI, a test).
    Poll {
        connection: ConnectionId,
    },
}

/// A message on the activity queue: one Management Activity API content blob to ingest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobJob {
    pub connection: ConnectionId,
    #[serde(flatten)]
    pub blob: crate::feed::ContentBlob,
    /// Enqueued again from the parked blobs ([`crate::feed::ParkedBlob`]): the ingest that
    /// places its records takes it off that list.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parked: bool,
}

/// A message on the hash queue: hash one file's current version and record the digests on its
/// inventory row and events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashJob {
    pub connection: ConnectionId,
    pub drive_id: String,
    pub item_id: String,
    /// Where a previous invocation stopped hashing a file too large for its time budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<HashContinuation>,
    /// Hash the previous versions the file's older events concern (through `…/versions`)
    /// instead of the current one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub previous_versions: bool,
}

/// A hash interrupted by the time budget: the version, how far, and the digests' state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashContinuation {
    pub ctag: String,
    pub offset: u64,
    pub state: HashCheckpoint,
    /// The holder of the version's lease ([`VersionLease`]), which the continuation keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
}
