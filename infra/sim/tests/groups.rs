//! Groups, their members and user lookups over HTTP, checked against the generated ground truth.
#![allow(clippy::expect_used)] // helpers outside #[test] fns panic on purpose, like the tests

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{Sim, graph_error_code, start};
use m365_sim::{GroupKind, SimConfig, Tenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

const EVENTUAL: &[(&str, &str)] = &[("ConsistencyLevel", "eventual")];
const USER_CAST: &str = "transitiveMembers/microsoft.graph.user";

fn config(users: u64, groups: u64, avg: u64, nested: f64) -> SimConfig {
    SimConfig {
        users,
        groups,
        group_members_avg: avg,
        nested_group_ratio: nested,
        ..SimConfig::with_seed(21)
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|v| v["id"].as_str().expect("id").to_owned()).collect()
}

fn typed_ids(items: &[Value], odata_type: &str) -> BTreeSet<String> {
    items
        .iter()
        .filter(|v| v["@odata.type"] == odata_type)
        .map(|v| v["id"].as_str().expect("id").to_owned())
        .collect()
}

/// OData string literal, percent-encoded for a query string.
fn literal(value: &str) -> String {
    let quoted = format!("'{}'", value.replace('\'', "''"));
    url::form_urlencoded::byte_serialize(quoted.as_bytes()).collect()
}

/// A group with nesting at least two levels deep (a nested group below a nested group).
fn deeply_nested(tenant: &Tenant) -> m365_sim::SimGroup {
    tenant
        .groups()
        .find(|g| {
            let direct: HashSet<String> = tenant.member_group_ids(&g.id).into_iter().collect();
            tenant.transitive_group_ids(&g.id).iter().any(|h| !direct.contains(h))
        })
        .expect("a group nested two levels deep")
}

async fn cast_ids(sim: &Sim, token: &str, group_id: &str) -> BTreeSet<String> {
    let (items, _) = user_cast_pages(sim, token, group_id, 999).await;
    ids(&items).into_iter().collect()
}

async fn user_cast_pages(sim: &Sim, token: &str, group_id: &str, top: u64) -> (Vec<Value>, Vec<common::Reply>) {
    let first = format!("/groups/{group_id}/{USER_CAST}?$count=true&$top={top}&$select=id,userPrincipalName");
    sim.collect_pages(token, &first, EVENTUAL).await
}

#[tokio::test]
async fn a_group_with_thousands_of_members_pages_in_999s_and_counts_on_the_first_page_only() {
    let config = config(20_000, 30, 300, 0.3);
    let tenant = config.tenant();
    let large = tenant.group(1).expect("group 1");
    let truth = tenant.transitive_user_ids(&large.id);
    assert!(truth.len() > 2_000, "group 1 is a large group: {}", truth.len());
    let sim = start(config).await;
    let token = sim.token().await;

    let (items, pages) = user_cast_pages(&sim, &token, &large.id, 999).await;

    let got = ids(&items);
    assert_eq!(got.len(), truth.len(), "each member once");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), truth);
    assert_eq!(pages.len(), truth.len().div_ceil(999));
    assert_eq!(pages[0].body["@odata.count"], truth.len());
    assert!(pages[1..].iter().all(|p| p.body.get("@odata.count").is_none()));
    assert!(
        pages[0].body["@odata.context"]
            .as_str()
            .is_some_and(|c| c.ends_with("/$metadata#users(id,userPrincipalName)"))
    );
    assert!(
        items
            .iter()
            .all(|u| u.get("@odata.type").is_none() && u["userPrincipalName"].is_string())
    );
    assert_eq!(sim.handle.stats().group_members, pages.len() as u64);
}

#[tokio::test]
async fn nested_groups_list_members_and_transitive_members_as_the_ground_truth() {
    let config = config(3_000, 80, 60, 0.4);
    let tenant = config.tenant();
    let group = deeply_nested(&tenant);
    let sim = start(config).await;
    let token = sim.token().await;

    let (transitive, _) = sim
        .collect_pages(&token, &format!("/groups/{}/transitiveMembers?$top=50", group.id), &[])
        .await;
    let (direct, _) = sim
        .collect_pages(&token, &format!("/groups/{}/members", group.id), &[])
        .await;
    let (cast, _) = user_cast_pages(&sim, &token, &group.id, 100).await;

    assert!(
        transitive.iter().all(|m| m["@odata.type"].is_string()),
        "uncast members are typed"
    );
    assert_eq!(
        typed_ids(&transitive, "#microsoft.graph.user"),
        tenant.transitive_user_ids(&group.id)
    );
    assert_eq!(
        typed_ids(&transitive, "#microsoft.graph.group"),
        tenant.transitive_group_ids(&group.id).into_iter().collect()
    );
    assert_eq!(
        typed_ids(&direct, "#microsoft.graph.user"),
        tenant.direct_user_ids(&group.id)
    );
    assert_eq!(
        typed_ids(&direct, "#microsoft.graph.group"),
        tenant.member_group_ids(&group.id).into_iter().collect()
    );
    assert_eq!(
        ids(&cast).into_iter().collect::<BTreeSet<_>>(),
        tenant.transitive_user_ids(&group.id)
    );
    assert_eq!(
        ids(&cast).len(),
        tenant.transitive_user_count(&group.id) as usize,
        "no user twice"
    );
    let a_group = transitive
        .iter()
        .find(|m| m["@odata.type"] == "#microsoft.graph.group")
        .expect("a nested group");
    assert!(
        a_group["groupTypes"].as_array().is_some_and(Vec::is_empty),
        "nested groups are not Unified"
    );
}

#[tokio::test]
async fn user_cast_needs_consistency_level_and_count_on_every_page() {
    let config = config(5_000, 10, 400, 0.0);
    let group = config.tenant().group(1).expect("group 1");
    let sim = start(config).await;
    let token = sim.token().await;
    let with_count = format!("/groups/{}/{USER_CAST}?$count=true&$top=100", group.id);

    let no_header = sim.get(&token, &with_count).await;
    assert_eq!(no_header.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&no_header), "Request_UnsupportedQuery");
    let no_count = sim
        .get_eventual(&token, &format!("/groups/{}/{USER_CAST}?$top=100", group.id))
        .await;
    assert_eq!(no_count.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&no_count), "Request_UnsupportedQuery");

    let first = sim.get_eventual(&token, &with_count).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let next = first.body["@odata.nextLink"].as_str().expect("a second page");
    assert!(next.contains("$count=true") && next.contains("$skiptoken="), "{next}");
    let without_header = sim.get(&token, next).await;
    assert_eq!(
        without_header.status,
        StatusCode::BAD_REQUEST,
        "the header is not carried over by the nextLink"
    );
    let resent = sim.get_eventual(&token, next).await;
    assert_eq!(resent.status, StatusCode::OK);
}

#[tokio::test]
async fn count_without_consistency_level_is_silently_ignored() {
    let sim = start(config(200, 40, 10, 0.2)).await;
    let token = sim.token().await;

    let plain = sim.get(&token, "/groups?$count=true").await;
    let eventual = sim.get_eventual(&token, "/groups?$count=true").await;

    assert_eq!(plain.status, StatusCode::OK);
    assert!(plain.body.get("@odata.count").is_none());
    assert_eq!(eventual.body["@odata.count"], 40);
}

#[tokio::test]
async fn groups_paging_lists_every_group_once_in_order() {
    let config = config(300, 45, 10, 0.2);
    let truth: Vec<String> = config.tenant().groups().map(|g| g.id).collect();
    let sim = start(config).await;
    let token = sim.token().await;

    let (items, pages) = sim
        .collect_pages(&token, "/groups?$top=20&$select=id,displayName,mail", &[])
        .await;

    assert_eq!(ids(&items), truth);
    assert_eq!(pages.len(), 3);
    let keys: HashSet<&str> = items[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["id", "displayName", "mail"]));
    let full = sim.get(&token, "/groups?$top=1").await;
    for key in [
        "groupTypes",
        "mailEnabled",
        "securityEnabled",
        "mailNickname",
        "proxyAddresses",
    ] {
        assert!(full.body["value"][0].get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn groups_are_found_by_display_name_and_mail_ignoring_case_with_quotes_escaped() {
    let config = config(500, 120, 10, 0.2);
    let tenant = config.tenant();
    let quoted = tenant
        .groups()
        .find(|g| g.display_name.contains('\'') && g.index % 50 < 48)
        .expect("a name with an apostrophe");
    let duplicate = tenant.group(49).expect("group 49 repeats group 48's name");
    let security = tenant
        .groups()
        .find(|g| g.kind == GroupKind::Security)
        .expect("a security group");
    let mailed = tenant
        .groups()
        .find(|g| g.mail.is_some())
        .expect("a mail-enabled group");
    let sim = start(config).await;
    let token = sim.token().await;
    let filter = |expr: String| format!("/groups?$filter={expr}&$select=id,displayName,mail");

    let by_name = sim
        .get(
            &token,
            &filter(format!(
                "displayName eq {}",
                literal(&quoted.display_name.to_uppercase())
            )),
        )
        .await;
    let twice = sim
        .get(
            &token,
            &filter(format!("displayName eq {}", literal(&duplicate.display_name))),
        )
        .await;
    let mail = mailed.mail.clone().expect("mail");
    let by_mail = sim
        .get(&token, &filter(format!("mail eq {}", literal(&mail.to_uppercase()))))
        .await;
    let either = sim
        .get(
            &token,
            &filter(format!(
                "mail eq {} or displayName eq {}",
                literal(&mail),
                literal(&security.display_name)
            )),
        )
        .await;
    let none = sim.get(&token, &filter("displayName eq 'No such group'".into())).await;

    assert_eq!(by_name.status, StatusCode::OK, "{}", by_name.body);
    assert_eq!(
        ids(by_name.body["value"].as_array().expect("value")),
        std::slice::from_ref(&quoted.id)
    );
    assert_eq!(twice.body["value"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        ids(by_mail.body["value"].as_array().expect("value")),
        std::slice::from_ref(&mailed.id)
    );
    let both: HashSet<String> = ids(either.body["value"].as_array().expect("value"))
        .into_iter()
        .collect();
    assert!(
        both.contains(&mailed.id) && both.contains(&security.id),
        "{}",
        either.body
    );
    assert_eq!(none.body["value"], json!([]));
    let security_item = sim
        .get(
            &token,
            &format!("/groups/{}?$select=mail,mailEnabled,securityEnabled", security.id),
        )
        .await;
    assert_eq!(security_item.body["mail"], Value::Null);
    assert_eq!(security_item.body["mailEnabled"], false);
    assert_eq!(security_item.body["securityEnabled"], true);
}

#[tokio::test]
async fn unsupported_and_malformed_filters_get_graphs_400s() {
    let sim = start(config(50, 5, 10, 0.2)).await;
    let token = sim.token().await;
    let cases = [
        (
            "/groups?$filter=startswith(displayName,'a')",
            "Request_UnsupportedQuery",
        ),
        ("/groups?$filter=description eq 'x'", "Request_UnsupportedQuery"),
        (
            "/groups?$filter=displayName eq 'x' and mail eq 'y'",
            "Request_UnsupportedQuery",
        ),
        ("/groups?$filter=displayName eq 'unterminated", "BadRequest"),
        ("/users?$filter=jobTitle eq 'CEO'", "Request_UnsupportedQuery"),
        ("/users?$filter=displayName eq", "BadRequest"),
        ("/groups?$orderby=displayName", "Request_UnsupportedQuery"),
    ];
    for (path, code) in cases {
        let reply = sim.get(&token, path).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(graph_error_code(&reply), code, "{path}");
    }
}

#[tokio::test]
async fn users_are_found_by_upn_mail_and_display_name_ignoring_case() {
    let config = config(3_000, 0, 0, 0.0);
    let tenant = config.tenant();
    let user = tenant.user(1_234);
    let no_mail = tenant.users().find(|u| u.mail.is_none()).expect("a user without mail");
    let namesakes: Vec<String> = tenant
        .users()
        .filter(|u| u.display_name == user.display_name)
        .map(|u| u.id)
        .collect();
    let sim = start(config).await;
    let token = sim.token().await;
    let select = "&$select=id,userPrincipalName,displayName,mail";
    let lookup = |expr: String| format!("/users?$filter={expr}{select}");
    let email = |v: &str| format!("userPrincipalName eq {0} or mail eq {0}", literal(v));

    let by_upn = sim
        .get(&token, &lookup(email(&user.user_principal_name.to_uppercase())))
        .await;
    let by_mail = sim
        .get(
            &token,
            &lookup(format!("mail eq {}", literal(&user.user_principal_name))),
        )
        .await;
    let mailless = sim.get(&token, &lookup(email(&no_mail.user_principal_name))).await;
    let mailless_by_mail = sim
        .get(
            &token,
            &lookup(format!("mail eq {}", literal(&no_mail.user_principal_name))),
        )
        .await;
    let by_name = sim
        .get_eventual(
            &token,
            &format!(
                "/users?$filter=displayName eq {}&$count=true{select}",
                literal(&user.display_name.to_lowercase())
            ),
        )
        .await;
    let nobody = sim.get(&token, &lookup(email("nobody@contoso.onmicrosoft.com"))).await;

    assert_eq!(
        ids(by_upn.body["value"].as_array().expect("value")),
        std::slice::from_ref(&user.id)
    );
    assert_eq!(
        ids(by_mail.body["value"].as_array().expect("value")),
        std::slice::from_ref(&user.id)
    );
    assert_eq!(
        ids(mailless.body["value"].as_array().expect("value")),
        std::slice::from_ref(&no_mail.id)
    );
    assert_eq!(mailless_by_mail.body["value"], json!([]), "mail is null for this user");
    assert_eq!(ids(by_name.body["value"].as_array().expect("value")), namesakes);
    assert_eq!(by_name.body["@odata.count"], namesakes.len());
    assert_eq!(nobody.body["value"], json!([]));
    assert_eq!(sim.handle.stats().user_filter, 6);
    assert_eq!(sim.handle.stats().users, 0, "lookups are not listings");
}

#[tokio::test]
async fn a_display_name_matching_more_than_a_page_is_paged() {
    let config = config(20_000, 0, 0, 0.0);
    let tenant = config.tenant();
    let name = tenant.user(7).display_name;
    let truth: Vec<String> = tenant
        .users()
        .filter(|u| u.display_name == name)
        .map(|u| u.id)
        .collect();
    assert!(truth.len() > 2, "namesakes: {}", truth.len());
    let sim = start(config).await;
    let token = sim.token().await;

    let (items, pages) = sim
        .collect_pages(
            &token,
            &format!("/users?$filter=displayName eq {}&$top=2", literal(&name)),
            &[],
        )
        .await;

    assert_eq!(ids(&items), truth);
    assert_eq!(pages.len(), truth.len().div_ceil(2));
}

#[tokio::test]
async fn unknown_groups_are_404_and_malformed_ids_400_in_graphs_shape() {
    let sim = start(config(20, 3, 5, 0.0)).await;
    let token = sim.token().await;
    let unknown = "00000000-0000-4000-8000-000000000000";

    for path in [
        format!("/groups/{unknown}"),
        format!("/groups/{unknown}/members"),
        format!("/groups/{unknown}/{USER_CAST}?$count=true"),
    ] {
        let reply = sim.get_eventual(&token, &path).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(graph_error_code(&reply), "Request_ResourceNotFound");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(unknown))
        );
    }
    let malformed = sim.get(&token, "/groups/not-a-guid").await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&malformed), "Request_BadRequest");
}

#[tokio::test]
async fn microsoft_365_groups_refuse_the_group_cast() {
    let config = config(50, 3, 5, 0.0);
    let team = config.tenant().group(0).expect("team-site group");
    assert_eq!(team.kind, GroupKind::Microsoft365);
    let sim = start(config).await;
    let token = sim.token().await;

    let reply = sim
        .get_eventual(
            &token,
            &format!("/groups/{}/members/microsoft.graph.group?$count=true", team.id),
        )
        .await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(graph_error_code(&reply), "Request_UnsupportedQuery");
}

#[tokio::test]
async fn group_lookups_work_inside_batch_with_their_own_headers() {
    let config = config(2_000, 40, 30, 0.3);
    let tenant = config.tenant();
    let groups: Vec<m365_sim::SimGroup> = tenant.groups().take(6).collect();
    let user = tenant.user(42);
    let sim = start(config).await;
    let token = sim.token().await;
    let mut requests = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        requests.push(json!({"id": format!("name{i}"), "method": "GET",
            "url": format!("/groups?$filter=displayName eq {}&$select=id", literal(&g.display_name))}));
        requests.push(json!({"id": format!("members{i}"), "method": "GET",
            "url": format!("/groups/{}/{USER_CAST}?$count=true&$select=id&$top=999", g.id),
            "headers": {"ConsistencyLevel": "eventual"}}));
    }
    requests.push(json!({"id": "noheader", "method": "GET",
        "url": format!("/groups/{}/{USER_CAST}?$count=true", groups[0].id)}));
    requests.push(json!({"id": "user", "method": "GET",
        "url": format!("/users?$filter=userPrincipalName eq {}", literal(&user.user_principal_name))}));

    let reply = sim.post_json(&token, "/$batch", &json!({ "requests": requests })).await;

    assert_eq!(reply.status, StatusCode::OK);
    let responses = reply.body["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 14);
    let by_id = |id: &str| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("answer {id}"))
    };
    for (i, g) in groups.iter().enumerate() {
        let names = by_id(&format!("name{i}"));
        assert!(ids(names["body"]["value"].as_array().expect("value")).contains(&g.id));
        let members = by_id(&format!("members{i}"));
        assert_eq!(members["status"], 200, "{members}");
        let got: BTreeSet<String> = ids(members["body"]["value"].as_array().expect("value"))
            .into_iter()
            .collect();
        assert_eq!(got, tenant.transitive_user_ids(&g.id), "group {i}");
        assert_eq!(members["body"]["@odata.count"], got.len());
    }
    assert_eq!(
        by_id("noheader")["status"],
        400,
        "an inner request needs its own header"
    );
    assert_eq!(
        ids(by_id("user")["body"]["value"].as_array().expect("value")),
        [user.id]
    );
    let stats = sim.handle.stats();
    assert_eq!((stats.groups, stats.group_members, stats.user_filter), (6, 7, 1));
    assert_eq!(stats.batch_inner, 14);
}

#[tokio::test]
async fn membership_changes_show_in_listings_and_the_ground_truth() {
    let config = config(3_000, 60, 40, 0.5);
    let generated = config.tenant();
    let parent = generated
        .groups()
        .find(|g| !g.member_groups.is_empty())
        .expect("a nested group");
    let child_id = generated.member_group_ids(&parent.id)[0].clone();
    let before = generated.transitive_user_ids(&parent.id);
    let outsider = generated
        .users()
        .find(|u| !before.contains(&u.id))
        .expect("a user outside the group");
    let sim = start(config).await;
    let token = sim.token().await;
    let base = sim.handle.base_url();

    // Added to the nested group over HTTP: now a transitive member of the parent.
    let added = sim
        .http
        .post(format!("{base}/_sim/groups/{child_id}/members"))
        .json(&json!({"user": outsider.user_principal_name}))
        .send()
        .await
        .expect("sent");
    assert_eq!(added.status(), StatusCode::NO_CONTENT);
    let after_add = cast_ids(&sim, &token, &parent.id).await;
    assert!(after_add.contains(&outsider.id));
    assert_eq!(after_add, sim.handle.tenant().transitive_user_ids(&parent.id));
    assert_eq!(after_add.len(), before.len() + 1);

    // Not a direct member of the parent: removing it there is refused, naming the child.
    let indirect = sim
        .http
        .delete(format!("{base}/_sim/groups/{}/members/{}", parent.id, outsider.id))
        .send()
        .await
        .expect("sent");
    assert_eq!(indirect.status(), StatusCode::CONFLICT);
    assert!(indirect.text().await.expect("body").contains(&child_id));
    let err = sim
        .handle
        .remove_group_member(&parent.id, &outsider.id)
        .expect_err("indirect");
    assert!(matches!(err, m365_sim::SimError::IndirectMember { .. }), "{err}");

    // Removed from the child through the control handle: gone again.
    sim.handle
        .control()
        .remove_group_member(&child_id, &outsider.id)
        .expect("removed");
    let after_remove = cast_ids(&sim, &token, &parent.id).await;
    assert_eq!(after_remove, before);
    let gone = sim
        .http
        .delete(format!("{base}/_sim/groups/{child_id}/members/{}", outsider.id))
        .send()
        .await
        .expect("sent");
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    let unknown = sim
        .http
        .post(format!("{base}/_sim/groups/{child_id}/members"))
        .json(&json!({"user": "nobody@contoso.onmicrosoft.com"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
