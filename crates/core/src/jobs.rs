//! Messages carried by the work queues. They are small, self-describing JSON documents; every
//! handler is idempotent under redelivery, so a message may arrive more than once.

use serde::{Deserialize, Serialize};

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
