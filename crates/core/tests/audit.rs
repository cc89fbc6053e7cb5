#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Normalising Management Activity API audit records into file events: every mapped operation, the
//! real-world quirks of the feed
//! (<https://learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-reference>,
//! <https://learn.microsoft.com/en-us/office/office-365-management-api/office-365-management-activity-api-schema>,
//! <https://learn.microsoft.com/en-us/purview/audit-log-activities>), what is skipped, what is
//! quarantined and why, external sharing by trusted domains, and that no input makes normalisation
//! panic.
//!
//! The fixtures under `tests/fixtures/audit/` are synthetic: written by the team from the
//! published schema and the documented quirks (see the README there), not copied records.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

use filetrail_core::audit::location::{self, DrivePath};
use filetrail_core::audit::operations::{self, NOT_RECORDED};
use filetrail_core::audit::sharing::{self, event_data_tags};
use filetrail_core::audit::{
    ActorKind, FileEvent, FileEventType, ItemKind, KnownDrive, LinkScope, MAX_QUARANTINE_RAW_BYTES, NormaliseContext,
    Normalised, OPERATIONS, Permission, Quarantine, QuarantineReason, SkipReason, TargetKind, TrustedDomains,
    UnresolvedReason, normalise, normalise_blob, normalise_value,
};

const FILE_OPS: &str = include_str!("fixtures/audit/file-operations.json");
const FOLDER_OPS: &str = include_str!("fixtures/audit/folder-operations.json");
const SHARING_OPS: &str = include_str!("fixtures/audit/sharing-operations.json");
const SITE_OPS: &str = include_str!("fixtures/audit/site-operations.json");
const QUIRKS: &str = include_str!("fixtures/audit/quirks.json");
const NOT_ONEDRIVE: &str = include_str!("fixtures/audit/not-onedrive.json");
const INVALID: &str = include_str!("fixtures/audit/invalid-escape-duplicate-key.txt");

const SITE: &str = "https://contoso-my.sharepoint.com/personal/megan_bowen_contoso_com";
const OWNER: &str = "megan.bowen@contoso.com";

fn inserted_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 11, 0, 0).unwrap()
}

fn ten_fifteen_42() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 10, 15, 42).unwrap()
}

fn ctx() -> NormaliseContext {
    NormaliseContext::new(
        TrustedDomains::new(["contoso.com", "contoso.onmicrosoft.com"]),
        inserted_at(),
    )
}

fn ctx_with_drive() -> NormaliseContext {
    let mut ctx = ctx();
    assert!(ctx.add_drive(KnownDrive {
        drive_id: "b!megan-drive".into(),
        owner_upn: OWNER.into(),
        web_url: format!("{SITE}/Documents"),
    }));
    ctx
}

fn records(fixture: &str) -> Vec<Value> {
    serde_json::from_str(fixture).unwrap()
}

fn all_operation_records() -> Vec<Value> {
    [FILE_OPS, FOLDER_OPS, SHARING_OPS, SITE_OPS]
        .iter()
        .flat_map(|f| records(f))
        .collect()
}

/// The fixture record of an operation (each operation has one in the operation fixtures).
fn op_record(operation: &str) -> Value {
    all_operation_records()
        .into_iter()
        .find(|r| r["Operation"] == operation)
        .unwrap_or_else(|| panic!("no fixture record for {operation}"))
}

/// The quirk record whose Id ends with `n`.
fn quirk(n: u32) -> Value {
    let suffix = format!("{n:012}");
    records(QUIRKS)
        .into_iter()
        .find(|r| r["Id"].as_str().unwrap().ends_with(&suffix))
        .unwrap()
}

fn run(record: &Value, ctx: &NormaliseContext) -> Result<Normalised, Quarantine> {
    normalise(&serde_json::to_vec(record).unwrap(), ctx)
}

fn event_with(record: &Value, ctx: &NormaliseContext) -> FileEvent {
    match run(record, ctx) {
        Ok(Normalised::Event(e)) => *e,
        other => panic!("expected an event for {}, got {other:?}", record["Operation"]),
    }
}

fn event(record: &Value) -> FileEvent {
    event_with(record, &ctx())
}

fn skip(record: &Value) -> SkipReason {
    match run(record, &ctx()) {
        Ok(Normalised::Skip(reason)) => reason,
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn quarantine_bytes(bytes: &[u8]) -> Quarantine {
    match normalise(bytes, &ctx()) {
        Err(q) => q,
        Ok(other) => panic!("expected a quarantine, got {other:?}"),
    }
}

fn quarantine(record: &Value) -> Quarantine {
    quarantine_bytes(&serde_json::to_vec(record).unwrap())
}

fn malformed_field(q: &Quarantine) -> &str {
    match &q.reason {
        QuarantineReason::Malformed { field, .. } => field,
        other => panic!("expected malformed, got {other:?}"),
    }
}

fn with(mut record: Value, key: &str, value: Value) -> Value {
    record[key] = value;
    record
}

fn without(mut record: Value, key: &str) -> Value {
    record.as_object_mut().unwrap().remove(key);
    record
}

// ---------------------------------------------------------------------------------------------
// Every mapped operation
// ---------------------------------------------------------------------------------------------

use FileEventType as T;
use ItemKind::{Drive, File, Folder};

/// `(Operation, event type, item kind, low signal, link scope)` for every row of the mapping.
const EXPECTED: &[(&str, FileEventType, ItemKind, bool, Option<LinkScope>)] = &[
    ("FileUploaded", T::Created, File, false, None),
    ("FileSyncUploadedFull", T::Created, File, false, None),
    ("FileSyncUploadedPartial", T::Modified, File, false, None),
    ("FileModified", T::Modified, File, false, None),
    ("FileModifiedExtended", T::Modified, File, false, None),
    ("FileRenamed", T::Renamed, File, false, None),
    ("FileMoved", T::Moved, File, false, None),
    ("FileCopied", T::Copied, File, false, None),
    ("FileDeleted", T::Deleted, File, false, None),
    ("RecordDelete", T::Deleted, File, false, None),
    ("FileRecycled", T::Recycled, File, false, None),
    ("FileDeletedFirstStageRecycleBin", T::Purged, File, false, None),
    ("FileDeletedSecondStageRecycleBin", T::Purged, File, false, None),
    ("FileRestored", T::Restored, File, false, None),
    ("FileDownloaded", T::Downloaded, File, false, None),
    ("FileSyncDownloadedFull", T::Downloaded, File, false, None),
    ("FileSyncDownloadedPartial", T::Downloaded, File, false, None),
    ("FileAccessed", T::Accessed, File, true, None),
    ("FileAccessedExtended", T::Accessed, File, true, None),
    ("FileFetched", T::Accessed, File, true, None),
    ("FileViewed", T::Accessed, File, true, None),
    ("FilePreviewed", T::Previewed, File, true, None),
    ("FolderCreated", T::Created, Folder, true, None),
    ("FolderRenamed", T::Renamed, Folder, false, None),
    ("FolderMoved", T::Moved, Folder, false, None),
    ("FolderCopied", T::Copied, Folder, false, None),
    ("FolderDeleted", T::Deleted, Folder, false, None),
    ("FolderRecycled", T::Recycled, Folder, false, None),
    ("FolderDeletedFirstStageRecycleBin", T::Purged, Folder, false, None),
    ("FolderDeletedSecondStageRecycleBin", T::Purged, Folder, false, None),
    ("FolderRestored", T::Restored, Folder, false, None),
    (
        "AnonymousLinkCreated",
        T::AnonymousLinkCreated,
        File,
        false,
        Some(LinkScope::Anonymous),
    ),
    (
        "AnonymousLinkUpdated",
        T::AnonymousLinkUpdated,
        File,
        false,
        Some(LinkScope::Anonymous),
    ),
    (
        "AnonymousLinkUsed",
        T::AnonymousLinkUsed,
        File,
        false,
        Some(LinkScope::Anonymous),
    ),
    (
        "AnonymousLinkRemoved",
        T::AnonymousLinkRemoved,
        File,
        false,
        Some(LinkScope::Anonymous),
    ),
    (
        "CompanyLinkCreated",
        T::OrganizationLinkCreated,
        File,
        false,
        Some(LinkScope::Organization),
    ),
    (
        "CompanyLinkUsed",
        T::OrganizationLinkUsed,
        File,
        true,
        Some(LinkScope::Organization),
    ),
    (
        "CompanyLinkRemoved",
        T::OrganizationLinkRemoved,
        File,
        false,
        Some(LinkScope::Organization),
    ),
    (
        "SecureLinkCreated",
        T::SpecificPeopleLinkCreated,
        File,
        false,
        Some(LinkScope::SpecificPeople),
    ),
    (
        "SecureLinkUsed",
        T::SpecificPeopleLinkUsed,
        File,
        false,
        Some(LinkScope::SpecificPeople),
    ),
    (
        "SecureLinkDeleted",
        T::SpecificPeopleLinkRemoved,
        File,
        false,
        Some(LinkScope::SpecificPeople),
    ),
    (
        "AddedToSecureLink",
        T::AddedToSpecificPeopleLink,
        File,
        false,
        Some(LinkScope::SpecificPeople),
    ),
    (
        "RemovedFromSecureLink",
        T::RemovedFromSpecificPeopleLink,
        File,
        false,
        Some(LinkScope::SpecificPeople),
    ),
    ("SharedLinkCreated", T::SharingLinkCreated, File, false, None),
    ("SharedLinkDisabled", T::SharingLinkRemoved, File, false, None),
    ("SharingInvitationCreated", T::InvitationCreated, File, false, None),
    ("SharingInvitationUpdated", T::InvitationUpdated, File, false, None),
    ("SharingInvitationAccepted", T::InvitationAccepted, File, false, None),
    ("SharingInvitationRevoked", T::InvitationRevoked, File, false, None),
    ("SharingInvitationBlocked", T::InvitationBlocked, File, false, None),
    ("AccessInvitationCreated", T::InvitationCreated, File, false, None),
    ("AccessInvitationUpdated", T::InvitationUpdated, File, false, None),
    ("AccessInvitationAccepted", T::InvitationAccepted, File, false, None),
    ("AccessInvitationRevoked", T::InvitationRevoked, File, false, None),
    ("SharingSet", T::SharingSet, File, false, Some(LinkScope::Anonymous)),
    ("SharingRevoked", T::SharingRevoked, File, false, None),
    (
        "SharingInheritanceBroken",
        T::SharingInheritanceBroken,
        File,
        true,
        None,
    ),
    ("SharingInheritanceReset", T::SharingInheritanceReset, File, false, None),
    ("AddedToGroup", T::AddedToGroup, Drive, true, None),
    ("RemovedFromGroup", T::RemovedFromGroup, Drive, true, None),
    ("UserAddedToGroup", T::AddedToGroup, Drive, true, None),
    ("UserRemovedFromGroup", T::RemovedFromGroup, Drive, true, None),
    ("PermissionLevelAdded", T::PermissionLevelChanged, Drive, false, None),
    ("PermissionLevelModified", T::PermissionLevelChanged, Drive, false, None),
    ("PermissionLevelRemoved", T::PermissionLevelChanged, Drive, false, None),
    (
        "PermissionLevelsInheritanceBroken",
        T::PermissionLevelChanged,
        Drive,
        false,
        None,
    ),
    ("SitePermissionsModified", T::PermissionLevelChanged, Drive, false, None),
    ("SiteCollectionAdminAdded", T::SiteAdminAdded, Drive, false, None),
    ("SiteCollectionAdminRemoved", T::SiteAdminRemoved, Drive, false, None),
];

#[test]
fn every_mapped_operation_normalises_to_its_event_type_kind_signal_and_scope() {
    for &(operation, event_type, kind, low, scope) in EXPECTED {
        let record = op_record(operation);
        let e = event(&record);
        assert_eq!(e.event_type, event_type, "{operation}");
        assert_eq!(e.item_kind, kind, "{operation}");
        assert_eq!(e.low_signal, low, "{operation} low signal");
        assert_eq!(e.operation, operation);
        assert_eq!(e.id, record["Id"].as_str().unwrap(), "{operation}");
        assert_eq!(e.record_type, record["RecordType"].as_i64().unwrap(), "{operation}");
        assert_eq!(
            e.sharing.is_some(),
            event_type.is_sharing(),
            "{operation} sharing details"
        );
        assert_eq!(
            e.sharing.as_ref().and_then(|s| s.link_scope),
            scope,
            "{operation} link scope"
        );
        assert_eq!(e.actor.id, record["UserId"].as_str().unwrap(), "{operation}");
        assert_eq!(e.site_key.as_deref(), Some("megan_bowen_contoso_com"), "{operation}");
        assert_eq!(e.site_url.as_deref(), Some(SITE), "{operation}");
        assert_eq!(e.inserted_at, inserted_at());
        assert_eq!(e.drive_id, None);
        assert_eq!(e.item_id, None);
        assert_eq!(e.unresolved, Some(UnresolvedReason::DriveNotKnown), "{operation}");
        match kind {
            File | Folder => {
                assert_eq!(e.file_name.as_deref(), record["SourceFileName"].as_str(), "{operation}");
                let path = e.path.as_deref().unwrap();
                assert!(
                    path.starts_with('/') && !path.starts_with("/Documents"),
                    "{operation}: {path}"
                );
                assert!(path.ends_with(e.file_name.as_deref().unwrap()), "{operation}: {path}");
            }
            Drive => {
                assert_eq!(e.file_name, None, "{operation}");
                assert_eq!(e.path, None, "{operation}");
                assert_eq!(e.extension, None, "{operation}");
            }
        }
        if kind != File {
            assert_eq!(e.extension, None, "{operation}");
        }
    }
}

#[test]
fn the_expectations_cover_every_row_of_the_mapping_table_and_nothing_else() {
    let mapped: Vec<&str> = OPERATIONS.iter().map(|m| m.operation).collect();
    let expected: Vec<&str> = EXPECTED.iter().map(|e| e.0).collect();
    for op in &mapped {
        assert!(expected.contains(op), "{op} is mapped but has no test expectation");
    }
    for op in &expected {
        assert!(mapped.contains(op), "{op} is expected but not mapped");
    }
    for &(operation, event_type, ..) in EXPECTED {
        let row = operations::lookup(operation).unwrap();
        assert_eq!(row.event_type, event_type, "{operation}");
    }
}

#[test]
fn the_mapping_tables_name_each_operation_once_and_never_both_map_and_skip_it() {
    let mut names: Vec<&str> = OPERATIONS.iter().map(|m| m.operation).collect();
    names.extend(NOT_RECORDED.iter().map(|(op, _)| *op));
    let total = names.len();
    names.sort_unstable_by_key(|n| n.to_ascii_lowercase());
    names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    assert_eq!(
        names.len(),
        total,
        "an operation appears twice across OPERATIONS and NOT_RECORDED"
    );
}

#[test]
fn every_not_recorded_operation_is_skipped_with_its_reason() {
    for &(operation, why) in NOT_RECORDED {
        let record = with(op_record("FileModified"), "Operation", json!(operation));
        assert_eq!(
            skip(&record),
            SkipReason::NotRecorded {
                operation: operation.into(),
                why: why.into()
            },
            "{operation}"
        );
    }
}

#[test]
fn operation_names_match_whatever_their_ascii_case() {
    let e = event(&with(op_record("FileDownloaded"), "Operation", json!("filedownloaded")));
    assert_eq!(e.event_type, T::Downloaded);
    assert_eq!(e.operation, "FileDownloaded");
}

// ---------------------------------------------------------------------------------------------
// What an event records
// ---------------------------------------------------------------------------------------------

#[test]
fn an_upload_records_actor_owner_file_path_extension_time_ip_and_agent() {
    let record = op_record("FileUploaded");
    let e = event(&record);
    assert_eq!(e.event_type, T::Created);
    assert!(!e.low_signal);
    assert_eq!(e.actor.id, OWNER);
    assert_eq!(e.actor.upn.as_deref(), Some(OWNER));
    assert_eq!(e.actor.email.as_deref(), Some(OWNER));
    assert_eq!(e.actor.kind, ActorKind::User);
    assert_eq!(e.actor.user_type, Some(0));
    assert_eq!(
        e.actor.user_key.as_deref(),
        Some("i:0h.f|membership|10032001a2b3c4d5@live.com")
    );
    assert_eq!(e.actor.external, Some(false));
    // The actor's UPN is the one the personal site was named after, so they own it.
    assert_eq!(e.owner_upn.as_deref(), Some(OWNER));
    assert_eq!(e.file_name.as_deref(), Some("Q3 forecast.xlsx"));
    assert_eq!(e.path.as_deref(), Some("/Reports/Q3 forecast.xlsx"));
    assert_eq!(e.extension.as_deref(), Some("xlsx"));
    assert_eq!(e.object_url.as_deref(), record["ObjectId"].as_str());
    assert_eq!(e.list_id.as_deref(), Some("b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"));
    assert_eq!(
        e.list_item_unique_id.as_deref(),
        Some("6e5d4c3b-2a19-4f08-9e7d-6c5b4a392817")
    );
    assert_eq!(e.observed_at, ten_fifteen_42());
    assert_eq!(e.inserted_at, inserted_at());
    assert_eq!(e.client_ip.as_deref(), Some("203.0.113.24"));
    assert!(e.user_agent.as_deref().unwrap().starts_with("Mozilla/5.0"));
    assert_eq!(e.sharing, None);
    assert_eq!(e.destination, None);
    assert!(e.needs_hash());
}

#[test]
fn a_monitored_drive_gives_the_event_its_drive_id_and_owner_and_leaves_the_item_to_the_resolver() {
    let e = event_with(&op_record("FileDownloaded"), &ctx_with_drive());
    assert_eq!(e.drive_id.as_deref(), Some("b!megan-drive"));
    assert_eq!(e.owner_upn.as_deref(), Some(OWNER));
    assert_eq!(e.item_id, None);
    assert_eq!(e.unresolved, Some(UnresolvedReason::ItemNotLookedUp));
    assert_eq!(e.lookup_path(), Some("/Reports/Customer list.csv"));
}

#[test]
fn the_owner_is_not_guessed_from_someone_elses_activity_on_the_drive() {
    let record = op_record("SiteCollectionAdminAdded");
    let e = event(&record);
    assert_eq!(e.actor.upn.as_deref(), Some("it.admin@contoso.com"));
    assert_eq!(
        e.owner_upn, None,
        "the key cannot be reversed into a UPN, and the actor is not the owner"
    );
    let known = event_with(&record, &ctx_with_drive());
    assert_eq!(known.owner_upn.as_deref(), Some(OWNER));
    assert_eq!(known.drive_id.as_deref(), Some("b!megan-drive"));
    assert_eq!(known.unresolved, None, "a drive-level event needs no item");
}

#[test]
fn a_move_records_where_the_file_went_and_is_looked_up_there() {
    let e = event(&op_record("FileMoved"));
    assert_eq!(e.path.as_deref(), Some("/Reports/Q3 forecast.xlsx"));
    let dest = e.destination.as_ref().unwrap();
    assert_eq!(dest.file_name.as_deref(), Some("Q3 forecast.xlsx"));
    assert_eq!(
        dest.relative_url.as_deref(),
        Some("Documents/Archive/2026/Q3 forecast.xlsx")
    );
    assert_eq!(dest.path.as_deref(), Some("/Archive/2026/Q3 forecast.xlsx"));
    assert_eq!(dest.extension.as_deref(), Some("xlsx"));
    assert_eq!(e.lookup_path(), Some("/Archive/2026/Q3 forecast.xlsx"));
    assert!(!e.needs_hash(), "a move does not change content");
}

#[test]
fn a_copy_keeps_its_source_and_is_looked_up_and_hashed_as_the_new_file() {
    let e = event(&op_record("FileCopied"));
    assert_eq!(e.path.as_deref(), Some("/Reports/Q3 forecast.xlsx"));
    let dest = e.destination.as_ref().unwrap();
    assert_eq!(
        dest.path.as_deref(),
        Some("/Shared with finance/Q3 forecast - Copy.xlsx")
    );
    assert_eq!(e.lookup_path(), Some("/Shared with finance/Q3 forecast - Copy.xlsx"));
    assert!(e.needs_hash());
}

#[test]
fn continual_modification_is_a_modify_that_triggers_hashing() {
    let e = event(&op_record("FileModifiedExtended"));
    assert_eq!(e.event_type, T::Modified);
    assert!(!e.low_signal);
    assert!(e.needs_hash());
}

#[test]
fn reads_and_folder_events_need_no_hash() {
    for op in [
        "FileDownloaded",
        "FileAccessed",
        "FilePreviewed",
        "FolderCreated",
        "FileDeleted",
    ] {
        assert!(!event(&op_record(op)).needs_hash(), "{op}");
    }
}

#[test]
fn a_sync_upload_is_a_created_event_with_the_sync_client_as_agent() {
    let e = event(&op_record("FileSyncUploadedFull"));
    assert_eq!(e.event_type, T::Created);
    assert_eq!(e.path.as_deref(), Some("/Board deck.pptx"));
    assert!(e.user_agent.as_deref().unwrap().starts_with("Microsoft SkyDriveSync"));
}

#[test]
fn extensions_are_lowercase_without_dot_and_absent_for_folders_and_bare_names() {
    let upper = event(&quirk(17));
    assert_eq!(upper.file_name.as_deref(), Some("Résumé final.DOCX"));
    assert_eq!(upper.extension.as_deref(), Some("docx"));
    assert_eq!(upper.path.as_deref(), Some("/Équipe/Résumé final.DOCX"));
    assert_eq!(event(&quirk(16)).extension, None);
    assert_eq!(event(&op_record("FolderDeleted")).extension, None);
    assert_eq!(event(&op_record("FilePreviewed")).extension.as_deref(), Some("jpg"));
}

#[test]
fn a_folder_event_records_the_folder_and_its_path() {
    let e = event(&op_record("FolderDeleted"));
    assert_eq!(e.item_kind, Folder);
    assert_eq!(e.file_name.as_deref(), Some("Reports"));
    assert_eq!(e.path.as_deref(), Some("/Reports"));
}

#[test]
fn events_serialise_with_snake_case_names_and_read_back_unchanged() {
    let e = event(&op_record("AnonymousLinkCreated"));
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(json["event_type"], "anonymous_link_created");
    assert_eq!(json["item_kind"], "file");
    assert_eq!(json["actor"]["kind"], "user");
    assert_eq!(json["sharing"]["link_scope"], "anonymous");
    assert_eq!(json["sharing"]["permission"], "read");
    assert_eq!(json["unresolved"], "drive_not_known");
    assert_eq!(json["observed_at"], "2026-11-02T10:15:42Z");
    let back: FileEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
    assert_eq!(T::SpecificPeopleLinkCreated.to_string(), "specific_people_link_created");
    assert_eq!(
        serde_json::to_value(T::SpecificPeopleLinkCreated).unwrap(),
        "specific_people_link_created"
    );
}

// ---------------------------------------------------------------------------------------------
// Quirks of the real feed
// ---------------------------------------------------------------------------------------------

#[test]
fn onedrive_file_activity_arrives_as_record_type_6_with_workload_onedrive() {
    let record = op_record("FileUploaded");
    assert_eq!(record["RecordType"], 6);
    assert_eq!(record["Workload"], "OneDrive");
    assert_eq!(event(&record).record_type, 6);
}

#[test]
fn creation_time_without_a_zone_is_read_as_utc() {
    assert_eq!(event(&op_record("FileUploaded")).observed_at, ten_fifteen_42());
}

#[test]
fn creation_time_with_seven_fractional_digits_keeps_them() {
    let e = event(&quirk(2));
    assert_eq!(
        e.observed_at,
        ten_fifteen_42() + chrono::Duration::nanoseconds(123_456_700)
    );
}

#[test]
fn creation_time_with_a_zone_or_an_offset_is_converted_to_utc() {
    assert_eq!(event(&quirk(3)).observed_at, ten_fifteen_42());
    assert_eq!(event(&quirk(4)).observed_at, ten_fifteen_42());
}

#[test]
fn item_type_reads_as_the_schemas_integer_or_the_feeds_string() {
    assert_eq!(event(&quirk(1)).item_kind, File);
    let as_int = with(op_record("SharingSet"), "ItemType", json!(5));
    assert_eq!(event(&as_int).item_kind, Folder);
    let as_folder_string = with(op_record("SharingSet"), "ItemType", json!("Folder"));
    assert_eq!(event(&as_folder_string).item_kind, Folder);
    let web = with(op_record("SharingSet"), "ItemType", json!("Web"));
    assert_eq!(event(&web).item_kind, Drive);
}

#[test]
fn event_data_with_an_unclosed_tag_still_yields_the_sharing_fields_it_has() {
    let e = event(&quirk(5));
    let s = e.sharing.as_ref().unwrap();
    assert_eq!(s.permission, Some(Permission::Edit));
    assert_eq!(s.permission_detail.as_deref(), Some("Edit"));
    assert_eq!(s.external, Some(false));
    assert_eq!(s.targets[0].email.as_deref(), Some("adele.vance@contoso.com"));
    assert_eq!(
        s.event_data.as_deref(),
        Some("<Type>Edit</Type><Permissions granted>Contribute")
    );
}

#[test]
fn event_data_that_is_not_xml_at_all_is_kept_verbatim_and_the_event_recorded() {
    let record = quirk(6);
    let e = event(&record);
    assert_eq!(e.event_type, T::AnonymousLinkCreated);
    let s = e.sharing.as_ref().unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::Anonymous));
    assert_eq!(s.external, Some(true));
    assert_eq!(s.event_data.as_deref(), record["EventData"].as_str());
}

#[test]
fn event_data_tags_with_spaces_are_read() {
    let tags: Vec<_> =
        event_data_tags("<Permissions granted>Contribute</Permissions granted><Group>Site Members</Group>").collect();
    assert_eq!(
        tags,
        vec![("Permissions granted", "Contribute"), ("Group", "Site Members")]
    );
    let tags: Vec<_> =
        event_data_tags("<copyRoleAssignments>False</copyRoleAssignments><clearSubScopes>False</clearSubScopes>")
            .collect();
    assert_eq!(tags.len(), 2);
    for garbage in [
        "<",
        ">",
        "</>",
        "<a>",
        "<a></b>",
        "<<<>>>",
        "<é>ü</é>",
        "<a>\u{0}</a",
        "text only",
    ] {
        let _ = event_data_tags(garbage).count();
    }
    assert_eq!(event_data_tags("<é>ü</é>").next(), Some(("é", "ü")));
}

#[test]
fn a_file_record_whose_site_url_lacks_the_trailing_slash_gets_the_same_path() {
    let e = event(&quirk(7));
    assert_eq!(e.site_url.as_deref(), Some(SITE));
    assert_eq!(e.path.as_deref(), Some("/Reports/Q3 forecast.xlsx"));
}

#[test]
fn a_sharing_record_whose_relative_url_includes_the_file_name_gets_the_same_path() {
    let record = op_record("AnonymousLinkCreated");
    assert_eq!(record["SourceRelativeUrl"], "Documents/Reports/Q3 forecast.xlsx");
    let without_object = without(record, "ObjectId");
    assert_eq!(
        event(&without_object).path.as_deref(),
        Some("/Reports/Q3 forecast.xlsx")
    );
}

#[test]
fn client_ips_lose_padding_brackets_and_ports_and_empty_means_none() {
    assert_eq!(event(&quirk(7)).client_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(event(&quirk(8)).client_ip.as_deref(), Some("203.0.113.10"));
    assert_eq!(event(&quirk(9)).client_ip, None);
    assert_eq!(event(&quirk(14)).client_ip.as_deref(), Some("2001:db8::abcd"));
    assert_eq!(
        event(&op_record("SecureLinkUsed")).client_ip.as_deref(),
        Some("2001:db8:4::1d")
    );
    assert_eq!(location::client_ip("localhost:8080").as_deref(), Some("localhost:8080"));
}

#[test]
fn a_record_without_workload_is_onedrive_when_its_site_is_a_personal_site() {
    let e = event(&quirk(10));
    assert_eq!(e.event_type, T::Created);
}

#[test]
fn the_librarys_own_view_pages_are_skipped() {
    assert_eq!(skip(&quirk(11)), SkipReason::LibraryPage);
}

#[test]
fn a_sharing_record_about_a_list_is_skipped_even_with_a_doubled_object_url() {
    assert_eq!(
        skip(&quirk(12)),
        SkipReason::NotAFile {
            item_type: "List".into()
        }
    );
}

#[test]
fn an_unknown_user_type_still_parses() {
    assert_eq!(event(&quirk(18)).actor.user_type, Some(42));
    let named = with(op_record("FileDownloaded"), "UserType", json!("Guest"));
    assert_eq!(event(&named).actor.user_type, Some(10));
    let odd = with(op_record("FileDownloaded"), "UserType", json!({"a": 1}));
    assert_eq!(event(&odd).actor.user_type, None);
}

#[test]
fn app_at_sharepoint_reads_are_low_signal_application_activity() {
    let e = event(&quirk(13));
    assert_eq!(e.actor.kind, ActorKind::Application);
    assert_eq!(e.actor.upn, None);
    assert!(e.low_signal);
    assert_eq!(e.client_ip, None);
    assert_eq!(e.user_agent, None);
    let download = with(quirk(13), "Operation", json!("FileDownloaded"));
    assert!(event(&download).low_signal, "an application's download is housekeeping");
    let modify = with(quirk(13), "Operation", json!("FileModified"));
    assert!(
        !event(&modify).low_signal,
        "an application's change still changes the file"
    );
}

#[test]
fn a_sharing_set_to_a_limited_access_group_records_no_permission() {
    let s = event(&quirk(15)).sharing.unwrap();
    assert_eq!(s.permission, None);
    assert_eq!(s.permission_detail.as_deref(), Some("Limited Access"));
    assert_eq!(s.targets[0].kind, TargetKind::Group);
    assert_eq!(s.external, None);
}

// ---------------------------------------------------------------------------------------------
// Sharing: scopes, targets, external by trusted domains
// ---------------------------------------------------------------------------------------------

#[test]
fn an_anonymous_link_is_external_with_the_permission_of_its_type() {
    let s = event(&op_record("AnonymousLinkCreated")).sharing.unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::Anonymous));
    assert_eq!(s.permission, Some(Permission::Read));
    assert_eq!(s.external, Some(true));
    assert_eq!(
        s.unique_sharing_id.as_deref(),
        Some("0a9b8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d")
    );
    let updated = event(&op_record("AnonymousLinkUpdated")).sharing.unwrap();
    assert_eq!(updated.permission, Some(Permission::Edit));
}

#[test]
fn someone_using_an_anonymous_link_is_an_external_anonymous_actor() {
    let e = event(&op_record("AnonymousLinkUsed"));
    assert_eq!(e.actor.kind, ActorKind::Anonymous);
    assert_eq!(e.actor.external, Some(true));
    assert_eq!(e.actor.upn, None);
    assert_eq!(e.client_ip.as_deref(), Some("192.0.2.201"));
    assert_eq!(e.sharing.unwrap().external, Some(true));
    assert_eq!(e.owner_upn, None);
    let nameless = without(op_record("AnonymousLinkUsed"), "UserId");
    let e = event(&nameless);
    assert_eq!(e.actor.kind, ActorKind::Anonymous);
    assert_eq!(e.actor.id, "");
}

#[test]
fn a_sharing_set_to_an_anonymous_link_group_reads_scope_and_permission_from_the_group() {
    let s = event(&op_record("SharingSet")).sharing.unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::Anonymous));
    assert_eq!(s.permission, Some(Permission::Edit), "Contribute is edit");
    assert_eq!(s.permission_detail.as_deref(), Some("Contribute"));
    assert_eq!(s.external, Some(true));
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].kind, TargetKind::Link);
    assert_eq!(s.targets[0].directory_type.as_deref(), Some("SharePointGroup"));
}

#[test]
fn link_groups_name_their_scope_and_permission() {
    use sharing::link_group;
    assert_eq!(
        link_group("SharingLinks.aaa.OrganizationView.bbb"),
        Some((Some(LinkScope::Organization), Some(Permission::Read)))
    );
    assert_eq!(
        link_group("SharingLinks.aaa.Flexible.bbb"),
        Some((Some(LinkScope::SpecificPeople), None))
    );
    assert_eq!(link_group("Site Members"), None);
    let org = with(
        op_record("SharingSet"),
        "TargetUserOrGroupName",
        json!("SharingLinks.6e5d.OrganizationEdit.0a9b"),
    );
    let s = event(&org).sharing.unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::Organization));
    assert_eq!(s.external, Some(false));
}

#[test]
fn an_organisation_link_stays_inside() {
    let s = event(&op_record("CompanyLinkCreated")).sharing.unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::Organization));
    assert_eq!(s.external, Some(false));
}

#[test]
fn a_specific_people_link_names_its_external_recipient() {
    let e = event(&op_record("AddedToSecureLink"));
    let s = e.sharing.unwrap();
    assert_eq!(s.link_scope, Some(LinkScope::SpecificPeople));
    assert_eq!(s.targets.len(), 1);
    assert_eq!(s.targets[0].email.as_deref(), Some("dana@fabrikam.com"));
    assert_eq!(s.targets[0].kind, TargetKind::Guest);
    assert_eq!(s.targets[0].external, Some(true));
    assert_eq!(s.external, Some(true));
}

#[test]
fn a_direct_invitation_outside_the_trusted_domains_is_external() {
    let s = event(&op_record("SharingInvitationCreated")).sharing.unwrap();
    assert_eq!(s.link_scope, None);
    assert_eq!(s.permission, Some(Permission::Edit));
    assert_eq!(s.targets[0].email.as_deref(), Some("lee@northwind.example"));
    assert_eq!(s.external, Some(true));
}

#[test]
fn a_direct_share_with_a_member_of_a_trusted_domain_is_internal() {
    let s = event(&op_record("SharingRevoked")).sharing.unwrap();
    assert_eq!(s.targets[0].kind, TargetKind::User);
    assert_eq!(s.targets[0].external, Some(false));
    assert_eq!(s.external, Some(false));
}

#[test]
fn trusted_domains_match_without_case_and_include_subdomains_only() {
    let trusted = TrustedDomains::new([" @Contoso.COM ", "*.fabrikam.com", "", "contoso.com"]);
    assert_eq!(trusted.domains(), ["contoso.com", "fabrikam.com"]);
    assert_eq!(trusted.is_internal("Adele.Vance@CONTOSO.com"), Some(true));
    assert_eq!(trusted.is_internal("sam@eu.contoso.com"), Some(true));
    assert_eq!(trusted.is_internal("sam@mail.eu.fabrikam.com"), Some(true));
    assert_eq!(trusted.is_internal("sam@notcontoso.com"), Some(false));
    assert_eq!(trusted.is_internal("sam@contoso.com.attacker.example"), Some(false));
    assert_eq!(trusted.is_internal("sam@contoso.co"), Some(false));
    assert_eq!(trusted.is_internal("Site Members"), None);
    assert_eq!(
        TrustedDomains::new(Vec::<String>::new()).is_internal("a@contoso.com"),
        Some(false)
    );
}

#[test]
fn sharing_targets_are_classified_against_the_contexts_trusted_domains() {
    let record = op_record("SharingRevoked");
    let cases = [
        ("someone@eu.contoso.com", Some(false)),
        ("SOMEONE@CONTOSO.COM", Some(false)),
        ("someone@notcontoso.com", Some(true)),
        ("someone@contoso.com.attacker.example", Some(true)),
    ];
    for (target, external) in cases {
        let record = with(record.clone(), "TargetUserOrGroupName", json!(target));
        let s = event(&record).sharing.unwrap();
        assert_eq!(s.targets[0].external, external, "{target}");
        assert_eq!(s.external, external, "{target}");
    }
    let partner_ctx = NormaliseContext::new(TrustedDomains::new(["northwind.example"]), inserted_at());
    let s = event_with(&op_record("SharingInvitationCreated"), &partner_ctx)
        .sharing
        .unwrap();
    assert_eq!(
        s.targets[0].external,
        Some(true),
        "a Guest target is external whatever its domain"
    );
}

#[test]
fn guest_accounts_are_external_even_from_a_trusted_home_domain() {
    let guest = "pat_contoso.com#EXT#@partner.onmicrosoft.com";
    let record = with(op_record("SharingRevoked"), "TargetUserOrGroupName", json!(guest));
    let record = with(record, "TargetUserOrGroupType", json!("Member"));
    let s = event(&record).sharing.unwrap();
    assert_eq!(s.targets[0].kind, TargetKind::Guest);
    assert_eq!(s.targets[0].email.as_deref(), Some("pat@contoso.com"));
    assert_eq!(s.targets[0].external, Some(true));
    assert_eq!(s.external, Some(true));
}

#[test]
fn a_guest_actor_is_external_and_named_by_the_address_they_were_invited_with() {
    let e = event(&op_record("SecureLinkUsed"));
    assert_eq!(e.actor.kind, ActorKind::Guest);
    assert_eq!(
        e.actor.upn.as_deref(),
        Some("dana_fabrikam.com#ext#@contoso.onmicrosoft.com")
    );
    assert_eq!(e.actor.email.as_deref(), Some("dana@fabrikam.com"));
    assert_eq!(e.actor.external, Some(true));
    let download = event(&quirk(14));
    assert_eq!(download.actor.kind, ActorKind::Guest);
    assert!(!download.low_signal, "a guest downloading is worth attention");
}

#[test]
fn guest_upns_decode_to_their_invited_address() {
    assert_eq!(
        sharing::guest_email("bob.smith_fabrikam.co.uk#EXT#@contoso.onmicrosoft.com").as_deref(),
        Some("bob.smith@fabrikam.co.uk")
    );
    assert_eq!(
        sharing::guest_email("first_last_fabrikam.com#ext#@contoso.onmicrosoft.com").as_deref(),
        Some("first_last@fabrikam.com")
    );
    assert_eq!(sharing::guest_email("megan.bowen@contoso.com"), None);
}

#[test]
fn an_existing_guest_added_to_the_drives_group_is_an_external_low_signal_side_effect() {
    let e = event(&op_record("AddedToGroup"));
    assert!(e.low_signal);
    let s = e.sharing.unwrap();
    assert_eq!(s.targets[0].kind, TargetKind::Guest);
    assert_eq!(s.external, Some(true));
    assert_eq!(s.event_data.as_deref(), Some("<Group>Megan Bowen Members</Group>"));
}

#[test]
fn the_schemas_shared_link_record_names_its_target_and_permission_from_its_own_fields() {
    let s = event(&op_record("SharedLinkCreated")).sharing.unwrap();
    assert_eq!(s.permission, Some(Permission::Read));
    assert_eq!(s.targets[0].email.as_deref(), Some("adele.vance@contoso.com"));
    assert_eq!(s.external, Some(false));
}

#[test]
fn a_blocked_invitation_is_recorded_as_an_external_attempt() {
    let e = event(&op_record("SharingInvitationBlocked"));
    assert!(!e.low_signal);
    assert_eq!(e.sharing.unwrap().external, Some(true));
}

// ---------------------------------------------------------------------------------------------
// Skipped
// ---------------------------------------------------------------------------------------------

#[test]
fn records_that_are_not_onedrive_file_activity_are_skipped_with_their_reason() {
    let noise = records(NOT_ONEDRIVE);
    let reasons: Vec<SkipReason> = noise.iter().map(skip).collect();
    assert_eq!(
        reasons,
        vec![
            SkipReason::NotOneDrive {
                workload: Some("SharePoint".into())
            },
            SkipReason::NotOneDrive {
                workload: Some("Exchange".into())
            },
            SkipReason::NotOneDrive { workload: None },
            SkipReason::RecordType { record_type: 11 },
            SkipReason::NotRecorded {
                operation: "FolderModified".into(),
                why: operations::not_recorded("FolderModified").unwrap().into()
            },
            SkipReason::RecordType { record_type: 36 },
        ]
    );
    assert_eq!(reasons[0].code(), "not_onedrive");
}

#[test]
fn another_workloads_record_is_skipped_whatever_its_sharepoint_fields_hold() {
    let team_site = records(NOT_ONEDRIVE).remove(0);
    let odd = with(with(team_site, "SiteUrl", json!(42)), "Id", json!(null));
    assert_eq!(
        skip(&odd),
        SkipReason::NotOneDrive {
            workload: Some("SharePoint".into())
        }
    );
}

#[test]
fn aips_colliding_file_deleted_is_never_a_onedrive_deletion() {
    let aip = records(NOT_ONEDRIVE).remove(2);
    assert_eq!(aip["Operation"], "FileDeleted");
    assert_eq!(aip["RecordType"], 96);
    assert!(matches!(skip(&aip), SkipReason::NotOneDrive { .. }));
    let claiming_onedrive = with(aip, "Workload", json!("OneDrive"));
    assert_eq!(skip(&claiming_onedrive), SkipReason::RecordType { record_type: 96 });
}

// ---------------------------------------------------------------------------------------------
// Quarantined
// ---------------------------------------------------------------------------------------------

#[test]
fn an_unknown_operation_is_quarantined_with_its_name_and_the_raw_record() {
    let record = with(op_record("FileModified"), "Operation", json!("FileTeleported"));
    let q = quarantine(&record);
    assert_eq!(
        q.reason,
        QuarantineReason::UnknownOperation {
            operation: "FileTeleported".into()
        }
    );
    assert_eq!(q.reason.code(), "unknown_operation");
    assert_eq!(q.record_id.as_deref(), record["Id"].as_str());
    let raw: Value = serde_json::from_str(q.raw.as_deref().unwrap()).unwrap();
    assert_eq!(raw, record, "the raw record is kept for replay");
    assert!(q.to_string().contains("FileTeleported"));
}

#[test]
fn an_operation_seen_only_in_third_party_tooling_is_quarantined_not_guessed() {
    // SecureLinkUpdated appears in community scripts but in no Microsoft documentation.
    let record = with(op_record("SecureLinkCreated"), "Operation", json!("SecureLinkUpdated"));
    assert!(matches!(
        quarantine(&record).reason,
        QuarantineReason::UnknownOperation { .. }
    ));
}

#[test]
fn a_record_without_an_id_is_quarantined_naming_the_field() {
    let q = quarantine(&without(op_record("FileUploaded"), "Id"));
    assert_eq!(malformed_field(&q), "Id");
    assert_eq!(q.record_id, None);
    let q = quarantine(&with(op_record("FileUploaded"), "Id", json!(42)));
    assert_eq!(malformed_field(&q), "Id");
    let q = quarantine(&with(op_record("FileUploaded"), "Id", json!("x".repeat(300))));
    assert_eq!(malformed_field(&q), "Id");
}

#[test]
fn a_garbage_creation_time_is_quarantined_naming_the_field_and_the_record() {
    for garbage in [
        json!("yesterday"),
        json!("2026-13-45T99:99:99"),
        json!(""),
        json!(1_762_078_542),
    ] {
        let record = with(op_record("FileUploaded"), "CreationTime", garbage.clone());
        let q = quarantine(&record);
        assert_eq!(malformed_field(&q), "CreationTime", "{garbage}");
        assert_eq!(q.record_id.as_deref(), record["Id"].as_str());
    }
    let q = quarantine(&without(op_record("FileUploaded"), "CreationTime"));
    assert_eq!(malformed_field(&q), "CreationTime");
}

#[test]
fn fields_of_the_wrong_type_are_quarantined_naming_the_field() {
    let cases = [
        ("RecordType", json!("six")),
        ("RecordType", json!(6.5)),
        ("Operation", json!(17)),
        ("SourceFileName", json!(123)),
        ("UserId", json!(["megan"])),
        ("ItemType", json!(true)),
        ("ClientIP", json!({"v4": "1.2.3.4"})),
        ("EventData", json!(false)),
        ("Workload", json!(1)),
        ("SiteUrl", json!(5)),
        ("ObjectId", json!([])),
        ("SiteUrl", json!(null)),
    ];
    for (field, value) in cases {
        let record = with(op_record("SharingSet"), field, value.clone());
        if value.is_null() {
            // null reads as absent: a sharing record still has ObjectId to locate the file.
            assert!(matches!(run(&record, &ctx()), Ok(Normalised::Event(_))), "{field}");
            continue;
        }
        let q = quarantine(&record);
        assert_eq!(malformed_field(&q), field, "{field} = {value}");
        assert_eq!(
            q.record_id.as_deref(),
            record["Id"].as_str(),
            "{field}: the quarantine names the record"
        );
    }
    let numeric_string = with(op_record("FileUploaded"), "RecordType", json!("6"));
    assert_eq!(event(&numeric_string).record_type, 6);
}

#[test]
fn missing_mandatory_fields_are_quarantined_naming_them() {
    for field in ["RecordType", "Operation", "UserId"] {
        let q = quarantine(&without(op_record("FileUploaded"), field));
        assert_eq!(malformed_field(&q), field);
    }
    let nameless = without(
        without(without(op_record("FileUploaded"), "SourceFileName"), "ObjectId"),
        "SourceRelativeUrl",
    );
    assert_eq!(malformed_field(&quarantine(&nameless)), "SourceFileName");
}

#[test]
fn bytes_that_are_not_a_json_record_are_quarantined_whole() {
    for bytes in [
        &b""[..],
        b"not json",
        b"[1,2,3]",
        b"\"a string\"",
        b"{\"Id\": \"x\"",
        b"\xff\xfe\x00{}",
    ] {
        let q = quarantine_bytes(bytes);
        assert_eq!(malformed_field(&q), "record", "{bytes:?}");
        assert!(q.raw.is_some());
    }
}

#[test]
fn an_unescaped_backslash_or_a_repeated_key_is_quarantined_not_guessed() {
    let q = quarantine_bytes(INVALID.as_bytes());
    assert_eq!(malformed_field(&q), "record");
    let repeated =
        r#"{"Id":"a","RecordType":6,"Workload":"OneDrive","UserId":"a@contoso.com","UserId":"b@contoso.com"}"#;
    let q = quarantine_bytes(repeated.as_bytes());
    match q.reason {
        QuarantineReason::Malformed { field, detail } => {
            assert_eq!(field, "record");
            assert!(detail.contains("UserId"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_huge_quarantined_record_keeps_a_bounded_raw_copy() {
    let huge = with(
        op_record("FileModified"),
        "Operation",
        json!("x".repeat(MAX_QUARANTINE_RAW_BYTES)),
    );
    let q = quarantine(&huge);
    assert!(q.raw.unwrap().len() <= MAX_QUARANTINE_RAW_BYTES);
}

#[test]
fn quarantine_entries_serialise_with_their_reason_kind() {
    let q = quarantine(&without(op_record("FileUploaded"), "CreationTime"));
    let json = serde_json::to_value(&q).unwrap();
    assert_eq!(json["reason"]["kind"], "malformed");
    assert_eq!(json["reason"]["field"], "CreationTime");
    let back: Quarantine = serde_json::from_value(json).unwrap();
    assert_eq!(back, q);
}

#[test]
fn a_value_and_its_bytes_normalise_the_same() {
    for record in all_operation_records().iter().chain(records(QUIRKS).iter()) {
        let from_bytes = run(record, &ctx());
        let from_value = normalise_value(record, &ctx());
        assert_eq!(from_bytes, from_value, "{}", record["Operation"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Blobs
// ---------------------------------------------------------------------------------------------

#[test]
fn a_blob_is_normalised_record_by_record_and_every_record_is_accounted_for() {
    let mut all: Vec<Value> = Vec::new();
    for fixture in [FILE_OPS, FOLDER_OPS, SHARING_OPS, SITE_OPS, QUIRKS, NOT_ONEDRIVE] {
        all.extend(records(fixture));
    }
    all.push(with(op_record("FileModified"), "Operation", json!("FileTeleported")));
    all.push(without(op_record("FileModified"), "Id"));
    all.push(json!([1, 2]));
    // Microsoft delivers duplicates by design: both come out, the store dedupes by Id.
    all.push(op_record("FileUploaded"));
    let blob = serde_json::to_vec(&all).unwrap();
    let out = normalise_blob(&blob, &ctx()).unwrap();
    assert_eq!(out.records(), all.len() as u64);
    assert_eq!(out.quarantined.len(), 3);
    assert_eq!(out.skipped["not_onedrive"], 3, "{:?}", out.skipped);
    assert_eq!(out.skipped["record_type"], 2);
    assert_eq!(out.skipped["not_recorded"], 1);
    assert_eq!(out.skipped["library_page"], 1);
    assert_eq!(out.skipped["not_a_file"], 1);
    let uploads = out
        .events
        .iter()
        .filter(|e| e.id == op_record("FileUploaded")["Id"])
        .count();
    assert_eq!(uploads, 2);
}

#[test]
fn a_blob_that_is_not_a_json_array_is_quarantined_as_a_blob() {
    for blob in [&b"{}"[..], b"[{]", b"", b"null"] {
        let q = normalise_blob(blob, &ctx()).unwrap_err();
        assert_eq!(malformed_field(&q), "blob", "{blob:?}");
    }
    assert_eq!(normalise_blob(b"[]", &ctx()).unwrap().records(), 0);
}

// ---------------------------------------------------------------------------------------------
// Locating the item: the helpers a resolver uses
// ---------------------------------------------------------------------------------------------

#[test]
fn a_drive_web_url_and_a_file_url_give_the_path_from_the_drive_root() {
    let web = "https://contoso-my.sharepoint.com/personal/megan_bowen_contoso_com/Documents";
    let file = "https://contoso-my.sharepoint.com/personal/megan_bowen_contoso_com/Documents/Reports/Q3 forecast.xlsx";
    assert_eq!(
        location::drive_relative_path(web, file).as_deref(),
        Some("/Reports/Q3 forecast.xlsx")
    );
    let encoded = "https://Contoso-my.sharepoint.com/personal/megan_bowen_contoso_com/Shared%20Documents/";
    let upper = "https://contoso-my.sharepoint.com/personal/MEGAN_BOWEN_CONTOSO_COM/Shared Documents/a.txt";
    assert_eq!(location::drive_relative_path(encoded, upper).as_deref(), Some("/a.txt"));
    assert_eq!(location::drive_relative_path(web, web).as_deref(), Some("/"));
    assert_eq!(location::drive_relative_path(web, &format!("{web}2/a.txt")), None);
    assert_eq!(
        location::drive_relative_path(web, "https://elsewhere.example/a.txt"),
        None
    );
}

#[test]
fn site_relative_urls_come_from_the_object_url_or_the_relative_parts() {
    let rel =
        |site, object, folder, name| location::site_relative_url(site, object, folder, name).map(|c| c.into_owned());
    let file = format!("{SITE}/Documents/a.txt");
    let slashed = format!("{SITE}/");
    assert_eq!(
        rel(Some(SITE), Some(file.as_str()), None, None).as_deref(),
        Some("Documents/a.txt")
    );
    assert_eq!(
        rel(Some(&slashed), Some(file.as_str()), None, None).as_deref(),
        Some("Documents/a.txt")
    );
    assert_eq!(
        rel(Some(SITE), None, Some("Documents"), Some("a.txt")).as_deref(),
        Some("Documents/a.txt")
    );
    assert_eq!(
        rel(Some(SITE), None, Some("Documents/a.txt"), Some("a.txt")).as_deref(),
        Some("Documents/a.txt")
    );
    assert_eq!(
        rel(
            Some(SITE),
            Some("https://elsewhere.example/x"),
            Some("Documents"),
            Some("b.txt")
        )
        .as_deref(),
        Some("Documents/b.txt")
    );
    assert_eq!(rel(None, None, None, None), None);
}

#[test]
fn a_path_outside_the_drives_library_is_not_a_drive_path() {
    assert_eq!(
        location::path_in_library("Documents/a/b.txt", "Documents"),
        DrivePath::Inside("/a/b.txt".into())
    );
    assert_eq!(
        location::path_in_library("documents", "Documents"),
        DrivePath::Inside("/".into())
    );
    assert_eq!(
        location::path_in_library("Sharing Links", "Documents"),
        DrivePath::Outside
    );
    assert_eq!(
        location::path_in_library("Documents2/a.txt", "Documents"),
        DrivePath::Outside
    );
}

#[test]
fn a_record_in_another_library_of_the_drives_site_keeps_the_event_with_the_reason() {
    let record = with(
        op_record("FileDownloaded"),
        "ObjectId",
        json!(format!("{SITE}/Apps/Forms Exports/export.csv")),
    );
    let record = with(record, "SourceRelativeUrl", json!("Apps/Forms Exports"));
    let record = with(record, "SourceFileName", json!("export.csv"));
    let e = event_with(&record, &ctx_with_drive());
    assert_eq!(e.path, None);
    assert_eq!(e.unresolved, Some(UnresolvedReason::OutsideDrive));
    assert_eq!(e.drive_id.as_deref(), Some("b!megan-drive"));
    assert_eq!(e.file_name.as_deref(), Some("export.csv"));
}

#[test]
fn personal_site_keys_come_from_site_and_drive_urls_alike() {
    assert_eq!(
        location::personal_site_key(SITE).as_deref(),
        Some("megan_bowen_contoso_com")
    );
    assert_eq!(
        location::personal_site_key("https://contoso-my.sharepoint.com/Personal/Megan_Bowen_Contoso_Com/Documents")
            .as_deref(),
        Some("megan_bowen_contoso_com")
    );
    assert_eq!(
        location::personal_site_key("https://contoso.sharepoint.com/sites/Finance"),
        None
    );
    assert!(location::upn_matches_site_key(
        "megan.bowen@contoso.com",
        "megan_bowen_contoso_com"
    ));
    assert!(!location::upn_matches_site_key(
        "megan@contoso.com",
        "megan_bowen_contoso_com"
    ));
}

#[test]
fn drives_without_a_personal_web_url_are_not_matched() {
    let mut ctx = ctx();
    assert!(!ctx.add_drive(KnownDrive {
        drive_id: "b!team".into(),
        owner_upn: "x@contoso.com".into(),
        web_url: "https://contoso.sharepoint.com/sites/Finance/Shared Documents".into(),
    }));
    assert!(ctx.drives.is_empty());
}

// ---------------------------------------------------------------------------------------------
// No input makes normalisation panic
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, dependency-free randomness for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const TOKENS: &[&str] = &[
    "null",
    "{}",
    "[]",
    "\"",
    "\\",
    "\\u0000",
    "1e999",
    "-",
    ",",
    ":",
    "}",
    "]",
    "\"#EXT#\"",
    "<Type>",
    "</",
    "/personal/",
    "//",
    "%",
    "%zz",
    "é",
    "\u{1F600}",
    "9999999999999999999999",
    "true",
];

fn random_value(rng: &mut Rng) -> Value {
    let op = rng.pick(OPERATIONS).operation;
    match rng.below(16) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(rng.next() as i64),
        3 => json!(-1),
        4 => json!(1.0e300),
        5 => json!(""),
        6 => json!("garbage"),
        7 => json!([]),
        8 => json!({"a": [1, {"b": null}]}),
        9 => json!("x".repeat(rng.below(20_000))),
        10 => json!("2026-02-30T25:61:61.99999999999"),
        11 => json!("a_b.com#EXT#@contoso.onmicrosoft.com"),
        12 => json!("<Type>Edit</Type><Permissions granted>"),
        13 => json!("SharingLinks.x.AnonymousEdit"),
        14 => json!(op),
        _ => json!(format!("{SITE}/Documents/{}", "é/".repeat(rng.below(50)))),
    }
}

fn mutate_value(rng: &mut Rng, mut record: Value) -> Value {
    let keys: Vec<String> = record.as_object().unwrap().keys().cloned().collect();
    for _ in 0..=rng.below(4) {
        let key = rng.pick(&keys).clone();
        match rng.below(3) {
            0 => {
                record.as_object_mut().unwrap().remove(&key);
            }
            1 => record[key.as_str()] = random_value(rng),
            _ => {
                let v = random_value(rng);
                record[format!("{key}{}", rng.below(3))] = v;
            }
        }
    }
    record
}

fn mutate_bytes(rng: &mut Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..=rng.below(6) {
        if bytes.is_empty() {
            bytes.push(b'{');
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] = (rng.next() & 0xff) as u8,
            1 => {
                let end = (at + 1 + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            2 => {
                let token = rng.pick(TOKENS).as_bytes().to_vec();
                bytes.splice(at..at, token);
            }
            3 => bytes.truncate(at),
            4 => {
                let end = (at + 1 + rng.below(32)).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                bytes.splice(at..at, copy);
            }
            _ => {
                let other = rng.below(bytes.len());
                bytes.swap(at, other);
            }
        }
    }
    bytes
}

fn check_invariants(outcome: &Result<Normalised, Quarantine>) {
    match outcome {
        Ok(Normalised::Event(e)) => {
            assert!(!e.id.is_empty() && e.id.len() <= filetrail_core::audit::MAX_RECORD_ID_LEN);
            if e.item_kind != ItemKind::Drive {
                assert!(e.file_name.is_some(), "a file or folder event names its item");
            }
            if let Some(path) = &e.path {
                assert!(path.starts_with('/'), "{path}");
            }
            if let Some(ext) = &e.extension {
                assert!(!ext.is_empty() && !ext.starts_with('.'));
            }
            assert_eq!(e.sharing.is_some(), e.event_type.is_sharing());
            serde_json::to_vec(e).unwrap();
        }
        Ok(Normalised::Skip(_)) => {}
        Err(q) => {
            assert!(q.raw.as_ref().is_none_or(|r| r.len() <= MAX_QUARANTINE_RAW_BYTES));
            serde_json::to_vec(q).unwrap();
        }
    }
}

#[test]
fn thousands_of_random_mutations_of_the_fixtures_never_panic() {
    let mut seeds: Vec<Value> = all_operation_records();
    seeds.extend(records(QUIRKS));
    seeds.extend(records(NOT_ONEDRIVE));
    let ctx = ctx_with_drive();
    let mut rng = Rng(0x5EED_F11E_7A11_0001);
    for round in 0..6_000 {
        let seed = rng.pick(&seeds).clone();
        if round % 2 == 0 {
            let mutated = mutate_value(&mut rng, seed);
            let bytes = serde_json::to_vec(&mutated).unwrap();
            let from_bytes = normalise(&bytes, &ctx);
            check_invariants(&from_bytes);
            assert_eq!(from_bytes, normalise_value(&mutated, &ctx), "round {round}");
        } else {
            let bytes = mutate_bytes(&mut rng, serde_json::to_vec(&seed).unwrap());
            check_invariants(&normalise(&bytes, &ctx));
            let mut blob = b"[".to_vec();
            blob.extend_from_slice(&bytes);
            blob.push(b']');
            let _ = normalise_blob(&blob, &ctx);
        }
    }
}

#[test]
fn deeply_nested_input_is_refused_not_a_stack_overflow() {
    let nested = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep = format!("{{\"Workload\":\"OneDrive\",\"RecordType\":6,\"Id\":{nested}}}");
    assert_eq!(malformed_field(&quarantine_bytes(deep.as_bytes())), "Id");
    let unclosed = format!("{{\"Id\":{}", "{\"a\":".repeat(100_000));
    assert_eq!(malformed_field(&quarantine_bytes(unclosed.as_bytes())), "record");
    let deep_blob = format!("[{}]", "[".repeat(100_000));
    assert!(normalise_blob(deep_blob.as_bytes(), &ctx()).is_err());
}
