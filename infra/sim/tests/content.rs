//! Item content over HTTP: `/content` redirects, download URLs (bytes, ranges, expiry), faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::time::Duration;

use common::{Sim, graph_error_code, start};
use m365_sim::{DriveChange, FaultConfig, FilesPerDrive, SimConfig, SimItem};
use reqwest::StatusCode;
use serde_json::Value;

fn config() -> SimConfig {
    SimConfig {
        users: 4,
        no_drive_ratio: 0.0,
        files_per_drive: FilesPerDrive::Fixed(30),
        ..SimConfig::default()
    }
}

/// A client that follows no redirect and sends no token (what a download needs).
fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The first user's drive id and its files of at least `min_size` bytes.
fn files(sim: &Sim, min_size: u64) -> (String, Vec<SimItem>) {
    let drive = sim.handle.tenant().drive_of_user(0).unwrap().id;
    let files = sim
        .handle
        .tenant()
        .drive_items(&drive)
        .filter(|i| !i.is_folder && i.size >= min_size)
        .collect();
    (drive, files)
}

fn expected_bytes(sim: &Sim, drive: &str, item: &str) -> Vec<u8> {
    let mut out = Vec::new();
    sim.handle
        .content(drive, item)
        .unwrap()
        .reader()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// `GET …/content` without following the redirect.
async fn content(sim: &Sim, token: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = plain().get(sim.url(path)).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn location(sim: &Sim, token: &str, drive: &str, item: &str) -> String {
    let resp = content(sim, token, &format!("/drives/{drive}/items/{item}/content"), &[]).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    resp.headers()["location"].to_str().unwrap().to_owned()
}

async fn json_of(resp: reqwest::Response) -> Value {
    serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn content_redirects_to_a_pre_authenticated_url_serving_the_items_bytes() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let file = &files[0];

    let url = location(&sim, &token, &drive, &file.id).await;
    assert!(url.starts_with(&sim.handle.base_url()), "{url}");
    assert!(url.contains("/_layouts/15/download.aspx?UniqueId="), "{url}");
    assert!(url.contains("&tempauth="), "{url}");

    // The download needs no Authorization.
    let resp = plain().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        file.size.to_string()
    );
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), file.etag);
    assert_eq!(resp.headers()["accept-ranges"].to_str().unwrap(), "bytes");
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], &expected_bytes(&sim, &drive, &file.id)[..]);

    let stats = sim.handle.stats();
    assert_eq!(stats.content, 1);
    assert_eq!(stats.content_redirects, 1);
    assert_eq!(stats.content_downloads, 1);
    assert_eq!(stats.content_with_authorization, 0);
    assert_eq!(stats.content_bytes, file.size);
}

#[tokio::test]
async fn item_get_carries_the_download_url_and_delta_does_not() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let file = &files[0];

    let item = sim.get(&token, &format!("/drives/{drive}/items/{}", file.id)).await;
    let url = item.body["@microsoft.graph.downloadUrl"].as_str().unwrap();
    let body = plain().get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], &expected_bytes(&sim, &drive, &file.id)[..]);

    let root = sim.get(&token, &format!("/drives/{drive}/root")).await;
    assert!(
        root.body.get("@microsoft.graph.downloadUrl").is_none(),
        "folders have none"
    );
    let (items, _) = sim.delta_all(&token, &format!("/drives/{drive}/root/delta")).await;
    assert!(items.iter().all(|i| i.get("@microsoft.graph.downloadUrl").is_none()));
}

#[tokio::test]
async fn users_path_works_and_if_none_match_with_the_current_etag_or_ctag_is_304() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (_, files) = files(&sim, 1);
    let file = &files[0];
    let upn = sim.handle.tenant().user(0).user_principal_name;
    let path = format!("/users/{upn}/drive/items/{}/content", file.id);

    assert_eq!(content(&sim, &token, &path, &[]).await.status(), StatusCode::FOUND);
    for tag in [file.etag.as_str(), file.ctag.as_deref().unwrap()] {
        let resp = content(&sim, &token, &path, &[("if-none-match", tag)]).await;
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED, "{tag}");
        assert!(resp.bytes().await.unwrap().is_empty());
    }
    let stale = content(
        &sim,
        &token,
        &path,
        &[("if-none-match", "\"{00000000-0000-0000-0000-000000000000},1\"")],
    )
    .await;
    assert_eq!(stale.status(), StatusCode::FOUND);
    let stats = sim.handle.stats();
    assert_eq!(
        (stats.content, stats.content_redirects, stats.content_not_modified),
        (4, 2, 2)
    );
}

#[tokio::test]
async fn folders_unknown_and_deleted_items_get_the_documented_errors() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let folder = sim.handle.tenant().drive_items(&drive).find(|i| i.is_folder).unwrap();

    let resp = content(
        &sim,
        &token,
        &format!("/drives/{drive}/items/{}/content", folder.id),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(resp).await["error"]["code"], "notSupported");

    let unknown = sim.handle.allocate_item_id(&drive).unwrap();
    let resp = content(&sim, &token, &format!("/drives/{drive}/items/{unknown}/content"), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let reply = common::read(resp).await;
    assert_eq!(graph_error_code(&reply), "itemNotFound");

    // A URL issued before the deletion stops working with it.
    let file = &files[0];
    let url = location(&sim, &token, &drive, &file.id).await;
    sim.handle
        .apply_drive_change(
            &drive,
            DriveChange::Delete {
                item_id: file.id.clone(),
            },
        )
        .unwrap();
    let resp = content(&sim, &token, &format!("/drives/{drive}/items/{}/content", file.id), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(plain().get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ranges_on_the_download_url_answer_206_or_416() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 2_000);
    let file = &files[0];
    let size = file.size;
    let all = expected_bytes(&sim, &drive, &file.id);
    let url = location(&sim, &token, &drive, &file.id).await;
    let get = |range: String| plain().get(&url).header("Range", range).send();

    for (range, start, end) in [
        ("bytes=0-1023".to_owned(), 0, 1023),
        ("bytes=1000-".to_owned(), 1000, size - 1),
        ("bytes=-100".to_owned(), size - 100, size - 1),
        (format!("bytes=7-{}", size + 50), 7, size - 1),
    ] {
        let resp = get(range.clone()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            resp.headers()["content-range"].to_str().unwrap(),
            format!("bytes {start}-{end}/{size}"),
            "{range}"
        );
        let body = resp.bytes().await.unwrap();
        assert_eq!(&body[..], &all[start as usize..=end as usize], "{range}");
    }

    let resp = get(format!("bytes={size}-")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes */{size}")
    );
    assert_eq!(json_of(resp).await["error"]["code"], "invalidRange");

    // Range on /content itself is ignored: still a 302 (Range goes to the download URL:
    // https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#partial-range-downloads).
    let path = format!("/drives/{drive}/items/{}/content", file.id);
    let resp = content(&sim, &token, &path, &[("Range", "bytes=0-9")]).await;
    assert_eq!(resp.status(), StatusCode::FOUND);

    let stats = sim.handle.stats();
    assert_eq!(stats.content_range, 4);
    assert_eq!(stats.content_range_unsatisfiable, 1);
}

#[tokio::test]
async fn expired_download_urls_answer_401_and_new_ones_work() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let file = &files[0];
    let old = location(&sim, &token, &drive, &file.id).await;

    sim.handle.expire_download_urls();
    let resp = plain().get(&old).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(resp).await;
    assert_eq!(body["error"]["code"], "unauthenticated");
    assert_eq!(body["error"]["innerError"]["code"], "expiredToken");
    assert!(body["error"]["message"].as_str().unwrap().contains("has expired"));

    let fresh = location(&sim, &token, &drive, &file.id).await;
    assert_eq!(plain().get(&fresh).send().await.unwrap().status(), StatusCode::OK);

    // The same control over HTTP.
    let resp = plain()
        .post(format!("{}/_sim/content/expire-download-urls", sim.handle.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        plain().get(&fresh).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // A forged or altered token is refused too.
    let forged = fresh.replace("tempauth=", "tempauth=x");
    assert_eq!(
        plain().get(&forged).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(sim.handle.stats().content_expired, 3);
}

#[tokio::test]
async fn download_urls_expire_after_their_lifetime() {
    let sim = start(SimConfig {
        download_url_lifetime: Duration::ZERO,
        ..config()
    })
    .await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let url = location(&sim, &token, &drive, &files[0].id).await;
    assert_eq!(
        plain().get(&url).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    sim.handle.set_download_url_lifetime(Duration::from_secs(3600));
    let url = location(&sim, &token, &drive, &files[0].id).await;
    assert_eq!(plain().get(&url).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_modified_file_serves_the_bytes_of_its_new_version() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let before = files[0].clone();
    let old_bytes = expected_bytes(&sim, &drive, &before.id);

    let mut after = before.clone();
    after.size = 5 * (1 << 20) + 3;
    after.ctag = Some(before.ctag.clone().unwrap().replace("},", "},9"));
    after.etag = before.etag.replace("},", "},9");
    sim.handle
        .apply_drive_change(&drive, DriveChange::Upsert(Box::new(after.clone())))
        .unwrap();

    let url = location(&sim, &token, &drive, &before.id).await;
    let resp = plain().get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), after.etag);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body.len() as u64, after.size);
    let new_bytes = expected_bytes(&sim, &drive, &before.id);
    assert_eq!(&body[..], &new_bytes[..]);
    let common = old_bytes.len().min(64);
    assert_ne!(
        &old_bytes[..common],
        &new_bytes[..common],
        "a new version has new bytes"
    );

    // The same bytes without HTTP, from the item alone.
    let mut direct = Vec::new();
    m365_sim::content::bytes_of(&drive, &after)
        .unwrap()
        .read_to_end(&mut direct)
        .unwrap();
    assert_eq!(direct, new_bytes);
}

#[tokio::test]
async fn cut_bodies_resume_with_range_to_the_same_bytes() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 50_000);
    let file = files.iter().min_by_key(|f| f.size).unwrap();
    let all = expected_bytes(&sim, &drive, &file.id);
    let url = location(&sim, &token, &drive, &file.id).await;
    sim.handle.set_faults(FaultConfig {
        content_drop_rate: 1.0,
        content_drop_after_bytes: (20_000, 20_000),
        ..FaultConfig::default()
    });

    let mut got: Vec<u8> = Vec::new();
    let mut cuts = 0;
    while (got.len() as u64) < file.size {
        let mut resp = plain()
            .get(&url)
            .header("Range", format!("bytes={}-", got.len()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(_) => {
                    cuts += 1;
                    break;
                }
            }
        }
        assert!(cuts < 10_000, "no progress");
    }
    assert_eq!(got, all);
    let expected_cuts = (file.size - 1) / 20_000;
    assert_eq!(cuts, expected_cuts, "every body longer than 20,000 bytes is cut once");
    assert_eq!(sim.handle.stats().faults.content_dropped, expected_cuts);
}

#[tokio::test]
async fn content_and_downloads_are_throttled_with_retry_after() {
    let sim = start(config()).await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let url = location(&sim, &token, &drive, &files[0].id).await;
    sim.handle.set_faults(FaultConfig {
        content_throttle_rate: 1.0,
        retry_after_secs: (0.1, 3.0),
        ..FaultConfig::default()
    });
    let mut decimals = 0;
    for _ in 0..20 {
        let resp = content(
            &sim,
            &token,
            &format!("/drives/{drive}/items/{}/content", files[0].id),
            &[],
        )
        .await;
        let dl = plain().get(&url).send().await.unwrap();
        for r in [resp, dl] {
            assert!(
                matches!(
                    r.status(),
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{}",
                r.status()
            );
            let after = r.headers()["retry-after"].to_str().unwrap().to_owned();
            let secs: f64 = after.parse().unwrap();
            assert!((0.1..=3.0).contains(&secs), "{after}");
            decimals += usize::from(after.contains('.'));
        }
    }
    assert!(decimals > 0, "some Retry-After values are decimal");
    let stats = sim.handle.stats();
    assert_eq!(stats.faults.content_throttled, 40);
    assert_eq!(stats.content_redirects, 1);
}

/// All of a response's bytes, following nothing.
async fn bytes_at(url: &str) -> (StatusCode, Vec<u8>) {
    let resp = plain().get(url).send().await.unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn previous_versions_are_listed_newest_first_and_served_while_kept() {
    use m365_sim::{Activity, ActivityKind, ActivityRequest};
    let sim = start(SimConfig {
        versions_kept: 3,
        ..config()
    })
    .await;
    let token = sim.token().await;
    let (drive, files) = files(&sim, 1);
    let file = &files[0];
    let modify = |size: u64| {
        let mut a = Activity::new(ActivityKind::Modify, drive.clone()).item(file.id.clone());
        a.size = Some(size);
        a
    };
    let ops = sim
        .handle
        .inject_activity(&ActivityRequest {
            operations: vec![modify(1_000), modify(2_000), modify(3_000)],
            random: None,
            return_records: false,
        })
        .unwrap()
        .operations;

    // Four versions made, three kept: 2.0 (1,000 bytes), 3.0, and 4.0 the current one.
    let listed = sim
        .get(&token, &format!("/drives/{drive}/items/{}/versions", file.id))
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    let value = listed.body["value"].as_array().unwrap();
    let ids: Vec<&str> = value.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["4.0", "3.0", "2.0"]);
    let sizes: Vec<u64> = value.iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [3_000, 2_000, 1_000]);
    assert!(value[0]["lastModifiedDateTime"].as_str().is_some());
    assert!(value[0]["lastModifiedBy"]["user"]["displayName"].as_str().is_some());

    // A previous version's bytes are those the activity left then.
    let resp = content(
        &sim,
        &token,
        &format!("/drives/{drive}/items/{}/versions/2.0/content", file.id),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let (status, body) = bytes_at(resp.headers()["location"].to_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let mut expected = Vec::new();
    m365_sim::content::Content::new(&drive, &file.id, ops[0].ctag.as_deref().unwrap(), 1_000)
        .reader()
        .read_to_end(&mut expected)
        .unwrap();
    assert_eq!(body, expected);
    assert_eq!(sim.handle.stats().version_downloads, 1);

    // The current version only through the item; 1.0 is no longer kept.
    let current = content(
        &sim,
        &token,
        &format!("/drives/{drive}/items/{}/versions/4.0/content", file.id),
        &[],
    )
    .await;
    assert_eq!(current.status(), StatusCode::BAD_REQUEST);
    let gone = content(
        &sim,
        &token,
        &format!("/drives/{drive}/items/{}/versions/1.0/content", file.id),
        &[],
    )
    .await;
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let missing = sim
        .get(&token, &format!("/drives/{drive}/items/01NOSUCHITEM/versions"))
        .await;
    assert_eq!(graph_error_code(&missing), "itemNotFound");
}
