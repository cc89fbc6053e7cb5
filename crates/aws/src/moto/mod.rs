//! A moto server on loopback standing in for DynamoDB, SQS, S3 and Secrets Manager in tests and
//! in the local stack, plus the SDK configuration binaries use for either AWS or moto.
//!
//! `moto_server` comes from the project virtualenv that `infra/local/setup` creates
//! (`<workspace>/.venv`), from `FILETRAIL_MOTO_SERVER`, or from `PATH`. Found in the virtualenv
//! or on `PATH`, it runs through `partitioned_query.py` under its own Python: moto answers a
//! DynamoDB Query by sorting the whole table, DynamoDB reads one partition, and the script makes
//! moto read one partition too (same results), so a per-drive Query of a large inventory costs
//! what it costs in AWS rather than the whole table.

use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_config::meta::region::RegionProviderChain;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod recording;

/// Overrides where `moto_server` is found.
pub const MOTO_SERVER_VAR: &str = "FILETRAIL_MOTO_SERVER";
/// The region moto is addressed in (any works; the local stack uses this one everywhere).
pub const MOTO_REGION: &str = "us-east-1";
/// The default region for a custom endpoint when the environment names none.
const FALLBACK_REGION: &str = "us-east-1";
/// How long moto may take to answer after spawning (it starts in ~1 s; a loaded CI box is slower).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Limit of one HTTP exchange with moto's control API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts with a fresh port when the chosen one was taken between probing and binding.
const START_ATTEMPTS: u32 = 3;
/// How long `Drop` waits for moto to exit before killing the wrapper.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `moto_server` until dropped, and kills it as well when the process that started it dies
/// (a test binary whose statics are never dropped, a local stack stopped with Ctrl-C): it runs
/// under a small `sh` wrapper that kills it when its stdin, a pipe held by this process, closes.
#[derive(Debug)]
pub struct MotoServer {
    wrapper: Child,
    /// Closing it stops moto.
    lifeline: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
    /// Where moto's recorder writes the requests it sees once [`Self::start_recording`] ran.
    recording: PathBuf,
}

impl MotoServer {
    /// Starts moto on a free loopback port and waits until it answers. Fails when
    /// `moto_server` cannot be found or does not come up within 30 s; the error names the log
    /// file and the fix (`run infra/local/setup`).
    pub async fn start() -> anyhow::Result<Self> {
        let command = MotoCommand::find()?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_with(&command).await {
                Ok(server) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn start_with(command: &MotoCommand) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = std::env::temp_dir().join(format!("filetrail-moto-{}-{port}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("cannot create moto log file {}", log.display()))?;
        let log_err = log_file.try_clone().context("cannot share the moto log file")?;
        let recording = log.with_extension("recording");
        // Kill moto when our end of stdin closes (Drop, or this process dying for any reason). A
        // busy moto can ignore SIGTERM, so the watcher follows up with SIGKILL; it holds no pipe of
        // ours and outlives the wrapper, so moto never outlives this process for long.
        let script = r#"exec 3<&0
"$@" </dev/null &
moto=$!
{ read -r _ <&3; kill "$moto" 2>/dev/null; sleep 2; kill -9 "$moto" 2>/dev/null; } >/dev/null 2>&1 &
wait "$moto""#;
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("filetrail-moto")
            .arg(&command.program)
            .args(&command.args)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("cannot spawn {} (through sh)", command.program.display()))?;
        let lifeline = wrapper.stdin.take();
        let mut server = Self {
            wrapper,
            lifeline,
            addr,
            log,
            recording,
        };
        server.wait_until_ready().await?;
        tracing::debug!(endpoint = %server.endpoint(), log = %server.log.display(), "moto server ready");
        Ok(server)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if http(self.addr, "GET", "/moto-api/").await.is_ok() {
                return Ok(());
            }
            let exited = self.wrapper.try_wait().context("cannot check the moto process")?;
            if let Some(status) = exited {
                bail!(
                    "moto server exited ({status}) before answering at {} (see its log {}); fix: run \
                     infra/local/setup to install moto[server] into .venv, or set {MOTO_SERVER_VAR} to a working \
                     moto_server",
                    self.endpoint(),
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "moto server at {} did not answer within {}s (see its log {}); fix: run infra/local/setup \
                     to install moto[server] into .venv, or set {MOTO_SERVER_VAR} to a working moto_server",
                    self.endpoint(),
                    START_TIMEOUT.as_secs(),
                    self.log.display()
                );
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The file moto's output goes to.
    pub fn log_file(&self) -> &Path {
        &self.log
    }

    /// SDK configuration for this server: its endpoint, region `us-east-1`, static dummy
    /// credentials, latest behavior version. S3 clients additionally need path-style addressing
    /// (`force_path_style(true)`).
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new(MOTO_REGION))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "filetrail-moto"))
            .load()
            .await
    }

    /// Starts moto's recorder: from now on every request moto answers is appended to
    /// [`Self::recording`] (`POST /moto-api/recorder/start-recording`).
    ///
    /// # Errors
    /// When moto does not accept the request.
    pub async fn start_recording(&self) -> anyhow::Result<()> {
        let status = http(self.addr, "POST", "/moto-api/recorder/start-recording").await?;
        if status != 200 {
            bail!("moto's recorder at {} answered HTTP {status}", self.endpoint());
        }
        Ok(())
    }

    /// The requests recorded since [`Self::start_recording`], one JSON object per line (read
    /// them with [`recording::calls`]).
    ///
    /// # Errors
    /// When the recording cannot be read.
    pub fn recording(&self) -> anyhow::Result<String> {
        match std::fs::read_to_string(&self.recording) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read moto's recording {}", self.recording.display())),
        }
    }

    /// Deletes every resource in moto (`POST /moto-api/reset`).
    pub async fn reset(&self) -> anyhow::Result<()> {
        let status = http(self.addr, "POST", "/moto-api/reset").await?;
        if status != 200 {
            bail!(
                "moto reset at {} answered HTTP {status} (see {})",
                self.endpoint(),
                self.log.display()
            );
        }
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.recording);
        // Closing the lifeline makes the wrapper kill moto and exit.
        drop(self.lifeline.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.wrapper.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        tracing::warn!(log = %self.log.display(), "moto server did not stop; killing its wrapper");
        let _ = self.wrapper.kill();
        let _ = self.wrapper.wait();
    }
}

/// SDK configuration for binaries: real AWS from the environment's default chain when
/// `endpoint` is `None`; otherwise every service at `endpoint` (moto), with credentials from the
/// environment and region from the environment or `us-east-1`.
pub async fn sdk_config_for(endpoint: Option<&str>) -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    match endpoint {
        None => loader.load().await,
        Some(url) => {
            let region = RegionProviderChain::default_provider().or_else(Region::new(FALLBACK_REGION));
            loader.endpoint_url(url).region(region).load().await
        }
    }
}

/// How moto is started: a program and the arguments that come before moto_server's own.
#[derive(Debug)]
struct MotoCommand {
    program: PathBuf,
    args: Vec<OsString>,
}

impl MotoCommand {
    /// `FILETRAIL_MOTO_SERVER` as given; else the `moto_server` [`find_moto_server`] finds, run
    /// through [`PARTITIONED_QUERY`] by the Python it was installed for (its shebang, else the
    /// `python3` beside it), or as is when that Python cannot be found.
    fn find() -> anyhow::Result<Self> {
        let moto_server = find_moto_server()?;
        if std::env::var_os(MOTO_SERVER_VAR).is_some() {
            return Ok(Self::plain(moto_server));
        }
        match python_of(&moto_server) {
            Some(python) => Ok(Self {
                program: python,
                args: vec!["-c".into(), PARTITIONED_QUERY.into()],
            }),
            None => {
                tracing::warn!(
                    moto_server = %moto_server.display(),
                    "cannot tell which Python runs moto_server; it runs as is, and DynamoDB Queries \
                     cost the whole table"
                );
                Ok(Self::plain(moto_server))
            }
        }
    }

    fn plain(program: PathBuf) -> Self {
        Self {
            program,
            args: Vec::new(),
        }
    }
}

/// moto_server with DynamoDB Query reading the queried partition only (see the script).
const PARTITIONED_QUERY: &str = include_str!("partitioned_query.py");

/// The interpreter of a console script: its `#!` line when that names an existing file, else
/// `python3` in the script's directory (a virtualenv's `bin`).
fn python_of(script: &Path) -> Option<PathBuf> {
    let text = std::fs::read(script).ok()?;
    let first = text.split(|b| *b == b'\n').next()?;
    if let Some(rest) = first.strip_prefix(b"#!") {
        let interpreter = String::from_utf8_lossy(rest);
        let mut words = interpreter.split_whitespace();
        if let Some(path) = words.next().map(PathBuf::from)
            && words.next().is_none()
            && path.is_file()
            && path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python"))
        {
            return Some(path);
        }
    }
    let beside = script.parent()?.join("python3");
    beside.is_file().then_some(beside)
}

/// `FILETRAIL_MOTO_SERVER`, else `.venv/bin/moto_server` in the nearest ancestor of this crate
/// or of the current directory, else `moto_server` on `PATH`.
fn find_moto_server() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(MOTO_SERVER_VAR) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!(
            "{MOTO_SERVER_VAR}={} is not a file; fix: point it at moto_server or unset it",
            path.display()
        );
    }
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        std::env::current_dir().ok(),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(".venv").join("bin").join("moto_server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("moto_server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "moto_server not found (looked at {MOTO_SERVER_VAR}, <workspace>/.venv/bin and PATH); fix: run \
         infra/local/setup, which installs the pinned moto[server] into .venv"
    )
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind a loopback port")?;
    Ok(listener.local_addr().context("cannot read the bound port")?.port())
}

/// One HTTP/1.1 exchange with moto's control API; returns the status code.
async fn http(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path} timed out"))?
        .with_context(|| format!("{method} http://{addr}{path} failed"))?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    head.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{method} http://{addr}{path}: not an HTTP answer: {head:?}"))
}
