//! The adapters of the S3 export ([`filetrail_core::export`]): the events table's insertion
//! index read one shard page at a time ([`InsertedEvents`]), the deployment bucket's export
//! prefix ([`ExportSink`]), and the export checkpoint on the state table
//! ([`ExportCheckpoints`]).
//!
//! | record | `pk` | `sk` | attributes |
//! |---|---|---|---|
//! | export checkpoint | `CONN#{id}` | `EXPORT` | `next_window` (RFC 3339, the condition of every save), `doc` (the checkpoint as JSON) |
//! | stale export window | `CONN#{id}` | `EXPORT_STALE#{window start, RFC 3339}` | `window` (RFC 3339), `marked_at` (RFC 3339 with nanoseconds, the condition of its deletion) |

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use filetrail_core::events::{EventRecord, event_key};
use filetrail_core::export::{
    EXPORT_PREFIX, ExportCheckpoint, ExportCheckpoints, ExportSink, ExportWindow, InsertedEvents, InsertedPage,
    StaleExportMarks, StaleWindow,
};
use filetrail_core::ports::PortResult;

use crate::config::{EVENTS_TABLE_VAR, STATE_TABLE_VAR};
use crate::dynamo::{Item, Table, json, key, s, ts};
use crate::error::AwsError;
use crate::events::{
    BY_INSERTED, DOC, EVENT_KEY, HASH, INSERTED_PK, INSERTED_SHARDS, INSERTED_SK, inserted_pk, sort_time,
};
use crate::objects::BucketObjects;

/// Content type of an export object (gzip JSON Lines; no `Content-Encoding`, so every client
/// downloads the `.json.gz` as it is stored, as Athena reads it).
pub const EXPORT_CONTENT_TYPE: &str = "application/gzip";

const EXPORT_SK: &str = "EXPORT";
const NEXT_WINDOW: &str = "next_window";
const STALE_SK_PREFIX: &str = "EXPORT_STALE#";
const STALE_WINDOW: &str = "window";
const MARKED_AT: &str = "marked_at";

/// A mark's time at full precision: clearing compares it exactly.
fn mark_time(t: &DateTime<Utc>) -> AttributeValue {
    s(t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// The events table's `by_inserted` index, read for exports. Eventually consistent, which the
/// export's settle margin covers.
#[derive(Debug)]
pub struct DynamoInsertedEvents {
    table: Table,
}

impl DynamoInsertedEvents {
    /// A reader of `table` (named by `FILETRAIL_EVENTS_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, EVENTS_TABLE_VAR),
        }
    }

    crate::dynamo::table_accessors!();

    fn decode(&self, item: &Item) -> Result<EventRecord, AwsError> {
        let label = match item.get(EVENT_KEY) {
            Some(AttributeValue::S(k)) => k.clone(),
            _ => "?".to_owned(),
        };
        let f = self.table.fields(item, label);
        let mut record: EventRecord = f.json(DOC)?;
        record.hash = f.opt_json(HASH)?;
        Ok(record)
    }
}

/// `inserted_sk` of a stored event: its insertion time to the millisecond, then its id.
fn inserted_sk(record: &EventRecord) -> String {
    format!("{}#{}", sort_time(&record.event.inserted_at), record.event.id)
}

#[async_trait]
impl InsertedEvents for DynamoInsertedEvents {
    /// One Query of the inserted-day markers ([`crate::events::query_days`]).
    async fn days_with_events(
        &self,
        connection: &str,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> PortResult<Vec<chrono::NaiveDate>> {
        Ok(crate::events::query_days(&self.table, connection, true, Some(from), Some(to)).await?)
    }

    fn shards(&self) -> u64 {
        INSERTED_SHARDS
    }

    /// One Query of `by_inserted`: partition `{connection}#{day}#{shard}`, sort key between the
    /// window's start and end (an end key `…T11:00:00.000Z` sorts below every key of 11:00
    /// itself, which all continue with `#id`), ascending, resumed after `after` by rebuilding
    /// its index key as `ExclusiveStartKey`.
    async fn inserted_page(
        &self,
        connection: &str,
        window: &ExportWindow,
        shard: u64,
        after: Option<&EventRecord>,
        limit: usize,
    ) -> PortResult<InsertedPage> {
        let partition = inserted_pk(connection, &window.start(), shard);
        let start = after.map(|record| {
            Item::from([
                (INSERTED_PK.to_owned(), s(&partition)),
                (INSERTED_SK.to_owned(), s(inserted_sk(record))),
                (EVENT_KEY.to_owned(), s(event_key(connection, &record.event.id))),
            ])
        });
        self.table.counts.read();
        let out = self
            .table
            .client
            .query()
            .table_name(&self.table.name)
            .index_name(BY_INSERTED)
            .key_condition_expression("#p = :p AND #s BETWEEN :from AND :to")
            .expression_attribute_names("#p", INSERTED_PK)
            .expression_attribute_names("#s", INSERTED_SK)
            .expression_attribute_values(":p", s(&partition))
            .expression_attribute_values(":from", s(sort_time(&window.start())))
            .expression_attribute_values(":to", s(sort_time(&window.end())))
            .scan_index_forward(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| self.table.err("Query", e))?;
        let events = out
            .items()
            .iter()
            .map(|item| self.decode(item))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InsertedPage {
            more: out.last_evaluated_key.is_some(),
            events,
        })
    }
}

/// The export prefix of the deployment bucket.
#[derive(Debug, Clone)]
pub struct S3ExportSink {
    objects: BucketObjects,
}

impl S3ExportSink {
    pub fn new(objects: BucketObjects) -> Self {
        Self { objects }
    }

    pub fn bucket(&self) -> &str {
        self.objects.bucket()
    }
}

#[async_trait]
impl ExportSink for S3ExportSink {
    /// One PutObject; a key written before is replaced (the bucket is versioned, and its
    /// lifecycle expires the old version after 90 days).
    async fn put_object(&self, key: &str, body: Vec<u8>) -> PortResult<()> {
        self.objects.put(key, body, EXPORT_CONTENT_TYPE).await?;
        Ok(())
    }

    fn location(&self) -> String {
        format!("s3://{}/{EXPORT_PREFIX}", self.objects.bucket())
    }
}

/// Export checkpoints on the state table.
#[derive(Debug)]
pub struct DynamoExportCheckpoints {
    table: Table,
}

impl DynamoExportCheckpoints {
    /// Checkpoints in `table` (named by `FILETRAIL_STATE_TABLE`). Makes no request.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table, STATE_TABLE_VAR),
        }
    }

    crate::dynamo::table_accessors!();
}

fn conn_pk(connection: &str) -> String {
    format!("CONN#{connection}")
}

fn stale_sk(window: &ExportWindow) -> String {
    format!("{STALE_SK_PREFIX}{}", sort_time(&window.start()))
}

#[async_trait]
impl StaleExportMarks for DynamoExportCheckpoints {
    /// One PutItem per window (a hash job changes events of one or two windows).
    async fn mark_stale(&self, connection: &str, windows: &[ExportWindow], at: DateTime<Utc>) -> PortResult<()> {
        for window in windows {
            let mut item = key(conn_pk(connection), stale_sk(window));
            item.insert(STALE_WINDOW.into(), ts(&window.start()));
            item.insert(MARKED_AT.into(), mark_time(&at));
            self.table.put(item).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ExportCheckpoints for DynamoExportCheckpoints {
    /// A strongly consistent GetItem.
    async fn export_checkpoint(&self, connection: &str) -> PortResult<Option<ExportCheckpoint>> {
        let Some(item) = self.table.get(key(conn_pk(connection), EXPORT_SK)).await? else {
            return Ok(None);
        };
        let label = format!("{}/{EXPORT_SK}", conn_pk(connection));
        Ok(Some(self.table.fields(&item, label).json("doc")?))
    }

    /// A PutItem conditional on the stored `next_window` (or on no checkpoint at all).
    async fn save_export_checkpoint(
        &self,
        connection: &str,
        expected: Option<&ExportCheckpoint>,
        checkpoint: &ExportCheckpoint,
    ) -> PortResult<bool> {
        let mut item = key(conn_pk(connection), EXPORT_SK);
        item.insert(NEXT_WINDOW.into(), ts(&checkpoint.next_window));
        item.insert("doc".into(), json("export checkpoint", checkpoint)?);
        let written = match expected {
            None => {
                self.table
                    .put_if(item, "attribute_not_exists(#pk)", &[("#pk", "pk")], vec![])
                    .await?
            }
            Some(e) => {
                self.table
                    .put_if(
                        item,
                        "#next = :expected",
                        &[("#next", NEXT_WINDOW)],
                        vec![(":expected", ts(&e.next_window))],
                    )
                    .await?
            }
        };
        Ok(written)
    }

    /// A strongly consistent Query of the connection's `EXPORT_STALE#` items (sorted by window).
    async fn stale_windows(&self, connection: &str) -> PortResult<Vec<StaleWindow>> {
        let pk = conn_pk(connection);
        let request = self
            .table
            .query()
            .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":prefix", s(STALE_SK_PREFIX))
            .consistent_read(true);
        let items = self.table.query_all(request).await?;
        let mut stale = Vec::with_capacity(items.len());
        for item in &items {
            let f = self.table.fields(item, format!("{pk}/{STALE_SK_PREFIX}"));
            stale.push(StaleWindow {
                window: ExportWindow::containing(f.time(STALE_WINDOW)?),
                marked_at: f.time(MARKED_AT)?,
            });
        }
        Ok(stale)
    }

    /// A DeleteItem conditional on `marked_at` being the one read.
    async fn clear_stale(&self, connection: &str, stale: &StaleWindow) -> PortResult<bool> {
        let key = key(conn_pk(connection), stale_sk(&stale.window));
        let deleted = self
            .table
            .delete_if(
                key,
                "#m = :m",
                &[("#m", MARKED_AT)],
                vec![(":m", mark_time(&stale.marked_at))],
            )
            .await?;
        Ok(deleted)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use filetrail_core::export::ExportLine;
    use serde_yaml::Value;

    /// The Glue table's columns, read from template.yaml as `(name, type)`.
    fn glue_columns() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        // The template's short-form intrinsics (`!Ref`) are YAML tags serde_yaml keeps.
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let columns = &doc["Resources"]["FileEventsTable"]["Properties"]["TableInput"]["StorageDescriptor"]["Columns"];
        columns
            .as_sequence()
            .expect("FileEventsTable has columns")
            .iter()
            .map(|c| {
                (
                    c["Name"].as_str().unwrap().to_owned(),
                    c["Type"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_glue_table_declares_every_export_column_with_its_json_type() {
        let sample: serde_json::Value = serde_json::from_str(
            r#"{"connection":"c","source":"onedrive","id":"1","event_type":"modified","low_signal":false,
                "operation":"FileModified","record_type":6,"item_kind":"file",
                "actor":{"id":"a@b.c","kind":"user"},"observed_at":"2026-11-22T10:00:00Z",
                "inserted_at":"2026-11-22T10:00:00Z"}"#,
        )
        .unwrap();
        let record: filetrail_core::events::EventRecord = serde_json::from_value(sample).unwrap();
        let line = serde_json::to_value(ExportLine::of(&record)).unwrap();
        let line_columns: Vec<&String> = line.as_object().unwrap().keys().collect();
        let glue = glue_columns();
        let mut glue_names: Vec<&String> = glue.iter().map(|(n, _)| n).collect();
        let mut sorted_line = line_columns.clone();
        sorted_line.sort();
        glue_names.sort();
        assert_eq!(
            glue_names, sorted_line,
            "template.yaml FileEventsTable columns vs ExportLine"
        );
        for (name, kind) in &glue {
            let expected = match name.as_str() {
                "low_signal" | "actor_external" | "sharing_external" => "boolean",
                "record_type" | "hashed_size" => "bigint",
                "sharing_targets" => "array<struct<name:string,kind:string,email:string,external:boolean>>",
                _ => "string",
            };
            assert_eq!(kind, expected, "column {name}");
        }
    }
}
