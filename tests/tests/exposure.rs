//! End to end on moto + m365-sim: the exposure report lists exactly the files the simulated
//! tenant shares by anonymous link or with people outside the trusted domains (seeded sharing
//! found by the first walk, new sharing found through the audit feed), and `sharing revoke`
//! removes sharing through Graph only in write mode, records each removal as an event, and the
//! file leaves the report.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use filetrail_cli::exposure::{self, RevokeStores};
use filetrail_cli::local::runner::StopReason;
use filetrail_cli::pipeline::POLL_ACTIVITY_FUNCTION;
use filetrail_core::audit::FileEventType;
use filetrail_core::exposure::RevokeSelection;
use filetrail_core::ports::{ConnectionStore, EventStore as _};
use filetrail_e2e::{CONNECTION, Stack};
use m365_sim::{ActivityConfig, ActivityKind, ActivityRequest, FilesPerDrive, LinkScope, SimConfig, SimPermission};

fn tenant() -> SimConfig {
    SimConfig {
        seed: 5150,
        users: 6,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Range { min: 20, max: 30 },
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(300),
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    }
}

/// The permissions that expose a file, by the simulator's own account.
fn exposing(p: &SimPermission) -> bool {
    p.link.as_ref().is_some_and(|l| l.scope == LinkScope::Anonymous)
        || p.grantees.iter().any(|g| g.external && !g.site_group)
}

/// (drive, item, permission) of every exposing permission of the monitored drives, per the
/// simulator.
fn truth(stack: &Stack, drives: &BTreeSet<String>) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for drive in drives {
        for (item, perms) in stack.sim.shared_items(drive) {
            for p in perms.iter().filter(|p| exposing(p)) {
                out.insert((drive.clone(), item.id.clone(), p.id.clone()));
            }
        }
    }
    out
}

async fn reported(stack: &Stack) -> BTreeSet<(String, String, String)> {
    let state = stack.state();
    let connections = state.connections().await.unwrap();
    exposure::report(&state, &stack.inventory_store(), &connections)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.drive_id, e.item_id, e.permission_id))
        .collect()
}

#[tokio::test]
async fn the_exposure_report_matches_the_tenant_and_revoke_removes_sharing_only_in_write_mode() {
    let stack = Stack::start(tenant()).await.unwrap();
    let mut connection = stack.register(stack.sim.client_secret()).await.unwrap();
    connection.trusted_domains = vec![stack.sim.tenant().domain().to_owned()];
    stack.state().put_connection(&connection).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    let poll = || async {
        runner.fire_schedule(POLL_ACTIVITY_FUNCTION).await.unwrap();
        assert_eq!(runner.run().await.reason, StopReason::Idle);
    };
    // The first poll starts the subscription: content from before it is never listed.
    poll().await;
    stack.discover_and_index(&runner).await.unwrap();
    let drives = stack.monitored_drives().await.unwrap();

    // GIVEN the seeded sharing the first walk found (shared facet on delta items)
    let seeded = truth(&stack, &drives);
    assert!(!seeded.is_empty(), "the seeded tenant shares some files outside");
    assert_eq!(reported(&stack).await, seeded);

    // WHEN people share files: anyone links, a guest, an organisation link, a colleague
    let drive = drives.iter().next().unwrap().clone();
    let files: Vec<String> = stack
        .sim
        .current_items(&drive)
        .into_iter()
        .filter(|i| !i.is_folder && stack.sim.item_permissions(&drive, &i.id).len() == 1)
        .map(|i| i.id)
        .take(4)
        .collect();
    assert_eq!(files.len(), 4);
    let domain = stack.sim.tenant().domain().to_owned();
    let colleague = stack.sim.tenant().user(1).user_principal_name;
    let operations = vec![
        m365_sim::Activity::new(ActivityKind::AnonymousLinkCreated, &drive).item(&files[0]),
        m365_sim::Activity::new(ActivityKind::Share, &drive)
            .item(&files[1])
            .targets(&["partner@fabrikam.example"]),
        m365_sim::Activity::new(ActivityKind::CompanyLinkCreated, &drive).item(&files[2]),
        m365_sim::Activity::new(ActivityKind::Share, &drive)
            .item(&files[3])
            .targets(&[colleague.as_str()]),
    ];
    stack
        .sim
        .inject_activity(&ActivityRequest {
            operations,
            random: None,
            return_records: false,
        })
        .unwrap();
    // The feed publishes after a delay and lists whole seconds: poll until the shares are events.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        poll().await;
        let recorded = stack.events().await.unwrap();
        let shared: BTreeSet<&str> = (recorded.values())
            .filter(|r| r.event.event_type.is_sharing())
            .filter_map(|r| r.event.item_id.as_deref())
            .collect();
        if files.iter().all(|f| shared.contains(f.as_str())) {
            break;
        }
    }

    // THEN the report follows the tenant: the anyone link and the guest, not the organisation
    // link nor the colleague
    let now = truth(&stack, &drives);
    assert_eq!(reported(&stack).await, now);
    let exposed_files: BTreeSet<&String> = now.iter().filter(|(d, _, _)| *d == drive).map(|(_, i, _)| i).collect();
    assert!(exposed_files.contains(&files[0]) && exposed_files.contains(&files[1]));
    assert!(
        !exposed_files.contains(&files[2]) && !exposed_files.contains(&files[3]),
        "{domain}"
    );

    // Revoking: refused on a read-only connection, refused by Graph without Files.ReadWrite.All,
    // done in write mode with the role.
    let clients = filetrail_runtime::ConnectionClients::new(
        filetrail_m365::http_client(filetrail_m365::HttpTimeouts::default()).unwrap(),
        filetrail_aws::secrets::SecretsStore::new(
            aws_sdk_secretsmanager::Client::new(&stack.sdk),
            stack.secret_prefix(),
        ),
        filetrail_m365::RetryPolicy::default(),
        Duration::ZERO,
    );
    let (state, inventory, events) = (stack.state(), stack.inventory_store(), stack.event_store());
    let stores = RevokeStores {
        state: &state,
        inventory: &inventory,
        events: &events,
        clients: &clients,
    };
    let mut yes = |_: &str, _: usize| Ok(true);
    let target = &files[0];
    let operator = "arn:aws:iam::123456789012:user/security-admin";
    let e = exposure::revoke(
        &stores,
        operator,
        &drive,
        target,
        &RevokeSelection::AllExternal,
        &mut yes,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("read-only") && e.contains("write-mode"), "{e}");

    // Write mode is a second app; the pipeline's app never gets a write role. Without
    // Files.ReadWrite.All Graph refuses, and the refused attempt is recorded with its answer.
    stack.sim.register_app("write-app", "write~Secret", &["Files.Read.All"]);
    let write_secrets = filetrail_aws::secrets::SecretsStore::new(
        aws_sdk_secretsmanager::Client::new(&stack.sdk),
        filetrail_aws::config::write_secret_prefix(&stack.provisioned.stack_name),
    );
    let secret_id = write_secrets
        .put_app_secret(
            CONNECTION,
            &filetrail_aws::AppSecret {
                client_secret: filetrail_aws::Secret::new("write~Secret"),
            },
        )
        .await
        .unwrap();
    connection.write_app = Some(filetrail_core::model::WriteApp {
        client_id: "write-app".to_owned(),
        secret_id,
        enabled_at: chrono::Utc::now(),
    });
    state.put_connection(&connection).await.unwrap();
    let e = format!(
        "{:#}",
        exposure::revoke(
            &stores,
            operator,
            &drive,
            target,
            &RevokeSelection::AllExternal,
            &mut yes
        )
        .await
        .unwrap_err()
    );
    assert!(e.contains("Files.ReadWrite.All"), "{e}");
    assert!(
        stack.sim.item_permissions(&drive, target).iter().any(exposing),
        "nothing removed"
    );
    let refused: Vec<_> = (events.file_events(&drive, target, 50).await.unwrap().into_iter())
        .filter(|r| r.event.operation == "FiletrailSharingRevoked")
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let status = refused[0].event.result_status.clone().unwrap_or_default();
    assert!(status.starts_with("Failed (403"), "{status}");

    stack
        .sim
        .register_app("write-app", "write~Secret", &["Files.ReadWrite.All"]);
    stack.sim.expire_tokens();
    let mut no = |_: &str, _: usize| Ok(false);
    let e = exposure::revoke(
        &stores,
        operator,
        &drive,
        target,
        &RevokeSelection::AllExternal,
        &mut no,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("not confirmed"), "{e}");
    assert!(
        stack.sim.item_permissions(&drive, target).iter().any(exposing),
        "nothing removed unconfirmed"
    );

    let report = exposure::revoke(
        &stores,
        operator,
        &drive,
        target,
        &RevokeSelection::AllExternal,
        &mut yes,
    )
    .await
    .unwrap();
    assert_eq!(report.removed, 1);
    assert!(!report.still_exposed);
    assert!(!stack.sim.item_permissions(&drive, target).iter().any(exposing));
    let after = reported(&stack).await;
    assert_eq!(after, truth(&stack, &drives));
    assert!(!after.iter().any(|(_, i, _)| i == target));

    // The removal is an event of the file, by filetrail, findable like any other.
    let trail = events.file_events(&drive, target, 50).await.unwrap();
    let revoked: Vec<_> = trail
        .iter()
        .filter(|r| r.event.operation == "FiletrailSharingRevoked")
        .collect();
    assert_eq!(revoked.len(), 2, "the refused attempt and the removal: {trail:#?}");
    let removal = revoked
        .iter()
        .find(|r| r.event.result_status.as_deref() == Some("Succeeded (204 No Content)"))
        .expect("the removal, with Graph's answer");
    assert_eq!(removal.event.event_type, FileEventType::AnonymousLinkRemoved);
    assert_eq!(removal.connection, CONNECTION);
    assert_eq!(removal.event.actor.id, operator, "who ran it");
    assert!(
        removal
            .event
            .user_agent
            .as_deref()
            .is_some_and(|a| a.contains("write-app")),
        "{:?}",
        removal.event.user_agent
    );
    // The pipeline's app never held a write role.
    assert!(
        !stack
            .sim
            .control()
            .graph_roles()
            .iter()
            .any(|r| r.contains("ReadWrite"))
    );

    // Asking again finds nothing to remove and says so.
    let e = exposure::revoke(
        &stores,
        operator,
        &drive,
        target,
        &RevokeSelection::AllAnonymous,
        &mut yes,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("no anonymous link"), "{e}");
}
