//! The `m365-sim` binary: ready line on stdout, serving, clean exit on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[test]
fn binary_prints_one_ready_line_serves_and_exits_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_m365-sim"))
        .args([
            "--port",
            "0",
            "--seed",
            "42",
            "--users",
            "300",
            "--files-per-drive",
            "5..50",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready line is JSON");
    for key in ["base_url", "tenant_id", "client_id", "client_secret"] {
        assert!(ready[key].as_str().is_some_and(|v| !v.is_empty()), "{key} in {line}");
    }
    assert_eq!(ready["users"], 300);
    let expected = m365_sim::SimConfig::with_seed(42);
    assert_eq!(
        ready["client_id"],
        expected.client_id.as_str(),
        "credentials derive from the seed"
    );

    let base = ready["base_url"].as_str().expect("base_url");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let health = rt.block_on(async { reqwest::get(format!("{base}/healthz")).await.map(|r| r.status()) });
    assert_eq!(health.expect("healthz answers").as_u16(), 200);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "clean exit, got {status}");
            break;
        }
        assert!(Instant::now() < deadline, "exits within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
