//! `m365-sim`: serve a simulated Microsoft 365 tenant on 127.0.0.1.
//!
//! Prints one JSON line on stdout once listening —
//! `{"base_url":…,"tenant_id":…,"client_id":…,"client_secret":…,"domain":…,"users":N,"groups":G}` — logs to stderr
//! (`RUST_LOG` filters, default `info`), and exits cleanly on SIGTERM or Ctrl-C.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use m365_sim::{FaultConfig, FilesPerDrive, SimConfig};

/// Serve a deterministic, lazily generated Microsoft 365 tenant (Entra token endpoint + Graph).
#[derive(Debug, Parser)]
#[command(name = "m365-sim", version)]
struct Args {
    /// TCP port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Seed of every generated value.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of users.
    #[arg(long, default_value_t = 100)]
    users: u64,
    /// Files per drive: a number (`20`) or an inclusive range (`5..50`).
    #[arg(long, default_value = "20")]
    files_per_drive: FilesPerDrive,
    /// Share of users without a OneDrive.
    #[arg(long, default_value_t = 0.1)]
    no_drive_ratio: f64,
    /// Number of team sites (document libraries, never monitored).
    #[arg(long, default_value_t = 3)]
    team_sites: u32,
    /// Number of directory groups (the first ones are the team sites' Microsoft 365 groups).
    #[arg(long, default_value_t = 20)]
    groups: u64,
    /// Average number of direct user members per group (one group in 25 is ~12 times larger).
    #[arg(long, default_value_t = 25)]
    group_members_avg: u64,
    /// Share of groups that have other groups as members (nested, multi-level, acyclic).
    #[arg(long, default_value_t = 0.2)]
    nested_group_ratio: f64,
    /// Default delta page size.
    #[arg(long, default_value_t = m365_sim::config::DELTA_PAGE_DEFAULT)]
    page_size: u64,
    /// Access-token lifetime in seconds (`expires_in`).
    #[arg(long, default_value_t = m365_sim::config::TOKEN_LIFETIME_DEFAULT_SECS)]
    token_lifetime_secs: u64,
    /// Client id of the registered app (default: derived from the seed).
    #[arg(long)]
    client_id: Option<String>,
    /// Client secret of the registered app (default: derived from the seed).
    #[arg(long)]
    client_secret: Option<String>,
    /// Tenant id (default: derived from the seed).
    #[arg(long)]
    tenant_id: Option<String>,
    /// Initial domain; its first label names the SharePoint host.
    #[arg(long, default_value = "contoso.onmicrosoft.com")]
    domain: String,
    /// Share of Graph requests answered 429/503 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Smallest Retry-After in seconds.
    #[arg(long, default_value_t = 0.05)]
    retry_after_min: f64,
    /// Largest Retry-After in seconds.
    #[arg(long, default_value_t = 0.5)]
    retry_after_max: f64,
    /// Share of Graph requests answered 500/502/504.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Share of Graph requests whose connection is closed without a response.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Share of Graph requests delayed by --slow-ms.
    #[arg(long, default_value_t = 0.0)]
    slow_rate: f64,
    /// Delay of slow responses, in milliseconds.
    #[arg(long, default_value_t = 200)]
    slow_ms: u64,
    /// Share of requests inside $batch answered with an inner 429.
    #[arg(long, default_value_t = 0.0)]
    batch_inner_throttle_rate: f64,
    /// Share of `/content` and download-URL requests answered 429/503 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    content_throttle_rate: f64,
    /// Share of download responses whose connection is cut mid-body.
    #[arg(long, default_value_t = 0.0)]
    content_drop_rate: f64,
    /// Fewest body bytes sent before such a cut.
    #[arg(long, default_value_t = 1)]
    content_drop_after_min: u64,
    /// Most body bytes sent before such a cut.
    #[arg(long, default_value_t = 1 << 20)]
    content_drop_after_max: u64,
    /// Lifetime of download URLs in seconds.
    #[arg(long, default_value_t = m365_sim::content::DOWNLOAD_URL_LIFETIME_DEFAULT_SECS)]
    download_url_lifetime_secs: u64,
    /// Probability that a delta page repeats an item sent earlier in the same round.
    #[arg(long, default_value_t = 0.01)]
    delta_repeat_rate: f64,
    /// Management Activity API: milliseconds from publishing an audit record to its blob being
    /// available (upstream: 60–90 minutes).
    #[arg(long, default_value_t = 2000)]
    audit_publication_delay_ms: u64,
    /// Share of audit records delivered twice (another blob, keys reordered).
    #[arg(long, default_value_t = 0.02)]
    audit_duplicate_rate: f64,
    /// Share of audit records put into late blobs.
    #[arg(long, default_value_t = 0.02)]
    audit_late_rate: f64,
    /// Content blobs per `subscriptions/content` page.
    #[arg(long, default_value_t = m365_sim::activity::config::CONTENT_PAGE_SIZE_DEFAULT)]
    audit_page_size: usize,
    /// Share of Management Activity API calls answered AF429 (403, some 429).
    #[arg(long, default_value_t = 0.0)]
    audit_af429_rate: f64,
    /// Share of Management Activity API calls answered AF50000 (500).
    #[arg(long, default_value_t = 0.0)]
    audit_af50000_rate: f64,
    /// Start with the tenant's unified audit log turned off.
    #[arg(long)]
    audit_log_disabled: bool,
}

impl Args {
    fn config(self) -> SimConfig {
        let base = SimConfig::with_seed(self.seed);
        SimConfig {
            users: self.users,
            files_per_drive: self.files_per_drive,
            no_drive_ratio: self.no_drive_ratio,
            team_sites: self.team_sites,
            groups: self.groups,
            group_members_avg: self.group_members_avg,
            nested_group_ratio: self.nested_group_ratio,
            page_size_default: self.page_size,
            token_lifetime: Duration::from_secs(self.token_lifetime_secs),
            client_id: self.client_id.unwrap_or(base.client_id.clone()),
            client_secret: self.client_secret.unwrap_or(base.client_secret.clone()),
            tenant_id: self.tenant_id.unwrap_or(base.tenant_id.clone()),
            domain: self.domain,
            faults: FaultConfig {
                throttle_rate: self.throttle_rate,
                retry_after_secs: (self.retry_after_min, self.retry_after_max),
                error_5xx_rate: self.error_rate,
                drop_rate: self.drop_rate,
                slow_rate: self.slow_rate,
                slow_ms: self.slow_ms,
                batch_inner_throttle_rate: self.batch_inner_throttle_rate,
                content_throttle_rate: self.content_throttle_rate,
                content_drop_rate: self.content_drop_rate,
                content_drop_after_bytes: (self.content_drop_after_min, self.content_drop_after_max),
            },
            download_url_lifetime: Duration::from_secs(self.download_url_lifetime_secs),
            delta_repeat_rate: self.delta_repeat_rate,
            activity: m365_sim::ActivityConfig {
                audit_log_enabled: !self.audit_log_disabled,
                publication_delay: Duration::from_millis(self.audit_publication_delay_ms),
                duplicate_rate: self.audit_duplicate_rate,
                late_rate: self.audit_late_rate,
                content_page_size: self.audit_page_size,
                af429_rate: self.audit_af429_rate,
                af50000_rate: self.audit_af50000_rate,
                ..m365_sim::ActivityConfig::default()
            },
            port: self.port,
            ..base
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let config = Args::parse().config();
    let (users, groups) = (config.users, config.groups);
    let sim = m365_sim::spawn(config).await?;
    let ready = serde_json::json!({
        "base_url": sim.base_url(),
        "tenant_id": sim.tenant_id(),
        "client_id": sim.client_id(),
        "client_secret": sim.client_secret(),
        "domain": sim.tenant().domain(),
        "users": users,
        "groups": groups,
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}").context("writing the ready line to stdout")?;
    out.flush().context("flushing stdout")?;
    drop(out);

    shutdown_signal().await;
    sim.shutdown().await;
    tracing::info!("m365-sim stopped");
    Ok(())
}
