//! Reading a scope CSV (users or groups) uploaded by an admin.
//!
//! [`parse_scope_csv`] turns the bytes of `scoping/<connection>/users.csv` or `groups.csv` into
//! the entries of a [`super::Scope`], or says why the whole file cannot be used. It does no I/O:
//! the adapter fetches the object (after [`check_size`] on its length) and hands over the bytes.
//!
//! # What a file looks like
//!
//! Comma-separated, UTF-8 (a leading byte-order mark, as Excel's "CSV UTF-8" writes, is fine),
//! quoted as RFC 4180 says (`"Smith, Anna"`, `"say ""hi"""`), with a header row naming the
//! columns. Columns other than the ones below are ignored, so an export from the Microsoft 365
//! admin center or Entra ID can be uploaded as is.
//!
//! - **users.csv**: each row names a user by address, read from the first of
//!   [`USER_EMAIL_HEADERS`] present that has a value in the row; a row with no address is read
//!   by display name from [`USER_NAME_HEADERS`] instead.
//! - **groups.csv**: each row names a group by its mail address ([`GROUP_MAIL_HEADERS`]) when the
//!   row has a valid one (mail is unique in the directory, display names are not), else by its
//!   exact display name ([`GROUP_NAME_HEADERS`]).
//!
//! Header names are matched ignoring case, spaces, `_` and `-`: `Email Address`,
//! `emailaddress`, `EMAIL_ADDRESS` and `E-mail address` are one header, and so are
//! `DisplayName` and `Display Name`.
//!
//! # Rows
//!
//! Cell values are trimmed. Blank lines, and rows whose relevant cells are all empty, are
//! skipped. A row naming an entry already listed above it (addresses compared ignoring case,
//! names ignoring case and surrounding spaces) is counted in [`ParsedList::duplicates`]; the
//! first spelling is kept. A row whose value is not a usable address or name is listed in
//! [`ParsedList::rejected`] with its line and the reason, and the rest of the file still counts.
//! Cells that look like spreadsheet formulas (`=SUM(A1)`, `+1`, `@x`) are plain text: kept
//! verbatim when they are a valid name, rejected when they sit where an address belongs, never
//! evaluated.
//!
//! The whole file is rejected ([`CsvError`]) when it is too large, empty, not UTF-8 text, has no
//! usable header, is malformed, names no valid entry, or names more than
//! [`MAX_SCOPE_ENTRIES`] distinct entries; every message names the problem and the fix.

use std::collections::HashSet;

use super::{GroupSelector, MAX_SCOPE_ENTRIES, RejectedRow, ScopeEntry, ScopeKind, UserSelector};

/// The largest scope CSV accepted, checked before anything is parsed. A list at the
/// [`MAX_SCOPE_ENTRIES`] limit of 1,000 rows of the longest valid address (320 characters) is
/// about 0.3 MiB; an Entra ID user export of ~40 columns (~1 KiB a row) still fits.
pub const MAX_CSV_BYTES: u64 = 1024 * 1024;

/// The longest address accepted: 64 (local part) + 1 (`@`) + 255 (domain), RFC 5321 §4.5.3.1.
pub const MAX_EMAIL_CHARS: usize = 320;

/// The longest display name accepted: Entra ID caps `displayName` of users and groups at 256
/// characters (Microsoft Graph user and group resource types).
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;

/// Headers of a users list holding a sign-in name or address, in priority order: a row is read
/// from the first of these columns that has a value.
pub const USER_EMAIL_HEADERS: [&str; 4] = ["Email Address", "Email", "OwnerPrincipalName", "UserPrincipalName"];

/// Headers of a users list holding a display name, in priority order, read for rows without an
/// address.
pub const USER_NAME_HEADERS: [&str; 2] = ["DisplayName", "Owner"];

/// Headers of a groups list holding the group's mail address, in priority order (same order as
/// for users).
pub const GROUP_MAIL_HEADERS: [&str; 2] = ["Email Address", "Email"];

/// Headers of a groups list holding the group's exact display name, in priority order.
pub const GROUP_NAME_HEADERS: [&str; 2] = ["Display Name", "Groups"];

/// A UTF-8 byte-order mark, as Excel writes at the start of a "CSV UTF-8" file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Above this share of control bytes (other than tab, CR and LF) a file is taken for binary
/// rather than a CSV with a few bad cells. 10%: a text list has none; any binary format far more.
const MAX_CONTROL_BYTES_PERCENT: usize = 10;

/// How many rejected rows a [`CsvError::NoValidEntry`] message quotes (all are in the error).
const QUOTED_REJECTIONS: usize = 3;

/// Which list a file is: the kind of a scope set from a CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `users.csv`: one user a row.
    Users,
    /// `groups.csv`: one group a row, whose transitive user members are in scope.
    Groups,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Users => "users",
            Self::Groups => "groups",
        }
    }

    /// The scope a list of this kind sets.
    pub fn scope_kind(self) -> ScopeKind {
        match self {
            Self::Users => ScopeKind::Users,
            Self::Groups => ScopeKind::Groups,
        }
    }

    /// The list kind for a scope kind; `None` for [`ScopeKind::All`], which has no list.
    pub fn from_scope_kind(kind: ScopeKind) -> Option<Self> {
        match kind {
            ScopeKind::All => None,
            ScopeKind::Users => Some(Self::Users),
            ScopeKind::Groups => Some(Self::Groups),
        }
    }

    /// The headers holding the preferred identifier (address or mail), in priority order.
    pub fn id_headers(self) -> &'static [&'static str] {
        match self {
            Self::Users => &USER_EMAIL_HEADERS,
            Self::Groups => &GROUP_MAIL_HEADERS,
        }
    }

    /// The headers holding a display name, in priority order.
    pub fn name_headers(self) -> &'static [&'static str] {
        match self {
            Self::Users => &USER_NAME_HEADERS,
            Self::Groups => &GROUP_NAME_HEADERS,
        }
    }

    /// What one row names, for messages.
    fn noun(self) -> &'static str {
        match self {
            Self::Users => "user",
            Self::Groups => "group",
        }
    }
}

impl std::fmt::Display for ListKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scope list read from a CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedList {
    /// Distinct valid entries in file order, each as first spelled (trimmed).
    pub entries: Vec<ScopeEntry>,
    /// Rows naming an entry already in `entries`.
    pub duplicates: u64,
    /// Rows that name something but could not be used, in file order.
    pub rejected: Vec<RejectedRow>,
    /// Data rows read, skipped blank rows excluded: `entries + duplicates + rejected`.
    pub rows: u64,
    /// The header row as found in the file.
    pub header: Vec<String>,
}

/// Why a whole scope file was rejected. Each message names the bad value or position and says
/// how to fix the file; none of them is worth retrying without a new upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    #[error(
        "the file is {} ({bytes} bytes), over the {limit}-byte limit for a scope list; a list of {MAX_SCOPE_ENTRIES} \
         entries is far smaller: upload only the columns needed (one address or name per row), or scope by groups",
        human_size(*.bytes)
    )]
    TooLarge { bytes: u64, limit: u64 },

    #[error(
        "the file is empty; a {kind} list needs a header row with {} and one {} per line below it",
        header_list(*.kind),
        .kind.noun()
    )]
    Empty { kind: ListKind },

    #[error(
        "not a CSV text file: {reason}; in Excel use Save As > 'CSV UTF-8 (Comma delimited) (*.csv)' and upload that file"
    )]
    NotText { reason: String },

    #[error(
        "the file is not UTF-8: byte 0x{byte:02X} at line {line}, column {column} is not valid UTF-8 (the file was \
         probably saved as plain 'CSV', which uses a Windows code page such as Latin-1); in Excel use Save As > \
         'CSV UTF-8 (Comma delimited) (*.csv)', or re-encode the file as UTF-8"
    )]
    NotUtf8 { line: u64, column: u64, byte: u8 },

    #[error(
        "no usable header: found [{}] at line {line}; a {kind} list needs {}; add a header row naming the column \
         (case, spaces, '_' and '-' in header names do not matter){}",
        .found.iter().map(|h| h.trim()).collect::<Vec<_>>().join(", "),
        header_list(*.kind),
        separator_hint(.found)
    )]
    NoUsableHeader {
        kind: ListKind,
        line: u64,
        found: Vec<String>,
    },

    #[error("{}", no_valid_entry_message(*.kind, *.rows, .rejected))]
    NoValidEntry {
        kind: ListKind,
        rows: u64,
        rejected: Vec<RejectedRow>,
    },

    #[error("{}", too_many_message(*.kind, *.count, *.limit))]
    TooManyEntries { kind: ListKind, count: u64, limit: u64 },

    #[error("malformed CSV at line {line}: {message}")]
    Malformed { line: u64, message: String },
}

/// Rejects a file of `bytes` bytes before it is fetched or parsed when it is over
/// [`MAX_CSV_BYTES`].
pub fn check_size(bytes: u64) -> Result<(), CsvError> {
    if bytes > MAX_CSV_BYTES {
        return Err(CsvError::TooLarge {
            bytes,
            limit: MAX_CSV_BYTES,
        });
    }
    Ok(())
}

/// Reads a scope list of `kind` from the bytes of an uploaded CSV.
///
/// Deterministic: the same bytes give the same entries in the same (file) order. Rows that
/// cannot be used are returned in [`ParsedList::rejected`] while the rest is accepted; the
/// whole file fails only for the reasons listed on [`CsvError`], the size being checked before
/// anything is parsed. Line numbers are 1-based lines of the file (the header is line 1) where
/// the row starts, counting the line breaks inside quoted cells of earlier rows.
pub fn parse_scope_csv(kind: ListKind, bytes: &[u8]) -> Result<ParsedList, CsvError> {
    check_size(bytes.len() as u64)?;
    let body = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CsvError::Empty { kind });
    }
    let lines = LineIndex::new(body);
    check_text(bytes, body, &lines)?;
    if let Err(e) = std::str::from_utf8(body) {
        return Err(not_utf8(body, &lines, e.valid_up_to()));
    }
    check_quotes(body, &lines)?;

    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut record = ::csv::StringRecord::new();
    let read = |reader: &mut ::csv::Reader<&[u8]>, record: &mut ::csv::StringRecord| {
        reader.read_record(record).map_err(|e| CsvError::Malformed {
            line: e.position().map_or(1, |p| lines.record_line(body, p.byte())),
            message: format!("{e}; save the file again as 'CSV UTF-8 (Comma delimited)'"),
        })
    };

    if !read(&mut reader, &mut record)? {
        return Err(CsvError::Empty { kind });
    }
    let header: Vec<String> = record.iter().map(str::to_owned).collect();
    let header_line = record.position().map_or(1, |p| lines.record_line(body, p.byte()));
    let columns = Columns::find(kind, &header);
    if columns.ids.is_empty() && columns.names.is_empty() {
        return Err(CsvError::NoUsableHeader {
            kind,
            line: header_line,
            found: header,
        });
    }

    let mut list = ParsedList {
        entries: Vec::new(),
        duplicates: 0,
        rejected: Vec::new(),
        rows: 0,
        header,
    };
    let mut seen = HashSet::new();
    while read(&mut reader, &mut record)? {
        let id = columns.first_value(&columns.ids, &record);
        let name = columns.first_value(&columns.names, &record);
        if id.is_none() && name.is_none() {
            continue;
        }
        list.rows += 1;
        match read_row(kind, id, name) {
            Ok(entry) => {
                if seen.insert(dedup_key(&entry)) {
                    list.entries.push(entry);
                } else {
                    list.duplicates += 1;
                }
            }
            Err((value, reason)) => list.rejected.push(RejectedRow {
                line: record.position().map_or(0, |p| lines.record_line(body, p.byte())),
                value: value.to_owned(),
                reason,
            }),
        }
    }

    if list.entries.is_empty() {
        return Err(CsvError::NoValidEntry {
            kind,
            rows: list.rows,
            rejected: list.rejected,
        });
    }
    if list.entries.len() > MAX_SCOPE_ENTRIES {
        return Err(CsvError::TooManyEntries {
            kind,
            count: list.entries.len() as u64,
            limit: MAX_SCOPE_ENTRIES as u64,
        });
    }
    Ok(list)
}

/// The columns of the file holding identifiers and names, each list in header priority order.
struct Columns {
    ids: Vec<usize>,
    names: Vec<usize>,
}

impl Columns {
    fn find(kind: ListKind, header: &[String]) -> Self {
        let normalized: Vec<String> = header.iter().map(|h| normalize_header(h)).collect();
        let find_all = |wanted: &[&str]| -> Vec<usize> {
            wanted
                .iter()
                .filter_map(|w| {
                    let w = normalize_header(w);
                    normalized.iter().position(|h| *h == w)
                })
                .collect()
        };
        Self {
            ids: find_all(kind.id_headers()),
            names: find_all(kind.name_headers()),
        }
    }

    /// The first cell among `columns` that is not blank, as written (untrimmed).
    fn first_value<'r>(&self, columns: &[usize], record: &'r ::csv::StringRecord) -> Option<&'r str> {
        columns
            .iter()
            .filter_map(|&i| record.get(i))
            .find(|cell| !cell.trim().is_empty())
    }
}

/// A header name reduced to what matters: lower case, without spaces, `_`, `-` or a stray BOM.
fn normalize_header(header: &str) -> String {
    header
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '_' | '-' | '\u{feff}'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The entry a row names, or the cell to report and why it cannot be used. `id` and `name` are
/// the row's first non-blank address and name cells as written (at least one is present).
///
/// A user row with an address is read by that address only (a mistyped address is reported, not
/// replaced by a name that may match other people); a group row falls back to its name when its
/// mail is not a valid address.
fn read_row<'r>(kind: ListKind, id: Option<&'r str>, name: Option<&'r str>) -> Result<ScopeEntry, (&'r str, String)> {
    let id = id.map(|v| (v, email_problem(v.trim())));
    match (kind, id, name) {
        (_, Some((v, None)), _) => Ok(match kind {
            ListKind::Users => ScopeEntry::User(UserSelector::Email(v.trim().to_owned())),
            ListKind::Groups => ScopeEntry::Group(GroupSelector::Mail(v.trim().to_owned())),
        }),
        (ListKind::Users, Some((v, Some(p))), _) | (_, Some((v, Some(p))), None) => Err((v, not_an_address(&p, kind))),
        (_, id, Some(n)) => match (name_problem(n.trim()), id) {
            (None, _) => Ok(match kind {
                ListKind::Users => ScopeEntry::User(UserSelector::DisplayName(n.trim().to_owned())),
                ListKind::Groups => ScopeEntry::Group(GroupSelector::DisplayName(n.trim().to_owned())),
            }),
            (Some(p), Some((v, Some(id_p)))) => Err((
                v,
                format!(
                    "{}; the name {:?} cannot be used either: {p}",
                    not_an_address(&id_p, kind),
                    n.trim()
                ),
            )),
            (Some(p), _) => Err((n, not_a_name(&p))),
        },
        (_, None, None) => Err(("", "the row is empty".to_owned())),
    }
}

fn not_an_address(problem: &str, kind: ListKind) -> String {
    let example = match kind {
        ListKind::Users => "alice@contoso.com",
        ListKind::Groups => "sales@contoso.com",
    };
    format!("not an email address: {problem}; write one address per cell, such as {example}")
}

fn not_a_name(problem: &str) -> String {
    format!("not a usable display name: {problem}")
}

/// What is wrong with a (trimmed) address, if anything. Deliberately simple: one `@`, a local
/// part without spaces or RFC 5322 specials, and a dotted domain of letters, digits and `-`.
fn email_problem(value: &str) -> Option<String> {
    let chars = value.chars().count();
    if chars > MAX_EMAIL_CHARS {
        return Some(format!(
            "it is {chars} characters long, over the {MAX_EMAIL_CHARS} an address may have"
        ));
    }
    if value.chars().any(char::is_control) {
        return Some("it contains a line break or another control character".to_owned());
    }
    if value.chars().any(char::is_whitespace) {
        return Some("it contains a space".to_owned());
    }
    let (local, domain) = match value.matches('@').count() {
        0 => return Some("it has no '@'".to_owned()),
        1 => value.split_once('@')?,
        n => return Some(format!("it has {n} '@' (put each address in its own row)")),
    };
    if local.is_empty() {
        return Some("nothing comes before the '@'".to_owned());
    }
    if domain.is_empty() {
        return Some("nothing comes after the '@'".to_owned());
    }
    if let Some(c) = local.chars().find(|c| "\"(),:;<>[\\]".contains(*c)) {
        return Some(format!("it contains {c:?}, which an address cannot hold"));
    }
    if !domain.contains('.') {
        return Some(format!(
            "the domain {domain:?} has no dot (expected a domain such as contoso.com)"
        ));
    }
    if domain.split('.').any(str::is_empty) {
        return Some(format!("the domain {domain:?} has an empty part between dots"));
    }
    if let Some(c) = domain.chars().find(|c| !c.is_alphanumeric() && !matches!(c, '-' | '.')) {
        return Some(format!("the domain {domain:?} contains {c:?}"));
    }
    None
}

/// What is wrong with a (trimmed) display name, if anything.
fn name_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("it is empty".to_owned());
    }
    let chars = value.chars().count();
    if chars > MAX_DISPLAY_NAME_CHARS {
        return Some(format!(
            "it is {chars} characters long, over the {MAX_DISPLAY_NAME_CHARS} a display name may have"
        ));
    }
    if value.chars().any(char::is_control) {
        return Some(
            "it contains a line break or another control character; a display name is one line of text (check for \
             a quoted cell spanning several lines)"
                .to_owned(),
        );
    }
    None
}

/// The entry as compared for duplicates: addresses ignoring case, names ignoring case (values
/// are already trimmed).
fn dedup_key(entry: &ScopeEntry) -> ScopeEntry {
    match entry {
        ScopeEntry::User(UserSelector::Email(v)) => ScopeEntry::User(UserSelector::Email(v.to_lowercase())),
        ScopeEntry::User(UserSelector::DisplayName(v)) => ScopeEntry::User(UserSelector::DisplayName(v.to_lowercase())),
        ScopeEntry::Group(GroupSelector::Mail(v)) => ScopeEntry::Group(GroupSelector::Mail(v.to_lowercase())),
        ScopeEntry::Group(GroupSelector::DisplayName(v)) => {
            ScopeEntry::Group(GroupSelector::DisplayName(v.to_lowercase()))
        }
    }
}

/// Rejects content that is not text: UTF-16, Office workbooks, anything with NUL bytes or a high
/// share of control bytes. `bytes` is the file as uploaded, `body` the same without a UTF-8 BOM.
fn check_text(bytes: &[u8], body: &[u8], lines: &LineIndex) -> Result<(), CsvError> {
    let reason = if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        "it is UTF-16 text (as Excel's 'Unicode Text' writes), not UTF-8".to_owned()
    } else if bytes.starts_with(b"PK\x03\x04") {
        "it is a zip archive, such as an Excel workbook (.xlsx)".to_owned()
    } else if bytes.starts_with(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1") {
        "it is an Office document, such as an Excel 97-2003 workbook (.xls)".to_owned()
    } else if let Some(at) = body.iter().position(|&b| b == 0) {
        format!(
            "it contains a NUL byte at line {} (byte offset {at})",
            lines.line_of(at)
        )
    } else {
        let control = body
            .iter()
            .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7F)
            .count();
        if control * 100 <= body.len() * MAX_CONTROL_BYTES_PERCENT {
            return Ok(());
        }
        format!("{control} of its {} bytes are control characters", body.len())
    };
    Err(CsvError::NotText { reason })
}

fn not_utf8(body: &[u8], lines: &LineIndex, at: usize) -> CsvError {
    let line = lines.line_of(at);
    let line_start = lines.start_of(line);
    let column = String::from_utf8_lossy(body.get(line_start..at).unwrap_or_default())
        .chars()
        .count() as u64
        + 1;
    CsvError::NotUtf8 {
        line,
        column,
        byte: body.get(at).copied().unwrap_or_default(),
    }
}

/// Fails on a quoted field that is never closed. The `csv` crate reads such a field to the end of
/// the file without complaint, which would silently swallow every row after it; this follows its
/// quoting rules (a quote opens a field only at the start of the field; `""` inside is a quote).
fn check_quotes(body: &[u8], lines: &LineIndex) -> Result<(), CsvError> {
    let mut at_field_start = true;
    let mut in_quotes = false;
    let mut just_closed = false;
    let mut opened_at = 0;
    for (i, &b) in body.iter().enumerate() {
        if in_quotes {
            if b == b'"' {
                in_quotes = false;
                just_closed = true;
            }
            continue;
        }
        if std::mem::take(&mut just_closed) && b == b'"' {
            // `""` inside a quoted field: a quote, and still inside the field.
            in_quotes = true;
            continue;
        }
        match b {
            b',' | b'\n' | b'\r' => at_field_start = true,
            b'"' if at_field_start => {
                in_quotes = true;
                opened_at = i;
                at_field_start = false;
            }
            _ => at_field_start = false,
        }
    }
    if !in_quotes {
        return Ok(());
    }
    Err(CsvError::Malformed {
        line: lines.line_of(opened_at),
        message: "a quoted cell is never closed, so every row after it would be lost; add the closing quote \
                      (a quote inside a quoted cell is written twice: \"\")"
            .to_owned(),
    })
}

/// Where the lines of a file start, to turn byte offsets into 1-based line numbers. A line ends
/// at `\n`, `\r\n` or a lone `\r`, as the CSV reader ends records.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(body: &[u8]) -> Self {
        let mut starts = vec![0];
        for (i, &b) in body.iter().enumerate() {
            if b == b'\n' || (b == b'\r' && body.get(i + 1) != Some(&b'\n')) {
                starts.push(i + 1);
            }
        }
        Self { starts }
    }

    fn line_of(&self, offset: usize) -> u64 {
        self.starts.partition_point(|&s| s <= offset) as u64
    }

    fn start_of(&self, line: u64) -> usize {
        let index = usize::try_from(line.saturating_sub(1)).unwrap_or(usize::MAX);
        self.starts.get(index).copied().unwrap_or_default()
    }

    /// The line where a record starts, given where the reader began reading it: the reader
    /// starts each record right after the previous one, before any blank lines between them.
    fn record_line(&self, body: &[u8], read_from: u64) -> u64 {
        let from = usize::try_from(read_from).unwrap_or(usize::MAX).min(body.len());
        let blank = body
            .get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| matches!(b, b'\n' | b'\r'))
            .count();
        self.line_of(from + blank)
    }
}

fn header_list(kind: ListKind) -> String {
    match kind {
        ListKind::Users => format!(
            "one of {} (or {} for users without an address)",
            USER_EMAIL_HEADERS.join(", "),
            USER_NAME_HEADERS.join(" / ")
        ),
        ListKind::Groups => format!(
            "one of {} (the group's exact display name) or {} (the group's mail address)",
            GROUP_NAME_HEADERS.join(", "),
            GROUP_MAIL_HEADERS.join(", ")
        ),
    }
}

/// A hint for files whose columns are not separated by commas (Excel in many European locales
/// writes `;`), which arrive as one header cell.
fn separator_hint(found: &[String]) -> String {
    match found {
        [only] => [';', '\t', '|']
            .into_iter()
            .find(|c| only.contains(*c))
            .map(|c| {
                format!(
                    "; the columns seem to be separated by {c:?} rather than commas: save the file as \
                     'CSV UTF-8 (Comma delimited)' or replace the separators with commas"
                )
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{}.{} MiB", bytes / MIB, bytes % MIB * 10 / MIB)
    } else {
        format!("{}.{} KiB", bytes / 1024, bytes % 1024 * 10 / 1024)
    }
}

fn no_valid_entry_message(kind: ListKind, rows: u64, rejected: &[RejectedRow]) -> String {
    if rows == 0 {
        return format!(
            "the file has a header but no data rows; add one {} per line below the header",
            kind.noun()
        );
    }
    let examples: Vec<String> = rejected
        .iter()
        .take(QUOTED_REJECTIONS)
        .map(|r| format!("line {}: {:?} is {}", r.line, r.value, r.reason))
        .collect();
    let more = rejected.len().saturating_sub(QUOTED_REJECTIONS);
    format!(
        "no valid {} in the file: all {rows} data rows were rejected ({}{}); fix these rows and upload the file again",
        kind.noun(),
        examples.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}

fn too_many_message(kind: ListKind, count: u64, limit: u64) -> String {
    let fix = match kind {
        ListKind::Users => {
            "scope by groups instead (upload groups.csv naming groups these users belong to), or remove users"
        }
        ListKind::Groups => {
            "list fewer, larger groups (a group's nested groups are included, so one parent group can replace many)"
        }
    };
    format!(
        "the file names {count} distinct {}s, over the limit of {limit} a scope list may hold; {fix}",
        kind.noun()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_ignore_case_spaces_underscores_and_dashes() {
        for variant in [
            "Email Address",
            "emailaddress",
            "EMAIL_ADDRESS",
            " E-mail  Address ",
            "\u{feff}Email Address",
        ] {
            assert_eq!(normalize_header(variant), "emailaddress", "{variant:?}");
        }
        assert_eq!(normalize_header("Display Name"), normalize_header("DisplayName"));
    }

    #[test]
    fn line_index_counts_lf_crlf_and_lone_cr() {
        let body = b"a\nb\r\nc\rd";
        let lines = LineIndex::new(body);
        assert_eq!(lines.line_of(0), 1);
        assert_eq!(lines.line_of(2), 2);
        assert_eq!(lines.line_of(3), 2, "the CR of a CRLF belongs to the line it ends");
        assert_eq!(lines.line_of(5), 3);
        assert_eq!(lines.line_of(7), 4);
    }

    #[test]
    fn record_line_skips_blank_lines_before_the_record() {
        let body = b"h\n\r\n\nx\n";
        assert_eq!(LineIndex::new(body).record_line(body, 2), 4);
    }

    #[test]
    fn addresses_are_checked_for_one_at_sign_and_a_dotted_domain() {
        for ok in [
            "alice@contoso.com",
            "a.b+tag@sub.contoso.co.uk",
            "o'brien@contoso.com",
            "jose@exämple.de",
        ] {
            assert_eq!(email_problem(ok), None, "{ok}");
        }
        for bad in [
            "alice",
            "alice@",
            "@contoso.com",
            "a@b@contoso.com",
            "alice@contoso",
            "alice@contoso..com",
            "alice@.contoso.com",
            "al ice@contoso.com",
            "alice@contoso.com\n",
            "\"alice\"@contoso.com",
            "x@y.com\")",
            "=HYPERLINK(\"x@y.com\")",
        ] {
            assert!(email_problem(bad).is_some(), "{bad:?} should be rejected");
        }
        let longest = format!("{}@{}.com", "a".repeat(64), "b".repeat(MAX_EMAIL_CHARS - 69));
        assert_eq!(longest.chars().count(), MAX_EMAIL_CHARS);
        assert_eq!(email_problem(&longest), None);
        assert!(email_problem(&format!("a{longest}")).is_some());
    }

    #[test]
    fn display_names_are_one_line_of_at_most_256_characters() {
        assert_eq!(name_problem(&"é".repeat(MAX_DISPLAY_NAME_CHARS)), None);
        assert!(name_problem(&"é".repeat(MAX_DISPLAY_NAME_CHARS + 1)).is_some());
        assert!(name_problem("Sales\nTeam").is_some());
        assert!(name_problem("Sales\u{7}").is_some());
        assert!(name_problem("").is_some());
    }

    #[test]
    fn quote_check_follows_csv_quoting_rules() {
        let lines = |b: &[u8]| LineIndex::new(b);
        for ok in [
            &b"a,\"b,\"\"c\"\"\"\n"[..],
            b"O\"Brien,x\n",
            b"\"a\"x,y\n",
            b"\"multi\nline\",z",
            b"\"\"",
        ] {
            assert_eq!(check_quotes(ok, &lines(ok)), Ok(()), "{}", String::from_utf8_lossy(ok));
        }
        let bad = b"h\nok\n\"never closed\nmore\n";
        assert!(matches!(
            check_quotes(bad, &lines(bad)),
            Err(CsvError::Malformed { line: 3, .. })
        ));
        let bad = b"h\n\"a \"\" b\nc\n";
        assert!(matches!(
            check_quotes(bad, &lines(bad)),
            Err(CsvError::Malformed { .. })
        ));
    }

    #[test]
    fn combined_header_lists_name_every_accepted_header() {
        for kind in [ListKind::Users, ListKind::Groups] {
            let listed = header_list(kind);
            for h in kind.id_headers().iter().chain(kind.name_headers()) {
                assert!(listed.contains(h), "{kind}: {h} missing from {listed}");
            }
        }
    }

    #[test]
    fn sizes_are_shown_in_mib_or_kib() {
        assert_eq!(human_size(10 * 1024 * 1024), "10.0 MiB");
        assert_eq!(human_size(1024 * 1024 + 512 * 1024), "1.5 MiB");
        assert_eq!(human_size(2048), "2.0 KiB");
    }
}
