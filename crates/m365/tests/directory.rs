//! Scoping lookups against m365-sim over real HTTP: users and groups found by name or address
//! through `$batch`, and groups' transitive user members, all equal to the simulated tenant's
//! ground truth, with and without injected faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use anyhow::Result;
use filetrail_core::discover::GROUP_NOT_FOUND;
use filetrail_core::model::DirectoryUser;
use filetrail_core::ports::Directory;
use filetrail_core::scope::{GroupSelector, UserSelector};
use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, HttpTimeouts, RetryPolicy, http_client};
use m365_sim::{FaultConfig, SimConfig, SimHandle, Tenant};

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

fn config(users: u64, groups: u64, avg: u64, nested: f64) -> SimConfig {
    SimConfig {
        users,
        groups,
        group_members_avg: avg,
        nested_group_ratio: nested,
        ..SimConfig::with_seed(33)
    }
}

fn user_ids(users: &[DirectoryUser]) -> Vec<String> {
    users.iter().map(|u| u.id.clone()).collect()
}

/// The ids of the users a selector should find, by brute force over the directory.
fn expected_users(tenant: &Tenant, selector: &UserSelector) -> Vec<String> {
    tenant
        .users()
        .filter(|u| match selector {
            UserSelector::Email(v) => {
                u.user_principal_name.eq_ignore_ascii_case(v)
                    || u.mail.as_deref().is_some_and(|m| m.eq_ignore_ascii_case(v))
            }
            UserSelector::DisplayName(v) => u.display_name.to_lowercase() == v.to_lowercase(),
        })
        .map(|u| u.id)
        .collect()
}

/// Every transitive user member of a group, page by page through the port.
async fn all_members(graph: &GraphClient, group_id: &str) -> Result<(Vec<DirectoryUser>, usize)> {
    let mut users = Vec::new();
    let mut link: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = Directory::group_members_page(graph, group_id, link.as_deref()).await?;
        pages += 1;
        users.extend(page.users);
        match page.next_link {
            Some(next) => link = Some(next),
            None => return Ok((users, pages)),
        }
    }
}

#[tokio::test]
async fn users_are_found_by_upn_mail_and_display_name_one_answer_per_selector_in_order() -> Result<()> {
    let config = config(800, 0, 0, 0.0);
    let tenant = config.tenant();
    let (a, b) = (tenant.user(17), tenant.user(402));
    let selectors = vec![
        UserSelector::Email(a.user_principal_name.to_uppercase()),
        UserSelector::Email(b.mail.clone().unwrap_or_else(|| b.user_principal_name.clone())),
        UserSelector::DisplayName(a.display_name.to_lowercase()),
        UserSelector::Email("nobody@contoso.onmicrosoft.com".into()),
        UserSelector::DisplayName("Nobody At All".into()),
    ];
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);

    let found = Directory::find_users(&graph, &selectors).await?;

    assert_eq!(found.len(), selectors.len());
    assert_eq!(user_ids(&found[0]), std::slice::from_ref(&a.id));
    assert_eq!(found[0][0].user_principal_name, a.user_principal_name);
    assert_eq!(user_ids(&found[1]), std::slice::from_ref(&b.id));
    assert_eq!(user_ids(&found[2]), expected_users(&tenant, &selectors[2]));
    assert!(!found[2].is_empty());
    assert!(
        found[3].is_empty() && found[4].is_empty(),
        "not found is an empty answer"
    );
    let stats = sim.stats();
    assert_eq!((stats.batch, stats.user_filter), (1, 5), "one $batch of five lookups");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn many_selectors_go_in_batches_of_twenty_and_keep_their_order() -> Result<()> {
    let config = config(2_000, 0, 0, 0.0);
    let tenant = config.tenant();
    let selectors: Vec<UserSelector> = (0..45u64)
        .map(|i| {
            let u = tenant.user(i * 37);
            if i % 3 == 0 {
                UserSelector::DisplayName(u.display_name)
            } else {
                UserSelector::Email(u.user_principal_name)
            }
        })
        .collect();
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);

    let found = graph.find_users(&selectors).await?;

    let expected: Vec<Vec<String>> = selectors.iter().map(|s| expected_users(&tenant, s)).collect();
    assert_eq!(found.iter().map(|f| user_ids(f)).collect::<Vec<_>>(), expected);
    assert_eq!(sim.stats().batch, 3, "45 lookups: 20 + 20 + 5");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn groups_are_found_by_name_and_mail_including_a_quote_in_the_name() -> Result<()> {
    let config = config(500, 150, 10, 0.2);
    let tenant = config.tenant();
    let quoted = tenant
        .groups()
        .find(|g| g.display_name.contains('\'') && g.index % 50 < 48)
        .expect("a name with an apostrophe");
    let mailed = tenant
        .groups()
        .find(|g| g.mail.is_some() && g.index > 10)
        .expect("a mail-enabled group");
    let shared = tenant.group(99).expect("group 99 repeats group 98's display name");
    let selectors = vec![
        GroupSelector::DisplayName(quoted.display_name.clone()),
        GroupSelector::Mail(mailed.mail.clone().unwrap_or_default().to_uppercase()),
        GroupSelector::DisplayName(shared.display_name.to_lowercase()),
        GroupSelector::DisplayName("No Such Group".into()),
        GroupSelector::Mail("nosuchgroup@contoso.onmicrosoft.com".into()),
    ];
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);

    let found = Directory::find_groups(&graph, &selectors).await?;

    assert_eq!(found.len(), 5);
    assert_eq!(found[0].len(), 1);
    assert_eq!(found[0][0].id, quoted.id);
    assert_eq!(found[0][0].display_name, quoted.display_name);
    assert_eq!(found[0][0].mail, quoted.mail);
    assert_eq!(found[1].iter().map(|g| g.id.clone()).collect::<Vec<_>>(), [mailed.id]);
    let both: BTreeSet<String> = found[2].iter().map(|g| g.id.clone()).collect();
    assert_eq!(
        both,
        BTreeSet::from([tenant.group(98).expect("98").id, shared.id]),
        "every group carrying the name"
    );
    assert!(found[3].is_empty() && found[4].is_empty());
    assert_eq!(sim.stats().groups, 5);
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn transitive_members_of_a_nested_group_equal_the_ground_truth_across_pages() -> Result<()> {
    let config = config(30_000, 60, 300, 0.5);
    let tenant = config.tenant();
    let group = tenant
        .groups()
        .filter(|g| !tenant.transitive_group_ids(&g.id).is_empty())
        .max_by_key(|g| tenant.transitive_user_count(&g.id))
        .expect("a nested group");
    let truth = tenant.transitive_user_ids(&group.id);
    assert!(truth.len() > 999, "more than a page: {}", truth.len());
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);

    let (members, pages) = all_members(&graph, &group.id).await?;

    let ids = user_ids(&members);
    assert_eq!(ids.len(), truth.len(), "each user once");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), truth);
    assert_eq!(pages, truth.len().div_ceil(999));
    assert!(members.iter().all(|u| u.user_principal_name.contains('@')));
    assert_eq!(
        sim.stats().group_members,
        pages as u64,
        "no page refused for a missing header"
    );
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_membership_change_shows_in_the_next_listing() -> Result<()> {
    let config = config(1_000, 20, 20, 0.5);
    let tenant = config.tenant();
    let parent = tenant
        .groups()
        .find(|g| !g.member_groups.is_empty())
        .expect("a nested group");
    let child = tenant.member_group_ids(&parent.id)[0].clone();
    let before = tenant.transitive_user_ids(&parent.id);
    let newcomer = tenant.users().find(|u| !before.contains(&u.id)).expect("an outsider");
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);

    sim.add_group_member(&child, &newcomer.user_principal_name)?;
    let (members, _) = all_members(&graph, &parent.id).await?;

    let ids: BTreeSet<String> = user_ids(&members).into_iter().collect();
    assert!(ids.contains(&newcomer.id));
    assert_eq!(ids, sim.tenant().transitive_user_ids(&parent.id));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_unknown_group_is_group_not_found_and_terminal() -> Result<()> {
    let sim = m365_sim::spawn(config(50, 5, 5, 0.0)).await?;
    let graph = client(&sim);
    let gone = "00000000-0000-4000-8000-000000000000";

    let err = Directory::group_members_page(&graph, gone, None).await.unwrap_err();
    let inner = graph.group_members_page(gone, None).await.unwrap_err();

    assert_eq!(err.code, GROUP_NOT_FOUND);
    assert!(err.is_terminal());
    assert!(err.message.contains("404"), "{}", err.message);
    assert_eq!(inner.code(), GROUP_NOT_FOUND);
    assert_eq!(sim.stats().group_members, 2, "a 404 is not retried");
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn inner_throttling_and_faults_still_give_complete_ordered_answers() -> Result<()> {
    let config = config(3_000, 80, 40, 0.3);
    let tenant = config.tenant();
    let users: Vec<UserSelector> = (0..50u64)
        .map(|i| UserSelector::Email(tenant.user(i * 53).user_principal_name))
        .chain([UserSelector::DisplayName(tenant.user(9).display_name)])
        .collect();
    let groups: Vec<GroupSelector> = tenant
        .groups()
        .take(45)
        .map(|g| match &g.mail {
            Some(mail) if g.index % 2 == 0 => GroupSelector::Mail(mail.clone()),
            _ => GroupSelector::DisplayName(g.display_name.clone()),
        })
        .collect();
    let nested = tenant
        .groups()
        .find(|g| !tenant.transitive_group_ids(&g.id).is_empty())
        .expect("a nested group");
    let sim = m365_sim::spawn(config).await?;
    let graph = client(&sim);
    let clean_groups = graph.find_groups(&groups).await?;
    sim.set_faults(FaultConfig {
        batch_inner_throttle_rate: 0.3,
        throttle_rate: 0.1,
        error_5xx_rate: 0.05,
        drop_rate: 0.02,
        retry_after_secs: (0.01, 0.05),
        ..FaultConfig::default()
    });

    let found_users = graph.find_users(&users).await?;
    let found_groups = graph.find_groups(&groups).await?;
    let (members, _) = all_members(&graph, &nested.id).await?;

    let expected: Vec<Vec<String>> = users.iter().map(|s| expected_users(&tenant, s)).collect();
    assert_eq!(found_users.iter().map(|f| user_ids(f)).collect::<Vec<_>>(), expected);
    assert_eq!(found_groups, clean_groups, "same answers as without faults, same order");
    for (selector, answer) in groups.iter().zip(&found_groups) {
        let wanted = match selector {
            GroupSelector::DisplayName(name) => tenant.groups_by_display_name(name).into_iter().map(|g| g.id).collect(),
            GroupSelector::Mail(mail) => tenant.group_by_mail(mail).into_iter().map(|g| g.id).collect::<Vec<_>>(),
        };
        assert_eq!(answer.iter().map(|g| g.id.clone()).collect::<Vec<_>>(), wanted);
    }
    let ids: BTreeSet<String> = user_ids(&members).into_iter().collect();
    assert_eq!(ids, tenant.transitive_user_ids(&nested.id));
    let faults = sim.stats().faults;
    assert!(faults.batch_inner_throttled > 0, "the sim throttled some entries");
    assert!(graph.retries() > 0);
    sim.shutdown().await;
    Ok(())
}
