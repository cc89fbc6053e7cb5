//! Reading who a file was shared with, how, and whether they are outside the organisation.

use serde::{Deserialize, Serialize};

use super::operations::LinkScope;

/// The access a share or link grants, when the record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Read,
    Edit,
}

impl Permission {
    /// Reads the permission words SharePoint writes in `EventData` (`<Type>Edit</Type>`,
    /// `<Permissions granted>Contribute</Permissions granted>`), in `SharingType`, and at the end
    /// of a link group's kind (`AnonymousEdit`). Full control counts as edit (it includes it);
    /// "Limited Access" is the traversal grant SharePoint adds around a share and says nothing
    /// about the file, so it is `None`, as is any word not listed here.
    pub fn parse(word: &str) -> Option<Self> {
        const EDIT: &[&str] = &[
            "edit",
            "contribute",
            "system.limitededit",
            "full control",
            "fullcontrol",
            "design",
            "write",
            "owner",
        ];
        const READ: &[&str] = &[
            "view",
            "read",
            "system.limitedview",
            "view only",
            "restricted view",
            "review",
        ];
        let word = word.trim();
        if EDIT.iter().any(|w| w.eq_ignore_ascii_case(word)) {
            Some(Self::Edit)
        } else if READ.iter().any(|w| w.eq_ignore_ascii_case(word)) {
            Some(Self::Read)
        } else {
            None
        }
    }
}

/// The `<Tag>value</Tag>` pairs of an `EventData` string, in order.
///
/// `EventData` is documented as an XML fragment ("SharePoint Sharing schema" in
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>)
/// but, in the records observed, is not well-formed XML: tag names hold spaces (`<Permissions
/// granted>`), there is no root element, values are not escaped reliably. So it is scanned, not
/// parsed: an opening tag, then the first matching closing tag; anything else (stray `<`, unclosed
/// tags, nesting) is skipped. Never fails.
pub fn event_data_tags(data: &str) -> EventDataTags<'_> {
    EventDataTags { rest: data }
}

/// Iterator returned by [`event_data_tags`].
#[derive(Debug, Clone)]
pub struct EventDataTags<'a> {
    rest: &'a str,
}

impl<'a> Iterator for EventDataTags<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let open = self.rest.find('<')?;
            let after_open = &self.rest[open + 1..];
            let Some(close) = after_open.find('>') else {
                self.rest = "";
                return None;
            };
            let name = &after_open[..close];
            let body = &after_open[close + 1..];
            if name.is_empty() || name.starts_with('/') || name.contains('<') {
                self.rest = after_open;
                continue;
            }
            match find_closing(body, name) {
                Some((value_end, resume)) => {
                    self.rest = &body[resume..];
                    return Some((name.trim(), body[..value_end].trim()));
                }
                None => {
                    self.rest = body;
                    continue;
                }
            }
        }
    }
}

/// The position of `</name>` in `body`: `(where the value ends, where scanning resumes)`.
fn find_closing(body: &str, name: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(pos) = body[from..].find("</") {
        let start = from + pos;
        let tail = &body[start + 2..];
        if tail.len() > name.len()
            && tail.is_char_boundary(name.len())
            && tail[..name.len()].eq_ignore_ascii_case(name)
            && tail.as_bytes()[name.len()] == b'>'
        {
            return Some((start, start + 2 + name.len() + 1));
        }
        from = start + 2;
    }
    None
}

/// The value of the first `EventData` tag with this name (ASCII case ignored).
pub fn event_data_value<'a>(data: &'a str, tag: &str) -> Option<&'a str> {
    event_data_tags(data)
        .find(|(name, _)| name.eq_ignore_ascii_case(tag))
        .map(|(_, value)| value)
}

/// The email domains whose people count as inside the organisation.
///
/// Matching ignores case, and a trusted domain also trusts its subdomains: `contoso.com` trusts
/// `eu.contoso.com`, but neither `notcontoso.com` nor `contoso.com.example.net`. Configure the
/// tenant's verified domains, including its `*.onmicrosoft.com` one; an empty list trusts no
/// one, so every address counts as external.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedDomains {
    domains: Vec<String>,
}

impl TrustedDomains {
    /// Normalises each entry (trimmed, lowercase, without a leading `@`, `.` or `*.`, without a
    /// trailing `.`) and drops empty ones.
    pub fn new<I, S>(domains: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut domains: Vec<String> = domains
            .into_iter()
            .map(|d| {
                let d = d.as_ref().trim();
                let d = d.strip_prefix("*.").unwrap_or(d);
                d.trim_start_matches(['@', '.'])
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .filter(|d| !d.is_empty())
            .collect();
        domains.sort();
        domains.dedup();
        Self { domains }
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// Whether a domain is one of the trusted ones or below one.
    pub fn trusts_domain(&self, domain: &str) -> bool {
        let domain = domain.trim().trim_end_matches('.');
        self.domains.iter().any(|trusted| {
            domain.eq_ignore_ascii_case(trusted)
                || (domain.len() > trusted.len()
                    && domain.as_bytes()[domain.len() - trusted.len() - 1] == b'.'
                    && domain.as_bytes()[domain.len() - trusted.len()..].eq_ignore_ascii_case(trusted.as_bytes()))
        })
    }

    /// Whether an address is inside the organisation: `None` when `address` is not an email
    /// address. Guest accounts (`…#EXT#@tenant.onmicrosoft.com`) are never inside, whatever the
    /// domain of their UPN.
    pub fn is_internal(&self, address: &str) -> Option<bool> {
        if is_guest_upn(address) {
            return Some(false);
        }
        let (_, domain) = address.trim().rsplit_once('@')?;
        (!domain.is_empty()).then(|| self.trusts_domain(domain))
    }
}

/// Marker Entra ID puts in the UPN of a B2B guest: `bob_fabrikam.com#EXT#@contoso.onmicrosoft.com`.
const GUEST_MARKER: &str = "#EXT#";

/// Whether a UPN is a B2B guest's.
pub fn is_guest_upn(upn: &str) -> bool {
    upn.as_bytes()
        .windows(GUEST_MARKER.len())
        .any(|w| w.eq_ignore_ascii_case(GUEST_MARKER.as_bytes()))
}

/// The address a guest was invited with, read back from their UPN
/// (`bob_fabrikam.com#EXT#@…` → `bob@fabrikam.com`): the last `_` before `#EXT#` stands for the
/// `@` (domains hold no `_`). `None` for UPNs that are not a guest's or do not decode.
pub fn guest_email(upn: &str) -> Option<String> {
    let upper = upn.to_ascii_uppercase();
    let marker = upper.find(GUEST_MARKER)?;
    let local = &upn[..marker];
    let (user, domain) = local.rsplit_once('_')?;
    (!user.is_empty() && domain.contains('.')).then(|| format!("{user}@{domain}").to_lowercase())
}

/// What a sharing target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A person of the directory (`TargetUserOrGroupType` Member), or an address of unstated type.
    User,
    /// A B2B guest (type Guest or Partner, or a `#EXT#` UPN).
    Guest,
    /// A SharePoint or security group.
    Group,
    /// The system group behind a sharing link (`SharingLinks.<item>.<Kind>.<id>`).
    Link,
}

/// One person, group or link a file was shared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharingTarget {
    /// As the record names it (`TargetUserOrGroupName` or `UserSharedWith`).
    pub name: String,
    pub kind: TargetKind,
    /// The address, lowercase: the UPN of a member, the invited address of a guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `TargetUserOrGroupType`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_type: Option<String>,
    /// Whether the target is outside the trusted domains; `None` when it cannot be told (a
    /// group, an address-less name, a specific-people link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
}

/// The link a `SharingLinks.<item>.<Kind>.<id>` group stands for: its scope and permission.
/// Kinds start with `Anonymous`, `Organization` or `Flexible` (specific people) and end with
/// `Edit` or `View`.
pub fn link_group(name: &str) -> Option<(Option<LinkScope>, Option<Permission>)> {
    let rest = name.strip_prefix("SharingLinks.")?;
    let kind = rest.split('.').nth(1)?;
    let lower = kind.to_ascii_lowercase();
    let scope = if lower.starts_with("anonymous") {
        Some(LinkScope::Anonymous)
    } else if lower.starts_with("organization") {
        Some(LinkScope::Organization)
    } else if lower.starts_with("flexible") {
        Some(LinkScope::SpecificPeople)
    } else {
        None
    };
    let permission = if lower.ends_with("edit") {
        Some(Permission::Edit)
    } else if lower.ends_with("view") {
        Some(Permission::Read)
    } else {
        None
    };
    Some((scope, permission))
}

/// Classifies one target named by a record.
pub fn target(name: &str, directory_type: Option<&str>, trusted: &TrustedDomains) -> SharingTarget {
    let name = name.trim();
    let dtype = directory_type.map(str::trim).filter(|t| !t.is_empty());
    let is = |t: &str| dtype.is_some_and(|d| d.eq_ignore_ascii_case(t));
    let guest = is("Guest") || is("Partner") || is_guest_upn(name);
    let (kind, email, external) = if let Some((scope, _)) = link_group(name) {
        let external = match scope {
            Some(LinkScope::Anonymous) => Some(true),
            Some(LinkScope::Organization) => Some(false),
            _ => None,
        };
        (TargetKind::Link, None, external)
    } else if guest {
        let email = guest_email(name).or_else(|| name.contains('@').then(|| name.to_lowercase()));
        (TargetKind::Guest, email, Some(true))
    } else if is("SharePointGroup") || is("SecurityGroup") || is("Group") {
        let external = name
            .eq_ignore_ascii_case("Everyone except external users")
            .then_some(false);
        (TargetKind::Group, None, external)
    } else {
        let email = name.contains('@').then(|| name.to_lowercase());
        let external = email
            .as_deref()
            .and_then(|e| trusted.is_internal(e))
            .map(|internal| !internal);
        (TargetKind::User, email, external)
    };
    SharingTarget {
        name: name.to_owned(),
        kind,
        email,
        directory_type: dtype.map(str::to_owned),
        external,
    }
}
