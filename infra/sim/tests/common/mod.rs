//! Shared helpers for the HTTP tests: start a simulator, get tokens, make Graph calls.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use m365_sim::{SimConfig, SimHandle};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

pub struct Sim {
    pub handle: SimHandle,
    pub http: reqwest::Client,
}

/// A response, read fully.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn start(config: SimConfig) -> Sim {
    let handle = m365_sim::spawn(config).await.expect("simulator starts");
    Sim {
        handle,
        http: reqwest::Client::new(),
    }
}

impl Sim {
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.handle.login_url(),
            self.handle.tenant_id()
        )
    }

    /// POSTs a token request with these form fields to the v2 endpoint of `tenant`.
    pub async fn token_request(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        let url = format!("{}/{tenant}/oauth2/v2.0/token", self.handle.login_url());
        let resp = self.http.post(url).form(form).send().await.expect("token request sent");
        read(resp).await
    }

    /// A valid Graph token.
    pub async fn token(&self) -> String {
        let reply = self
            .token_request(
                self.handle.tenant_id(),
                &[
                    ("client_id", self.handle.client_id()),
                    ("client_secret", self.handle.client_secret()),
                    ("scope", GRAPH_SCOPE),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "token: {}", reply.body);
        reply.body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// GET of an absolute URL or of a path below `/v1.0`.
    pub async fn get(&self, token: &str, url_or_path: &str) -> Reply {
        let url = self.url(url_or_path);
        let resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        read(resp).await
    }

    /// GET of an absolute URL or of a path below `/v1.0`, with extra headers.
    pub async fn get_with(&self, token: &str, url_or_path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.http.get(self.url(url_or_path)).bearer_auth(token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// GET with `ConsistencyLevel: eventual` (advanced query parameters).
    pub async fn get_eventual(&self, token: &str, url_or_path: &str) -> Reply {
        self.get_with(token, url_or_path, &[("ConsistencyLevel", "eventual")])
            .await
    }

    /// Follows `@odata.nextLink` from `first` (with `headers` on every page); returns the items
    /// and the pages.
    pub async fn collect_pages(&self, token: &str, first: &str, headers: &[(&str, &str)]) -> (Vec<Value>, Vec<Reply>) {
        let mut items = Vec::new();
        let mut pages = Vec::new();
        let mut url = self.url(first);
        for _ in 0..10_000 {
            let page = self.get_with(token, &url, headers).await;
            assert_eq!(page.status, StatusCode::OK, "page {url}: {}", page.body);
            items.extend(page.body["value"].as_array().expect("value").iter().cloned());
            let next = page.body["@odata.nextLink"].as_str().map(str::to_owned);
            pages.push(page);
            match next {
                Some(next) => url = next,
                None => return (items, pages),
            }
        }
        panic!("paging did not end");
    }

    /// POST of JSON to an absolute URL or a path below `/v1.0`.
    pub async fn post_json(&self, token: &str, url_or_path: &str, body: &Value) -> Reply {
        let resp = self
            .http
            .post(self.url(url_or_path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent");
        read(resp).await
    }

    pub fn url(&self, url_or_path: &str) -> String {
        if url_or_path.starts_with("http") {
            url_or_path.to_owned()
        } else {
            format!("{}{url_or_path}", self.handle.graph_url())
        }
    }

    /// Follows `@odata.nextLink` from `first` until a page carries `@odata.deltaLink`; returns
    /// all items in order and the deltaLink.
    pub async fn delta_all(&self, token: &str, first: &str) -> (Vec<Value>, String) {
        let mut items = Vec::new();
        let mut url = self.url(first);
        for _ in 0..10_000 {
            let page = self.get(token, &url).await;
            assert_eq!(page.status, StatusCode::OK, "delta page {url}: {}", page.body);
            items.extend(page.body["value"].as_array().expect("value").iter().cloned());
            if let Some(next) = page.body["@odata.nextLink"].as_str() {
                url = next.to_owned();
            } else {
                let delta = page.body["@odata.deltaLink"]
                    .as_str()
                    .expect("last page has a deltaLink");
                return (items, delta.to_owned());
            }
        }
        panic!("delta did not end");
    }
}

pub async fn read(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    Reply { status, headers, body }
}

/// Asserts Graph's error envelope and returns the code.
pub fn graph_error_code(reply: &Reply) -> String {
    let err = &reply.body["error"];
    assert!(err["message"].is_string(), "error.message in {}", reply.body);
    let inner = &err["innerError"];
    assert!(inner["date"].is_string(), "innerError.date in {}", reply.body);
    assert!(
        inner["request-id"].is_string(),
        "innerError.request-id in {}",
        reply.body
    );
    err["code"].as_str().expect("error.code").to_owned()
}

/// Keeps the last occurrence of each id, in order of first appearance (delta semantics).
pub fn dedup_last_wins(items: &[Value]) -> Vec<Value> {
    let mut order: Vec<String> = Vec::new();
    let mut latest = std::collections::HashMap::new();
    for it in items {
        let id = it["id"].as_str().expect("id").to_owned();
        if latest.insert(id.clone(), it.clone()).is_none() {
            order.push(id);
        }
    }
    order
        .into_iter()
        .map(|id| latest.remove(&id).expect("present"))
        .collect()
}
