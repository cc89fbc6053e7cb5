//! The retry pipeline over real HTTP against a scripted loopback server: exact control over
//! dropped connections, rejected tokens, inner `$batch` answers and error bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use filetrail_core::RetryClass;
use filetrail_core::model::{DirectoryUser, DriveLookup};
use filetrail_core::ports::DeltaError;
use filetrail_m365::{
    ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, M365Error, RetryPolicy, USER_AGENT, http_client,
};
use serde_json::json;
use support::{Reply, Request, Server, serve, token_reply};

const TENANT: &str = "contoso";
const CONNECTION: &str = "contoso-cloud";

fn client(server: &Server, policy: RetryPolicy) -> GraphClient {
    let cloud = Cloud::custom(&server.base, &format!("{}/v1.0", server.base), &server.base).unwrap();
    let http = http_client(HttpTimeouts::default()).unwrap();
    let credentials = Credentials {
        tenant_id: TENANT.to_owned(),
        client_id: "app-1".to_owned(),
        secret: ClientSecret::new("s3cr3t-value"),
    };
    GraphClient::connect(http, &cloud, credentials, CONNECTION, policy).unwrap()
}

fn is_token(r: &Request) -> bool {
    r.target.starts_with(&format!("/{TENANT}/oauth2/v2.0/token"))
}

fn users_page() -> Reply {
    Reply::json(
        200,
        json!({"value": [{"id": "u1", "userPrincipalName": "ada@contoso.com"}]}),
    )
}

fn graph_count(server: &Server) -> usize {
    server.seen("/v1.0").len()
}

fn token_count(server: &Server) -> usize {
    server.seen(&format!("/{TENANT}/")).len()
}

#[tokio::test]
async fn dropped_connection_before_any_response_is_retried() {
    let graph_calls = AtomicUsize::new(0);
    let server = serve(move |r, _| {
        if is_token(r) {
            return token_reply("t1");
        }
        if graph_calls.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Drop
        } else {
            users_page()
        }
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let page = graph.users_page(None).await.unwrap();

    assert_eq!(page.users.len(), 1);
    assert_eq!(graph_count(&server), 2);
    assert_eq!(graph.retries(), 1);
    assert_eq!(graph.requests(), 2);
}

#[tokio::test]
async fn first_request_sends_the_documented_token_form_and_isv_user_agent() {
    let server = serve(|r, _| if is_token(r) { token_reply("t1") } else { users_page() }).await;
    let graph = client(&server, RetryPolicy::fast());

    graph.users_page(None).await.unwrap();

    let token = &server.seen(&format!("/{TENANT}/oauth2/v2.0/token"))[0];
    assert_eq!(token.method, "POST");
    let form: HashMap<String, String> = url::form_urlencoded::parse(token.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "app-1");
    assert_eq!(form["scope"], "https://graph.microsoft.com/.default");
    let users = &server.seen("/v1.0/users")[0];
    assert_eq!(users.header("authorization"), Some("Bearer t1"));
    assert_eq!(users.header("user-agent"), Some(USER_AGENT));
    assert!(USER_AGENT.starts_with("ISV|filetrail|filetrail/"));
    assert!(
        users.target.contains("$select=id,userPrincipalName,displayName,mail") && users.target.contains("$top=999")
    );
}

#[tokio::test]
async fn throttled_request_pauses_every_request_of_the_client_until_retry_after() {
    let a_calls = AtomicUsize::new(0);
    let server = serve(move |r, _| {
        if is_token(r) {
            return token_reply("t1");
        }
        if r.target.starts_with("/v1.0/users/a") && a_calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::json(
                429,
                json!({"error": {"code": "TooManyRequests", "message": "Please retry again later."}}),
            )
            .with_header("Retry-After", "0.4");
        }
        Reply::json(200, json!({"id": "x"}))
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    // GIVEN request A is throttled with Retry-After 0.4 s
    let a = {
        let graph = graph.clone();
        tokio::spawn(async move { graph.get_json::<serde_json::Value>("/users/a").await })
    };
    // (the runtime is single-threaded: once A counted its retry it has also closed the gate)
    while graph.retries() == 0 {
        tokio::task::yield_now().await;
    }
    // WHEN request B starts while A waits
    let b: serde_json::Value = graph.get_json("/users/b").await.unwrap();
    a.await.unwrap().unwrap();

    // THEN B reached the server no earlier than A's 429 plus Retry-After
    assert_eq!(b["id"], "x");
    let first_a = server.seen("/v1.0/users/a")[0].at;
    let b_at = server.seen("/v1.0/users/b")[0].at;
    assert!(
        b_at.duration_since(first_a) >= Duration::from_millis(400),
        "B was not paused"
    );
}

#[tokio::test]
async fn rejected_token_is_replaced_once_transparently() {
    let token_calls = AtomicUsize::new(0);
    let server = serve(move |r, _| {
        if is_token(r) {
            let n = token_calls.fetch_add(1, Ordering::SeqCst);
            return token_reply(&format!("t{}", n + 1));
        }
        if r.header("authorization") == Some("Bearer t1") {
            return Reply::json(
                401,
                json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}}),
            );
        }
        users_page()
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let page = graph.users_page(None).await.unwrap();

    assert_eq!(page.users[0].user_principal_name, "ada@contoso.com");
    assert_eq!(token_count(&server), 2);
    assert_eq!(graph_count(&server), 2);
}

#[tokio::test]
async fn token_rejected_twice_fails_after_a_single_refresh() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        Reply::json(
            401,
            json!({"error": {"code": "InvalidAuthenticationToken", "message": "nope"}}),
        )
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph.users_page(None).await.unwrap_err();

    assert_eq!(err.code(), "InvalidAuthenticationToken");
    assert_eq!(graph_count(&server), 2);
    assert_eq!(token_count(&server), 2);
}

#[tokio::test]
async fn exhausted_retry_budget_returns_the_last_cause() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        Reply::json(
            503,
            json!({"error": {"code": "serviceNotAvailable", "message": "Server too busy"}}),
        )
    })
    .await;
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::fast()
    };
    let graph = client(&server, policy);

    let err = graph.users_page(None).await.unwrap_err();

    assert!(matches!(err, M365Error::RetriesExhausted { attempts: 3, .. }), "{err}");
    assert_eq!(err.code(), "serviceNotAvailable");
    assert_eq!(err.retry_class(), RetryClass::Backoff);
    assert_eq!(graph_count(&server), 3);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_hands_the_wait_back_to_the_caller() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        Reply::json(429, json!({"error": {"code": "TooManyRequests"}})).with_header("Retry-After", "600")
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph.users_page(None).await.unwrap_err();

    assert_eq!(err.retry_class(), RetryClass::RetryAfter(Duration::from_secs(600)));
    assert_eq!(
        graph_count(&server),
        1,
        "no request is sent while the service asked to wait"
    );
}

#[tokio::test]
async fn past_http_date_retry_after_retries_at_once() {
    let calls = AtomicUsize::new(0);
    let server = serve(move |r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::json(503, json!({"error": {"code": "serviceNotAvailable"}}))
                .with_header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT");
        }
        users_page()
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    graph.users_page(None).await.unwrap();

    assert_eq!(graph.throttled(), 1);
    assert_eq!(graph_count(&server), 2);
}

#[tokio::test]
async fn access_denied_is_terminal_names_the_permission_and_is_not_retried() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        Reply::json(
            403,
            json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation."}}),
        )
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph.users_page(None).await.unwrap_err();

    assert_eq!(err.retry_class(), RetryClass::Terminal);
    let text = err.to_string();
    assert!(
        text.contains(CONNECTION) && text.contains("User.Read.All") && text.contains("admin consent"),
        "{text}"
    );
    assert_eq!(graph_count(&server), 1);
}

#[tokio::test]
async fn wrong_secret_is_terminal_names_the_fix_and_asks_entra_once() {
    let server = serve(|r, _| {
        if is_token(r) {
            return Reply::json(
                401,
                json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value.\r\nTrace ID: x", "error_codes": [7000215]}),
            );
        }
        users_page()
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let calls: Vec<_> = (0..8).map(|_| graph.users_page(None)).collect();
    let results = futures_util::future::join_all(calls).await;

    for result in results {
        let err = filetrail_core::PortError::from(result.unwrap_err());
        assert!(err.is_terminal());
        assert_eq!(err.code, "AADSTS7000215");
        assert!(err.message.contains(CONNECTION), "{}", err.message);
        assert!(
            err.fix
                .as_deref()
                .unwrap()
                .contains("filetrail connection set-secret contoso-cloud")
        );
        assert!(!err.to_string().contains("s3cr3t-value"));
    }
    assert_eq!(
        token_count(&server),
        1,
        "concurrent callers share one refused token request"
    );
    assert_eq!(graph_count(&server), 0);
}

#[tokio::test]
async fn token_endpoint_outage_is_retried() {
    let calls = AtomicUsize::new(0);
    let server = serve(move |r, _| {
        if is_token(r) {
            return match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Reply::Drop,
                1 => Reply::json(
                    503,
                    json!({"error": "temporarily_unavailable", "error_description": "AADSTS50000: busy"}),
                ),
                _ => token_reply("t"),
            };
        }
        users_page()
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    graph.users_page(None).await.unwrap();

    assert_eq!(token_count(&server), 3);
    assert_eq!(graph.tokens().requests(), 3);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let server = serve(|r, _| if is_token(r) { token_reply("t") } else { users_page() }).await;
    let graph = client(&server, RetryPolicy::fast());

    let calls: Vec<_> = (0..10).map(|_| graph.users_page(None)).collect();
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }

    assert_eq!(token_count(&server), 1);
    assert_eq!(graph_count(&server), 10);
}

fn user(i: usize) -> DirectoryUser {
    DirectoryUser {
        id: format!("user-{i}"),
        user_principal_name: format!("u{i}@contoso.com"),
        display_name: None,
        mail: None,
    }
}

#[tokio::test]
async fn batch_retries_only_the_throttled_entries_and_matches_answers_by_id() {
    // user-3 and user-7 are throttled the first time; user-5 has no OneDrive (404), user-9 has
    // the 400 "mysite URL" shape, user-11 a SharePoint library; answers come back reversed.
    let first_seen: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
    let server = serve(move |r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        let body = r.json();
        let mut responses = Vec::new();
        for req in body["requests"].as_array().unwrap() {
            let id = req["id"].as_str().unwrap();
            let url = req["url"].as_str().unwrap();
            let user = url.split('/').nth(2).unwrap().to_owned();
            assert!(url.ends_with("/drive?$select=id,driveType,webUrl"), "{url}");
            let n = {
                let mut seen = first_seen.lock().unwrap();
                let n = seen.entry(user.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let entry = match user.as_str() {
                "user-3" | "user-7" if n == 1 => json!({"id": id, "status": 429, "headers": {"Retry-After": "0.05"},
                    "body": {"error": {"code": "TooManyRequests", "message": "retry"}}}),
                "user-5" => json!({"id": id, "status": 404, "body": {"error": {"code": "ResourceNotFound", "message": "User's mysite not found."}}}),
                "user-9" => json!({"id": id, "status": 400, "body": {"error": {"code": "BadRequest", "message": "Unable to retrieve user's mysite URL."}}}),
                "user-11" => json!({"id": id, "status": 200, "body": {"id": "lib-11", "driveType": "documentLibrary"}}),
                _ => json!({"id": id, "status": 200, "body": {"id": format!("drive-{user}"), "driveType": "business", "webUrl": "https://x"}}),
            };
            responses.push(entry);
        }
        responses.reverse();
        Reply::json(200, json!({"responses": responses}))
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());
    let users: Vec<_> = (0..25).map(user).collect();

    let lookups = graph.user_drives(&users).await.unwrap();

    assert_eq!(lookups.len(), 25);
    for (i, lookup) in lookups.iter().enumerate() {
        match (i, lookup) {
            (5 | 9, DriveLookup::NoDrive { reason }) => assert!(reason.contains("mysite"), "{reason}"),
            (11, DriveLookup::Found(d)) => assert_eq!(d.drive_type, "documentLibrary"),
            (_, DriveLookup::Found(d)) => assert_eq!(d.id, format!("drive-user-{i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let mut sizes: Vec<usize> = server
        .seen("/v1.0/$batch")
        .iter()
        .map(|r| r.json()["requests"].as_array().unwrap().len())
        .collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        vec![2, 5, 20],
        "20 per batch, then only the two throttled entries"
    );
    assert_eq!(graph.throttled(), 2);
    assert_eq!(graph.stats().batched, 27);
}

#[tokio::test]
async fn batch_inner_access_denied_fails_the_whole_lookup_as_terminal() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        let responses: Vec<_> = r.json()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| json!({"id": q["id"], "status": 403, "body": {"error": {"code": "accessDenied", "message": "Access denied"}}}))
            .collect();
        Reply::json(200, json!({"responses": responses}))
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph.user_drives(&[user(1)]).await.unwrap_err();

    assert_eq!(err.retry_class(), RetryClass::Terminal);
    assert!(err.fix().unwrap().contains("Files.Read.All"));
}

#[tokio::test]
async fn delta_410_is_resync_required_with_the_location_restart_link() {
    let server = serve(|r, _| {
        if is_token(r) {
            return token_reply("t");
        }
        Reply::json(
            410,
            json!({"error": {"code": "resyncRequired", "message": "Resync required", "innerError": {"code": "resyncChangesApplyDifferences"}}}),
        )
        .with_header("Location", "http://restart.invalid/v1.0/drives/d1/root/delta?token=restart")
    })
    .await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph.delta_page("d1", None).await.unwrap_err();

    match err {
        DeltaError::ResyncRequired { code, restart_link } => {
            assert_eq!(code, "resyncChangesApplyDifferences");
            assert_eq!(
                restart_link.as_deref(),
                Some("http://restart.invalid/v1.0/drives/d1/root/delta?token=restart")
            );
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let delta = &server.seen("/v1.0/drives/d1/root/delta")[0];
    assert!(delta.target.contains("$select=id,name,size"), "{}", delta.target);
    assert_eq!(graph_count(&server), 1, "a 410 is not retried");
}

#[tokio::test]
async fn link_to_another_host_is_refused_without_sending_the_token() {
    let server = serve(|r, _| if is_token(r) { token_reply("t") } else { users_page() }).await;
    let graph = client(&server, RetryPolicy::fast());

    let err = graph
        .users_page(Some("https://evil.example/v1.0/users?$skiptoken=abc"))
        .await
        .unwrap_err();

    assert_eq!(err.retry_class(), RetryClass::Terminal);
    assert!(err.to_string().contains("evil.example"));
    assert!(server.requests.lock().unwrap().is_empty());
}
