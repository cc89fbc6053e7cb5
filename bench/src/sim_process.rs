//! The `m365-sim` binary in a process of its own, so its CPU and memory are not the benchmark's
//! and its peak RSS can be read from `/proc/{pid}/status`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use filetrail_m365::{ClientSecret, Cloud, Credentials, GraphClient, RetryPolicy};
use m365_sim::{SimConfig, SimHandle, Stats};
use serde::Deserialize;

use crate::BenchError;
use crate::procfs::{self, Pid};

/// How long `Drop` waits for the simulator to exit after its lifeline closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the simulator announces on its first stdout line once listening, and what a client needs
/// to reach it. The client secret is never printed (`Debug` redacts it).
#[derive(Clone, Deserialize)]
pub struct SimReady {
    pub base_url: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub users: u64,
}

impl std::fmt::Debug for SimReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimReady")
            .field("base_url", &self.base_url)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("users", &self.users)
            .finish()
    }
}

impl SimReady {
    /// The same facts for a simulator running inside this process (tests).
    pub fn of_handle(sim: &SimHandle) -> Self {
        Self {
            base_url: sim.base_url(),
            tenant_id: sim.tenant_id().to_owned(),
            client_id: sim.client_id().to_owned(),
            client_secret: sim.client_secret().to_owned(),
            users: sim.tenant().user_count(),
        }
    }

    /// The Entra authority (tokens at `{login}/{tenant}/oauth2/v2.0/token`).
    pub fn login_url(&self) -> String {
        self.base_url.clone()
    }

    /// The Graph base, `{base_url}/v1.0`.
    pub fn graph_url(&self) -> String {
        format!("{}/v1.0", self.base_url)
    }

    /// A Graph client for the simulator's app, with the default retry policy (what the
    /// functions use). `label` names the client in its messages.
    pub fn graph_client(&self, http: reqwest::Client, label: &str) -> Result<GraphClient, BenchError> {
        let cloud = Cloud::custom(&self.login_url(), &self.graph_url(), &self.base_url)?;
        let credentials = Credentials {
            tenant_id: self.tenant_id.clone(),
            client_id: self.client_id.clone(),
            secret: ClientSecret::new(self.client_secret.clone()),
        };
        Ok(GraphClient::connect(
            http,
            &cloud,
            credentials,
            label,
            RetryPolicy::default(),
        )?)
    }

    /// A snapshot of the simulator's request counters (`GET /_sim/stats`).
    pub async fn stats(&self, http: &reqwest::Client) -> Result<Stats, BenchError> {
        let url = format!("{}/_sim/stats", self.base_url);
        let failed = |detail: String| BenchError::SimHttp {
            url: url.clone(),
            detail,
        };
        let response = http.get(&url).send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            return Err(failed(format!("HTTP {}", response.status())));
        }
        response.json::<Stats>().await.map_err(|e| failed(e.to_string()))
    }
}

/// The requests counted between two snapshots of the same simulator (`after - before`).
pub fn stats_delta(after: &Stats, before: &Stats) -> Stats {
    let d = |a: u64, b: u64| a.saturating_sub(b);
    let (fa, fb) = (&after.faults, &before.faults);
    Stats {
        http_requests: d(after.http_requests, before.http_requests),
        token: d(after.token, before.token),
        users: d(after.users, before.users),
        user_filter: d(after.user_filter, before.user_filter),
        groups: d(after.groups, before.groups),
        group_members: d(after.group_members, before.group_members),
        drive: d(after.drive, before.drive),
        delta: d(after.delta, before.delta),
        item: d(after.item, before.item),
        batch: d(after.batch, before.batch),
        batch_inner: d(after.batch_inner, before.batch_inner),
        other: d(after.other, before.other),
        unauthorized: d(after.unauthorized, before.unauthorized),
        delta_resync: d(after.delta_resync, before.delta_resync),
        content: d(after.content, before.content),
        content_redirects: d(after.content_redirects, before.content_redirects),
        content_not_modified: d(after.content_not_modified, before.content_not_modified),
        content_downloads: d(after.content_downloads, before.content_downloads),
        version_downloads: d(after.version_downloads, before.version_downloads),
        content_range: d(after.content_range, before.content_range),
        content_range_unsatisfiable: d(after.content_range_unsatisfiable, before.content_range_unsatisfiable),
        content_expired: d(after.content_expired, before.content_expired),
        content_with_authorization: d(after.content_with_authorization, before.content_with_authorization),
        content_bytes: d(after.content_bytes, before.content_bytes),
        permissions: d(after.permissions, before.permissions),
        permissions_deleted: d(after.permissions_deleted, before.permissions_deleted),
        forbidden: d(after.forbidden, before.forbidden),
        // Per-kind request counts are not subtracted: benchmarks read the totals above.
        graph_requests: Vec::new(),
        activity: after.activity.since(&before.activity),
        faults: m365_sim::FaultStats {
            throttled_429: d(fa.throttled_429, fb.throttled_429),
            unavailable_503: d(fa.unavailable_503, fb.unavailable_503),
            server_error: d(fa.server_error, fb.server_error),
            dropped: d(fa.dropped, fb.dropped),
            slowed: d(fa.slowed, fb.slowed),
            batch_inner_throttled: d(fa.batch_inner_throttled, fb.batch_inner_throttled),
            batch_inner_server_error: d(fa.batch_inner_server_error, fb.batch_inner_server_error),
            content_throttled: d(fa.content_throttled, fb.content_throttled),
            content_dropped: d(fa.content_dropped, fb.content_dropped),
        },
    }
}

/// Top-level Graph requests in a stats delta: every HTTP request but the token endpoint's and
/// the download URLs' (a `$batch` envelope counts once, retries count each time).
pub fn graph_requests(stats: &Stats) -> u64 {
    stats
        .http_requests
        .saturating_sub(stats.token)
        .saturating_sub(stats.content_downloads)
}

/// The command-line flags that make the `m365-sim` binary serve exactly the tenant `config`
/// describes, so `config.tenant()` is the ground truth of the spawned process. Credentials are
/// not passed: the binary derives the same ones from the seed. The port is always 0 (any free
/// loopback port).
pub fn sim_args(config: &SimConfig) -> Vec<String> {
    let f = &config.faults;
    [
        ("--port", "0".to_owned()),
        ("--seed", config.seed.to_string()),
        ("--users", config.users.to_string()),
        ("--files-per-drive", config.files_per_drive.to_string()),
        ("--no-drive-ratio", config.no_drive_ratio.to_string()),
        ("--team-sites", config.team_sites.to_string()),
        ("--groups", config.groups.to_string()),
        ("--group-members-avg", config.group_members_avg.to_string()),
        ("--nested-group-ratio", config.nested_group_ratio.to_string()),
        ("--page-size", config.page_size_default.to_string()),
        ("--token-lifetime-secs", config.token_lifetime.as_secs().to_string()),
        ("--domain", config.domain.clone()),
        ("--delta-repeat-rate", config.delta_repeat_rate.to_string()),
        ("--throttle-rate", f.throttle_rate.to_string()),
        ("--retry-after-min", f.retry_after_secs.0.to_string()),
        ("--retry-after-max", f.retry_after_secs.1.to_string()),
        ("--error-rate", f.error_5xx_rate.to_string()),
        ("--drop-rate", f.drop_rate.to_string()),
        ("--slow-rate", f.slow_rate.to_string()),
        ("--slow-ms", f.slow_ms.to_string()),
        ("--batch-inner-throttle-rate", f.batch_inner_throttle_rate.to_string()),
        ("--content-throttle-rate", f.content_throttle_rate.to_string()),
        ("--content-drop-rate", f.content_drop_rate.to_string()),
        ("--content-drop-after-min", f.content_drop_after_bytes.0.to_string()),
        ("--content-drop-after-max", f.content_drop_after_bytes.1.to_string()),
        (
            "--download-url-lifetime-secs",
            config.download_url_lifetime.as_secs().to_string(),
        ),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_owned(), value])
    .collect()
}

/// A running `m365-sim` binary. It runs under a small `sh` wrapper that kills it when its stdin
/// (a pipe this process holds) closes, so the simulator never outlives the benchmark, even when
/// the benchmark aborts. Dropping the value stops it.
pub struct SimProcess {
    wrapper: Child,
    lifeline: Option<ChildStdin>,
    /// Kept open: the simulator's stdout.
    _stdout: BufReader<ChildStdout>,
    pid: u32,
    ready: SimReady,
    log: PathBuf,
}

impl std::fmt::Debug for SimProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimProcess")
            .field("pid", &self.pid)
            .field("ready", &self.ready)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

impl SimProcess {
    /// Starts `bin` with `args` on loopback and waits for its ready line. Its stderr goes to a log
    /// file in the temporary directory (`RUST_LOG=warn` unless set). Fails if the binary cannot be
    /// run or exits before announcing itself; the message names the log.
    pub fn spawn(bin: &Path, args: &[String]) -> Result<Self, BenchError> {
        let failed = |detail: String| BenchError::SimStart {
            bin: bin.display().to_string(),
            detail,
        };
        if !bin.is_file() {
            return Err(failed("no such file".to_owned()));
        }
        let log = std::env::temp_dir().join(format!(
            "filetrail-bench-sim-{}-{}.log",
            std::process::id(),
            next_log_number()
        ));
        let log_file = std::fs::File::create(&log).map_err(|e| failed(format!("log file {}: {e}", log.display())))?;
        // Print the simulator's pid, then kill it when our end of stdin closes. The watcher keeps
        // no handle on stdout, so a simulator that dies early closes it and we see EOF.
        let script = r#"exec 3<&0
"$@" </dev/null &
sim=$!
echo "pid $sim"
{ read -r _ <&3; kill "$sim" 2>/dev/null; } >/dev/null 2>&1 &
wait "$sim""#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("filetrail-bench-sim")
            .arg(bin)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| failed(format!("cannot spawn it through sh: {e}")))?;
        let lifeline = wrapper.stdin.take();
        let Some(stdout) = wrapper.stdout.take() else {
            return Err(failed("no stdout pipe".to_owned()));
        };
        let mut stdout = BufReader::new(stdout);
        let (mut pid, mut ready) = (None, None);
        while pid.is_none() || ready.is_none() {
            let mut line = String::new();
            let n = stdout
                .read_line(&mut line)
                .map_err(|e| failed(format!("reading its stdout: {e}")))?;
            if n == 0 {
                let _ = wrapper.wait();
                return Err(failed(format!(
                    "it exited before announcing itself (see {})",
                    log.display()
                )));
            }
            let line = line.trim();
            if let Some(p) = line.strip_prefix("pid ") {
                pid = Some(
                    p.parse::<u32>()
                        .map_err(|e| failed(format!("pid line {line:?}: {e}")))?,
                );
            } else if line.starts_with('{') {
                ready = Some(
                    serde_json::from_str::<SimReady>(line)
                        .map_err(|e| failed(format!("ready line is not the expected JSON: {e}")))?,
                );
            }
        }
        let (Some(pid), Some(ready)) = (pid, ready) else {
            return Err(failed("no pid or ready line".to_owned()));
        };
        Ok(Self {
            wrapper,
            lifeline,
            _stdout: stdout,
            pid,
            ready,
            log,
        })
    }

    /// The simulator's process id (not the wrapper's).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What it announced.
    pub fn ready(&self) -> &SimReady {
        &self.ready
    }

    /// Its stderr log.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// Its peak resident set size so far (`VmHWM`), in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64, BenchError> {
        procfs::peak_rss_mib(Pid::Other(self.pid))
    }

    /// Its CPU seconds so far (user + system).
    pub fn cpu_seconds(&self) -> Result<f64, BenchError> {
        procfs::cpu_seconds(Pid::Other(self.pid))
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // Closing the lifeline makes the wrapper kill the simulator and exit.
        drop(self.lifeline.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.wrapper.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!(pid = self.pid, "m365-sim did not stop; killing its wrapper");
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// Numbers the simulator logs of one benchmark process.
fn next_log_number() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use m365_sim::FilesPerDrive;

    #[test]
    fn sim_args_carry_every_setting_that_shapes_the_tenant() {
        let config = SimConfig {
            seed: 7,
            users: 2000,
            files_per_drive: FilesPerDrive::Range { min: 45, max: 75 },
            ..SimConfig::default()
        };
        let args = sim_args(&config);
        let value = |flag: &str| {
            let at = args
                .iter()
                .position(|a| a == flag)
                .unwrap_or_else(|| panic!("{flag} missing"));
            args[at + 1].clone()
        };
        assert_eq!(value("--seed"), "7");
        assert_eq!(value("--users"), "2000");
        assert_eq!(value("--files-per-drive"), "45..75");
        assert_eq!(value("--no-drive-ratio"), "0.1");
        assert_eq!(value("--port"), "0");
        assert!(
            !args.iter().any(|a| a.contains("secret")),
            "no secret on a command line"
        );
    }

    #[test]
    fn a_missing_binary_is_an_error_that_says_how_to_build_it() {
        let err = SimProcess::spawn(Path::new("/nonexistent/m365-sim"), &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/m365-sim") && text.contains("cargo build --release -p m365-sim"),
            "{text}"
        );
    }

    #[test]
    fn ready_debug_redacts_the_client_secret() {
        let ready = SimReady {
            base_url: "http://127.0.0.1:1".into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: "abc~very-secret".into(),
            users: 1,
        };
        let shown = format!("{ready:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
