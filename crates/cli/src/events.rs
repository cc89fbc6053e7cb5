//! `filetrail events`: a connection's file events as they were recorded, newest first: who did
//! what to which file, when, and the file's digests.

use chrono::{DateTime, Duration, Utc};
use filetrail_aws::events::DynamoEventStore;
use filetrail_core::events::EventRecord;

/// The `limit` events of `connection` recorded last (today and yesterday, UTC).
pub async fn recent(
    store: &DynamoEventStore,
    connection: &str,
    limit: usize,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<EventRecord>> {
    Ok(store
        .recently_inserted(connection, &[now, now - Duration::days(1)], limit)
        .await?)
}

/// Renders events as an aligned table.
pub fn render(events: &[EventRecord]) -> String {
    let header = ["WHEN (UTC)", "EVENT", "ACTOR", "OWNER", "PATH", "MD5 / SHA-256"];
    let rows: Vec<[String; 6]> = events
        .iter()
        .map(|r| {
            let e = &r.event;
            let mut what = e.event_type.as_str().to_owned();
            if e.low_signal {
                what.push_str(" (low)");
            }
            let path = match (
                e.path.as_deref(),
                e.destination.as_ref().and_then(|d| d.path.as_deref()),
            ) {
                (Some(from), Some(to)) => format!("{from} -> {to}"),
                (Some(p), None) => p.to_owned(),
                (None, _) => e.object_url.clone().unwrap_or_default(),
            };
            let mut actor = e.actor.upn.clone().unwrap_or_else(|| e.actor.id.clone());
            if let Some(sharing) = &e.sharing {
                let targets: Vec<String> = sharing.targets.iter().map(|t| t.name.clone()).collect();
                if !targets.is_empty() {
                    actor = format!("{actor} -> {}", targets.join(", "));
                }
            }
            [
                e.observed_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                what,
                actor,
                e.owner_upn.clone().unwrap_or_default(),
                path,
                crate::search::hash_text(r),
            ]
        })
        .collect();
    crate::table::render(header, &rows)
}
