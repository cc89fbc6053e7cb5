//! Executes a [`SearchQuery`] on the events table: Query pages of the one index its
//! [`Access`] names (never a Scan), merged newest first across the partitions that access spans,
//! then BatchGetItem of the records (100 per call) and the query's remaining filters.
//!
//! Indexes sorted by time (`by_sha256`, `by_md5`, `by_actor` + `by_owner`, `by_external`,
//! `by_day`) are read lazily, one page per partition at a time, and merged: a search for the
//! newest 100 events reads about 100 index entries per partition however large the table is.
//! Prefix indexes (`by_name`, `by_path`) sort by name or path first, so every entry under the
//! prefix is read (keys and time only, ~250 bytes each, 4,000 per 1 MB page) and sorted by time;
//! [`MAX_PREFIX_MATCHES`] bounds that.

use std::collections::{BTreeMap, HashSet, VecDeque};

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use chrono::NaiveDate;
use filetrail_core::PortError;
use filetrail_core::events::EventRecord;
use filetrail_core::ports::PortResult;
use filetrail_core::search::{Access, Position, SearchQuery};
use futures_util::future::try_join_all;

use crate::dynamo::{Item, s};
use crate::events::{
    ACTOR_PK, BY_ACTOR, BY_DAY, BY_EXTERNAL, BY_MD5, BY_NAME, BY_OWNER, BY_PATH, BY_SHA256, DAY_PK, DAY_SHARDS,
    DynamoEventStore, EVENT_KEY, EVENT_TYPE, EXTERNAL_PK, MD5, NAME_PK, NAME_SK, OBSERVED_SK, OWNER_PK, PATH_PK,
    PATH_SK, SHA256, actor_pk, day_pk, days_pk, event_key_of, name_pk, owner_pk, path_pk, sort_time,
};

/// Most index entries a prefix search (`--file-name`, `--path`) reads before asking for a
/// narrower filter: 200,000 entries of ~250 bytes are 50 MB read, 50 Query pages.
pub const MAX_PREFIX_MATCHES: usize = 200_000;
/// Index entries per Query page of a time-sorted index: enough for a typical page of results
/// after filters, small enough that a selective search stops early.
const PAGE: i32 = 200;
/// Records read per BatchGetItem (the DynamoDB maximum).
const GET_CHUNK: usize = 100;
/// Sorts after every record id in an `observed_sk` (`{time}#{id}`, ids are GUIDs), so
/// `{time}#~` bounds every key of that millisecond from above.
const AFTER_IDS: &str = "#~";

/// One page of results, newest first.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub events: Vec<EventRecord>,
    /// Where the next page starts, when there may be more.
    pub next: Option<Position>,
    /// The index reads the search made: `Query {index} {partition attribute} = {value}`, once
    /// per partition (for `--explain` and the tests that check no query scans).
    pub plan: Vec<String>,
}

/// One partition of one index, read newest first.
#[derive(Debug)]
struct Stream {
    index: &'static str,
    pk_attr: &'static str,
    pk: String,
    start: Option<Item>,
    done: bool,
    /// `(observed_sk, event_key)`, newest first.
    buf: VecDeque<(String, String)>,
}

impl Stream {
    fn new(index: &'static str, pk_attr: &'static str, pk: String) -> Self {
        Self {
            index,
            pk_attr,
            pk,
            start: None,
            done: false,
            buf: VecDeque::new(),
        }
    }
}

impl DynamoEventStore {
    /// Runs `query` (already validated). A search by time alone reads only the days that hold
    /// events (their markers), so it needs no floor: without `since` it covers every recorded
    /// day.
    ///
    /// # Errors
    /// DynamoDB failures, and a terminal error when a prefix matches more than
    /// [`MAX_PREFIX_MATCHES`] entries (the message says how to narrow it).
    pub async fn search(&self, query: &SearchQuery) -> PortResult<SearchPage> {
        let mut run = Run {
            store: self,
            query,
            page: SearchPage::default(),
            seen: HashSet::new(),
        };
        let lo = query.since.map(|t| sort_time(&t));
        let hi = query.upper().map(|t| format!("{}{AFTER_IDS}", sort_time(&t)));
        let bounds = (lo.as_deref(), hi.as_deref());
        match query.access() {
            Access::Sha256(h) => run.merged(vec![Stream::new(BY_SHA256, SHA256, h)], bounds).await?,
            Access::Md5(h) => run.merged(vec![Stream::new(BY_MD5, MD5, h)], bounds).await?,
            Access::User(upn) => {
                let mut streams = Vec::new();
                for c in &query.connections {
                    streams.push(Stream::new(BY_ACTOR, ACTOR_PK, actor_pk(c, &upn)));
                    streams.push(Stream::new(BY_OWNER, OWNER_PK, owner_pk(c, &upn)));
                }
                run.merged(streams, bounds).await?;
            }
            Access::External => {
                let streams = (query.connections.iter())
                    .map(|c| Stream::new(BY_EXTERNAL, EXTERNAL_PK, c.clone()))
                    .collect();
                run.merged(streams, bounds).await?;
            }
            Access::Day => {
                // Only the days that hold events, newest first: a search over years of calendar
                // costs what its events cost.
                let from = query.since.map(|t| t.date_naive());
                let to = query.upper().map(|t| t.date_naive());
                let mut days: BTreeMap<NaiveDate, Vec<&String>> = BTreeMap::new();
                for c in &query.connections {
                    run.page.plan.push(format!("Query {BY_DAY} {DAY_PK} = {}", days_pk(c)));
                    for day in self.days_with_events(c, false, from, to).await? {
                        days.entry(day).or_default().push(c);
                    }
                }
                for (day, connections) in days.into_iter().rev() {
                    if run.page.events.len() >= query.limit {
                        break;
                    }
                    let at = day.and_hms_opt(12, 0, 0).unwrap_or_default().and_utc();
                    let streams = (connections.iter())
                        .flat_map(|c| (0..DAY_SHARDS).map(move |shard| (*c, shard)))
                        .map(|(c, shard)| Stream::new(BY_DAY, DAY_PK, day_pk(c, &at, shard)))
                        .collect();
                    run.merged(streams, bounds).await?;
                }
                if run.page.events.len() == query.limit {
                    run.page.next = run.page.events.last().map(Position::of);
                }
            }
            Access::Name(prefix) => {
                let partitions = (query.connections.iter())
                    .map(|c| (BY_NAME, NAME_PK, name_pk(c, &prefix), NAME_SK, prefix.clone()))
                    .collect();
                run.prefixed(partitions, bounds).await?;
            }
            Access::Path { path, .. } => {
                let partitions = (query.connections.iter())
                    .map(|c| (BY_PATH, PATH_PK, path_pk(c, &path), PATH_SK, path.clone()))
                    .collect();
                run.prefixed(partitions, bounds).await?;
            }
        }
        Ok(run.page)
    }
}

struct Run<'a> {
    store: &'a DynamoEventStore,
    query: &'a SearchQuery,
    page: SearchPage,
    seen: HashSet<String>,
}

impl Run<'_> {
    fn wanted(&self) -> usize {
        self.query.limit.saturating_sub(self.page.events.len())
    }

    /// Whether an index entry can belong to the query's connections (digest indexes span all).
    fn in_connections(&self, event_key: &str) -> bool {
        (self.query.connections.iter()).any(|c| {
            event_key.len() > c.len() && event_key.starts_with(c.as_str()) && event_key.as_bytes()[c.len()] == b'#'
        })
    }

    /// Merges time-sorted partitions newest first until the page is full or they run out.
    async fn merged(&mut self, mut streams: Vec<Stream>, bounds: (Option<&str>, Option<&str>)) -> PortResult<()> {
        for st in &streams {
            self.page
                .plan
                .push(format!("Query {} {} = {}", st.index, st.pk_attr, st.pk));
        }
        let mut candidates = Vec::new();
        let mut leftover = false;
        loop {
            if self.wanted() == 0 {
                break;
            }
            let fetches = (streams.iter_mut())
                .filter(|st| st.buf.is_empty() && !st.done)
                .map(|st| self.fetch(st, bounds));
            try_join_all(fetches).await?;
            let newest = (streams.iter().enumerate())
                .filter_map(|(i, st)| st.buf.front().map(|(sk, _)| (sk.clone(), i)))
                .max();
            let Some((_, i)) = newest else {
                break;
            };
            let Some((_, key)) = streams[i].buf.pop_front() else {
                break;
            };
            if self.in_connections(&key) && self.seen.insert(key.clone()) {
                candidates.push(key);
            }
            if candidates.len() >= GET_CHUNK.min(self.wanted().max(16)) {
                leftover |= self.resolve(std::mem::take(&mut candidates)).await?;
            }
        }
        leftover |= self.resolve(candidates).await?;
        let more = leftover || streams.iter().any(|st| !st.done || !st.buf.is_empty());
        if more && self.wanted() == 0 {
            self.page.next = self.page.events.last().map(Position::of);
        }
        Ok(())
    }

    /// One Query page of a time-sorted partition, newest first, within the bounds.
    async fn fetch(&self, st: &mut Stream, (lo, hi): (Option<&str>, Option<&str>)) -> PortResult<()> {
        let table = &self.store.table;
        let mut request = table
            .client
            .query()
            .table_name(&table.name)
            .index_name(st.index)
            .projection_expression("#k, #sk")
            .expression_attribute_names("#p", st.pk_attr)
            .expression_attribute_names("#k", EVENT_KEY)
            .expression_attribute_names("#sk", OBSERVED_SK)
            .expression_attribute_values(":p", s(&st.pk))
            .scan_index_forward(false)
            .limit(PAGE)
            .set_exclusive_start_key(st.start.take());
        let condition = match (lo, hi) {
            (Some(lo), Some(hi)) => {
                request = request
                    .expression_attribute_values(":lo", s(lo))
                    .expression_attribute_values(":hi", s(hi));
                "#p = :p AND #sk BETWEEN :lo AND :hi"
            }
            (Some(lo), None) => {
                request = request.expression_attribute_values(":lo", s(lo));
                "#p = :p AND #sk >= :lo"
            }
            (None, Some(hi)) => {
                request = request.expression_attribute_values(":hi", s(hi));
                "#p = :p AND #sk <= :hi"
            }
            (None, None) => "#p = :p",
        };
        request = request.key_condition_expression(condition);
        request = self.with_type_filter(request);
        table.counts.read();
        let out = request.send().await.map_err(|e| table.err("Query", e))?;
        for item in out.items() {
            let f = table.fields(item, st.pk.clone());
            // A target entry (a share with this person) stands for its event.
            st.buf
                .push_back((f.s(OBSERVED_SK)?, event_key_of(&f.s(EVENT_KEY)?).to_owned()));
        }
        st.start = out.last_evaluated_key;
        st.done = st.start.is_none();
        Ok(())
    }

    /// Adds `#t IN (:t0, :t1, …)` for the query's event types as the Query's filter
    /// expression (index entries carry the type), or nothing when any type will do.
    fn with_type_filter(&self, mut request: QueryFluentBuilder) -> QueryFluentBuilder {
        if self.query.types.is_empty() {
            return request;
        }
        let mut names = Vec::with_capacity(self.query.types.len());
        for (i, t) in self.query.types.iter().enumerate() {
            let name = format!(":t{i}");
            request = request.expression_attribute_values(&name, s(t.as_str()));
            names.push(name);
        }
        request
            .filter_expression(format!("#t IN ({})", names.join(", ")))
            .expression_attribute_names("#t", EVENT_TYPE)
    }

    /// Reads every entry under a prefix in each partition, keeps those within the bounds, and
    /// serves them newest first.
    async fn prefixed(
        &mut self,
        partitions: Vec<(&'static str, &'static str, String, &'static str, String)>,
        (lo, hi): (Option<&str>, Option<&str>),
    ) -> PortResult<()> {
        let table = &self.store.table;
        let mut entries: Vec<(String, String)> = Vec::new();
        for (index, pk_attr, pk, sk_attr, prefix) in partitions {
            self.page.plan.push(format!(
                "Query {index} {pk_attr} = {pk} AND begins_with({sk_attr}, {prefix})"
            ));
            let mut start = None;
            loop {
                let mut request = table
                    .client
                    .query()
                    .table_name(&table.name)
                    .index_name(index)
                    .key_condition_expression("#p = :p AND begins_with(#s, :prefix)")
                    .projection_expression("#k, #o")
                    .expression_attribute_names("#p", pk_attr)
                    .expression_attribute_names("#s", sk_attr)
                    .expression_attribute_names("#k", EVENT_KEY)
                    .expression_attribute_names("#o", OBSERVED_SK)
                    .expression_attribute_values(":p", s(&pk))
                    .expression_attribute_values(":prefix", s(&prefix))
                    .set_exclusive_start_key(start);
                request = self.with_type_filter(request);
                table.counts.read();
                let out = request.send().await.map_err(|e| table.err("Query", e))?;
                for item in out.items() {
                    let f = table.fields(item, pk.clone());
                    let sk = f.s(OBSERVED_SK)?;
                    if lo.is_some_and(|lo| sk.as_str() < lo) || hi.is_some_and(|hi| sk.as_str() > hi) {
                        continue;
                    }
                    entries.push((sk, event_key_of(&f.s(EVENT_KEY)?).to_owned()));
                }
                if entries.len() > MAX_PREFIX_MATCHES {
                    return Err(PortError::terminal(
                        "search_too_broad",
                        format!("more than {MAX_PREFIX_MATCHES} events match {prefix:?}"),
                        "add --since, --user or a longer name or path",
                    ));
                }
                start = out.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        entries.sort_unstable_by(|a, b| b.cmp(a));
        let mut stream = Stream::new(BY_NAME, NAME_PK, String::new());
        stream.buf = entries.into();
        stream.done = true;
        self.merged_prefilled(stream).await
    }

    /// Serves an already sorted, complete list of entries.
    async fn merged_prefilled(&mut self, mut stream: Stream) -> PortResult<()> {
        let mut leftover = false;
        while self.wanted() > 0 && !stream.buf.is_empty() {
            let take = GET_CHUNK.min(self.wanted().max(16));
            let mut candidates = Vec::with_capacity(take);
            while candidates.len() < take {
                let Some((_, key)) = stream.buf.pop_front() else {
                    break;
                };
                if self.in_connections(&key) && self.seen.insert(key.clone()) {
                    candidates.push(key);
                }
            }
            leftover |= self.resolve(candidates).await?;
        }
        if leftover || !stream.buf.is_empty() {
            self.page.next = self.page.events.last().map(Position::of);
        }
        Ok(())
    }

    /// Reads the records of `keys` (in their order) and keeps those that match, up to the limit.
    /// Returns whether the limit was reached before every record was examined (so more may
    /// match after the page).
    async fn resolve(&mut self, keys: Vec<String>) -> PortResult<bool> {
        if keys.is_empty() {
            return Ok(false);
        }
        let records = self.store.events_by_key(&keys).await?;
        for (i, record) in records.iter().enumerate() {
            if self.wanted() == 0 {
                return Ok(records[i..].iter().any(|r| self.query.matches(r)));
            }
            if self.query.matches(record) {
                self.page.events.push(record.clone());
            }
        }
        Ok(false)
    }
}
