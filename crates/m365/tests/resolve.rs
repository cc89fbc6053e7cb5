//! Resolving drive paths to item ids (how ingest-activity locates the file an audit record
//! names) against m365-sim over real HTTP: `root:{path}` addressing in `$batch`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use filetrail_core::ports::ItemResolver;
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use m365_sim::{Activity, ActivityKind, ActivityRequest, FilesPerDrive, SimConfig, SimHandle};

fn client(sim: &SimHandle) -> GraphClient {
    let cloud = Cloud::custom(&sim.login_url(), &sim.graph_url(), &sim.login_url()).unwrap();
    let credentials = Credentials {
        tenant_id: sim.tenant_id().to_owned(),
        client_id: sim.client_id().to_owned(),
        secret: ClientSecret::new(sim.client_secret()),
    };
    let http = http_client(HttpTimeouts::default()).unwrap();
    GraphClient::connect(http, &cloud, credentials, "sim-tenant", RetryPolicy::fast()).unwrap()
}

async fn sim() -> SimHandle {
    m365_sim::spawn(SimConfig {
        users: 2,
        no_drive_ratio: 0.0,
        files_per_drive: FilesPerDrive::Fixed(60),
        ..SimConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn every_item_of_a_drive_is_found_by_its_path_and_a_missing_path_by_none() {
    let sim = sim().await;
    let graph = client(&sim);
    let drive = sim.tenant().drive_of_user(0).unwrap().id;
    let items: Vec<_> = sim.tenant().drive_items(&drive).filter(|i| !i.is_root).collect();
    assert!(items.len() > 40, "{}", items.len());
    let mut paths: Vec<String> = items.iter().map(|i| i.path.clone()).collect();
    paths.push("/No such folder/nothing.txt".into());

    let ids = graph.items_by_path(&drive, &paths).await.unwrap();

    assert_eq!(ids.len(), paths.len());
    for (item, id) in items.iter().zip(&ids) {
        assert_eq!(id.as_deref(), Some(item.id.as_str()), "{}", item.path);
    }
    assert_eq!(ids.last().unwrap(), &None);
    let requests = sim.stats().batch;
    assert!(
        requests <= paths.len().div_ceil(20) as u64 + 1,
        "{requests} $batch requests"
    );
}

#[tokio::test]
async fn a_renamed_file_is_found_at_its_new_path_only() {
    let sim = sim().await;
    let graph = client(&sim);
    let owner = sim.tenant().user(0).user_principal_name;
    let drive = sim.tenant().drive_of_user(0).unwrap().id;
    let file = sim
        .tenant()
        .drive_items(&drive)
        .find(|i| !i.is_folder && !i.is_root)
        .unwrap();
    let new_name = "Q3 forecast – O'Brien (final).xlsx";
    let rename = Activity::new(ActivityKind::Rename, drive.clone())
        .item(file.id.clone())
        .actor(owner)
        .name(new_name);
    let injected = sim
        .inject_activity(&ActivityRequest {
            operations: vec![rename],
            random: None,
            return_records: false,
        })
        .unwrap();
    let new_path = injected.operations[0].path.clone().unwrap();
    assert!(new_path.ends_with(new_name), "{new_path}");

    let found = graph
        .resolve_paths(&drive, &[file.path.clone(), new_path.clone()])
        .await
        .unwrap();

    assert_eq!(found, [(new_path, file.id.clone())]);
}
