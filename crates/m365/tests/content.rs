//! Streaming downloads against m365-sim over real HTTP (and a scripted server for what the
//! simulator never does): digests equal the simulator's own, dropped connections resume with
//! `Range`, expired URLs are refreshed through `/content`, deleted and modified files are told
//! apart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use filetrail_core::digest::{Digests, DualHasher, HashError};
use filetrail_m365::content::{Download, DownloadOutcome, DownloadRequest, FileVersion};
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use m365_sim::{DriveChange, FaultConfig, FilesPerDrive, SimConfig, SimHandle, SimItem};
use serde_json::json;
use support::{Reply, serve, token_reply};

const CONNECTION: &str = "sim-tenant";
const MIB: u64 = 1 << 20;

fn config() -> SimConfig {
    SimConfig {
        users: 3,
        no_drive_ratio: 0.0,
        files_per_drive: FilesPerDrive::Fixed(20),
        ..SimConfig::default()
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

fn drive(sim: &SimHandle) -> String {
    sim.tenant().drive_of_user(0).unwrap().id
}

/// A small generated file of the first drive.
fn small_file(sim: &SimHandle) -> SimItem {
    let drive = drive(sim);
    sim.tenant()
        .drive_items(&drive)
        .filter(|i| !i.is_folder && i.size > 0 && i.size < 400_000)
        .min_by_key(|i| i.size)
        .unwrap()
}

/// Gives a generated file a new version of `size` bytes (new cTag and eTag), as an edit would.
fn rewrite(sim: &SimHandle, item: &SimItem, size: u64, version: u32) -> SimItem {
    let mut next = item.clone();
    next.size = size;
    next.ctag = Some(format!("\"c:{{{}}},{version}\"", &item.id[2..]));
    next.etag = format!("\"{{{}}},{version}\"", &item.id[2..]);
    sim.apply_drive_change(&drive(sim), DriveChange::Upsert(Box::new(next.clone())))
        .unwrap();
    next
}

/// The digests of the item's current content, computed from the simulator's generator (no HTTP).
fn reference(sim: &SimHandle, item_id: &str) -> Digests {
    let mut reader = sim.content(&drive(sim), item_id).unwrap().reader();
    let mut hasher = DualHasher::new().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finish().unwrap();
        }
        hasher.update_from_slice(&buf[..n]).unwrap();
    }
}

fn complete(download: &Download) -> &FileVersion {
    match &download.outcome {
        DownloadOutcome::Complete { version } => version,
        other => panic!("expected a complete download, got {other:?}"),
    }
}

#[tokio::test]
async fn a_small_file_arrives_byte_for_byte_with_its_version() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let item = small_file(&sim);
    let mut got: Vec<u8> = Vec::new();
    let mut sink = |chunk: Bytes| -> Result<(), std::convert::Infallible> {
        got.extend_from_slice(&chunk);
        Ok(())
    };

    let download = graph.download(&drive(&sim), &item.id, &mut sink).await.unwrap();

    let version = complete(&download);
    assert_eq!(version.size, item.size);
    assert_eq!(version.ctag, item.ctag);
    assert_eq!(version.etag.as_deref(), Some(item.etag.as_str()));
    let mut expected = Vec::new();
    sim.content(&drive(&sim), &item.id)
        .unwrap()
        .reader()
        .read_to_end(&mut expected)
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(download.bytes_delivered, item.size);
    assert_eq!((download.download_requests, download.resumes), (1, 0));
    let stats = sim.stats();
    assert_eq!(stats.item, 1, "one item GET for the version and the URL");
    assert_eq!(stats.content_redirects, 0, "the item's downloadUrl was used directly");
    assert_eq!(stats.content_downloads, 1);
    assert_eq!(
        stats.content_with_authorization, 0,
        "no Graph token to the download host"
    );
}

#[tokio::test]
async fn a_multi_mib_file_hashes_to_the_simulators_digests() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let item = rewrite(&sim, &small_file(&sim), 24 * MIB + 5, 2);
    let mut hasher = DualHasher::new().unwrap();

    let download = graph.download(&drive(&sim), &item.id, &mut hasher).await.unwrap();

    assert_eq!(complete(&download).size, item.size);
    let digests = hasher.finish().unwrap();
    assert_eq!(digests, reference(&sim, &item.id));
    assert_eq!(digests.bytes, item.size);
    assert_eq!(sim.stats().content_bytes, item.size);
}

#[tokio::test]
async fn dropped_connections_resume_with_range_to_the_same_digests() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let item = rewrite(&sim, &small_file(&sim), 6 * MIB + 77, 2);
    sim.set_faults(FaultConfig {
        content_drop_rate: 1.0,
        content_drop_after_bytes: (MIB / 2, 2 * MIB),
        ..FaultConfig::default()
    });
    let mut hasher = DualHasher::new().unwrap();

    let download = graph.download(&drive(&sim), &item.id, &mut hasher).await.unwrap();

    complete(&download);
    assert_eq!(hasher.finish().unwrap(), reference(&sim, &item.id));
    let stats = sim.stats();
    assert!(stats.faults.content_dropped >= 3, "{:?}", stats.faults);
    assert!(download.resumes >= 3, "{download:?}");
    assert_eq!(
        stats.content_range,
        u64::from(download.resumes),
        "every resume is a Range request answered 206"
    );
    assert_eq!(stats.content_downloads, u64::from(download.download_requests));
    assert_eq!(download.bytes_delivered, item.size, "no byte delivered twice");
}

#[tokio::test]
async fn an_expired_download_url_is_replaced_through_content() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let item = rewrite(&sim, &small_file(&sim), 3 * MIB, 2);
    // Every body is cut after 1 MiB, and every URL issued so far expires once the first bytes
    // arrived: the resume meets a 401 and must fetch a new URL.
    sim.set_faults(FaultConfig {
        content_drop_rate: 1.0,
        content_drop_after_bytes: (MIB, MIB),
        ..FaultConfig::default()
    });
    let control = sim.control();
    let mut hasher = DualHasher::new().unwrap();
    let mut expired = false;
    let mut sink = |chunk: Bytes| -> Result<(), HashError> {
        if !expired {
            control.expire_download_urls();
            expired = true;
        }
        hasher.update(chunk)
    };

    let download = graph.download(&drive(&sim), &item.id, &mut sink).await.unwrap();

    complete(&download);
    assert_eq!(hasher.finish().unwrap(), reference(&sim, &item.id));
    assert_eq!(download.url_refreshes, 1, "{download:?}");
    let stats = sim.stats();
    assert_eq!(stats.content_expired, 1);
    assert_eq!(stats.content_redirects, 1, "the new URL came from /content's 302");
    assert_eq!(stats.content_with_authorization, 0);
}

#[tokio::test]
async fn a_deleted_item_is_not_found_and_a_folder_is_not_a_file() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let drive = drive(&sim);
    let item = small_file(&sim);
    sim.apply_drive_change(
        &drive,
        DriveChange::Delete {
            item_id: item.id.clone(),
        },
    )
    .unwrap();
    let mut delivered = 0u64;
    let mut sink = |chunk: Bytes| -> Result<(), std::convert::Infallible> {
        delivered += chunk.len() as u64;
        Ok(())
    };

    let download = graph.download(&drive, &item.id, &mut sink).await.unwrap();
    assert_eq!(download.outcome, DownloadOutcome::NotFound);
    let never = sim.allocate_item_id(&drive).unwrap();
    let download = graph.download(&drive, &never, &mut sink).await.unwrap();
    assert_eq!(download.outcome, DownloadOutcome::NotFound);

    let folder = sim.tenant().drive_items(&drive).find(|i| i.is_folder).unwrap();
    let download = graph.download(&drive, &folder.id, &mut sink).await.unwrap();
    assert_eq!(download.outcome, DownloadOutcome::NotAFile);
    assert_eq!(delivered, 0);
    assert!(!graph.item_info(&drive, &folder.id).await.unwrap().unwrap().is_file);
    assert_eq!(graph.item_info(&drive, &item.id).await.unwrap(), None);
    assert_eq!(sim.stats().content_downloads, 0);
}

#[tokio::test]
async fn a_modified_file_gives_new_digests_and_a_stale_continuation_is_refused() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let drive = drive(&sim);
    let item = small_file(&sim);
    let mut first = DualHasher::new().unwrap();
    let v1 = complete(&graph.download(&drive, &item.id, &mut first).await.unwrap()).clone();
    let first = first.finish().unwrap();

    let edited = rewrite(&sim, &item, item.size + 1000, 7);
    let mut second = DualHasher::new().unwrap();
    let v2 = complete(&graph.download(&drive, &item.id, &mut second).await.unwrap()).clone();
    let second = second.finish().unwrap();

    assert_ne!(first, second);
    assert_eq!(second, reference(&sim, &item.id));
    assert_eq!(v2.ctag, edited.ctag);
    assert_ne!(v1.ctag, v2.ctag);

    // A continuation of the old version must not mix in the new bytes.
    let mut sink = |_: Bytes| -> Result<(), std::convert::Infallible> { panic!("no byte of another version") };
    let request = DownloadRequest::new(&drive, &item.id).starting_at(10, v1);
    let download = graph.download_from(&request, &mut sink).await.unwrap();
    assert_eq!(download.outcome, DownloadOutcome::Changed { current: v2 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_between_chunks_and_the_continuation_completes_the_digests() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let drive = drive(&sim);
    let item = rewrite(&sim, &small_file(&sim), 8 * MIB, 2);
    let mut hasher = DualHasher::new().unwrap();
    // The first chunk takes longer than the time left, whatever the machine's speed: the
    // download stops after it (a chunk is far below the file's 8 MiB).
    let mut first = true;
    let mut slow = |chunk: Bytes| -> Result<(), HashError> {
        if std::mem::take(&mut first) {
            std::thread::sleep(Duration::from_millis(1500));
        }
        hasher.update(chunk)
    };

    let request = DownloadRequest::new(&drive, &item.id).until(Instant::now() + Duration::from_millis(1000));
    let download = graph.download_from(&request, &mut slow).await.unwrap();
    let DownloadOutcome::Stopped { version, offset } = download.outcome.clone() else {
        panic!("expected to stop at the deadline: {download:?}");
    };
    assert!(offset > 0 && offset < item.size, "{offset}");
    assert_eq!(download.bytes_delivered, offset);

    let rest = graph
        .download_from(
            &DownloadRequest::new(&drive, &item.id).starting_at(offset, version),
            &mut slow,
        )
        .await
        .unwrap();
    complete(&rest);
    assert_eq!(rest.bytes_delivered, item.size - offset);
    assert_eq!(hasher.finish().unwrap(), reference(&sim, &item.id));
    assert_eq!(
        sim.stats().content_range,
        1,
        "the continuation asked for the rest with Range"
    );
}

#[tokio::test]
async fn throttled_content_and_downloads_are_retried_after_retry_after() {
    let sim = m365_sim::spawn(config()).await.unwrap();
    let graph = client(&sim);
    let item = rewrite(&sim, &small_file(&sim), 2 * MIB, 2);
    sim.set_faults(FaultConfig {
        content_throttle_rate: 0.6,
        content_drop_rate: 0.5,
        content_drop_after_bytes: (100_000, 900_000),
        retry_after_secs: (0.01, 0.04),
        ..FaultConfig::default()
    });
    sim.expire_download_urls();
    let mut hasher = DualHasher::new().unwrap();

    // The item's URL is fresh, but force a /content round by expiring once more mid-way.
    let control = sim.control();
    let mut seen = 0u64;
    let mut sink = |chunk: Bytes| -> Result<(), HashError> {
        seen += chunk.len() as u64;
        if seen >= MIB && seen - (chunk.len() as u64) < MIB {
            control.expire_download_urls();
        }
        hasher.update(chunk)
    };
    let download = graph.download(&drive(&sim), &item.id, &mut sink).await.unwrap();

    complete(&download);
    assert_eq!(hasher.finish().unwrap(), reference(&sim, &item.id));
    assert!(sim.stats().faults.content_throttled > 0);
    assert!(graph.throttled() > 0, "throttling went through the client's gate");
}

#[tokio::test]
async fn a_range_answered_200_is_skipped_and_content_redirects_are_followed_without_the_token() {
    // Scripted: the item has no downloadUrl, /content answers 302, and the download host ignores
    // Range (200 with the full body:
    // https://learn.microsoft.com/en-us/graph/api/driveitem-get-content#partial-range-downloads).
    let body = "0123456789abcdefghij";
    let server = serve(move |r, _| {
        if r.target.contains("/oauth2/") {
            return token_reply("graph-token");
        }
        if r.target.ends_with("/content") {
            return Reply::json(302, json!(null)).with_header("Location", "/download/f?tempauth=x");
        }
        if r.target.starts_with("/download/") {
            return Reply::Respond {
                status: 200,
                headers: vec![("content-type".into(), "application/octet-stream".into())],
                body: body.to_owned(),
            };
        }
        Reply::json(
            200,
            json!({"id": "i1", "size": 20, "eTag": "\"{E},1\"", "cTag": "\"c:{E},1\"", "file": {}}),
        )
    })
    .await;
    let cloud = Cloud::custom(&server.base, &format!("{}/v1.0", server.base), &server.base).unwrap();
    let credentials = Credentials {
        tenant_id: "contoso".to_owned(),
        client_id: "app".to_owned(),
        secret: ClientSecret::new("s"),
    };
    let graph = GraphClient::connect(
        http_client(HttpTimeouts::default()).unwrap(),
        &cloud,
        credentials,
        CONNECTION,
        RetryPolicy::fast(),
    )
    .unwrap();
    let info = graph.item_info("d1", "i1").await.unwrap().unwrap();
    assert!(info.is_file);
    let version = info.version;
    let mut got = b"0123456789".to_vec();
    let mut sink = |chunk: Bytes| -> Result<(), std::convert::Infallible> {
        got.extend_from_slice(&chunk);
        Ok(())
    };

    let request = DownloadRequest::new("d1", "i1").starting_at(10, version);
    let download = graph.download_from(&request, &mut sink).await.unwrap();

    complete(&download);
    assert_eq!(got, body.as_bytes());
    assert_eq!((download.ranges_ignored, download.url_refreshes), (1, 1));
    let content = server.seen("/v1.0/drives/d1/items/i1/content");
    assert_eq!(content.len(), 1);
    assert_eq!(content[0].header("authorization"), Some("Bearer graph-token"));
    let downloads = server.seen("/download/");
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0].header("range"), Some("bytes=10-"));
    assert_eq!(downloads[0].header("authorization"), None, "the token stays with Graph");
}
