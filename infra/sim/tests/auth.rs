//! Entra token endpoint and Graph bearer validation, over HTTP.
#![allow(clippy::expect_used)] // helpers outside #[test] fns panic on purpose, like the tests

mod common;

use std::time::Duration;

use common::{GRAPH_SCOPE, Reply, Sim, graph_error_code, start};
use m365_sim::SimConfig;
use reqwest::StatusCode;

/// Asserts Entra's documented error shape and returns `(error, first error code)`.
fn entra_error(reply: &Reply) -> (String, u64) {
    let b = &reply.body;
    let code = b["error_codes"][0].as_u64().expect("error_codes[0]");
    let description = b["error_description"].as_str().expect("error_description");
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
    for line in ["\r\nTrace ID: ", "\r\nCorrelation ID: ", "\r\nTimestamp: "] {
        assert!(description.contains(line), "{line:?} in {description}");
    }
    for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(b[key].is_string(), "{key} in {b}");
    }
    (b["error"].as_str().expect("error").to_owned(), code)
}

fn form<'a>(sim: &'a Sim, secret: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", sim.handle.client_id()),
        ("client_secret", secret),
        ("scope", scope),
        ("grant_type", "client_credentials"),
    ]
}

#[tokio::test]
async fn token_success_has_the_documented_shape_and_configured_lifetime() {
    let sim = start(SimConfig {
        token_lifetime: Duration::from_secs(1234),
        ..SimConfig::default()
    })
    .await;
    let reply = sim
        .token_request(
            sim.handle.tenant_id(),
            &form(&sim, sim.handle.client_secret(), GRAPH_SCOPE),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 1234);
    assert_eq!(reply.body["ext_expires_in"], 1234);
    assert!(reply.body["access_token"].as_str().is_some_and(|t| t.len() > 100));
    assert!(
        reply.body.get("refresh_token").is_none(),
        "client credentials never return a refresh token"
    );
}

#[tokio::test]
async fn token_accepts_http_basic_client_authentication_and_the_domain_as_tenant() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/contoso.onmicrosoft.com/oauth2/v2.0/token", sim.handle.login_url());
    let resp = sim
        .http
        .post(url)
        .basic_auth(sim.handle.client_id(), Some(sim.handle.client_secret()))
        .form(&[("scope", GRAPH_SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .expect("sent");
    let reply = common::read(resp).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn token_errors_carry_the_documented_entra_codes() {
    let sim = start(SimConfig::default()).await;
    let tenant = sim.handle.tenant_id().to_owned();
    let secret = sim.handle.client_secret().to_owned();

    let wrong_secret = sim
        .token_request(&tenant, &form(&sim, "not-the-secret", GRAPH_SCOPE))
        .await;
    assert_eq!(wrong_secret.status, StatusCode::UNAUTHORIZED);
    assert_eq!(entra_error(&wrong_secret), ("invalid_client".into(), 7_000_215));

    let mut unknown_client = form(&sim, &secret, GRAPH_SCOPE);
    unknown_client[0].1 = "11111111-2222-3333-4444-555555555555";
    let reply = sim.token_request(&tenant, &unknown_client).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply), ("unauthorized_client".into(), 700_016));

    let reply = sim
        .token_request(
            "99999999-8888-7777-6666-555555555555",
            &form(&sim, &secret, GRAPH_SCOPE),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply), ("invalid_request".into(), 90_002));

    let reply = sim
        .token_request(&tenant, &form(&sim, &secret, "https://foo.microsoft.com/.default"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply), ("invalid_scope".into(), 70_011));

    let mut no_scope = form(&sim, &secret, GRAPH_SCOPE);
    no_scope.remove(2);
    let reply = sim.token_request(&tenant, &no_scope).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply), ("invalid_scope".into(), 70_011));

    let both = "https://graph.microsoft.com/.default https://manage.office.com/.default";
    let reply = sim.token_request(&tenant, &form(&sim, &secret, both)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply), ("invalid_scope".into(), 700_022));

    let mut no_secret = form(&sim, &secret, GRAPH_SCOPE);
    no_secret.remove(1);
    let reply = sim.token_request(&tenant, &no_secret).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(entra_error(&reply), ("invalid_client".into(), 7_000_218));

    let mut wrong_grant = form(&sim, &secret, GRAPH_SCOPE);
    wrong_grant[3].1 = "password";
    let reply = sim.token_request(&tenant, &wrong_grant).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(entra_error(&reply).0, "unsupported_grant_type");

    let mut legacy = form(&sim, &secret, GRAPH_SCOPE);
    legacy.push(("resource", "https://graph.microsoft.com"));
    let reply = sim.token_request(&tenant, &legacy).await;
    assert_eq!(entra_error(&reply), ("invalid_request".into(), 901_002));
}

#[tokio::test]
async fn v1_endpoint_returns_numbers_as_strings_and_the_resource() {
    let sim = start(SimConfig::default()).await;
    let url = format!("{}/{}/oauth2/token", sim.handle.login_url(), sim.handle.tenant_id());
    let resp = sim
        .http
        .post(url)
        .form(&[
            ("client_id", sim.handle.client_id()),
            ("client_secret", sim.handle.client_secret()),
            ("resource", "https://manage.office.com"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("sent");
    let reply = common::read(resp).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["expires_in"], "3599");
    assert!(reply.body["expires_on"].is_string() && reply.body["not_before"].is_string());
    assert_eq!(reply.body["resource"], "https://manage.office.com");
}

#[tokio::test]
async fn graph_refuses_missing_garbage_and_wrong_audience_tokens() {
    let sim = start(SimConfig::default()).await;
    let resp = sim.http.get(sim.url("/users")).send().await.expect("sent");
    let reply = common::read(resp).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(graph_error_code(&reply), "InvalidAuthenticationToken");
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|v| v.starts_with("Bearer"))
    );

    let reply = sim.get("not-a-token", "/users").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(graph_error_code(&reply), "InvalidAuthenticationToken");

    let manage = sim
        .token_request(
            sim.handle.tenant_id(),
            &form(&sim, sim.handle.client_secret(), "https://manage.office.com/.default"),
        )
        .await;
    let manage_token = manage.body["access_token"].as_str().expect("token").to_owned();
    let reply = sim.get(&manage_token, "/users").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(graph_error_code(&reply), "InvalidAuthenticationToken");
    assert_eq!(sim.handle.stats().unauthorized, 3);
}

#[tokio::test]
async fn token_is_refused_once_its_lifetime_has_passed() {
    let sim = start(SimConfig {
        token_lifetime: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    assert_eq!(sim.get(&token, "/users?$top=1").await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = sim.get(&token, "/users?$top=1").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(graph_error_code(&reply), "InvalidAuthenticationToken");
    assert_eq!(
        reply.body["error"]["message"],
        "Access token has expired or is not yet valid."
    );
}

#[tokio::test]
async fn expire_tokens_invalidates_issued_tokens_but_not_new_ones() {
    let sim = start(SimConfig::default()).await;
    let old = sim.token().await;
    sim.handle.expire_tokens();
    let reply = sim.get(&old, "/users?$top=1").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.body["error"]["message"],
        "Access token has expired or is not yet valid."
    );

    let fresh = sim.token().await;
    assert_eq!(sim.get(&fresh, "/users?$top=1").await.status, StatusCode::OK);

    let resp = sim
        .http
        .post(format!("{}/_sim/tokens/expire", sim.handle.base_url()))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.get(&fresh, "/users?$top=1").await.status, StatusCode::UNAUTHORIZED);
}
