//! Sharing over real HTTP: per-item permissions (`GET …/permissions`, also in `$batch`), the
//! `shared` facet, permission deletion and its role check, the injector's links and shares changing
//! permissions, and delta's sharing-change annotations
//! (<https://learn.microsoft.com/en-us/graph/api/driveitem-list-permissions>,
//! <https://learn.microsoft.com/en-us/graph/api/permission-delete>,
//! <https://learn.microsoft.com/en-us/onedrive/developer/rest-api/concepts/scan-guidance>).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Reply, Sim, graph_error_code, read, start};
use m365_sim::{
    DEFAULT_GRAPH_ROLES, FaultConfig, FilesPerDrive, LinkScope, SimConfig, SimDrive, SimItem, SimPermission,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SHARING_PREFER: &str = "deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges";

fn config() -> SimConfig {
    SimConfig {
        users: 30,
        no_drive_ratio: 0.0,
        team_sites: 0,
        files_per_drive: FilesPerDrive::Fixed(40),
        delta_repeat_rate: 0.0,
        ..SimConfig::with_seed(21)
    }
}

fn drive(sim: &Sim, user: u64) -> SimDrive {
    sim.handle.tenant().drive_of_user(user).expect("a OneDrive")
}

/// A file of `drive` inside a folder that starts out unshared.
fn private_nested_file(sim: &Sim, drive: &SimDrive) -> SimItem {
    sim.handle
        .tenant()
        .drive_items(&drive.id)
        .find(|i| {
            !i.is_folder && i.path.matches('/').count() >= 2 && sim.handle.item_permissions(&drive.id, &i.id).len() == 1
        })
        .expect("an unshared file in a folder")
}

async fn inject_ok(sim: &Sim, operations: Value) -> Vec<Value> {
    let resp = sim
        .http
        .post(format!("{}/_sim/activity", sim.handle.base_url()))
        .json(&json!({"operations": operations, "return_records": true}))
        .send()
        .await
        .expect("request sent");
    let reply = read(resp).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["operations"].as_array().expect("operations").clone()
}

fn permissions_path(drive: &str, item: &str) -> String {
    format!("/drives/{drive}/items/{item}/permissions")
}

async fn list(sim: &Sim, token: &str, drive: &str, item: &str) -> Vec<Value> {
    let reply = sim.get(token, &permissions_path(drive, item)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["value"].as_array().expect("value").clone()
}

async fn delete(sim: &Sim, token: &str, drive: &str, item: &str, permission: &str) -> Reply {
    let resp = sim
        .http
        .delete(sim.url(&format!("{}/{permission}", permissions_path(drive, item))))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    read(resp).await
}

/// A token of an app that was also granted these roles.
async fn token_with(sim: &Sim, extra: &[&str]) -> String {
    let mut roles: Vec<&str> = DEFAULT_GRAPH_ROLES.to_vec();
    roles.extend_from_slice(extra);
    sim.handle.set_graph_roles(&roles);
    sim.token().await
}

fn records_of(outcome: &Value) -> Vec<Value> {
    outcome["audit_records"].as_array().expect("audit_records").clone()
}

fn record<'a>(records: &'a [Value], operation: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["Operation"] == operation)
        .unwrap_or_else(|| panic!("a {operation} record"))
}

#[tokio::test]
async fn an_unshared_file_lists_only_its_owner_in_the_documented_shape() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 1);
    let file = private_nested_file(&sim, &d);

    let value = list(&sim, &token, &d.id, &file.id).await;

    assert_eq!(value.len(), 1, "{value:?}");
    let owner = &value[0];
    assert_eq!(owner["roles"], json!(["owner"]));
    assert_eq!(owner["grantedToV2"]["user"]["id"], json!(d.owner.id));
    assert_eq!(owner["grantedToV2"]["user"]["displayName"], json!(d.owner.display_name));
    assert_eq!(owner["grantedToV2"]["user"]["email"], json!(d.owner.email));
    assert!(owner["grantedToV2"]["siteUser"]["loginName"].is_string());
    assert!(owner.get("inheritedFrom").is_none(), "ODB never returns inheritedFrom");
    assert!(owner.get("link").is_none());
    let item = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert!(item.body.get("shared").is_none(), "no shared facet: {}", item.body);
    assert_eq!(sim.handle.stats().permissions, 1, "counted as a permission request");
}

#[tokio::test]
async fn a_fresh_tenant_already_has_some_shared_files_including_anonymous_and_external() {
    let sim = start(config()).await;
    let other = start(config()).await;
    let mut anonymous = 0;
    let mut external = 0;
    let mut shared = 0;
    for user in 0..30 {
        let d = drive(&sim, user);
        let items = sim.handle.shared_items(&d.id);
        assert_eq!(
            items.len(),
            other.handle.shared_items(&d.id).len(),
            "same seed, same sharing"
        );
        for (item, permissions) in items {
            assert!(!item.is_folder);
            shared += 1;
            anonymous += permissions
                .iter()
                .filter(|p| p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Anonymous))
                .count();
            external += permissions
                .iter()
                .filter(|p| p.grantees.iter().any(|g| g.external))
                .count();
        }
    }
    let files = 30 * 40;
    assert!(
        shared > 0 && shared < files / 8,
        "a small share of {files} files: {shared}"
    );
    assert!(anonymous > 0, "some anonymous links");
    assert!(external > 0, "some people outside the tenant");
}

#[tokio::test]
async fn an_anonymous_link_becomes_a_permission_with_the_records_sharing_id_and_a_shared_facet() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 2);
    let file = private_nested_file(&sim, &d);
    let before = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;

    let out = inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id, "access": "edit",
                "at": "2026-11-30T06:00:00Z"}]),
    )
    .await;

    let records = records_of(&out[0]);
    let sharing_id = record(&records, "AnonymousLinkCreated")["UniqueSharingId"]
        .as_str()
        .unwrap()
        .to_owned();
    let value = list(&sim, &token, &d.id, &file.id).await;
    assert_eq!(value.len(), 2);
    let link = value
        .iter()
        .find(|p| p["id"] == json!(sharing_id))
        .expect("the link, by its UniqueSharingId");
    assert_eq!(link["link"]["scope"], "anonymous");
    assert_eq!(link["link"]["type"], "edit");
    assert_eq!(link["link"]["preventsDownload"], false);
    assert!(link["link"]["webUrl"].as_str().unwrap().contains("/:"));
    assert_eq!(link["roles"], json!(["write"]));
    assert!(link["shareId"].is_string());
    assert!(link.get("grantedToV2").is_none() && link.get("grantedToIdentitiesV2").is_none());

    let after = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert_eq!(after.body["shared"]["scope"], "anonymous");
    assert_eq!(after.body["shared"]["owner"]["user"]["id"], json!(d.owner.id));
    assert_eq!(after.body["shared"]["sharedDateTime"], "2026-11-30T06:00:00Z");
    assert_eq!(after.body["eTag"], before.body["eTag"], "sharing leaves the eTag alone");
    assert_eq!(after.body["cTag"], before.body["cTag"], "and the cTag");
}

#[tokio::test]
async fn specific_people_links_and_direct_shares_name_members_guests_and_invitees() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 3);
    let file = private_nested_file(&sim, &d);
    let member = sim.handle.tenant().user(7).user_principal_name;
    let guest_upn = format!("lee_northwind.example#EXT#@{}", sim.handle.tenant().domain());

    inject_ok(
        &sim,
        json!([
            {"op": "secure_link_created", "drive": d.id, "item": file.id, "targets": [member, "dana@fabrikam.com"]},
            {"op": "share", "drive": d.id, "item": file.id, "access": "edit", "targets": [guest_upn, "kim@adatum.example"]}
        ]),
    )
    .await;

    let value = list(&sim, &token, &d.id, &file.id).await;
    assert_eq!(value.len(), 4, "owner, the link, two grants: {value:#?}");
    let link = value
        .iter()
        .find(|p| p["link"]["scope"] == "users")
        .expect("a specific-people link");
    let people = link["grantedToIdentitiesV2"].as_array().expect("grantedToIdentitiesV2");
    assert_eq!(people.len(), 2);
    assert_eq!(people[0]["user"]["email"], json!(member));
    assert_eq!(people[1]["siteUser"]["email"], "dana@fabrikam.com");
    let guest = value
        .iter()
        .find(|p| p["grantedToV2"]["user"]["email"] == "lee@northwind.example")
        .expect("the existing guest's grant");
    assert_eq!(guest["roles"], json!(["write"]));
    assert!(guest.get("invitation").is_none());
    let invited = value
        .iter()
        .find(|p| p["invitation"]["email"] == "kim@adatum.example")
        .expect("an invitation");
    assert_eq!(invited["invitation"]["signInRequired"], true);
    assert!(invited["grantedToV2"].get("user").is_none(), "not in the directory");
    let item = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert_eq!(item.body["shared"]["scope"], "users");

    let truth: Vec<SimPermission> = sim.handle.item_permissions(&d.id, &file.id);
    assert_eq!(truth.len(), 4);
    assert!(truth[0].is_owner());
    let ids: Vec<&str> = value.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(truth.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ids);
}

#[tokio::test]
async fn removed_links_and_revoked_shares_take_their_permissions_away() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 4);
    let file = private_nested_file(&sim, &d);
    let member = sim.handle.tenant().user(9).user_principal_name;

    inject_ok(
        &sim,
        json!([
            {"op": "company_link_created", "drive": d.id, "item": file.id},
            {"op": "share", "drive": d.id, "item": file.id, "targets": [member]}
        ]),
    )
    .await;
    let item = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert_eq!(item.body["shared"]["scope"], "organization", "the broadest scope wins");
    assert_eq!(list(&sim, &token, &d.id, &file.id).await.len(), 3);

    inject_ok(
        &sim,
        json!([
            {"op": "company_link_removed", "drive": d.id, "item": file.id},
            {"op": "sharing_revoked", "drive": d.id, "item": file.id, "targets": [member]}
        ]),
    )
    .await;

    let value = list(&sim, &token, &d.id, &file.id).await;
    assert_eq!(value.len(), 1, "only the owner left: {value:#?}");
    let item = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert!(item.body.get("shared").is_none());
}

#[tokio::test]
async fn unknown_and_deleted_items_answer_404_item_not_found() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 5);
    let file = private_nested_file(&sim, &d);
    let foreign = drive(&sim, 6);
    let alien = sim.handle.tenant().drive_items(&foreign.id).next().unwrap();

    let unknown = sim.get(&token, &permissions_path(&d.id, &alien.id)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&unknown), "itemNotFound");

    inject_ok(&sim, json!([{"op": "delete", "drive": d.id, "item": file.id}])).await;
    let gone = sim.get(&token, &permissions_path(&d.id, &file.id)).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&gone), "itemNotFound");
    assert!(sim.handle.item_permissions(&d.id, &file.id).is_empty());
}

#[tokio::test]
async fn permissions_are_listed_through_batch_and_counted_per_entry() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 8);
    let files: Vec<SimItem> = sim
        .handle
        .tenant()
        .drive_items(&d.id)
        .filter(|i| !i.is_folder)
        .take(3)
        .collect();
    let requests: Vec<Value> = files
        .iter()
        .enumerate()
        .map(|(n, f)| json!({"id": n.to_string(), "method": "GET", "url": permissions_path(&d.id, &f.id)}))
        .collect();
    sim.handle.reset_stats();

    let reply = sim.post_json(&token, "/$batch", &json!({"requests": requests})).await;

    assert_eq!(reply.status, StatusCode::OK);
    for r in reply.body["responses"].as_array().unwrap() {
        assert_eq!(r["status"], 200, "{r}");
        let n: usize = r["id"].as_str().unwrap().parse().unwrap();
        let expected = sim.handle.item_permissions(&d.id, &files[n].id);
        assert_eq!(r["body"]["value"].as_array().unwrap().len(), expected.len());
    }
    let stats = sim.handle.stats();
    assert_eq!(stats.permissions, 3);
    assert_eq!(stats.batch_inner, 3);
}

#[tokio::test]
async fn permission_requests_are_throttled_like_other_graph_requests() {
    let sim = start(SimConfig {
        faults: FaultConfig {
            throttle_rate: 1.0,
            retry_after_secs: (0.1, 0.2),
            ..FaultConfig::default()
        },
        ..config()
    })
    .await;
    let token = sim.token().await;
    let d = drive(&sim, 1);
    let file = private_nested_file(&sim, &d);

    let reply = sim.get(&token, &permissions_path(&d.id, &file.id)).await;

    assert!(
        reply.status == StatusCode::TOO_MANY_REQUESTS || reply.status == StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.status
    );
    assert!(reply.header("retry-after").is_some());
    assert_eq!(sim.handle.stats().permissions, 1, "a throttled request still counts");
}

#[tokio::test]
async fn deleting_without_a_write_role_is_403_access_denied_and_changes_nothing() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 2);
    let file = private_nested_file(&sim, &d);
    inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id}]),
    )
    .await;
    let link = sim.handle.item_permissions(&d.id, &file.id)[1].id.clone();

    let reply = delete(&sim, &token, &d.id, &file.id, &link).await;

    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(graph_error_code(&reply), "accessDenied");
    assert_eq!(sim.handle.item_permissions(&d.id, &file.id).len(), 2);
}

#[tokio::test]
async fn deleting_with_files_readwrite_removes_the_permission_and_the_facet_but_not_the_etag() {
    let sim = start(config()).await;
    let d = drive(&sim, 3);
    let file = private_nested_file(&sim, &d);
    inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id}]),
    )
    .await;
    let link = sim.handle.item_permissions(&d.id, &file.id)[1].id.clone();
    let token = token_with(&sim, &["Files.ReadWrite.All"]).await;
    let before = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert_eq!(before.body["shared"]["scope"], "anonymous");

    let reply = delete(&sim, &token, &d.id, &file.id, &link).await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.body, Value::Null, "no body");
    assert_eq!(list(&sim, &token, &d.id, &file.id).await.len(), 1);
    let after = sim.get(&token, &format!("/drives/{}/items/{}", d.id, file.id)).await;
    assert!(after.body.get("shared").is_none(), "{}", after.body);
    assert_eq!(after.body["eTag"], before.body["eTag"]);
    assert_eq!(sim.handle.stats().permissions_deleted, 1);

    let again = delete(&sim, &token, &d.id, &file.id, &link).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "gone now");
    assert_eq!(graph_error_code(&again), "itemNotFound");
}

#[tokio::test]
async fn deleting_the_owner_permission_answers_204_and_removes_nothing() {
    let sim = start(config()).await;
    let d = drive(&sim, 4);
    let file = private_nested_file(&sim, &d);
    let owner = sim.handle.item_permissions(&d.id, &file.id)[0].id.clone();
    let token = token_with(&sim, &["Sites.ReadWrite.All"]).await;

    let reply = delete(&sim, &token, &d.id, &file.id, &owner).await;

    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let value = list(&sim, &token, &d.id, &file.id).await;
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["roles"], json!(["owner"]));
    assert_eq!(sim.handle.stats().permissions_deleted, 0);
}

#[tokio::test]
async fn deleting_an_unknown_permission_or_on_a_missing_item_is_404() {
    let sim = start(config()).await;
    let d = drive(&sim, 5);
    let file = private_nested_file(&sim, &d);
    let token = token_with(&sim, &["Files.ReadWrite.All"]).await;

    let unknown = delete(&sim, &token, &d.id, &file.id, "aTowIy5mfG1lbWJlcnNoaXB8bm9ib2R5").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&unknown), "itemNotFound");

    inject_ok(&sim, json!([{"op": "delete", "drive": d.id, "item": file.id}])).await;
    let missing = delete(&sim, &token, &d.id, &file.id, "x").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deletions_work_inside_batch_and_are_refused_there_without_the_role() {
    let sim = start(config()).await;
    let d = drive(&sim, 6);
    let file = private_nested_file(&sim, &d);
    inject_ok(
        &sim,
        json!([{"op": "company_link_created", "drive": d.id, "item": file.id}]),
    )
    .await;
    let link = sim.handle.item_permissions(&d.id, &file.id)[1].id.clone();
    let url = format!("{}/{link}", permissions_path(&d.id, &file.id));
    let batch = json!({"requests": [{"id": "1", "method": "DELETE", "url": url}]});

    let read_only = sim.token().await;
    let refused = sim.post_json(&read_only, "/$batch", &batch).await;
    assert_eq!(refused.body["responses"][0]["status"], 403, "{}", refused.body);

    let writer = token_with(&sim, &["Files.ReadWrite.All"]).await;
    let done = sim.post_json(&writer, "/$batch", &batch).await;
    assert_eq!(done.body["responses"][0]["status"], 204, "{}", done.body);
    assert_eq!(sim.handle.item_permissions(&d.id, &file.id).len(), 1);
}

/// The items of one delta round from `link`, with `headers` on every page.
async fn delta_round(sim: &Sim, token: &str, link: &str, headers: &[(&str, &str)]) -> (Vec<Value>, String) {
    let mut items = Vec::new();
    let mut url = sim.url(link);
    loop {
        let page = sim.get_with(token, &url, headers).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        items.extend(page.body["value"].as_array().unwrap().iter().cloned());
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return (items, page.body["@odata.deltaLink"].as_str().unwrap().to_owned()),
        }
    }
}

async fn latest_link(sim: &Sim, token: &str, drive: &str) -> String {
    let reply = sim
        .get(token, &format!("/drives/{drive}/root/delta?token=latest"))
        .await;
    reply.body["@odata.deltaLink"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_sharing_change_is_not_reported_by_plain_delta() {
    let sim = start(config()).await;
    let token = token_with(&sim, &["Sites.FullControl.All"]).await;
    let d = drive(&sim, 7);
    let file = private_nested_file(&sim, &d);
    let link = latest_link(&sim, &token, &d.id).await;

    inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id}]),
    )
    .await;

    let (items, _) = delta_round(&sim, &token, &link, &[]).await;
    assert!(items.is_empty(), "no content or metadata changed: {items:#?}");
}

#[tokio::test]
async fn delta_with_the_sharing_preference_and_full_control_reports_annotated_changes() {
    let sim = start(config()).await;
    let token = token_with(&sim, &["Sites.FullControl.All"]).await;
    let d = drive(&sim, 8);
    let file = private_nested_file(&sim, &d);
    let link = latest_link(&sim, &token, &d.id).await;
    let prefer = [("Prefer", SHARING_PREFER)];

    inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id}]),
    )
    .await;
    let (items, next) = delta_round(&sim, &token, &link, &prefer).await;

    let changed = items
        .iter()
        .find(|i| i["id"] == json!(file.id))
        .expect("the shared file");
    assert_eq!(changed["@microsoft.graph.sharedChanged"], "True");
    assert_eq!(changed["shared"]["scope"], "anonymous");
    assert_eq!(changed["eTag"], json!(file.etag), "eTag unchanged");
    let parent = items
        .iter()
        .position(|i| i["id"] == json!(file.parent_id))
        .expect("its parent folder too");
    let at = items.iter().position(|i| i["id"] == json!(file.id)).unwrap();
    assert!(parent < at, "parents first");
    assert!(
        items[parent].get("@microsoft.graph.sharedChanged").is_none(),
        "only the item is annotated"
    );

    // A deletion over Graph is a sharing change too.
    let permission = sim.handle.item_permissions(&d.id, &file.id)[1].id.clone();
    let writer = token_with(&sim, &["Sites.FullControl.All", "Files.ReadWrite.All"]).await;
    assert_eq!(
        delete(&sim, &writer, &d.id, &file.id, &permission).await.status,
        StatusCode::NO_CONTENT
    );
    let (items, _) = delta_round(&sim, &writer, &next, &prefer).await;
    let changed = items
        .iter()
        .find(|i| i["id"] == json!(file.id))
        .expect("reported again");
    assert_eq!(changed["@microsoft.graph.sharedChanged"], "True");
    assert!(changed.get("shared").is_none(), "no longer shared");
}

#[tokio::test]
async fn the_sharing_preference_is_ignored_without_full_control_or_without_all_three_values() {
    let sim = start(config()).await;
    let d = drive(&sim, 9);
    let file = private_nested_file(&sim, &d);
    let plain = sim.token().await;
    let full = token_with(&sim, &["Sites.FullControl.All"]).await;
    let link = latest_link(&sim, &plain, &d.id).await;

    inject_ok(
        &sim,
        json!([{"op": "share", "drive": d.id, "item": file.id, "targets": ["dana@fabrikam.com"]}]),
    )
    .await;

    let (without_role, _) = delta_round(&sim, &plain, &link, &[("Prefer", SHARING_PREFER)]).await;
    assert!(without_role.is_empty(), "{without_role:#?}");
    let (partial, _) = delta_round(&sim, &full, &link, &[("Prefer", "deltashowsharingchanges")]).await;
    assert!(partial.is_empty(), "{partial:#?}");
    let (honoured, _) = delta_round(&sim, &full, &link, &[("Prefer", SHARING_PREFER)]).await;
    assert!(honoured.iter().any(|i| i["id"] == json!(file.id)));
}

#[tokio::test]
async fn a_full_delta_carries_the_shared_facet_of_every_shared_item() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let mut seen = 0;
    for user in 0..10 {
        let d = drive(&sim, user);
        let (items, _) = sim.delta_all(&token, &format!("/drives/{}/root/delta", d.id)).await;
        let expected = sim.handle.shared_items(&d.id);
        for item in &items {
            let id = item["id"].as_str().unwrap();
            match expected.iter().find(|(i, _)| i.id == id) {
                Some((_, permissions)) => {
                    seen += 1;
                    let broadest = if permissions
                        .iter()
                        .any(|p| p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Anonymous))
                    {
                        "anonymous"
                    } else if permissions
                        .iter()
                        .any(|p| p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Organization))
                    {
                        "organization"
                    } else {
                        "users"
                    };
                    assert_eq!(item["shared"]["scope"], broadest, "{item}");
                    assert!(item["shared"]["sharedDateTime"].is_string());
                }
                None => assert!(item.get("shared").is_none(), "{item}"),
            }
            assert!(item.get("@microsoft.graph.sharedChanged").is_none());
        }
    }
    assert!(seen > 0, "some seeded shares in ten drives");
}

#[tokio::test]
async fn one_permission_can_be_read_by_its_id() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let d = drive(&sim, 10);
    let file = private_nested_file(&sim, &d);
    inject_ok(
        &sim,
        json!([{"op": "secure_link_created", "drive": d.id, "item": file.id,
                            "targets": ["robin@tailspin.example"]}]),
    )
    .await;
    let id = sim.handle.item_permissions(&d.id, &file.id)[1].id.clone();

    let one = sim
        .get(&token, &format!("{}/{id}", permissions_path(&d.id, &file.id)))
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["id"], json!(id));
    assert_eq!(one.body["link"]["scope"], "users");
    assert!(
        one.body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/permissions/$entity")
    );

    let none = sim
        .get(&token, &format!("{}/nope", permissions_path(&d.id, &file.id)))
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&none), "itemNotFound");
}

#[tokio::test]
async fn selected_delta_keeps_the_shared_facet_and_the_annotation_and_timestamp_rounds_report_sharing() {
    let sim = start(config()).await;
    let token = token_with(&sim, &["Sites.FullControl.All"]).await;
    let d = drive(&sim, 11);
    let file = private_nested_file(&sim, &d);
    let link = latest_link(&sim, &token, &d.id).await;
    let prefer = [("Prefer", SHARING_PREFER)];
    inject_ok(
        &sim,
        json!([{"op": "anonymous_link_created", "drive": d.id, "item": file.id, "at": "2026-11-30T08:00:00Z"}]),
    )
    .await;

    let selected = format!("{link}&$select=id,name,shared");
    let (items, _) = delta_round(&sim, &token, &selected, &prefer).await;
    let item = items.iter().find(|i| i["id"] == json!(file.id)).expect("reported");
    assert_eq!(item["shared"]["scope"], "anonymous");
    assert_eq!(item["@microsoft.graph.sharedChanged"], "True");
    assert!(item.get("eTag").is_none(), "$select applies");

    let since = format!("/drives/{}/root/delta?token=2026-11-30T07:00:00Z", d.id);
    let (items, _) = delta_round(&sim, &token, &since, &prefer).await;
    let item = items
        .iter()
        .find(|i| i["id"] == json!(file.id))
        .expect("reported since then");
    assert_eq!(item["@microsoft.graph.sharedChanged"], "True");
}
