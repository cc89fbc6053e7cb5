//! `$batch` and fault injection over HTTP.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{graph_error_code, start};
use m365_sim::{FaultConfig, SimConfig, Stats};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn user_requests(tenant: &m365_sim::Tenant, n: u64) -> Value {
    let requests: Vec<Value> = (0..n)
        .map(|i| {
            let url = if i % 2 == 0 {
                format!("/users/{}/drive", tenant.user(i).id)
            } else {
                format!("users/{}", tenant.user(i).id)
            };
            json!({"id": format!("r{i}"), "method": "GET", "url": url})
        })
        .collect();
    json!({ "requests": requests })
}

#[tokio::test]
async fn batch_of_20_answers_every_id_in_a_different_order() {
    let config = SimConfig {
        users: 30,
        no_drive_ratio: 0.0,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let sim = start(config).await;
    let token = sim.token().await;

    let reply = sim.post_json(&token, "/$batch", &user_requests(&tenant, 20)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let responses = reply.body["responses"].as_array().expect("responses");
    let ids: Vec<&str> = responses.iter().map(|r| r["id"].as_str().expect("id")).collect();
    let requested: Vec<String> = (0..20).map(|i| format!("r{i}")).collect();
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        requested.iter().map(String::as_str).collect()
    );
    assert_ne!(
        ids,
        requested.iter().map(String::as_str).collect::<Vec<_>>(),
        "order differs"
    );
    for r in responses {
        assert_eq!(r["status"], 200, "{r}");
        assert!(r["headers"]["Content-Type"].is_string());
        let i: u64 = r["id"].as_str().expect("id")[1..].parse().expect("index");
        assert!(r["body"]["id"].is_string());
        if i % 2 == 1 {
            assert_eq!(r["body"]["id"], tenant.user(i).id.as_str());
        } else {
            assert_eq!(r["body"]["driveType"], "business");
        }
    }
    let stats = sim.handle.stats();
    assert_eq!(
        (stats.batch, stats.batch_inner, stats.users, stats.drive),
        (1, 20, 10, 10)
    );
}

#[tokio::test]
async fn invalid_batches_are_rejected_whole_with_400() {
    let config = SimConfig {
        users: 30,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let sim = start(config).await;
    let token = sim.token().await;

    let too_many = sim.post_json(&token, "/$batch", &user_requests(&tenant, 21)).await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&too_many), "BadRequest");

    let duplicate = json!({"requests": [
        {"id": "a", "method": "GET", "url": "/users"},
        {"id": "A", "method": "GET", "url": "/users"},
    ]});
    let reply = sim.post_json(&token, "/$batch", &duplicate).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body["error"]["message"],
        "Request Id A has to be unique in a batch."
    );

    let resp = sim
        .http
        .post(sim.url("/$batch"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"requests\": [")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unsupported_inner_methods_fail_alone_with_405() {
    let sim = start(SimConfig {
        users: 5,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let body = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/users?$top=2"},
        {"id": "2", "method": "DELETE", "url": "/users/whatever"},
    ]});
    let reply = sim.post_json(&token, "/$batch", &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let by_id = |id: &str| {
        reply.body["responses"]
            .as_array()
            .expect("responses")
            .iter()
            .find(|r| r["id"] == id)
            .expect("id")
            .clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("1")["body"]["value"].as_array().map(Vec::len), Some(2));
    assert_eq!(by_id("2")["status"], 405);
    assert_eq!(by_id("2")["body"]["error"]["code"], "Request_BadRequest");
}

#[tokio::test]
async fn inner_throttling_returns_429_entries_with_retry_after_inside_a_200_batch() {
    let faults = FaultConfig {
        batch_inner_throttle_rate: 1.0,
        ..FaultConfig::default()
    };
    let config = SimConfig {
        users: 10,
        faults,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let sim = start(config).await;
    let token = sim.token().await;
    let reply = sim.post_json(&token, "/$batch", &user_requests(&tenant, 5)).await;
    assert_eq!(reply.status, StatusCode::OK, "the envelope itself succeeds");
    for r in reply.body["responses"].as_array().expect("responses") {
        assert_eq!(r["status"], 429, "{r}");
        assert_eq!(r["body"]["error"]["code"], "TooManyRequests");
        let retry: f64 = r["headers"]["Retry-After"]
            .as_str()
            .expect("Retry-After")
            .parse()
            .expect("number");
        assert!((0.05..=0.5).contains(&retry));
    }
    assert_eq!(sim.handle.stats().faults.batch_inner_throttled, 5);
}

#[tokio::test]
async fn throttling_appears_at_about_the_configured_rate_with_parseable_retry_after() {
    let sim = start(SimConfig {
        users: 20,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let resp = sim
        .http
        .post(format!("{}/_sim/faults", sim.handle.base_url()))
        .json(&json!({"throttle_rate": 0.25, "retry_after_secs": [0.1, 3.0]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(sim.handle.faults().throttle_rate, 0.25);

    let mut throttled = 0;
    let mut decimal = 0;
    for _ in 0..400 {
        let reply = sim.get(&token, "/users?$top=1").await;
        match reply.status {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                throttled += 1;
                let raw = reply.header("retry-after").expect("Retry-After");
                let secs: f64 = raw.parse().expect("Retry-After parses as a decimal number");
                assert!((0.1..=3.0).contains(&secs), "{raw}");
                decimal += usize::from(raw.contains('.'));
                let code = graph_error_code(&reply);
                assert!(code == "TooManyRequests" || code == "serviceNotAvailable", "{code}");
            }
            other => panic!("unexpected status {other}: {}", reply.body),
        }
    }
    assert!(
        (60..=140).contains(&throttled),
        "about 25% of 400 throttled, got {throttled}"
    );
    assert!(decimal > 0, "some Retry-After values are fractional");
    let Stats { faults, .. } = sim.handle.stats();
    assert_eq!(faults.throttled_429 + faults.unavailable_503, throttled);
}

#[tokio::test]
async fn server_errors_use_general_exception() {
    let faults = FaultConfig {
        error_5xx_rate: 1.0,
        ..FaultConfig::default()
    };
    let sim = start(SimConfig {
        users: 3,
        faults,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let reply = sim.get(&token, "/users").await;
    assert!([500, 502, 504].contains(&reply.status.as_u16()), "{}", reply.status);
    assert_eq!(graph_error_code(&reply), "generalException");
}

#[tokio::test]
async fn dropped_connections_get_no_response_and_a_retry_succeeds() {
    let sim = start(SimConfig {
        users: 3,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    sim.handle.set_faults(FaultConfig {
        drop_rate: 1.0,
        ..FaultConfig::default()
    });
    let err = sim.http.get(sim.url("/users")).bearer_auth(&token).send().await;
    let err = err.expect_err("no HTTP response at all");
    assert!(err.status().is_none(), "{err}");
    assert_eq!(sim.handle.stats().faults.dropped, 1);

    sim.handle.set_faults(FaultConfig::default());
    assert_eq!(sim.get(&token, "/users").await.status, StatusCode::OK);
}

#[tokio::test]
async fn slow_responses_are_delayed() {
    let faults = FaultConfig {
        slow_rate: 1.0,
        slow_ms: 300,
        ..FaultConfig::default()
    };
    let sim = start(SimConfig {
        users: 3,
        faults,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let t = Instant::now();
    assert_eq!(sim.get(&token, "/users").await.status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.handle.stats().faults.slowed, 1);
}

#[tokio::test]
async fn faults_never_hit_the_token_endpoint_and_stats_are_served_as_json() {
    let faults = FaultConfig {
        drop_rate: 0.5,
        throttle_rate: 0.5,
        ..FaultConfig::default()
    };
    let sim = start(SimConfig {
        users: 3,
        faults,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..20 {
        sim.token().await;
    }
    let bad = sim
        .http
        .post(format!("{}/_sim/faults", sim.handle.base_url()))
        .json(&json!({"throttle_rate": 2.0}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    let stats: Stats = sim
        .http
        .get(format!("{}/_sim/stats", sim.handle.base_url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("stats JSON");
    assert_eq!(stats.token, 20);
    assert_eq!(stats, sim.handle.stats());

    let tenant: Value = sim
        .http
        .get(format!("{}/_sim/tenant", sim.handle.base_url()))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("tenant JSON");
    assert_eq!(tenant["tenant_id"], sim.handle.tenant_id());
    assert_eq!(tenant["users"], 3);
}
