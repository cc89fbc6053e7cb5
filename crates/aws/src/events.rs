//! [`EventStore`] over the DynamoDB events table: one item per file event, keyed by
//! [`EventRecord::key`], with the key attributes of ten GSIs that serve every search and export
//! access pattern without a scan.
//!
//! Layout (template.yaml provisions exactly this):
//!
//! | attribute | value | present |
//! |---|---|---|
//! | `event_key` (table key) | `{connection}#{record id}` | always |
//! | `doc` | the [`EventRecord`] as JSON, without its `hash` | always |
//! | `hash` | the [`HashOutcome`] as JSON | once hashed, or known to have no digest |
//! | `event_type`, `low_signal` | the event's type (snake_case) and noise flag, for index filters | always |
//! | `actor_pk` | `{connection}#{user key of the actor's UPN, else address}` | the actor has either |
//! | `owner_pk` | `{connection}#{user key of the owner's UPN}` | the owner is known |
//! | `file_pk` | `{drive_id}#{item_id}` | the item is resolved |
//! | `sha256`, `md5` | lowercase hex | hashed (sparse) |
//! | `observed_sk` | `{observed_at, RFC 3339 UTC millis}#{record id}` | always |
//! | `inserted_pk` | `{connection}#{inserted_at day, yyyy-mm-dd}#{shard 0..15}` | always |
//! | `inserted_sk` | `{inserted_at, RFC 3339 UTC millis}#{record id}` | always |
//! | `day_pk` | `{connection}#{observed_at day, yyyy-mm-dd}#{shard 0..8}` | always |
//! | `name_pk`, `name_sk` | `{connection}#{first 3 characters of the lowercase name}`, `{lowercase name}#{observed_sk}` | the event names a file or folder |
//! | `path_pk`, `path_sk` | `{connection}#{first segment of the lowercase path}`, `{lowercase path}#{observed_sk}` | the event has a path below the root |
//! | `external_pk` | `{connection}` | the event shares outside the organisation (sparse) |
//!
//! A move, rename or copy also has a *destination entry*: an item keyed
//! `{connection}#{record id}~to` with only `event_type`, `low_signal`, `observed_sk` and the
//! `name_*`/`path_*` keys of where the file went (those that differ from where it was). A
//! `--file-name` or `--path` search of the new name or place finds the event through it
//! ([`event_key_of`] maps the entry to its event); the other indexes never see it.
//!
//! Each day that holds events has a *day marker* (written with the events, unconditionally):
//! `~day#{connection}#{yyyy-mm-dd}` in `by_day` under the partition `{connection}#days` (sort
//! key the date) for days events happened, and `~ins#{connection}#{yyyy-mm-dd}` in
//! `by_inserted` under the same partition name for days events were recorded. A search or
//! export over a long range lists the days that hold events with one Query and reads only
//! those, so its cost follows the events, not the calendar.
//!
//! A share also has a *target entry* per person it names with an address (other than the
//! owner), keyed `{connection}#{record id}~with{n}`, carrying `owner_pk` of that person: a
//! `--user` search (which reads `by_actor` and `by_owner`) finds the files shared with them too.
//! People are keyed by address, a guest's UPN (`dana_fabrikam.com#ext#@…`) by the address it
//! was made from ([`filetrail_core::search::user_key`]), so a guest is found by `dana@fabrikam.com`.
//!
//! | index | partition | sort | projection | serves |
//! |---|---|---|---|---|
//! | `by_actor` | `actor_pk` | `observed_sk` | keys, `event_type`, `low_signal` | a user's activity in a time range, newest first |
//! | `by_owner` | `owner_pk` | `observed_sk` | keys, `event_type`, `low_signal` | activity on a user's files, and shares with them, in a time range |
//! | `by_file` | `file_pk` | `observed_sk` | keys, `event_type`, `low_signal` | a file's history ([`EventStore::file_events`]) |
//! | `by_sha256` | `sha256` | `observed_sk` | keys, `event_type`, `low_signal` | events of a content by SHA-256 |
//! | `by_md5` | `md5` | `observed_sk` | keys, `event_type`, `low_signal` | events of a content by MD5 |
//! | `by_inserted` | `inserted_pk` | `inserted_sk` | keys, `doc`, `hash` | a tenant's new events by day (exports) |
//! | `by_day` | `day_pk` | `observed_sk` | keys, `event_type`, `low_signal` | a tenant's events in a time range, newest first |
//! | `by_name` | `name_pk` | `name_sk` | keys, `event_type`, `low_signal`, `observed_sk` | file names by prefix |
//! | `by_path` | `path_pk` | `path_sk` | keys, `event_type`, `low_signal`, `observed_sk` | a folder's (or file's) events by path prefix |
//! | `by_external` | `external_pk` | `observed_sk` | keys, `event_type`, `low_signal` | shares outside the organisation, newest first |
//!
//! Search (`crate::search`) reads exactly one of these per query; which one is decided by
//! [`filetrail_core::search::SearchQuery::access`].
//!
//! Projections: the search indexes carry only what search filters on (type, noise), and search
//! reads the records of a page by key (BatchGetItem, 100 per call). Projecting the record there
//! would store it nine more times and make every [`EventStore::set_event_hash`] rewrite it in
//! each of them (a GSI write costs 1 WCU per KB of projected item); a search page costs one
//! BatchGetItem instead. `by_inserted` projects the record because an export reads every event
//! of a day once, where a BatchGetItem per 100 events would double the reads.
//!
//! Timestamps in sort keys have a fixed width (milliseconds, `Z`), so they sort as text in time
//! order; the record id after them keeps keys of one millisecond apart. The hash outcome lives in
//! its own attribute, merged into the record when it is read: recording it is one UpdateItem
//! that never rewrites `doc`, so it cannot race an insert into an inconsistent record.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use filetrail_core::events::{EventRecord, HashOutcome};
use filetrail_core::ports::{EventStore, HashChange, PortResult};
use futures_util::{StreamExt, stream};

use crate::config::EVENTS_TABLE_VAR;
use crate::dynamo::{Item, Table, Update, json, put_opt, s};
use crate::error::AwsError;

/// Partition key attribute of the events table.
pub const EVENT_KEY: &str = "event_key";
/// The record as JSON, without its hash outcome.
pub const DOC: &str = "doc";
/// The hash outcome as JSON.
pub const HASH: &str = "hash";
pub const EVENT_TYPE: &str = "event_type";
pub const LOW_SIGNAL: &str = "low_signal";
pub const ACTOR_PK: &str = "actor_pk";
pub const OWNER_PK: &str = "owner_pk";
pub const FILE_PK: &str = "file_pk";
pub const SHA256: &str = "sha256";
pub const MD5: &str = "md5";
pub const OBSERVED_SK: &str = "observed_sk";
pub const INSERTED_PK: &str = "inserted_pk";
pub const INSERTED_SK: &str = "inserted_sk";
pub const DAY_PK: &str = "day_pk";
pub const NAME_PK: &str = "name_pk";
pub const NAME_SK: &str = "name_sk";
pub const PATH_PK: &str = "path_pk";
pub const PATH_SK: &str = "path_sk";
pub const EXTERNAL_PK: &str = "external_pk";
/// Ends the key of an event's destination entry (`{event key}~to`). Record ids are GUIDs (and
/// filetrail's own ids are letters, digits and dashes), so no event key ends with it.
pub const DESTINATION_SUFFIX: &str = "~to";
/// Starts the suffix of an event's target entries (`{event key}~with{n}`).
pub const TARGET_INFIX: &str = "~with";

pub const BY_ACTOR: &str = "by_actor";
pub const BY_OWNER: &str = "by_owner";
pub const BY_FILE: &str = "by_file";
pub const BY_SHA256: &str = "by_sha256";
pub const BY_MD5: &str = "by_md5";
pub const BY_INSERTED: &str = "by_inserted";
pub const BY_DAY: &str = "by_day";
pub const BY_NAME: &str = "by_name";
pub const BY_PATH: &str = "by_path";
pub const BY_EXTERNAL: &str = "by_external";

/// Non-key attributes the search indexes project (INCLUDE).
pub const SEARCH_INCLUDED: [&str; 2] = [EVENT_TYPE, LOW_SIGNAL];
/// Non-key attributes `by_inserted` projects (INCLUDE).
pub const EXPORT_INCLUDED: [&str; 2] = [DOC, HASH];

/// Shards of a connection's day in `by_inserted`. A partition takes at most 1,000 WCU/s
/// (DynamoDB Developer Guide, "Partition key design"); an event's index entry is ~2 KB, so 2 WCU:
/// 16 shards absorb 16 × 1,000 / 2 = 8,000 events/s of one tenant, far above the audit feed's
/// rate, and an export reads 16 partitions per day.
pub const INSERTED_SHARDS: u64 = 16;
/// Shards of a connection's day in `by_day`. Its entries are keys only (~250 bytes, 1 WCU), so
/// 8 shards take 8 × 1,000 = 8,000 events/s of one tenant; a search of a day reads 8 partitions
/// in parallel and merges them newest first.
pub const DAY_SHARDS: u64 = 8;
/// Conditional writes in flight per call: enough to hide round trips; events of one call have
/// distinct keys, so they spread over partitions.
pub const WRITE_CONCURRENCY: usize = 16;
/// Keys per Query page of `by_file` (a Query page also stops at 1 MB; key-only entries of
/// ~200 bytes stay below).
const FILE_QUERY_PAGE: usize = 1000;

/// A time as RFC 3339 UTC with exactly three fractional digits: fixed width, so it sorts as text.
pub fn sort_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `by_actor`'s partition of a connection's actor (a UPN or an address).
pub fn actor_pk(connection: &str, upn: &str) -> String {
    format!("{connection}#{}", filetrail_core::search::user_key(upn))
}

/// `by_owner`'s partition of a connection's file owner (or of a person a share names).
pub fn owner_pk(connection: &str, upn: &str) -> String {
    format!("{connection}#{}", filetrail_core::search::user_key(upn))
}

/// `by_file`'s partition of a drive item.
pub fn file_pk(drive_id: &str, item_id: &str) -> String {
    format!("{drive_id}#{item_id}")
}

/// The sort key of the search indexes: when it happened, then the record id.
pub fn observed_sk(observed_at: &DateTime<Utc>, record_id: &str) -> String {
    format!("{}#{record_id}", sort_time(observed_at))
}

/// The shard of an event key in `by_inserted`: FNV-1a (64 bit) of the key, modulo
/// [`INSERTED_SHARDS`]. A fixed function, so every writer and reader agrees across releases.
pub fn shard_of(event_key: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = event_key
        .bytes()
        .fold(FNV_OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME));
    hash % INSERTED_SHARDS
}

/// `by_day`'s partition: a connection's day (of `observed_at`, UTC) and a shard (`shard_of`
/// the event key modulo [`DAY_SHARDS`]).
pub fn day_pk(connection: &str, observed_at: &DateTime<Utc>, shard: u64) -> String {
    format!("{connection}#{}#{shard}", observed_at.format("%Y-%m-%d"))
}

/// The shard of an event key in `by_day`.
pub fn day_shard_of(event_key: &str) -> u64 {
    shard_of(event_key) % DAY_SHARDS
}

/// The event an index entry stands for: the entry's own key, or for a destination or target
/// entry (`{event key}~to`, `{event key}~with{n}`) the event it belongs to. Event keys hold no
/// `~` (connection ids are slugs, record ids GUIDs).
pub fn event_key_of(entry_key: &str) -> &str {
    entry_key.split_once('~').map_or(entry_key, |(event, _)| event)
}

/// The partition of a connection's day markers, in `by_day` (days events happened) and in
/// `by_inserted` (days events were recorded).
pub fn days_pk(connection: &str) -> String {
    format!("{connection}#days")
}

/// Whether a table key is a day marker rather than an event or an index entry of one.
pub fn is_day_marker(key: &str) -> bool {
    key.starts_with(DAY_MARKER_PREFIX) || key.starts_with(INSERTED_MARKER_PREFIX)
}

const DAY_MARKER_PREFIX: &str = "~day#";
const INSERTED_MARKER_PREFIX: &str = "~ins#";

/// The table key of a connection's day marker: for a day events happened, or (`inserted`)
/// were recorded.
pub fn day_marker_key(connection: &str, day: chrono::NaiveDate, inserted: bool) -> String {
    let prefix = if inserted {
        INSERTED_MARKER_PREFIX
    } else {
        DAY_MARKER_PREFIX
    };
    format!("{prefix}{connection}#{}", day.format("%Y-%m-%d"))
}

/// The day markers of a batch of events: one per connection and day they happened, and one per
/// connection and day they were recorded.
fn day_markers(records: &[EventRecord]) -> Vec<Item> {
    let mut observed = std::collections::BTreeSet::new();
    let mut inserted = std::collections::BTreeSet::new();
    for r in records {
        observed.insert((r.connection.as_str(), r.event.observed_at.date_naive()));
        inserted.insert((r.connection.as_str(), r.event.inserted_at.date_naive()));
    }
    let marker = |connection: &str, day: chrono::NaiveDate, inserted: bool| {
        let (pk, sk) = if inserted {
            (INSERTED_PK, INSERTED_SK)
        } else {
            (DAY_PK, OBSERVED_SK)
        };
        Item::from([
            (EVENT_KEY.to_owned(), s(day_marker_key(connection, day, inserted))),
            (pk.to_owned(), s(days_pk(connection))),
            (sk.to_owned(), s(day.format("%Y-%m-%d").to_string())),
        ])
    };
    let mut items: Vec<Item> = observed.into_iter().map(|(c, d)| marker(c, d, false)).collect();
    items.extend(inserted.into_iter().map(|(c, d)| marker(c, d, true)));
    items
}

/// The days of `connection` that hold events, newest first, between `from` and `to` (either
/// open): one Query of the day markers' partition of `by_day` (days events happened) or of
/// `by_inserted` (`inserted`: days events were recorded). Index reads are eventually
/// consistent: a day whose first event was stored a moment ago may be missing.
pub(crate) async fn query_days(
    table: &Table,
    connection: &str,
    inserted: bool,
    from: Option<chrono::NaiveDate>,
    to: Option<chrono::NaiveDate>,
) -> Result<Vec<chrono::NaiveDate>, AwsError> {
    let (index, pk, sk) = if inserted {
        (BY_INSERTED, INSERTED_PK, INSERTED_SK)
    } else {
        (BY_DAY, DAY_PK, OBSERVED_SK)
    };
    let date = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let request = table
        .query()
        .index_name(index)
        .key_condition_expression("#p = :p AND #s BETWEEN :from AND :to")
        .projection_expression("#s")
        .expression_attribute_names("#p", pk)
        .expression_attribute_names("#s", sk)
        .expression_attribute_values(":p", s(days_pk(connection)))
        .expression_attribute_values(":from", s(from.map_or_else(|| "0000".to_owned(), date)))
        .expression_attribute_values(":to", s(to.map_or_else(|| "9999".to_owned(), date)))
        .scan_index_forward(false);
    let mut days = Vec::new();
    for item in table.query_all(request).await? {
        let text = table.fields(&item, days_pk(connection)).s(sk)?;
        let day = chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .map_err(|e| table.malformed(days_pk(connection), format!("day marker {text:?}: {e}")))?;
        days.push(day);
    }
    Ok(days)
}

/// The key of `event_key`'s `n`th target entry.
pub fn target_key(event_key: &str, n: usize) -> String {
    format!("{event_key}{TARGET_INFIX}{n}")
}

/// The key of `event_key`'s destination entry.
pub fn destination_key(event_key: &str) -> String {
    format!("{event_key}{DESTINATION_SUFFIX}")
}

/// The table keys an event occupies, read from its item or from a `by_inserted` entry (which
/// projects `doc`): the event's own and its destination entry's, if it has one. For a purge.
pub fn stored_keys(item: &Item) -> Vec<String> {
    let Some(AttributeValue::S(key)) = item.get(EVENT_KEY) else {
        return Vec::new();
    };
    let record = match item.get(DOC) {
        Some(AttributeValue::S(doc)) => serde_json::from_str::<EventRecord>(doc).ok(),
        _ => None,
    };
    let mut keys = vec![key.clone()];
    if let Some(record) = &record {
        keys.extend(entry_items(record).iter().filter_map(|i| match i.get(EVENT_KEY) {
            Some(AttributeValue::S(k)) => Some(k.clone()),
            _ => None,
        }));
    }
    keys
}

/// `by_name`'s partition of a lowercase file name.
pub fn name_pk(connection: &str, lowercase_name: &str) -> String {
    format!(
        "{connection}#{}",
        filetrail_core::search::name_partition(lowercase_name)
    )
}

/// `by_path`'s partition: the first segment of a lowercase path from the drive root.
pub fn path_pk(connection: &str, lowercase_path: &str) -> String {
    format!("{connection}#{}", filetrail_core::search::first_segment(lowercase_path))
}

/// `by_inserted`'s partition: a connection's day (of `inserted_at`, UTC) and a shard. An
/// export of a day queries the [`INSERTED_SHARDS`] partitions `0..16`.
pub fn inserted_pk(connection: &str, inserted_at: &DateTime<Utc>, shard: u64) -> String {
    format!("{connection}#{}#{shard}", inserted_at.format("%Y-%m-%d"))
}

/// The DynamoDB events table behind [`EventStore`].
#[derive(Debug)]
pub struct DynamoEventStore {
    pub(crate) table: Table,
}

impl DynamoEventStore {
    /// A store over `table` (named by `FILETRAIL_EVENTS_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, EVENTS_TABLE_VAR),
        }
    }

    crate::dynamo::table_accessors!();

    /// The stored events with these keys (strongly consistent), in the order of `keys`; missing
    /// ones are left out.
    pub async fn events_by_key(&self, keys: &[String]) -> PortResult<Vec<EventRecord>> {
        let mut by_key = HashMap::new();
        for item in self.items_by_key(keys).await? {
            let record = self.decode(&item)?;
            by_key.insert(record.key(), record);
        }
        Ok(keys.iter().filter_map(|k| by_key.remove(k)).collect())
    }

    /// The stored items of these keys as they are (strongly consistent), in no particular order.
    async fn items_by_key(&self, keys: &[String]) -> Result<Vec<Item>, AwsError> {
        let mut seen = HashSet::new();
        let request = keys
            .iter()
            .filter(|k| seen.insert(k.as_str()))
            .map(|k| HashMap::from([(EVENT_KEY.to_owned(), s(k))]))
            .collect();
        self.table.batch_get(request, None).await
    }

    /// Applies one change read as `stored`: `true` when the event has the change's outcome now,
    /// `false` when its outcome is neither that nor the one the caller read. The condition is on
    /// the outcome as stored, so an outcome written by an earlier version of filetrail (another
    /// encoding of the same value) is not a conflict.
    async fn change_one(&self, change: &HashChange<'_>, stored: &Item) -> Result<bool, AwsError> {
        let record = self.decode(stored)?;
        if record.hash.as_ref() == Some(change.outcome) {
            return Ok(true);
        }
        if record.hash.as_ref() != change.was {
            return Ok(false);
        }
        let mut update = hash_update(change.outcome)?;
        let key = update.name(EVENT_KEY);
        let hash = update.name(HASH);
        let condition = match stored.get(HASH) {
            Some(was) => {
                update.value(":was", was.clone());
                format!("attribute_exists({key}) AND {hash} = :was")
            }
            None => format!("attribute_exists({key}) AND attribute_not_exists({hash})"),
        };
        self.update_if(change.key, update, condition).await
    }

    /// The `limit` events of `connection` recorded last, newest first: the day partitions of
    /// `by_inserted` for `days` (newest day first), every shard, merged. Eventually consistent.
    pub async fn recently_inserted(
        &self,
        connection: &str,
        days: &[DateTime<Utc>],
        limit: usize,
    ) -> PortResult<Vec<EventRecord>> {
        let mut keys = Vec::new();
        for day in days {
            for shard in 0..INSERTED_SHARDS {
                let partition = inserted_pk(connection, day, shard);
                keys.extend(self.newest_keys(BY_INSERTED, INSERTED_PK, &partition, limit).await?);
            }
        }
        let mut events = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(100) {
            events.extend(self.events_by_key(chunk).await?);
        }
        events.sort_by(|a, b| {
            (b.event.inserted_at, b.event.observed_at, &b.event.id).cmp(&(
                a.event.inserted_at,
                a.event.observed_at,
                &a.event.id,
            ))
        });
        events.truncate(limit);
        Ok(events)
    }

    /// The days of `connection` that hold events, newest first, between `from` and `to`
    /// (inclusive, either open): days events happened (`inserted` false) or were recorded
    /// (`inserted` true). See [`query_days`].
    pub async fn days_with_events(
        &self,
        connection: &str,
        inserted: bool,
        from: Option<chrono::NaiveDate>,
        to: Option<chrono::NaiveDate>,
    ) -> PortResult<Vec<chrono::NaiveDate>> {
        Ok(query_days(&self.table, connection, inserted, from, to).await?)
    }

    pub(crate) fn decode(&self, item: &Item) -> Result<EventRecord, AwsError> {
        let f = self.table.fields(item, item_label(item));
        let mut record: EventRecord = f.json(DOC)?;
        record.hash = f.opt_json(HASH)?;
        Ok(record)
    }

    /// Puts one event unless its key is stored (its destination and target entries first,
    /// unconditionally, so a redelivery completes them); `Some(key)` when inserted.
    async fn insert_one(&self, key: String, item: Item, entries: Vec<Item>) -> Result<Option<String>, AwsError> {
        for entry in entries {
            self.table.put(entry).await?;
        }
        let inserted = self
            .table
            .put_if(item, "attribute_not_exists(#k)", &[("#k", EVENT_KEY)], vec![])
            .await?;
        Ok(inserted.then_some(key))
    }

    /// Sets the outcome on one stored event; `false` when there is no event with that key.
    async fn set_hash_one(&self, key: &str, outcome: &HashOutcome) -> Result<bool, AwsError> {
        let mut update = hash_update(outcome)?;
        let condition = format!("attribute_exists({})", update.name(EVENT_KEY));
        self.update_if(key, update, condition).await
    }

    /// Applies `update` to the event with `key` if `condition` holds; `false` when it did not.
    async fn update_if(&self, key: &str, update: Update, condition: String) -> Result<bool, AwsError> {
        let key = Item::from([(EVENT_KEY.to_owned(), s(key))]);
        self.table.update_if(key, update, &condition).await
    }

    /// Up to `limit` keys of `partition` of `index`, newest first (eventually consistent: an event
    /// stored a moment ago may be missing).
    async fn newest_keys(&self, index: &str, key_attr: &str, partition: &str, limit: usize) -> PortResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut start = None;
        while keys.len() < limit {
            let page = (limit - keys.len()).min(FILE_QUERY_PAGE);
            self.table.counts.read();
            let out = self
                .table
                .client
                .query()
                .table_name(&self.table.name)
                .index_name(index)
                .key_condition_expression("#p = :p")
                .projection_expression("#k")
                .expression_attribute_names("#p", key_attr)
                .expression_attribute_names("#k", EVENT_KEY)
                .expression_attribute_values(":p", s(partition))
                .scan_index_forward(false)
                .limit(i32::try_from(page).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.table.err("Query", e))?;
            for item in out.items() {
                keys.push(self.table.fields(item, item_label(item)).s(EVENT_KEY)?);
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }
}

/// The item of an event: its record without the hash as `doc`, the hash apart, and every index
/// key the event has.
fn event_item(record: &EventRecord) -> Result<Item, AwsError> {
    let event = &record.event;
    let key = record.key();
    let doc = EventRecord {
        hash: None,
        ..record.clone()
    };
    let mut item = Item::new();
    item.insert(DOC.into(), json("event", &doc)?);
    item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
    item.insert(LOW_SIGNAL.into(), AttributeValue::Bool(event.low_signal));
    let actor = (event.actor.upn.as_deref().filter(|u| !u.is_empty())).or(event
        .actor
        .email
        .as_deref()
        .filter(|e| !e.is_empty()));
    put_opt(&mut item, ACTOR_PK, actor.map(|u| s(actor_pk(&record.connection, u))));
    let owner = event.owner_upn.as_deref().filter(|u| !u.is_empty());
    put_opt(&mut item, OWNER_PK, owner.map(|u| s(owner_pk(&record.connection, u))));
    if let (Some(drive), Some(file)) = (&event.drive_id, &event.item_id)
        && !drive.is_empty()
        && !file.is_empty()
    {
        item.insert(FILE_PK.into(), s(file_pk(drive, file)));
    }
    let sort = observed_sk(&event.observed_at, &event.id);
    item.insert(
        DAY_PK.into(),
        s(day_pk(&record.connection, &event.observed_at, day_shard_of(&key))),
    );
    let name = indexed_name(event.file_name.as_deref());
    let path = indexed_path(event.path.as_deref());
    put_name_and_path(&mut item, &record.connection, &sort, name.as_deref(), path.as_deref());
    if filetrail_core::search::is_external(record) {
        item.insert(EXTERNAL_PK.into(), s(record.connection.clone()));
    }
    item.insert(OBSERVED_SK.into(), s(sort));
    item.insert(
        INSERTED_PK.into(),
        s(inserted_pk(&record.connection, &event.inserted_at, shard_of(&key))),
    );
    item.insert(
        INSERTED_SK.into(),
        s(format!("{}#{}", sort_time(&event.inserted_at), event.id)),
    );
    if let Some(outcome) = &record.hash {
        item.insert(HASH.into(), json("hash outcome", outcome)?);
        let (md5, sha256) = digest_keys(outcome);
        put_opt(&mut item, MD5, md5);
        put_opt(&mut item, SHA256, sha256);
    }
    item.insert(EVENT_KEY.into(), s(key));
    Ok(item)
}

/// The entries an event has besides its item: its destination entry and its target entries.
fn entry_items(record: &EventRecord) -> Vec<Item> {
    let mut entries: Vec<Item> = destination_item(record).into_iter().collect();
    entries.extend(target_items(record));
    entries
}

/// One entry per person a share names with an address, other than the file's owner (whose
/// `owner_pk` the event carries already), keyed in `by_owner` by that person.
fn target_items(record: &EventRecord) -> Vec<Item> {
    let event = &record.event;
    let owner = event.owner_upn.as_deref().map(filetrail_core::search::user_key);
    let sort = observed_sk(&event.observed_at, &event.id);
    filetrail_core::search::sharing_targets(event)
        .into_iter()
        .filter(|person| Some(person) != owner.as_ref())
        .enumerate()
        .map(|(n, person)| {
            let mut item = Item::new();
            item.insert(EVENT_KEY.into(), s(target_key(&record.key(), n)));
            item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
            item.insert(LOW_SIGNAL.into(), AttributeValue::Bool(event.low_signal));
            item.insert(OWNER_PK.into(), s(owner_pk(&record.connection, &person)));
            item.insert(OBSERVED_SK.into(), s(sort.clone()));
            item
        })
        .collect()
}

/// The destination entry of a move, rename or copy (see the module docs): the `by_name` and
/// `by_path` keys of where the file went, those that differ from where it was. `None` when the
/// event has no destination or it is indexed already.
fn destination_item(record: &EventRecord) -> Option<Item> {
    let event = &record.event;
    let destination = event.destination.as_ref()?;
    let differs = |new: Option<String>, old: Option<String>| new.filter(|n| Some(n) != old.as_ref());
    let name = differs(
        indexed_name(destination.file_name.as_deref()),
        indexed_name(event.file_name.as_deref()),
    );
    let path = differs(
        indexed_path(destination.path.as_deref()),
        indexed_path(event.path.as_deref()),
    );
    if name.is_none() && path.is_none() {
        return None;
    }
    let sort = observed_sk(&event.observed_at, &event.id);
    let mut item = Item::new();
    item.insert(EVENT_KEY.into(), s(destination_key(&record.key())));
    item.insert(EVENT_TYPE.into(), s(event.event_type.as_str()));
    item.insert(LOW_SIGNAL.into(), AttributeValue::Bool(event.low_signal));
    put_name_and_path(&mut item, &record.connection, &sort, name.as_deref(), path.as_deref());
    item.insert(OBSERVED_SK.into(), s(sort));
    Some(item)
}

/// A file or folder name as `by_name` keys it: lowercase, never empty.
fn indexed_name(name: Option<&str>) -> Option<String> {
    name.filter(|n| !n.is_empty()).map(str::to_lowercase)
}

/// A path as `by_path` keys it: lowercase, below the root.
fn indexed_path(path: Option<&str>) -> Option<String> {
    path.map(str::to_lowercase)
        .filter(|p| !filetrail_core::search::first_segment(p).is_empty())
}

/// The `by_name` and `by_path` keys of a name and a path (each already [`indexed_name`] /
/// [`indexed_path`]) under the sort key `sort`.
fn put_name_and_path(item: &mut Item, connection: &str, sort: &str, name: Option<&str>, path: Option<&str>) {
    if let Some(name) = name {
        item.insert(NAME_PK.into(), s(name_pk(connection, name)));
        item.insert(NAME_SK.into(), s(format!("{name}#{sort}")));
    }
    if let Some(path) = path {
        item.insert(PATH_PK.into(), s(path_pk(connection, path)));
        item.insert(PATH_SK.into(), s(format!("{path}#{sort}")));
    }
}

/// `SET hash` and the digest index keys of a hashed outcome, or `SET hash REMOVE md5, sha256`
/// for an outcome without digests: the item never keeps digests its `hash` does not name.
fn hash_update(outcome: &HashOutcome) -> Result<Update, AwsError> {
    let mut update = Update::default();
    update.set(HASH, json("hash outcome", outcome)?);
    let (md5, sha256) = digest_keys(outcome);
    update.set_or_remove(MD5, md5);
    update.set_or_remove(SHA256, sha256);
    Ok(update)
}

/// The `md5` and `sha256` index keys of an outcome: lowercase hex, absent without digests (an
/// empty string is not a valid index key either).
fn digest_keys(outcome: &HashOutcome) -> (Option<AttributeValue>, Option<AttributeValue>) {
    match outcome {
        HashOutcome::Hashed(h) => {
            let key = |hex: &str| (!hex.is_empty()).then(|| s(hex.to_lowercase()));
            (key(&h.md5), key(&h.sha256))
        }
        HashOutcome::Unavailable { .. } => (None, None),
    }
}

fn item_label(item: &Item) -> String {
    match item.get(EVENT_KEY) {
        Some(AttributeValue::S(k)) => k.clone(),
        _ => "?".to_owned(),
    }
}

#[async_trait]
impl EventStore for DynamoEventStore {
    /// One conditional PutItem (`attribute_not_exists(event_key)`) per event,
    /// [`WRITE_CONCURRENCY`] at a time; an event already stored is left exactly as it is and
    /// is not reported (not an error). A key listed twice is inserted once. Returns the inserted
    /// keys in input order. On error some events may be inserted; a retry reports only the rest.
    ///
    /// A move, rename or copy's destination entry is put (unconditionally, so a retry after a
    /// crash between the two writes completes it) before the event: an entry without its event
    /// is skipped by search until the event lands.
    async fn insert_events(&self, events: &[EventRecord]) -> PortResult<Vec<String>> {
        // The days first: a day with an event always has its marker.
        for marker in day_markers(events) {
            self.table.put(marker).await?;
        }
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(events.len());
        for record in events {
            let key = record.key();
            if seen.insert(key.clone()) {
                items.push((key, event_item(record)?, entry_items(record)));
            }
        }
        let results: Vec<Result<Option<String>, AwsError>> = stream::iter(items)
            .map(|(key, item, entries)| self.insert_one(key, item, entries))
            .buffered(WRITE_CONCURRENCY)
            .collect()
            .await;
        let mut inserted = Vec::new();
        for result in results {
            inserted.extend(result?);
        }
        Ok(inserted)
    }

    /// BatchGetItem, strongly consistent.
    async fn stored_events(&self, keys: &[String]) -> PortResult<Vec<EventRecord>> {
        self.events_by_key(keys).await
    }

    /// A Query of `by_file` newest first (keys only), then BatchGetItem of the records. The
    /// index is eventually consistent: an event inserted a moment ago may be missing.
    async fn file_events(&self, drive_id: &str, item_id: &str, limit: usize) -> PortResult<Vec<EventRecord>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self
            .newest_keys(BY_FILE, FILE_PK, &file_pk(drive_id, item_id), limit)
            .await?;
        self.events_by_key(&keys).await
    }

    /// One conditional UpdateItem per event ([`WRITE_CONCURRENCY`] at a time) that sets `hash`
    /// and the `md5`/`sha256` index keys (or removes them for an outcome without digests).
    /// Keys without a stored event are skipped: nothing is created. Idempotent.
    async fn set_event_hash(&self, keys: &[String], outcome: &HashOutcome) -> PortResult<()> {
        let unique: Vec<&String> = {
            let mut seen = HashSet::new();
            keys.iter().filter(|k| seen.insert(k.as_str())).collect()
        };
        let updates: Vec<_> = unique.into_iter().map(|key| self.set_hash_one(key, outcome)).collect();
        let results: Vec<Result<bool, AwsError>> = stream::iter(updates).buffered(WRITE_CONCURRENCY).collect().await;
        for result in results {
            result?;
        }
        Ok(())
    }

    /// A strongly consistent read of the events (BatchGetItem), then one conditional UpdateItem
    /// per change, [`WRITE_CONCURRENCY`] at a time.
    async fn change_event_hashes(&self, changes: &[HashChange<'_>]) -> PortResult<Vec<String>> {
        let mut seen = HashSet::new();
        let changes: Vec<&HashChange<'_>> = changes.iter().filter(|c| seen.insert(c.key)).collect();
        let keys: Vec<String> = changes.iter().map(|c| c.key.to_owned()).collect();
        let stored: HashMap<String, Item> = self
            .items_by_key(&keys)
            .await?
            .into_iter()
            .map(|item| (item_label(&item), item))
            .collect();
        let updates: Vec<_> = changes
            .into_iter()
            .filter_map(|c| stored.get(c.key).map(|item| (c, item)))
            .map(|(c, item)| async move {
                self.change_one(c, item)
                    .await
                    .map(|done| (!done).then(|| c.key.to_owned()))
            })
            .collect();
        let results: Vec<Result<Option<String>, AwsError>> =
            stream::iter(updates).buffered(WRITE_CONCURRENCY).collect().await;
        let mut conflicts = Vec::new();
        for result in results {
            conflicts.extend(result?);
        }
        Ok(conflicts)
    }

    /// A read of the event, then one UpdateItem that rewrites `doc` with the item, sets
    /// `file_pk` (so `by_file` lists it) and sets or removes the hash outcome, on the condition
    /// that the event still has no item. An event that has this item already is returned as
    /// it is, so a repeat after a crash finds what the first run did.
    async fn resolve_item(
        &self,
        key: &str,
        item_id: &str,
        outcome: Option<&HashOutcome>,
    ) -> PortResult<Option<EventRecord>> {
        let Some(mut record) = self.events_by_key(&[key.to_owned()]).await?.pop() else {
            return Ok(None);
        };
        if let Some(current) = &record.event.item_id {
            return Ok((current == item_id).then_some(record));
        }
        let Some(drive_id) = record.event.drive_id.clone().filter(|d| !d.is_empty()) else {
            return Ok(None);
        };
        record.event.item_id = Some(item_id.to_owned());
        record.event.unresolved = None;
        record.hash = outcome.cloned();
        let mut update = match outcome {
            Some(outcome) => hash_update(outcome)?,
            None => {
                let mut update = Update::default();
                update.remove(HASH);
                update.remove(MD5);
                update.remove(SHA256);
                update
            }
        };
        let doc = EventRecord {
            hash: None,
            ..record.clone()
        };
        update.set(DOC, json("event", &doc)?);
        update.set(FILE_PK, s(file_pk(&drive_id, item_id)));
        let condition = format!(
            "attribute_exists({}) AND attribute_not_exists({})",
            update.name(EVENT_KEY),
            update.name(FILE_PK)
        );
        // A failed condition: resolved meanwhile by another round (to the item its id names).
        Ok(self.update_if(key, update, condition).await?.then_some(record))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sort_times_have_a_fixed_width_so_text_order_is_time_order() {
        let a = DateTime::parse_from_rfc3339("2026-11-22T10:11:12Z")
            .unwrap()
            .with_timezone(&Utc);
        let b = DateTime::parse_from_rfc3339("2026-11-22T10:11:12.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(sort_time(&a), "2026-11-22T10:11:12.000Z");
        assert_eq!(sort_time(&b), "2026-11-22T10:11:12.500Z");
        assert!(observed_sk(&a, "zzz") < observed_sk(&b, "aaa"));
    }

    #[test]
    fn shards_are_stable_and_spread_over_all_sixteen() {
        assert_eq!(shard_of("contoso#1"), shard_of("contoso#1"));
        let used: HashSet<u64> = (0..1000).map(|i| shard_of(&format!("contoso#{i}"))).collect();
        assert_eq!(used.len() as u64, INSERTED_SHARDS);
        assert!(used.iter().all(|s| *s < INSERTED_SHARDS));
    }

    #[test]
    fn inserted_partition_names_the_connection_day_and_shard() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T23:59:59.999Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(inserted_pk("contoso", &t, 7), "contoso#2026-11-22#7");
    }

    #[test]
    fn an_outcome_without_digests_removes_the_digest_keys() {
        let update = hash_update(&HashOutcome::Unavailable { reason: "gone".into() }).unwrap();
        let expression = update.expression();
        assert!(expression.starts_with("SET #hash = :hash"), "{expression}");
        assert!(expression.contains("REMOVE #md5, #sha256"), "{expression}");
    }
}
