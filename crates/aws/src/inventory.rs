//! [`InventoryStore`] over the DynamoDB inventory table: one item per drive item, keyed by
//! `drive_id` (partition) and `item_id` (sort), every [`InventoryRow`] field a top-level
//! attribute (timestamps as RFC 3339 UTC strings, `created_by`/`modified_by` as maps).
//!
//! [`InventoryHashes`]: an item's hash outcome is a sibling item in the drive's partition with
//! sort key `~hash#{item_id}` ([`HASH_PREFIX`]) and the attributes `md5`, `sha256`,
//! `hash_ctag`, `hashed_size`, `modified_at`, `hashed_at` (hashed) or `hash_unavailable` (why
//! there is no digest). index-drive replaces whole rows with BatchWriteItem, so a hash kept on
//! the row would be erased by the next index round; apart, neither write overwrites the other
//! whatever their order. `~` sorts after every character of a Graph item id, so the rows of a
//! drive are exactly its sort keys below [`SIBLING_BOUND`]: every query of a drive's rows here
//! has the key condition `item_id < "~"` and never reads a sibling. Deleting rows deletes their
//! siblings too. An item's sharing state is another sibling, `~share#{item_id}`
//! (`crate::sharing`).
//!
//! [`ItemIdentities`]: a file with a list item unique id has a sibling `~uid#{uid}`
//! ([`UID_PREFIX`]) naming its item (`of_item`), `path` and `connection`, rewritten with every
//! row write, so a rename or move keeps it current. Deleting the row turns it into a tombstone
//! (`deleted_at`, and `expires_at` [`TOMBSTONE_DAYS`] later for the table's TTL): audit records
//! of a file deleted or moved before they were ingested still find it by one BatchGetItem per
//! 100 ids. An event stored without its item waits as `~pending#{uid}#{event key}`
//! ([`PENDING_PREFIX`], `connection`, `since`, `expires_at`), read by one Query per index round.
//! Folders have no `~uid#` sibling: their events are placed by path.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use filetrail_core::events::{FileHashes, HashOutcome};
use filetrail_core::model::{InventoryRow, KnownItem, PENDING_ITEM_DAYS, PendingItem, TOMBSTONE_DAYS, UserRef};
use filetrail_core::ports::{InventoryHashes, InventoryStore, ItemIdentities, PortResult};

use crate::config::INVENTORY_TABLE_VAR;
use crate::dynamo::{Fields, Item, Table, delete_request, n, projection_of, put_opt, put_request, s, ts};
use crate::error::AwsError;

/// Partition key attribute of the inventory table.
pub const DRIVE_ID: &str = "drive_id";
/// Sort key attribute of the inventory table.
pub const ITEM_ID: &str = "item_id";
/// Sort key prefix of an item's hash sibling: `~hash#{item_id}`.
pub const HASH_PREFIX: &str = "~hash#";
/// Row sort keys are below this bound, hash siblings at or above it.
pub const SIBLING_BOUND: &str = "~";
/// Sort key prefix of a file's identity sibling: `~uid#{list item unique id}`.
pub const UID_PREFIX: &str = "~uid#";
/// Sort key prefix of an event waiting for its item: `~pending#{uid}#{event key}`.
pub const PENDING_PREFIX: &str = "~pending#";

/// An inventory row with the hash outcome recorded for its item merged in: `md5`/`sha256` set
/// and `hash_unavailable` cleared when hashed, `hash_unavailable` set to the reason otherwise.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowWithHash {
    pub row: InventoryRow,
    /// The outcome as recorded (with the cTag and size hashed), `None` when never recorded.
    pub hash: Option<HashOutcome>,
}

/// The DynamoDB inventory table behind [`InventoryStore`].
#[derive(Debug)]
pub struct DynamoInventoryStore {
    pub(crate) table: Table,
}

impl DynamoInventoryStore {
    /// A store over `table` (named by `FILETRAIL_INVENTORY_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, INVENTORY_TABLE_VAR),
        }
    }

    crate::dynamo::table_accessors!();

    /// One row by drive and item (strongly consistent), `None` when absent.
    pub async fn row(&self, drive_id: &str, item_id: &str) -> PortResult<Option<InventoryRow>> {
        let item = self.table.get(row_key(drive_id, item_id)).await?;
        Ok(item.map(|i| self.decode_row(&i)).transpose()?)
    }

    /// Up to `limit` rows of one drive in item id order, starting after `after` (an item id from a
    /// previous call), with the hashes recorded for their files merged in. A Query on the
    /// drive's rows (never a scan, never the hash siblings), then one BatchGetItem of the
    /// page's siblings.
    pub async fn list(&self, drive_id: &str, after: Option<&str>, limit: i32) -> PortResult<Vec<InventoryRow>> {
        let rows = self.list_rows(drive_id, after, limit).await?;
        self.merge_hashes(drive_id, rows).await
    }

    /// One row merged with its hash outcome (see [`RowWithHash`]), `None` when the item has no
    /// row: one BatchGetItem of the row and its sibling (strongly consistent).
    pub async fn row_with_hash(&self, drive_id: &str, item_id: &str) -> PortResult<Option<RowWithHash>> {
        let items = self
            .table
            .batch_get(vec![row_key(drive_id, item_id), hash_key(drive_id, item_id)], None)
            .await?;
        let mut row = None;
        let mut hash = None;
        for item in &items {
            let f = self.table.fields(item, row_label(item));
            if f.s(ITEM_ID)?.starts_with(HASH_PREFIX) {
                hash = Some(self.decode_hash(item)?);
            } else {
                row = Some(self.decode_row(item)?);
            }
        }
        Ok(row.map(|row| RowWithHash {
            row: merged(row, hash.as_ref()),
            hash,
        }))
    }

    /// The rows of one page, siblings excluded by the key condition.
    async fn list_rows(&self, drive_id: &str, after: Option<&str>, limit: i32) -> PortResult<Vec<InventoryRow>> {
        self.table.counts.read();
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .key_condition_expression("#d = :d AND #i < :sibling")
            .expression_attribute_names("#d", DRIVE_ID)
            .expression_attribute_names("#i", ITEM_ID)
            .expression_attribute_values(":d", s(drive_id))
            .expression_attribute_values(":sibling", s(SIBLING_BOUND))
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

    /// `rows` with the hash outcomes recorded for their files (one BatchGetItem per 100 files).
    async fn merge_hashes(&self, drive_id: &str, rows: Vec<InventoryRow>) -> PortResult<Vec<InventoryRow>> {
        let files: Vec<String> = rows
            .iter()
            .filter(|r| !r.is_folder)
            .map(|r| r.item_id.clone())
            .collect();
        let outcomes = self.hash_outcomes(drive_id, &files).await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let outcome = outcomes.get(&r.item_id);
                merged(r, outcome)
            })
            .collect())
    }

    /// The outcomes recorded for `item_ids`, by item id (BatchGetItem of the siblings).
    async fn hash_outcomes(&self, drive_id: &str, item_ids: &[String]) -> PortResult<HashMap<String, HashOutcome>> {
        let mut seen = HashSet::new();
        let keys: Vec<Item> = item_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| hash_key(drive_id, id))
            .collect();
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let items = self.table.batch_get(keys, None).await?;
        let mut outcomes = HashMap::with_capacity(items.len());
        for item in &items {
            let f = self.table.fields(item, row_label(item));
            let sk = f.s(ITEM_ID)?;
            if let Some(id) = sk.strip_prefix(HASH_PREFIX) {
                outcomes.insert(id.to_owned(), self.decode_hash(item)?);
            }
        }
        Ok(outcomes)
    }

    fn decode_hash(&self, item: &Item) -> Result<HashOutcome, AwsError> {
        let f = self.table.fields(item, row_label(item));
        if let Some(reason) = f.opt_s("hash_unavailable")? {
            return Ok(HashOutcome::Unavailable { reason });
        }
        Ok(HashOutcome::Hashed(FileHashes {
            md5: f.s("md5")?,
            sha256: f.s("sha256")?,
            ctag: f.s("hash_ctag")?,
            size: f.n("hashed_size")?,
            modified_at: f.opt_time("modified_at")?,
            hashed_at: f.time("hashed_at")?,
            version: f.opt_s("hashed_version")?,
        }))
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
            list_item_uid: f.opt_s("list_item_uid")?,
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

    /// Puts the tombstones of the files among `rows` (items projecting `item_id`, `path`,
    /// `is_folder`, `list_item_uid`, `connection`), then deletes the rows and their siblings.
    /// A crash between the two leaves the rows, which a retry deletes with their tombstones.
    async fn bury(&self, drive_id: &str, rows: &[Item], at: DateTime<Utc>) -> Result<u64, AwsError> {
        let mut tombstones = Vec::new();
        let mut keys = Vec::with_capacity(rows.len() * 3);
        for item in rows {
            let f = self.table.fields(item, row_label(item));
            let item_id = f.s(ITEM_ID)?;
            if let Some(uid) = f.opt_s("list_item_uid")?
                && f.opt_bool("is_folder")? != Some(true)
            {
                let mut stone = uid_item(
                    drive_id,
                    &uid,
                    &item_id,
                    &f.s("path")?,
                    &f.opt_s("connection")?.unwrap_or_default(),
                );
                stone.insert("deleted_at".into(), ts(&at));
                stone.insert(
                    "expires_at".into(),
                    n((at + chrono::Duration::days(TOMBSTONE_DAYS)).timestamp().max(0) as u64),
                );
                tombstones.push(put_request(stone)?);
            }
            keys.extend([
                row_key(drive_id, &item_id),
                hash_key(drive_id, &item_id),
                crate::sharing::share_key(drive_id, &item_id),
            ]);
        }
        self.table.batch_write(tombstones).await?;
        self.delete_keys(keys).await?;
        Ok(rows.len() as u64)
    }
}

/// The attributes [`DynamoInventoryStore::bury`] reads of a row.
const BURY_PROJECTION: &[&str] = &[ITEM_ID, "path", "is_folder", "list_item_uid", "connection"];

/// A file's identity sibling: where the item with this list item unique id is.
fn uid_item(drive_id: &str, uid: &str, item_id: &str, path: &str, connection: &str) -> Item {
    let mut item = row_key(drive_id, &format!("{UID_PREFIX}{uid}"));
    item.insert("of_item".into(), s(item_id));
    item.insert("path".into(), s(path));
    if !connection.is_empty() {
        item.insert("connection".into(), s(connection));
    }
    item
}

fn pending_key(drive_id: &str, p: &PendingItem) -> Item {
    row_key(drive_id, &format!("{PENDING_PREFIX}{}#{}", p.uid, p.event_key))
}

fn row_key(drive_id: &str, item_id: &str) -> Item {
    HashMap::from([(DRIVE_ID.to_owned(), s(drive_id)), (ITEM_ID.to_owned(), s(item_id))])
}

/// The key of an item's hash sibling.
pub(crate) fn row_key_of(drive_id: &str, item_id: &str) -> Item {
    row_key(drive_id, item_id)
}

fn hash_key(drive_id: &str, item_id: &str) -> Item {
    row_key(drive_id, &format!("{HASH_PREFIX}{item_id}"))
}

/// The sibling item recording `outcome` for an item.
fn hash_item(connection: &str, drive_id: &str, item_id: &str, outcome: &HashOutcome) -> Item {
    let mut item = hash_key(drive_id, item_id);
    item.insert("connection".into(), s(connection));
    item.insert("recorded_at".into(), ts(&Utc::now()));
    match outcome {
        HashOutcome::Hashed(h) => {
            item.insert("md5".into(), s(h.md5.to_lowercase()));
            item.insert("sha256".into(), s(h.sha256.to_lowercase()));
            item.insert("hash_ctag".into(), s(&h.ctag));
            item.insert("hashed_size".into(), n(h.size));
            put_opt(&mut item, "modified_at", h.modified_at.as_ref().map(ts));
            item.insert("hashed_at".into(), ts(&h.hashed_at));
            put_opt(&mut item, "hashed_version", h.version.as_deref().map(s));
        }
        HashOutcome::Unavailable { reason } => {
            item.insert("hash_unavailable".into(), s(reason));
        }
    }
    item
}

/// `row` with `outcome` merged into its hash fields (unchanged when there is none).
fn merged(mut row: InventoryRow, outcome: Option<&HashOutcome>) -> InventoryRow {
    match outcome {
        Some(HashOutcome::Hashed(h)) => {
            row.md5 = Some(h.md5.clone());
            row.sha256 = Some(h.sha256.clone());
            row.hash_unavailable = None;
        }
        Some(HashOutcome::Unavailable { reason }) => {
            row.md5 = None;
            row.sha256 = None;
            row.hash_unavailable = Some(reason.clone());
        }
        None => {}
    }
    row
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
    put_opt(&mut item, "list_item_uid", row.list_item_uid.as_deref().map(s));
    put_opt(&mut item, "md5", row.md5.as_deref().map(s));
    put_opt(&mut item, "sha256", row.sha256.as_deref().map(s));
    put_opt(&mut item, "hash_unavailable", row.hash_unavailable.as_deref().map(s));
    item
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
        let mut requests = Vec::with_capacity(unique.len() * 2);
        for row in unique.into_values() {
            requests.push(put_request(row_item(row))?);
            if let Some(uid) = row.list_item_uid.as_deref().filter(|_| !row.is_folder) {
                requests.push(put_request(uid_item(
                    &row.drive_id,
                    uid,
                    &row.item_id,
                    &row.path,
                    &row.connection,
                ))?);
            }
        }
        Ok(self.table.batch_write(requests).await?)
    }

    /// BatchGetItem of the rows (100 per call), then BatchWriteItem of the files' tombstones
    /// and deletes of the rows and their siblings, 25 per call.
    async fn delete_rows(&self, drive_id: &str, item_ids: &[String], at: DateTime<Utc>) -> PortResult<()> {
        let unique: HashSet<&str> = item_ids.iter().map(String::as_str).collect();
        let keys = unique.into_iter().map(|id| row_key(drive_id, id)).collect();
        let rows = self.table.batch_get(keys, Some(BURY_PROJECTION)).await?;
        self.bury(drive_id, &rows, at).await?;
        Ok(())
    }

    /// Queries of the drive's rows (below the siblings' `~` keys), projecting `is_folder`, all
    /// pages (strongly consistent): a read unit per 4 KB of rows, about 8 rows, once per index
    /// round.
    async fn count_rows(&self, drive_id: &str) -> PortResult<(u64, u64)> {
        let (projection, mut names) = projection_of(&["is_folder"]);
        names.insert("#d".into(), DRIVE_ID.into());
        names.insert("#item_id".into(), ITEM_ID.into());
        let request = self
            .table
            .query()
            .key_condition_expression("#d = :d AND #item_id < :sibling")
            .projection_expression(&projection)
            .set_expression_attribute_names(Some(names))
            .expression_attribute_values(":d", s(drive_id))
            .expression_attribute_values(":sibling", s(SIBLING_BOUND))
            .consistent_read(true);
        let (mut files, mut folders) = (0u64, 0u64);
        for item in self.table.query_all(request).await? {
            if matches!(item.get("is_folder"), Some(AttributeValue::Bool(true))) {
                folders += 1;
            } else {
                files += 1;
            }
        }
        Ok((files, folders))
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

    /// Queries the drive's rows page by page (projecting what a tombstone needs, filtering on
    /// `generation < generation`; hash siblings are outside the key condition) and
    /// buries each page's rows (tombstones, then deletes) before reading the next, so memory
    /// stays bounded. Returns the number of rows deleted. Safe to repeat.
    async fn delete_older_than(&self, drive_id: &str, generation: u64, at: DateTime<Utc>) -> PortResult<u64> {
        let (projection, mut names) = projection_of(BURY_PROJECTION);
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
                .key_condition_expression("#d = :d AND #item_id < :sibling")
                .filter_expression("#g < :g")
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .expression_attribute_values(":d", s(drive_id))
                .expression_attribute_values(":sibling", s(SIBLING_BOUND))
                .expression_attribute_values(":g", n(generation))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.table.err("Query", e))?;
            deleted += self.bury(drive_id, out.items(), at).await?;
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(deleted);
            }
        }
    }
}

#[async_trait]
impl InventoryHashes for DynamoInventoryStore {
    /// One BatchGetItem (100 keys per call, strongly consistent) of the hash siblings: the
    /// items hashed, in the order of `item_ids`. A sibling counts without its row: hash-file
    /// may hash a new upload before an index round writes the row, and its cTag says which
    /// version the digests are of (a deleted item's sibling goes with its row).
    async fn file_hashes(&self, drive_id: &str, item_ids: &[String]) -> PortResult<Vec<(String, FileHashes)>> {
        let mut seen = HashSet::new();
        let keys: Vec<Item> = item_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| hash_key(drive_id, id))
            .collect();
        let items = self
            .table
            .batch_get(
                keys,
                Some(&[
                    ITEM_ID,
                    "md5",
                    "sha256",
                    "hash_ctag",
                    "hashed_size",
                    "modified_at",
                    "hashed_at",
                    "hash_unavailable",
                ]),
            )
            .await?;
        let mut hashes = HashMap::new();
        for item in &items {
            let sk = self.table.fields(item, row_label(item)).s(ITEM_ID)?;
            if let Some(id) = sk.strip_prefix(HASH_PREFIX)
                && let HashOutcome::Hashed(h) = self.decode_hash(item)?
            {
                hashes.insert(id.to_owned(), h);
            }
        }
        let mut seen = HashSet::new();
        Ok(item_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| hashes.remove(id).map(|h| (id.clone(), h)))
            .collect())
    }

    /// One PutItem of the item's sibling, replacing the outcome recorded before (last writer
    /// wins). Never touches the row, so an index round and a hash recorded in either order keep
    /// both.
    async fn set_file_hash(
        &self,
        connection: &str,
        drive_id: &str,
        item_id: &str,
        outcome: &HashOutcome,
    ) -> PortResult<()> {
        Ok(self
            .table
            .put(hash_item(connection, drive_id, item_id, outcome))
            .await?)
    }
}

#[async_trait]
impl ItemIdentities for DynamoInventoryStore {
    /// BatchGetItem of the `~uid#` siblings, 100 per call (strongly consistent).
    async fn items_by_uid(&self, drive_id: &str, uids: &[String]) -> PortResult<Vec<KnownItem>> {
        let mut seen = HashSet::new();
        let keys = uids
            .iter()
            .filter(|u| seen.insert(u.as_str()))
            .map(|u| row_key(drive_id, &format!("{UID_PREFIX}{u}")))
            .collect();
        let items = self.table.batch_get(keys, None).await?;
        let mut known = Vec::with_capacity(items.len());
        for item in &items {
            let f = self.table.fields(item, row_label(item));
            let key = f.s(ITEM_ID)?;
            known.push(KnownItem {
                uid: key.trim_start_matches(UID_PREFIX).to_owned(),
                item_id: f.s("of_item")?,
                path: f.s("path")?,
                deleted_at: f.opt_time("deleted_at")?,
            });
        }
        Ok(known)
    }

    /// BatchWriteItem puts, 25 per call; a second write of an entry renews it.
    async fn add_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()> {
        let mut requests = Vec::with_capacity(pending.len());
        let mut seen = HashSet::new();
        for p in pending
            .iter()
            .filter(|p| seen.insert((p.uid.as_str(), p.event_key.as_str())))
        {
            let mut item = pending_key(drive_id, p);
            item.insert("connection".into(), s(&p.connection));
            item.insert("since".into(), ts(&p.since));
            item.insert(
                "expires_at".into(),
                n((p.since + chrono::Duration::days(PENDING_ITEM_DAYS)).timestamp().max(0) as u64),
            );
            requests.push(put_request(item)?);
        }
        Ok(self.table.batch_write(requests).await?)
    }

    /// A Query of the drive's `~pending#` keys, all pages (strongly consistent).
    async fn pending(&self, drive_id: &str) -> PortResult<Vec<PendingItem>> {
        let request = self
            .table
            .query()
            .key_condition_expression("#d = :d AND begins_with(#item_id, :p)")
            .expression_attribute_names("#d", DRIVE_ID)
            .expression_attribute_names("#item_id", ITEM_ID)
            .expression_attribute_values(":d", s(drive_id))
            .expression_attribute_values(":p", s(PENDING_PREFIX))
            .consistent_read(true);
        let mut pending = Vec::new();
        for item in self.table.query_all(request).await? {
            let f = self.table.fields(&item, row_label(&item));
            let key = f.s(ITEM_ID)?;
            let rest = key.trim_start_matches(PENDING_PREFIX);
            let Some((uid, event_key)) = rest.split_once('#') else {
                return Err(self
                    .table
                    .malformed(row_label(&item), "a pending key without its event key")
                    .into());
            };
            pending.push(PendingItem {
                uid: uid.to_owned(),
                event_key: event_key.to_owned(),
                connection: f.s("connection")?,
                since: f.time("since")?,
            });
        }
        Ok(pending)
    }

    /// BatchWriteItem deletes, 25 per call.
    async fn remove_pending(&self, drive_id: &str, pending: &[PendingItem]) -> PortResult<()> {
        Ok(self
            .delete_keys(pending.iter().map(|p| pending_key(drive_id, p)).collect())
            .await?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn absent_optional_fields_are_absent_attributes() {
        let row = InventoryRow {
            list_item_uid: None,
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
