//! The baselines against the simulator over real HTTP (in process here; the benchmark runs the
//! release binary): each must send exactly the requests it claims and see the whole tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use filetrail_bench::baseline::{fetch_and_parse, naive_discovery, page_all_users};
use filetrail_bench::sim_process::{SimReady, graph_requests, stats_delta};
use filetrail_m365::{HttpTimeouts, http_client};
use m365_sim::{FilesPerDrive, SimConfig, SimHandle};

async fn sim(config: SimConfig) -> (SimHandle, SimReady, reqwest::Client) {
    let sim = m365_sim::spawn(config).await.expect("simulator starts");
    let ready = SimReady::of_handle(&sim);
    (sim, ready, http_client(HttpTimeouts::default()).expect("http client"))
}

#[tokio::test]
async fn naive_discovery_sends_one_drive_request_per_user_plus_the_users_pages() {
    let (sim, ready, http) = sim(SimConfig {
        users: 60,
        no_drive_ratio: 0.2,
        ..SimConfig::with_seed(3)
    })
    .await;
    let graph = ready.graph_client(http.clone(), "test").unwrap();
    let before = ready.stats(&http).await.unwrap();

    let seen = naive_discovery(&graph, 4).await.unwrap();

    let sent = stats_delta(&ready.stats(&http).await.unwrap(), &before);
    let tenant = sim.tenant();
    assert_eq!(seen.users, 60);
    assert_eq!(seen.user_pages, 1);
    assert_eq!(seen.drives, tenant.users_with_drive());
    assert_eq!(seen.without_drive, 60 - tenant.users_with_drive());
    assert!(
        seen.without_drive > 0,
        "the tenant should have users without a OneDrive"
    );
    assert_eq!(graph_requests(&sent), 1 + 60, "{sent:?}");
    assert_eq!(sent.batch, 0);
}

#[tokio::test]
async fn fetch_and_parse_walks_every_page_and_sees_each_item_once() {
    let (sim, ready, http) = sim(SimConfig {
        users: 12,
        files_per_drive: FilesPerDrive::Range { min: 5, max: 40 },
        page_size_default: 10,
        ..SimConfig::with_seed(5)
    })
    .await;
    let tenant = sim.tenant();
    let drives: Vec<String> = tenant
        .users()
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    let expected: u64 = drives.iter().map(|d| tenant.drive_items(d).count() as u64).sum();
    let graph = ready.graph_client(http.clone(), "test").unwrap();
    let before = ready.stats(&http).await.unwrap();

    let walks = fetch_and_parse(&graph, &drives, 3).await.unwrap();

    let sent = stats_delta(&ready.stats(&http).await.unwrap(), &before);
    assert_eq!(walks.drives, drives.len() as u64);
    assert_eq!(walks.unique_items, expected);
    assert!(walks.items >= expected);
    assert!(
        walks.pages > walks.drives,
        "pages of 10 items force several pages per drive"
    );
    assert_eq!(sent.delta, walks.pages, "{sent:?}");
}

#[tokio::test]
async fn paging_the_whole_directory_counts_each_user_once() {
    let (_sim, ready, http) = sim(SimConfig {
        users: 2100,
        ..SimConfig::with_seed(9)
    })
    .await;
    let graph = ready.graph_client(http, "test").unwrap();

    let walk = page_all_users(&graph).await.unwrap();

    assert_eq!(walk.pages, 3, "999 + 999 + 102 users");
    assert_eq!(walk.users, 2100);
    assert_eq!(walk.unique_users, 2100);
}
