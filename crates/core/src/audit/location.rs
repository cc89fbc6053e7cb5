//! Where an audit record's file lives: the OneDrive it belongs to, its path from the drive root,
//! its extension. Pure string work on the record's URLs; looking an item up is a port's job.
//!
//! A OneDrive for Business is a SharePoint "personal" site,
//! `https://contoso-my.sharepoint.com/personal/alice_contoso_com`, whose files live in one document
//! library, the drive; Graph gives the drive's `webUrl` (`…/personal/alice_contoso_com/Documents`).
//! An audit record names a file by its full URL (`ObjectId`) and by `SiteUrl` +
//! `SourceRelativeUrl` + `SourceFileName` ("SharePoint File Operations" in
//! <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>),
//! so the path from the drive root is the part of the file's URL below the drive's URL:
//! `…/Documents/Reports/q3.xlsx` → `/Reports/q3.xlsx`, the same form the inventory uses.

use std::borrow::Cow;
use std::net::IpAddr;

/// The path segment that introduces a personal (OneDrive) site in a SharePoint URL.
const PERSONAL_SEGMENT: &str = "/personal/";

/// The key of the OneDrive a URL belongs to: the lowercase segment after `/personal/`
/// (`alice_contoso_com`), or `None` when the URL is not inside a personal site (team sites,
/// communication sites, file shares). The key is how drives and records meet: the ingest use
/// case computes it from each monitored drive's `webUrl` and from each record's `SiteUrl`.
pub fn personal_site_key(url: &str) -> Option<String> {
    let start = find_ignore_ascii_case(url, PERSONAL_SEGMENT)? + PERSONAL_SEGMENT.len();
    let rest = &url[start..];
    let key = rest.split(['/', '?', '#']).next().unwrap_or_default();
    (!key.is_empty()).then(|| key.to_ascii_lowercase())
}

/// The personal site's URL (`https://…/personal/<key>`) inside a longer URL, without a
/// trailing slash.
pub fn personal_site_url(url: &str) -> Option<&str> {
    let start = find_ignore_ascii_case(url, PERSONAL_SEGMENT)? + PERSONAL_SEGMENT.len();
    let rest = &url[start..];
    let len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (len > 0).then(|| &url[..start + len])
}

/// Whether a user principal name is the one a personal site key was made from. SharePoint
/// builds the key from the UPN by replacing `@`, `.` and other punctuation with `_`, which
/// cannot be reversed unambiguously (`a.b_c` and `a_b.c` give the same key); comparing only
/// the letters and digits of both sides answers "is this the owner?" without guessing.
pub fn upn_matches_site_key(upn: &str, key: &str) -> bool {
    fn alnum(s: &str) -> impl Iterator<Item = char> + '_ {
        s.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase)
    }
    !key.is_empty() && alnum(upn).eq(alnum(key))
}

/// The record's URL relative to its site (`Documents/Reports/q3.xlsx`), from the canonical
/// `ObjectId` when it lies under `SiteUrl`, else from `SourceRelativeUrl` + `SourceFileName`.
///
/// Copes with the real-world bends of the documented `SiteUrl + SourceRelativeUrl +
/// SourceFileName == ObjectId` rule ("SharePoint File Operations" in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>)
/// as observed in real records: `SiteUrl` with or without a trailing slash, and `SourceRelativeUrl`
/// that already ends with the file name (sharing records) or is only the folder (file records).
pub fn site_relative_url<'a>(
    site_url: Option<&str>,
    object_id: Option<&'a str>,
    relative_url: Option<&'a str>,
    file_name: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    if let (Some(site), Some(object)) = (site_url, object_id) {
        let site = site.trim_end_matches('/');
        if starts_with_ignore_ascii_case(object, site) {
            let rest = &object[site.len()..];
            if rest.is_empty() || rest.starts_with('/') {
                return Some(Cow::Borrowed(rest.trim_matches('/')));
            }
        }
    }
    let folder = relative_url.map(|r| r.trim_matches('/')).filter(|r| !r.is_empty());
    match (folder, file_name) {
        (Some(folder), Some(name)) if ends_with_segment(folder, name) => Some(Cow::Borrowed(folder)),
        (Some(folder), Some(name)) => Some(Cow::Owned(format!("{folder}/{name}"))),
        (Some(folder), None) => Some(Cow::Borrowed(folder)),
        (None, Some(name)) => Some(Cow::Borrowed(name)),
        (None, None) => None,
    }
}

/// Where a site-relative URL lands in a drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrivePath {
    /// The path from the drive root: `/` for the root itself, `/Reports/q3.xlsx` below it.
    Inside(String),
    /// The URL is in another list or library of the site (`Sharing Links`, a second library).
    Outside,
}

/// The path from the drive root of a site-relative URL, given the drive's library as a
/// site-relative URL (`Documents`). Segments compare without regard to ASCII case, as
/// SharePoint URLs do.
pub fn path_in_library(site_relative: &str, library: &str) -> DrivePath {
    let library = library.trim_matches('/');
    let relative = site_relative.trim_matches('/');
    if library.is_empty() {
        return DrivePath::Inside(format!("/{relative}"));
    }
    if !starts_with_ignore_ascii_case(relative, library) {
        return DrivePath::Outside;
    }
    match &relative[library.len()..] {
        "" => DrivePath::Inside("/".to_owned()),
        rest if rest.starts_with('/') => DrivePath::Inside(rest.to_owned()),
        _ => DrivePath::Outside,
    }
}

/// The path from the drive root of a file's full URL, given the drive's `webUrl` as Graph
/// returns it (percent-encoded): the helper a resolver uses before `GET
/// /drives/{drive-id}/root:{path}` or an inventory lookup by path. `None` when the URL is not
/// inside the drive.
pub fn drive_relative_path(drive_web_url: &str, object_url: &str) -> Option<String> {
    let web = percent_decode(drive_web_url);
    let web = web.trim_end_matches('/');
    if !starts_with_ignore_ascii_case(object_url, web) {
        return None;
    }
    match object_url[web.len()..].trim_end_matches('/') {
        "" => Some("/".to_owned()),
        rest if rest.starts_with('/') => Some(rest.to_owned()),
        _ => None,
    }
}

/// The drive's library as a URL relative to its site: `Documents` for
/// `https://…/personal/alice_contoso_com/Documents`. Taken as everything after the personal
/// site in the (decoded) web URL.
pub fn library_of(drive_web_url: &str) -> Option<String> {
    let web = percent_decode(drive_web_url);
    let site = personal_site_url(&web)?;
    let library = web[site.len()..].trim_matches('/');
    (!library.is_empty()).then(|| library.to_owned())
}

/// The first segment of a site-relative URL: the library, when the drive's own is not known.
pub fn first_segment(site_relative: &str) -> &str {
    site_relative
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
}

/// Whether a drive path is one of the library's own view pages (`/Forms/AllItems.aspx`), which
/// SharePoint logs like files but no user made.
pub fn is_library_page(path: &str) -> bool {
    starts_with_ignore_ascii_case(path, "/Forms/") && ends_with_ignore_ascii_case(path, ".aspx")
}

/// The extension of a file, lowercase and without its dot: `SourceFileExtension` when given
/// (a leading dot tolerated), else the part of the name after its last dot. `None` for names
/// without one (`README`, `.profile`) and for folders.
pub fn extension(given: Option<&str>, name: Option<&str>) -> Option<String> {
    let from_given = given
        .map(|e| e.trim().trim_start_matches('.'))
        .filter(|e| !e.is_empty());
    let ext = from_given.or_else(|| {
        let name = name?;
        let dot = name.rfind('.')?;
        (dot > 0 && dot + 1 < name.len()).then(|| &name[dot + 1..])
    })?;
    Some(ext.to_lowercase())
}

/// The last segment of a URL or path.
pub fn last_segment(url: &str) -> Option<&str> {
    url.trim_end_matches('/').rsplit('/').next().filter(|s| !s.is_empty())
}

/// The client address of a record (`ClientIP`, "Common schema" in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>)
/// without the decorations observed in real records and third-party fixtures: surrounding spaces,
/// `[v6]` brackets, a `:port` suffix on an IPv4 address or a bracketed IPv6 one. Empty means
/// absent; a value that is no address at all is kept as given, trimmed, so nothing the record said
/// is lost.
pub fn client_ip(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    if raw.parse::<IpAddr>().is_ok() {
        return Some(raw.to_owned());
    }
    let candidate = if let Some(rest) = raw.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    match candidate.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => Some(raw.to_owned()),
    }
}

/// Decodes `%XX` escapes (as in Graph's `webUrl`); malformed escapes and invalid UTF-8 are kept
/// as they were.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(s),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn ends_with_segment(folder: &str, name: &str) -> bool {
    ends_with_ignore_ascii_case(folder, name)
        && (folder.len() == name.len() || folder.as_bytes()[folder.len() - name.len() - 1] == b'/')
}

fn ends_with_ignore_ascii_case(haystack: &str, suffix: &str) -> bool {
    haystack.len() >= suffix.len()
        && haystack.as_bytes()[haystack.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// `haystack` starts with `prefix`, ignoring ASCII case, and the cut falls on a character
/// boundary (so slicing at `prefix.len()` is safe).
pub fn starts_with_ignore_ascii_case(haystack: &str, prefix: &str) -> bool {
    haystack.len() >= prefix.len()
        && haystack.is_char_boundary(prefix.len())
        && haystack.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

fn find_ignore_ascii_case(haystack: &str, needle: &str) -> Option<usize> {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    if n.is_empty() || h.len() < n.len() {
        return None;
    }
    (0..=h.len() - n.len()).find(|&i| h[i..i + n.len()].eq_ignore_ascii_case(n))
}
