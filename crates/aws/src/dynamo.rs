//! What the DynamoDB stores share: a table handle that counts its requests, batch writes and
//! reads that finish what DynamoDB leaves unprocessed, GSI counts, and the attribute codec.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, KeysAndAttributes, PutRequest, Select, WriteRequest};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AwsError, Target, from_sdk};

/// One DynamoDB item: attribute name to value.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// BatchWriteItem takes at most 25 put or delete requests per call (DynamoDB API Reference,
/// BatchWriteItem: "up to 25 item put or delete operations").
pub const BATCH_WRITE_MAX: usize = 25;
/// BatchGetItem reads at most 100 items per call (DynamoDB API Reference, BatchGetItem: "as many
/// as 100 items").
pub const BATCH_GET_MAX: usize = 100;
/// Calls per batch while DynamoDB keeps returning `UnprocessedItems`/`UnprocessedKeys`; with the
/// backoff below that waits at most 0.05+0.1+0.2+0.4+0.8+1.6+2×3 ≈ 9 s before giving up.
pub(crate) const UNPROCESSED_MAX_ATTEMPTS: u32 = 10;
/// First wait before re-sending unprocessed entries; doubles per attempt (AWS: "retry the batch
/// operation immediately, the underlying read or write requests can still fail due to throttling
/// … we strongly recommend that you use an exponential backoff algorithm").
pub(crate) const UNPROCESSED_BACKOFF_START: Duration = Duration::from_millis(50);
/// Cap of that backoff.
pub(crate) const UNPROCESSED_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Requests a store sent to DynamoDB since it was built, for benchmarks ("DynamoDB writes per
/// 1,000 items"). Every API call counts once, including re-sends of unprocessed entries.
#[derive(Debug, Default)]
pub struct RequestCounts {
    writes: AtomicU64,
    reads: AtomicU64,
}

impl RequestCounts {
    /// Write calls (PutItem, UpdateItem, DeleteItem, BatchWriteItem).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Read calls (GetItem, BatchGetItem, Query).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub(crate) fn wrote(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

/// A table, the setting that named it (for error fixes) and its request counters.
#[derive(Debug)]
pub(crate) struct Table {
    pub client: Client,
    pub name: String,
    pub setting: &'static str,
    pub counts: RequestCounts,
}

/// The accessors every store over one [`Table`] (in its `table` field) offers: the table's name
/// and the DynamoDB calls issued so far (a batch call counts once), for benchmarks and summaries.
macro_rules! table_accessors {
    () => {
        pub fn table_name(&self) -> &str {
            &self.table.name
        }

        /// DynamoDB write calls issued so far (a BatchWriteItem counts once).
        pub fn write_requests(&self) -> u64 {
            self.table.counts.writes()
        }

        /// DynamoDB read calls issued so far (a BatchGetItem or a Query page counts once).
        pub fn read_requests(&self) -> u64 {
            self.table.counts.reads()
        }

        /// Both counters.
        pub fn request_counts(&self) -> &$crate::dynamo::RequestCounts {
            &self.table.counts
        }
    };
}
pub(crate) use table_accessors;

impl Table {
    pub fn new(client: Client, name: impl Into<String>, setting: &'static str) -> Self {
        Self {
            client,
            name: name.into(),
            setting,
            counts: RequestCounts::default(),
        }
    }

    pub fn target(&self) -> Target<'_> {
        Target {
            service: "DynamoDB",
            resource: &self.name,
            setting: self.setting,
        }
    }

    /// Maps an SDK error of `operation` on this table.
    pub fn err<E>(&self, operation: &'static str, err: SdkError<E>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        from_sdk(operation, self.target(), err)
    }

    /// `Ok(false)` when a conditional write failed only because its condition did not hold
    /// (`failed_condition`), else the error as [`Self::err`] names it.
    fn condition_failed<E>(
        &self,
        operation: &'static str,
        err: SdkError<E>,
        failed_condition: impl Fn(&E) -> bool,
    ) -> Result<bool, AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if err.as_service_error().is_some_and(failed_condition) {
            Ok(false)
        } else {
            Err(self.err(operation, err))
        }
    }

    /// An item on this table that does not decode.
    pub fn malformed(&self, key: impl Into<String>, detail: impl Into<String>) -> AwsError {
        AwsError::Malformed {
            table: self.name.clone(),
            key: key.into(),
            detail: detail.into(),
        }
    }

    /// Sends put/delete requests in batches of [`BATCH_WRITE_MAX`], re-sending unprocessed ones
    /// with exponential backoff. Succeeds once every request was applied; fails with
    /// [`AwsError::Unprocessed`] (retryable) when DynamoDB keeps refusing some. The requests must
    /// not address the same key twice (DynamoDB rejects such a batch).
    pub async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), AwsError> {
        let mut rest = requests;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(BATCH_WRITE_MAX));
            let batch = std::mem::replace(&mut rest, tail);
            self.write_one_batch(batch).await?;
        }
        Ok(())
    }

    async fn write_one_batch(&self, batch: Vec<WriteRequest>) -> Result<(), AwsError> {
        let total = batch.len();
        let mut pending = batch;
        let mut delay = UNPROCESSED_BACKOFF_START;
        for attempt in 1..=UNPROCESSED_MAX_ATTEMPTS {
            self.counts.wrote();
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.name, pending)
                .send()
                .await
                .map_err(|e| self.err("BatchWriteItem", e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.name))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            tracing::debug!(table = %self.name, unprocessed = pending.len(), attempt, "re-sending unprocessed writes");
            if attempt < UNPROCESSED_MAX_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(UNPROCESSED_BACKOFF_MAX);
            }
        }
        Err(AwsError::Unprocessed {
            service: "DynamoDB",
            operation: "BatchWriteItem",
            resource: self.name.clone(),
            remaining: pending.len(),
            total,
            attempts: UNPROCESSED_MAX_ATTEMPTS,
            detail: "UnprocessedItems".into(),
        })
    }

    /// Reads items by key in batches of [`BATCH_GET_MAX`] with strongly consistent reads,
    /// re-requesting unprocessed keys with backoff. Missing items are absent from the result;
    /// the order is unspecified. `projection` limits the attributes returned. Keys must be
    /// distinct.
    pub async fn batch_get(&self, keys: Vec<Item>, projection: Option<&[&str]>) -> Result<Vec<Item>, AwsError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut builder = KeysAndAttributes::builder()
                .set_keys(Some(chunk.to_vec()))
                .consistent_read(true);
            if let Some(attrs) = projection {
                let (expr, names) = projection_of(attrs);
                builder = builder
                    .projection_expression(expr)
                    .set_expression_attribute_names(Some(names));
            }
            let request = builder.build().map_err(|e| self.build_error("BatchGetItem", &e))?;
            self.get_one_batch(request, &mut found).await?;
        }
        Ok(found)
    }

    async fn get_one_batch(&self, request: KeysAndAttributes, found: &mut Vec<Item>) -> Result<(), AwsError> {
        let total = request.keys().len();
        let mut pending = request;
        let mut delay = UNPROCESSED_BACKOFF_START;
        for attempt in 1..=UNPROCESSED_MAX_ATTEMPTS {
            self.counts.read();
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.name, pending)
                .send()
                .await
                .map_err(|e| self.err("BatchGetItem", e))?;
            found.extend(out.responses.and_then(|mut m| m.remove(&self.name)).unwrap_or_default());
            match out
                .unprocessed_keys
                .and_then(|mut m| m.remove(&self.name))
                .filter(|k| !k.keys().is_empty())
            {
                None => return Ok(()),
                Some(rest) => pending = rest,
            }
            tracing::debug!(table = %self.name, unprocessed = pending.keys().len(), attempt, "re-requesting unprocessed keys");
            if attempt < UNPROCESSED_MAX_ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(UNPROCESSED_BACKOFF_MAX);
            }
        }
        Err(AwsError::Unprocessed {
            service: "DynamoDB",
            operation: "BatchGetItem",
            resource: self.name.clone(),
            remaining: pending.keys().len(),
            total,
            attempts: UNPROCESSED_MAX_ATTEMPTS,
            detail: "UnprocessedKeys".into(),
        })
    }

    /// The item of `key`, read strongly consistently; `None` when there is none.
    pub async fn get(&self, key: Item) -> Result<Option<Item>, AwsError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err("GetItem", e))?;
        Ok(out.item)
    }

    /// Puts `item` unconditionally (creating or replacing it).
    pub async fn put(&self, item: Item) -> Result<(), AwsError> {
        self.counts.wrote();
        self.client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| self.err("PutItem", e))?;
        Ok(())
    }

    /// Deletes the item of `key` unconditionally (deleting an absent item is not an error).
    pub async fn delete(&self, key: Item) -> Result<(), AwsError> {
        self.counts.wrote();
        self.client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .send()
            .await
            .map_err(|e| self.err("DeleteItem", e))?;
        Ok(())
    }

    /// Puts `item` if `condition` holds (with `#name` → attribute and `:value` placeholders);
    /// `Ok(false)` when it does not.
    pub async fn put_if(
        &self,
        item: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, AwsError> {
        self.counts.wrote();
        let mut request = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression(condition);
        for (placeholder, attr) in names {
            request = request.expression_attribute_names(*placeholder, *attr);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) => self.condition_failed("PutItem", e, |se| se.is_conditional_check_failed_exception()),
        }
    }

    /// Applies `update` to the item of `key` if `condition` holds; `Ok(false)` when it does not.
    /// The condition is written with the update's own placeholders ([`Update::name`],
    /// [`Update::value`]).
    pub async fn update_if(&self, key: Item, update: Update, condition: &str) -> Result<bool, AwsError> {
        let (expression, names, values) = update.into_parts();
        self.counts.wrote();
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => self.condition_failed("UpdateItem", e, |se| se.is_conditional_check_failed_exception()),
        }
    }

    /// Deletes the item of `key` if `condition` holds; `Ok(false)` when it does not.
    pub async fn delete_if(
        &self,
        key: Item,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool, AwsError> {
        self.counts.wrote();
        let mut request = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(key))
            .condition_expression(condition);
        for (placeholder, attr) in names {
            request = request.expression_attribute_names(*placeholder, *attr);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) => self.condition_failed("DeleteItem", e, |se| se.is_conditional_check_failed_exception()),
        }
    }

    /// A Query of this table, to be completed with its key condition.
    pub fn query(&self) -> QueryFluentBuilder {
        self.client.query().table_name(&self.name)
    }

    /// Sends `request` (a Query of this table) and every page after the first; all the items.
    pub async fn query_all(&self, request: QueryFluentBuilder) -> Result<Vec<Item>, AwsError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            self.counts.read();
            let out = request
                .clone()
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// The partition key attribute `pk_attr` of every item whose `key_attr` equals `key` on
    /// `index`, following every page (eventually consistent, as index reads are).
    pub async fn index_partition_keys(
        &self,
        index: &str,
        key_attr: &str,
        key: &str,
        pk_attr: &str,
    ) -> Result<Vec<String>, AwsError> {
        let request = self
            .query()
            .index_name(index)
            .key_condition_expression("#k = :k")
            .projection_expression("#pk")
            .expression_attribute_names("#k", key_attr)
            .expression_attribute_names("#pk", pk_attr)
            .expression_attribute_values(":k", s(key));
        let items = self.query_all(request).await?;
        items
            .iter()
            .map(|item| self.fields(item, format!("{index} {key_attr}={key}")).s(pk_attr))
            .collect()
    }

    /// Counts the items whose `key_attr` equals `key` on `index`, following every page.
    pub async fn count(&self, index: &str, key_attr: &str, key: &str) -> Result<u64, AwsError> {
        let mut total = 0u64;
        let mut start = None;
        loop {
            self.counts.read();
            let out = self
                .client
                .query()
                .table_name(&self.name)
                .index_name(index)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", key_attr)
                .expression_attribute_values(":k", s(key))
                .select(Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.err("Query", e))?;
            total += u64::try_from(out.count()).unwrap_or(0);
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(total);
            }
        }
    }

    pub fn build_error(&self, operation: &'static str, err: &aws_sdk_dynamodb::error::BuildError) -> AwsError {
        AwsError::Service(Box::new(crate::error::ServiceFailure {
            class: filetrail_core::RetryClass::Terminal,
            service: "DynamoDB",
            operation,
            resource: self.name.clone(),
            code: "BuildError".into(),
            message: err.to_string(),
            fix: Some("this is a bug in filetrail-aws; report it".into()),
        }))
    }

    /// Reads one attribute set of `item` with errors naming this table and the item's key.
    pub fn fields<'a>(&'a self, item: &'a Item, key: String) -> Fields<'a> {
        Fields { table: self, item, key }
    }
}

/// `#a, #b` and `{#a: a, #b: b}` for a projection of `attrs` (placeholders avoid reserved words
/// such as `path`, `size`, `state`).
pub(crate) fn projection_of(attrs: &[&str]) -> (String, HashMap<String, String>) {
    let names: HashMap<String, String> = attrs.iter().map(|a| (format!("#{a}"), (*a).to_owned())).collect();
    let expr = attrs.iter().map(|a| format!("#{a}")).collect::<Vec<_>>().join(", ");
    (expr, names)
}

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A timestamp as an RFC 3339 UTC string with as many fractional digits as it needs, so it
/// reads back exactly.
pub(crate) fn ts(value: &DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(value.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A value as a JSON string attribute.
pub(crate) fn json<T: Serialize>(what: &'static str, value: &T) -> Result<AttributeValue, AwsError> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| AwsError::Encode {
            what,
            detail: e.to_string(),
        })
}

/// Sets `name` when `value` is present (absent optional fields are absent attributes).
pub(crate) fn put_opt(item: &mut Item, name: &str, value: Option<AttributeValue>) {
    if let Some(v) = value {
        item.insert(name.to_owned(), v);
    }
}

/// A `pk`/`sk` key.
pub(crate) fn key(pk: impl Into<String>, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// Encodes a `LastEvaluatedKey` (all string attributes in this crate's layouts) as an opaque
/// cursor.
pub(crate) fn encode_cursor(table: &Table, last_key: &Item) -> Result<String, AwsError> {
    let mut plain = std::collections::BTreeMap::new();
    for (name, value) in last_key {
        let AttributeValue::S(v) = value else {
            return Err(table.malformed(format!("{last_key:?}"), format!("key attribute {name} is not a string")));
        };
        plain.insert(name.as_str(), v.as_str());
    }
    serde_json::to_string(&plain).map_err(|e| AwsError::Encode {
        what: "cursor",
        detail: e.to_string(),
    })
}

/// Decodes a cursor made by [`encode_cursor`].
pub(crate) fn decode_cursor(cursor: &str) -> Result<Item, AwsError> {
    let plain: HashMap<String, String> = serde_json::from_str(cursor).map_err(|e| AwsError::BadCursor {
        cursor: cursor.to_owned(),
        detail: e.to_string(),
    })?;
    Ok(plain.into_iter().map(|(k, v)| (k, AttributeValue::S(v))).collect())
}

/// An UpdateItem expression built attribute by attribute, with `#name`/`:name` placeholders for
/// every attribute (so reserved words such as `state` or `bytes` need no care).
#[derive(Debug, Default)]
pub(crate) struct Update {
    sets: Vec<String>,
    removes: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Update {
    /// The `#name` placeholder of an attribute, registering it.
    pub fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    /// Registers a `:placeholder` value for a condition.
    pub fn value(&mut self, placeholder: &str, value: AttributeValue) {
        self.values.insert(placeholder.to_owned(), value);
    }

    pub fn set(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        self.values.insert(format!(":{attr}"), value);
        self.sets.push(format!("{name} = :{attr}"));
    }

    pub fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.removes.push(name);
    }

    /// Sets the attribute when `value` is present, removes it otherwise.
    pub fn set_or_remove(&mut self, attr: &str, value: Option<AttributeValue>) {
        match value {
            Some(v) => self.set(attr, v),
            None => self.remove(attr),
        }
    }

    /// The `SET … REMOVE …` expression.
    pub fn expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.sets.is_empty() {
            parts.push(format!("SET {}", self.sets.join(", ")));
        }
        if !self.removes.is_empty() {
            parts.push(format!("REMOVE {}", self.removes.join(", ")));
        }
        parts.join(" ")
    }

    /// Names and values for the request (`None` when empty: DynamoDB rejects empty maps).
    pub fn into_parts(self) -> (String, Option<HashMap<String, String>>, Option<Item>) {
        let expression = self.expression();
        let names = (!self.names.is_empty()).then_some(self.names);
        let values = (!self.values.is_empty()).then_some(self.values);
        (expression, names, values)
    }
}

/// Typed access to an item's attributes; errors name the table and the item's key.
pub(crate) struct Fields<'a> {
    table: &'a Table,
    item: &'a Item,
    key: String,
}

impl Fields<'_> {
    fn malformed(&self, detail: String) -> AwsError {
        self.table.malformed(self.key.clone(), detail)
    }

    fn wrong_type(&self, name: &str, expected: &str) -> AwsError {
        self.malformed(format!("attribute {name} is not {expected}"))
    }

    pub fn opt_s(&self, name: &str) -> Result<Option<String>, AwsError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.clone())),
            Some(_) => Err(self.wrong_type(name, "a string")),
        }
    }

    pub fn s(&self, name: &str) -> Result<String, AwsError> {
        self.opt_s(name)?
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    pub fn n(&self, name: &str) -> Result<u64, AwsError> {
        match self.item.get(name) {
            Some(AttributeValue::N(v)) => v
                .parse()
                .map_err(|_| self.malformed(format!("attribute {name}={v} is not a non-negative integer"))),
            None => Err(self.malformed(format!("attribute {name} is missing"))),
            Some(_) => Err(self.wrong_type(name, "a number")),
        }
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::Bool(v)) => Ok(Some(*v)),
            Some(_) => Err(self.wrong_type(name, "a boolean")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, AwsError> {
        self.opt_bool(name)?
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    pub fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, AwsError> {
        self.opt_s(name)?
            .map(|v| {
                DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| self.malformed(format!("attribute {name}={v:?} is not an RFC 3339 time: {e}")))
            })
            .transpose()
    }

    pub fn time(&self, name: &str) -> Result<DateTime<Utc>, AwsError> {
        self.opt_time(name)?
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    pub fn opt_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, AwsError> {
        self.opt_s(name)?
            .map(|v| {
                serde_json::from_str(&v)
                    .map_err(|e| self.malformed(format!("attribute {name} is not the expected JSON: {e}")))
            })
            .transpose()
    }

    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T, AwsError> {
        self.opt_json(name)?
            .ok_or_else(|| self.malformed(format!("attribute {name} is missing")))
    }

    pub fn opt_map(&self, name: &str) -> Result<Option<&Item>, AwsError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::M(m)) => Ok(Some(m)),
            Some(_) => Err(self.wrong_type(name, "a map")),
        }
    }
}

/// A BatchWriteItem put of `item`.
pub(crate) fn put_request(item: Item) -> Result<WriteRequest, AwsError> {
    let put = PutRequest::builder()
        .set_item(Some(item))
        .build()
        .map_err(|e| AwsError::Encode {
            what: "put request",
            detail: e.to_string(),
        })?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// A BatchWriteItem delete of `key`.
pub(crate) fn delete_request(key: Item) -> Result<WriteRequest, AwsError> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key))
        .build()
        .map_err(|e| AwsError::Encode {
            what: "delete request",
            detail: e.to_string(),
        })?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_their_full_precision() {
        let t = DateTime::parse_from_rfc3339("2026-11-22T10:11:12.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        let AttributeValue::S(text) = ts(&t) else {
            panic!("not a string")
        };
        assert_eq!(text, "2026-11-22T10:11:12.123456789Z");
        let whole = DateTime::parse_from_rfc3339("2026-11-22T10:11:12Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(ts(&whole), s("2026-11-22T10:11:12Z"));
    }

    #[test]
    fn cursor_round_trips_a_last_evaluated_key() {
        let last: Item = HashMap::from([("pk".into(), s("DRIVE#b!1")), ("gsi1sk".into(), s("b!1"))]);
        let client = Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let table = Table::new(client, "t", "FILETRAIL_STATE_TABLE");
        let cursor = encode_cursor(&table, &last).unwrap();
        assert_eq!(decode_cursor(&cursor).unwrap(), last);
    }

    #[test]
    fn cursor_that_is_not_ours_is_rejected() {
        assert!(matches!(decode_cursor("page-2"), Err(AwsError::BadCursor { .. })));
    }
}
