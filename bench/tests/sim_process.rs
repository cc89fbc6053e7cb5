//! Running a simulator binary in its own process: the ready line is read, the pid is the
//! simulator's own (not its wrapper's), and the process never outlives its handle. A stand-in
//! script plays the simulator so the test needs no release build.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use filetrail_bench::sim_process::SimProcess;

fn script(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("filetrail-bench-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

const READY: &str =
    r#"{"base_url":"http://127.0.0.1:9","tenant_id":"t-1","client_id":"c-1","client_secret":"s~1","users":3}"#;

#[test]
fn the_ready_line_and_the_simulators_own_pid_are_read_and_drop_stops_it() {
    let bin = script("fake-sim", &format!("echo '{READY}'\nexec sleep 60"));

    let sim = SimProcess::spawn(&bin, &["--port".to_owned(), "0".to_owned()]).unwrap();

    assert_eq!(sim.ready().base_url, "http://127.0.0.1:9");
    assert_eq!(sim.ready().graph_url(), "http://127.0.0.1:9/v1.0");
    assert_eq!(sim.ready().users, 3);
    let pid = sim.pid();
    // The fake simulator prints its ready line and then execs `sleep`; wait for the exec so the
    // command line read is the settled one.
    let mut cmdline = Vec::new();
    for _ in 0..100 {
        cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("sleep") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        String::from_utf8_lossy(&cmdline).contains("sleep"),
        "the pid must be the simulator's, got {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(sim.peak_rss_mib().unwrap() > 0.0);
    assert!(sim.cpu_seconds().unwrap() >= 0.0);

    drop(sim);
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "the simulator must be gone once its handle is dropped"
    );
}

#[test]
fn a_simulator_that_exits_before_announcing_itself_is_an_error_naming_its_log() {
    let bin = script("failing-sim", "echo 'bad flag' >&2\nexit 2");

    let err = SimProcess::spawn(&bin, &[]).unwrap_err().to_string();

    assert!(err.contains("exited before announcing itself"), "{err}");
    assert!(err.contains(".log"), "{err}");
}
