//! The Graph client against m365-sim over real HTTP: results equal the simulated tenant's ground
//! truth, with and without injected faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Context, Result, bail};
use filetrail_core::model::{DeltaNext, DriveLookup};
use filetrail_core::ports::{DeltaError, Directory, DriveDelta, DriveFinder};
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use m365_sim::{FaultConfig, SimConfig};

const CONNECTION: &str = "sim-tenant";

fn client_for(sim: &m365_sim::SimHandle, secret: &str) -> GraphClient {
    let cloud = Cloud::custom(&sim.login_url(), &sim.graph_url(), &sim.login_url()).unwrap();
    let credentials = Credentials {
        tenant_id: sim.tenant_id().to_owned(),
        client_id: sim.client_id().to_owned(),
        secret: ClientSecret::new(secret),
    };
    let http = http_client(HttpTimeouts::default()).unwrap();
    GraphClient::connect(http, &cloud, credentials, CONNECTION, RetryPolicy::fast()).unwrap()
}

fn client(sim: &m365_sim::SimHandle) -> GraphClient {
    client_for(sim, sim.client_secret())
}

fn faults() -> FaultConfig {
    FaultConfig {
        throttle_rate: 0.2,
        retry_after_secs: (0.01, 0.05),
        error_5xx_rate: 0.05,
        drop_rate: 0.02,
        batch_inner_throttle_rate: 0.2,
        ..FaultConfig::default()
    }
}

/// Every user id, page by page through the port.
async fn all_users(graph: &GraphClient) -> Result<(Vec<filetrail_core::model::DirectoryUser>, usize)> {
    let mut users = Vec::new();
    let mut link: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = Directory::users_page(graph, link.as_deref()).await?;
        pages += 1;
        users.extend(page.users);
        match page.next_link {
            Some(next) => link = Some(next),
            None => return Ok((users, pages)),
        }
    }
}

/// What the inventory keeps of an item: name, parent, folder flag, size.
type ItemView = (String, Option<String>, bool, u64);

/// Walks a drive's delta from `start` to its delta link, applying items (last occurrence wins,
/// deleted items removed). Returns the items without the root, the delta link and the page count.
async fn walk(
    graph: &GraphClient,
    drive_id: &str,
    start: Option<String>,
) -> Result<(BTreeMap<String, ItemView>, String, usize), DeltaError> {
    let mut items = BTreeMap::new();
    let mut link = start;
    let mut pages = 0;
    loop {
        let page = DriveDelta::delta_page(graph, drive_id, link.as_deref()).await?;
        pages += 1;
        for item in page.items {
            if item.deleted {
                items.remove(&item.id);
            } else if !item.is_root {
                let view = (
                    item.name.unwrap_or_default(),
                    item.parent_id,
                    item.is_folder,
                    item.size.unwrap_or(0),
                );
                items.insert(item.id, view);
            }
        }
        match page.next {
            DeltaNext::NextLink(next) => link = Some(next),
            DeltaNext::DeltaLink(delta) => return Ok((items, delta, pages)),
        }
    }
}

fn ground_truth_items(config: &SimConfig, drive_id: &str) -> BTreeMap<String, ItemView> {
    config
        .tenant()
        .drive_items(drive_id)
        .map(|i| (i.id.clone(), (i.name.clone(), i.parent_id.clone(), i.is_folder, i.size)))
        .collect()
}

/// The tenant's answer to "which drive does each user have?", by user id.
fn ground_truth_drives(config: &SimConfig) -> HashMap<String, Option<String>> {
    let tenant = config.tenant();
    (0..tenant.user_count())
        .map(|i| {
            let user = tenant.user(i);
            let drive = tenant.drive_of_user(i).map(|d| d.id);
            assert_eq!(user.has_drive, drive.is_some());
            (user.id, drive)
        })
        .collect()
}

fn found_drives(
    users: &[filetrail_core::model::DirectoryUser],
    lookups: &[DriveLookup],
) -> Result<HashMap<String, Option<String>>> {
    if users.len() != lookups.len() {
        bail!("{} lookups for {} users", lookups.len(), users.len());
    }
    Ok(users
        .iter()
        .zip(lookups)
        .map(|(u, l)| {
            let drive = match l {
                DriveLookup::Found(d) => {
                    assert!(d.is_personal_onedrive(), "user drives are business drives: {d:?}");
                    Some(d.id.clone())
                }
                DriveLookup::NoDrive { reason } => {
                    assert!(!reason.is_empty());
                    None
                }
            };
            (u.id.clone(), drive)
        })
        .collect())
}

fn first_drive(config: &SimConfig) -> Result<String> {
    let tenant = config.tenant();
    (0..tenant.user_count())
        .find_map(|i| tenant.drive_of_user(i))
        .map(|d| d.id)
        .context("a user with a drive")
}

#[tokio::test]
async fn users_paging_returns_every_user_exactly_once() -> Result<()> {
    let config = SimConfig {
        users: 2_100,
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);

    let (users, pages) = all_users(&graph).await?;

    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no user twice");
    let expected: HashSet<String> = ground_truth_drives(&config).into_keys().collect();
    assert_eq!(ids.into_iter().collect::<HashSet<_>>(), expected);
    assert_eq!(pages, 3, "2,100 users at $top=999");
    assert!(users.iter().all(|u| u.user_principal_name.contains('@')));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn drives_are_found_for_users_with_one_and_no_drive_for_the_others() -> Result<()> {
    let config = SimConfig {
        users: 50,
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);
    let (users, _) = all_users(&graph).await?;

    let lookups = DriveFinder::find_drives(&graph, &users).await?;

    assert_eq!(found_drives(&users, &lookups)?, ground_truth_drives(&config));
    assert!(
        lookups.iter().any(|l| matches!(l, DriveLookup::NoDrive { .. })),
        "the tenant has users without a drive"
    );
    let stats = sim.stats();
    assert_eq!(stats.batch, 3, "50 users in $batch envelopes of 20: 20 + 20 + 10");
    assert_eq!(stats.batch_inner, 50);
    assert_eq!(graph.stats().batched, 50);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn inner_batch_throttling_is_retried_until_every_user_is_answered() -> Result<()> {
    let config = SimConfig {
        users: 60,
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);
    let (users, _) = all_users(&graph).await?;
    sim.set_faults(FaultConfig {
        batch_inner_throttle_rate: 0.3,
        retry_after_secs: (0.01, 0.05),
        ..FaultConfig::default()
    });

    let lookups = graph.user_drives(&users).await?;

    assert_eq!(found_drives(&users, &lookups)?, ground_truth_drives(&config));
    let stats = sim.stats();
    assert!(stats.faults.batch_inner_throttled > 0, "the sim throttled some entries");
    assert_eq!(graph.throttled(), stats.faults.batch_inner_throttled);
    assert_eq!(
        stats.batch_inner,
        60 + stats.faults.batch_inner_throttled,
        "only throttled entries are sent again"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn delta_walk_of_a_drive_equals_its_items() -> Result<()> {
    let config = SimConfig {
        users: 5,
        files_per_drive: m365_sim::FilesPerDrive::Fixed(450),
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);
    let drive = first_drive(&config)?;

    let (items, delta_link, pages) = walk(&graph, &drive, None).await?;

    assert_eq!(items, ground_truth_items(&config, &drive));
    assert!(pages > 1, "450 files need several pages");
    assert!(delta_link.starts_with(&sim.graph_url()));
    assert_eq!(sim.stats().delta, u64::try_from(pages)?);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn invalidated_delta_token_gives_resync_required_with_a_restart_link() -> Result<()> {
    let config = SimConfig {
        users: 5,
        files_per_drive: m365_sim::FilesPerDrive::Fixed(60),
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);
    let drive = first_drive(&config)?;
    let (_, delta_link, _) = walk(&graph, &drive, None).await?;

    assert!(sim.invalidate_delta_tokens(&drive), "the sim knows the drive");
    let err = graph.delta_page(&drive, Some(&delta_link)).await.unwrap_err();

    let DeltaError::ResyncRequired { code, restart_link } = err else {
        bail!("expected a resync, got {err:?}")
    };
    assert!(code.to_ascii_lowercase().starts_with("resync"), "{code}");
    let restart = restart_link.context("410 carries a Location restart link")?;
    let (items, _, _) = walk(&graph, &drive, Some(restart)).await?;
    assert_eq!(
        items,
        ground_truth_items(&config, &drive),
        "the restarted walk enumerates everything"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn throttling_5xx_and_dropped_connections_do_not_change_the_results() -> Result<()> {
    let config = SimConfig {
        users: 120,
        files_per_drive: m365_sim::FilesPerDrive::Fixed(300),
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    sim.set_faults(faults());
    let graph = client(&sim);

    let (users, _) = all_users(&graph).await?;
    let lookups = graph.user_drives(&users).await?;
    let drive = first_drive(&config)?;
    let (items, _, _) = walk(&graph, &drive, None).await?;

    assert_eq!(users.len(), 120);
    assert_eq!(found_drives(&users, &lookups)?, ground_truth_drives(&config));
    assert_eq!(items, ground_truth_items(&config, &drive));
    let faults = sim.stats().faults;
    assert!(
        faults.throttled_429 + faults.unavailable_503 + faults.server_error + faults.dropped > 0,
        "faults happened"
    );
    assert!(graph.retries() > 0);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn expired_token_is_refreshed_transparently() -> Result<()> {
    let config = SimConfig {
        users: 1_200,
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config.clone()).await?;
    let graph = client(&sim);
    let first = graph.users_page(None).await?;

    sim.expire_tokens();
    let second = graph.users_page(first.next_link.as_deref()).await?;

    assert_eq!(first.users.len() + second.users.len(), 1_200);
    assert_eq!(graph.tokens().requests(), 2, "one token, then one refresh");
    assert_eq!(sim.stats().unauthorized, 1);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn wrong_secret_is_terminal_names_the_connection_and_the_fix_without_a_retry_storm() -> Result<()> {
    let config = SimConfig {
        users: 10,
        ..SimConfig::default()
    };
    let sim = m365_sim::spawn(config).await?;
    let graph = client_for(&sim, "not-the-secret");

    let concurrent: Vec<_> = (0..6).map(|_| Directory::users_page(&graph, None)).collect();
    let mut errors: Vec<_> = futures_util::future::join_all(concurrent)
        .await
        .into_iter()
        .map(|r| r.unwrap_err())
        .collect();
    errors.push(Directory::users_page(&graph, None).await.unwrap_err());

    for err in &errors {
        assert!(err.is_terminal());
        assert_eq!(err.code, "AADSTS7000215");
        assert!(err.message.contains(CONNECTION), "{}", err.message);
        let fix = err.fix.as_deref().unwrap_or_default();
        assert!(fix.contains("Certificates & secrets") && fix.contains("filetrail connection set-secret sim-tenant"));
    }
    let stats = sim.stats();
    assert_eq!(stats.token, 1, "the refusal is shared, not retried");
    assert_eq!(stats.users, 0);
    sim.shutdown().await;
    Ok(())
}
