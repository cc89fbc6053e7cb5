//! Users, drives, sites and items over HTTP, checked against the generated ground truth.

mod common;

use std::collections::HashSet;
use std::time::Instant;

use common::{graph_error_code, start};
use m365_sim::{NoDriveReason, SimConfig};
use reqwest::StatusCode;

#[tokio::test]
async fn users_paging_covers_exactly_every_user_once_in_directory_order() {
    let config = SimConfig {
        users: 250,
        ..SimConfig::default()
    };
    let truth: Vec<String> = config.tenant().users().map(|u| u.id).collect();
    let sim = start(config).await;
    let token = sim.token().await;

    let mut url = sim.url("/users?$top=100");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = sim.get(&token, &url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body["@odata.context"]
                .as_str()
                .is_some_and(|c| c.ends_with("/$metadata#users"))
        );
        pages += 1;
        for u in page.body["value"].as_array().expect("value") {
            seen.push(u["id"].as_str().expect("id").to_owned());
        }
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with(&sim.handle.graph_url()),
                    "absolute nextLink on the same base: {next}"
                );
                assert!(next.contains("$skiptoken="));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250, "no duplicates");
    assert_eq!(seen, truth);
}

#[tokio::test]
async fn users_default_page_has_the_documented_property_set() {
    let sim = start(SimConfig {
        users: 150,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let page = sim.get(&token, "/users").await;
    let value = page.body["value"].as_array().expect("value");
    assert_eq!(value.len(), 100, "default page size is 100");
    let keys: HashSet<&str> = value[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let expected: HashSet<&str> = [
        "businessPhones",
        "displayName",
        "givenName",
        "jobTitle",
        "mail",
        "mobilePhone",
        "officeLocation",
        "preferredLanguage",
        "surname",
        "userPrincipalName",
        "id",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, expected);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("application/json;odata.metadata=minimal"))
    );
    assert!(page.header("request-id").is_some() && page.header("client-request-id").is_some());
}

#[tokio::test]
async fn users_top_and_select_are_honoured_and_validated() {
    let sim = start(SimConfig {
        users: 1200,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;

    let page = sim.get(&token, "/users?$top=999&$select=id,displayName").await;
    assert_eq!(page.status, StatusCode::OK);
    let value = page.body["value"].as_array().expect("value");
    assert_eq!(value.len(), 999);
    let keys: HashSet<&str> = value[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "displayName"]));
    let next = page.body["@odata.nextLink"].as_str().expect("nextLink");
    let second = sim.get(&token, next).await;
    let rest = second.body["value"].as_array().expect("value");
    assert_eq!(rest.len(), 201);
    assert!(rest[0].get("mail").is_none(), "$select carried over to the next page");

    let too_big = sim.get(&token, "/users?$top=1000").await;
    assert_eq!(too_big.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&too_big), "Request_UnsupportedQuery");

    let unknown = sim.get(&token, "/users?$select=id,favouriteColour").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&unknown), "Request_BadRequest");

    let forged = sim.get(&token, "/users?$skiptoken=AAAAAAAAAAAAAAAA").await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn user_is_found_by_id_and_by_upn_and_unknown_users_get_404() {
    let config = SimConfig {
        users: 30,
        ..SimConfig::default()
    };
    let truth = config.tenant().user(17);
    let sim = start(config).await;
    let token = sim.token().await;

    for key in [
        truth.id.clone(),
        truth.user_principal_name.clone(),
        truth.user_principal_name.to_uppercase(),
    ] {
        let reply = sim.get(&token, &format!("/users/{key}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.body);
        assert_eq!(reply.body["id"], truth.id.as_str());
        assert_eq!(reply.body["userPrincipalName"], truth.user_principal_name.as_str());
    }

    let missing = "6ea91a8d-e32e-41a1-b7bd-d2d185eed0e0";
    let reply = sim.get(&token, &format!("/users/{missing}")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&reply), "Request_ResourceNotFound");
    assert_eq!(
        reply.body["error"]["message"],
        format!(
            "Resource '{missing}' does not exist or one of its queried reference-property objects are not present."
        )
    );
}

#[tokio::test]
async fn user_drive_matches_the_ground_truth_onedrive() {
    let config = SimConfig {
        users: 40,
        no_drive_ratio: 0.0,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let user = tenant.user(5);
    let drive = tenant.drive_of_user(5).expect("has a drive");
    let sim = start(config).await;
    let token = sim.token().await;

    let reply = sim.get(&token, &format!("/users/{}/drive", user.id)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let b = &reply.body;
    assert_eq!(b["id"], drive.id.as_str());
    assert!(drive.id.starts_with("b!"));
    assert_eq!(b["driveType"], "business");
    assert_eq!(b["name"], "OneDrive");
    assert_eq!(b["description"], "");
    assert_eq!(b["owner"]["user"]["id"], user.id.as_str());
    assert_eq!(b["owner"]["user"]["displayName"], user.display_name.as_str());
    assert_eq!(b["owner"]["user"]["email"], user.user_principal_name.as_str());
    let personal = user.user_principal_name.replace(['.', '@'], "_");
    assert_eq!(
        b["webUrl"],
        format!("https://contoso-my.sharepoint.com/personal/{personal}/Documents")
    );
    assert!(b["quota"]["total"].as_u64().is_some_and(|t| t > 0));
    assert!(b["createdDateTime"].is_string() && b["lastModifiedDateTime"].is_string());

    let by_id = sim.get(&token, &format!("/drives/{}", drive.id)).await;
    assert_eq!(by_id.body["id"], drive.id.as_str());
    let by_upn = sim
        .get(&token, &format!("/users/{}/drive", user.user_principal_name))
        .await;
    assert_eq!(by_upn.body["id"], drive.id.as_str());
}

#[tokio::test]
async fn users_without_onedrive_get_the_field_error_shapes() {
    let config = SimConfig {
        users: 600,
        no_drive_ratio: 0.5,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let pick = |reason| {
        tenant
            .users()
            .find(|u| u.no_drive_reason == Some(reason))
            .unwrap_or_else(|| panic!("a user with {reason:?}"))
    };
    let cases = [
        (
            pick(NoDriveReason::MysiteNotFound),
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "User's mysite not found.",
        ),
        (
            pick(NoDriveReason::FileNotFound),
            StatusCode::NOT_FOUND,
            "UnknownError",
            "404 FILE NOT FOUND",
        ),
        (
            pick(NoDriveReason::MysiteUrlUnavailable),
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unable to retrieve user's mysite URL.",
        ),
    ];
    let share = tenant.users().filter(|u| !u.has_drive).count();
    assert!(
        (240..360).contains(&share),
        "about half the users lack a drive: {share}"
    );
    let sim = start(config).await;
    let token = sim.token().await;
    for (user, status, code, message) in cases {
        assert!(tenant.drive_of_user(user.index).is_none());
        let reply = sim.get(&token, &format!("/users/{}/drive", user.id)).await;
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(graph_error_code(&reply), code);
        assert_eq!(reply.body["error"]["message"], message);
    }
}

#[tokio::test]
async fn team_site_libraries_are_document_libraries_reachable_by_site_and_drive() {
    let config = SimConfig {
        users: 10,
        team_sites: 2,
        ..SimConfig::default()
    };
    let sites = config.tenant().team_site_drives();
    assert_eq!(sites.len(), 2);
    let sim = start(config).await;
    let token = sim.token().await;
    for lib in &sites {
        let reply = sim.get(&token, &format!("/sites/{}/drive", lib.site_id)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["id"], lib.id.as_str());
        assert_eq!(reply.body["driveType"], "documentLibrary");
        assert!(reply.body["webUrl"].as_str().is_some_and(
            |u| u.starts_with("https://contoso.sharepoint.com/sites/") && u.ends_with("/Shared%20Documents")
        ));
        assert!(reply.body["owner"]["group"].is_object());
        let by_id = sim.get(&token, &format!("/drives/{}", lib.id)).await;
        assert_eq!(by_id.body["driveType"], "documentLibrary");
    }
}

#[tokio::test]
async fn item_read_has_path_ctag_hashes_and_parent_reference() {
    let config = SimConfig {
        users: 5,
        no_drive_ratio: 0.0,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let drive = tenant.drive_of_user(2).expect("drive");
    let file = tenant
        .drive_items(&drive.id)
        .find(|i| !i.is_folder && i.path.matches('/').count() >= 2)
        .expect("nested file");
    let sim = start(config).await;
    let token = sim.token().await;

    let reply = sim
        .get(&token, &format!("/drives/{}/items/{}", drive.id, file.id))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let b = &reply.body;
    assert_eq!(b["name"], file.name.as_str());
    assert_eq!(b["size"], file.size);
    assert_eq!(b["eTag"], file.etag.as_str());
    assert!(file.etag.starts_with("\"{") && file.etag.contains("},"));
    assert_eq!(b["cTag"], file.ctag.as_deref().expect("files have a cTag"));
    assert_eq!(b["file"]["mimeType"], file.mime_type.as_deref().expect("mime"));
    assert!(b["file"]["hashes"]["quickXorHash"].is_string());
    let parent_path = file.path.rsplit_once('/').expect("slash").0;
    assert_eq!(
        b["parentReference"]["path"],
        format!("/drives/{}/root:{parent_path}", drive.id)
    );
    assert_eq!(b["parentReference"]["id"], file.parent_id.as_deref().expect("parent"));
    assert_eq!(b["parentReference"]["driveType"], "business");

    let root = sim.get(&token, &format!("/drives/{}/root", drive.id)).await;
    assert!(root.body["root"].is_object());
    assert!(root.body["folder"]["childCount"].is_u64());
    assert!(root.body.get("cTag").is_none(), "folders carry no cTag in ODB");

    let missing = sim
        .get(
            &token,
            &format!("/drives/{}/items/01AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", drive.id),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(graph_error_code(&missing), "itemNotFound");
}

#[tokio::test]
async fn unknown_segments_and_me_are_graph_errors() {
    let sim = start(SimConfig {
        users: 3,
        ..SimConfig::default()
    })
    .await;
    let token = sim.token().await;
    let reply = sim.get(&token, "/groupz").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.body["error"]["message"],
        "Resource not found for the segment 'groupz'."
    );
    let me = sim.get(&token, "/me/drive").await;
    assert_eq!(me.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn million_user_tenant_starts_fast_and_serves_its_first_and_last_pages() {
    let config = SimConfig {
        users: 1_000_000,
        ..SimConfig::default()
    };
    let tenant = config.tenant();
    let started = Instant::now();
    let sim = start(config).await;
    assert!(
        started.elapsed().as_millis() < 1000,
        "started in {:?}",
        started.elapsed()
    );
    let token = sim.token().await;

    let first = sim.get(&token, "/users?$top=999").await;
    let value = first.body["value"].as_array().expect("value");
    assert_eq!(value.len(), 999);
    assert_eq!(value[0]["id"], tenant.user(0).id.as_str());
    assert!(first.body["@odata.nextLink"].is_string());

    let last = sim.get(&token, &sim.handle.users_page_url(1_000_000 - 999, 999)).await;
    let value = last.body["value"].as_array().expect("value");
    assert_eq!(value.len(), 999);
    assert_eq!(value[998]["id"], tenant.user(999_999).id.as_str());
    assert!(
        last.body.get("@odata.nextLink").is_none(),
        "the last page has no nextLink"
    );

    let by_id = sim.get(&token, &format!("/users/{}", tenant.user(999_999).id)).await;
    assert_eq!(by_id.status, StatusCode::OK);
}
