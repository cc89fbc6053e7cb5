//! Item permissions against m365-sim over real HTTP: one item, many through `$batch` (with inner
//! throttling), deletion with and without the write permission, and the sharing fields delta
//! items carry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use filetrail_core::RetryClass;
use filetrail_core::model::{DeltaItem, DeltaNext};
use filetrail_m365::permissions::{PERMISSION_INHERITED, PERMISSION_NOT_FOUND, PERMISSIONS_WRITE};
use filetrail_m365::{
    ClientSecret, Cloud, Credentials, GranteeKind, GraphClient, HttpTimeouts, LinkKind, LinkScope, RetryPolicy,
    http_client,
};
use serde_json::json;
use support::{Reply, serve, token_reply};

use m365_sim::{
    Activity, ActivityKind, ActivityRequest, DEFAULT_GRAPH_ROLES, FaultConfig, FilesPerDrive, SimConfig, SimHandle,
    SimItem,
};

const CONNECTION: &str = "sim-tenant";

fn config() -> SimConfig {
    SimConfig {
        users: 12,
        no_drive_ratio: 0.0,
        team_sites: 0,
        files_per_drive: FilesPerDrive::Fixed(60),
        delta_repeat_rate: 0.0,
        ..SimConfig::with_seed(5)
    }
}

fn client(sim: &SimHandle) -> GraphClient {
    let cloud = Cloud::custom(&sim.login_url(), &sim.graph_url(), &sim.login_url()).unwrap();
    let credentials = Credentials {
        tenant_id: sim.tenant_id().to_owned(),
        client_id: sim.client_id().to_owned(),
        secret: ClientSecret::new(sim.client_secret()),
    };
    let http = http_client(HttpTimeouts::default()).unwrap();
    GraphClient::connect(http, &cloud, credentials, CONNECTION, RetryPolicy::fast()).unwrap()
}

/// Grants the app these roles on top of the defaults (an admin consenting), for clients built
/// from now on.
fn grant(sim: &SimHandle, extra: &[&str]) {
    let mut roles: Vec<&str> = DEFAULT_GRAPH_ROLES.to_vec();
    roles.extend_from_slice(extra);
    sim.set_graph_roles(&roles);
}

fn drive(sim: &SimHandle, user: u64) -> String {
    sim.tenant().drive_of_user(user).unwrap().id
}

/// Unshared files of a drive.
fn private_files(sim: &SimHandle, drive: &str, n: usize) -> Vec<SimItem> {
    sim.tenant()
        .drive_items(drive)
        .filter(|i| !i.is_folder && sim.item_permissions(drive, &i.id).len() == 1)
        .take(n)
        .collect()
}

fn inject(sim: &SimHandle, activities: Vec<Activity>) {
    sim.inject_activity(&ActivityRequest {
        operations: activities,
        ..ActivityRequest::default()
    })
    .unwrap();
}

#[tokio::test]
async fn lists_owner_links_members_guests_and_invitations_like_the_simulator_holds_them() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 1);
    let file = private_files(&sim, &d, 1).remove(0);
    let member = sim.tenant().user(4).user_principal_name;
    let mut anonymous = Activity::new(ActivityKind::AnonymousLinkCreated, &d).item(&file.id);
    anonymous.access = m365_sim::AccessLevel::Edit;
    inject(
        &sim,
        vec![
            anonymous,
            Activity::new(ActivityKind::SecureLinkCreated, &d)
                .item(&file.id)
                .targets(&[&member]),
            Activity::new(ActivityKind::Share, &d)
                .item(&file.id)
                .targets(&["kim@adatum.example"]),
        ],
    );
    let graph = client(&sim);

    let permissions = graph
        .item_permissions(&d, &file.id)
        .await
        .unwrap()
        .expect("the item exists");

    let truth = sim.item_permissions(&d, &file.id);
    assert_eq!(
        permissions.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        truth.iter().map(|p| p.id.as_str()).collect::<Vec<_>>()
    );
    assert!(permissions[0].is_owner());
    assert_eq!(permissions[0].grantees[0].kind, GranteeKind::User);
    assert_eq!(
        permissions[0].grantees[0].email.as_deref(),
        sim.tenant().drive_of_user(1).unwrap().owner.email.as_deref()
    );
    let anyone = permissions
        .iter()
        .find(|p| p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Anonymous))
        .expect("the anonymous link");
    assert_eq!(anyone.link.as_ref().unwrap().kind, LinkKind::Edit);
    assert!(anyone.link.as_ref().unwrap().web_url.is_some());
    assert!(anyone.grantees.is_empty());
    let people = permissions
        .iter()
        .find(|p| p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Users))
        .expect("the specific-people link");
    assert_eq!(people.grantees[0].email.as_deref(), Some(member.as_str()));
    let invited = permissions
        .iter()
        .find(|p| p.invitation_email.as_deref() == Some("kim@adatum.example"))
        .expect("the invitation");
    assert_eq!(invited.grantees[0].kind, GranteeKind::SiteUser, "not in the directory");
    assert!(permissions.iter().all(|p| !p.inherited));
    assert_eq!(sim.stats().permissions, 1);
}

#[tokio::test]
async fn an_item_that_no_longer_exists_has_no_permissions_rather_than_an_error() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 2);
    let file = private_files(&sim, &d, 1).remove(0);
    inject(&sim, vec![Activity::new(ActivityKind::Delete, &d).item(&file.id)]);

    let answer = client(&sim).item_permissions(&d, &file.id).await.unwrap();

    assert_eq!(answer, None);
}

#[tokio::test]
async fn many_items_come_back_in_order_through_batches_of_twenty() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 3);
    let files: Vec<SimItem> = sim.tenant().drive_items(&d).filter(|i| !i.is_folder).take(45).collect();
    assert_eq!(files.len(), 45);
    inject(&sim, vec![Activity::new(ActivityKind::Delete, &d).item(&files[7].id)]);
    let items: Vec<(String, String)> = files.iter().map(|f| (d.clone(), f.id.clone())).collect();
    sim.reset_stats();

    let answers = client(&sim).items_permissions(&items).await.unwrap();

    assert_eq!(answers.len(), 45);
    for (n, (key, permissions)) in answers.iter().enumerate() {
        assert_eq!(key, &items[n], "in the given order");
        if n == 7 {
            assert_eq!(permissions, &None, "deleted");
        } else {
            let ids: Vec<String> = permissions.as_ref().unwrap().iter().map(|p| p.id.clone()).collect();
            let truth: Vec<String> = sim.item_permissions(&d, &key.1).into_iter().map(|p| p.id).collect();
            assert_eq!(ids, truth);
        }
    }
    let stats = sim.stats();
    assert_eq!(stats.batch, 3, "45 requests in envelopes of 20");
    assert_eq!(stats.permissions, 45);
}

#[tokio::test]
async fn throttled_batch_entries_are_sent_again_until_every_item_is_answered() {
    let sim = m365_sim::spawn(SimConfig {
        faults: FaultConfig {
            batch_inner_throttle_rate: 0.4,
            retry_after_secs: (0.01, 0.05),
            ..FaultConfig::default()
        },
        ..config()
    })
    .await
    .unwrap();
    let d = drive(&sim, 4);
    let items: Vec<(String, String)> = sim
        .tenant()
        .drive_items(&d)
        .filter(|i| !i.is_folder)
        .take(30)
        .map(|i| (d.clone(), i.id))
        .collect();
    let graph = client(&sim);

    let answers = graph.items_permissions(&items).await.unwrap();

    assert_eq!(answers.len(), 30);
    assert!(answers.iter().all(|(_, p)| p.is_some()));
    assert!(
        sim.stats().faults.batch_inner_throttled > 0,
        "some entries were throttled"
    );
    assert!(graph.throttled() > 0 && graph.retries() > 0);
}

#[tokio::test]
async fn deleting_without_files_readwrite_fails_with_a_fix_naming_it() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 5);
    let file = private_files(&sim, &d, 1).remove(0);
    inject(
        &sim,
        vec![Activity::new(ActivityKind::AnonymousLinkCreated, &d).item(&file.id)],
    );
    let link = sim.item_permissions(&d, &file.id)[1].id.clone();

    let error = client(&sim).delete_permission(&d, &file.id, &link).await.unwrap_err();

    assert_eq!(error.code(), "accessDenied");
    assert_eq!(error.retry_class(), RetryClass::Terminal);
    let fix = error.fix().expect("a fix");
    assert!(fix.contains(PERMISSIONS_WRITE), "{fix}");
    assert!(fix.contains("Grant admin consent"), "{fix}");
    assert_eq!(sim.item_permissions(&d, &file.id).len(), 2, "nothing removed");
}

#[tokio::test]
async fn deleting_with_files_readwrite_removes_the_permission_and_a_second_time_says_it_is_gone() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 6);
    let file = private_files(&sim, &d, 1).remove(0);
    inject(
        &sim,
        vec![
            Activity::new(ActivityKind::Share, &d)
                .item(&file.id)
                .targets(&["dana@fabrikam.com"]),
        ],
    );
    let grant_id = sim.item_permissions(&d, &file.id)[1].id.clone();
    grant(&sim, &[PERMISSIONS_WRITE]);
    let graph = client(&sim);

    graph.delete_permission(&d, &file.id, &grant_id).await.unwrap();

    assert_eq!(sim.item_permissions(&d, &file.id).len(), 1, "only the owner left");
    let again = graph.delete_permission(&d, &file.id, &grant_id).await.unwrap_err();
    assert_eq!(again.code(), PERMISSION_NOT_FOUND);
    assert!(again.fix().unwrap().contains(&grant_id));
    assert_eq!(again.retry_class(), RetryClass::Terminal);
}

/// Walks delta from `link` (a full walk when `None`) to its delta link.
async fn walk(graph: &GraphClient, drive: &str, link: Option<String>) -> (Vec<DeltaItem>, String) {
    let mut items = Vec::new();
    let mut next = link;
    loop {
        let page = graph.delta_page(drive, next.as_deref()).await.unwrap();
        items.extend(page.items);
        match page.next {
            DeltaNext::NextLink(l) => next = Some(l),
            DeltaNext::DeltaLink(l) => return (items, l),
        }
    }
}

#[tokio::test]
async fn delta_items_carry_their_shared_scope() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let mut shared = 0;
    for user in 0..6 {
        let d = drive(&sim, user);
        let (items, _) = walk(&graph, &d, None).await;
        let truth = sim.shared_items(&d);
        for item in items {
            let expected = truth.iter().any(|(i, _)| i.id == item.id);
            assert_eq!(item.shared_scope.is_some(), expected, "{item:?}");
            assert!(!item.sharing_changed, "a full walk reports no sharing changes");
            shared += usize::from(expected);
        }
    }
    assert!(shared > 0, "some seeded shares");
}

#[tokio::test]
async fn sharing_changes_are_annotated_only_for_an_app_with_full_control() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let d = drive(&sim, 7);
    let files = private_files(&sim, &d, 2);
    let read_only = client(&sim);
    let (_, read_only_link) = walk(&read_only, &d, None).await;
    grant(&sim, &["Sites.FullControl.All"]);
    let full = client(&sim);
    let (_, full_link) = walk(&full, &d, None).await;

    inject(
        &sim,
        vec![Activity::new(ActivityKind::CompanyLinkCreated, &d).item(&files[0].id)],
    );

    let (plain, _) = walk(&read_only, &d, Some(read_only_link)).await;
    assert!(
        plain.is_empty(),
        "the Prefer header is ignored without the role: {plain:?}"
    );
    let (changes, _) = walk(&full, &d, Some(full_link)).await;
    let item = changes.iter().find(|i| i.id == files[0].id).expect("reported");
    assert!(item.sharing_changed);
    assert_eq!(item.shared_scope.as_deref(), Some("organization"));
    assert!(
        changes.iter().filter(|i| i.sharing_changed).count() == 1,
        "only the item is annotated"
    );
}

/// A client of a scripted server (for what the simulator never answers).
fn scripted_client(base: &str) -> GraphClient {
    let cloud = Cloud::custom(base, &format!("{base}/v1.0"), base).unwrap();
    let credentials = Credentials {
        tenant_id: "contoso".to_owned(),
        client_id: "app".to_owned(),
        secret: ClientSecret::new("s"),
    };
    GraphClient::connect(
        http_client(HttpTimeouts::default()).unwrap(),
        &cloud,
        credentials,
        CONNECTION,
        RetryPolicy::fast(),
    )
    .unwrap()
}

#[tokio::test]
async fn unfamiliar_payloads_parse_and_next_links_are_followed() {
    let server = serve(|r, _| {
        if r.target.contains("/oauth2/") {
            return token_reply("graph-token");
        }
        if r.target.contains("skiptoken") {
            return Reply::json(
                200,
                json!({"value": [
                    {"id": "g", "roles": ["read"], "grantedToV2": {"group": {"id": "grp", "displayName": "Finance"}}},
                    {"roles": ["read"], "comment": "no id: skipped"}
                ]}),
            );
        }
        Reply::json(
            200,
            json!({
                "@odata.nextLink": format!(
                    "http://{}/v1.0/drives/d/items/i/permissions?$skiptoken=2",
                    r.header("host").unwrap()
                ),
                "value": [
                    {"id": "o", "roles": ["owner"], "grantedTo": {"user": {"id": "u1", "displayName": "Ada"}}},
                    {"id": "l", "roles": ["read"], "link": {"type": "blocksDownload", "scope": "existingAccess"},
                     "inheritedFrom": {"id": "01PARENT", "driveId": "d"}, "newFacet": [1, 2, 3]},
                    {"id": "s", "roles": ["write"], "grantedToIdentitiesV2": [
                        {"siteGroup": {"id": "5", "displayName": "Visitors", "loginName": "Visitors"}},
                        {"siteUser": {"id": "9", "displayName": "x@y.example", "loginName": "i:0#.f|membership|urn:spo:guest#x@y.example"}}
                    ], "expirationDateTime": "2030-01-01T00:00:00Z"}
                ]
            }),
        )
    })
    .await;

    let permissions = scripted_client(&server.base)
        .item_permissions("d", "i")
        .await
        .unwrap()
        .unwrap();

    let ids: Vec<&str> = permissions.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["o", "l", "s", "g"], "both pages, the entry without id skipped");
    assert_eq!(
        server.seen("/v1.0/drives/d/items/i/permissions?$skiptoken=2").len(),
        1,
        "the next link, used verbatim"
    );
    assert!(permissions[0].is_owner());
    assert_eq!(permissions[0].grantees[0].display_name.as_deref(), Some("Ada"));
    let link = permissions[1].link.as_ref().unwrap();
    assert_eq!(link.kind, LinkKind::Other("blocksdownload".into()));
    assert_eq!(link.scope, LinkScope::Other("existingaccess".into()));
    assert!(permissions[1].inherited);
    assert_eq!(permissions[2].grantees[0].kind, GranteeKind::SiteGroup);
    assert_eq!(permissions[2].grantees[1].kind, GranteeKind::SiteUser);
    assert!(permissions[2].expires_at.is_some());
    assert_eq!(permissions[3].grantees[0].kind, GranteeKind::Group);
}

#[tokio::test]
async fn an_inherited_permission_refusal_says_where_to_remove_it() {
    let server = serve(|r, _| {
        if r.target.contains("/oauth2/") {
            return token_reply("graph-token");
        }
        Reply::json(
            400,
            json!({"error": {"code": "invalidRequest", "message": "Cannot delete an inherited permission."}}),
        )
    })
    .await;

    let error = scripted_client(&server.base)
        .delete_permission("d", "i", "p")
        .await
        .unwrap_err();

    assert_eq!(error.code(), PERMISSION_INHERITED);
    assert!(error.fix().unwrap().contains("folder"), "{error}");
    assert_eq!(error.retry_class(), RetryClass::Terminal);
    let sent = server.seen("/v1.0/drives/d/items/i/permissions/p");
    assert_eq!(sent.len(), 1, "not retried");
    assert_eq!(sent[0].method, "DELETE");
}

#[tokio::test]
async fn delta_requests_ask_for_sharing_changes_and_select_the_shared_facet() {
    let server = serve(|r, _| {
        if r.target.contains("/oauth2/") {
            return token_reply("graph-token");
        }
        Reply::json(
            200,
            json!({"@odata.deltaLink": "/v1.0/drives/d/root/delta?token=next", "value": [
                {"id": "f", "name": "a.docx", "file": {}, "shared": {"scope": "anonymous", "owner": {"user": {"id": "u"}}},
                 "@microsoft.graph.sharedChanged": "True"},
                {"id": "g", "name": "b.docx", "file": {}, "shared": {}}
            ]}),
        )
    })
    .await;

    let page = scripted_client(&server.base).delta_page("d", None).await.unwrap();

    let sent = server.seen("/v1.0/drives/d/root/delta");
    assert_eq!(
        sent[0].header("prefer"),
        Some("deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges")
    );
    assert!(sent[0].target.contains("shared"), "{}", sent[0].target);
    assert_eq!(page.items[0].shared_scope.as_deref(), Some("anonymous"));
    assert!(page.items[0].sharing_changed);
    assert_eq!(page.items[1].shared_scope, None, "an empty facet names no scope");
    assert!(!page.items[1].sharing_changed);
}
