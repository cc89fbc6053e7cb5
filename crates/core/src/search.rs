//! Forensic search over file events: what an analyst asks (`--user`, `--file-name`, `--path`,
//! `--md5`, `--sha256`, `--type`, a time range, `--source`, `--external-only`), checked, and the
//! one index access that serves it. Pure: the events adapter executes the [`Access`] and applies
//! [`SearchQuery::matches`] to the records it reads.
//!
//! # How a query is served
//! Every query reads one index of the events table, never the whole table. The access is the
//! most selective filter present, in this order:
//!
//! | filter | access | partition | order |
//! |---|---|---|---|
//! | `--sha256` | [`Access::Sha256`] | the digest | newest first |
//! | `--md5` | [`Access::Md5`] | the digest | newest first |
//! | `--path` | [`Access::Path`] | connection + first path segment | path prefix, then sorted |
//! | `--user` | [`Access::User`] | connection + UPN, as actor and as owner | newest first, merged |
//! | `--file-name` with 3+ leading literal characters | [`Access::Name`] | connection + first 3 characters | name prefix, then sorted |
//! | `--external-only` | [`Access::External`] | connection (sparse index) | newest first |
//! | anything else | [`Access::Day`] | connection + day + shard | newest first, day by day |
//!
//! The other filters are checked on the records read ([`SearchQuery::matches`]); `--type` is
//! also a filter expression on the index, whose entries carry the type. The time range bounds
//! the sort key wherever the index sorts by time.

use chrono::{DateTime, Utc};

use crate::audit::FileEventType;
use crate::events::{EventRecord, EventSource};

/// Most results one search returns; more come with the page token.
pub const MAX_LIMIT: usize = 10_000;
/// The shortest literal file-name prefix served by the name index: its partitions are the
/// first [`NAME_PARTITION_CHARS`] characters of the lowercase name, so a shorter prefix would
/// span an unknown set of partitions.
pub const NAME_PARTITION_CHARS: usize = 3;

/// Why a search cannot run, in words that name the bad value and the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("--md5 {0:?} is not an MD5 digest: give 32 hexadecimal characters")]
    BadMd5(String),
    #[error("--sha256 {0:?} is not a SHA-256 digest: give 64 hexadecimal characters")]
    BadSha256(String),
    #[error(
        "{flag} {value:?} is not a time: give RFC 3339 (2026-11-30T08:00:00Z), a date (2026-11-30, midnight UTC) or a time ago (90m, 36h, 7d, 2w)"
    )]
    BadTime { flag: &'static str, value: String },
    #[error("--since {since} is after --until {until}: nothing can match")]
    EmptyRange { since: String, until: String },
    #[error(
        "--type {0:?} is not an event type; `filetrail search --help` lists them (e.g. downloaded, anonymous_link_created)"
    )]
    BadType(String),
    #[error("--path {0:?} must start with `/` (a path from the drive root, as `filetrail events` shows it)")]
    BadPath(String),
    #[error("--file-name is empty: give a name, a prefix (`budget`) or a glob (`*.xlsx`, `q3*report*`)")]
    EmptyName,
    #[error("--limit {0} is out of range: give 1 to {MAX_LIMIT} and use the page token for more")]
    BadLimit(usize),
    #[error("page token {0:?} is not one this command printed; drop --page-token to start from the newest")]
    BadPageToken(String),
    #[error("--user {0:?} is not a user principal name: give a sign-in address such as alice@contoso.com")]
    BadUser(String),
}

/// A file-name filter: case-insensitive, `*` any run of characters, `?` one character; a
/// value without wildcards matches names starting with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern {
    /// Lowercase.
    pattern: String,
    glob: bool,
}

impl NamePattern {
    /// # Errors
    /// [`SearchError::EmptyName`] for an empty value.
    pub fn parse(value: &str) -> Result<Self, SearchError> {
        let pattern = value.trim().to_lowercase();
        if pattern.is_empty() {
            return Err(SearchError::EmptyName);
        }
        let glob = pattern.contains(['*', '?']);
        Ok(Self { pattern, glob })
    }

    /// The literal characters every match starts with (lowercase).
    pub fn literal_prefix(&self) -> &str {
        let end = self.pattern.find(['*', '?']).unwrap_or(self.pattern.len());
        &self.pattern[..end]
    }

    pub fn matches(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        if self.glob {
            glob_match(self.pattern.as_bytes(), name.as_bytes())
        } else {
            name.starts_with(&self.pattern)
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// Iterative glob match with backtracking to the last `*` (linear in practice). `?` matches one
/// byte of a UTF-8 sequence's start, so it is applied on characters by the caller's lowercase
/// string: here bytes, which is exact for ASCII names and conservative otherwise.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A time an analyst typed: RFC 3339, a date (midnight UTC) or a duration ago (`90m`, `36h`,
/// `7d`, `2w`); the same forms `filetrail export` takes ([`crate::time_arg::parse_time_arg`]).
///
/// # Errors
/// [`SearchError::BadTime`] naming `flag` and the value.
pub fn parse_time(flag: &'static str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, SearchError> {
    crate::time_arg::parse_time_arg(flag, value, now).map_err(|e| SearchError::BadTime {
        flag: e.flag,
        value: e.value,
    })
}

/// How a person is keyed for `--user`: the lowercase address, with a guest's UPN
/// (`dana_fabrikam.com#ext#@contoso.onmicrosoft.com`) turned back into the address it was made
/// from (`dana@fabrikam.com`: Entra replaces the `@` with `_` and appends `#EXT#@` and the
/// tenant's domain). Domains hold no `_`, so the last `_` before `#ext#` was the `@`.
pub fn user_key(upn_or_email: &str) -> String {
    let lower = upn_or_email.trim().to_lowercase();
    if let Some((local, _)) = lower.split_once("#ext#")
        && let Some(at) = local.rfind('_')
        && at > 0
        && at + 1 < local.len()
    {
        return format!("{}@{}", &local[..at], &local[at + 1..]);
    }
    lower
}

/// The people an event involves, as [`user_key`]s: the actor (by UPN, else address), the
/// file's owner and, for a share, every target with an address.
pub fn people_of(event: &crate::audit::FileEvent) -> Vec<String> {
    let mut people = Vec::new();
    if let Some(actor) = event
        .actor
        .upn
        .as_deref()
        .or(event.actor.email.as_deref())
        .filter(|a| !a.is_empty())
    {
        people.push(user_key(actor));
    }
    if let Some(email) = event.actor.email.as_deref().filter(|a| !a.is_empty()) {
        people.push(user_key(email));
    }
    if let Some(owner) = event.owner_upn.as_deref().filter(|o| !o.is_empty()) {
        people.push(user_key(owner));
    }
    people.extend(sharing_targets(event));
    people.sort();
    people.dedup();
    people
}

/// The [`user_key`]s of the people a share names (with an address), in order, once each.
pub fn sharing_targets(event: &crate::audit::FileEvent) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for target in event.sharing.iter().flat_map(|s| s.targets.iter()) {
        if let Some(email) = target.email.as_deref().filter(|e| !e.is_empty()) {
            let key = user_key(email);
            if !targets.contains(&key) {
                targets.push(key);
            }
        }
    }
    targets
}

/// One search, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchQuery {
    /// The connections searched (all of them unless one was named; only those of `source`).
    pub connections: Vec<String>,
    /// A [`user_key`]: events where they acted, whose file they own, or that shared a file
    /// with them.
    pub user: Option<String>,
    pub file_name: Option<NamePattern>,
    /// Lowercase, from the drive root, no trailing `/`: the file or folder and everything under it.
    pub path: Option<String>,
    /// Lowercase hex.
    pub md5: Option<String>,
    /// Lowercase hex.
    pub sha256: Option<String>,
    pub types: Vec<FileEventType>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub source: Option<EventSource>,
    pub external_only: bool,
    pub limit: usize,
    /// Only events strictly older than this position (a page token's content).
    pub before: Option<Position>,
}

/// Where an event sorts among search results: when it happened, then its record id. Results
/// are in descending order of position; a page token is the last position printed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub observed_at: DateTime<Utc>,
    pub id: String,
}

impl Position {
    pub fn of(record: &EventRecord) -> Self {
        Self {
            observed_at: record.event.observed_at,
            id: record.event.id.clone(),
        }
    }

    /// An opaque token for the command line: `{unix millis}.{record id}`, base64url.
    pub fn token(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            self.observed_at.timestamp_millis(),
            self.id
        ))
    }

    /// # Errors
    /// [`SearchError::BadPageToken`] for anything [`Self::token`] did not produce.
    pub fn from_token(token: &str) -> Result<Self, SearchError> {
        use base64::Engine as _;
        let bad = || SearchError::BadPageToken(token.to_owned());
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let (millis, id) = raw.split_once('.').ok_or_else(bad)?;
        let millis: i64 = millis.parse().map_err(|_| bad())?;
        let observed_at = DateTime::from_timestamp_millis(millis).ok_or_else(bad)?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            observed_at,
            id: id.to_owned(),
        })
    }
}

/// The index access that serves a query (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Sha256(String),
    Md5(String),
    /// The lowercase path and its first segment (the partition).
    Path {
        path: String,
        segment: String,
    },
    User(String),
    /// The lowercase literal prefix (at least [`NAME_PARTITION_CHARS`] characters).
    Name(String),
    External,
    Day,
}

impl Access {
    /// Short name for logs and `--explain`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sha256(_) => "sha256",
            Self::Md5(_) => "md5",
            Self::Path { .. } => "path",
            Self::User(_) => "user",
            Self::Name(_) => "file name",
            Self::External => "external shares",
            Self::Day => "time",
        }
    }
}

/// The first segment of a lowercase path from the drive root (`/reports/q3.xlsx` → `reports`):
/// the path index's partition within a connection.
pub fn first_segment(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// The name index's partition within a connection: the first [`NAME_PARTITION_CHARS`]
/// characters of the lowercase name (all of it when shorter).
pub fn name_partition(lowercase_name: &str) -> &str {
    match lowercase_name.char_indices().nth(NAME_PARTITION_CHARS) {
        Some((i, _)) => &lowercase_name[..i],
        None => lowercase_name,
    }
}

/// Whether `path` is `prefix` or lies under it (both lowercase, from the drive root).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Checks a digest argument: hex of `len` characters, returned lowercase.
pub fn digest(value: &str, len: usize) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    (v.len() == len && v.bytes().all(|b| b.is_ascii_hexdigit())).then_some(v)
}

/// Normalises a `--path`: lowercase, leading `/`, no trailing `/` (except the root).
///
/// # Errors
/// [`SearchError::BadPath`] when it does not start with `/`.
pub fn normalise_path(value: &str) -> Result<String, SearchError> {
    let v = value.trim();
    if !v.starts_with('/') {
        return Err(SearchError::BadPath(value.to_owned()));
    }
    let trimmed = v.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_lowercase()
    })
}

impl SearchQuery {
    /// Checks the parts that do not depend on parsing (range, limit).
    ///
    /// # Errors
    /// [`SearchError::EmptyRange`] or [`SearchError::BadLimit`].
    pub fn validate(&self) -> Result<(), SearchError> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(SearchError::BadLimit(self.limit));
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(SearchError::EmptyRange {
                since: since.to_rfc3339(),
                until: until.to_rfc3339(),
            });
        }
        Ok(())
    }

    /// The index access that serves this query: the most selective filter present.
    pub fn access(&self) -> Access {
        if let Some(h) = &self.sha256 {
            return Access::Sha256(h.clone());
        }
        if let Some(h) = &self.md5 {
            return Access::Md5(h.clone());
        }
        if let Some(p) = &self.path {
            let segment = first_segment(p);
            if !segment.is_empty() {
                return Access::Path {
                    path: p.clone(),
                    segment: segment.to_owned(),
                };
            }
        }
        if let Some(u) = &self.user {
            return Access::User(u.clone());
        }
        if let Some(name) = &self.file_name {
            let prefix = name.literal_prefix();
            if prefix.chars().count() >= NAME_PARTITION_CHARS {
                return Access::Name(prefix.to_owned());
            }
        }
        if self.external_only {
            return Access::External;
        }
        Access::Day
    }

    /// The upper bound of positions wanted: the page token, else `until`.
    pub fn upper(&self) -> Option<DateTime<Utc>> {
        match (&self.before, self.until) {
            (Some(b), Some(u)) => Some(b.observed_at.min(u)),
            (Some(b), None) => Some(b.observed_at),
            (None, u) => u,
        }
    }

    /// Whether a record read from the index answers every filter of the query.
    pub fn matches(&self, record: &EventRecord) -> bool {
        let e = &record.event;
        if !self.connections.contains(&record.connection) {
            return false;
        }
        if let Some(source) = self.source
            && record.source != source
        {
            return false;
        }
        if let Some(before) = &self.before
            && Position::of(record) >= *before
        {
            return false;
        }
        if self.since.is_some_and(|s| e.observed_at < s) || self.until.is_some_and(|u| e.observed_at > u) {
            return false;
        }
        if !self.types.is_empty() && !self.types.contains(&e.event_type) {
            return false;
        }
        if let Some(user) = &self.user
            && !people_of(e).contains(&user_key(user))
        {
            return false;
        }
        let destination = e.destination.as_ref();
        if let Some(pattern) = &self.file_name {
            let names = [e.file_name.as_deref(), destination.and_then(|d| d.file_name.as_deref())];
            if !names.into_iter().flatten().any(|n| pattern.matches(n)) {
                return false;
            }
        }
        if let Some(prefix) = &self.path {
            let paths = [e.path.as_deref(), destination.and_then(|d| d.path.as_deref())];
            if !paths.into_iter().flatten().any(|p| under(&p.to_lowercase(), prefix)) {
                return false;
            }
        }
        let hashes = record.hashes();
        if let Some(md5) = &self.md5
            && !hashes.is_some_and(|h| h.md5.eq_ignore_ascii_case(md5))
        {
            return false;
        }
        if let Some(sha) = &self.sha256
            && !hashes.is_some_and(|h| h.sha256.eq_ignore_ascii_case(sha))
        {
            return false;
        }
        if self.external_only && !is_external(record) {
            return false;
        }
        true
    }
}

/// Whether an event shares outside the organisation: an anonymous link, or a target outside the
/// connection's trusted domains.
pub fn is_external(record: &EventRecord) -> bool {
    record.event.sharing.as_ref().and_then(|s| s.external) == Some(true)
}

/// Parses an event type as the CLI and JSON spell it (`anonymous_link_created`), also accepting
/// dashes and any case.
///
/// # Errors
/// [`SearchError::BadType`] naming the value.
pub fn parse_type(value: &str) -> Result<FileEventType, SearchError> {
    let wanted = value.trim().to_ascii_lowercase().replace('-', "_");
    FileEventType::ALL
        .iter()
        .copied()
        .find(|t| t.as_str() == wanted)
        .ok_or_else(|| SearchError::BadType(value.to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn query() -> SearchQuery {
        SearchQuery {
            connections: vec!["contoso".into()],
            limit: 100,
            ..SearchQuery::default()
        }
    }

    #[test]
    fn a_guest_upn_is_keyed_by_the_address_it_was_made_from_and_others_by_their_lowercase_address() {
        assert_eq!(
            user_key("dana_fabrikam.com#EXT#@contoso.onmicrosoft.com"),
            "dana@fabrikam.com"
        );
        assert_eq!(
            user_key("john_doe_fabrikam.co.uk#ext#@contoso.onmicrosoft.com"),
            "john_doe@fabrikam.co.uk"
        );
        assert_eq!(user_key(" Alex@Contoso.com "), "alex@contoso.com");
        assert_eq!(user_key("dana@fabrikam.com"), "dana@fabrikam.com");
        // Not the guest shape: kept as written (lowercase).
        assert_eq!(
            user_key("#EXT#@contoso.onmicrosoft.com"),
            "#ext#@contoso.onmicrosoft.com"
        );
    }

    #[test]
    fn times_accept_rfc3339_dates_and_durations_ago() {
        assert_eq!(parse_time("--since", "7d", now()).unwrap(), now() - Duration::days(7));
        assert_eq!(
            parse_time("--since", "36h", now()).unwrap(),
            now() - Duration::hours(36)
        );
        assert_eq!(
            parse_time("--since", "90m", now()).unwrap(),
            now() - Duration::minutes(90)
        );
        assert_eq!(parse_time("--since", "2w", now()).unwrap(), now() - Duration::weeks(2));
        assert_eq!(
            parse_time("--until", "2026-11-01", now()).unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_time("--until", "2026-11-01T08:00:00+01:00", now())
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T07:00:00+00:00"
        );
        for bad in ["yesterday", "7", "7y", "d", "", "2026-13-01"] {
            let e = parse_time("--since", bad, now()).unwrap_err().to_string();
            assert!(e.contains(&format!("--since {bad:?}")) && e.contains("7d"), "{e}");
        }
    }

    #[test]
    fn the_most_selective_filter_chooses_the_index() {
        let mut q = query();
        assert_eq!(q.access(), Access::Day);
        q.external_only = true;
        assert_eq!(q.access(), Access::External);
        q.file_name = Some(NamePattern::parse("*.xlsx").unwrap());
        assert_eq!(
            q.access(),
            Access::External,
            "a glob without a literal prefix has no index"
        );
        q.file_name = Some(NamePattern::parse("Budget*.xlsx").unwrap());
        assert_eq!(q.access(), Access::Name("budget".into()));
        q.user = Some("alice@contoso.com".into());
        assert_eq!(q.access(), Access::User("alice@contoso.com".into()));
        q.path = Some("/reports/2026".into());
        assert_eq!(
            q.access(),
            Access::Path {
                path: "/reports/2026".into(),
                segment: "reports".into()
            }
        );
        q.md5 = Some("a".repeat(32));
        assert_eq!(q.access(), Access::Md5("a".repeat(32)));
        q.sha256 = Some("b".repeat(64));
        assert_eq!(q.access(), Access::Sha256("b".repeat(64)));
    }

    #[test]
    fn short_prefixes_and_the_root_path_fall_back_to_time() {
        let mut q = query();
        q.file_name = Some(NamePattern::parse("ab").unwrap());
        q.path = Some("/".into());
        assert_eq!(q.access(), Access::Day);
    }

    #[test]
    fn globs_and_prefixes_match_case_insensitively() {
        let p = NamePattern::parse("Q3*Report?.XLSX").unwrap();
        assert_eq!(p.literal_prefix(), "q3");
        assert!(p.matches("q3 sales report1.xlsx"));
        assert!(!p.matches("q3 sales report.xlsx"));
        assert!(!p.matches("q4 report1.xlsx"));
        let prefix = NamePattern::parse("budget").unwrap();
        assert!(prefix.matches("Budget 2026.xlsx"));
        assert!(!prefix.matches("my budget.xlsx"));
        assert!(NamePattern::parse("*.docx").unwrap().matches("a.b.DOCX"));
        assert!(NamePattern::parse("  ").is_err());
    }

    #[test]
    fn paths_match_whole_segments() {
        assert!(under("/reports/q3.xlsx", "/reports"));
        assert!(under("/reports", "/reports"));
        assert!(!under("/reports2026/q3.xlsx", "/reports"));
        assert!(under("/anything", "/"));
        assert_eq!(normalise_path("/Reports/").unwrap(), "/reports");
        assert_eq!(normalise_path("/").unwrap(), "/");
        assert!(
            normalise_path("Reports")
                .unwrap_err()
                .to_string()
                .contains("\"Reports\"")
        );
    }

    #[test]
    fn page_tokens_round_trip_and_bad_ones_are_named() {
        let p = Position {
            observed_at: now(),
            id: "2f0a.b".into(),
        };
        assert_eq!(Position::from_token(&p.token()).unwrap(), p);
        let e = Position::from_token("nope!").unwrap_err().to_string();
        assert!(e.contains("\"nope!\""), "{e}");
    }

    #[test]
    fn digests_and_types_are_checked() {
        assert_eq!(digest(&"AB".repeat(16), 32), Some("ab".repeat(16)));
        assert_eq!(digest("xyz", 32), None);
        assert_eq!(
            parse_type("Anonymous-Link-Created").unwrap(),
            FileEventType::AnonymousLinkCreated
        );
        assert!(parse_type("exploded").unwrap_err().to_string().contains("\"exploded\""));
    }

    #[test]
    fn a_reversed_range_or_a_zero_limit_is_refused() {
        let mut q = query();
        q.since = Some(now());
        q.until = Some(now() - Duration::days(1));
        assert!(matches!(q.validate(), Err(SearchError::EmptyRange { .. })));
        let mut q = query();
        q.limit = 0;
        assert!(matches!(q.validate(), Err(SearchError::BadLimit(0))));
    }
}
