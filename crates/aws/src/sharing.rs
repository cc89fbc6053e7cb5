//! [`SharingStore`] over the inventory table: an item's sharing state is a sibling item of its
//! row, sort key `~share#{item_id}`, with the state as JSON in `sharing`. Siblings of items
//! shared outside the organisation also carry `exposed_pk` (the connection) and `exposed_sk`
//! (`{drive_id}#{item_id}`), the keys of the sparse `by_exposure` index: the exposure report
//! is one Query of that index, whatever the size of the inventory. Like the hash sibling, the
//! state is never on the row, so index rounds (which replace rows) never erase it, and deleting
//! a row deletes it.

use std::collections::HashSet;

use async_trait::async_trait;
use filetrail_core::exposure::SharingState;
use filetrail_core::ports::{PortResult, SharingStore};

use crate::dynamo::{Item, json, s};
use crate::inventory::{DRIVE_ID, DynamoInventoryStore, ITEM_ID, row_key_of};

/// Sort key prefix of an item's sharing sibling.
pub const SHARE_PREFIX: &str = "~share#";
/// The state as JSON.
pub const SHARING: &str = "sharing";
pub const EXPOSED_PK: &str = "exposed_pk";
pub const EXPOSED_SK: &str = "exposed_sk";
pub const BY_EXPOSURE: &str = "by_exposure";

/// The key of an item's sharing sibling.
pub(crate) fn share_key(drive_id: &str, item_id: &str) -> Item {
    row_key_of(drive_id, &format!("{SHARE_PREFIX}{item_id}"))
}

fn share_item(state: &SharingState) -> Result<Item, crate::AwsError> {
    let mut item = share_key(&state.drive_id, &state.item_id);
    item.insert(SHARING.into(), json("sharing state", state)?);
    if state.is_exposed() {
        item.insert(EXPOSED_PK.into(), s(&state.connection));
        item.insert(EXPOSED_SK.into(), s(format!("{}#{}", state.drive_id, state.item_id)));
    }
    Ok(item)
}

#[async_trait]
impl SharingStore for DynamoInventoryStore {
    /// One BatchGetItem (100 keys per call, strongly consistent) of the siblings.
    async fn sharing(&self, items: &[(String, String)]) -> PortResult<Vec<SharingState>> {
        let mut seen = HashSet::new();
        let keys = (items.iter())
            .filter(|k| seen.insert(*k))
            .map(|(d, i)| share_key(d, i))
            .collect();
        let found = self.table.batch_get(keys, Some(&[DRIVE_ID, ITEM_ID, SHARING])).await?;
        let mut states = Vec::with_capacity(found.len());
        for item in &found {
            states.push(self.table.fields(item, "sharing sibling".to_owned()).json(SHARING)?);
        }
        Ok(states)
    }

    /// One PutItem of the sibling (last writer wins), or one DeleteItem when the item is shared
    /// with no one: the sibling, and so the index entry, exists only for shared items.
    async fn put_sharing(&self, state: &SharingState) -> PortResult<()> {
        if state.grants.is_empty() {
            self.table.delete(share_key(&state.drive_id, &state.item_id)).await?;
        } else {
            self.table.put(share_item(state)?).await?;
        }
        Ok(())
    }

    /// A Query of `by_exposure` (the sparse index), every page; the states come from its
    /// projection.
    async fn exposed(&self, connection: &str) -> PortResult<Vec<SharingState>> {
        let request = self
            .table
            .query()
            .index_name(BY_EXPOSURE)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", EXPOSED_PK)
            .expression_attribute_values(":p", s(connection));
        let items = self.table.query_all(request).await?;
        let label = || format!("{BY_EXPOSURE} {connection}");
        Ok(items
            .iter()
            .map(|item| self.table.fields(item, label()).json(SHARING))
            .collect::<Result<_, _>>()?)
    }
}
