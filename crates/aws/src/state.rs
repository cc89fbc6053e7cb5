//! [`StateStore`] over the DynamoDB state table: connections, drives, users without a OneDrive
//! and discovery checkpoints, in one table with one overloaded GSI; and [`ActivityState`]
//! (audit feed checkpoints, content blobs enqueued and ingested, drives by personal site) in
//! [`activity`].
//!
//! [`ActivityState`]: filetrail_core::ports::ActivityState
//!
//! Layout (template.yaml provisions exactly this):
//!
//! | record | `pk` | `sk` | `gsi1pk` | `gsi1sk` | `gsi2pk` |
//! |---|---|---|---|---|---|
//! | connection | `CONN#{id}` | `META` | `CONNECTIONS` | `{id}` | – |
//! | drive | `DRIVE#{drive_id}` | `META` | `CONN#{connection}#DRIVE#{state}` | `{drive_id}` | `SITE#{connection}#{site_key}` (drives with a personal site web URL) |
//! | user without OneDrive | `NODRIVE#{connection}#{user_id}` | `META` | `CONN#{connection}#NODRIVE` | `{user_id}` | – |
//! | discovery checkpoint | `CONN#{id}` | `DISCOVERY` | – | – | – |
//! | scope in force | `CONN#{id}` | `SCOPE` | – | – | – |
//! | latest scope upload result | `CONN#{id}` | `SCOPE#UPLOAD` | – | – | – |
//! | what a discovery run saw on a page | `CONN#{id}` | `RUN#{run_id}#{page:010}` | – | – | – |
//! | audit feed checkpoint of a content type | `CONN#{id}` | `ACTIVITY#{content_type}` | – | – | – |
//! | content blob enqueued | `CONN#{id}` | `BLOB#{content_id}` | – | – | – |
//! | what ingesting a content blob produced | `CONN#{id}` | `INGESTED#{content_id}` | – | – | – |
//! | a content blob parked until discovery places its records | `CONN#{id}` | `PARKED#{content_id}` | – | – | – |
//! | the lease of one file version's download ([`activity`]) | `CONN#{id}` | `HASHLEASE#{drive}#{item}#{ctag}` | – | – | – |
//! | export checkpoint ([`crate::export_store`]) | `CONN#{id}` | `EXPORT` | – | – | – |
//!
//! Run pages carry `expires_at` (the table's TTL attribute): a run is deleted when it finishes,
//! and an abandoned one expires after [`RUN_PAGE_TTL_DAYS`] days. Blob markers expire at the
//! `keep_until` poll gives (past the feed's retention), ingest records after
//! [`activity::INGESTED_TTL_DAYS`] days.
//!
//! `gsi2` (keys only) finds drives by the personal site key of their web URL
//! (`alice_contoso_com`, [`filetrail_core::audit::location::personal_site_key`] of the
//! percent-decoded URL): audit records name the site, not the drive. A drive recorded before
//! `gsi2pk` existed is not found there until it is inserted again.
//!
//! A drive belongs to the connection that recorded it first (the insert is conditional on the
//! key not existing) and every later write of it is conditional on `connection` being the one
//! the caller acts for: drive ids are unique across Microsoft 365, and with the tenant
//! normalised to its id and one connection per kind, no run of one connection changes
//! another's drive even if the same OneDrive is listed to both.
//!
//! `gsi1` projects the keys plus `owner_upn` and `state`. A connection is stored as a JSON `doc`
//! with `last_error` and `last_discovery` as separate JSON attributes, so status updates are a
//! single UpdateItem. A drive's fields and its [`IndexProgress`] are top-level attributes, so a
//! checkpoint save is one conditional UpdateItem that also moves the drive between GSI partitions.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use filetrail_core::PortError;
use filetrail_core::model::{
    Connection, ConnectionError, DirectoryUser, DiscoverySummary, DriveRecord, DriveState, IndexProgress,
};
use filetrail_core::ports::{
    CheckpointVersion, ConnectionStore, DiscoveryCheckpoint, DiscoveryRunStore, DriveStore, PortResult, RunPage,
    RunSeen, ScopeStore,
};
use filetrail_core::scope::{Scope, ScopeUploadResult};
use futures_util::{StreamExt, stream};

use crate::config::STATE_TABLE_VAR;
use crate::dynamo::{
    Item, Table, Update, decode_cursor, delete_request, encode_cursor, json, key, n, put_opt, put_request, s, ts,
};
use crate::error::AwsError;

pub mod activity;

pub use filetrail_core::activity::BlobTotals;

/// Partition key attribute of the state table.
pub const PK: &str = "pk";
/// Sort key attribute of the state table.
pub const SK: &str = "sk";
/// The overloaded global secondary index.
pub const GSI1: &str = "gsi1";
/// Partition key attribute of [`GSI1`].
pub const GSI1_PK: &str = "gsi1pk";
/// Sort key attribute of [`GSI1`].
pub const GSI1_SK: &str = "gsi1sk";
/// Non-key attributes [`GSI1`] projects (projection type INCLUDE).
pub const GSI1_INCLUDED: [&str; 2] = ["owner_upn", "state"];
/// Drives by personal site key (projection KEYS_ONLY, no sort key).
pub const GSI2: &str = "gsi2";
/// Partition key attribute of [`GSI2`].
pub const GSI2_PK: &str = "gsi2pk";

const META: &str = "META";
const DISCOVERY: &str = "DISCOVERY";
const CONNECTIONS: &str = "CONNECTIONS";
const SCOPE: &str = "SCOPE";
const SCOPE_UPLOAD: &str = "SCOPE#UPLOAD";
/// The state table's TTL attribute (template.yaml `TimeToLiveSpecification`).
pub const EXPIRES_AT: &str = "expires_at";
/// How long an abandoned discovery run's page records are kept.
pub const RUN_PAGE_TTL_DAYS: i64 = 7;

fn run_prefix(run_id: &str) -> String {
    format!("RUN#{run_id}#")
}

/// Drive ids per page of [`DriveStore::drive_ids_in_state`] (a Query page also stops at 1 MB;
/// 1,000 keys of ~150 bytes stay far below).
pub const DRIVE_IDS_PAGE: i32 = 1000;
/// Conditional PutItems in flight while inserting drives: enough to hide round trips, far below
/// the per-partition limit of 1,000 WCU/s (DynamoDB Developer Guide, "Partition key design").
pub const INSERT_CONCURRENCY: usize = 16;

/// The attributes of [`IndexProgress`], stored top-level on a drive item.
const PROGRESS_NUMBERS: [&str; 8] = [
    "generation",
    "pages",
    "items",
    "files",
    "folders",
    "bytes",
    "deleted",
    "resyncs",
];

fn millis(t: &chrono::DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or_default()
}

fn conn_pk(id: &str) -> String {
    format!("CONN#{id}")
}

fn drive_pk(drive_id: &str) -> String {
    format!("DRIVE#{drive_id}")
}

fn drive_gsi1pk(connection: &str, state: DriveState) -> String {
    format!("CONN#{connection}#DRIVE#{}", state.as_str())
}

fn nodrive_pk(connection: &str, user_id: &str) -> String {
    format!("NODRIVE#{connection}#{user_id}")
}

fn nodrive_gsi1pk(connection: &str) -> String {
    format!("CONN#{connection}#NODRIVE")
}

/// The DynamoDB state table behind [`StateStore`].
#[derive(Debug)]
pub struct DynamoStateStore {
    table: Table,
    page_size: i32,
}

impl DynamoStateStore {
    /// A store over `table` (named by `FILETRAIL_STATE_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, STATE_TABLE_VAR),
            page_size: DRIVE_IDS_PAGE,
        }
    }

    /// Pages of [`DriveStore::drive_ids_in_state`] hold at most `ids` ids (default
    /// [`DRIVE_IDS_PAGE`]; at least 1).
    pub fn with_page_size(mut self, ids: i32) -> Self {
        self.page_size = ids.max(1);
        self
    }

    crate::dynamo::table_accessors!();

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, AwsError> {
        self.table.get(key(pk, sk)).await
    }

    /// One page of the sort keys under `partition` of `gsi1` (a key-only Query), and the cursor
    /// of the next page. Backs the id listings of [`StateStore`].
    async fn gsi1_sort_keys(
        &self,
        partition: String,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        let start = cursor.as_deref().map(decode_cursor).transpose()?;
        self.table.counts.read();
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .index_name(GSI1)
            .key_condition_expression("#k = :k")
            .projection_expression("#sk")
            .expression_attribute_names("#k", GSI1_PK)
            .expression_attribute_names("#sk", GSI1_SK)
            .expression_attribute_values(":k", s(partition))
            .limit(self.page_size)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| self.table.err("Query", e))?;
        let ids = out
            .items()
            .iter()
            .map(|i| self.table.fields(i, item_key(i)).s(GSI1_SK))
            .collect::<Result<Vec<_>, _>>()?;
        let next = out
            .last_evaluated_key
            .as_ref()
            .map(|k| encode_cursor(&self.table, k))
            .transpose()?;
        Ok((ids, next))
    }

    async fn put(&self, item: Item) -> Result<(), AwsError> {
        self.table.put(item).await
    }

    /// Puts `item` (a scope or upload record) unless the stored one has a later `uploaded_ms`.
    /// Returns whether it was written.
    async fn put_if_not_older(&self, mut item: Item, uploaded_ms: u64) -> Result<bool, AwsError> {
        item.insert("uploaded_ms".into(), n(uploaded_ms));
        self.table
            .put_if(
                item,
                "attribute_not_exists(#pk) OR #t <= :t",
                &[("#pk", PK), ("#t", "uploaded_ms")],
                vec![(":t", n(uploaded_ms))],
            )
            .await
    }

    /// The items of partition `pk` whose sort key starts with `prefix`, all pages.
    async fn query_prefix(&self, pk: String, prefix: &str) -> Result<Vec<Item>, AwsError> {
        let request = self
            .table
            .query()
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#sk", SK)
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true);
        self.table.query_all(request).await
    }

    /// Applies `update` to the META item of `pk` if `condition` holds. `Ok(false)` when it did
    /// not.
    async fn update_if(&self, pk: String, update: Update, condition: &str) -> Result<bool, AwsError> {
        self.table.update_if(key(pk, META), update, condition).await
    }

    /// Updates an existing connection's META item; fails with [`AwsError::NotFound`] if the
    /// connection is not registered.
    async fn update_connection(&self, id: &str, mut update: Update) -> Result<(), AwsError> {
        let pk = update.name(PK);
        let condition = format!("attribute_exists({pk})");
        if self.update_if(conn_pk(id), update, &condition).await? {
            Ok(())
        } else {
            Err(AwsError::NotFound {
                what: "connection",
                id: id.to_owned(),
                table: self.table.name.clone(),
                fix: "register it first (filetrail connection add)".into(),
            })
        }
    }

    fn decode_connection(&self, item: &Item) -> Result<Connection, AwsError> {
        let f = self.table.fields(item, item_key(item));
        let mut connection: Connection = f.json("doc")?;
        connection.last_error = f.opt_json("last_error")?;
        connection.last_discovery = f.opt_json("last_discovery")?;
        connection.write_app = f.opt_json("write_app")?;
        Ok(connection)
    }

    fn decode_drive(&self, item: &Item) -> Result<DriveRecord, AwsError> {
        let f = self.table.fields(item, item_key(item));
        let state_text = f.s("state")?;
        let state = DriveState::parse(&state_text).ok_or_else(|| {
            self.table
                .malformed(item_key(item), format!("state {state_text:?} is not a drive state"))
        })?;
        let index = IndexProgress {
            generation: f.n("generation")?,
            next_link: f.opt_s("next_link")?,
            delta_link: f.opt_s("delta_link")?,
            pages: f.n("pages")?,
            items: f.n("items")?,
            files: f.n("files")?,
            folders: f.n("folders")?,
            bytes: f.n("bytes")?,
            deleted: f.n("deleted")?,
            resyncs: f.n("resyncs")?,
            reconcile: f.opt_bool("reconcile")?.unwrap_or(false),
            root_id: f.opt_s("root_id")?,
            started_at: f.opt_time("started_at")?,
            completed_at: f.opt_time("completed_at")?,
        };
        let drive = DriveRecord {
            connection: f.s("connection")?,
            drive_id: f.s("drive_id")?,
            owner_id: f.s("owner_id")?,
            owner_upn: f.s("owner_upn")?,
            web_url: f.opt_s("web_url")?,
            state,
            discovered_at: f.time("discovered_at")?,
            index,
            parked: f.opt_s("parked")?,
        };
        Ok(drive)
    }

    /// Inserts one drive unless its id is known; `Some(id)` when inserted.
    async fn insert_drive(&self, drive: &DriveRecord) -> Result<Option<String>, AwsError> {
        let inserted = self
            .table
            .put_if(drive_item(drive), "attribute_not_exists(#pk)", &[("#pk", PK)], vec![])
            .await?;
        Ok(inserted.then(|| drive.drive_id.clone()))
    }
}

/// `pk/sk` of an item, for error messages.
fn item_key(item: &Item) -> String {
    let part = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => v.as_str(),
        _ => "?",
    };
    format!("{}/{}", part(PK), part(SK))
}

fn connection_item(connection: &Connection) -> Result<Item, AwsError> {
    // Fields updated on their own (set_connection_error, set_last_discovery, set_write_app) are
    // attributes beside the document, so such an update never races a whole-record write.
    let doc = Connection {
        last_error: None,
        last_discovery: None,
        write_app: None,
        ..connection.clone()
    };
    let mut item = key(conn_pk(&connection.id), META);
    item.insert(GSI1_PK.into(), s(CONNECTIONS));
    item.insert(GSI1_SK.into(), s(&connection.id));
    item.insert("doc".into(), json("connection", &doc)?);
    put_opt(
        &mut item,
        "last_error",
        connection
            .last_error
            .as_ref()
            .map(|e| json("connection error", e))
            .transpose()?,
    );
    put_opt(
        &mut item,
        "write_app",
        connection
            .write_app
            .as_ref()
            .map(|a| json("write app", a))
            .transpose()?,
    );
    put_opt(
        &mut item,
        "last_discovery",
        connection
            .last_discovery
            .as_ref()
            .map(|d| json("discovery summary", d))
            .transpose()?,
    );
    Ok(item)
}

/// The attributes of an [`IndexProgress`]; `None` values are absent attributes.
fn progress_attrs(p: &IndexProgress) -> Vec<(&'static str, Option<AttributeValue>)> {
    // Destructured so that a new field fails to compile here until it is stored.
    let IndexProgress {
        generation,
        next_link,
        delta_link,
        pages,
        items,
        files,
        folders,
        bytes,
        deleted,
        resyncs,
        reconcile,
        root_id,
        started_at,
        completed_at,
    } = p;
    let numbers = [generation, pages, items, files, folders, bytes, deleted, resyncs];
    let mut attrs: Vec<_> = PROGRESS_NUMBERS
        .iter()
        .zip(numbers)
        .map(|(name, v)| (*name, Some(n(*v))))
        .collect();
    attrs.push(("reconcile", Some(AttributeValue::Bool(*reconcile))));
    attrs.push(("root_id", root_id.as_deref().map(s)));
    attrs.push(("next_link", next_link.as_deref().map(s)));
    attrs.push(("delta_link", delta_link.as_deref().map(s)));
    attrs.push(("started_at", started_at.as_ref().map(ts)));
    attrs.push(("completed_at", completed_at.as_ref().map(ts)));
    attrs
}

fn drive_item(d: &DriveRecord) -> Item {
    let mut item = key(drive_pk(&d.drive_id), META);
    item.insert(GSI1_PK.into(), s(drive_gsi1pk(&d.connection, d.state)));
    item.insert(GSI1_SK.into(), s(&d.drive_id));
    item.insert("drive_id".into(), s(&d.drive_id));
    item.insert("connection".into(), s(&d.connection));
    item.insert("state".into(), s(d.state.as_str()));
    item.insert("owner_id".into(), s(&d.owner_id));
    item.insert("owner_upn".into(), s(&d.owner_upn));
    item.insert("discovered_at".into(), ts(&d.discovered_at));
    put_opt(&mut item, "web_url", d.web_url.as_deref().map(s));
    put_opt(
        &mut item,
        GSI2_PK,
        d.web_url
            .as_deref()
            .and_then(activity::site_key_of_url)
            .map(|key| s(activity::site_gsi2pk(&d.connection, &key))),
    );
    put_opt(&mut item, "parked", d.parked.as_deref().map(s));
    for (name, value) in progress_attrs(&d.index) {
        put_opt(&mut item, name, value);
    }
    item
}

#[async_trait]
impl ConnectionStore for DynamoStateStore {
    async fn connection(&self, id: &str) -> PortResult<Option<Connection>> {
        let item = self.get(conn_pk(id), META).await?;
        Ok(item.map(|i| self.decode_connection(&i)).transpose()?)
    }

    /// All registered connections, sorted by id: a Query on `gsi1` for their keys, then
    /// BatchGetItem for the records (the index does not project the document).
    async fn connections(&self) -> PortResult<Vec<Connection>> {
        let keys = self
            .table
            .index_partition_keys(GSI1, GSI1_PK, CONNECTIONS, PK)
            .await?
            .into_iter()
            .map(|pk| key(pk, META))
            .collect();
        let items = self.table.batch_get(keys, None).await?;
        let mut connections = items
            .iter()
            .map(|i| self.decode_connection(i))
            .collect::<Result<Vec<_>, _>>()?;
        connections.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(connections)
    }

    /// Creates or replaces the whole connection record, including its status fields.
    async fn put_connection(&self, connection: &Connection) -> PortResult<()> {
        Ok(self.put(connection_item(connection)?).await?)
    }

    /// Fails (terminal) if the connection is not registered.
    async fn set_connection_error(&self, id: &str, error: Option<&ConnectionError>) -> PortResult<()> {
        let mut update = Update::default();
        update.set_or_remove("last_error", error.map(|e| json("connection error", e)).transpose()?);
        Ok(self.update_connection(id, update).await?)
    }

    /// Fails (terminal) if the connection is not registered.
    async fn set_last_discovery(&self, id: &str, summary: &DiscoverySummary) -> PortResult<()> {
        let mut update = Update::default();
        update.set("last_discovery", json("discovery summary", summary)?);
        Ok(self.update_connection(id, update).await?)
    }

    /// Fails (terminal) if the connection is not registered.
    async fn set_write_app(&self, id: &str, app: Option<&filetrail_core::model::WriteApp>) -> PortResult<()> {
        let mut update = Update::default();
        update.set_or_remove("write_app", app.map(|a| json("write app", a)).transpose()?);
        Ok(self.update_connection(id, update).await?)
    }
}

#[async_trait]
impl DriveStore for DynamoStateStore {
    async fn drive(&self, drive_id: &str) -> PortResult<Option<DriveRecord>> {
        let item = self.get(drive_pk(drive_id), META).await?;
        Ok(item.map(|i| self.decode_drive(&i)).transpose()?)
    }

    /// BatchGetItem in batches of 100; the result follows the order of `drive_ids`.
    async fn drives(&self, drive_ids: &[String]) -> PortResult<Vec<DriveRecord>> {
        let mut seen = HashSet::new();
        let keys = drive_ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| key(drive_pk(id), META))
            .collect();
        let items = self.table.batch_get(keys, None).await?;
        let mut by_id: HashMap<String, DriveRecord> = items
            .iter()
            .map(|i| self.decode_drive(i).map(|d| (d.drive_id.clone(), d)))
            .collect::<Result<_, _>>()?;
        Ok(drive_ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// One conditional PutItem (`attribute_not_exists(pk)`) per drive, [`INSERT_CONCURRENCY`] at
    /// a time; returns the inserted ids in input order. A known drive is left exactly as stored.
    /// On error some drives may already be inserted; they stay `pending` for discovery to find.
    async fn insert_new_drives(&self, drives: &[DriveRecord]) -> PortResult<Vec<String>> {
        let inserts: Vec<_> = drives.iter().map(|d| self.insert_drive(d)).collect();
        let results: Vec<Result<Option<String>, AwsError>> =
            stream::iter(inserts).buffered(INSERT_CONCURRENCY).collect().await;
        let mut inserted = Vec::new();
        for result in results {
            inserted.extend(result?);
        }
        Ok(inserted)
    }

    /// One UpdateItem conditional on the current state and the drive's connection.
    async fn transition_drive(
        &self,
        connection: &str,
        drive_id: &str,
        from: DriveState,
        to: DriveState,
    ) -> PortResult<bool> {
        let mut update = Update::default();
        update.set("state", s(to.as_str()));
        update.set(GSI1_PK, s(drive_gsi1pk(connection, to)));
        update.value(":from", s(from.as_str()));
        update.value(":connection", s(connection));
        let condition = format!(
            "{} = :from AND {} = :connection",
            update.name("state"),
            update.name("connection")
        );
        Ok(self.update_if(drive_pk(drive_id), update, &condition).await?)
    }

    /// One UpdateItem conditional on `pages` and `generation` (and the drive's connection) that
    /// writes every progress field, the state and the GSI key. Returns false, changing nothing,
    /// when the stored checkpoint is not `expected` or the drive does not exist.
    async fn save_index_progress(
        &self,
        connection: &str,
        drive_id: &str,
        expected: &IndexProgress,
        progress: &IndexProgress,
        state: DriveState,
    ) -> PortResult<bool> {
        let mut update = Update::default();
        for (name, value) in progress_attrs(progress) {
            update.set_or_remove(name, value);
        }
        update.set("state", s(state.as_str()));
        update.set(GSI1_PK, s(drive_gsi1pk(connection, state)));
        update.value(":expected_pages", n(expected.pages));
        update.value(":expected_gen", n(expected.generation));
        update.value(":connection", s(connection));
        update.value(":unmonitored", s(DriveState::Unmonitored.as_str()));
        // A drive that left the scope meanwhile stays unmonitored: its walk stops here.
        let condition = format!(
            "{} = :expected_pages AND {} = :expected_gen AND {} = :connection AND {} <> :unmonitored",
            update.name("pages"),
            update.name("generation"),
            update.name("connection"),
            update.name("state")
        );
        Ok(self.update_if(drive_pk(drive_id), update, &condition).await?)
    }

    /// Fails (terminal) if the connection has no such drive.
    async fn set_drive_parked(&self, connection: &str, drive_id: &str, reason: Option<&str>) -> PortResult<()> {
        let mut update = Update::default();
        update.set_or_remove("parked", reason.map(s));
        update.value(":connection", s(connection));
        let condition = format!("{} = :connection", update.name("connection"));
        if self.update_if(drive_pk(drive_id), update, &condition).await? {
            Ok(())
        } else {
            Err(PortError::from(AwsError::NotFound {
                what: "drive",
                id: format!("{drive_id} of connection {connection}"),
                table: self.table.name.clone(),
                fix: "run discovery for the connection so the drive is recorded".into(),
            }))
        }
    }

    /// A page of at most [`DRIVE_IDS_PAGE`] ids (see [`DynamoStateStore::with_page_size`]), sorted by id, from `gsi1` (eventually
    /// consistent: a drive moved a moment ago may still be listed under its old state). The
    /// cursor is opaque; a cursor this store did not return fails (terminal).
    async fn drive_ids_in_state(
        &self,
        connection: &str,
        state: DriveState,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        self.gsi1_sort_keys(drive_gsi1pk(connection, state), cursor).await
    }

    /// A paginated `Select: COUNT` Query on `gsi1` (eventually consistent).
    async fn count_drives(&self, connection: &str, state: DriveState) -> PortResult<u64> {
        Ok(self
            .table
            .count(GSI1, GSI1_PK, &drive_gsi1pk(connection, state))
            .await?)
    }

    /// BatchWriteItem puts keyed by connection and user id, so recording a user again
    /// overwrites (and is counted once). A user listed twice in one call keeps the last entry.
    async fn record_users_without_drive(&self, connection: &str, users: &[(DirectoryUser, String)]) -> PortResult<()> {
        let now = Utc::now();
        let unique: BTreeMap<&str, &(DirectoryUser, String)> = users.iter().map(|u| (u.0.id.as_str(), u)).collect();
        let mut requests = Vec::with_capacity(unique.len());
        for (user, reason) in unique.into_values() {
            let mut item = key(nodrive_pk(connection, &user.id), META);
            item.insert(GSI1_PK.into(), s(nodrive_gsi1pk(connection)));
            item.insert(GSI1_SK.into(), s(&user.id));
            item.insert("connection".into(), s(connection));
            item.insert("user_id".into(), s(&user.id));
            item.insert("upn".into(), s(&user.user_principal_name));
            put_opt(&mut item, "display_name", user.display_name.as_deref().map(s));
            item.insert("reason".into(), s(reason));
            item.insert("seen_at".into(), ts(&now));
            requests.push(put_request(item)?);
        }
        Ok(self.table.batch_write(requests).await?)
    }

    async fn clear_users_without_drive(&self, connection: &str, user_ids: &[String]) -> PortResult<()> {
        let unique: HashSet<&str> = user_ids.iter().map(String::as_str).collect();
        let requests = unique
            .into_iter()
            .map(|id| delete_request(key(nodrive_pk(connection, id), META)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.table.batch_write(requests).await?)
    }

    async fn count_users_without_drive(&self, connection: &str) -> PortResult<u64> {
        Ok(self.table.count(GSI1, GSI1_PK, &nodrive_gsi1pk(connection)).await?)
    }

    /// Like [`DriveStore::drive_ids_in_state`], over the "no OneDrive" partition of `gsi1`.
    async fn user_ids_without_drive(
        &self,
        connection: &str,
        cursor: Option<String>,
    ) -> PortResult<(Vec<String>, Option<String>)> {
        self.gsi1_sort_keys(nodrive_gsi1pk(connection), cursor).await
    }
}

#[async_trait]
impl ScopeStore for DynamoStateStore {
    async fn scope(&self, connection: &str) -> PortResult<Option<Scope>> {
        let item = self.get(conn_pk(connection), SCOPE).await?;
        Ok(item
            .map(|i| self.table.fields(&i, item_key(&i)).json("doc"))
            .transpose()?)
    }

    /// One conditional PutItem: written unless the stored scope's upload is later.
    async fn replace_scope(&self, connection: &str, scope: &Scope) -> PortResult<bool> {
        let mut item = key(conn_pk(connection), SCOPE);
        item.insert("kind".into(), s(scope.kind.as_str()));
        item.insert("version".into(), s(&scope.version));
        item.insert("doc".into(), json("scope", scope)?);
        Ok(self.put_if_not_older(item, millis(&scope.uploaded_at)).await?)
    }

    async fn record_scope_upload(&self, connection: &str, result: &ScopeUploadResult) -> PortResult<()> {
        let mut item = key(conn_pk(connection), SCOPE_UPLOAD);
        item.insert("doc".into(), json("scope upload result", result)?);
        self.put_if_not_older(item, millis(&result.uploaded_at)).await?;
        Ok(())
    }

    async fn last_scope_upload(&self, connection: &str) -> PortResult<Option<ScopeUploadResult>> {
        let item = self.get(conn_pk(connection), SCOPE_UPLOAD).await?;
        Ok(item
            .map(|i| self.table.fields(&i, item_key(&i)).json("doc"))
            .transpose()?)
    }
}

#[async_trait]
impl DiscoveryRunStore for DynamoStateStore {
    /// One PutItem per page; ids are stored newline-joined (compact: a page of 999 users stays
    /// far below the 400 KB item limit).
    async fn record_run_page(&self, connection: &str, run_id: &str, page: u64, seen: &RunPage) -> PortResult<()> {
        let mut item = key(conn_pk(connection), format!("{}{page:010}", run_prefix(run_id)));
        item.insert("drives".into(), s(seen.drives.join("\n")));
        item.insert("nodrive".into(), s(seen.users_without_drive.join("\n")));
        let expires = Utc::now() + chrono::Duration::days(RUN_PAGE_TTL_DAYS);
        item.insert(
            EXPIRES_AT.into(),
            n(u64::try_from(expires.timestamp()).unwrap_or_default()),
        );
        Ok(self.put(item).await?)
    }

    async fn run_seen(&self, connection: &str, run_id: &str) -> PortResult<RunSeen> {
        let mut seen = RunSeen::default();
        for item in self.query_prefix(conn_pk(connection), &run_prefix(run_id)).await? {
            let f = self.table.fields(&item, item_key(&item));
            let split = |text: String| -> Vec<String> {
                text.split('\n')
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect()
            };
            seen.drives.extend(split(f.s("drives")?));
            seen.users_without_drive.extend(split(f.s("nodrive")?));
        }
        Ok(seen)
    }

    async fn delete_run(&self, connection: &str, run_id: &str) -> PortResult<()> {
        let requests = self
            .query_prefix(conn_pk(connection), &run_prefix(run_id))
            .await?
            .iter()
            .map(|item| {
                let f = self.table.fields(item, item_key(item));
                delete_request(key(f.s(PK)?, f.s(SK)?))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.table.batch_write(requests).await?)
    }

    async fn discovery_checkpoint(&self, connection: &str) -> PortResult<Option<DiscoveryCheckpoint>> {
        let item = self.get(conn_pk(connection), DISCOVERY).await?;
        Ok(item
            .map(|i| self.table.fields(&i, item_key(&i)).json("doc"))
            .transpose()?)
    }

    /// Puts the checkpoint (a JSON `doc` beside `run_id` and `seq`), or deletes it when `None`,
    /// conditionally on the stored `run_id` and `seq`.
    async fn save_discovery_checkpoint(
        &self,
        connection: &str,
        checkpoint: Option<&DiscoveryCheckpoint>,
        expected: Option<&CheckpointVersion>,
    ) -> PortResult<bool> {
        let key = key(conn_pk(connection), DISCOVERY);
        let (condition, names, values) = match expected {
            None => ("attribute_not_exists(#pk)", vec![("#pk", PK)], vec![]),
            Some(v) => (
                "#run = :run AND #seq = :seq",
                vec![("#run", "run_id"), ("#seq", "seq")],
                vec![(":run", s(&v.run_id)), (":seq", n(v.seq))],
            ),
        };
        let saved = match checkpoint {
            None => self.table.delete_if(key, condition, &names, values).await?,
            Some(cp) => {
                let mut item = key;
                item.insert("run_id".into(), s(&cp.run_id));
                item.insert("seq".into(), n(cp.seq));
                item.insert("doc".into(), json("discovery checkpoint", cp)?);
                self.table.put_if(item, condition, &names, values).await?
            }
        };
        Ok(saved)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn drive_item_carries_every_progress_field_and_its_gsi_partition() {
        let drive = DriveRecord {
            connection: "contoso".into(),
            drive_id: "b!1".into(),
            owner_id: "u1".into(),
            owner_upn: "adele@contoso.com".into(),
            web_url: None,
            state: DriveState::Indexing,
            discovered_at: Utc::now(),
            index: IndexProgress {
                next_link: Some("https://graph/next".into()),
                ..Default::default()
            },
            parked: None,
        };
        let item = drive_item(&drive);
        assert_eq!(item[GSI1_PK], s("CONN#contoso#DRIVE#indexing"));
        for name in PROGRESS_NUMBERS {
            assert!(item.contains_key(name), "{name} missing");
        }
        assert!(item.contains_key("next_link") && !item.contains_key("delta_link"));
    }
}
