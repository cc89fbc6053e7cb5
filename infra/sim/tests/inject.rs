//! The activity injector over real HTTP: `POST /_sim/activity` changes drives (seen through Graph
//! item reads and delta) and publishes the audit records Microsoft would emit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};

use common::{Reply, Sim, dedup_last_wins, read, start};
use m365_sim::{FilesPerDrive, SimConfig, SimDrive};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn config() -> SimConfig {
    SimConfig {
        users: 12,
        no_drive_ratio: 0.0,
        team_sites: 1,
        files_per_drive: FilesPerDrive::Fixed(40),
        delta_repeat_rate: 0.0,
        ..SimConfig::with_seed(11)
    }
}

async fn inject(sim: &Sim, body: &Value) -> Reply {
    let resp = sim
        .http
        .post(format!("{}/_sim/activity", sim.handle.base_url()))
        .json(body)
        .send()
        .await
        .expect("request sent");
    read(resp).await
}

async fn inject_ok(sim: &Sim, body: &Value) -> Vec<Value> {
    let reply = inject(sim, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["operations"].as_array().expect("operations").clone()
}

fn drive(sim: &Sim, user: u64) -> SimDrive {
    sim.handle.tenant().drive_of_user(user).expect("a OneDrive")
}

/// A file of the generated drive inside a folder (not at the root).
fn nested_file(sim: &Sim, drive: &SimDrive) -> m365_sim::SimItem {
    sim.handle
        .tenant()
        .drive_items(&drive.id)
        .find(|i| !i.is_folder && i.path.matches('/').count() >= 2)
        .expect("a file in a folder")
}

fn records(outcome: &Value) -> Vec<Value> {
    outcome["audit_records"].as_array().expect("audit_records").clone()
}

fn is_guid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[tokio::test]
async fn upload_rename_move_and_delete_show_in_delta_and_match_the_ground_truth() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 2);
    let (_, delta_link) = sim.delta_all(&token, &format!("/drives/{}/root/delta", d.id)).await;
    let root = sim.handle.tenant().drive_root(&d.id).expect("root");
    let folder = sim
        .handle
        .tenant()
        .drive_items(&d.id)
        .find(|i| i.is_folder)
        .expect("a folder");

    // Upload.
    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "upload", "drive": d.id, "name": "Budget 2027.xlsx", "size": 12345}]}),
    )
    .await;
    let up = &ops[0];
    let item_id = up["item_id"].as_str().expect("item_id").to_owned();
    assert_eq!(up["path"], "/Budget 2027.xlsx");
    assert_eq!(up["size"], 12345);
    assert_eq!(up["drive_id"], d.id.as_str());
    let (changes, delta_link) = sim.delta_all(&token, &delta_link).await;
    let created = changes
        .iter()
        .find(|c| c["id"] == item_id.as_str())
        .expect("upload in delta");
    assert_eq!(created["name"], "Budget 2027.xlsx");
    assert_eq!(created["parentReference"]["id"], root.id.as_str());
    assert_eq!(created["size"], 12345);
    assert!(created.get("cTag").is_none(), "ODB delta carries no cTag");
    let got = sim.get(&token, &format!("/drives/{}/items/{item_id}", d.id)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["cTag"], up["ctag"]);
    assert_eq!(got.body["eTag"], up["etag"]);
    assert_eq!(got.body["parentReference"]["path"], format!("/drives/{}/root:", d.id));
    let root_now = changes
        .iter()
        .find(|c| c["id"] == root.id.as_str())
        .expect("root in delta");
    assert_eq!(root_now["size"], root.size + 12345, "ancestors carry the new size");

    // Rename.
    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "rename", "drive": d.id, "item": item_id, "name": "Budget FINAL.xlsx"}]}),
    )
    .await;
    assert_eq!(ops[0]["path"], "/Budget FINAL.xlsx");
    assert_eq!(ops[0]["previous_path"], "/Budget 2027.xlsx");
    assert_eq!(ops[0]["ctag"], up["ctag"], "a rename keeps the content tag");
    assert_ne!(ops[0]["etag"], up["etag"], "a rename changes the eTag");
    let (changes, delta_link) = sim.delta_all(&token, &delta_link).await;
    let renamed = changes
        .iter()
        .find(|c| c["id"] == item_id.as_str())
        .expect("rename in delta");
    assert_eq!(renamed["name"], "Budget FINAL.xlsx");

    // Move, addressing the item by its path and the folder by its path.
    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "move", "drive": d.id, "item": "/Budget FINAL.xlsx", "folder": folder.path}]}),
    )
    .await;
    assert_eq!(ops[0]["item_id"], item_id.as_str());
    assert_eq!(ops[0]["path"], format!("{}/Budget FINAL.xlsx", folder.path));
    let (changes, delta_link) = sim.delta_all(&token, &delta_link).await;
    let moved = changes
        .iter()
        .find(|c| c["id"] == item_id.as_str())
        .expect("move in delta");
    assert_eq!(moved["parentReference"]["id"], folder.id.as_str());
    let got = sim.get(&token, &format!("/drives/{}/items/{item_id}", d.id)).await;
    assert_eq!(
        got.body["parentReference"]["path"],
        format!("/drives/{}/root:{}", d.id, folder.path)
    );
    assert_eq!(
        got.body["webUrl"],
        format!("{}{}/Budget%20FINAL.xlsx", d.web_url, folder.path.replace(' ', "%20"))
    );

    // Delete (recycle).
    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "recycle", "drive": d.id, "item": item_id}]}),
    )
    .await;
    assert_eq!(ops[0]["deleted"], true);
    let (changes, delta_link) = sim.delta_all(&token, &delta_link).await;
    let gone = changes
        .iter()
        .find(|c| c["id"] == item_id.as_str())
        .expect("delete in delta");
    assert_eq!(gone["deleted"]["state"], "deleted");
    let got = sim.get(&token, &format!("/drives/{}/items/{item_id}", d.id)).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);

    // Restore puts it back where it was.
    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "restore", "drive": d.id, "item": item_id}]}),
    )
    .await;
    assert_eq!(ops[0]["path"], format!("{}/Budget FINAL.xlsx", folder.path));
    let (changes, _) = sim.delta_all(&token, &delta_link).await;
    let back = changes
        .iter()
        .find(|c| c["id"] == item_id.as_str())
        .expect("restore in delta");
    assert!(back.get("deleted").is_none());
    assert_eq!(back["parentReference"]["id"], folder.id.as_str());
}

#[tokio::test]
async fn modify_gives_a_new_version_and_reads_change_nothing() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 3);
    let file = nested_file(&sim, &d);
    let before = sim.handle.drive_version(&d.id).expect("version");
    let ops = inject_ok(
        &sim,
        &json!({"operations": [
            {"op": "download", "drive": d.id, "item": file.id},
            {"op": "preview", "drive": d.id, "item": file.id},
            {"op": "sync_download", "drive": d.id, "item": file.id},
            {"op": "access", "drive": d.id, "item": file.id},
        ]}),
    )
    .await;
    assert_eq!(ops.len(), 4);
    assert_eq!(
        sim.handle.drive_version(&d.id),
        Some(before),
        "reads leave the drive alone"
    );
    for op in &ops {
        assert_eq!(op["ctag"], file.ctag.as_deref().expect("cTag"));
        assert_eq!(op["path"], file.path.as_str());
    }

    let ops = inject_ok(
        &sim,
        &json!({"operations": [{"op": "modify", "drive": d.id, "item": file.id, "size": 777}]}),
    )
    .await;
    let m = &ops[0];
    assert_ne!(m["ctag"], file.ctag.as_deref().expect("cTag"));
    assert_ne!(m["etag"], file.etag.as_str());
    assert_eq!(m["size"], 777);
    let got = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert_eq!(got.body["cTag"], m["ctag"]);
    assert_eq!(got.body["size"], 777);
    assert_eq!(
        got.body["lastModifiedBy"]["user"]["email"],
        d.owner.email.as_deref().expect("upn")
    );

    // The new version is what `/content` serves.
    let resp = sim
        .http
        .get(sim.url(&format!("/drives/{}/items/{}/content", d.id, file.id)))
        .bearer_auth(&token)
        .send()
        .await
        .expect("content");
    assert_eq!(resp.status(), StatusCode::OK, "after the redirect");
    let bytes = resp.bytes().await.expect("bytes");
    assert_eq!(bytes.len(), 777);
    assert_eq!(sim.handle.content(&d.id, &file.id).expect("content").size(), 777);
}

#[tokio::test]
async fn file_records_have_the_documented_fields_and_real_world_quirks() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 1);
    let web_url = sim.get(&token, &format!("/drives/{}", d.id)).await.body["webUrl"]
        .as_str()
        .expect("webUrl")
        .to_owned();
    let file = nested_file(&sim, &d);
    let other = sim.handle.tenant().user(5).user_principal_name;
    let ops = inject_ok(
        &sim,
        &json!({"return_records": true, "operations": [
            {"op": "download", "drive": d.id, "item": file.id, "actor": other, "at": "2026-11-02T10:15:42.250Z"},
            {"op": "sync_upload", "drive": d.id, "name": "notes.txt", "folder": "/"},
            {"op": "move", "drive": d.id, "item": file.id, "folder": "/"},
        ]}),
    )
    .await;

    let download = &records(&ops[0])[0];
    assert_eq!(download["RecordType"], 6);
    assert_eq!(download["Workload"], "OneDrive");
    assert_eq!(download["Operation"], "FileDownloaded");
    assert_eq!(download["CreationTime"], "2026-11-02T10:15:42", "no zone, no fraction");
    assert_eq!(download["ItemType"], "File", "a string, not the schema's integer");
    assert!(is_guid(download["Id"].as_str().expect("Id")));
    assert_eq!(download["Id"], ops[0]["records"][0]["id"]);
    assert_eq!(download["UserId"], other.as_str());
    assert_eq!(download["UserType"], 0);
    assert_eq!(download["OrganizationId"], sim.handle.tenant_id());
    for field in [
        "ClientIP",
        "UserAgent",
        "UserKey",
        "ListId",
        "ListItemUniqueId",
        "Site",
        "WebId",
        "CorrelationId",
    ] {
        assert!(
            download[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field} in {download}"
        );
    }
    let object_id = download["ObjectId"].as_str().expect("ObjectId");
    assert_eq!(
        object_id,
        format!("{web_url}{}", file.path),
        "the full, unencoded file URL"
    );
    let site_url = download["SiteUrl"].as_str().expect("SiteUrl");
    assert!(site_url.ends_with('/'), "file records end SiteUrl with a slash");
    assert!(site_url.contains("-my.sharepoint.com/personal/"));
    let folder = file.path.rsplit_once('/').expect("folder").0;
    assert_eq!(download["SourceRelativeUrl"], format!("Documents{folder}"));
    assert_eq!(download["SourceFileName"], file.name.as_str());
    assert_eq!(
        download["SourceFileExtension"],
        file.name.rsplit_once('.').expect("ext").1
    );
    assert_eq!(
        format!(
            "{site_url}{}/{}",
            download["SourceRelativeUrl"].as_str().expect("rel"),
            file.name
        ),
        object_id,
        "SiteUrl + SourceRelativeUrl + SourceFileName == ObjectId"
    );

    let sync = &records(&ops[1])[0];
    assert_eq!(sync["Operation"], "FileSyncUploadedFull");
    assert!(sync["UserAgent"].as_str().expect("agent").contains("SkyDriveSync"));
    assert_eq!(sync["SourceRelativeUrl"], "Documents");
    assert_eq!(sync["ObjectId"], format!("{web_url}/notes.txt"));

    let moved = &records(&ops[2])[0];
    assert_eq!(moved["Operation"], "FileMoved");
    assert_eq!(moved["ObjectId"], object_id, "a move names where the file was");
    assert_eq!(moved["DestinationRelativeUrl"], "Documents");
    assert_eq!(moved["DestinationFileName"], file.name.as_str());
    assert_eq!(
        moved["ListItemUniqueId"], download["ListItemUniqueId"],
        "the same list item"
    );
}

#[tokio::test]
async fn sharing_records_follow_the_sharing_schema() {
    let sim = start(config()).await;
    let d = drive(&sim, 4);
    let file = nested_file(&sim, &d);
    let member = sim.handle.tenant().user(6).user_principal_name;
    let guest_upn = format!("dana_fabrikam.com#EXT#@{}", sim.handle.tenant().domain());
    let ops = inject_ok(
        &sim,
        &json!({"return_records": true, "operations": [
            {"op": "anonymous_link_created", "drive": d.id, "item": file.id, "access": "edit"},
            {"op": "anonymous_link_used", "drive": d.id, "item": file.id},
            {"op": "share", "drive": d.id, "item": file.id, "targets": [member, guest_upn, "lee@northwind.example"]},
            {"op": "secure_link_created", "drive": d.id, "item": file.id, "targets": ["sam@adatum.example"]},
            {"op": "sharing_revoked", "drive": d.id, "item": file.id, "targets": [member]},
            {"op": "permission_level_modified", "drive": d.id},
        ]}),
    )
    .await;

    let created = records(&ops[0]);
    let names: Vec<&str> = created.iter().map(|r| r["Operation"].as_str().expect("op")).collect();
    assert_eq!(
        names,
        ["SharingInheritanceBroken", "AnonymousLinkCreated", "SharingSet"]
    );
    for r in &created {
        assert_eq!(r["RecordType"], 14);
        assert_eq!(r["Workload"], "OneDrive");
        let site = r["SiteUrl"].as_str().expect("SiteUrl");
        assert!(!site.ends_with('/'), "sharing records have no trailing slash");
        assert_eq!(
            r["SourceRelativeUrl"],
            format!("Documents{}", file.path),
            "includes the file name"
        );
    }
    assert_eq!(created[1]["EventData"], "<Type>Edit</Type>");
    let sharing_id = created[1]["UniqueSharingId"].as_str().expect("UniqueSharingId");
    assert_eq!(
        created[2]["TargetUserOrGroupName"],
        format!(
            "SharingLinks.{}.AnonymousEdit.{sharing_id}",
            created[1]["ListItemUniqueId"].as_str().expect("list item")
        )
    );
    assert_eq!(created[2]["TargetUserOrGroupType"], "SharePointGroup");
    assert_eq!(
        created[2]["EventData"],
        "<Permissions granted>Contribute</Permissions granted>"
    );

    let used = &records(&ops[1])[0];
    assert_eq!(used["Operation"], "AnonymousLinkUsed");
    assert!(used["UserId"].as_str().expect("UserId").starts_with("urn:spo:anon#"));
    assert_eq!(used["UniqueSharingId"], sharing_id);
    assert!(used["ClientIP"].as_str().expect("ip").starts_with("192.0.2."));

    let shared = records(&ops[2]);
    let names: Vec<&str> = shared.iter().map(|r| r["Operation"].as_str().expect("op")).collect();
    assert_eq!(
        names,
        ["SharingSet", "AddedToGroup", "SharingSet", "SharingInvitationCreated"],
        "no second SharingInheritanceBroken; member, existing guest, invitation"
    );
    assert_eq!(shared[0]["TargetUserOrGroupName"], member.as_str());
    assert_eq!(shared[0]["TargetUserOrGroupType"], "Member");
    assert_eq!(shared[1]["ItemType"], "Web");
    assert_eq!(shared[1]["TargetUserOrGroupName"], guest_upn.as_str());
    assert_eq!(shared[2]["TargetUserOrGroupType"], "Guest");
    assert_eq!(shared[3]["TargetUserOrGroupName"], "lee@northwind.example");
    assert_eq!(shared[3]["TargetUserOrGroupType"], "Guest");

    let secure = records(&ops[3]);
    let names: Vec<&str> = secure.iter().map(|r| r["Operation"].as_str().expect("op")).collect();
    assert_eq!(names, ["SecureLinkCreated", "AddedToSecureLink", "SharingSet"]);
    assert_eq!(secure[1]["TargetUserOrGroupName"], "sam@adatum.example");
    assert!(
        secure[2]["TargetUserOrGroupName"]
            .as_str()
            .expect("group")
            .contains(".Flexible.")
    );

    assert_eq!(records(&ops[4])[0]["Operation"], "SharingRevoked");
    let level = &records(&ops[5])[0];
    assert_eq!(level["Operation"], "PermissionLevelModified");
    assert_eq!(level["ItemType"], "Web");
    assert_eq!(level["ObjectId"], level["SiteUrl"]);
    assert!(ops[5].get("item_id").is_none());
}

#[tokio::test]
async fn injected_records_are_published_to_the_audit_log() {
    let sim = start(config()).await;
    let d = drive(&sim, 0);
    let ops = inject_ok(
        &sim,
        &json!({"operations": [
            {"op": "upload", "drive": d.id, "name": "a.txt"},
            {"op": "company_link_created", "drive": d.id, "item": "/a.txt"},
        ]}),
    )
    .await;
    let ids: BTreeSet<String> = ops
        .iter()
        .flat_map(|o| o["records"].as_array().expect("records").iter())
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 4, "upload + inheritance broken + link + SharingSet");
    let blobs = sim.handle.audit().blobs();
    let published: HashSet<String> = blobs
        .iter()
        .filter(|b| b.content_type == m365_sim::ContentType::SharePoint)
        .flat_map(|b| b.record_ids.iter().flatten().cloned())
        .collect();
    for id in &ids {
        assert!(published.contains(id), "record {id} published");
    }
    for r in ops
        .iter()
        .flat_map(|o| o["records"].as_array().expect("records").iter())
    {
        assert!(
            r["content_id"]
                .as_str()
                .is_some_and(|c| blobs.iter().any(|b| b.content_id == c))
        );
    }
}

#[tokio::test]
async fn bad_activities_are_refused_with_what_was_applied_before() {
    let sim = start(config()).await;
    let d = drive(&sim, 0);
    let site = sim.handle.tenant().team_site_drives()[0].id.clone();
    let reply = inject(
        &sim,
        &json!({"operations": [
            {"op": "upload", "drive": d.id, "name": "kept.txt"},
            {"op": "download", "drive": d.id, "item": "/no such file.txt"},
        ]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["error"]["index"], 1);
    assert_eq!(reply.body["applied"].as_array().expect("applied").len(), 1);

    let reply = inject(&sim, &json!({"operations": [{"op": "upload", "drive": site}]})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("not a OneDrive")
    );

    let reply = inject(
        &sim,
        &json!({"operations": [{"op": "restore", "drive": d.id, "item": "/kept.txt"}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);

    let reply = inject(
        &sim,
        &json!({"operations": [{"op": "move", "drive": d.id, "item": "/kept.txt", "folder": "/"}]}),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "a move into the folder it is in: {}",
        reply.body
    );

    let reply = inject(
        &sim,
        &json!({"operations": [{"op": "share", "drive": d.id, "item": "/kept.txt"}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "a share needs targets");

    let reply = inject(&sim, &json!({"operations": [{"op": "teleport", "drive": d.id}]})).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = inject(
        &sim,
        &json!({"operations": [{"op": "upload", "drive": "nobody@contoso.onmicrosoft.com"}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

fn fingerprint(ops: &[Value]) -> Vec<String> {
    ops.iter()
        .map(|o| {
            let ids: Vec<&str> = o["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|r| r["operation"].as_str().expect("operation"))
                .collect();
            format!(
                "{} {} {} {} {} {} {} {}",
                o["op"],
                o["drive_id"],
                o["item_id"],
                o["path"],
                o["ctag"],
                o["size"],
                o["actor"],
                ids.join(",")
            )
        })
        .collect()
}

#[tokio::test]
async fn random_mix_is_deterministic_per_seed() {
    let body =
        |seed: u64| json!({"random": {"count": 300, "seed": seed, "start": "2026-11-30T06:00:00Z", "step_ms": 1000}});
    let a = start(config()).await;
    let first = inject_ok(&a, &body(7)).await;
    let b = start(config()).await;
    let second = inject_ok(&b, &body(7)).await;
    assert_eq!(first.len(), 300);
    assert_eq!(fingerprint(&first), fingerprint(&second));
    let ids = |ops: &[Value]| -> Vec<Value> {
        ops.iter()
            .map(|o| o["records"].clone())
            .map(|r| r[0]["id"].clone())
            .collect()
    };
    assert_eq!(ids(&first), ids(&second), "record ids too");
    let c = start(config()).await;
    let other = inject_ok(&c, &body(8)).await;
    assert_ne!(fingerprint(&first), fingerprint(&other));
}

#[tokio::test]
async fn two_thousand_random_activities_leave_drives_as_the_ground_truth_says() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let drives: Vec<String> = (0..6).map(|u| drive(&sim, u).id).collect();
    let mut links = HashMap::new();
    for d in &drives {
        let (_, link) = sim.delta_all(&token, &format!("/drives/{d}/root/delta")).await;
        links.insert(d.clone(), link);
    }
    let reply = inject(&sim, &json!({"random": {"count": 2000, "seed": 7, "drives": drives}})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let ops = reply.body["operations"].as_array().expect("operations");
    assert_eq!(ops.len(), 2000);
    let kinds: BTreeSet<&str> = ops.iter().map(|o| o["op"].as_str().expect("op")).collect();
    assert!(kinds.len() >= 20, "a varied mix: {kinds:?}");
    for o in ops.iter().filter(|o| o["op"] == "move" || o["op"] == "rename") {
        assert_ne!(o["previous_path"], o["path"], "{o}");
    }
    let total: usize = ops
        .iter()
        .map(|o| o["records"].as_array().expect("records").len())
        .sum();
    assert_eq!(reply.body["records"], total);

    // The last outcome per item is the item's state in Graph.
    let mut last: HashMap<(String, String), &Value> = HashMap::new();
    for o in ops {
        assert!(drives.contains(&o["drive_id"].as_str().expect("drive").to_owned()));
        if let Some(item) = o["item_id"].as_str() {
            last.insert((o["drive_id"].as_str().expect("drive").to_owned(), item.to_owned()), o);
        }
    }
    for d in &drives {
        let (changes, _) = sim.delta_all(&token, &links[d]).await;
        let latest: HashMap<&str, &Value> = changes.iter().map(|c| (c["id"].as_str().expect("id"), c)).collect();
        for ((drive_id, item), o) in last.iter().filter(|((dr, _), _)| dr == d) {
            let changed = o["op"] != "download"
                && o["op"] != "sync_download"
                && o["op"] != "preview"
                && o["op"] != "access"
                && !o["op"].as_str().expect("op").contains("link")
                && o["op"] != "share"
                && o["op"] != "sharing_revoked";
            let got = sim.get(&token, &format!("/drives/{drive_id}/items/{item}")).await;
            if o["deleted"] == true {
                assert_eq!(got.status, StatusCode::NOT_FOUND, "{o}");
                if changed {
                    assert!(latest[item.as_str()].get("deleted").is_some(), "{o}");
                }
                continue;
            }
            assert_eq!(got.status, StatusCode::OK, "{o}");
            assert_eq!(got.body["cTag"], o["ctag"], "{o}");
            assert_eq!(got.body["size"], o["size"], "{o}");
            let parent_path = got.body["parentReference"]["path"].as_str().expect("path");
            let prefix = format!("/drives/{drive_id}/root:");
            let folder = parent_path.strip_prefix(&prefix).expect("parent path");
            assert_eq!(
                format!("{folder}/{}", got.body["name"].as_str().expect("name")),
                o["path"].as_str().expect("path")
            );
        }
    }
}

#[tokio::test]
async fn delta_names_each_file_by_the_list_item_id_its_records_carry_when_selected() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 3);
    let file = nested_file(&sim, &d);
    let ops = inject_ok(
        &sim,
        &json!({"return_records": true, "operations": [
            {"op": "download", "drive": d.id, "item": file.id},
            {"op": "rename", "drive": d.id, "item": file.id, "name": "renamed.docx"},
        ]}),
    )
    .await;
    let record_id = records(&ops[0])[0]["ListItemUniqueId"].clone();
    assert!(is_guid(record_id.as_str().expect("ListItemUniqueId")), "{record_id}");
    assert_eq!(records(&ops[1])[0]["ListItemUniqueId"], record_id, "a rename keeps it");

    let select = "id,name,sharepointIds";
    let (items, _) = sim
        .delta_all(&token, &format!("/drives/{}/root/delta?$select={select}", d.id))
        .await;
    let renamed = dedup_last_wins(&items)
        .into_iter()
        .find(|i| i["id"] == file.id.as_str())
        .expect("the file in delta");
    assert_eq!(renamed["name"], "renamed.docx");
    assert_eq!(renamed["sharepointIds"]["listItemUniqueId"], record_id);
    assert_eq!(renamed["sharepointIds"]["listId"], records(&ops[0])[0]["ListId"]);
    // Every file has its own.
    let ids: HashSet<&str> = items
        .iter()
        .filter_map(|i| i["sharepointIds"]["listItemUniqueId"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        dedup_last_wins(&items).len() - 1,
        "one id per item but the root"
    );

    // Not returned by default.
    let (plain, _) = sim.delta_all(&token, &format!("/drives/{}/root/delta", d.id)).await;
    assert!(plain.iter().all(|i| i.get("sharepointIds").is_none()));
}

#[tokio::test]
async fn users_hired_at_run_time_are_listed_found_and_get_a_onedrive_without_changing_the_others() {
    let sim = start(SimConfig {
        no_drive_ratio: 0.0,
        ..config()
    })
    .await;
    let token = sim.token().await;
    let tenant = sim.handle.tenant();
    let before = tenant.user_count();
    let first_drive = sim
        .get(&token, &format!("/drives/{}/root/delta", drive(&sim, 0).id))
        .await;

    let hired = tenant.hire(2);
    assert_eq!(tenant.user_count(), before + 2);
    let upn = &hired[1].user_principal_name;
    let found = sim.get(&token, &format!("/users/{upn}")).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
    assert_eq!(found.body["id"], hired[1].id.as_str());
    let onedrive = sim.get(&token, &format!("/users/{upn}/drive")).await;
    assert_eq!(onedrive.status, StatusCode::OK, "{}", onedrive.body);
    let listed = sim.get(&token, "/users?$top=999&$select=id").await;
    let ids: HashSet<&str> = listed.body["value"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert!(hired.iter().all(|u| ids.contains(u.id.as_str())));
    // What was generated before stays as it was.
    let again = sim
        .get(&token, &format!("/drives/{}/root/delta", drive(&sim, 0).id))
        .await;
    assert_eq!(first_drive.body["value"], again.body["value"]);
}
