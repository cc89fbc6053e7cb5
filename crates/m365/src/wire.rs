//! What Microsoft Graph sends, decoded without I/O: collection pages, users, drives, driveItem
//! delta pages and `$batch` envelopes. [`crate::graph::GraphClient`] reads every such body through
//! these types, and the public decoders ([`delta_page`], [`users_page`], [`batch_response`]) are the
//! same code for the fuzz targets (`fuzz/`): a body from the network is untrusted input.
//!
//! Shapes: <https://learn.microsoft.com/en-us/graph/api/driveitem-delta> (delta pages, `@removed`,
//! `@odata.nextLink`/`@odata.deltaLink`), <https://learn.microsoft.com/en-us/graph/api/user-list>
//! (user pages) and <https://learn.microsoft.com/en-us/graph/json-batching> (`$batch` responses:
//! `id`, `status`, `headers`, `body` per entry, in any order).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use filetrail_core::model::{DeltaItem, DeltaNext, DeltaPage, DirectoryUser, UserRef};
use filetrail_core::ports::UsersPage;
use serde::Deserialize;
use serde_json::Value;

/// Decodes one page of a drive's delta. A page with neither `@odata.nextLink` nor
/// `@odata.deltaLink` is an error: the walk could not go on.
///
/// # Errors
/// The JSON error, or the missing link, as a message.
pub fn delta_page(body: &[u8]) -> Result<DeltaPage, String> {
    let page: WireDeltaPage = object(body)?;
    let next = match (page.next_link, page.delta_link) {
        (Some(next), _) => DeltaNext::NextLink(next),
        (None, Some(delta)) => DeltaNext::DeltaLink(delta),
        (None, None) => return Err("delta page has neither @odata.nextLink nor @odata.deltaLink".to_owned()),
    };
    Ok(DeltaPage {
        items: page.value.into_iter().map(WireItem::into_delta_item).collect(),
        next,
    })
}

/// Decodes one page of users (`/users`, a group's transitive user members).
///
/// # Errors
/// The JSON error as a message.
pub fn users_page(body: &[u8]) -> Result<UsersPage, String> {
    let page: WirePage<WireUser> = object(body)?;
    Ok(UsersPage {
        users: page.value.into_iter().map(WireUser::into_directory_user).collect(),
        next_link: page.next_link,
    })
}

/// One answer of a `$batch` response, as the client reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAnswer {
    /// The request id it answers (a number in our requests; a string or number on the wire).
    pub id: Option<usize>,
    pub status: u16,
    /// The entry's own `Retry-After` / `RateLimit-Reset`, read at `now`.
    pub retry_after: Option<Duration>,
    pub body: Value,
}

/// Decodes a `$batch` response into its answers, each with its inner retry hint.
///
/// # Errors
/// The JSON error as a message.
pub fn batch_response(body: &[u8], now: SystemTime) -> Result<Vec<BatchAnswer>, String> {
    let batch: WireBatchResponse = object(body)?;
    Ok(batch
        .responses
        .into_iter()
        .map(|entry| BatchAnswer {
            id: entry.id.trim().parse().ok(),
            status: entry.status,
            retry_after: entry.retry_after_at(now),
            body: entry.body,
        })
        .collect())
}

/// Decodes a body that must be a JSON object (see [`Obj`]).
fn object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice::<Obj<T>>(body)
        .map(|o| o.0)
        .map_err(|e| e.to_string())
}

/// A `T` that must arrive as a JSON object. serde reads a struct from an array of its fields
/// too, by position (`[[], "https://…"]` as a page with a next link, `["x"]` as a parent
/// reference with id `x`); Graph never sends one, so such a value is refused, at any depth,
/// rather than misread. Found by fuzzing (`fuzz/fuzz_targets/graph_users.rs`).
pub(crate) struct Obj<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Map<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Map<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Map(std::marker::PhantomData)).map(Obj)
    }
}

/// A list of objects (each as [`Obj`]).
fn objects<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Vec::<Obj<T>>::deserialize(d)?.into_iter().map(|o| o.0).collect())
}

/// An optional object (as [`Obj`]); `null` is `None`.
fn opt_object<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Obj<T>>::deserialize(d)?.map(|o| o.0))
}

/// An OData collection page.
#[derive(Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(crate) struct WirePage<T> {
    #[serde(default = "Vec::new", deserialize_with = "objects")]
    pub(crate) value: Vec<T>,
    #[serde(rename = "@odata.nextLink", default)]
    pub(crate) next_link: Option<String>,
}

/// Directory objects, deduplicated by id across pages.
pub(crate) trait HasId {
    fn id(&self) -> &str;
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireUser {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) user_principal_name: Option<String>,
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) mail: Option<String>,
}

impl WireUser {
    pub(crate) fn into_directory_user(self) -> DirectoryUser {
        DirectoryUser {
            id: self.id,
            user_principal_name: self.user_principal_name.unwrap_or_default(),
            display_name: self.display_name,
            mail: self.mail,
        }
    }
}

impl HasId for WireUser {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireGroup {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) mail: Option<String>,
}

impl HasId for WireGroup {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireDrive {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) drive_type: Option<String>,
    #[serde(default)]
    pub(crate) web_url: Option<String>,
}

#[derive(Deserialize)]
struct WireBatchResponse {
    #[serde(default, deserialize_with = "objects")]
    responses: Vec<WireBatchEntry>,
}

#[derive(Deserialize)]
struct WireBatchEntry {
    #[serde(deserialize_with = "string_or_number")]
    id: String,
    status: u16,
    #[serde(default)]
    headers: HashMap<String, Value>,
    #[serde(default)]
    body: Value,
}

impl WireBatchEntry {
    /// The entry's own `Retry-After` / `RateLimit-Reset` (inner 429s carry their own:
    /// <https://learn.microsoft.com/en-us/graph/json-batching>).
    fn retry_after_at(&self, now: SystemTime) -> Option<Duration> {
        let mut map = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(&text),
            ) {
                map.insert(n, v);
            }
        }
        crate::retry::retry_after_from_headers(&map, now)
    }
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

#[derive(Deserialize)]
struct WireDeltaPage {
    #[serde(default, deserialize_with = "objects")]
    value: Vec<WireItem>,
    #[serde(rename = "@odata.nextLink", default)]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink", default)]
    delta_link: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireItem {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    created_date_time: Option<String>,
    #[serde(default)]
    last_modified_date_time: Option<String>,
    #[serde(rename = "eTag", default)]
    e_tag: Option<String>,
    #[serde(rename = "cTag", default)]
    c_tag: Option<String>,
    #[serde(default, deserialize_with = "opt_object")]
    created_by: Option<WireIdentitySet>,
    #[serde(default, deserialize_with = "opt_object")]
    last_modified_by: Option<WireIdentitySet>,
    #[serde(default, deserialize_with = "opt_object")]
    parent_reference: Option<WireParent>,
    #[serde(default, deserialize_with = "opt_object")]
    file: Option<WireFile>,
    #[serde(default)]
    folder: Option<Value>,
    #[serde(default)]
    root: Option<Value>,
    #[serde(default)]
    deleted: Option<Value>,
    #[serde(rename = "@removed", default)]
    removed: Option<Value>,
    #[serde(default)]
    shared: Option<Value>,
    #[serde(rename = "@microsoft.graph.sharedChanged", default)]
    shared_changed: Option<Value>,
    #[serde(rename = "sharepointIds", default, deserialize_with = "opt_object")]
    sharepoint_ids: Option<WireSharepointIds>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSharepointIds {
    #[serde(default)]
    list_item_unique_id: Option<String>,
}

#[derive(Deserialize)]
struct WireIdentitySet {
    #[serde(default, deserialize_with = "opt_object")]
    user: Option<WireIdentity>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIdentity {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
struct WireParent {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFile {
    #[serde(default)]
    mime_type: Option<String>,
}

impl WireItem {
    fn into_delta_item(self) -> DeltaItem {
        let present = |v: &Option<Value>| v.as_ref().is_some_and(|v| !v.is_null());
        let is_root = present(&self.root);
        let user = |set: Option<WireIdentitySet>| {
            set.and_then(|s| s.user).map(|u| UserRef {
                id: u.id,
                display_name: u.display_name,
                email: u.email,
            })
        };
        DeltaItem {
            is_root,
            is_folder: present(&self.folder) || is_root,
            deleted: present(&self.deleted) || present(&self.removed),
            size: self
                .size
                .as_ref()
                .and_then(|s| s.as_u64().or_else(|| s.as_str().and_then(|t| t.parse().ok()))),
            created_at: parse_time(self.created_date_time.as_deref(), &self.id),
            modified_at: parse_time(self.last_modified_date_time.as_deref(), &self.id),
            parent_id: self.parent_reference.and_then(|p| p.id),
            mime_type: self.file.and_then(|f| f.mime_type),
            created_by: user(self.created_by),
            modified_by: user(self.last_modified_by),
            etag: self.e_tag,
            ctag: self.c_tag,
            name: self.name,
            shared_scope: self
                .shared
                .as_ref()
                .and_then(|s| s.get("scope"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            list_item_uid: self
                .sharepoint_ids
                .and_then(|ids| ids.list_item_unique_id)
                .as_deref()
                .and_then(filetrail_core::model::list_item_uid),
            // "True" as Graph sends it; a JSON boolean would mean the same.
            sharing_changed: match &self.shared_changed {
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                Some(Value::Bool(b)) => *b,
                _ => false,
            },
            id: self.id,
        }
    }
}

/// Parses a Graph timestamp; a malformed one is logged and dropped rather than failing the page.
fn parse_time(raw: Option<&str>, item_id: &str) -> Option<DateTime<Utc>> {
    let raw = raw?;
    match DateTime::parse_from_rfc3339(raw) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            tracing::warn!(item_id, value = raw, error = %e, "unreadable timestamp in delta item");
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn delta_sample_pages_parse_into_items_and_links() {
        let first: WireDeltaPage =
            serde_json::from_str(include_str!("../tests/fixtures/graph-drive-delta-page-first.json")).unwrap();
        assert!(first.next_link.is_some() && first.delta_link.is_none());
        let items: Vec<_> = first.value.into_iter().map(WireItem::into_delta_item).collect();
        assert_eq!(items.len(), 3);
        assert!(items[0].is_folder && !items[0].deleted);
        assert!(!items[1].is_folder && !items[1].deleted);
        assert!(items[2].deleted);
        let last: WireDeltaPage =
            serde_json::from_str(include_str!("../tests/fixtures/graph-drive-delta-page-last.json")).unwrap();
        assert!(last.delta_link.is_some());
    }

    #[test]
    fn delta_item_maps_root_parent_creator_and_mime_type() {
        let item: WireItem = serde_json::from_value(json!({
            "id": "01A", "name": "report.docx", "size": 1234,
            "createdDateTime": "2024-01-02T03:04:05Z", "lastModifiedDateTime": "not a date",
            "eTag": "\"{E},2\"", "cTag": "\"c:{E},3\"",
            "createdBy": {"user": {"id": "u1", "displayName": "Ada", "email": "ada@contoso.com"}},
            "parentReference": {"driveId": "b!x", "id": "01P"},
            "file": {"mimeType": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}
        }))
        .unwrap();
        let d = item.into_delta_item();
        assert_eq!(d.parent_id.as_deref(), Some("01P"));
        assert_eq!(d.size, Some(1234));
        assert!(!d.is_root && !d.is_folder && !d.deleted);
        assert_eq!(d.created_by.unwrap().email.as_deref(), Some("ada@contoso.com"));
        assert!(d.created_at.is_some());
        assert!(d.modified_at.is_none(), "a malformed date is dropped, not fatal");
        assert!(d.mime_type.unwrap().contains("wordprocessingml"));
        let root: WireItem =
            serde_json::from_value(json!({"id": "R", "root": {}, "folder": {"childCount": 3}})).unwrap();
        let root = root.into_delta_item();
        assert!(root.is_root && root.is_folder);
    }

    #[test]
    fn batch_answers_carry_their_id_status_and_inner_retry_after() {
        let body = json!({"responses": [
            {"id": 3, "status": 429, "headers": {"Retry-After": "2.5"}, "body": {"error": {"code": "TooManyRequests"}}},
            {"id": "1", "status": 200, "body": {"id": "b!d"}},
            {"id": "x", "status": 200}
        ]});
        let answers = batch_response(body.to_string().as_bytes(), SystemTime::now()).unwrap();
        assert_eq!(answers[0].id, Some(3));
        assert_eq!(answers[0].retry_after, Some(Duration::from_millis(2500)));
        assert_eq!((answers[1].id, answers[1].status), (Some(1), 200));
        assert_eq!(answers[1].body["id"], "b!d");
        assert_eq!(answers[2].id, None, "an id we never sent answers nothing");
    }

    #[test]
    fn a_page_written_as_an_array_is_refused_not_read_by_position() {
        let message = users_page(br#"[[{"id": "u1"}], "https://evil.example/next"]"#).unwrap_err();
        assert!(message.contains("JSON object"), "{message}");
        assert!(delta_page(br#" [[], null, "https://g/d"]"#).is_err());
        assert!(batch_response(b"[[]]", SystemTime::now()).is_err());
        assert_eq!(users_page(br#" {"value": [{"id": "u1"}]}"#).unwrap().users[0].id, "u1");
        // At any depth: a member, a parent reference, a batch answer.
        assert!(users_page(br#"{"value": [["", "Folder"]]}"#).is_err());
        let parent = br#"{"value": [{"id": "i", "parentReference": ["p"]}], "@odata.deltaLink": "d"}"#;
        assert!(delta_page(parent).is_err());
        assert!(batch_response(br#"{"responses": [["1", 200]]}"#, SystemTime::now()).is_err());
        let null_parent = br#"{"value": [{"id": "i", "parentReference": null}], "@odata.deltaLink": "d"}"#;
        assert_eq!(delta_page(null_parent).unwrap().items[0].parent_id, None);
    }

    #[test]
    fn a_delta_page_without_either_link_is_an_error() {
        let message = delta_page(br#"{"value": []}"#).unwrap_err();
        assert!(message.contains("neither"), "{message}");
        let page = delta_page(br#"{"value": [], "@odata.deltaLink": "https://g/d?token=1"}"#).unwrap();
        assert_eq!(page.next, DeltaNext::DeltaLink("https://g/d?token=1".to_owned()));
    }
}
