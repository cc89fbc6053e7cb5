//! The scope benchmark's pieces: the request models, the CSV an admin would upload, the ground
//! truth, and the naive resolution against the simulator over real HTTP (in process here; the
//! benchmark runs the release binary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use filetrail_bench::baseline::naive_scope_resolution;
use filetrail_bench::scope::{
    ScopeGroup, ScopeRequests, ScopeTruth, batch_envelopes, groups_csv, member_pages, scope_groups,
};
use filetrail_bench::sim_process::{SimReady, graph_requests, stats_delta};
use filetrail_core::scope::csv::{ListKind, parse_scope_csv};
use filetrail_core::scope::{GroupSelector, ScopeEntry};
use filetrail_m365::{HttpTimeouts, http_client};
use m365_sim::SimConfig;

fn group(display_name: &str, mail: Option<&str>) -> ScopeGroup {
    ScopeGroup {
        id: format!("id-{display_name}"),
        display_name: display_name.to_owned(),
        mail: mail.map(str::to_owned),
        transitive_users: 1,
    }
}

fn selectors(entries: &[ScopeEntry]) -> Vec<GroupSelector> {
    entries
        .iter()
        .map(|e| match e {
            ScopeEntry::Group(s) => s.clone(),
            ScopeEntry::User(u) => panic!("a groups CSV gave a user entry {u:?}"),
        })
        .collect()
}

#[test]
fn member_pages_hold_999_users_and_an_empty_group_still_costs_one_page() {
    assert_eq!(member_pages(0), 1);
    assert_eq!(member_pages(1), 1);
    assert_eq!(member_pages(999), 1);
    assert_eq!(member_pages(1000), 2);
    assert_eq!(member_pages(4000), 5);
}

#[test]
fn batch_envelopes_carry_twenty_lookups() {
    assert_eq!(batch_envelopes(0), 0);
    assert_eq!(batch_envelopes(1), 1);
    assert_eq!(batch_envelopes(20), 1);
    assert_eq!(batch_envelopes(21), 2);
    assert_eq!(batch_envelopes(199_853), 9_993);
}

#[test]
fn the_naive_model_sends_one_request_per_entry_page_and_user_and_the_floor_batches_two_of_them() {
    let naive = ScopeRequests::naive(997, 1_179, 199_853);
    assert_eq!(naive.total(), 997 + 1_179 + 199_853);

    let floor = ScopeRequests::batched_floor(997, 1_179, 199_853);
    assert_eq!(
        floor,
        ScopeRequests {
            group_lookups: 50,
            member_pages: 1_179,
            drive_lookups: 9_993,
        }
    );
    assert_eq!(floor.total(), 11_222);
}

#[test]
fn the_groups_csv_reads_back_as_mail_when_there_is_one_and_display_name_otherwise() {
    let groups = [
        group("Sales, EMEA", Some("sales-emea@contoso.com")),
        group("SG O'Brien Lab \"core\"", None),
        group("SG O'Brien Lab \"core\"", None),
    ];

    let csv = groups_csv(&groups).unwrap();

    let parsed = parse_scope_csv(ListKind::Groups, &csv).unwrap();
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    assert_eq!(parsed.duplicates, 1, "a repeated display name is one entry");
    assert_eq!(
        selectors(&parsed.entries),
        [
            GroupSelector::Mail("sales-emea@contoso.com".into()),
            GroupSelector::DisplayName("SG O'Brien Lab \"core\"".into()),
        ]
    );
}

#[test]
fn every_group_of_a_simulated_directory_survives_the_csv() {
    let config = SimConfig {
        users: 3_000,
        groups: 120,
        group_members_avg: 30,
        ..SimConfig::with_seed(11)
    };
    let tenant = config.tenant();
    let groups = scope_groups(&tenant);

    let parsed = parse_scope_csv(ListKind::Groups, &groups_csv(&groups).unwrap()).unwrap();

    assert_eq!(groups.len(), 120);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    // A display name may name several groups, one of which an entry may also name by mail: what
    // counts is that the entries together reach every group.
    let named: std::collections::BTreeSet<String> = selectors(&parsed.entries)
        .iter()
        .flat_map(|s| match s {
            GroupSelector::Mail(m) => tenant.group_by_mail(m).into_iter().collect(),
            GroupSelector::DisplayName(n) => tenant.groups_by_display_name(n),
        })
        .map(|g| g.id)
        .collect();
    let all: std::collections::BTreeSet<String> = groups.iter().map(|g| g.id.clone()).collect();
    assert_eq!(named, all, "the entries reach every group");
}

#[test]
fn the_truth_counts_each_grouped_user_once_and_splits_them_by_onedrive() {
    let config = SimConfig {
        users: 2_000,
        groups: 40,
        group_members_avg: 40,
        no_drive_ratio: 0.2,
        ..SimConfig::with_seed(5)
    };
    let tenant = config.tenant();

    let truth = ScopeTruth::of_all_groups(&tenant);

    assert_eq!(truth.users, tenant.grouped_user_count());
    assert_eq!(truth.drives.len() as u64 + truth.without_drive, truth.users);
    assert!(truth.without_drive > 0, "some users in groups have no OneDrive");
    assert!(truth.drives.iter().all(|id| tenant.drive_by_id(id).is_some()));
}

#[tokio::test]
async fn the_naive_resolution_sends_exactly_its_model_and_sees_the_whole_scope() {
    let config = SimConfig {
        users: 1_500,
        groups: 30,
        group_members_avg: 60,
        no_drive_ratio: 0.2,
        ..SimConfig::with_seed(8)
    };
    let sim = m365_sim::spawn(config.clone()).await.expect("simulator starts");
    let ready = SimReady::of_handle(&sim);
    let http = http_client(HttpTimeouts::default()).unwrap();
    let tenant = config.tenant();
    let groups = scope_groups(&tenant);
    let entries = parse_scope_csv(ListKind::Groups, &groups_csv(&groups).unwrap())
        .unwrap()
        .entries;
    let truth = ScopeTruth::of_all_groups(&tenant);
    let graph = ready.graph_client(http.clone(), "test").unwrap();
    graph.tokens().token().await.unwrap();
    let before = ready.stats(&http).await.unwrap();

    let naive = naive_scope_resolution(&graph, &selectors(&entries), 3).await.unwrap();

    let sent = stats_delta(&ready.stats(&http).await.unwrap(), &before);
    assert_eq!(naive.groups, 30);
    assert_eq!(naive.users, truth.users);
    assert_eq!(naive.drives, truth.drives.len() as u64);
    assert_eq!(naive.without_drive, truth.without_drive);
    assert!(naive.memberships >= naive.users);
    assert_eq!(
        naive.member_pages,
        groups.iter().map(|g| member_pages(g.transitive_users)).sum::<u64>()
    );
    assert_eq!(naive.group_lookups, entries.len() as u64);
    assert_eq!(
        graph_requests(&sent),
        ScopeRequests::naive(naive.group_lookups, naive.member_pages, naive.users).total(),
        "{sent:?}"
    );
    assert_eq!(sent.batch, 0);
    assert_eq!(sent.drive, truth.users);
}
