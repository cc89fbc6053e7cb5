//! [`ActivityState`] on the state table (layout in the [parent module](super)): the audit feed's
//! checkpoint per content type, the content blobs enqueued (so a blob listed again is not
//! enqueued twice), what ingesting each blob produced, and the drives named by personal site.
//!
//! A blob's marker (`BLOB#`) and its ingest record (`INGESTED#`) are separate items: markers are
//! written with BatchWriteItem, which replaces whole items, and ingestion may finish before the
//! poll that enqueued the blob marks it; one item would then lose the counts.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use filetrail_core::activity::{ActivityCheckpoint, BlobCounts, BlobTotals, ContentBlob, ParkedBlob};
use filetrail_core::audit::location::{percent_decode, personal_site_key};
use filetrail_core::hashing::{HashLeases, VersionLease};
use filetrail_core::model::DriveRecord;
use filetrail_core::ports::{ActivityState, DriveStore, PortResult};
use futures_util::{StreamExt, stream};

use super::{DynamoStateStore, EXPIRES_AT, GSI2, GSI2_PK, PK, SK, conn_pk, item_key};
use crate::dynamo::{Item, json, key, n, put_request, s, ts};
use crate::error::AwsError;

/// How long the record of an ingested blob is kept: [`DynamoStateStore::blob_totals`] sums the
/// blobs ingested in this many days.
pub const INGESTED_TTL_DAYS: i64 = 30;
/// Site key Queries of `gsi2` in flight per call (one per personal site a blob names).
pub const SITE_QUERY_CONCURRENCY: usize = 8;

const BLOB_PREFIX: &str = "BLOB#";
const INGESTED_PREFIX: &str = "INGESTED#";
const PARKED_PREFIX: &str = "PARKED#";
const DRIVE_PREFIX: &str = "DRIVE#";

fn activity_sk(content_type: &str) -> String {
    format!("ACTIVITY#{content_type}")
}

fn blob_sk(content_id: &str) -> String {
    format!("{BLOB_PREFIX}{content_id}")
}

fn ingested_sk(content_id: &str) -> String {
    format!("{INGESTED_PREFIX}{content_id}")
}

fn parked_sk(content_id: &str) -> String {
    format!("{PARKED_PREFIX}{content_id}")
}

/// The personal site key of a drive's web URL (percent-decoded first, as the ingest use case
/// reads it), `None` for URLs outside a personal site.
pub fn site_key_of_url(web_url: &str) -> Option<String> {
    personal_site_key(&percent_decode(web_url))
}

/// `gsi2pk` of a drive of `connection` whose site key is `site_key`.
pub fn site_gsi2pk(connection: &str, site_key: &str) -> String {
    format!("SITE#{connection}#{}", site_key.to_ascii_lowercase())
}

/// An epoch-seconds TTL value.
fn epoch(t: &DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or_default()
}

impl DynamoStateStore {
    /// Sums the ingest records of a connection's blobs (for status): a Query of the connection's
    /// partition on the `INGESTED#` prefix, all pages (strongly consistent).
    pub async fn blob_totals(&self, connection: &str) -> PortResult<BlobTotals> {
        self.ingest_totals(connection).await
    }

    async fn sum_ingested(&self, connection: &str) -> PortResult<BlobTotals> {
        let mut totals = BlobTotals::default();
        for item in self.query_prefix(conn_pk(connection), INGESTED_PREFIX).await? {
            let counts: BlobCounts = self.table.fields(&item, item_key(&item)).json("counts")?;
            totals.add(&counts);
        }
        Ok(totals)
    }

    /// What ingesting one blob produced, `None` when it has no ingest record.
    pub async fn blob_ingested(&self, connection: &str, content_id: &str) -> PortResult<Option<BlobCounts>> {
        let item = self.get(conn_pk(connection), &ingested_sk(content_id)).await?;
        Ok(item
            .map(|i| self.table.fields(&i, item_key(&i)).json("counts"))
            .transpose()?)
    }

    /// Ids of the drives under one `gsi2` partition, all pages (eventually consistent).
    async fn drive_ids_of_site(&self, partition: String) -> Result<Vec<String>, AwsError> {
        let pks = self.table.index_partition_keys(GSI2, GSI2_PK, &partition, PK).await?;
        Ok(pks
            .iter()
            .filter_map(|pk| pk.strip_prefix(DRIVE_PREFIX))
            .map(str::to_owned)
            .collect())
    }
}

fn blob_marker(connection: &str, blob: &ContentBlob, now: &DateTime<Utc>, keep_until: &DateTime<Utc>) -> Item {
    let mut item = key(conn_pk(connection), blob_sk(&blob.content_id));
    item.insert("content_id".into(), s(&blob.content_id));
    item.insert("content_type".into(), s(&blob.content_type));
    item.insert("content_created".into(), ts(&blob.content_created));
    item.insert("enqueued_at".into(), ts(now));
    item.insert(EXPIRES_AT.into(), n(epoch(keep_until)));
    item
}

#[async_trait]
impl ActivityState for DynamoStateStore {
    async fn activity_checkpoint(
        &self,
        connection: &str,
        content_type: &str,
    ) -> PortResult<Option<ActivityCheckpoint>> {
        let item = self.get(conn_pk(connection), &activity_sk(content_type)).await?;
        Ok(item
            .map(|i| self.table.fields(&i, item_key(&i)).json("doc"))
            .transpose()?)
    }

    /// One PutItem of the whole checkpoint (a JSON `doc`).
    async fn save_activity_checkpoint(
        &self,
        connection: &str,
        content_type: &str,
        checkpoint: &ActivityCheckpoint,
    ) -> PortResult<()> {
        let mut item = key(conn_pk(connection), activity_sk(content_type));
        item.insert("doc".into(), json("activity checkpoint", checkpoint)?);
        Ok(self.put(item).await?)
    }

    /// BatchGetItem of the markers (100 keys per call, strongly consistent, keys only).
    async fn known_blobs(&self, connection: &str, content_ids: &[String]) -> PortResult<HashSet<String>> {
        let unique: BTreeSet<&str> = content_ids.iter().map(String::as_str).collect();
        let keys = unique
            .into_iter()
            .map(|id| key(conn_pk(connection), blob_sk(id)))
            .collect();
        let items = self.table.batch_get(keys, Some(&[SK])).await?;
        let mut known = HashSet::with_capacity(items.len());
        for item in &items {
            let sk = self.table.fields(item, item_key(item)).s(SK)?;
            if let Some(id) = sk.strip_prefix(BLOB_PREFIX) {
                known.insert(id.to_owned());
            }
        }
        Ok(known)
    }

    /// BatchWriteItem puts (25 per call) of one marker per blob, expiring at `keep_until` (the
    /// table's TTL attribute). A blob listed twice is marked once; marking again is harmless.
    async fn mark_blobs_enqueued(
        &self,
        connection: &str,
        blobs: &[ContentBlob],
        keep_until: DateTime<Utc>,
    ) -> PortResult<()> {
        let now = Utc::now();
        let unique: BTreeMap<&str, &ContentBlob> = blobs.iter().map(|b| (b.content_id.as_str(), b)).collect();
        let requests = unique
            .into_values()
            .map(|b| put_request(blob_marker(connection, b, &now, &keep_until)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.table.batch_write(requests).await?)
    }

    /// One PutItem of the blob's ingest record (its counts as JSON), replacing an earlier one;
    /// kept [`INGESTED_TTL_DAYS`] days after `counts.ingested_at` (or now).
    async fn record_blob_ingested(&self, connection: &str, content_id: &str, counts: &BlobCounts) -> PortResult<()> {
        let at = counts.ingested_at.unwrap_or_else(Utc::now);
        let mut item = key(conn_pk(connection), ingested_sk(content_id));
        item.insert("content_id".into(), s(content_id));
        item.insert("counts".into(), json("blob counts", counts)?);
        item.insert("ingested_at".into(), ts(&at));
        item.insert(EXPIRES_AT.into(), n(epoch(&(at + Duration::days(INGESTED_TTL_DAYS)))));
        Ok(self.put(item).await?)
    }

    /// Sums the ingest records kept ([`INGESTED_TTL_DAYS`] days): a Query of the connection's
    /// partition on the `INGESTED#` prefix, all pages.
    async fn ingest_totals(&self, connection: &str) -> PortResult<BlobTotals> {
        self.sum_ingested(connection).await
    }

    /// The same GetItem as [`DynamoStateStore::blob_ingested`].
    async fn blob_counts(&self, connection: &str, content_id: &str) -> PortResult<Option<BlobCounts>> {
        self.blob_ingested(connection, content_id).await
    }

    /// A GetItem (to keep the first `parked_at`) and a PutItem of the entry as JSON. The item
    /// expires a day after the blob's content does: by then ingest has recorded the expiry.
    async fn park_blob(&self, connection: &str, parked: &ParkedBlob) -> PortResult<()> {
        let mut entry = parked.clone();
        if let Some(old) = self
            .get(conn_pk(connection), &parked_sk(&parked.blob.content_id))
            .await?
        {
            let old: ParkedBlob = self.table.fields(&old, item_key(&old)).json("doc")?;
            entry.parked_at = old.parked_at.min(entry.parked_at);
        }
        let mut item = key(conn_pk(connection), parked_sk(&entry.blob.content_id));
        item.insert("doc".into(), json("parked blob", &entry)?);
        item.insert(
            EXPIRES_AT.into(),
            n(epoch(&(entry.blob.expires_at() + Duration::days(1)))),
        );
        Ok(self.put(item).await?)
    }

    /// One DeleteItem (deleting an absent entry is not an error).
    async fn unpark_blob(&self, connection: &str, content_id: &str) -> PortResult<()> {
        Ok(self
            .table
            .delete(key(conn_pk(connection), parked_sk(content_id)))
            .await?)
    }

    /// A Query of the connection's partition on the `PARKED#` prefix, all pages.
    async fn parked_blobs(&self, connection: &str) -> PortResult<Vec<ParkedBlob>> {
        let mut parked = Vec::new();
        for item in self.query_prefix(conn_pk(connection), PARKED_PREFIX).await? {
            parked.push(self.table.fields(&item, item_key(&item)).json::<ParkedBlob>("doc")?);
        }
        parked.sort_by(|a, b| (a.parked_at, &a.blob.content_id).cmp(&(b.parked_at, &b.blob.content_id)));
        Ok(parked)
    }

    /// A Query of `gsi2` per site key ([`SITE_QUERY_CONCURRENCY`] at a time), then
    /// BatchGetItem of the drives found. Drives recorded without a personal site web URL are
    /// never found. The index is eventually consistent: a drive inserted a moment ago may be
    /// missing.
    async fn drives_by_site_key(&self, connection: &str, site_keys: &[String]) -> PortResult<Vec<DriveRecord>> {
        let partitions: BTreeSet<String> = site_keys
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| site_gsi2pk(connection, k))
            .collect();
        let results: Vec<Result<Vec<String>, AwsError>> = stream::iter(partitions)
            .map(|p| self.drive_ids_of_site(p))
            .buffered(SITE_QUERY_CONCURRENCY)
            .collect()
            .await;
        let mut ids = BTreeSet::new();
        for result in results {
            ids.extend(result?);
        }
        let ids: Vec<String> = ids.into_iter().collect();
        let drives = self.drives(&ids).await?;
        Ok(drives.into_iter().filter(|d| d.connection == connection).collect())
    }
}

/// Epoch milliseconds, compared as a number in conditions.
fn millis(t: &DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or_default()
}

/// The sort key of a version's hash lease, beside the connection (`CONN#{connection}`).
fn lease_sk(lease: &VersionLease) -> String {
    format!("HASHLEASE#{}#{}#{}", lease.drive_id, lease.item_id, lease.ctag)
}

#[async_trait]
impl HashLeases for DynamoStateStore {
    /// One conditional PutItem: the lease is written when absent, lapsed or ours. Kept a day
    /// past its term by the table's TTL.
    async fn take_hash_lease(&self, lease: &VersionLease, now: DateTime<Utc>) -> PortResult<bool> {
        let mut item = key(conn_pk(&lease.connection), lease_sk(lease));
        item.insert("holder".into(), s(&lease.holder));
        item.insert("until_ms".into(), n(millis(&lease.until)));
        item.insert(EXPIRES_AT.into(), n(epoch(&(lease.until + Duration::days(1)))));
        Ok(self
            .table
            .put_if(
                item,
                "attribute_not_exists(#pk) OR #until < :now OR #holder = :holder",
                &[("#pk", PK), ("#until", "until_ms"), ("#holder", "holder")],
                vec![(":now", n(millis(&now))), (":holder", s(&lease.holder))],
            )
            .await?)
    }

    /// One DeleteItem conditioned on the holder (a lease taken over since is left alone).
    async fn release_hash_lease(&self, lease: &VersionLease) -> PortResult<()> {
        self.table
            .delete_if(
                key(conn_pk(&lease.connection), lease_sk(lease)),
                "#holder = :holder",
                &[("#holder", "holder")],
                vec![(":holder", s(&lease.holder))],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_key_comes_from_the_percent_decoded_web_url() {
        assert_eq!(
            site_key_of_url("https://contoso-my.sharepoint.com/personal/Adele_Contoso_com/Documents").as_deref(),
            Some("adele_contoso_com")
        );
        assert_eq!(
            site_key_of_url("https://contoso-my.sharepoint.com/personal%2Falex_contoso_com").as_deref(),
            Some("alex_contoso_com")
        );
        assert_eq!(site_key_of_url("https://contoso.sharepoint.com/sites/Finance"), None);
        assert_eq!(
            site_gsi2pk("contoso", "Adele_contoso_com"),
            "SITE#contoso#adele_contoso_com"
        );
    }

    #[test]
    fn totals_add_up_counts_and_keep_the_latest_ingestion() {
        let early = DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let late = DateTime::parse_from_rfc3339("2026-11-22T09:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .ok();
        let mut totals = BlobTotals::default();
        totals.add(&BlobCounts {
            records: 10,
            quarantined: 2,
            ingested_at: late,
            ..BlobCounts::default()
        });
        totals.add(&BlobCounts {
            records: 5,
            expired: true,
            ingested_at: early,
            ..BlobCounts::default()
        });
        assert_eq!(
            (totals.blobs, totals.records, totals.quarantined, totals.expired),
            (2, 15, 2, 1)
        );
        assert_eq!(totals.last_ingested_at, late);
    }
}
