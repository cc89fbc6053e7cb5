//! [`InventoryStore`] over the DynamoDB inventory table: one item per drive item, keyed by
//! `drive_id` (partition) and `item_id` (sort), every [`InventoryRow`] field a top-level
//! attribute (timestamps as RFC 3339 UTC strings, `created_by`/`modified_by` as maps).

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use filetrail_core::model::{InventoryRow, UserRef};
use filetrail_core::ports::{InventoryStore, PortResult};

use crate::config::INVENTORY_TABLE_VAR;
use crate::dynamo::{Fields, Item, RequestCounts, Table, n, projection_of, put_opt, s, ts};
use crate::error::AwsError;

/// Partition key attribute of the inventory table.
pub const DRIVE_ID: &str = "drive_id";
/// Sort key attribute of the inventory table.
pub const ITEM_ID: &str = "item_id";

/// The DynamoDB inventory table behind [`InventoryStore`].
#[derive(Debug)]
pub struct DynamoInventoryStore {
    table: Table,
}

impl DynamoInventoryStore {
    /// A store over `table` (named by `FILETRAIL_INVENTORY_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, INVENTORY_TABLE_VAR),
        }
    }

    pub fn table_name(&self) -> &str {
        &self.table.name
    }

    /// DynamoDB write calls issued so far (each BatchWriteItem of up to 25 rows counts once).
    pub fn write_requests(&self) -> u64 {
        self.table.counts.writes()
    }

    /// DynamoDB read calls issued so far.
    pub fn read_requests(&self) -> u64 {
        self.table.counts.reads()
    }

    /// Both counters.
    pub fn request_counts(&self) -> &RequestCounts {
        &self.table.counts
    }

    /// One row by drive and item (strongly consistent), `None` when absent.
    pub async fn row(&self, drive_id: &str, item_id: &str) -> PortResult<Option<InventoryRow>> {
        self.table.counts.read();
        let out = self
            .table
            .client
            .get_item()
            .table_name(&self.table.name)
            .set_key(Some(row_key(drive_id, item_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.table.err("GetItem", e))?;
        Ok(out.item.map(|i| self.decode_row(&i)).transpose()?)
    }

    /// Up to `limit` rows of one drive in item id order, starting after `after` (an item id from a
    /// previous call). A Query on the drive's partition, never a scan.
    pub async fn list(&self, drive_id: &str, after: Option<&str>, limit: i32) -> PortResult<Vec<InventoryRow>> {
        self.table.counts.read();
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("#d = :d")
            .expression_attribute_names("#d", DRIVE_ID)
            .expression_attribute_values(":d", s(drive_id))
            .set_exclusive_start_key(after.map(|a| row_key(drive_id, a)))
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|e| self.table.err("Query", e))?;
        Ok(out
            .items()
            .iter()
            .map(|i| self.decode_row(i))
            .collect::<Result<Vec<_>, _>>()?)
    }

    fn decode_row(&self, item: &Item) -> Result<InventoryRow, AwsError> {
        let f = self.table.fields(item, row_label(item));
        Ok(InventoryRow {
            drive_id: f.s(DRIVE_ID)?,
            item_id: f.s(ITEM_ID)?,
            connection: f.s("connection")?,
            name: f.s("name")?,
            path: f.s("path")?,
            parent_id: f.opt_s("parent_id")?,
            is_folder: f.bool("is_folder")?,
            size: f.n("size")?,
            created_at: f.opt_time("created_at")?,
            modified_at: f.opt_time("modified_at")?,
            etag: f.opt_s("etag")?,
            ctag: f.opt_s("ctag")?,
            created_by: self.decode_user(&f, "created_by", item)?,
            modified_by: self.decode_user(&f, "modified_by", item)?,
            mime_type: f.opt_s("mime_type")?,
            md5: f.opt_s("md5")?,
            sha256: f.opt_s("sha256")?,
            hash_unavailable: f.opt_s("hash_unavailable")?,
            generation: f.n("generation")?,
            indexed_at: f.time("indexed_at")?,
        })
    }

    fn decode_user(&self, f: &Fields<'_>, name: &str, item: &Item) -> Result<Option<UserRef>, AwsError> {
        let Some(map) = f.opt_map(name)? else { return Ok(None) };
        let u = self.table.fields(map, format!("{} ({name})", row_label(item)));
        Ok(Some(UserRef {
            id: u.opt_s("id")?,
            display_name: u.opt_s("display_name")?,
            email: u.opt_s("email")?,
        }))
    }

    async fn delete_keys(&self, keys: Vec<Item>) -> Result<(), AwsError> {
        let requests = keys.into_iter().map(delete_request).collect::<Result<Vec<_>, _>>()?;
        self.table.batch_write(requests).await
    }
}

fn row_key(drive_id: &str, item_id: &str) -> Item {
    HashMap::from([(DRIVE_ID.to_owned(), s(drive_id)), (ITEM_ID.to_owned(), s(item_id))])
}

fn row_label(item: &Item) -> String {
    let part = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.as_str(),
        _ => "?",
    };
    format!("{}/{}", part(DRIVE_ID), part(ITEM_ID))
}

fn user_attr(user: &UserRef) -> AttributeValue {
    let mut map = Item::new();
    put_opt(&mut map, "id", user.id.as_deref().map(s));
    put_opt(&mut map, "display_name", user.display_name.as_deref().map(s));
    put_opt(&mut map, "email", user.email.as_deref().map(s));
    AttributeValue::M(map)
}

/// The item of a row; absent optional fields are absent attributes.
fn row_item(row: &InventoryRow) -> Item {
    let mut item = row_key(&row.drive_id, &row.item_id);
    item.insert("connection".into(), s(&row.connection));
    item.insert("name".into(), s(&row.name));
    item.insert("path".into(), s(&row.path));
    item.insert("is_folder".into(), AttributeValue::Bool(row.is_folder));
    item.insert("size".into(), n(row.size));
    item.insert("generation".into(), n(row.generation));
    item.insert("indexed_at".into(), ts(&row.indexed_at));
    put_opt(&mut item, "parent_id", row.parent_id.as_deref().map(s));
    put_opt(&mut item, "created_at", row.created_at.as_ref().map(ts));
    put_opt(&mut item, "modified_at", row.modified_at.as_ref().map(ts));
    put_opt(&mut item, "etag", row.etag.as_deref().map(s));
    put_opt(&mut item, "ctag", row.ctag.as_deref().map(s));
    put_opt(&mut item, "created_by", row.created_by.as_ref().map(user_attr));
    put_opt(&mut item, "modified_by", row.modified_by.as_ref().map(user_attr));
    put_opt(&mut item, "mime_type", row.mime_type.as_deref().map(s));
    put_opt(&mut item, "md5", row.md5.as_deref().map(s));
    put_opt(&mut item, "sha256", row.sha256.as_deref().map(s));
    put_opt(&mut item, "hash_unavailable", row.hash_unavailable.as_deref().map(s));
    item
}

fn delete_request(key: Item) -> Result<WriteRequest, AwsError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(|e| AwsError::Encode {
            what: "delete request",
            detail: e.to_string(),
        })?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

#[async_trait]
impl InventoryStore for DynamoInventoryStore {
    /// BatchWriteItem puts, 25 rows per call, unprocessed rows re-sent with backoff. A row
    /// listed twice (same drive and item) is written once, with its last version.
    async fn put_rows(&self, rows: &[InventoryRow]) -> PortResult<()> {
        let unique: BTreeMap<(&str, &str), &InventoryRow> = rows
            .iter()
            .map(|r| ((r.drive_id.as_str(), r.item_id.as_str()), r))
            .collect();
        let mut requests = Vec::with_capacity(unique.len());
        for row in unique.into_values() {
            let put = PutRequest::builder()
                .set_item(Some(row_item(row)))
                .build()
                .map_err(|e| AwsError::Encode {
                    what: "put request",
                    detail: e.to_string(),
                })?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        Ok(self.table.batch_write(requests).await?)
    }

    /// BatchWriteItem deletes, 25 per call.
    async fn delete_rows(&self, drive_id: &str, item_ids: &[String]) -> PortResult<()> {
        let unique: HashSet<&str> = item_ids.iter().map(String::as_str).collect();
        Ok(self
            .delete_keys(unique.into_iter().map(|id| row_key(drive_id, id)).collect())
            .await?)
    }

    /// BatchGetItem (100 per call, strongly consistent) projecting `item_id` and `path`; the
    /// result follows the order of `item_ids` and leaves out unknown items.
    async fn paths(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, String)>> {
        let mut seen = HashSet::new();
        let keys = item_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| row_key(drive_id, id))
            .collect();
        let items = self.table.batch_get(keys, Some(&[ITEM_ID, "path"])).await?;
        let mut by_id = HashMap::with_capacity(items.len());
        for item in &items {
            let f = self.table.fields(item, row_label(item));
            by_id.insert(f.s(ITEM_ID)?, f.s("path")?);
        }
        Ok(item_ids
            .iter()
            .filter_map(|id| by_id.remove(id).map(|p| (id.clone(), p)))
            .collect())
    }

    /// Queries the drive's partition page by page (projecting `item_id`, filtering on
    /// `generation < generation`) and batch-deletes each page's rows before reading the next,
    /// so memory stays bounded. Returns the number of rows deleted. Safe to repeat.
    async fn delete_older_than(&self, drive_id: &str, generation: u64) -> PortResult<u64> {
        let (projection, mut names) = projection_of(&[ITEM_ID]);
        names.insert("#d".into(), DRIVE_ID.into());
        names.insert("#g".into(), "generation".into());
        let mut deleted = 0u64;
        let mut start = None;
        loop {
            self.table.counts.read();
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .key_condition_expression("#d = :d")
                .filter_expression("#g < :g")
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .expression_attribute_values(":d", s(drive_id))
                .expression_attribute_values(":g", n(generation))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.table.err("Query", e))?;
            let keys = out
                .items()
                .iter()
                .map(|i| {
                    self.table
                        .fields(i, row_label(i))
                        .s(ITEM_ID)
                        .map(|id| row_key(drive_id, &id))
                })
                .collect::<Result<Vec<_>, _>>()?;
            deleted += keys.len() as u64;
            self.delete_keys(keys).await?;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn absent_optional_fields_are_absent_attributes() {
        let row = InventoryRow {
            drive_id: "b!1".into(),
            item_id: "root".into(),
            connection: "contoso".into(),
            name: "root".into(),
            path: "/".into(),
            parent_id: None,
            is_folder: true,
            size: 0,
            created_at: None,
            modified_at: None,
            etag: None,
            ctag: None,
            created_by: None,
            modified_by: None,
            mime_type: None,
            md5: None,
            sha256: None,
            hash_unavailable: None,
            generation: 1,
            indexed_at: Utc::now(),
        };
        let item = row_item(&row);
        let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "connection",
                "drive_id",
                "generation",
                "indexed_at",
                "is_folder",
                "item_id",
                "name",
                "path",
                "size"
            ]
        );
    }
}
