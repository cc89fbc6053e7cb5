//! Every audit record m365-sim's activity injector emits is normalised into the file event its
//! operation stands for, located in the right drive at the path the injector reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use filetrail_core::audit::{
    ActorKind, FileEventType, ItemKind, KnownDrive, LinkScope, NormaliseContext, Normalised, TrustedDomains,
    normalise_value,
};
use m365_sim::{Activity, ActivityKind, ActivityOutcome, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};
use serde_json::Value;

/// What each Operation the injector writes must become (meanings:
/// <https://learn.microsoft.com/en-us/purview/audit-log-activities>).
fn expected(operation: &str) -> FileEventType {
    use FileEventType as T;
    match operation {
        "FileUploaded" | "FileSyncUploadedFull" => T::Created,
        "FileModified" => T::Modified,
        "FileRenamed" => T::Renamed,
        "FileMoved" => T::Moved,
        "FileCopied" => T::Copied,
        "FileRecycled" => T::Recycled,
        "FileDeleted" => T::Deleted,
        "FileRestored" => T::Restored,
        "FileDownloaded" | "FileSyncDownloadedFull" => T::Downloaded,
        "FilePreviewed" => T::Previewed,
        "FileAccessed" => T::Accessed,
        "AnonymousLinkCreated" => T::AnonymousLinkCreated,
        "AnonymousLinkUsed" => T::AnonymousLinkUsed,
        "AnonymousLinkRemoved" => T::AnonymousLinkRemoved,
        "CompanyLinkCreated" => T::OrganizationLinkCreated,
        "CompanyLinkUsed" => T::OrganizationLinkUsed,
        "CompanyLinkRemoved" => T::OrganizationLinkRemoved,
        "SecureLinkCreated" => T::SpecificPeopleLinkCreated,
        "AddedToSecureLink" => T::AddedToSpecificPeopleLink,
        "SecureLinkUsed" => T::SpecificPeopleLinkUsed,
        "SecureLinkDeleted" => T::SpecificPeopleLinkRemoved,
        "SharingSet" => T::SharingSet,
        "SharingInvitationCreated" => T::InvitationCreated,
        "AddedToGroup" => T::AddedToGroup,
        "SharingRevoked" => T::SharingRevoked,
        "SharingInheritanceBroken" => T::SharingInheritanceBroken,
        "PermissionLevelModified" => T::PermissionLevelChanged,
        other => panic!("the injector wrote an operation this test does not expect: {other}"),
    }
}

fn outcomes(sim: &m365_sim::SimHandle, request: &ActivityRequest) -> Vec<ActivityOutcome> {
    sim.inject_activity(request).expect("injected").operations
}

#[tokio::test]
async fn every_injected_record_normalises_into_the_event_its_operation_stands_for() {
    let config = SimConfig {
        users: 10,
        no_drive_ratio: 0.0,
        files_per_drive: FilesPerDrive::Fixed(30),
        ..SimConfig::with_seed(5)
    };
    let sim = m365_sim::spawn(config).await.expect("simulator");
    let tenant = sim.tenant().clone();
    let monitored = tenant.drive_of_user(0).expect("drive");
    let unmonitored = tenant.drive_of_user(1).expect("drive");
    let owner = monitored.owner.email.clone().expect("owner UPN");
    let member = tenant.user(3).user_principal_name;
    let guest = format!("dana_fabrikam.com#EXT#@{}", tenant.domain());
    let file = tenant
        .drive_items(&monitored.id)
        .find(|i| !i.is_folder)
        .expect("a file");
    let folder = tenant
        .drive_items(&monitored.id)
        .find(|i| i.is_folder)
        .expect("a folder");

    // Every kind once on the monitored drive, then a random mix over both drives.
    let d = monitored.id.as_str();
    use ActivityKind as K;
    let mut explicit = vec![
        Activity::new(K::Upload, d).name("Plan.docx"),
        Activity::new(K::SyncUpload, d)
            .name("Sync.xlsx")
            .folder(folder.id.clone()),
        Activity::new(K::Modify, d).item("/Plan.docx"),
        Activity::new(K::Rename, d).item("/Plan.docx").name("Plan v2.docx"),
        Activity::new(K::Move, d)
            .item("/Plan v2.docx")
            .folder(folder.path.clone()),
        Activity::new(K::Copy, d)
            .item(file.id.clone())
            .folder(folder.id.clone()),
        Activity::new(K::Download, d)
            .item(file.id.clone())
            .actor(member.clone()),
        Activity::new(K::SyncDownload, d).item(file.id.clone()),
        Activity::new(K::Preview, d).item(file.id.clone()),
        Activity::new(K::Access, d).item(file.id.clone()),
        Activity::new(K::AnonymousLinkCreated, d).item(file.id.clone()),
        Activity::new(K::AnonymousLinkUsed, d).item(file.id.clone()),
        Activity::new(K::AnonymousLinkRemoved, d).item(file.id.clone()),
        Activity::new(K::CompanyLinkCreated, d).item(file.id.clone()),
        Activity::new(K::CompanyLinkUsed, d)
            .item(file.id.clone())
            .actor(member.clone()),
        Activity::new(K::CompanyLinkRemoved, d).item(file.id.clone()),
        Activity::new(K::SecureLinkCreated, d)
            .item(file.id.clone())
            .targets(&["lee@northwind.example"]),
        Activity::new(K::SecureLinkUsed, d)
            .item(file.id.clone())
            .actor("lee@northwind.example"),
        Activity::new(K::SecureLinkDeleted, d).item(file.id.clone()),
        Activity::new(K::Share, d).item(file.id.clone()).targets(&[
            member.as_str(),
            guest.as_str(),
            "sam@adatum.example",
        ]),
        Activity::new(K::SharingRevoked, d)
            .item(file.id.clone())
            .targets(&[member.as_str()]),
        Activity::new(K::PermissionLevelModified, d),
        Activity::new(K::Recycle, d).item(format!("{}/Plan v2.docx", folder.path)),
        Activity::new(K::Restore, d).item(format!("{}/Plan v2.docx", folder.path)),
        Activity::new(K::Delete, d).item(format!("{}/Plan v2.docx", folder.path)),
    ];
    let covered: std::collections::HashSet<ActivityKind> = explicit.iter().map(|a| a.op).collect();
    assert_eq!(covered.len(), ActivityKind::ALL.len(), "every kind is exercised");
    explicit.iter_mut().for_each(|a| a.at = Some(Utc::now()));
    let request = ActivityRequest {
        operations: explicit,
        random: Some(RandomActivity {
            count: 400,
            seed: 3,
            drives: vec![monitored.id.clone(), unmonitored.id.clone()],
            mix: None,
            start: None,
            step_ms: 0,
        }),
        return_records: true,
    };
    let done = outcomes(&sim, &request);

    let mut ctx = NormaliseContext::new(TrustedDomains::new([tenant.domain()]), Utc::now());
    assert!(ctx.add_drive(KnownDrive {
        drive_id: monitored.id.clone(),
        owner_upn: owner.clone(),
        web_url: monitored.web_url.clone(),
    }));

    let mut seen = 0;
    for outcome in &done {
        let records: &Vec<Value> = outcome.audit_records.as_ref().expect("records returned");
        assert_eq!(records.len(), outcome.records.len());
        for record in records {
            let operation = record["Operation"].as_str().expect("Operation");
            let event = match normalise_value(record, &ctx) {
                Ok(Normalised::Event(e)) => *e,
                other => panic!("{operation} did not become an event: {other:?}\n{record}"),
            };
            seen += 1;
            assert_eq!(event.event_type, expected(operation), "{record}");
            assert_eq!(event.id, record["Id"].as_str().expect("Id"));
            let on_monitored = outcome.drive_id == monitored.id;
            assert_eq!(event.drive_id.as_deref(), on_monitored.then_some(monitored.id.as_str()));
            if on_monitored {
                assert_eq!(event.owner_upn.as_deref(), Some(owner.as_str()));
            }
            if event.item_kind == ItemKind::Drive {
                assert!(
                    matches!(operation, "AddedToGroup" | "PermissionLevelModified"),
                    "{record}"
                );
                continue;
            }
            assert_eq!(event.item_kind, ItemKind::File, "{record}");
            // Where the file is now, as the injector says.
            let now_at = event.lookup_path();
            if on_monitored {
                assert_eq!(now_at, outcome.path.as_deref(), "{record}");
            }
            match event.event_type {
                FileEventType::AnonymousLinkUsed => {
                    assert_eq!(event.actor.kind, ActorKind::Anonymous);
                    assert_eq!(event.sharing.as_ref().and_then(|s| s.external), Some(true));
                }
                FileEventType::AnonymousLinkCreated => {
                    assert_eq!(
                        event.sharing.as_ref().and_then(|s| s.link_scope),
                        Some(LinkScope::Anonymous)
                    );
                }
                FileEventType::InvitationCreated => {
                    assert_eq!(event.sharing.as_ref().and_then(|s| s.external), Some(true));
                }
                _ => {}
            }
        }
    }
    assert!(seen > 400, "{seen} records normalised");
    sim.shutdown().await;
}
