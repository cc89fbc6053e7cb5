//! `filetrail file`: one file's inventory row, its digests and its whole event trail.

use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::inventory::{DynamoInventoryStore, RowWithHash};
use filetrail_core::events::{EventRecord, HashOutcome};
use filetrail_core::hashing::MAX_EVENTS_PER_FILE;
use filetrail_core::ports::{EventStore, StateStore};
use serde::Serialize;

/// What filetrail knows of one drive item.
#[derive(Debug, Clone, Serialize)]
pub struct FileTrail {
    pub drive_id: String,
    pub item_id: String,
    /// The OneDrive's owner, when the drive is known.
    pub owner: Option<String>,
    /// The inventory row with its hash outcome; `None` once the item left the inventory
    /// (deleted) or before indexing reached it.
    pub inventory: Option<RowWithHash>,
    /// Every event of the item, newest first.
    pub events: Vec<EventRecord>,
}

/// Reads the item's row, its hash and its events.
///
/// # Errors
/// A failure of DynamoDB, or an item filetrail knows nothing of (naming how to find ids).
pub async fn trail(
    state: &dyn StateStore,
    inventory: &DynamoInventoryStore,
    events: &DynamoEventStore,
    drive_id: &str,
    item_id: &str,
) -> anyhow::Result<FileTrail> {
    let row = inventory.row_with_hash(drive_id, item_id).await?;
    let found = events.file_events(drive_id, item_id, MAX_EVENTS_PER_FILE).await?;
    if row.is_none() && found.is_empty() {
        anyhow::bail!(
            "no file with drive id {drive_id:?} and item id {item_id:?} in the inventory or the events; \
             `filetrail inventory CONNECTION --json` and `filetrail events CONNECTION --json` show ids"
        );
    }
    Ok(FileTrail {
        owner: state.drive(drive_id).await?.map(|d| d.owner_upn),
        drive_id: drive_id.to_owned(),
        item_id: item_id.to_owned(),
        inventory: row,
        events: found,
    })
}

/// Renders the trail: the file, its digests, then its events as a table.
pub fn render(t: &FileTrail) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let path = t
        .inventory
        .as_ref()
        .map(|r| r.row.path.clone())
        .or_else(|| t.events.iter().find_map(|e| e.event.lookup_path().map(str::to_owned)))
        .unwrap_or_default();
    let _ = writeln!(s, "{path}  (drive {}, item {})", t.drive_id, t.item_id);
    if let Some(owner) = &t.owner {
        let _ = writeln!(s, "  owner     {owner}");
    }
    match &t.inventory {
        Some(RowWithHash { row, hash }) => {
            let _ = writeln!(
                s,
                "  size      {}{}{}",
                crate::inventory::human_size(row.size),
                row.modified_at
                    .map(|m| format!(", modified {}", m.format("%Y-%m-%d %H:%M:%SZ")))
                    .unwrap_or_default(),
                row.ctag.as_deref().map(|c| format!(", cTag {c}")).unwrap_or_default()
            );
            match hash {
                Some(HashOutcome::Hashed(h)) => {
                    let _ = writeln!(s, "  MD5       {}", h.md5);
                    let _ = writeln!(s, "  SHA-256   {}", h.sha256);
                    let _ = writeln!(
                        s,
                        "            hashed {} ({} bytes, cTag {})",
                        h.hashed_at.format("%Y-%m-%d %H:%M:%SZ"),
                        h.size,
                        h.ctag
                    );
                }
                Some(HashOutcome::Unavailable { reason }) => {
                    let _ = writeln!(s, "  hashes    unavailable: {reason}");
                }
                None => {
                    let why = row.hash_unavailable.as_deref().unwrap_or("not hashed yet");
                    let _ = writeln!(s, "  hashes    unavailable: {why}");
                }
            }
        }
        None => s.push_str("  inventory not in the inventory (deleted, or not indexed yet)\n"),
    }
    let _ = writeln!(s, "  events    {} (newest first)", t.events.len());
    if !t.events.is_empty() {
        s.push('\n');
        s.push_str(&crate::events::render(&t.events));
    }
    s
}
