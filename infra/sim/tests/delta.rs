//! driveItem delta over HTTP: full enumeration, incremental rounds, resync.
#![allow(clippy::expect_used)] // helpers outside #[test] fns panic on purpose, like the tests

mod common;

use std::collections::HashSet;

use common::{dedup_last_wins, graph_error_code, start};
use m365_sim::{DriveChange, FilesPerDrive, SimConfig, SimItem};
use reqwest::StatusCode;
use serde_json::Value;

fn config(files: u64, repeat: f64) -> SimConfig {
    SimConfig {
        users: 8,
        no_drive_ratio: 0.0,
        files_per_drive: FilesPerDrive::Fixed(files),
        delta_repeat_rate: repeat,
        ..SimConfig::default()
    }
}

/// Asserts that an enumeration (after last-wins dedup) is exactly the root followed by the
/// ground-truth items in order, with parents reported before their children.
fn assert_matches_ground_truth(items: &[Value], root: &SimItem, truth: &[SimItem]) {
    let items = dedup_last_wins(items);
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().expect("id")).collect();
    let mut expected = vec![root.id.as_str()];
    expected.extend(truth.iter().map(|i| i.id.as_str()));
    assert_eq!(ids, expected);

    assert!(items[0]["root"].is_object(), "root first, with the root facet");
    let mut seen = HashSet::from([root.id.as_str()]);
    for (item, t) in items[1..].iter().zip(truth) {
        let parent = item["parentReference"]["id"].as_str().expect("parentReference.id");
        assert_eq!(Some(parent), t.parent_id.as_deref());
        assert!(seen.contains(parent), "parent {parent} of {} came earlier", t.id);
        seen.insert(t.id.as_str());
        assert!(item["parentReference"]["driveId"].is_string() && item["parentReference"]["driveType"].is_string());
        assert!(
            item["parentReference"].get("path").is_none(),
            "delta has no parentReference.path"
        );
        assert!(item.get("cTag").is_none(), "ODB delta omits cTag");
        assert_eq!(item["name"], t.name.as_str());
        assert_eq!(item["size"], t.size);
        assert_eq!(item.get("folder").is_some(), t.is_folder);
    }
}

#[tokio::test]
async fn full_enumeration_equals_the_ground_truth_and_ends_with_a_delta_link() {
    let config = config(60, 0.0);
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(3).expect("drive");
    let truth: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let root = tenant.drive_root(&drive.id).expect("root");
    let sim = start(config).await;
    let token = sim.token().await;

    let (items, delta_link) = sim
        .delta_all(&token, &format!("/drives/{}/root/delta?$top=7", drive.id))
        .await;
    assert!(items.len() > 7, "several pages");
    assert_eq!(items.len(), truth.len() + 1, "no repeats when the repeat rate is 0");
    assert_matches_ground_truth(&items, &root, &truth);
    assert!(delta_link.starts_with(&sim.handle.graph_url()));
    assert_eq!(sim.handle.stats().delta as usize, items.len().div_ceil(7));
}

#[tokio::test]
async fn delta_aliases_by_user_and_items_root_enumerate_the_same_drive() {
    let config = config(15, 0.0);
    let tenant = config.tenant();
    let user = tenant.user(1);
    let drive = tenant.drive_of_user(1).expect("drive");
    let truth: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let root = tenant.drive_root(&drive.id).expect("root");
    let sim = start(config).await;
    let token = sim.token().await;
    for first in [
        format!("/users/{}/drive/root/delta", user.id),
        format!("/drives/{}/items/root/delta", drive.id),
        format!("/drives/{}/root/delta()", drive.id),
    ] {
        let (items, _) = sim.delta_all(&token, &first).await;
        assert_matches_ground_truth(&items, &root, &truth);
    }
}

#[tokio::test]
async fn delta_from_the_delta_link_is_empty_and_token_latest_gives_a_link_without_items() {
    let config = config(10, 0.0);
    let drive = config.tenant().drive_of_user(0).expect("drive");
    let sim = start(config).await;
    let token = sim.token().await;
    let (_, delta_link) = sim.delta_all(&token, &format!("/drives/{}/root/delta", drive.id)).await;

    let next = sim.get(&token, &delta_link).await;
    assert_eq!(next.status, StatusCode::OK);
    assert_eq!(next.body["value"], Value::Array(vec![]));
    assert!(next.body["@odata.deltaLink"].is_string());
    assert!(next.body.get("@odata.nextLink").is_none());

    let latest = sim
        .get(&token, &format!("/drives/{}/root/delta?token=latest", drive.id))
        .await;
    assert_eq!(latest.body["value"], Value::Array(vec![]));
    let link = latest.body["@odata.deltaLink"].as_str().expect("deltaLink");
    assert_eq!(sim.get(&token, link).await.body["value"], Value::Array(vec![]));
}

#[tokio::test]
async fn repeated_items_appear_and_the_last_occurrence_still_yields_the_ground_truth() {
    let config = config(80, 0.3);
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(4).expect("drive");
    let truth: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let root = tenant.drive_root(&drive.id).expect("root");
    let sim = start(config).await;
    let token = sim.token().await;
    let (items, _) = sim
        .delta_all(&token, &format!("/drives/{}/root/delta?$top=10", drive.id))
        .await;
    assert!(
        items.len() > truth.len() + 1 + 5,
        "repeats present: {} vs {}",
        items.len(),
        truth.len() + 1
    );
    assert_matches_ground_truth(&items, &root, &truth);
}

#[tokio::test]
async fn invalidated_tokens_get_410_with_a_location_that_restarts_the_enumeration() {
    let config = config(30, 0.0);
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(2).expect("drive");
    let truth: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let root = tenant.drive_root(&drive.id).expect("root");
    let sim = start(config).await;
    let token = sim.token().await;

    let (_, delta_link) = sim.delta_all(&token, &format!("/drives/{}/root/delta", drive.id)).await;
    let first = sim
        .get(&token, &format!("/drives/{}/root/delta?$top=5", drive.id))
        .await;
    let next_link = first.body["@odata.nextLink"].as_str().expect("nextLink").to_owned();

    assert!(sim.handle.invalidate_delta_tokens(&drive.id));
    for stale in [&delta_link, &next_link] {
        let gone = sim.get(&token, stale).await;
        assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);
        assert_eq!(graph_error_code(&gone), "resyncRequired");
        assert_eq!(
            gone.body["error"]["innerError"]["code"],
            "resyncChangesApplyDifferences"
        );
        let location = gone.header("location").expect("Location header").to_owned();
        let (items, _) = sim.delta_all(&token, &location).await;
        assert_matches_ground_truth(&items, &root, &truth);
    }
    assert_eq!(sim.handle.stats().delta_resync, 2);

    // The HTTP control endpoint does the same.
    let (_, fresh_link) = sim.delta_all(&token, &format!("/drives/{}/root/delta", drive.id)).await;
    let url = format!(
        "{}/_sim/drives/{}/invalidate-delta-tokens",
        sim.handle.base_url(),
        drive.id
    );
    let resp = sim.http.post(url).send().await.expect("sent");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(sim.get(&token, &fresh_link).await.status, StatusCode::GONE);
}

#[tokio::test]
async fn forged_tokens_are_400_not_410() {
    let config = config(5, 0.0);
    let drive = config.tenant().drive_of_user(0).expect("drive");
    let sim = start(config).await;
    let token = sim.token().await;
    let reply = sim
        .get(
            &token,
            &format!("/drives/{}/root/delta?token=bm90LWEtdG9rZW4", drive.id),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&reply), "invalidRequest");
}

#[tokio::test]
async fn logged_changes_are_replayed_from_an_earlier_delta_link() {
    let config = config(12, 0.0);
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(5).expect("drive");
    let existing: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let victim = existing.iter().find(|i| !i.is_folder).expect("a file").clone();
    let sim = start(config).await;
    let token = sim.token().await;
    let (_, delta_link) = sim.delta_all(&token, &format!("/drives/{}/root/delta", drive.id)).await;

    let root = tenant.drive_root(&drive.id).expect("root");
    let new_id = sim.handle.allocate_item_id(&drive.id).expect("id");
    let created = SimItem {
        id: new_id.clone(),
        name: "New Budget.xlsx".into(),
        path: "/New Budget.xlsx".into(),
        parent_id: Some(root.id.clone()),
        ..victim.clone()
    };
    sim.handle
        .apply_drive_change(&drive.id, DriveChange::Upsert(Box::new(created)))
        .expect("upsert");
    sim.handle
        .apply_drive_change(
            &drive.id,
            DriveChange::Delete {
                item_id: victim.id.clone(),
            },
        )
        .expect("delete");
    assert_eq!(sim.handle.drive_version(&drive.id), Some(2));

    let (changes, _) = sim.delta_all(&token, &delta_link).await;
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["id"], new_id.as_str());
    assert_eq!(changes[0]["name"], "New Budget.xlsx");
    assert_eq!(changes[1]["id"], victim.id.as_str());
    assert_eq!(changes[1]["deleted"]["state"], "deleted");
    assert!(changes[1].get("name").is_none(), "ODB omits the name of deleted items");

    let gone = sim
        .get(&token, &format!("/drives/{}/items/{}", drive.id, victim.id))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let fresh = sim.get(&token, &format!("/drives/{}/items/{new_id}", drive.id)).await;
    assert_eq!(fresh.status, StatusCode::OK);
}

#[tokio::test]
async fn timestamp_token_reports_items_modified_since_then_with_their_ancestors() {
    let config = config(120, 0.0);
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(6).expect("drive");
    let truth: Vec<SimItem> = tenant.drive_items(&drive.id).collect();
    let since = chrono::DateTime::parse_from_rfc3339("2024-06-01T00:00:00Z").expect("time");
    let changed: HashSet<&str> = truth
        .iter()
        .filter(|i| i.modified >= since)
        .map(|i| i.id.as_str())
        .collect();
    assert!(
        !changed.is_empty() && changed.len() < truth.len(),
        "a proper subset changed"
    );
    let sim = start(config).await;
    let token = sim.token().await;

    let first = format!("/drives/{}/root/delta?token=2024-06-01T00%3A00%3A00Z", drive.id);
    let (items, _) = sim.delta_all(&token, &first).await;
    let got: HashSet<&str> = items.iter().skip(1).map(|i| i["id"].as_str().expect("id")).collect();
    assert!(items[0]["root"].is_object());
    assert!(
        changed.is_subset(&got),
        "every item modified since the timestamp is reported"
    );
    let parents: HashSet<&str> = truth
        .iter()
        .filter(|i| got.contains(i.id.as_str()))
        .filter_map(|i| i.parent_id.as_deref())
        .collect();
    for extra in got.difference(&changed) {
        assert!(parents.contains(extra), "{extra} is reported only as an ancestor");
    }
}
