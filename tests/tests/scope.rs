//! End to end on moto + m365-sim: scope uploads go to moto's S3 as an admin would put them, the
//! bucket notifies apply-scope through SQS, and discovery monitors exactly the drives the scope
//! names. Expected sets come from the simulator's tenant model (groups resolved there, without
//! HTTP), never from what filetrail stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use filetrail_cli::local::runner::{Runner, StopReason};
use filetrail_cli::pipeline::DISCOVER_FUNCTION;
use filetrail_cli::scope;
use filetrail_cli::status::{self, ConnectionStatus};
use filetrail_core::model::DriveState;
use filetrail_core::ports::{ConnectionStore, DiscoveryRunStore, ScopeStore};
use filetrail_core::scope::{GroupSelector, ScopeEntry, ScopeKind, ScopeUploadResult};
use filetrail_e2e::{CONNECTION, Stack, expected_inventory};
use m365_sim::{FilesPerDrive, SimConfig, SimGroup, Tenant};

fn tenant() -> SimConfig {
    SimConfig {
        seed: 31,
        users: 240,
        no_drive_ratio: 0.1,
        team_sites: 2,
        groups: 14,
        group_members_avg: 14,
        nested_group_ratio: 0.4,
        files_per_drive: FilesPerDrive::Range { min: 0, max: 8 },
        page_size_default: 50,
        ..SimConfig::default()
    }
}

/// Puts `body` where an admin would and runs the pipeline until idle meanwhile: apply-scope,
/// then the discovery and indexing it starts. Returns apply-scope's result.
async fn upload(stack: &Stack, runner: &Runner, kind: ScopeKind, body: &[u8]) -> ScopeUploadResult {
    let objects = stack.objects();
    let state = stack.state();
    // The bucket notifies the queue as the put returns, so the runner finds the message waiting.
    let pending = scope::put(&objects, &state, CONNECTION, kind, body.to_vec())
        .await
        .unwrap();
    let (result, report) = tokio::join!(pending.result(&state, Duration::from_secs(90)), runner.run());
    assert_eq!(report.reason, StopReason::Idle);
    let result = result.unwrap();
    // The result object sits next to the upload, and says what the status says.
    let stored = objects
        .get(&result.result_key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no result object at {}", result.result_key));
    let stored: ScopeUploadResult = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored, result);
    assert!(
        result.result_key.starts_with(&format!("scoping/{CONNECTION}/results/"))
            && result.result_key.ends_with(".json"),
        "{}",
        result.result_key
    );
    result
}

async fn discover(runner: &Runner) {
    runner.fire_schedule(DISCOVER_FUNCTION).await.unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
}

async fn connection_status(stack: &Stack) -> ConnectionStatus {
    let mut all = status::collect(&stack.state(), Some(CONNECTION)).await.unwrap();
    all.remove(0)
}

/// OneDrive ids of the users (object ids) that have one.
fn drives_of_ids<'a>(tenant: &Tenant, ids: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    ids.into_iter()
        .filter_map(|id| tenant.find_user(id))
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect()
}

/// The OneDrives of every user in `groups`, nested groups included, as the tenant holds them now.
fn drives_of_groups(tenant: &Tenant, groups: &[SimGroup]) -> BTreeSet<String> {
    let users: BTreeSet<String> = groups.iter().flat_map(|g| tenant.transitive_user_ids(&g.id)).collect();
    drives_of_ids(tenant, &users)
}

/// Inventory rows of `drives`, as (drive, item) pairs.
async fn inventory_of(stack: &Stack, drives: &BTreeSet<String>) -> BTreeSet<(String, String)> {
    stack
        .inventory()
        .await
        .unwrap()
        .into_iter()
        .filter(|i| drives.contains(&i.drive_id))
        .map(|i| (i.drive_id, i.item_id))
        .collect()
}

fn csv_cell(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_then_nested_groups_then_a_bad_file_monitor_exactly_the_scoped_drives() {
    let stack = Stack::start(tenant()).await.unwrap();
    let tenant = stack.sim.tenant();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();

    // No scope uploaded yet: every user is monitored.
    discover(&runner).await;
    let all_drives: BTreeSet<String> = tenant
        .users()
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    assert_eq!(stack.monitored_drives().await.unwrap(), all_drives);
    let full_inventory = stack.inventory().await.unwrap();
    assert_eq!(full_inventory, expected_inventory(&stack.sim));

    // 1. A users list: six users with a OneDrive (one by display name, one twice), one without,
    //    one who does not exist.
    let with_drive: Vec<_> = tenant
        .users()
        .filter(|u| tenant.drive_of_user(u.index).is_some())
        .take(40)
        .collect();
    let without_drive = tenant
        .users()
        .find(|u| tenant.drive_of_user(u.index).is_none())
        .unwrap();
    let chosen = [
        &with_drive[3],
        &with_drive[11],
        &with_drive[17],
        &with_drive[25],
        &with_drive[31],
    ];
    let by_name = with_drive
        .iter()
        .find(|u| tenant.users().filter(|o| o.display_name == u.display_name).count() == 1)
        .unwrap();
    let mut csv = String::from("\u{feff}Display Name , EMAIL address,Department\r\n");
    for u in chosen {
        csv += &format!(
            "{},{},Finance\r\n",
            csv_cell(&u.display_name),
            u.user_principal_name.to_uppercase()
        );
    }
    csv += &format!(
        "{},{},Finance\r\n",
        csv_cell(&chosen[0].display_name),
        chosen[0].user_principal_name
    );
    csv += &format!("{},,Sales\r\n", csv_cell(&by_name.display_name));
    csv += &format!(",{},Sales\r\n", without_drive.user_principal_name);
    csv += &format!(",nobody.here@{},Sales\r\n", tenant.domain());
    let result = upload(&stack, &runner, ScopeKind::Users, csv.as_bytes()).await;
    assert!(result.accepted, "{result:#?}");
    assert_eq!((result.entries, result.duplicates), (8, 1), "{result:#?}");

    let users_scope: BTreeSet<String> = chosen
        .iter()
        .chain([&by_name])
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    assert_eq!(users_scope.len(), 6);
    assert_eq!(stack.monitored_drives().await.unwrap(), users_scope);
    let unmonitored = stack.drives_in(&[DriveState::Unmonitored]).await.unwrap();
    assert_eq!(unmonitored, &all_drives - &users_scope);
    // Unmonitored drives keep every row of their history.
    assert_eq!(stack.inventory().await.unwrap(), full_inventory);
    let st = connection_status(&stack).await;
    assert_eq!(st.scope.kind, ScopeKind::Users);
    assert_eq!(st.users_without_onedrive, 1, "{st:#?}");
    let last = st.last_discovery.clone().unwrap();
    assert_eq!(last.scope, ScopeKind::Users);
    assert_eq!(
        last.unresolved
            .iter()
            .map(|u| u.entry.value().to_owned())
            .collect::<Vec<_>>(),
        [format!("nobody.here@{}", tenant.domain())]
    );
    assert_eq!(last.drives_unmonitored, (all_drives.len() - 6) as u64);
    assert_eq!(st.last_scope_upload.as_ref(), Some(&result));

    // 2. A groups list: a group with nested groups (by display name, every group of that name),
    //    a mail-enabled group (by mail), and a group that does not exist.
    let nested = tenant
        .groups()
        .find(|g| !g.member_groups.is_empty() && tenant.groups_by_display_name(&g.display_name).len() == 1)
        .expect("the tenant has a group with nested groups");
    let by_mail = tenant
        .groups()
        .find(|g| g.mail.is_some() && g.index != nested.index && !g.member_groups.is_empty())
        .or_else(|| tenant.groups().find(|g| g.mail.is_some() && g.index != nested.index))
        .unwrap();
    let csv = format!(
        "Groups,Email\n{},\n,{}\n\"Former Contractors, EMEA\",\n",
        csv_cell(&nested.display_name),
        by_mail.mail.clone().unwrap()
    );
    let result = upload(&stack, &runner, ScopeKind::Groups, csv.as_bytes()).await;
    assert!(result.accepted && result.entries == 3, "{result:#?}");
    let scoped_groups = [nested.clone(), by_mail.clone()];
    let groups_scope = drives_of_groups(tenant, &scoped_groups);
    assert!(
        groups_scope.len() > drives_of_ids(tenant, &tenant.direct_user_ids(&nested.id)).len(),
        "the nested groups add members"
    );
    assert_eq!(stack.monitored_drives().await.unwrap(), groups_scope);
    assert_eq!(
        stack.drives_in(&[DriveState::Unmonitored]).await.unwrap(),
        &all_drives - &groups_scope
    );
    // Monitored drives are fully indexed: those that came back resumed and lost nothing.
    assert_eq!(stack.drives_in(&[DriveState::Indexed]).await.unwrap(), groups_scope);
    assert_eq!(stack.inventory().await.unwrap(), full_inventory);
    let st = connection_status(&stack).await;
    let last = st.last_discovery.clone().unwrap();
    assert_eq!(last.scope, ScopeKind::Groups);
    assert_eq!(
        last.unresolved.iter().map(|u| u.entry.clone()).collect::<Vec<_>>(),
        [ScopeEntry::Group(GroupSelector::DisplayName(
            "Former Contractors, EMEA".into()
        ))]
    );
    // Drives the users scope had unmonitored come back.
    assert_eq!(
        last.drives_returned,
        groups_scope.difference(&users_scope).count() as u64
    );
    let scope_before = stack.state().scope(CONNECTION).await.unwrap().unwrap();

    // 3. A bad file (not text) is rejected as a whole and the groups scope stays in force.
    let mut binary = b"\x89PNG\r\n\x1a\n".to_vec();
    binary.extend((0..4096u32).map(|i| (i * 7919 % 251) as u8));
    let result = upload(&stack, &runner, ScopeKind::Groups, &binary).await;
    assert!(!result.accepted, "{result:#?}");
    assert!(
        result.error.as_deref().is_some_and(|e| e.contains("UTF-8")),
        "{result:#?}"
    );
    assert_eq!(
        stack.state().scope(CONNECTION).await.unwrap(),
        Some(scope_before.clone())
    );
    let st = connection_status(&stack).await;
    assert_eq!(st.last_scope_upload.as_ref(), Some(&result));
    assert_eq!(st.scope.kind, ScopeKind::Groups);
    discover(&runner).await;
    assert_eq!(stack.monitored_drives().await.unwrap(), groups_scope);

    // 4. A user added to a group nested in a scoped group is monitored after the next run.
    let inner = &nested.member_groups;
    let inner_group = tenant.group(inner[0]).unwrap();
    let newcomer = tenant
        .users()
        .find(|u| {
            tenant
                .drive_of_user(u.index)
                .is_some_and(|d| !groups_scope.contains(&d.id))
        })
        .unwrap();
    let newcomer_drive = tenant.drive_of_user(newcomer.index).unwrap().id;
    stack
        .sim
        .add_group_member(&inner_group.id, &newcomer.user_principal_name)
        .unwrap();
    let grown = drives_of_groups(tenant, &scoped_groups);
    assert_eq!(grown, {
        let mut s = groups_scope.clone();
        s.insert(newcomer_drive.clone());
        s
    });
    discover(&runner).await;
    assert_eq!(stack.monitored_drives().await.unwrap(), grown);
    assert_eq!(stack.drives_in(&[DriveState::Indexed]).await.unwrap(), grown);

    // 5. A user removed from the only scoped group they belonged to: unmonitored, history kept.
    let (leaver, leaver_group) = scoped_groups
        .iter()
        .flat_map(|g| {
            let mut groups = vec![g.id.clone()];
            groups.extend(tenant.transitive_group_ids(&g.id));
            groups
        })
        .flat_map(|g| tenant.direct_user_ids(&g).into_iter().map(move |u| (u, g.clone())))
        .find(|(u, g)| {
            let has_drive = tenant
                .find_user(u)
                .and_then(|u| tenant.drive_of_user(u.index))
                .is_some();
            if !has_drive || *u == newcomer.id {
                return false;
            }
            stack.sim.remove_group_member(g, u).unwrap();
            let left = !drives_of_groups(tenant, &scoped_groups)
                .contains(&tenant.drive_of_user(tenant.find_user(u).unwrap().index).unwrap().id);
            if !left {
                stack.sim.add_group_member(g, u).unwrap();
            }
            left
        })
        .expect("a member who belongs through one group only");
    let leaver_drive = tenant
        .drive_of_user(tenant.find_user(&leaver).unwrap().index)
        .unwrap()
        .id;
    let history = inventory_of(&stack, &BTreeSet::from([leaver_drive.clone()])).await;
    assert!(
        tenant.drive_items(&leaver_drive).all(|i| i.is_root) || !history.is_empty(),
        "the leaver's files were indexed before"
    );
    discover(&runner).await;
    let shrunk = drives_of_groups(tenant, &scoped_groups);
    assert!(!shrunk.contains(&leaver_drive), "{leaver} left {leaver_group}");
    assert_eq!(stack.monitored_drives().await.unwrap(), shrunk);
    assert!(
        stack
            .drives_in(&[DriveState::Unmonitored])
            .await
            .unwrap()
            .contains(&leaver_drive)
    );
    assert_eq!(inventory_of(&stack, &BTreeSet::from([leaver_drive])).await, history);
    assert!(
        stack.dead_letters().await.unwrap().values().all(|n| *n == 0),
        "nothing may end in a DLQ"
    );
}

/// An upload landing while scheduled discovery runs: two discover invocations of one connection
/// at once, each handing over after every page. One run wins; the other stops without sweeping,
/// so the monitored set ends exactly as the scope says and no run stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_racing_scheduled_discovery_ends_in_the_exact_scope() {
    let stack = Stack::start(SimConfig { seed: 32, ..tenant() }).await.unwrap();
    let tenant = stack.sim.tenant();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack
        .runner(&[("FILETRAIL_MAX_PAGES_PER_INVOCATION", "1")], |o| o.concurrency = 3)
        .unwrap();
    let all_drives: BTreeSet<String> = tenant
        .users()
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    discover(&runner).await;
    assert_eq!(stack.monitored_drives().await.unwrap(), all_drives);

    let groups: Vec<SimGroup> = tenant
        .groups()
        .filter(|g| !g.member_groups.is_empty())
        .take(2)
        .collect();
    let csv = groups.iter().fold(String::from("Display Name\n"), |csv, g| {
        csv + &csv_cell(&g.display_name) + "\n"
    });
    let expected: BTreeSet<String> = groups
        .iter()
        .flat_map(|g| tenant.groups_by_display_name(&g.display_name))
        .flat_map(|g| tenant.transitive_user_ids(&g.id))
        .collect::<BTreeSet<_>>()
        .iter()
        .filter_map(|id| tenant.find_user(id))
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    assert!(!expected.is_empty() && expected.len() < all_drives.len());

    let state = stack.state();
    let objects = stack.objects();
    let pending = scope::put(&objects, &state, CONNECTION, ScopeKind::Groups, csv.into_bytes())
        .await
        .unwrap();
    runner.fire_schedule(DISCOVER_FUNCTION).await.unwrap();
    let (result, report) = tokio::join!(pending.result(&state, Duration::from_secs(90)), runner.run());
    assert_eq!(report.reason, StopReason::Idle);
    assert!(result.unwrap().accepted);

    assert_eq!(stack.monitored_drives().await.unwrap(), expected);
    assert_eq!(stack.drives_in(&[DriveState::Indexed]).await.unwrap(), expected);
    assert_eq!(
        stack.drives_in(&[DriveState::Unmonitored]).await.unwrap(),
        &all_drives - &expected
    );
    assert_eq!(
        state.discovery_checkpoint(CONNECTION).await.unwrap(),
        None,
        "no run left open"
    );
    let last = connection_status(&stack).await.last_discovery.unwrap();
    assert_eq!(last.scope, ScopeKind::Groups);
    assert_eq!(last.drives_found, expected.len() as u64);
    assert!(
        stack.dead_letters().await.unwrap().values().all(|n| *n == 0),
        "nothing may end in a DLQ"
    );
}

/// Over the drive cap nothing is silently dropped: the connection says how many drives are in
/// scope, the cap, and how to narrow the scope; a narrower scope clears the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_drive_cap_the_status_names_count_and_cap_until_the_scope_fits() {
    let stack = Stack::start(SimConfig {
        seed: 33,
        users: 60,
        groups: 4,
        files_per_drive: FilesPerDrive::Range { min: 0, max: 3 },
        ..tenant()
    })
    .await
    .unwrap();
    let tenant = stack.sim.tenant();
    let mut connection = stack.register(stack.sim.client_secret()).await.unwrap();
    connection.drive_cap = 20;
    stack.state().put_connection(&connection).await.unwrap();
    let in_scope = tenant.users_with_drive();
    assert!(in_scope > 20);

    let runner = stack.runner(&[], |_| {}).unwrap();
    discover(&runner).await;
    assert_eq!(stack.monitored_drives().await.unwrap().len(), 20);
    let st = connection_status(&stack).await;
    let error = st.error.clone().expect("the cap is reported");
    assert_eq!(error.code, "drive_cap_exceeded");
    assert!(
        error.message.contains(&format!("{in_scope} OneDrives are in scope")) && error.message.contains("cap is 20"),
        "{error:?}"
    );
    assert!(error.fix.contains("filetrail scope upload contoso"), "{error:?}");
    assert_eq!(st.last_discovery.unwrap().drives_over_cap, in_scope - 20);

    // Ten users fit: the error clears and exactly their drives are monitored.
    let ten: Vec<_> = tenant
        .users()
        .filter(|u| tenant.drive_of_user(u.index).is_some())
        .skip(15)
        .take(10)
        .collect();
    let csv = ten
        .iter()
        .fold(String::from("Email\n"), |csv, u| csv + &u.user_principal_name + "\n");
    let result = upload(&stack, &runner, ScopeKind::Users, csv.as_bytes()).await;
    assert!(result.accepted);
    let expected: BTreeSet<String> = ten
        .iter()
        .filter_map(|u| tenant.drive_of_user(u.index))
        .map(|d| d.id)
        .collect();
    assert_eq!(stack.monitored_drives().await.unwrap(), expected);
    assert_eq!(connection_status(&stack).await.error, None);
}

/// Every object put under `scoping/` gets a result, whatever its name or folder (the bucket used
/// to notify only keys ending in `.csv`, so `Users.CSV` or `users.txt` vanished without a
/// trace): applied when it names a connection's scope file in any case, else refused with the
/// key that would work. A refused file leaves the scope in force; folder markers and the
/// results themselves are not uploads (the pipeline goes idle, nothing is dead-lettered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_put_under_scoping_gets_a_result_with_the_key_that_would_work() {
    let stack = Stack::start(SimConfig {
        seed: 33,
        users: 12,
        groups: 2,
        ..tenant()
    })
    .await
    .unwrap();
    stack.register(stack.sim.client_secret()).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    let tenant = stack.sim.tenant();
    let user = tenant.users().next().unwrap();
    let objects = stack.objects();
    let s3 = filetrail_aws::s3_client(&stack.sdk);
    let users_csv = format!("UserPrincipalName\n{}\n", user.user_principal_name);
    let upper = CONNECTION.to_ascii_uppercase();

    // (key, accepted, what the error must name)
    let uploads: Vec<(String, bool, String)> = vec![
        (format!("scoping/{CONNECTION}/Users.CSV"), true, String::new()),
        (
            format!("scoping/{CONNECTION}/users.txt"),
            false,
            format!("scoping/{CONNECTION}/users.csv"),
        ),
        (
            "scoping/users.csv".to_owned(),
            false,
            format!("upload to scoping/{CONNECTION}/users.csv"),
        ),
        (
            format!("scoping/{CONNECTION}/archive/groups.csv"),
            false,
            format!("upload to scoping/{CONNECTION}/groups.csv"),
        ),
        (
            format!("scoping/{upper}/users.csv"),
            false,
            format!("upload to scoping/{CONNECTION}/users.csv"),
        ),
        (
            "scoping/fabrikam/users.csv".to_owned(),
            false,
            format!(
                "no connection is named \"fabrikam\": upload to scoping/<connection>/users.csv, where <connection> is one of: {CONNECTION}"
            ),
        ),
    ];
    for (key, _, _) in &uploads {
        objects
            .put(key, users_csv.clone().into_bytes(), "text/csv")
            .await
            .unwrap();
        assert_eq!(runner.run().await.reason, StopReason::Idle);
    }
    // A folder made in a console is an empty object whose key ends in `/`: not an upload.
    objects
        .put(
            &format!("scoping/{CONNECTION}/archive/"),
            Vec::new(),
            "application/x-directory",
        )
        .await
        .unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);

    let listed = s3
        .list_objects_v2()
        .bucket(objects.bucket())
        .prefix("scoping/")
        .send()
        .await
        .unwrap();
    let mut results = Vec::new();
    for o in listed.contents() {
        let key = o.key().unwrap();
        if key.ends_with(".json") {
            let body = objects.get(key).await.unwrap().unwrap();
            let result: ScopeUploadResult = serde_json::from_slice(&body).unwrap();
            assert_eq!(result.result_key, key);
            results.push(result);
        }
    }
    assert_eq!(
        results.len(),
        uploads.len(),
        "one result per uploaded file, none for the folder marker or the results: {results:#?}"
    );
    for (key, accepted, names) in &uploads {
        let result = results
            .iter()
            .find(|r| &r.key == key)
            .unwrap_or_else(|| panic!("no result for {key}: {results:#?}"));
        assert_eq!(result.accepted, *accepted, "{key}: {result:#?}");
        let error = result.error.as_deref().unwrap_or_default();
        assert!(error.contains(names.as_str()), "{key}: {error:?} should name {names:?}");
        let folder = if key.starts_with("scoping/fabrikam/") {
            "scoping/fabrikam/results/".to_owned()
        } else {
            format!("scoping/{CONNECTION}/results/")
        };
        assert!(result.result_key.starts_with(&folder), "{key}: {}", result.result_key);
    }

    // The refusals left the accepted scope in force, and status shows the latest upload.
    let scope = stack.state().scope(CONNECTION).await.unwrap().unwrap();
    assert_eq!(scope.kind, ScopeKind::Users);
    assert_eq!(scope.entries.len(), 1);
    assert_eq!(
        scope.source.map(|s| s.key),
        Some(format!("scoping/{CONNECTION}/Users.CSV"))
    );
    let last = connection_status(&stack).await.last_scope_upload.unwrap();
    assert!(
        !last.accepted && last.key == format!("scoping/{upper}/users.csv"),
        "{last:#?}"
    );
    assert!(
        stack.dead_letters().await.unwrap().values().all(|n| *n == 0),
        "nothing may end in a DLQ"
    );
}
