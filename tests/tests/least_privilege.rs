//! Every AWS call a function makes is one its role in template.yaml allows. moto allows
//! everything, so a missing grant would pass every other test and fail with `AccessDenied` in
//! AWS: here each function signs with its own access key, moto records every request, and each
//! call is checked against that function's statements resolved for the stack. The scenario
//! takes every function through its paths, including the rare ones (a blob parked for want of a
//! drive and placed later, previous versions, an export of settled hours).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DurationRound as _, Utc};
use filetrail_aws::moto::recording::{AwsCall, calls};
use filetrail_aws::template::policy::function_policies;
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::{DISCOVER_FUNCTION, EXPORT_FUNCTION, function_of_access_key};
use filetrail_cli::scope;
use filetrail_core::ports::{ConnectionStore, EventStore as _};
use filetrail_core::scope::ScopeKind;
use filetrail_e2e::{CONNECTION, Stack, repo_root};
use m365_sim::{ActivityConfig, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};

/// Every call a function made that its policy in `template` does not allow, as
/// `function: action on resource (request)`, and how many calls each function made.
fn denied(stack: &Stack, recorded: &[AwsCall], template: &str) -> (BTreeSet<String>, BTreeMap<String, usize>) {
    let policies = function_policies(template, &stack.provisioned).unwrap();
    let mut denied = BTreeSet::new();
    let mut made = BTreeMap::new();
    for call in recorded {
        let Some(function) = function_of_access_key(&call.access_key) else {
            continue; // the test's own set-up and the runner standing in for Lambda's pollers
        };
        *made.entry(function.to_owned()).or_default() += 1;
        let policy = policies
            .get(function)
            .unwrap_or_else(|| panic!("{function} signed a call but has no policy in template.yaml"));
        for (action, resource) in &call.needs {
            if policy.allowing(action, resource).is_none() {
                denied.insert(format!("{function}: {action} on {resource} ({})", call.request));
            }
        }
    }
    (denied, made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aws_call_of_every_function_is_allowed_by_its_role_in_the_template() {
    let stack = Stack::start(SimConfig {
        seed: 31,
        users: 4,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 2, max: 4 },
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(200),
            duplicate_rate: 0.1,
            late_rate: 0.0,
            content_page_size: 5,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    stack.moto.start_recording().await.unwrap();

    // Activity before the connection exists: its blobs are parked until discovery runs.
    let tenant = stack.sim.tenant();
    let drives: Vec<String> = (0..4).map(|i| tenant.drive_of_user(i).unwrap().id).collect();
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(30);
    stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 80,
                seed: 3,
                drives,
                mix: None,
                start: Some(start),
                step_ms: 2_000,
            }),
            return_records: false,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Registered four hours ago (its export starts then), so the export has settled hours to
    // write: the events copied below are recorded three hours ago.
    let mut connection = stack.register(stack.sim.client_secret()).await.unwrap();
    connection.created_at = Utc::now() - chrono::Duration::hours(4);
    stack.state().put_connection(&connection).await.unwrap();
    let runner = stack
        .runner(&[], |o| o.visibility_timeout = Some(Duration::from_secs(5)))
        .unwrap();
    stack.poll_until_caught_up(&runner).await.unwrap();

    // A scope upload (apply-scope), which starts discovery; then the schedule's fan-out.
    let upns: Vec<String> = (0..4).map(|i| tenant.user(i).user_principal_name).collect();
    let csv = format!("Email\n{}", upns.join("\n"));
    let state = stack.state();
    let pending = scope::put(&stack.objects(), &state, CONNECTION, ScopeKind::Users, csv.into_bytes())
        .await
        .unwrap();
    let (result, report) = tokio::join!(pending.result(&state, Duration::from_secs(90)), runner.run());
    assert!(result.unwrap().accepted);
    assert_eq!(report.reason, StopReason::Idle);
    runner.fire_schedule(DISCOVER_FUNCTION).await.unwrap();
    assert_eq!(runner.run().await.reason, StopReason::Idle);
    let events = stack.events().await.unwrap();
    assert!(events.len() > 40, "{} events", events.len());

    // Events recorded three hours ago, in a settled hour.
    let store = stack.event_store();
    let earlier = Utc::now() - chrono::Duration::hours(3);
    let copies: Vec<_> = events
        .values()
        .take(10)
        .map(|e| {
            let mut copy = e.clone();
            copy.event.id = format!("{}-earlier", e.event.id);
            copy.event.inserted_at = earlier;
            copy
        })
        .collect();
    store.insert_events(&copies).await.unwrap();
    let exported = runner.fire_schedule(EXPORT_FUNCTION).await.unwrap();
    assert!(
        exported[0][CONNECTION]["events"].as_u64().unwrap_or(0) >= 10,
        "{exported:?}"
    );

    let recorded = calls(
        &stack.moto.recording().unwrap(),
        &stack.provisioned.region,
        &stack.provisioned.account_id,
    )
    .unwrap();
    let template = std::fs::read_to_string(repo_root().join("template.yaml")).unwrap();
    let (denied_now, made) = denied(&stack, &recorded, &template);
    assert!(
        denied_now.is_empty(),
        "calls the template does not allow:\n{}",
        denied_now.into_iter().collect::<Vec<_>>().join("\n")
    );
    let functions: BTreeSet<&str> = made.keys().map(String::as_str).collect();
    assert_eq!(
        functions,
        BTreeSet::from([
            "ApplyScopeFunction",
            "DiscoverFunction",
            "ExportFunction",
            "HashFileFunction",
            "IndexDriveFunction",
            "IngestActivityFunction",
            "PollActivityFunction",
        ]),
        "every function ran and was recorded: {made:?}"
    );

    // The check bites: without the grant ingest needs to delete a placed blob's marker, that
    // call is reported.
    let section = template.find("  IngestActivityFunction:").unwrap();
    let grant = section
        + template[section..]
            .find("                - dynamodb:DeleteItem\n")
            .unwrap();
    let narrowed = format!(
        "{}{}",
        &template[..grant],
        &template[grant + "                - dynamodb:DeleteItem\n".len()..]
    );
    let (denied_narrowed, _) = denied(&stack, &recorded, &narrowed);
    assert!(
        denied_narrowed
            .iter()
            .any(|d| d.starts_with("IngestActivityFunction: dynamodb:DeleteItem on ")),
        "{denied_narrowed:?}"
    );
}
