//! A small, bounded cache of generated drive trees.
//!
//! Generating a tree costs O(items), and a delta round over a drive of N items asks for it once
//! per page, so without a cache a 100,000-file drive costs O(N²) to enumerate (≈ 370 ms per page
//! measured). Only big trees are cached, few of them, under a total item budget, so memory stays
//! bounded whatever the tenant size; small drives are simply regenerated.

use std::sync::{Arc, Mutex};

use crate::tenant::{DriveRef, DriveTree, Tenant};

/// Trees smaller than this are regenerated each time (cheap: well under a millisecond).
const MIN_CACHED_ITEMS: usize = 2_000;
/// At most this many trees are kept.
const MAX_TREES: usize = 8;
/// At most this many items in all kept trees (≈ 120 bytes each → ≈ 60 MB worst case).
const MAX_ITEMS: usize = 500_000;

/// Most recently used first.
#[derive(Debug, Default)]
pub(crate) struct TreeCache {
    entries: Mutex<Vec<(u64, Arc<DriveTree>)>>,
}

impl TreeCache {
    /// The generated tree of `drive`, from the cache when present.
    pub(crate) fn get(&self, tenant: &Tenant, drive: DriveRef) -> Arc<DriveTree> {
        let key = drive.key();
        {
            let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(pos) = entries.iter().position(|(k, _)| *k == key) {
                let hit = entries.remove(pos);
                let tree = Arc::clone(&hit.1);
                entries.insert(0, hit);
                return tree;
            }
        }
        // Built outside the lock: concurrent misses on the same drive may both build; harmless.
        let tree = Arc::new(DriveTree::build(tenant, drive));
        if tree.len() >= MIN_CACHED_ITEMS && tree.len() <= MAX_ITEMS {
            let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !entries.iter().any(|(k, _)| *k == key) {
                entries.insert(0, (key, Arc::clone(&tree)));
            }
            while entries.len() > MAX_TREES || entries.iter().map(|(_, t)| t.len()).sum::<usize>() > MAX_ITEMS {
                entries.pop();
            }
        }
        tree
    }
}
