//! The audit record as it arrives: the fields filetrail reads, borrowed from the input where the
//! JSON allows, each accepted whatever its JSON type so the normaliser (not serde) decides what
//! is malformed and can name the field.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A JSON value as far as the normaliser cares: strings are kept (borrowed when unescaped),
/// numbers and booleans by value, arrays and objects only as "something else".
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An array or an object.
    Nested,
}

impl<'a> Loose<'a> {
    /// The JSON type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "a string",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Bool(_) => "a boolean",
            Self::Nested => "an array or object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map(Loose::Int).unwrap_or(Loose::Float(v as f64)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Float(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Nested)
    }
}

/// The fields of a SharePoint/OneDrive audit record filetrail reads (common schema, SharePoint
/// base, file operations and sharing schemas:
/// <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>).
/// Unknown fields are ignored; `null` reads as absent. A record with the same field twice is
/// refused by the parser.
#[derive(Debug, Default, Deserialize)]
pub struct RawRecord<'a> {
    #[serde(rename = "Id", borrow, default)]
    pub id: Option<Loose<'a>>,
    #[serde(rename = "RecordType", borrow, default)]
    pub record_type: Option<Loose<'a>>,
    #[serde(rename = "CreationTime", borrow, default)]
    pub creation_time: Option<Loose<'a>>,
    #[serde(rename = "Operation", borrow, default)]
    pub operation: Option<Loose<'a>>,
    #[serde(rename = "Workload", borrow, default)]
    pub workload: Option<Loose<'a>>,
    #[serde(rename = "ResultStatus", borrow, default)]
    pub result_status: Option<Loose<'a>>,
    #[serde(rename = "UserId", borrow, default)]
    pub user_id: Option<Loose<'a>>,
    #[serde(rename = "UserKey", borrow, default)]
    pub user_key: Option<Loose<'a>>,
    #[serde(rename = "UserType", borrow, default)]
    pub user_type: Option<Loose<'a>>,
    #[serde(rename = "ClientIP", borrow, default)]
    pub client_ip: Option<Loose<'a>>,
    #[serde(rename = "UserAgent", borrow, default)]
    pub user_agent: Option<Loose<'a>>,
    #[serde(rename = "ObjectId", borrow, default)]
    pub object_id: Option<Loose<'a>>,
    #[serde(rename = "ItemType", borrow, default)]
    pub item_type: Option<Loose<'a>>,
    #[serde(rename = "SiteUrl", borrow, default)]
    pub site_url: Option<Loose<'a>>,
    #[serde(rename = "SourceRelativeUrl", borrow, default)]
    pub source_relative_url: Option<Loose<'a>>,
    #[serde(rename = "SourceFileName", borrow, default)]
    pub source_file_name: Option<Loose<'a>>,
    #[serde(rename = "SourceFileExtension", borrow, default)]
    pub source_file_extension: Option<Loose<'a>>,
    #[serde(rename = "DestinationRelativeUrl", borrow, default)]
    pub destination_relative_url: Option<Loose<'a>>,
    #[serde(rename = "DestinationFileName", borrow, default)]
    pub destination_file_name: Option<Loose<'a>>,
    #[serde(rename = "DestinationFileExtension", borrow, default)]
    pub destination_file_extension: Option<Loose<'a>>,
    #[serde(rename = "ListId", borrow, default)]
    pub list_id: Option<Loose<'a>>,
    #[serde(rename = "ListItemUniqueId", borrow, default)]
    pub list_item_unique_id: Option<Loose<'a>>,
    #[serde(rename = "UserSharedWith", borrow, default)]
    pub user_shared_with: Option<Loose<'a>>,
    #[serde(rename = "SharingType", borrow, default)]
    pub sharing_type: Option<Loose<'a>>,
    #[serde(rename = "TargetUserOrGroupName", borrow, default)]
    pub target_name: Option<Loose<'a>>,
    #[serde(rename = "TargetUserOrGroupType", borrow, default)]
    pub target_type: Option<Loose<'a>>,
    #[serde(rename = "EventData", borrow, default)]
    pub event_data: Option<Loose<'a>>,
    #[serde(rename = "UniqueSharingId", borrow, default)]
    pub unique_sharing_id: Option<Loose<'a>>,
}

/// Why a field cannot be used: `(field, detail)`.
pub type FieldError = (&'static str, String);

/// A string field: absent, `null` and `""` are `None`; another JSON type is an error naming it.
pub fn opt_str<'r, 'a>(field: &'static str, value: &'r Option<Loose<'a>>) -> Result<Option<&'r str>, FieldError> {
    match value {
        None => Ok(None),
        Some(Loose::Str(s)) if s.trim().is_empty() => Ok(None),
        Some(Loose::Str(s)) => Ok(Some(s.as_ref())),
        Some(other) => Err((field, format!("expected a string, found {}", other.kind()))),
    }
}

/// A string field the record cannot do without.
pub fn req_str<'r, 'a>(field: &'static str, value: &'r Option<Loose<'a>>) -> Result<&'r str, FieldError> {
    opt_str(field, value)?.ok_or_else(|| (field, "missing or empty".to_owned()))
}

/// An integer field written as a number or as a numeric string.
pub fn opt_int(field: &'static str, value: &Option<Loose<'_>>) -> Result<Option<i64>, FieldError> {
    match value {
        None => Ok(None),
        Some(Loose::Int(n)) => Ok(Some(*n)),
        Some(Loose::Str(s)) => s.trim().parse::<i64>().map(Some).map_err(|_| {
            (
                field,
                format!("expected an integer, found the string {:?}", truncate(s, 40)),
            )
        }),
        Some(other) => Err((field, format!("expected an integer, found {}", other.kind()))),
    }
}

/// Parses `CreationTime` as UTC. Microsoft writes it without a zone (`2020-02-07T16:44:07`; see the
/// "Retrieve content" sample in
/// <https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>),
/// sometimes with fractional seconds (up to the 7 digits of .NET ticks); a value that does carry
/// `Z` or an offset is honoured and converted.
pub fn parse_creation_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(naive.and_utc());
        }
    }
    Err(format!("not a date and time: {:?}", truncate(raw, 40)))
}

/// At most `max` bytes of `s`, cut on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
