//! `hash-bench`: MD5 + SHA-256 of a stream served over loopback HTTP through the dual hasher of
//! `filetrail-core` (issue 4), set against `openssl dgst -md5` alone on the same bytes in the
//! same run, and the peak memory of a process hashing a 4 GiB stream. Prints a table and merges
//! `dual_hash_ratio_vs_openssl_md5` and `hash_peak_rss_mb_4gib` into `bench/results.json`.
//! Run it with `cargo run --release -p filetrail-bench --bin hash-bench`.
//!
//! Throughput: 1 GiB of seeded pseudo-random bytes is generated in memory and served by a small
//! HTTP/1.1 server in this process on 127.0.0.1; the production HTTP client
//! (`filetrail_m365::http_client`, reqwest) downloads it and feeds each body chunk to the
//! [`DualHasher`] as it arrives. The same bytes are written once to a temporary file that
//! `openssl dgst -md5` reads (from the page cache: its best case). Passes alternate between the
//! two so both see the same machine; the figure is the ratio of the medians. Every pass checks
//! the MD5 against openssl's and the SHA-256 against `openssl dgst -sha256`. The file is a
//! benchmark artefact, removed at the end: the hasher writes nothing.
//!
//! Memory: this binary re-executes itself as a child (`rss-child`) that downloads a 4 GiB stream
//! generated on the fly by the server (never stored anywhere) and hashes it; the child reports
//! its peak RSS (`VmHWM`) and its RSS once set up and idle, just before the download.

use filetrail_bench::cli::ResultsArgs;
use filetrail_bench::step;
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::{Parser, Subcommand};
use filetrail_bench::procfs::{self, Pid};
use filetrail_bench::report::{Figure, Goal, median, merge_into_results, render_table};
use filetrail_core::digest::{Bytes, Digests, DualHasher, HasherTuning};
use filetrail_m365::{HttpTimeouts, http_client};
use serde_json::json;

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;
/// Throughputs are in MB/s of 10^6 bytes (as `openssl speed` and TOOLCHAIN's table).
const MB: f64 = 1e6;
/// Issue 4: the dual hash must run at least this fraction of `openssl dgst -md5`'s speed.
const RATIO_GOAL: f64 = 0.95;
/// Issue 4: peak RSS while hashing a 4 GiB file, in MiB.
const RSS_GOAL_MIB: f64 = 64.0;
/// Blocks the server generates and writes at a time (generated streams).
const GENERATE_BLOCK: usize = 1 << 20;
/// Seed of the generated content.
const SEED: u64 = 0x00F1_1E7A_A11D;
/// Path of the in-memory blob on the loopback server.
const BLOB_PATH: &str = "/blob";
/// Path prefix of generated streams: `/generated/{bytes}`.
const GENERATED_PATH: &str = "/generated/";
/// A whole download's timeout: generous, a 4 GiB stream at 500 MB/s takes ~9 s.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest request head the loopback server reads.
const MAX_REQUEST_HEAD: usize = 16 << 10;

/// Benchmarks the dual MD5 + SHA-256 hasher over loopback HTTP against `openssl dgst -md5`.
#[derive(Debug, Parser)]
#[command(name = "hash-bench")]
struct Args {
    /// Size of the throughput stream in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Timed passes of each measurement (after one untimed warm-up pass); figures are medians.
    #[arg(long, default_value_t = 5)]
    passes: usize,
    /// Size of the stream hashed by the child for the peak RSS, in MiB (0 skips it).
    #[arg(long, default_value_t = 4096)]
    rss_size_mib: u64,
    /// Hasher tuning: bytes per batch handed to the SHA-256 worker, in KiB (default: production).
    #[arg(long)]
    batch_kib: Option<usize>,
    /// Hasher tuning: batches queued to the SHA-256 worker at most (default: production).
    #[arg(long)]
    queue_depth: Option<usize>,
    /// Hasher tuning: chunks shorter than this many bytes are copied (default: production).
    #[arg(long)]
    copy_below: Option<usize>,
    /// Hasher tuning: compute MD5 on the caller's thread inside `update` instead of a thread of
    /// its own.
    #[arg(long)]
    md5_on_caller: bool,
    /// Slice size, in KiB, in which the blob is fed from memory to the hasher for the
    /// "from memory" figure: 16 KiB by default, the payload of one TLS record, as a download from
    /// Microsoft's servers arrives (loopback HTTP arrives in ~400 KiB chunks).
    #[arg(long, default_value_t = 16)]
    memory_slice_kib: usize,
    /// The openssl binary.
    #[arg(long, default_value = "openssl")]
    openssl: PathBuf,
    #[command(flatten)]
    out: ResultsArgs,
    #[command(subcommand)]
    child: Option<Child>,
}

#[derive(Debug, Subcommand)]
enum Child {
    /// (internal) The loopback HTTP server: `/blob` serves `file`, `/generated/{bytes}` the
    /// seeded stream.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        file: PathBuf,
    },
    /// (internal) Download `url`, hash it and print the digests and memory figures as JSON.
    #[command(hide = true)]
    RssChild {
        #[arg(long)]
        url: String,
        #[arg(long)]
        batch_kib: Option<usize>,
        #[arg(long)]
        queue_depth: Option<usize>,
        #[arg(long)]
        copy_below: Option<usize>,
        #[arg(long)]
        md5_on_caller: bool,
    },
}

fn tuning(
    batch_kib: Option<usize>,
    queue_depth: Option<usize>,
    copy_below: Option<usize>,
    md5_on_caller: bool,
) -> HasherTuning {
    let default = HasherTuning::default();
    HasherTuning {
        batch_bytes: batch_kib.map_or(default.batch_bytes, |k| k << 10),
        queue_depth: queue_depth.unwrap_or(default.queue_depth),
        copy_below: copy_below.unwrap_or(default.copy_below),
        md5_on_worker: default.md5_on_worker && !md5_on_caller,
    }
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MB / elapsed.as_secs_f64()
}

// ------------------------------------------------------------------ content

/// SplitMix64 (Steele, Lea, Flood 2014): fast, seeded, the same bytes on every run.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf` (a multiple of 8 bytes long) with the next bytes of the stream.
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&self.next().to_le_bytes());
        }
    }
}

/// `len` bytes (a multiple of 8) of the seeded stream.
fn generate(len: usize) -> Vec<u8> {
    let mut data = vec![0; len];
    SplitMix64(SEED).fill(&mut data);
    data
}

// ------------------------------------------------------------------ loopback HTTP server

/// The `serve` child: answers `GET /blob` with the content of `file` and `GET /generated/{bytes}`
/// with the seeded stream, generated block by block as it is written, over HTTP/1.1, one
/// response per connection, a thread per connection. Prints `listening {addr}` once bound.
///
/// The file is sent with `std::io::copy`, which Linux serves with `sendfile` from the page cache
/// (no copy through this process), so the server takes as little as possible of the CPU the
/// measured client shares it with: a real download server is another machine.
fn serve(file: &Path) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        let file = file.to_path_buf();
        std::thread::spawn(move || {
            if let Err(e) = answer(stream, &file) {
                eprintln!("loopback server: {e}");
            }
        });
    }
    Ok(())
}

fn answer(mut stream: std::net::TcpStream, file: &Path) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0_u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let header = |len: u64| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        )
    };
    if path == BLOB_PATH {
        let mut content = std::fs::File::open(file)?;
        let len = content.metadata()?.len();
        stream.write_all(header(len).as_bytes())?;
        std::io::copy(&mut content, &mut stream)?;
    } else if let Some(len) = path.strip_prefix(GENERATED_PATH).and_then(|l| l.parse::<u64>().ok()) {
        stream.write_all(header(len).as_bytes())?;
        let mut rng = SplitMix64(SEED);
        let mut block = vec![0_u8; GENERATE_BLOCK];
        let mut left = len;
        while left > 0 {
            rng.fill(&mut block);
            let n = usize::try_from(left.min(GENERATE_BLOCK as u64)).unwrap_or(GENERATE_BLOCK);
            stream.write_all(&block[..n])?;
            left -= n as u64;
        }
    } else {
        stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    }
    stream.shutdown(std::net::Shutdown::Write)
}

/// The `serve` child, killed when dropped.
struct Server {
    process: std::process::Child,
    addr: SocketAddr,
}

impl Server {
    fn start(file: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this benchmark's binary")?;
        let mut process = Command::new(exe)
            .arg("serve")
            .arg("--file")
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the loopback server")?;
        let stdout = process.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("the loopback server said {line:?}, not `listening ADDR`"));
        match addr {
            Ok(addr) => Ok(Self { process, addr }),
            Err(e) => {
                let _ = process.kill();
                let _ = process.wait();
                Err(e)
            }
        }
    }

    fn pid(&self) -> Pid {
        Pid::Other(self.process.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

// ------------------------------------------------------------------ the measured paths

/// One download hashed as production does: each body chunk fed to the hasher as it arrives.
struct Hashed {
    digests: Digests,
    elapsed: Duration,
    chunks: u64,
}

async fn hash_download(client: &reqwest::Client, url: &str, tuning: HasherTuning) -> anyhow::Result<Hashed> {
    let started = Instant::now();
    let mut response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .error_for_status()?;
    let mut hasher = DualHasher::with_tuning(tuning)?;
    let mut chunks = 0;
    while let Some(chunk) = response.chunk().await.context("reading the body")? {
        chunks += 1;
        hasher.update(chunk)?;
    }
    let digests = hasher.finish()?;
    Ok(Hashed {
        digests,
        elapsed: started.elapsed(),
        chunks,
    })
}

/// The transport alone: the same download, read and dropped.
async fn read_download(client: &reqwest::Client, url: &str) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut response = client.get(url).send().await?.error_for_status()?;
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok((bytes, started.elapsed()))
}

/// The hasher alone: the blob fed from memory in slices of `slice` bytes (no copy).
fn hash_from_memory(blob: &Bytes, slice: usize, tuning: HasherTuning) -> anyhow::Result<Hashed> {
    let started = Instant::now();
    let mut hasher = DualHasher::with_tuning(tuning)?;
    let mut chunks = 0;
    let mut at = 0;
    while at < blob.len() {
        let end = (at + slice).min(blob.len());
        hasher.update(blob.slice(at..end))?;
        chunks += 1;
        at = end;
    }
    let digests = hasher.finish()?;
    Ok(Hashed {
        digests,
        elapsed: started.elapsed(),
        chunks,
    })
}

/// Runs `openssl dgst -{algorithm} file`; returns the hex digest and the wall time (process
/// start included, a few ms).
fn openssl_dgst(openssl: &Path, algorithm: &str, file: &Path) -> anyhow::Result<(String, Duration)> {
    let started = Instant::now();
    let output = Command::new(openssl)
        .arg("dgst")
        .arg(format!("-{algorithm}"))
        .arg(file)
        .output()
        .with_context(|| format!("running {} (fix: install openssl or pass --openssl)", openssl.display()))?;
    let elapsed = started.elapsed();
    ensure!(
        output.status.success(),
        "openssl dgst -{algorithm} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((parse_dgst(&String::from_utf8_lossy(&output.stdout))?, elapsed))
}

/// The digest of `openssl dgst` output (`MD5(file)= 9e10…`, or `9e10…  -` style).
fn parse_dgst(stdout: &str) -> anyhow::Result<String> {
    let line = stdout.lines().next().unwrap_or_default();
    let hex = line.rsplit_once("= ").map_or(line, |(_, h)| h).trim();
    let hex = hex.split_whitespace().next().unwrap_or_default();
    ensure!(
        !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "cannot read a digest in openssl's output {stdout:?}"
    );
    Ok(hex.to_ascii_lowercase())
}

/// Deletes the benchmark's temporary file however the run ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// MD5 and SHA-256 of the first `len` bytes of the seeded stream, by openssl reading pipes fed
/// with the stream as it is generated (nothing stored).
fn openssl_digests_of_generated(openssl: &Path, len: u64) -> anyhow::Result<(String, String)> {
    let spawn = |algorithm: &str| {
        Command::new(openssl)
            .arg("dgst")
            .arg(format!("-{algorithm}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", openssl.display()))
    };
    let mut md5 = spawn("md5")?;
    let mut sha256 = spawn("sha256")?;
    let mut md5_in = md5.stdin.take().context("openssl md5 stdin")?;
    let mut sha256_in = sha256.stdin.take().context("openssl sha256 stdin")?;
    let (blocks, feed) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(2);
    let sha_feeder = std::thread::spawn(move || -> std::io::Result<()> {
        for block in feed {
            sha256_in.write_all(&block)?;
        }
        Ok(())
    });
    let mut rng = SplitMix64(SEED);
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(GENERATE_BLOCK as u64)).unwrap_or(GENERATE_BLOCK);
        let mut block = vec![0_u8; GENERATE_BLOCK];
        rng.fill(&mut block);
        block.truncate(n);
        let block = Arc::new(block);
        md5_in.write_all(&block)?;
        if blocks.send(Arc::clone(&block)).is_err() {
            break;
        }
        left -= n as u64;
    }
    drop(blocks);
    drop(md5_in);
    sha_feeder
        .join()
        .map_err(|_| anyhow::anyhow!("the openssl feeder thread panicked"))??;
    let md5 = md5.wait_with_output()?;
    let sha256 = sha256.wait_with_output()?;
    Ok((
        parse_dgst(&String::from_utf8_lossy(&md5.stdout))?,
        parse_dgst(&String::from_utf8_lossy(&sha256.stdout))?,
    ))
}

// ------------------------------------------------------------------ the child

/// The child's report, one JSON line on stdout.
async fn rss_child(url: &str, tuning: HasherTuning) -> anyhow::Result<()> {
    let client = http_client(HttpTimeouts {
        request: DOWNLOAD_TIMEOUT,
        ..HttpTimeouts::default()
    })?;
    let idle_rss_mib = procfs::rss_mib(Pid::This)?;
    let idle_peak_mib = procfs::peak_rss_mib(Pid::This)?;
    let hashed = hash_download(&client, url, tuning).await?;
    let peak_mib = procfs::peak_rss_mib(Pid::This)?;
    println!(
        "{}",
        json!({
            "idle_rss_mib": idle_rss_mib,
            "idle_peak_mib": idle_peak_mib,
            "peak_mib": peak_mib,
            "md5": hashed.digests.md5_hex(),
            "sha256": hashed.digests.sha256_hex(),
            "bytes": hashed.digests.bytes,
            "chunks": hashed.chunks,
            "seconds": hashed.elapsed.as_secs_f64(),
        })
    );
    Ok(())
}

struct ChildReport {
    idle_rss_mib: f64,
    peak_mib: f64,
    md5: String,
    sha256: String,
    bytes: u64,
    chunks: u64,
    seconds: f64,
}

fn run_rss_child(addr: SocketAddr, len: u64, args: &Args) -> anyhow::Result<ChildReport> {
    let exe = std::env::current_exe().context("finding this benchmark's binary")?;
    let mut command = Command::new(exe);
    command
        .arg("rss-child")
        .arg("--url")
        .arg(format!("http://{addr}{GENERATED_PATH}{len}"));
    if let Some(k) = args.batch_kib {
        command.arg("--batch-kib").arg(k.to_string());
    }
    if let Some(d) = args.queue_depth {
        command.arg("--queue-depth").arg(d.to_string());
    }
    if let Some(c) = args.copy_below {
        command.arg("--copy-below").arg(c.to_string());
    }
    if args.md5_on_caller {
        command.arg("--md5-on-caller");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .context("running the rss-child")?;
    ensure!(output.status.success(), "the rss-child failed ({})", output.status);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().context("the rss-child printed nothing")?;
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("rss-child output {line:?}"))?;
    let num = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("rss-child output lacks {k}: {line}"))
    };
    let text = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("rss-child output lacks {k}: {line}"))
    };
    Ok(ChildReport {
        idle_rss_mib: num("idle_rss_mib")?,
        peak_mib: num("peak_mib")?,
        md5: text("md5")?,
        sha256: text("sha256")?,
        bytes: v["bytes"].as_u64().context("rss-child output lacks bytes")?,
        chunks: v["chunks"].as_u64().context("rss-child output lacks chunks")?,
        seconds: num("seconds")?,
    })
}

// ------------------------------------------------------------------ main

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = || tokio::runtime::Runtime::new().context("starting the tokio runtime");
    match &args.child {
        Some(Child::Serve { file }) => serve(file),
        Some(Child::RssChild {
            url,
            batch_kib,
            queue_depth,
            copy_below,
            md5_on_caller,
        }) => runtime()?.block_on(rss_child(
            url,
            tuning(*batch_kib, *queue_depth, *copy_below, *md5_on_caller),
        )),
        None => runtime()?.block_on(bench(&args)),
    }
}

/// CPU seconds used by this process and by the server while `work` runs, and its result.
struct Measured<T> {
    value: T,
    client_cpu: f64,
    server_cpu: f64,
}

async fn measured<T>(server: &Server, work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<Measured<T>> {
    let (client_before, server_before) = (procfs::cpu_seconds(Pid::This)?, procfs::cpu_seconds(server.pid())?);
    let value = work.await?;
    Ok(Measured {
        value,
        client_cpu: procfs::cpu_seconds(Pid::This)? - client_before,
        server_cpu: procfs::cpu_seconds(server.pid())? - server_before,
    })
}

/// One timed pass of every measurement, in MB/s, and the CPU the dual hash over HTTP took.
struct Pass {
    http: f64,
    openssl: f64,
    read_only: f64,
    memory: f64,
    chunks: u64,
    /// Cores busy in the client (hasher + HTTP client) and in the server during the HTTP hash.
    client_cores: f64,
    server_cores: f64,
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    let release = !cfg!(debug_assertions);
    let provenance = args.out.provenance()?;
    if !release && !args.out.allow_debug {
        bail!(
            "this is a debug build, whose throughput means nothing; run `cargo run --release -p filetrail-bench --bin hash-bench`, or pass --allow-debug"
        );
    }
    ensure!(args.passes >= 1, "--passes must be at least 1");
    ensure!(args.size_mib >= 1, "--size-mib must be at least 1");
    ensure!(args.memory_slice_kib >= 1, "--memory-slice-kib must be at least 1");
    let tuning = tuning(args.batch_kib, args.queue_depth, args.copy_below, args.md5_on_caller);
    let results_path = args.out.path();
    let openssl_version = Command::new(&args.openssl).arg("version").output().with_context(|| {
        format!(
            "running {} (fix: install openssl or pass --openssl)",
            args.openssl.display()
        )
    })?;
    let openssl_version = String::from_utf8_lossy(&openssl_version.stdout).trim().to_owned();
    let size = args.size_mib * MIB;
    let size_usize = usize::try_from(size).context("--size-mib too large for this machine")?;

    step(&format!(
        "generating {} MiB of seeded pseudo-random bytes",
        args.size_mib
    ));
    let blob = Bytes::from(generate(size_usize));
    let file = TempFile(std::env::temp_dir().join(format!("filetrail-hash-bench-{}.bin", std::process::id())));
    std::fs::write(&file.0, &blob).with_context(|| format!("writing {}", file.0.display()))?;
    step(&format!(
        "wrote them to {} for openssl and the server (a benchmark artefact, removed at the end)",
        file.0.display()
    ));
    let server = Server::start(&file.0)?;
    let addr = server.addr;
    let client = http_client(HttpTimeouts {
        request: DOWNLOAD_TIMEOUT,
        ..HttpTimeouts::default()
    })?;
    let blob_url = format!("http://{addr}{BLOB_PATH}");
    step(&format!(
        "loopback server (child process) on {addr}; hasher tuning {tuning:?}; {openssl_version}"
    ));

    let (sha256_expected, sha_openssl) = openssl_dgst(&args.openssl, "sha256", &file.0)?;
    let mut passes = Vec::new();
    let mut md5_expected = String::new();
    for pass in 0..=args.passes {
        let warm_up = pass == 0;
        let hashed = measured(&server, hash_download(&client, &blob_url, tuning)).await?;
        let (md5_openssl, openssl_elapsed) = openssl_dgst(&args.openssl, "md5", &file.0)?;
        let (read, read_elapsed) = read_download(&client, &blob_url).await?;
        let in_memory = hash_from_memory(&blob, args.memory_slice_kib.max(1) << 10, tuning)?;
        let digests = hashed.value.digests;
        ensure!(
            digests.bytes == size && read == size,
            "pass {pass}: downloaded {} and {read} bytes, expected {size}",
            digests.bytes
        );
        ensure!(
            digests.md5_hex() == md5_openssl && in_memory.digests.md5_hex() == md5_openssl,
            "pass {pass}: MD5 {} (HTTP) / {} (memory), openssl says {md5_openssl}",
            digests.md5_hex(),
            in_memory.digests.md5_hex()
        );
        ensure!(
            digests.sha256_hex() == sha256_expected && in_memory.digests.sha256_hex() == sha256_expected,
            "pass {pass}: SHA-256 {} (HTTP) / {} (memory), openssl says {sha256_expected}",
            digests.sha256_hex(),
            in_memory.digests.sha256_hex()
        );
        md5_expected = md5_openssl;
        let seconds = hashed.value.elapsed.as_secs_f64();
        let row = Pass {
            http: mb_per_s(size, hashed.value.elapsed),
            openssl: mb_per_s(size, openssl_elapsed),
            read_only: mb_per_s(size, read_elapsed),
            memory: mb_per_s(size, in_memory.elapsed),
            chunks: hashed.value.chunks,
            client_cores: hashed.client_cpu / seconds,
            server_cores: hashed.server_cpu / seconds,
        };
        step(&format!(
            "{} {pass}: dual hash over HTTP {:.0} MB/s ({} chunks of {:.0} KiB on average; cores busy: client {:.2}, server {:.2}) | openssl md5 {:.0} MB/s | HTTP read only {:.0} MB/s | dual hash from memory {:.0} MB/s",
            if warm_up { "warm-up" } else { "pass" },
            row.http,
            row.chunks,
            size as f64 / 1024.0 / row.chunks.max(1) as f64,
            row.client_cores,
            row.server_cores,
            row.openssl,
            row.read_only,
            row.memory,
        ));
        if !warm_up {
            passes.push(row);
        }
    }
    let of = |f: fn(&Pass) -> f64| median(&passes.iter().map(f).collect::<Vec<_>>());
    let (ours_mbps, openssl_mbps) = (of(|p| p.http), of(|p| p.openssl));
    let ratio = ours_mbps / openssl_mbps;

    let mut child = None;
    if args.rss_size_mib > 0 {
        let len = args.rss_size_mib * MIB;
        step(&format!(
            "child process: hashing a {} MiB stream generated on the fly, over loopback HTTP",
            args.rss_size_mib
        ));
        let report = run_rss_child(addr, len, args)?;
        ensure!(
            report.bytes == len,
            "the child hashed {} bytes, expected {len}",
            report.bytes
        );
        step(&format!(
            "child: peak RSS {:.1} MiB (idle {:.1} MiB), {:.1} s ({:.0} MB/s, {} chunks); checking its digests with openssl",
            report.peak_mib,
            report.idle_rss_mib,
            report.seconds,
            len as f64 / MB / report.seconds,
            report.chunks
        ));
        let (md5, sha256) = openssl_digests_of_generated(&args.openssl, len)?;
        ensure!(
            report.md5 == md5 && report.sha256 == sha256,
            "the child's digests {} / {} differ from openssl's {md5} / {sha256}",
            report.md5,
            report.sha256
        );
        child = Some(report);
    }
    drop(server);
    drop(file);

    println!(
        "\nhash-bench: {} MiB over loopback HTTP, median of {} passes (after a warm-up), tuning {tuning:?}, from memory in {} KiB slices",
        args.size_mib, args.passes, args.memory_slice_kib
    );
    println!("MD5 {md5_expected} and SHA-256 {sha256_expected} match openssl on every pass");
    let versus_md5 = |metric: &'static str, value: f64| Figure {
        metric,
        value,
        baseline: openssl_mbps,
        baseline_label: "openssl dgst -md5".to_owned(),
        goal: None,
    };
    let ratio_figure = Figure {
        metric: "dual_hash_ratio_vs_openssl_md5",
        value: ratio,
        baseline: 1.0,
        baseline_label: "openssl dgst -md5 alone".to_owned(),
        goal: None,
    };
    let mut figures = vec![
        Figure {
            metric: "dual_hash_mb_per_s",
            value: ours_mbps,
            baseline: openssl_mbps,
            baseline_label: "openssl dgst -md5 alone, same bytes, from the page cache".to_owned(),
            goal: None,
        },
        versus_md5("http_read_only_mb_per_s", of(|p| p.read_only)),
        versus_md5("dual_hash_from_memory_mb_per_s", of(|p| p.memory)),
        versus_md5("openssl_sha256_mb_per_s", mb_per_s(size, sha_openssl)),
        ratio_figure.clone(),
    ];
    let mut written = vec![ratio_figure];
    if let Some(report) = &child {
        let rss = Figure {
            metric: "hash_peak_rss_mb_4gib",
            value: report.peak_mib,
            baseline: report.idle_rss_mib,
            baseline_label: "the same child, set up and idle".to_owned(),
            goal: Some(Goal::AtMost(RSS_GOAL_MIB)),
        };
        figures.push(rss.clone());
        written.push(rss);
    }
    print!("{}", render_table(&figures));
    let list = |f: fn(&Pass) -> f64, decimals: usize| {
        passes
            .iter()
            .map(|p| format!("{:.decimals$}", f(p)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "goal dual_hash_ratio_vs_openssl_md5 >= {RATIO_GOAL}: {} (per-pass ratios {})",
        if ratio >= RATIO_GOAL { "met" } else { "MISSED" },
        list(|p| p.http / p.openssl, 3)
    );
    println!(
        "per pass, MB/s: dual hash over HTTP {}; openssl md5 {}; HTTP read only {}; dual hash from memory {}",
        list(|p| p.http, 0),
        list(|p| p.openssl, 0),
        list(|p| p.read_only, 0),
        list(|p| p.memory, 0),
    );
    println!(
        "during the dual hash over HTTP: client {} cores, server {} cores (of 2); average chunk {:.0} KiB",
        list(|p| p.client_cores, 2),
        list(|p| p.server_cores, 2),
        size as f64 / 1024.0 / of(|p| p.chunks as f64).max(1.0)
    );
    if args.rss_size_mib > 0 && args.rss_size_mib != 4096 {
        println!("\nresults not written: hash_peak_rss_mb_4gib needs --rss-size-mib 4096");
        return Ok(());
    }
    let Some(provenance) = provenance.filter(|_| release) else {
        println!("\nresults not written (--no-write or a debug build)");
        return Ok(());
    };
    if args.size_mib < 1024 || args.rss_size_mib == 0 {
        println!("\nresults not written: a smaller stream or no memory run makes a smoke run, not a benchmark");
        return Ok(());
    }
    merge_into_results(&results_path, &written, &provenance)?;
    println!("\nupdated {}", results_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_output_is_read_in_both_styles() {
        assert_eq!(
            parse_dgst("MD5(/tmp/x.bin)= 900150983CD24FB0D6963F7D28E17F72\n").unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            parse_dgst("MD5(stdin)= d41d8cd98f00b204e9800998ecf8427e\n")
                .unwrap()
                .len(),
            32
        );
        assert_eq!(parse_dgst("SHA2-256(stdin)= ab12\n").unwrap(), "ab12");
        assert!(parse_dgst("error\n").is_err());
    }

    #[test]
    fn the_generated_stream_is_the_same_in_blocks_or_whole() {
        let whole = generate(3 * 64);
        let mut rng = SplitMix64(SEED);
        let mut parts = vec![0; 3 * 64];
        for block in parts.chunks_mut(64) {
            rng.fill(block);
        }
        assert_eq!(whole, parts);
        assert_ne!(&whole[..64], &whole[64..128]);
    }
}
