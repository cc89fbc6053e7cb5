//! The exact requests of the scoping lookups, against a scripted loopback server: `$filter`
//! escaping and encoding, next links followed verbatim, and `ConsistencyLevel` on every page.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use filetrail_core::scope::{GroupSelector, UserSelector};
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use serde_json::{Value, json};
use support::{Reply, Request, Server, serve, token_reply};

const TENANT: &str = "contoso";

fn client(server: &Server) -> GraphClient {
    let cloud = Cloud::custom(&server.base, &format!("{}/v1.0", server.base), &server.base).unwrap();
    let http = http_client(HttpTimeouts::default()).unwrap();
    let credentials = Credentials {
        tenant_id: TENANT.to_owned(),
        client_id: "app-1".to_owned(),
        secret: ClientSecret::new("s3cr3t-value"),
    };
    GraphClient::connect(http, &cloud, credentials, "contoso-cloud", RetryPolicy::fast()).unwrap()
}

fn is_token(r: &Request) -> bool {
    r.target.starts_with(&format!("/{TENANT}/oauth2/v2.0/token"))
}

/// A `$batch` answer: one 200 entry per request, its body made by `body(id, url)`.
fn batch_reply(r: &Request, body: impl Fn(&str, &str) -> Value) -> Reply {
    let requests = r.json()["requests"].as_array().cloned().unwrap_or_default();
    let responses: Vec<Value> = requests
        .iter()
        .map(|q| {
            let (id, url) = (q["id"].as_str().unwrap(), q["url"].as_str().unwrap());
            json!({"id": id, "status": 200, "headers": {}, "body": body(id, url)})
        })
        .collect();
    Reply::json(200, json!({ "responses": responses }))
}

#[tokio::test]
async fn filters_double_quotes_and_percent_encode_plus_signs_spaces_and_accents() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t1");
        }
        batch_reply(r, |_, _| json!({"value": []}))
    })
    .await;
    let graph = client(&server);

    graph
        .find_users(&[
            UserSelector::Email("ada+test@contoso.com".into()),
            UserSelector::DisplayName("Chloé O'Brien".into()),
        ])
        .await
        .unwrap();
    graph
        .find_groups(&[
            GroupSelector::DisplayName("Women's Network & Friends".into()),
            GroupSelector::Mail("golfassist@contoso.com".into()),
        ])
        .await
        .unwrap();

    let batches = server.seen("/v1.0/$batch");
    let urls: Vec<String> = batches
        .iter()
        .flat_map(|b| b.json()["requests"].as_array().cloned().unwrap_or_default())
        .map(|q| q["url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "/users?$filter=userPrincipalName%20eq%20'ada%2Btest%40contoso.com'%20or%20mail%20eq%20'ada%2Btest%40contoso.com'&$select=id,userPrincipalName,displayName,mail",
            "/users?$filter=displayName%20eq%20'Chlo%C3%A9%20O''Brien'&$select=id,userPrincipalName,displayName,mail",
            "/groups?$filter=displayName%20eq%20'Women''s%20Network%20%26%20Friends'&$select=id,displayName,mail",
            "/groups?$filter=mail%20eq%20'golfassist%40contoso.com'&$select=id,displayName,mail",
        ]
    );
}

#[tokio::test]
async fn a_lookup_with_more_than_a_page_follows_its_next_links_verbatim() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t1");
        }
        if r.target.starts_with("/v1.0/$batch") {
            let base = r.header("host").map(|h| format!("http://{h}")).unwrap_or_default();
            return batch_reply(r, |id, _| {
                if id == "0" {
                    json!({
                        "value": [{"id": "u1", "userPrincipalName": "a1@contoso.com", "displayName": "Ada Lovelace"}],
                        "@odata.nextLink": format!("{base}/v1.0/users?$filter=displayName%20eq%20'Ada%20Lovelace'&$skiptoken=P2"),
                    })
                } else {
                    json!({"value": [{"id": "u9", "userPrincipalName": "z@contoso.com"}]})
                }
            });
        }
        match r.target.as_str() {
            t if t.ends_with("$skiptoken=P2") => Reply::json(
                200,
                json!({
                    "value": [{"id": "u2", "userPrincipalName": "a2@contoso.com"}, {"id": "u1", "userPrincipalName": "a1@contoso.com"}],
                    "@odata.nextLink": format!("http://{}/v1.0/users?$skiptoken=P3", r.header("host").unwrap_or_default()),
                }),
            ),
            t if t.ends_with("$skiptoken=P3") => {
                Reply::json(200, json!({"value": [{"id": "u3", "userPrincipalName": "a3@contoso.com"}]}))
            }
            other => Reply::json(404, json!({"error": {"code": "itemNotFound", "message": other}})),
        }
    })
    .await;
    let graph = client(&server);

    let found = graph
        .find_users(&[
            UserSelector::DisplayName("Ada Lovelace".into()),
            UserSelector::Email("z@contoso.com".into()),
        ])
        .await
        .unwrap();

    let ids: Vec<Vec<&str>> = found
        .iter()
        .map(|users| users.iter().map(|u| u.id.as_str()).collect())
        .collect();
    assert_eq!(
        ids,
        [vec!["u1", "u2", "u3"], vec!["u9"]],
        "pages in order, each user once"
    );
    // Verbatim up to the URL parser's normalisation (WHATWG: `'` in the query of an http URL
    // is sent as `%27`, which Graph decodes alike).
    assert_eq!(
        server
            .seen("/v1.0/users")
            .iter()
            .map(|r| r.target.clone())
            .collect::<Vec<_>>(),
        [
            "/v1.0/users?$filter=displayName%20eq%20%27Ada%20Lovelace%27&$skiptoken=P2",
            "/v1.0/users?$skiptoken=P3"
        ]
    );
}

#[tokio::test]
async fn member_pages_send_consistency_level_on_every_page() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t1");
        }
        if r.header("consistencylevel") != Some("eventual") {
            return Reply::json(
                400,
                json!({"error": {"code": "Request_UnsupportedQuery", "message": "needs ConsistencyLevel"}}),
            );
        }
        if r.target.contains("$skiptoken") {
            Reply::json(200, json!({"value": [{"id": "u2", "userPrincipalName": "b@contoso.com"}]}))
        } else {
            let next = format!(
                "http://{}/v1.0/groups/g1/transitiveMembers/microsoft.graph.user?$count=true&$skiptoken=X",
                r.header("host").unwrap_or_default()
            );
            Reply::json(
                200,
                json!({"@odata.count": 2, "value": [{"id": "u1", "userPrincipalName": "a@contoso.com"}], "@odata.nextLink": next}),
            )
        }
    })
    .await;
    let graph = client(&server);

    let first = graph.group_members_page("g1", None).await.unwrap();
    let second = graph
        .group_members_page("g1", first.next_link.as_deref())
        .await
        .unwrap();

    assert_eq!(first.users[0].id, "u1");
    assert_eq!(second.users[0].id, "u2");
    assert!(second.next_link.is_none());
    let targets: Vec<String> = server.seen("/v1.0/groups").iter().map(|r| r.target.clone()).collect();
    assert_eq!(
        targets,
        [
            "/v1.0/groups/g1/transitiveMembers/microsoft.graph.user?$select=id,userPrincipalName,displayName,mail&$top=999&$count=true",
            "/v1.0/groups/g1/transitiveMembers/microsoft.graph.user?$count=true&$skiptoken=X",
        ]
    );
}
