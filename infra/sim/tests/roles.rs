//! Application roles: which permissions the app holds, how Graph refuses what they do not cover,
//! and the per-method request log, over HTTP.
#![allow(clippy::expect_used, clippy::unwrap_used)] // helpers outside #[test] fns panic on purpose

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Reply, Sim, graph_error_code, start};
use m365_sim::{DEFAULT_GRAPH_ROLES, DEFAULT_MANAGE_ROLES, FilesPerDrive, SimConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

const MANAGE_SCOPE: &str = "https://manage.office.com/.default";

async fn small_sim() -> Sim {
    start(SimConfig {
        users: 6,
        groups: 3,
        files_per_drive: FilesPerDrive::Fixed(3),
        no_drive_ratio: 0.0,
        ..SimConfig::default()
    })
    .await
}

/// The claims of a token (its middle part, base64url JSON).
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("claims part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON claims")
}

impl Sim {
    async fn token_for(&self, scope: &str) -> String {
        let reply = self
            .token_request(
                self.handle.tenant_id(),
                &[
                    ("client_id", self.handle.client_id()),
                    ("client_secret", self.handle.client_secret()),
                    ("scope", scope),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "token: {}", reply.body);
        reply.body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// A user id and that user's drive id, read with the default roles.
    async fn user_and_drive(&self) -> (String, String) {
        let token = self.token().await;
        let users = self.get(&token, "/users?$top=1&$select=id").await;
        let user = users.body["value"][0]["id"].as_str().expect("a user").to_owned();
        let drive = self.get(&token, &format!("/users/{user}/drive")).await;
        assert_eq!(drive.status, StatusCode::OK, "{}", drive.body);
        (user, drive.body["id"].as_str().expect("drive id").to_owned())
    }

    async fn send(&self, method: reqwest::Method, token: &str, path: &str) -> Reply {
        let resp = self
            .http
            .request(method, self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        common::read(resp).await
    }

    async fn post_control(&self, body: &Value) -> Reply {
        let resp = self
            .http
            .post(format!("{}/_sim/auth/roles", self.handle.base_url()))
            .json(body)
            .send()
            .await
            .expect("control sent");
        common::read(resp).await
    }
}

fn assert_directory_denied(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(graph_error_code(reply), "Authorization_RequestDenied");
    assert_eq!(
        reply.body["error"]["message"],
        "Insufficient privileges to complete the operation."
    );
}

fn assert_files_denied(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(graph_error_code(reply), "accessDenied");
}

#[tokio::test]
async fn default_tokens_carry_the_read_only_roles_an_admin_consented() {
    let sim = small_sim().await;
    let graph = claims(&sim.token().await);
    let roles: Vec<&str> = graph["roles"]
        .as_array()
        .expect("roles claim")
        .iter()
        .map(|r| r.as_str().expect("role name"))
        .collect();
    assert_eq!(roles, DEFAULT_GRAPH_ROLES);
    for needed in ["Directory.Read.All", "Files.Read.All", "Mail.Read"] {
        assert!(roles.contains(&needed), "{needed} in {roles:?}");
    }
    assert!(
        roles.iter().all(|r| !r.contains("Write") && !r.contains("FullControl")),
        "no write role by default: {roles:?}"
    );
    let manage = claims(&sim.token_for(MANAGE_SCOPE).await);
    assert_eq!(manage["roles"], json!(DEFAULT_MANAGE_ROLES));
    assert_eq!(sim.handle.graph_roles(), DEFAULT_GRAPH_ROLES);
    assert_eq!(sim.handle.manage_roles(), DEFAULT_MANAGE_ROLES);
}

#[tokio::test]
async fn without_a_directory_role_users_and_groups_are_authorization_request_denied() {
    let sim = small_sim().await;
    let (user, _) = sim.user_and_drive().await;
    sim.handle.set_graph_roles(&["Files.Read.All"]);
    let token = sim.token().await;

    assert_directory_denied(&sim.get(&token, "/users?$top=1&$select=id").await);
    assert_directory_denied(&sim.get(&token, &format!("/users/{user}")).await);
    assert_directory_denied(&sim.get(&token, "/groups").await);
    let drive = sim.get(&token, &format!("/users/{user}/drive")).await;
    assert_eq!(drive.status, StatusCode::OK, "Files.Read.All still reads drives");
    assert_eq!(sim.handle.stats().forbidden, 3);
}

#[tokio::test]
async fn group_member_read_all_reads_groups_and_members_but_not_users() {
    let sim = small_sim().await;
    let (user, _) = sim.user_and_drive().await;
    let groups = sim.get(&sim.token().await, "/groups").await;
    let group = groups.body["value"][0]["id"].as_str().expect("a group").to_owned();
    sim.handle.set_graph_roles(&["GroupMember.Read.All"]);
    let token = sim.token().await;

    assert_eq!(sim.get(&token, "/groups").await.status, StatusCode::OK);
    let members = sim.get(&token, &format!("/groups/{group}/transitiveMembers")).await;
    assert_eq!(members.status, StatusCode::OK, "{}", members.body);
    assert_directory_denied(&sim.get(&token, &format!("/users/{user}")).await);

    sim.handle.set_graph_roles(&["User.Read.All"]);
    let token = sim.token().await;
    assert_eq!(sim.get(&token, "/users").await.status, StatusCode::OK);
    assert_directory_denied(&sim.get(&token, &format!("/groups/{group}/transitiveMembers")).await);
}

#[tokio::test]
async fn without_a_files_role_drives_delta_and_content_are_access_denied() {
    let sim = small_sim().await;
    let (user, drive) = sim.user_and_drive().await;
    let (items, _) = sim
        .delta_all(&sim.token().await, &format!("/drives/{drive}/root/delta"))
        .await;
    let file = items
        .iter()
        .find(|i| i.get("file").is_some())
        .and_then(|i| i["id"].as_str())
        .expect("a file")
        .to_owned();
    sim.handle.set_graph_roles(&["Directory.Read.All", "Mail.Read"]);
    let token = sim.token().await;

    assert_files_denied(&sim.get(&token, &format!("/users/{user}/drive")).await);
    assert_files_denied(&sim.get(&token, &format!("/drives/{drive}")).await);
    assert_files_denied(&sim.get(&token, &format!("/drives/{drive}/root/delta")).await);
    assert_files_denied(&sim.get(&token, &format!("/drives/{drive}/items/{file}")).await);
    assert_files_denied(&sim.get(&token, &format!("/drives/{drive}/items/{file}/content")).await);
    assert_eq!(sim.get(&token, "/users").await.status, StatusCode::OK);

    for role in ["Sites.Read.All", "Files.ReadWrite.All"] {
        sim.handle.set_graph_roles(&[role]);
        let token = sim.token().await;
        let reply = sim.get(&token, &format!("/drives/{drive}/root/delta")).await;
        assert_eq!(reply.status, StatusCode::OK, "{role} reads delta");
    }
}

#[tokio::test]
async fn a_token_without_any_role_gets_no_roles_claim_and_the_scp_or_roles_message() {
    let sim = small_sim().await;
    let (_, drive) = sim.user_and_drive().await;
    sim.handle.set_graph_roles(&[]);
    let token = sim.token().await;
    assert!(claims(&token).get("roles").is_none(), "no roles claim at all");
    let reply = sim.get(&token, &format!("/drives/{drive}")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(
        reply.body["error"]["message"],
        "Either scp or roles claim need to be present in the token."
    );
    assert_directory_denied(&sim.get(&token, "/users").await);
}

#[tokio::test]
async fn changing_drive_items_needs_a_write_role_which_the_default_grant_lacks() {
    let sim = small_sim().await;
    let (_, drive) = sim.user_and_drive().await;
    let token = sim.token().await;
    let path = format!("/drives/{drive}/items/some-item/permissions/some-permission");
    assert_files_denied(&sim.send(reqwest::Method::DELETE, &token, &path).await);

    sim.handle.set_graph_roles(&["Files.ReadWrite.All"]);
    let token = sim.token().await;
    let reply = sim.send(reqwest::Method::DELETE, &token, &path).await;
    assert_ne!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
}

#[tokio::test]
async fn roles_are_fixed_in_a_token_when_it_is_issued() {
    let sim = small_sim().await;
    let before = sim.token().await;
    sim.handle.set_graph_roles(&["Files.Read.All"]);
    let after = sim.token().await;
    assert_eq!(sim.get(&before, "/users").await.status, StatusCode::OK);
    assert_directory_denied(&sim.get(&after, "/users").await);
    sim.handle.reset_roles();
    assert_eq!(sim.get(&sim.token().await, "/users").await.status, StatusCode::OK);
}

#[tokio::test]
async fn inside_batch_the_inner_responses_carry_the_403_and_the_envelope_stays_200() {
    let sim = small_sim().await;
    let (user, _) = sim.user_and_drive().await;
    sim.handle.set_graph_roles(&["Directory.Read.All"]);
    let token = sim.token().await;
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/users?$top=1"},
        {"id": "2", "method": "GET", "url": format!("/users/{user}/drive")},
    ]});
    let reply = sim.post_json(&token, "/$batch", &batch).await;
    assert_eq!(reply.status, StatusCode::OK);
    let responses = reply.body["responses"].as_array().expect("responses");
    let by_id = |id: &str| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .expect("response by id")
            .clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    let denied = by_id("2");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["body"]["error"]["code"], "accessDenied");

    let stats = sim.handle.stats();
    assert_eq!(stats.forbidden, 1);
    let inner_drive = stats
        .graph_requests
        .iter()
        .find(|r| r.in_batch && r.kind == "drive")
        .expect("inner drive request recorded");
    assert_eq!((inner_drive.method.as_str(), inner_drive.forbidden), ("GET", 1));
}

#[tokio::test]
async fn the_request_log_lists_every_non_get_graph_request_by_method_and_kind() {
    let sim = small_sim().await;
    let token = sim.token().await;
    sim.handle.reset_stats();
    sim.get(&token, "/users").await;
    let batch = json!({"requests": [{"id": "a", "method": "GET", "url": "/groups"}]});
    sim.post_json(&token, "/$batch", &batch).await;
    let refused = sim.post_json(&token, "/users", &json!({})).await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);

    let stats = sim.handle.stats();
    let non_get: Vec<(String, String, bool)> = stats
        .non_get_graph_requests()
        .iter()
        .map(|r| (r.method.clone(), r.kind.clone(), r.in_batch))
        .collect();
    assert_eq!(
        non_get,
        vec![
            ("POST".to_owned(), "batch".to_owned(), false),
            ("POST".to_owned(), "users".to_owned(), false),
        ]
    );
    assert!(
        stats
            .graph_requests
            .iter()
            .any(|r| r.method == "GET" && r.kind == "groups" && r.in_batch && r.count == 1)
    );
    sim.handle.reset_stats();
    assert!(sim.handle.stats().graph_requests.is_empty());
}

#[tokio::test]
async fn the_http_control_sets_and_reads_the_roles_of_each_resource() {
    let sim = small_sim().await;
    let set = sim
        .post_control(&json!({"graph": ["Files.Read.All"], "manage": []}))
        .await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.body);
    assert_eq!(set.body, json!({"graph": ["Files.Read.All"], "manage": []}));
    assert_directory_denied(&sim.get(&sim.token().await, "/users").await);

    // Without ActivityFeed.Read the Management API refuses with AF10001.
    let manage = sim.token_for(MANAGE_SCOPE).await;
    assert!(claims(&manage).get("roles").is_none());
    let feed = format!("{}/subscriptions/list", sim.handle.audit().feed_url());
    let resp = sim.http.get(feed).bearer_auth(&manage).send().await.unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "AF10001");
    assert!(!sim.handle.audit().config().activity_feed_read_granted);

    // The existing toggle still grants the one role.
    sim.handle.audit().set_activity_feed_read_granted(true);
    assert_eq!(sim.handle.manage_roles(), ["ActivityFeed.Read"]);

    // A partial body keeps the other resource; "default" restores the default grant.
    let set = sim.post_control(&json!({"graph": "default"})).await;
    assert_eq!(set.body["graph"], json!(DEFAULT_GRAPH_ROLES));
    assert_eq!(set.body["manage"], json!(["ActivityFeed.Read"]));
    let get = sim
        .http
        .get(format!("{}/_sim/auth/roles", sim.handle.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.json::<Value>().await.unwrap(), set.body);

    for bad in [json!({"graph": "Files.Read.All"}), json!({"drives": []}), json!([1])] {
        let reply = sim.post_control(&bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}
