//! Mutable drive state layered over the generated (immutable) tenant.
//!
//! Only drives that were touched have an entry: a delta-token *epoch* (bumped by
//! `invalidate_delta_tokens`, which makes older tokens answer 410) and an append-only *change log*.
//! The log is the whole mutation model: a drive's current state is its generated base state with
//! the log applied in order, delta from a token at version `v` replays `log[v..]`, and a full
//! enumeration replays the whole log after the base items. Mutations (later work) only append.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::tenant::SimItem;

/// A change to apply to a drive (see `SimHandle::apply_drive_change`).
#[derive(Debug, Clone, PartialEq)]
pub enum DriveChange {
    /// Create or replace an item with this state (its `id` decides which). The caller keeps
    /// `parent_id`, `path` and folder sizes consistent.
    Upsert(Box<SimItem>),
    /// Delete the item with this id.
    Delete {
        /// Id of the item to delete.
        item_id: String,
    },
}

/// One entry of a drive's change log.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    /// The item exists with this state.
    Present(Box<SimItem>),
    /// The item was deleted.
    Deleted {
        id: String,
        parent_id: Option<String>,
        is_folder: bool,
        at: DateTime<Utc>,
    },
    /// The item's sharing changed (`crate::sharing`): its state, eTag and cTag are untouched, so
    /// this marker only makes delta rounds that ask for sharing changes report the item. It is
    /// skipped wherever the item's state is looked up ([`DriveStates::latest`],
    /// [`latest_per_item`]).
    Shared { id: String, at: DateTime<Utc> },
}

impl Entry {
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::Present(item) => &item.id,
            Self::Deleted { id, .. } | Self::Shared { id, .. } => id,
        }
    }

    /// When the change happened (modification time of the new state, or deletion time).
    pub(crate) fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Present(item) => item.modified,
            Self::Deleted { at, .. } | Self::Shared { at, .. } => *at,
        }
    }
}

#[derive(Debug, Default)]
struct DriveLog {
    epoch: u32,
    entries: Vec<Entry>,
    /// Ordinals handed out for new items so far (beyond the generated ones).
    allocated: usize,
}

/// Per-drive epochs and change logs, keyed by drive key.
#[derive(Debug, Default)]
pub(crate) struct DriveStates {
    map: Mutex<HashMap<u64, DriveLog>>,
}

impl DriveStates {
    fn with<R>(&self, key: u64, f: impl FnOnce(&mut DriveLog) -> R) -> R {
        let mut map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.entry(key).or_default())
    }

    fn read<R>(&self, key: u64, f: impl FnOnce(Option<&DriveLog>) -> R) -> R {
        let map = self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(map.get(&key))
    }

    /// The drive's current delta-token epoch.
    pub(crate) fn epoch(&self, key: u64) -> u32 {
        self.read(key, |l| l.map_or(0, |l| l.epoch))
    }

    /// Invalidates every delta token issued for the drive so far; returns the new epoch.
    pub(crate) fn invalidate(&self, key: u64) -> u32 {
        self.with(key, |l| {
            l.epoch = l.epoch.wrapping_add(1);
            l.epoch
        })
    }

    /// The drive's state version: the number of logged changes.
    pub(crate) fn version(&self, key: u64) -> u64 {
        self.read(key, |l| l.map_or(0, |l| l.entries.len() as u64))
    }

    /// A copy of `log[from..to]` (clamped).
    pub(crate) fn entries(&self, key: u64, from: u64, to: u64) -> Vec<Entry> {
        self.read(key, |l| {
            l.map_or_else(Vec::new, |l| {
                let to = (to as usize).min(l.entries.len());
                let from = (from as usize).min(to);
                l.entries[from..to].to_vec()
            })
        })
    }

    /// The latest logged state of an item, if the log mentions it (sharing markers skipped).
    pub(crate) fn latest(&self, key: u64, item_id: &str) -> Option<Entry> {
        self.read(key, |l| {
            l?.entries
                .iter()
                .rev()
                .find(|e| e.id() == item_id && !matches!(e, Entry::Shared { .. }))
                .cloned()
        })
    }

    /// Appends a change; returns the new version.
    pub(crate) fn append(&self, key: u64, entry: Entry) -> u64 {
        self.with(key, |l| {
            l.entries.push(entry);
            l.entries.len() as u64
        })
    }

    /// Allocates the next ordinal for a new item, given the generated item count.
    pub(crate) fn allocate(&self, key: u64, generated: usize) -> usize {
        self.with(key, |l| {
            l.allocated += 1;
            generated + l.allocated - 1
        })
    }
}

/// Latest state per item, in order of first appearance in `entries` — what a delta round over
/// these entries reports ("the latest state for each item, not each change",
/// <https://learn.microsoft.com/en-us/graph/api/driveitem-delta#remarks>).
/// Sharing markers are skipped ([`shared_ids`] lists them).
pub(crate) fn latest_per_item(entries: &[Entry]) -> Vec<Entry> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<Entry> = Vec::new();
    for e in entries.iter().filter(|e| !matches!(e, Entry::Shared { .. })) {
        match index.get(e.id()) {
            Some(&i) => out[i] = e.clone(),
            None => {
                index.insert(e.id(), out.len());
                out.push(e.clone());
            }
        }
    }
    out
}

/// Ids of the items with a sharing marker in `entries`, in order of first appearance.
pub(crate) fn shared_ids(entries: &[Entry]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Shared { id, .. } if seen.insert(id.as_str()) => Some(id.clone()),
            _ => None,
        })
        .collect()
}
