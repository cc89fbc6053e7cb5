//! What a line of an export looks like: one event as one flat JSON object.

use serde::{Deserialize, Serialize};

use super::window::rfc3339;
use crate::events::{EventRecord, HashOutcome};

/// One person, group or link an event shared with, as a JSON line nests it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportTarget {
    pub name: String,
    pub kind: String,
    pub email: Option<String>,
    pub external: Option<bool>,
}

/// One event as an analyst queries it: one JSON object per line, flat, every column present
/// (null when unknown), names stable across releases (the Glue table in template.yaml lists
/// them). Times are RFC 3339 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportLine {
    pub event_id: String,
    pub connection: String,
    /// `onedrive` or `email`.
    pub source: String,
    pub event_type: String,
    pub low_signal: bool,
    pub operation: String,
    pub record_type: i64,
    /// `file`, `folder` or `drive`.
    pub item_kind: String,
    /// When it happened.
    pub observed_at: String,
    /// When filetrail recorded it (its export window).
    pub inserted_at: String,
    pub actor_id: String,
    pub actor_upn: Option<String>,
    pub actor_email: Option<String>,
    pub actor_kind: String,
    pub actor_external: Option<bool>,
    pub owner_upn: Option<String>,
    pub site_url: Option<String>,
    pub object_url: Option<String>,
    pub file_name: Option<String>,
    pub path: Option<String>,
    pub extension: Option<String>,
    pub destination_path: Option<String>,
    pub destination_file_name: Option<String>,
    pub drive_id: Option<String>,
    pub item_id: Option<String>,
    /// Why `drive_id`/`item_id` are missing.
    pub unresolved: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub result_status: Option<String>,
    /// `hashed`, `unavailable` (see `hash_unavailable_reason`) or `pending` (not hashed when
    /// exported).
    pub hash_status: String,
    pub md5: Option<String>,
    pub sha256: Option<String>,
    pub hash_unavailable_reason: Option<String>,
    /// Bytes hashed.
    pub hashed_size: Option<u64>,
    /// The cTag of the current version hashed; absent for a previous version.
    pub hashed_ctag: Option<String>,
    /// A previous version hashed through `…/versions` (its id, `2.0`).
    pub hashed_version: Option<String>,
    pub hashed_at: Option<String>,
    /// `anonymous`, `organization` or `specific_people`.
    pub link_scope: Option<String>,
    /// `read` or `edit`.
    pub sharing_permission: Option<String>,
    /// Whether the share reaches outside the organisation.
    pub sharing_external: Option<bool>,
    pub sharing_targets: Vec<ExportTarget>,
}

/// The snake_case name serde gives a unit enum variant.
fn variant<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl ExportLine {
    /// The line of a stored event (with its hash outcome as stored at export time).
    pub fn of(record: &EventRecord) -> Self {
        let e = &record.event;
        let (hash_status, md5, sha256, reason, size, ctag, hashed_at) = match &record.hash {
            Some(HashOutcome::Hashed(h)) => (
                "hashed",
                Some(h.md5.to_lowercase()),
                Some(h.sha256.to_lowercase()),
                None,
                Some(h.size),
                Some(h.ctag.clone()).filter(|c| !c.is_empty()),
                Some(rfc3339(&h.hashed_at)),
            ),
            Some(HashOutcome::Unavailable { reason }) => {
                ("unavailable", None, None, Some(reason.clone()), None, None, None)
            }
            None => ("pending", None, None, None, None, None, None),
        };
        let hashed_version = match &record.hash {
            Some(HashOutcome::Hashed(h)) => h.version.clone(),
            _ => None,
        };
        let sharing = e.sharing.as_ref();
        Self {
            event_id: e.id.clone(),
            connection: record.connection.clone(),
            source: record.source.as_str().to_owned(),
            event_type: e.event_type.as_str().to_owned(),
            low_signal: e.low_signal,
            operation: e.operation.clone(),
            record_type: e.record_type,
            item_kind: variant(&e.item_kind),
            observed_at: rfc3339(&e.observed_at),
            inserted_at: rfc3339(&e.inserted_at),
            actor_id: e.actor.id.clone(),
            actor_upn: e.actor.upn.clone(),
            actor_email: e.actor.email.clone(),
            actor_kind: variant(&e.actor.kind),
            actor_external: e.actor.external,
            owner_upn: e.owner_upn.clone(),
            site_url: e.site_url.clone(),
            object_url: e.object_url.clone(),
            file_name: e.file_name.clone(),
            path: e.path.clone(),
            extension: e.extension.clone(),
            destination_path: e.destination.as_ref().and_then(|d| d.path.clone()),
            destination_file_name: e.destination.as_ref().and_then(|d| d.file_name.clone()),
            drive_id: e.drive_id.clone(),
            item_id: e.item_id.clone(),
            unresolved: e.unresolved.map(|u| variant(&u)),
            client_ip: e.client_ip.clone(),
            user_agent: e.user_agent.clone(),
            result_status: e.result_status.clone(),
            hash_status: hash_status.to_owned(),
            md5,
            sha256,
            hash_unavailable_reason: reason,
            hashed_size: size,
            hashed_ctag: ctag,
            hashed_version,
            hashed_at,
            link_scope: sharing.and_then(|s| s.link_scope).map(|l| variant(&l)),
            sharing_permission: sharing.and_then(|s| s.permission).map(|p| variant(&p)),
            sharing_external: sharing.and_then(|s| s.external),
            sharing_targets: sharing
                .map(|s| {
                    s.targets
                        .iter()
                        .map(|t| ExportTarget {
                            name: t.name.clone(),
                            kind: variant(&t.kind),
                            email: t.email.clone(),
                            external: t.external,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::events::FileHashes;
    use crate::export::test_support::{event, t};

    #[test]
    fn a_line_is_flat_with_every_column_and_rfc3339_utc_times() {
        let mut record = event("id-1", "2026-11-22T09:10:11.5Z", "2026-11-22T10:00:00Z");
        record.hash = Some(HashOutcome::Hashed(FileHashes {
            version: None,
            md5: "ABC".into(),
            sha256: "DEF".into(),
            ctag: "c:{X},2".into(),
            size: 42,
            modified_at: None,
            hashed_at: t("2026-11-22T10:05:00Z"),
        }));
        let value = serde_json::to_value(ExportLine::of(&record)).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object["observed_at"], "2026-11-22T09:10:11.500Z");
        assert_eq!(object["inserted_at"], "2026-11-22T10:00:00.000Z");
        assert_eq!(object["md5"], "abc");
        assert_eq!(object["sha256"], "def");
        assert_eq!(object["hash_status"], "hashed");
        assert_eq!(object["actor_upn"], "alice@contoso.com");
        assert_eq!(object["item_kind"], "file");
        assert!(object["link_scope"].is_null(), "absent columns are null, not missing");
        assert!(object.values().all(|v| !v.is_object()), "no nested objects: {value}");

        record.hash = Some(HashOutcome::Unavailable { reason: "gone".into() });
        let line = ExportLine::of(&record);
        assert_eq!(
            (line.hash_status.as_str(), line.hash_unavailable_reason.as_deref()),
            ("unavailable", Some("gone"))
        );
        record.hash = None;
        assert_eq!(ExportLine::of(&record).hash_status, "pending");
    }
}
