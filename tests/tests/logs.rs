//! End to end on moto + m365-sim with every log line kept: registering a connection,
//! discovery, indexing, audit ingestion and hashing, logged at `debug` (more than a deployment's
//! `info`), write no client secret, no access token, no pre-authenticated download URL and no
//! file content.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DurationRound as _, Utc};
use filetrail_cli::local::runner::StopReason;
use filetrail_e2e::Stack;
use m365_sim::{ActivityConfig, ActivityRequest, FilesPerDrive, RandomActivity, SimConfig};

/// Every log line of the test, as the subscriber formatted it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_run_logs_no_secret_token_download_url_or_file_content() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_env_filter("debug,aws_smithy_runtime=info,aws_sdk_dynamodb=info,hyper_util=info,h2=info")
        .init();

    let stack = Stack::start(SimConfig {
        seed: 73,
        users: 3,
        no_drive_ratio: 0.0,
        team_sites: 0,
        groups: 0,
        files_per_drive: FilesPerDrive::Fixed(4),
        activity: ActivityConfig {
            publication_delay: Duration::from_millis(300),
            late_rate: 0.0,
            ..ActivityConfig::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let secret = stack.sim.client_secret().to_owned();
    stack.register(&secret).await.unwrap();
    let runner = stack.runner(&[], |_| {}).unwrap();
    assert_eq!(
        stack.discover_and_index(&runner).await.unwrap().reason,
        StopReason::Idle
    );
    let tenant = stack.sim.tenant();
    let drives: Vec<String> = (0..tenant.user_count())
        .filter_map(|i| tenant.drive_of_user(i).map(|d| d.id))
        .collect();
    let start = Utc::now().duration_trunc(chrono::Duration::seconds(1)).unwrap() - chrono::Duration::minutes(10);
    stack
        .sim
        .inject_activity(&ActivityRequest {
            operations: Vec::new(),
            random: Some(RandomActivity {
                count: 30,
                seed: 7,
                drives: drives.clone(),
                mix: None,
                start: Some(start),
                step_ms: 500,
            }),
            return_records: false,
        })
        .unwrap();
    stack.poll_until_caught_up(&runner).await.unwrap();
    let stats = stack.sim.stats();
    assert!(
        stats.token > 0 && stats.content_downloads > 0 && stats.activity.blob > 0,
        "tokens issued, files downloaded, blobs read: {stats:?}"
    );

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 100,
        "the run logged: {} lines",
        logs.lines().count()
    );
    assert!(logs.contains("file hashed"), "hashing was logged");
    let leaks: Vec<(&str, &str)> = [
        ("the client secret", secret.as_str()),
        // Every access token is a JWT: its header `{"typ":"JWT"…` encodes to this.
        ("an access token", "eyJ0eXAi"),
        ("a bearer header", "Bearer "),
        ("a pre-authenticated download URL", "tempauth"),
        ("a download URL", "download.aspx"),
    ]
    .into_iter()
    .filter(|(_, needle)| logs.contains(needle))
    .collect();
    assert!(leaks.is_empty(), "the logs hold {leaks:?}");
    // No file content: the first bytes of every file hashed, as text or as a byte string.
    for drive in &drives {
        for item in stack.sim.current_items(drive).into_iter().filter(|i| !i.is_folder) {
            let Some(content) = stack.sim.content(drive, &item.id) else {
                continue;
            };
            let mut head = vec![0u8; 24.min(item.size as usize)];
            std::io::Read::read_exact(&mut content.reader(), &mut head).unwrap();
            if head.len() < 16 {
                continue;
            }
            for shown in [
                String::from_utf8_lossy(&head).into_owned(),
                format!("b\"{}\"", head.escape_ascii()),
                format!("{head:?}"),
            ] {
                assert!(!logs.contains(&shown), "the logs hold the bytes of {:?}", item.path);
            }
        }
    }
}
