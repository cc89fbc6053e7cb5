//! `filetrail search`: the forensic search over file events. Turns the command line into a
//! checked [`SearchQuery`], runs it on the events table (one index, never a scan) and prints
//! the page as a table, JSON lines or CSV.

use chrono::{DateTime, Utc};
use filetrail_aws::events::DynamoEventStore;
use filetrail_aws::search::SearchPage;
use filetrail_core::events::{EventRecord, EventSource, HashOutcome};
use filetrail_core::model::{Connection, ConnectionKind};
use filetrail_core::search::{self, NamePattern, Position, SearchError, SearchQuery};

/// The search filters as typed.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub connection: Option<String>,
    pub user: Option<String>,
    pub file_name: Option<String>,
    pub path: Option<String>,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub types: Vec<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// `onedrive` or `email`.
    pub source: Option<String>,
    pub external_only: bool,
    pub limit: usize,
    pub page_token: Option<String>,
}

/// Why a search cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Query(#[from] SearchError),
    #[error("no connection named {0:?}; `filetrail connection list` lists them")]
    UnknownConnection(String),
    #[error("--source {0:?} is not a source: give onedrive or email")]
    BadSource(String),
    #[error("no {0} connection is registered, so nothing can match --source {0}")]
    NoConnectionOfSource(&'static str),
    #[error("no connection is registered yet: add one with `filetrail connection add`")]
    NoConnections,
}

/// Checks the filters against the registered connections and builds the query.
///
/// # Errors
/// [`Refused`] naming the bad value and the accepted forms.
pub fn build(filters: &Filters, connections: &[Connection], now: DateTime<Utc>) -> Result<SearchQuery, Refused> {
    let source = match filters.source.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("onedrive" | "cloud") => Some(EventSource::OneDrive),
        Some("email" | "mail") => Some(EventSource::Email),
        Some(_) => return Err(Refused::BadSource(filters.source.clone().unwrap_or_default())),
    };
    if connections.is_empty() {
        return Err(Refused::NoConnections);
    }
    let mut chosen: Vec<&Connection> = match &filters.connection {
        Some(id) => {
            let c = (connections.iter().find(|c| c.id == *id)).ok_or_else(|| Refused::UnknownConnection(id.clone()))?;
            vec![c]
        }
        None => connections.iter().collect(),
    };
    if let Some(source) = source {
        let kind = match source {
            EventSource::OneDrive => ConnectionKind::Cloud,
            EventSource::Email => ConnectionKind::Email,
        };
        chosen.retain(|c| c.kind == kind);
        if chosen.is_empty() {
            return Err(Refused::NoConnectionOfSource(source.as_str()));
        }
    }
    let digest = |value: &Option<String>, len, bad: fn(String) -> SearchError| {
        value
            .as_deref()
            .map(|v| search::digest(v, len).ok_or_else(|| bad(v.to_owned())))
            .transpose()
    };
    let user = match filters.user.as_deref().map(str::trim) {
        Some(u) if u.is_empty() || u.contains(char::is_whitespace) => {
            return Err(SearchError::BadUser(u.to_owned()).into());
        }
        other => other.map(search::user_key),
    };
    let query = SearchQuery {
        connections: chosen.iter().map(|c| c.id.clone()).collect(),
        user,
        file_name: filters.file_name.as_deref().map(NamePattern::parse).transpose()?,
        path: filters.path.as_deref().map(search::normalise_path).transpose()?,
        md5: digest(&filters.md5, 32, SearchError::BadMd5)?,
        sha256: digest(&filters.sha256, 64, SearchError::BadSha256)?,
        types: (filters.types.iter())
            .flat_map(|t| t.split(','))
            .map(search::parse_type)
            .collect::<Result<_, _>>()?,
        since: (filters.since.as_deref())
            .map(|v| search::parse_time("--since", v, now))
            .transpose()?,
        until: (filters.until.as_deref())
            .map(|v| search::parse_time("--until", v, now))
            .transpose()?,
        source,
        external_only: filters.external_only,
        limit: filters.limit,
        before: filters.page_token.as_deref().map(Position::from_token).transpose()?,
    };
    query.validate()?;
    Ok(query)
}

/// Runs a built query.
pub async fn run(store: &DynamoEventStore, query: &SearchQuery) -> anyhow::Result<SearchPage> {
    Ok(store.search(query).await?)
}

/// What time range a search covered, and how to widen it: said after every search, so an
/// empty answer is never mistaken for "nothing ever happened".
pub fn coverage(query: &SearchQuery) -> String {
    let at = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match (query.since, query.until) {
        (None, None) => "searched every recorded event of the connection(s)".to_owned(),
        (Some(since), None) => format!(
            "searched events from {} on; an earlier --since (or none) searches further back",
            at(since)
        ),
        (None, Some(until)) => format!(
            "searched events up to {}; a later --until (or none) searches newer ones",
            at(until)
        ),
        (Some(since), Some(until)) => format!(
            "searched events from {} to {}; widen --since / --until to search more",
            at(since),
            at(until)
        ),
    }
}

/// What the hash column says: the digests, why there are none, or that they are pending.
pub fn hash_text(record: &EventRecord) -> String {
    match &record.hash {
        Some(HashOutcome::Hashed(h)) => format!("{} / {}", h.md5, h.sha256),
        Some(HashOutcome::Unavailable { reason }) => format!("hash unavailable: {reason}"),
        None => match hash_unavailable(record) {
            Some(reason) => format!("hash unavailable: {reason}"),
            None if record.event.needs_hash() => "hashing pending".to_owned(),
            None => String::new(),
        },
    }
}

/// Why an event without a recorded hash outcome has no digest: a file event that did not
/// change the content concerns a file as it was indexed, and files are hashed only when
/// activity changes them.
pub fn hash_unavailable(record: &EventRecord) -> Option<String> {
    use filetrail_core::audit::ItemKind;
    match &record.hash {
        Some(HashOutcome::Unavailable { reason }) => Some(reason.clone()),
        Some(HashOutcome::Hashed(_)) => None,
        None if record.event.item_kind == ItemKind::File && !record.event.needs_hash() => {
            Some(filetrail_core::model::HASH_NOT_MODIFIED_SINCE_INITIAL_INDEXING.to_owned())
        }
        None => None,
    }
}

/// The CSV columns, one event per row.
pub const CSV_HEADER: [&str; 22] = [
    "observed_at",
    "inserted_at",
    "connection",
    "source",
    "event_type",
    "low_signal",
    "actor",
    "owner",
    "file_name",
    "path",
    "destination_path",
    "md5",
    "sha256",
    "hash_unavailable",
    "link_scope",
    "targets",
    "external",
    "client_ip",
    "user_agent",
    "drive_id",
    "item_id",
    "record_id",
];

/// Writes events as CSV with [`CSV_HEADER`].
///
/// # Errors
/// When `out` fails.
pub fn write_csv<W: std::io::Write>(out: W, events: &[EventRecord]) -> anyhow::Result<()> {
    let mut w = crate::csv_out::CsvOut::new(out);
    w.write(CSV_HEADER)?;
    for r in events {
        let e = &r.event;
        let hashes = r.hashes();
        let sharing = e.sharing.as_ref();
        let opt = |v: Option<&str>| v.unwrap_or_default().to_owned();
        w.write([
            e.observed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            e.inserted_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            r.connection.clone(),
            r.source.as_str().to_owned(),
            e.event_type.as_str().to_owned(),
            e.low_signal.to_string(),
            e.actor.upn.clone().unwrap_or_else(|| e.actor.id.clone()),
            opt(e.owner_upn.as_deref()),
            opt(e.file_name.as_deref()),
            opt(e.path.as_deref()),
            opt(e.destination.as_ref().and_then(|d| d.path.as_deref())),
            hashes.map(|h| h.md5.clone()).unwrap_or_default(),
            hashes.map(|h| h.sha256.clone()).unwrap_or_default(),
            hash_unavailable(r).unwrap_or_default(),
            sharing
                .and_then(|s| s.link_scope)
                .map(|l| {
                    serde_json::to_value(l)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
            sharing
                .map(|s| s.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(";"))
                .unwrap_or_default(),
            sharing
                .and_then(|s| s.external)
                .map(|x| x.to_string())
                .unwrap_or_default(),
            opt(e.client_ip.as_deref()),
            opt(e.user_agent.as_deref()),
            opt(e.drive_id.as_deref()),
            opt(e.item_id.as_deref()),
            e.id.clone(),
        ])?;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn connection(id: &str, kind: ConnectionKind) -> Connection {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": kind, "tenant_id": "t", "client_id": "c", "secret_id": "s",
            "cloud": "worldwide", "drive_cap": 10, "created_at": now()
        }))
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn filters() -> Filters {
        Filters {
            limit: 100,
            ..Filters::default()
        }
    }

    #[test]
    fn the_coverage_line_says_the_range_searched_and_how_to_widen_it() {
        let all = [connection("a", ConnectionKind::Cloud)];
        let q = build(&filters(), &all, now()).unwrap();
        assert_eq!(coverage(&q), "searched every recorded event of the connection(s)");
        let f = Filters {
            since: Some("7d".into()),
            ..filters()
        };
        let line = coverage(&build(&f, &all, now()).unwrap());
        assert!(
            line.contains("from 2026-11-23T12:00:00Z on") && line.contains("earlier --since"),
            "{line}"
        );
        let f = Filters {
            since: Some("2026-11-01".into()),
            until: Some("2026-11-02".into()),
            ..filters()
        };
        let line = coverage(&build(&f, &all, now()).unwrap());
        assert!(
            line.contains("from 2026-11-01T00:00:00Z to 2026-11-02T00:00:00Z") && line.contains("widen"),
            "{line}"
        );
    }

    #[test]
    fn every_connection_is_searched_unless_one_or_a_source_is_named() {
        let all = [
            connection("a", ConnectionKind::Cloud),
            connection("m", ConnectionKind::Email),
        ];
        let q = build(&filters(), &all, now()).unwrap();
        assert_eq!(q.connections, ["a", "m"]);
        let f = Filters {
            source: Some("email".into()),
            ..filters()
        };
        assert_eq!(build(&f, &all, now()).unwrap().connections, ["m"]);
        let f = Filters {
            connection: Some("zz".into()),
            ..filters()
        };
        assert!(build(&f, &all, now()).unwrap_err().to_string().contains("\"zz\""));
        let f = Filters {
            source: Some("email".into()),
            ..filters()
        };
        let e = build(&f, &all[..1], now()).unwrap_err().to_string();
        assert!(e.contains("no email connection"), "{e}");
    }

    #[test]
    fn bad_values_are_named_in_the_error() {
        let all = [connection("a", ConnectionKind::Cloud)];
        for (f, needle) in [
            (
                Filters {
                    md5: Some("xyz".into()),
                    ..filters()
                },
                "--md5 \"xyz\"",
            ),
            (
                Filters {
                    sha256: Some("12".into()),
                    ..filters()
                },
                "--sha256 \"12\"",
            ),
            (
                Filters {
                    since: Some("last week".into()),
                    ..filters()
                },
                "--since \"last week\"",
            ),
            (
                Filters {
                    types: vec!["downloaded,exploded".into()],
                    ..filters()
                },
                "\"exploded\"",
            ),
            (
                Filters {
                    source: Some("teams".into()),
                    ..filters()
                },
                "\"teams\"",
            ),
            (
                Filters {
                    path: Some("Documents".into()),
                    ..filters()
                },
                "\"Documents\"",
            ),
        ] {
            let e = build(&f, &all, now()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }
}
