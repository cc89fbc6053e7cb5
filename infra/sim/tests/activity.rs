//! The Office 365 Management Activity API over real HTTP: documented shapes, every error path,
//! paging, blobs, publishing (delay, duplicates, late blobs), audit log off, faults, stats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use m365_sim::activity::{BlobLane, SubscriptionState};
use m365_sim::{ActivityConfig, ContentType, SimConfig, SimHandle};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const MANAGE_SCOPE: &str = "https://manage.office.com/.default";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const PUBLISHER: &str = "46b472a7-c68e-4adf-8ade-3db49497518e";

struct Sim {
    handle: SimHandle,
    http: reqwest::Client,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("JSON body ({e}): {}", self.text))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().expect("error.code").to_owned()
    }

    fn message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn quiet() -> ActivityConfig {
    ActivityConfig {
        duplicate_rate: 0.0,
        late_rate: 0.0,
        ..ActivityConfig::default()
    }
}

async fn start_sim(activity: ActivityConfig) -> Sim {
    let handle = m365_sim::spawn(SimConfig {
        users: 5,
        groups: 2,
        activity,
        ..SimConfig::with_seed(21)
    })
    .await
    .expect("simulator starts");
    Sim {
        handle,
        http: reqwest::Client::new(),
    }
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

fn record(id: &str) -> Value {
    json!({
        "Id": id,
        "CreationTime": "2026-11-30T05:06:07",
        "Operation": "FileModified",
        "RecordType": 6,
        "Workload": "OneDrive",
        "UserId": "adele@contoso.onmicrosoft.com",
    })
}

impl Sim {
    async fn token_for(&self, scope: &str) -> String {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.handle.login_url(),
            self.handle.tenant_id()
        );
        let form = [
            ("client_id", self.handle.client_id()),
            ("client_secret", self.handle.client_secret()),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ];
        let resp = self.http.post(url).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body: Value = resp.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn token(&self) -> String {
        self.token_for(MANAGE_SCOPE).await
    }

    fn feed(&self) -> String {
        self.handle.audit().feed_url()
    }

    async fn send(&self, method: reqwest::Method, url: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    /// A call to `{feed}/{path_and_query}` with `PublisherIdentifier` appended.
    async fn call(&self, method: reqwest::Method, path_and_query: &str, token: &str) -> Reply {
        let sep = if path_and_query.contains('?') { '&' } else { '?' };
        let url = format!("{}/{path_and_query}{sep}PublisherIdentifier={PUBLISHER}", self.feed());
        self.send(method, &url, Some(token), None).await
    }

    async fn get(&self, path_and_query: &str, token: &str) -> Reply {
        self.call(reqwest::Method::GET, path_and_query, token).await
    }

    async fn post(&self, path_and_query: &str, token: &str) -> Reply {
        self.call(reqwest::Method::POST, path_and_query, token).await
    }

    async fn start_sharepoint(&self, token: &str) {
        let r = self
            .post("subscriptions/start?contentType=Audit.SharePoint", token)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }

    /// Lists content of `[start, end)` following `NextPageUri`; returns the items and the pages.
    async fn list_all(&self, token: &str, start: &str, end: &str) -> (Vec<Value>, Vec<Reply>) {
        let mut url = format!(
            "{}/subscriptions/content?contentType=Audit.SharePoint&startTime={start}&endTime={end}&PublisherIdentifier={PUBLISHER}",
            self.feed()
        );
        let mut items = Vec::new();
        let mut pages = Vec::new();
        for _ in 0..100 {
            let page = self.send(reqwest::Method::GET, &url, Some(token), None).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.text);
            items.extend(page.json().as_array().unwrap().iter().cloned());
            let next = page.header("NextPageUri").map(str::to_owned);
            pages.push(page);
            match next {
                Some(next) => url = format!("{next}&PublisherIdentifier={PUBLISHER}"),
                None => return (items, pages),
            }
        }
        panic!("paging did not end");
    }
}

#[tokio::test]
async fn start_answers_the_documented_shape_and_list_shows_the_subscription() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;

    let r = sim
        .post("subscriptions/start?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"contentType": "Audit.SharePoint", "status": "enabled", "webhook": null})
    );
    let url = format!(
        "{}/subscriptions/start?contentType=Audit.Exchange&PublisherIdentifier={PUBLISHER}",
        sim.feed()
    );
    let hook = json!({"webhook": {"address": "https://webhook.myapp.com/o365/", "authId": "o365activityapinotification", "expiration": ""}});
    let r = sim.send(reqwest::Method::POST, &url, Some(&token), Some(hook)).await;
    assert_eq!(
        r.json(),
        json!({"contentType": "Audit.Exchange", "status": "enabled", "webhook": {
            "status": "enabled", "address": "https://webhook.myapp.com/o365/",
            "authId": "o365activityapinotification", "expiration": null}})
    );

    let list = sim.get("subscriptions/list", &token).await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.json();
    let types: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["contentType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Audit.Exchange", "Audit.SharePoint"]);

    // A repeated start is accepted, and counted (the API FAQ: wait 15 minutes between them).
    sim.start_sharepoint(&token).await;
    assert_eq!(sim.handle.stats().activity.subscriptions_start_repeated, 1);
    assert_eq!(
        sim.handle.audit().subscription(ContentType::SharePoint),
        SubscriptionState::Enabled
    );
}

#[tokio::test]
async fn content_types_are_checked_on_every_operation() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    for ct in [
        "Audit.AzureActiveDirectory",
        "Audit.Exchange",
        "Audit.SharePoint",
        "Audit.General",
        "DLP.All",
    ] {
        let r = sim.post(&format!("subscriptions/start?contentType={ct}"), &token).await;
        assert_eq!(r.status, StatusCode::OK, "{ct}: {}", r.text);
    }
    let r = sim.post("subscriptions/start?contentType=Audit.OneDrive", &token).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20020".to_owned()));
    assert_eq!(r.message(), "The specified content type is not valid.");
    let r = sim.get("subscriptions/content?contentType=Nope", &token).await;
    assert_eq!(r.code(), "AF20020");
    let r = sim.post("subscriptions/start", &token).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20001".to_owned()));
    assert_eq!(r.message(), "Missing parameter: contentType.");
    let r = sim.post("subscriptions/stop", &token).await;
    assert_eq!(r.code(), "AF20001");
}

#[tokio::test]
async fn listing_without_a_started_subscription_is_af20022_and_stop_brings_it_back() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20022".to_owned()));
    assert_eq!(r.message(), "No subscription found for the specified content type.");
    let r = sim
        .post("subscriptions/stop?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.code(), "AF20022", "nothing to stop");

    sim.start_sharepoint(&token).await;
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = sim
        .post("subscriptions/stop?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.is_empty(), "stop answers an empty body");
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.code(), "AF20022");
    let list = sim.get("subscriptions/list", &token).await.json();
    assert_eq!(
        list[0]["status"], "disabled",
        "a stopped subscription is listed disabled"
    );
    assert_eq!(sim.handle.stats().activity.af20022, 3);
}

#[tokio::test]
async fn content_that_became_available_while_stopped_is_never_listed() {
    let sim = start_sim(quiet()).await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let t0 = audit.now();
    let before = audit.publish_blob(
        ContentType::SharePoint,
        vec![record("a")],
        Some(t0 - TimeDelta::minutes(30)),
    );
    sim.post("subscriptions/stop?contentType=Audit.SharePoint", &token)
        .await;
    audit.advance_clock(Duration::from_secs(60));
    let during = audit.publish_blob(
        ContentType::SharePoint,
        vec![record("b")],
        Some(audit.now() - TimeDelta::seconds(1)),
    );
    audit.advance_clock(Duration::from_secs(60));
    sim.start_sharepoint(&token).await;
    let after = audit.publish_blob(ContentType::SharePoint, vec![record("c")], Some(audit.now()));
    audit.advance_clock(Duration::from_secs(1));

    let (items, _) = sim
        .list_all(
            &token,
            &time(t0 - TimeDelta::hours(1)),
            &time(audit.now() + TimeDelta::minutes(1)),
        )
        .await;
    let ids: Vec<&str> = items.iter().map(|i| i["contentId"].as_str().unwrap()).collect();
    assert_eq!(ids, [before.content_id.as_str(), after.content_id.as_str()]);
    assert!(!ids.contains(&during.content_id.as_str()));
}

#[tokio::test]
async fn a_disabled_subscription_is_af20023_until_started_again() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let published = sim.handle.audit().publish_blob(
        ContentType::SharePoint,
        vec![record("x")],
        Some(sim.handle.audit().now()),
    );
    let blob_url = format!(
        "{}/audit/{}?PublisherIdentifier={PUBLISHER}",
        sim.feed(),
        published.content_id
    );

    let r = sim
        .http
        .post(format!(
            "{}/_sim/audit/subscriptions/Audit.SharePoint/disable",
            sim.handle.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20023".to_owned()));
    assert_eq!(r.message(), "The subscription was disabled by a tenant admin.");
    let r = sim.send(reqwest::Method::GET, &blob_url, Some(&token), None).await;
    assert_eq!(r.code(), "AF20023", "no content retrieval either");
    assert_eq!(
        sim.get("subscriptions/list", &token).await.json()[0]["status"],
        "disabled"
    );

    sim.start_sharepoint(&token).await;
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = sim.send(reqwest::Method::GET, &blob_url, Some(&token), None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn tokens_must_be_management_tokens_of_the_url_tenant_with_activity_feed_read() {
    let sim = start_sim(quiet()).await;
    let graph = sim.token_for(GRAPH_SCOPE).await;
    let r = sim.get("subscriptions/list", &graph).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a Graph token is refused");
    let r = sim
        .send(
            reqwest::Method::GET,
            &format!("{}/subscriptions/list", sim.feed()),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "no token");
    assert!(r.header("www-authenticate").is_some());

    let token = sim.token().await;
    let other_tenant = "f28ab78a-d401-4060-8012-736e373933eb";
    let url = format!(
        "{}/api/v1.0/{other_tenant}/activity/feed/subscriptions/list?PublisherIdentifier={PUBLISHER}",
        sim.handle.base_url()
    );
    let r = sim.send(reqwest::Method::GET, &url, Some(&token), None).await;
    assert_eq!((r.status, r.code()), (StatusCode::FORBIDDEN, "AF20010".to_owned()));
    assert_eq!(
        r.message(),
        format!(
            "The tenant ID passed in the URL ({other_tenant}) does not match the tenant ID passed in the access token ({}).",
            sim.handle.tenant_id()
        )
    );
    let url = format!(
        "{}/api/v1.0/contoso/activity/feed/subscriptions/list",
        sim.handle.base_url()
    );
    assert_eq!(
        sim.send(reqwest::Method::GET, &url, Some(&token), None).await.code(),
        "AF20013"
    );

    sim.handle.audit().set_activity_feed_read_granted(false);
    let without_role = sim.token().await;
    let r = sim.get("subscriptions/list", &without_role).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "AF10001".to_owned()));
    assert_eq!(
        r.message(),
        "The permission set () sent in the request did not include the expected permission ActivityFeed.Read."
    );
    let stats = sim.handle.stats().activity;
    assert_eq!((stats.unauthorized, stats.af20010, stats.af10001), (2, 1, 1));
}

#[tokio::test]
async fn the_time_window_follows_the_documented_rules() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let now = sim.handle.audit().now();
    let q = |start: &str, end: &str| {
        format!("subscriptions/content?contentType=Audit.SharePoint&startTime={start}&endTime={end}")
    };

    let day = now.format("%Y-%m-%d").to_string();
    let minute = (now - TimeDelta::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    for (start, end) in [
        (minute.as_str(), time(now).as_str()),
        (day.as_str(), time(now).as_str()),
    ] {
        let r = sim.get(&q(start, end), &token).await;
        assert_eq!(r.status, StatusCode::OK, "{start}..{end}: {}", r.text);
    }
    let af20030 = [
        q(&time(now - TimeDelta::hours(25)), &time(now)),
        q(
            &time(now - TimeDelta::days(8)),
            &time(now - TimeDelta::days(8) + TimeDelta::hours(1)),
        ),
        format!(
            "subscriptions/content?contentType=Audit.SharePoint&startTime={}",
            time(now)
        ),
        format!(
            "subscriptions/content?contentType=Audit.SharePoint&endTime={}",
            time(now)
        ),
    ];
    for path in af20030 {
        let r = sim.get(&path, &token).await;
        assert_eq!(
            (r.status, r.code()),
            (StatusCode::BAD_REQUEST, "AF20030".to_owned()),
            "{path}"
        );
        assert!(r.message().contains("less than or equal to 24 hours apart"));
    }
    let r = sim.get(&q(&time(now), &time(now - TimeDelta::hours(1))), &token).await;
    assert_eq!(r.code(), "AF20055");
    let r = sim.get(&q(&format!("{}Z", time(now)), &time(now)), &token).await;
    assert_eq!(r.code(), "AF20002", "not a documented format");
    let r = sim
        .get(
            &format!("{}&nextPage=bogus", q(&time(now - TimeDelta::hours(1)), &time(now))),
            &token,
        )
        .await;
    assert_eq!(
        (r.code(), r.message()),
        ("AF20031".to_owned(), "Invalid nextPage Input: bogus.".to_owned())
    );
}

#[tokio::test]
async fn listing_filters_on_content_created_start_inclusive_end_exclusive() {
    let sim = start_sim(quiet()).await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let base = (audit.now() - TimeDelta::hours(2))
        .format("%Y-%m-%dT%H:%M:00")
        .to_string();
    let base: DateTime<Utc> = format!("{base}Z").parse().unwrap();
    let at = |m: i64| base + TimeDelta::minutes(m);
    let blobs: Vec<_> = [0, 10, 20, 30]
        .into_iter()
        .map(|m| audit.publish_blob(ContentType::SharePoint, vec![record(&format!("r{m}"))], Some(at(m))))
        .collect();
    audit.publish_blob(ContentType::Exchange, vec![record("exo")], Some(at(10)));
    // Not yet available: never listed, even inside the window.
    audit.publish_blob(
        ContentType::SharePoint,
        vec![record("future")],
        Some(audit.now() + TimeDelta::hours(1)),
    );

    let (items, _) = sim.list_all(&token, &time(at(10)), &time(at(30))).await;
    let ids: Vec<&str> = items.iter().map(|i| i["contentId"].as_str().unwrap()).collect();
    assert_eq!(ids, [blobs[1].content_id.as_str(), blobs[2].content_id.as_str()]);

    let item = &items[0];
    let keys: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{item}");
    assert_eq!(item["contentType"], "Audit.SharePoint");
    assert_eq!(
        item["contentCreated"],
        at(10).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    );
    assert_eq!(
        item["contentExpiration"],
        (at(10) + TimeDelta::days(7))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    );
    let uri = item["contentUri"].as_str().unwrap();
    assert!(
        uri.ends_with(&format!("/activity/feed/audit/{}", blobs[1].content_id)),
        "{uri}"
    );
    assert_eq!(blobs[1].content_id.matches('$').count(), 4, "{}", blobs[1].content_id);

    // No times: the last 24 hours.
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.json().as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn pages_follow_next_page_uri_which_repeats_the_window_and_adds_next_page() {
    let sim = start_sim(ActivityConfig {
        content_page_size: 3,
        ..quiet()
    })
    .await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let now = audit.now();
    let published: Vec<String> = (0..8)
        .map(|i| {
            audit
                .publish_blob(
                    ContentType::SharePoint,
                    vec![record(&format!("p{i}"))],
                    Some(now - TimeDelta::minutes(50 - i)),
                )
                .content_id
        })
        .collect();
    let (start, end) = (time(now - TimeDelta::hours(1)), time(now));

    let (items, pages) = sim.list_all(&token, &start, &end).await;
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["contentId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, published, "every blob once, in the order they became available");
    assert_eq!(pages.len(), 3);
    let next = pages[0].header("NextPageUri").unwrap();
    let expected_prefix = format!(
        "{}/api/v1/{}/activity/feed/subscriptions/content?contentType=Audit.SharePoint&startTime={}&endTime={}&nextPage=",
        sim.handle.base_url(),
        sim.handle.tenant_id(),
        start.replace(':', "%3A"),
        end.replace(':', "%3A")
    );
    assert!(
        next.starts_with(&expected_prefix.replace("%3A", ":")),
        "{next}\n{expected_prefix}"
    );
    assert!(pages[2].header("NextPageUri").is_none());
    let stats = sim.handle.stats().activity;
    assert_eq!((stats.content_list, stats.content_list_next_page), (3, 2));

    // Without times, the NextPageUri carries the 24 hours before the request.
    let r = sim
        .get("subscriptions/content?contentType=Audit.SharePoint", &token)
        .await;
    let next = r.header("NextPageUri").unwrap();
    assert!(
        next.contains("&startTime=") && next.contains("&endTime=") && next.contains("&nextPage="),
        "{next}"
    );
}

#[tokio::test]
async fn blobs_are_json_arrays_behind_content_uris_with_dollar_signs() {
    let sim = start_sim(quiet()).await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let records = vec![record("b1"), record("b2")];
    let blob = audit.publish_blob(ContentType::SharePoint, records.clone(), Some(audit.now()));
    let (items, _) = sim
        .list_all(
            &token,
            &time(audit.now() - TimeDelta::hours(1)),
            &time(audit.now() + TimeDelta::hours(1)),
        )
        .await;
    let uri = items[0]["contentUri"].as_str().unwrap().to_owned();
    assert!(uri.contains('$'));

    let r = sim
        .send(
            reqwest::Method::GET,
            &format!("{uri}?PublisherIdentifier={PUBLISHER}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
    assert_eq!(r.json(), Value::Array(records));

    let encoded = uri.replace('$', "%24");
    let r = sim.send(reqwest::Method::GET, &encoded, Some(&token), None).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::BAD_REQUEST, "AF20052".to_owned()),
        "a re-encoded id"
    );
    let r = sim.get("audit/not-an-id", &token).await;
    assert_eq!(r.message(), "Content ID not-an-id in the URL is invalid.");
    let unknown = blob.content_id.replace("$04", "$05");
    let r = sim.get(&format!("audit/{unknown}"), &token).await;
    assert_eq!((r.status, r.code()), (StatusCode::NOT_FOUND, "AF20050".to_owned()));

    audit.advance_clock(Duration::from_secs(7 * 24 * 3600 + 1));
    let r = sim.get(&format!("audit/{}", blob.content_id), &token).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20051".to_owned()));
    assert_eq!(
        r.message(),
        format!(
            "Content requested with the key {} has already expired. Content older than 7 days cannot be retrieved.",
            blob.content_id
        )
    );
}

#[tokio::test]
async fn a_published_record_becomes_available_after_the_publication_delay() {
    let sim = start_sim(ActivityConfig {
        publication_delay: Duration::from_secs(3600),
        ..quiet()
    })
    .await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let t0 = audit.now();
    let a = audit.publish(ContentType::SharePoint, record("d1"));
    let b = audit.publish(ContentType::SharePoint, record("d2"));
    assert_eq!(a.content_id, b.content_id, "published together, one blob");
    let window = |now: DateTime<Utc>| (time(now - TimeDelta::hours(23)), time(now + TimeDelta::minutes(1)));

    let (s, e) = window(audit.now());
    assert!(sim.list_all(&token, &s, &e).await.0.is_empty(), "not yet");
    let r = sim.get(&format!("audit/{}", a.content_id), &token).await;
    assert_eq!(r.code(), "AF20050", "not available yet");

    audit.advance_clock(Duration::from_secs(3601));
    let (s, e) = window(audit.now());
    let (items, _) = sim.list_all(&token, &s, &e).await;
    assert_eq!(items.len(), 1);
    let created: DateTime<Utc> = items[0]["contentCreated"].as_str().unwrap().parse().unwrap();
    assert!(
        (created - (t0 + TimeDelta::hours(1))).num_seconds().abs() <= 1,
        "{created}"
    );
    let blob = sim.get(&format!("audit/{}", a.content_id), &token).await.json();
    assert_eq!(blob.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn duplicates_and_late_blobs_are_seeded_and_visible_in_the_ground_truth() {
    let sim = start_sim(ActivityConfig {
        duplicate_rate: 0.3,
        late_rate: 0.3,
        publication_delay: Duration::from_secs(60),
        late_extra_delay: Duration::from_secs(600),
        blob_window: Duration::from_millis(0),
        ..ActivityConfig::default()
    })
    .await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    for i in 0..40 {
        audit.publish(ContentType::SharePoint, record(&format!("g{i:02}")));
        audit.advance_clock(Duration::from_secs(1));
    }
    audit.advance_clock(Duration::from_secs(700));
    let truth = audit.blobs();
    let lanes = |lane| truth.iter().filter(|b| b.lane == lane).count();
    assert!(lanes(BlobLane::Duplicate) > 0 && lanes(BlobLane::Late) > 0, "{truth:?}");

    let (s, e) = (time(audit.now() - TimeDelta::hours(1)), time(audit.now()));
    let (items, _) = sim.list_all(&token, &s, &e).await;
    assert_eq!(items.len(), truth.len());
    let mut seen: Vec<String> = Vec::new();
    let mut newest_so_far = String::new();
    let mut late_seen = false;
    for item in &items {
        let body = sim
            .get(&format!("audit/{}", item["contentId"].as_str().unwrap()), &token)
            .await;
        for r in body.json().as_array().unwrap() {
            let id = r["Id"].as_str().unwrap().to_owned();
            if id < newest_so_far {
                late_seen = true;
            }
            newest_so_far = newest_so_far.max(id.clone());
            seen.push(id);
        }
    }
    let unique: std::collections::BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 40, "every record delivered");
    assert!(seen.len() > 40, "some records delivered twice");
    assert!(late_seen, "a later blob holds older records");

    // Same seed, same publishing order: every record lands in the same kinds of blobs.
    let twin = start_sim(audit.config()).await;
    for i in 0..40 {
        twin.handle
            .audit()
            .publish(ContentType::SharePoint, record(&format!("g{i:02}")));
    }
    let placement = |blobs: Vec<m365_sim::activity::PublishedBlob>| {
        let mut v: Vec<(String, String)> = blobs
            .iter()
            .flat_map(|b| {
                b.record_ids
                    .iter()
                    .map(move |id| (id.clone().unwrap(), format!("{:?}", b.lane)))
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(placement(twin.handle.audit().blobs()), placement(truth));
}

#[tokio::test]
async fn the_control_route_publishes_raw_and_malformed_records_as_one_blob() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    sim.start_sharepoint(&token).await;
    let now = sim.handle.audit().now();
    let r = sim
        .http
        .post(format!("{}/_sim/audit/records", sim.handle.base_url()))
        .json(&json!({
            "contentType": "Audit.SharePoint",
            "records": [{"Id": 5, "Operation": null}],
            "raw": ["{\"Id\":\"broken\","],
            "contentCreated": (now - TimeDelta::minutes(1)).to_rfc3339(),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let published: Value = r.json().await.unwrap();
    let id = published["content_id"].as_str().unwrap();
    let blob = sim.get(&format!("audit/{id}"), &token).await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(
        blob.text, r#"[{"Id":5,"Operation":null},{"Id":"broken",]"#,
        "served verbatim"
    );

    let truth: Value = sim
        .http
        .get(format!("{}/_sim/audit/blobs", sim.handle.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(truth[0]["content_id"], id);
    let r = sim
        .http
        .post(format!("{}/_sim/audit/records", sim.handle.base_url()))
        .json(&json!({"contentType": "Audit.Nope", "records": [{}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_tenant_without_audit_logging_gets_the_data_service_exception_until_it_is_turned_on() {
    let sim = start_sim(ActivityConfig {
        audit_log_enabled: false,
        ..quiet()
    })
    .await;
    let token = sim.token().await;
    let r = sim
        .post("subscriptions/start?contentType=Audit.SharePoint", &token)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let (code, message) = (r.code(), r.message());
    assert!(code.starts_with("StartSubscription [CorrId="), "{code}");
    assert!(code.contains(&format!("PublisherId={PUBLISHER}")), "{code}");
    let expected = format!(
        "Microsoft.Office.Compliance.Audit.DataServiceException: Tenant {} does not exist.",
        sim.handle.tenant_id()
    );
    assert!(message.contains(&expected), "{message}");
    let r = sim.get("subscriptions/list", &token).await;
    assert!(r.message().contains("DataServiceException"));
    assert_eq!(sim.handle.stats().activity.audit_log_disabled, 2);

    let r = sim
        .http
        .post(format!("{}/_sim/audit/log", sim.handle.base_url()))
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    sim.start_sharepoint(&token).await;
}

#[tokio::test]
async fn turning_the_audit_log_on_takes_the_configured_delay_to_apply() {
    let sim = start_sim(ActivityConfig {
        audit_log_enabled: false,
        audit_log_enable_delay: Duration::from_secs(3600),
        ..quiet()
    })
    .await;
    let audit = sim.handle.audit();
    let token = sim.token().await;
    audit.set_audit_log_enabled(true);
    let r = sim
        .post("subscriptions/start?contentType=Audit.SharePoint", &token)
        .await;
    assert!(r.message().contains("DataServiceException"), "not yet: {}", r.text);
    audit.advance_clock(Duration::from_secs(3599));
    assert_eq!(
        sim.get("subscriptions/list", &token).await.status,
        StatusCode::BAD_REQUEST
    );
    audit.advance_clock(Duration::from_secs(2));
    sim.start_sharepoint(&token).await;
    // Turning it off applies at once.
    audit.set_audit_log_enabled(false);
    assert_eq!(
        sim.get("subscriptions/list", &token).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn af429_arrives_as_403_with_a_single_quoted_body_or_as_429_with_retry_after() {
    let sim = start_sim(ActivityConfig {
        af429_rate: 1.0,
        af429_as_429_share: 0.0,
        ..quiet()
    })
    .await;
    let token = sim.token().await;
    let r = sim.get("audit/123$123$abc$def$04", &token).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.text,
        format!(
            "{{'error':{{'code':'AF429','message':'Too many requests. Method=GetBlob, PublisherId={PUBLISHER}'}}}}"
        )
    );
    let url = format!("{}/subscriptions/list", sim.feed());
    let r = sim.send(reqwest::Method::GET, &url, Some(&token), None).await;
    assert!(
        r.text.contains("PublisherId=00000000-0000-0000-0000-000000000000"),
        "{}",
        r.text
    );

    sim.handle
        .audit()
        .set_config(ActivityConfig {
            af429_rate: 1.0,
            af429_as_429_share: 1.0,
            ..quiet()
        })
        .unwrap();
    let r = sim.get("subscriptions/list", &token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::TOO_MANY_REQUESTS, "AF429".to_owned())
    );
    let retry_after: f64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((0.05..=0.5).contains(&retry_after));

    sim.handle
        .audit()
        .set_config(ActivityConfig {
            af50000_rate: 1.0,
            ..quiet()
        })
        .unwrap();
    let r = sim.get("subscriptions/list", &token).await;
    assert_eq!(
        (r.status, r.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "AF50000".to_owned())
    );
    let stats = sim.handle.stats().activity;
    assert_eq!((stats.af429, stats.af429_as_429, stats.af50000), (2, 1, 1));
}

#[tokio::test]
async fn af429_follows_the_configured_rate_and_a_retry_usually_succeeds() {
    let sim = start_sim(ActivityConfig {
        af429_rate: 0.3,
        ..quiet()
    })
    .await;
    let token = sim.token().await;
    let mut ok = 0;
    for _ in 0..200 {
        if sim.get("subscriptions/list", &token).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    assert!((110..170).contains(&ok), "{ok} of 200 succeeded");
}

#[tokio::test]
async fn publisher_identifier_is_counted_with_and_without() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    sim.get("subscriptions/list", &token).await;
    sim.get("subscriptions/list", &token).await;
    let url = format!("{}/subscriptions/list", sim.feed());
    sim.send(reqwest::Method::GET, &url, Some(&token), None).await;
    let stats = sim.handle.stats().activity;
    assert_eq!(
        (
            stats.requests,
            stats.with_publisher_identifier,
            stats.without_publisher_identifier
        ),
        (3, 2, 1)
    );
    assert_eq!(stats.subscriptions_list, 3);
    sim.handle.reset_stats();
    assert_eq!(sim.handle.stats().activity.requests, 0);
}

#[tokio::test]
async fn webhooks_must_be_https_with_a_future_expiration() {
    let sim = start_sim(quiet()).await;
    let token = sim.token().await;
    let url = format!(
        "{}/subscriptions/start?contentType=Audit.SharePoint&PublisherIdentifier={PUBLISHER}",
        sim.feed()
    );
    let start = |body: Value| sim.send(reqwest::Method::POST, &url, Some(&token), Some(body));

    let r = start(json!({"webhook": {"address": "http://webhook.myapp.com/o365/"}})).await;
    assert_eq!((r.status, r.code()), (StatusCode::BAD_REQUEST, "AF20021".to_owned()));
    assert!(
        r.message().ends_with("The address must begin with HTTPS."),
        "{}",
        r.message()
    );
    let r =
        start(json!({"webhook": {"address": "https://webhook.myapp.com/o365/", "expiration": "2015-01-01T00:00:00Z"}}))
            .await;
    assert_eq!(r.code(), "AF20003");
    assert_eq!(
        r.message(),
        "Expiration 2015-01-01T00:00:00Z provided is set to past date and time."
    );
    assert_eq!(
        sim.handle.audit().subscription(ContentType::SharePoint),
        SubscriptionState::None
    );

    let r = start(json!({"webhook": {"address": "https://webhook.myapp.com/o365/", "authId": "a"}})).await;
    assert_eq!(r.json()["webhook"]["authId"], "a");
    let r = start(json!({"webhook": null})).await;
    assert_eq!(r.json()["webhook"], Value::Null, "a null webhook removes it");
}

#[tokio::test]
async fn the_sim_controls_configure_grant_and_move_the_clock_over_http() {
    let sim = start_sim(quiet()).await;
    let base = sim.handle.base_url();
    let post = |path: &str, body: Value| sim.http.post(format!("{base}{path}")).json(&body).send();

    let r = post("/_sim/audit/config", json!({"content_page_size": 0}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "validated");
    let r = post("/_sim/audit/config", json!({"af429_rate": 0.7, "af50000_rate": 0.5}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        "/_sim/audit/config",
        json!({"content_page_size": 7, "publication_delay": 500}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cfg = sim.handle.audit().config();
    assert_eq!(
        (cfg.content_page_size, cfg.publication_delay),
        (7, Duration::from_millis(500))
    );
    let got: Value = sim
        .http
        .get(format!("{base}/_sim/audit/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["content_page_size"], 7);

    let r = post("/_sim/audit/permission", json!({"granted": false})).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let token = sim.token().await;
    assert_eq!(sim.get("subscriptions/list", &token).await.code(), "AF10001");
    post("/_sim/audit/permission", json!({"granted": true})).await.unwrap();
    let token = sim.token().await;
    assert_eq!(sim.get("subscriptions/list", &token).await.status, StatusCode::OK);

    let before = sim.handle.audit().now();
    let r = post("/_sim/audit/clock/advance", json!({"seconds": 3600}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(sim.handle.audit().now() - before >= TimeDelta::hours(1));
    let r = post("/_sim/audit/clock/advance", json!({"seconds": -1})).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post("/_sim/audit/subscriptions/Audit.SharePoint/disable", json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing started");
}
