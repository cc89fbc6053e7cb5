//! Memory of the benchmark-sized group layout (1,000 groups over 250,000 users, ~200,000 of them
//! in groups), measured in a test binary of its own so no other test's allocations interfere.
#![allow(clippy::expect_used)] // helpers outside #[test] fns panic on purpose, like the tests

mod common;

use common::start;
use m365_sim::SimConfig;
use reqwest::StatusCode;

/// Resident set size of this process, in KiB (Linux `/proc/self/status`).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Pages through a group's transitive users, keeping only their number.
async fn count_members(sim: &common::Sim, token: &str, group_id: &str) -> u64 {
    let mut url = sim.url(&format!(
        "/groups/{group_id}/transitiveMembers/microsoft.graph.user?$count=true&$top=999&$select=id"
    ));
    let mut count = 0;
    loop {
        let page = sim.get_eventual(token, &url).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        count += page.body["value"].as_array().map_or(0, Vec::len) as u64;
        match page.body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return count,
        }
    }
}

/// Growth allowed while counting, listing and looking up groups after the warm-up. Storing the
/// members would cost at least 200,000 × (8-byte index + 36-byte id) ≈ 9 MB; the layout is 16
/// bytes per group, plus the lazily built name index (~1,000 names) and the allocator's slack.
const ALLOWED_GROWTH_KIB: u64 = 4 * 1024;

#[tokio::test]
async fn a_thousand_groups_over_200k_users_cost_almost_no_memory() {
    let config = SimConfig {
        users: 250_000,
        groups: 1_000,
        group_members_avg: 215,
        nested_group_ratio: 0.1,
        ..SimConfig::with_seed(5)
    };
    let sim = start(config).await;
    let token = sim.token().await;
    let tenant = sim.handle.tenant();
    // Warm up the HTTP path and the allocator (page buffers) with one large group.
    assert!(count_members(&sim, &token, &tenant.group(1).expect("group 1").id).await > 1_000);
    let Some(before) = rss_kib() else {
        eprintln!("no /proc/self/status: memory not measured");
        return;
    };

    let distinct = tenant.grouped_user_count();
    let largest = tenant.groups().max_by_key(|g| g.generated_user_count).expect("groups");
    let mut listed = 0;
    for g in [largest.index, 26, 51, 500, 999] {
        let group = tenant.group(g).expect("group").id;
        let count = count_members(&sim, &token, &group).await;
        assert_eq!(count, tenant.transitive_user_count(&group));
        listed += count;
    }
    let lookups = sim
        .get(
            &token,
            &format!(
                "/groups?$filter=displayName eq '{}'",
                largest.display_name.replace('\'', "''")
            ),
        )
        .await;
    assert_eq!(lookups.status, StatusCode::OK);

    let after = rss_kib().unwrap_or(before);
    let growth = after.saturating_sub(before);
    eprintln!("distinct users in groups {distinct}; listed {listed}; RSS {before} → {after} KiB");
    assert!((190_000..=215_000).contains(&distinct), "distinct users {distinct}");
    assert!(
        largest.generated_user_count >= 2_000,
        "largest group {}",
        largest.generated_user_count
    );
    assert!(
        growth < ALLOWED_GROWTH_KIB,
        "RSS grew by {growth} KiB while serving 1,000 groups (allowed {ALLOWED_GROWTH_KIB} KiB)"
    );
}
