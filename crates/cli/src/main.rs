//! `filetrail`: the command line of filetrail.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use filetrail_aws::config::AwsResources;
use filetrail_aws::inventory::DynamoInventoryStore;
use filetrail_aws::queue::SqsQueue;
use filetrail_aws::secrets::{AppSecret, Secret, SecretsStore};
use filetrail_aws::state::DynamoStateStore;
use filetrail_cli::connection::{self, DEFAULT_DRIVE_CAP, NewConnection};
use filetrail_cli::{events, file, inventory, status};
use filetrail_core::jobs::DiscoverJob;
use filetrail_core::model::{ConnectionKind, Endpoints};
use filetrail_core::ports::{ConnectionStore, DiscoverQueue, ScopeStore};

/// `print!` for command output: a reader that stops early ends the command quietly (see
/// [`emit`]) where `print!` would panic on the closed pipe.
macro_rules! out {
    ($($arg:tt)*) => {
        emit(&format!($($arg)*))
    };
}

/// [`out!`] with a newline, as `println!`.
macro_rules! outln {
    () => {
        emit("\n")
    };
    ($($arg:tt)*) => {
        emit(&format!("{}\n", format_args!($($arg)*)))
    };
}
#[derive(Parser)]
#[command(
    name = "filetrail",
    version,
    about = "File activity monitoring for Microsoft 365, in your own AWS account"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive counts, last discovery and current errors of every connection.
    Status {
        /// Only this connection.
        connection: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Register and manage Microsoft 365 tenants.
    #[command(subcommand)]
    Connection(ConnectionCommand),
    /// Show indexed files of a connection's drives.
    Inventory {
        connection: String,
        /// Only this drive (its Graph drive id).
        #[arg(long)]
        drive: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A connection's file events, newest recorded first: who did what to which file, when,
    /// with the file's MD5 and SHA-256.
    Events {
        connection: String,
        /// Most events to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find file events: by user, file name, path, hash, type and time; newest first.
    ///
    /// Every filter narrows the result; the most selective one chooses the index read (never
    /// the whole table). Event types are the snake_case names `--json` shows (downloaded,
    /// modified, anonymous_link_created, sharing_set, …).
    Search(SearchArgs),
    /// Files shared by anonymous link or with people outside the trusted domains, now.
    Exposure {
        /// Only this connection (default: every cloud connection).
        connection: Option<String>,
        /// CSV with a header row, one line per exposing permission.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop sharing a file (write mode only).
    #[command(subcommand)]
    Sharing(SharingCommand),
    /// One file: its inventory row, its MD5 and SHA-256, and every event of it, newest first.
    File {
        /// The file's drive id (as `filetrail inventory --json` or `filetrail events --json` show).
        drive: String,
        /// The file's item id.
        item: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// What a connection monitors: every user, a users list or a groups list (CSV).
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Write a connection's file events recorded in a time range to S3 for Athena, as the
    /// hourly export does (same objects: never a duplicate). Whole recorded hours, settled ones
    /// only (an hour is settled 20 minutes after it ends).
    Export {
        connection: String,
        /// From when the events were recorded: RFC 3339, a date (midnight UTC) or a time ago
        /// (90m, 36h, 7d, 2w).
        #[arg(long)]
        since: String,
        /// Until when (exclusive), in the same forms; default now.
        #[arg(long)]
        until: Option<String>,
        /// Also the hours still being recorded (the last 20 minutes and the hour under way):
        /// the hourly export writes their objects again, complete, under the same names.
        #[arg(long)]
        include_open_hours: bool,
    },
    /// Move the messages that failed repeatedly on a work queue (its dead letters, which
    /// `filetrail status` counts) back onto it, once their cause is fixed. A blob left on the
    /// activity dead-letter queue past the audit feed's 7-day retention is lost.
    Redrive {
        /// discover, index, activity or hash.
        queue: String,
    },
    /// The local stack: provision template.yaml on moto and run the pipeline on one machine.
    #[command(subcommand)]
    Local(LocalCommand),
}

#[derive(Subcommand)]
enum SharingCommand {
    /// Remove sharing from a file through Microsoft Graph, and record it as an event.
    ///
    /// Refused unless the file's connection has a write-mode app (`filetrail connection
    /// write-mode`), whose token alone is used. Every removal, refused ones too, is recorded as an
    /// event naming the AWS principal that ran it and Graph's answer. Asks for confirmation
    /// unless --yes.
    Revoke {
        /// The file's drive id (as `filetrail exposure --csv` shows it).
        drive: String,
        /// The file's item id.
        item: String,
        /// Remove this permission (its id from `filetrail exposure --csv`).
        #[arg(long)]
        permission: Option<String>,
        /// Remove every anonymous link and every grant to people outside the trusted domains.
        #[arg(long)]
        all_external: bool,
        /// Remove every anonymous ("anyone") link.
        #[arg(long)]
        all_anonymous: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct SearchArgs {
    /// Only this connection (default: every connection).
    #[arg(long)]
    connection: Option<String>,
    /// Events where this user acted or whose file they own (UPN).
    #[arg(long)]
    user: Option<String>,
    /// File name: a prefix (`budget`) or a glob (`*.xlsx`, `q3*report*`), any case. A rename
    /// or move matches by the name before and after.
    #[arg(long)]
    file_name: Option<String>,
    /// A file or folder from the drive root (`/Reports/2026`): it and everything under it. A
    /// move or rename matches by where the file was and where it went.
    #[arg(long)]
    path: Option<String>,
    /// Events of the file versions with this MD5.
    #[arg(long)]
    md5: Option<String>,
    /// Events of the file versions with this SHA-256.
    #[arg(long)]
    sha256: Option<String>,
    /// Only these event types (repeatable, or comma-separated).
    #[arg(long = "type")]
    types: Vec<String>,
    /// From this time: RFC 3339, a date, or a time ago (90m, 36h, 7d, 2w).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time, same forms as --since.
    #[arg(long)]
    until: Option<String>,
    /// Only events from OneDrive or from email.
    #[arg(long, value_parser = ["onedrive", "email"])]
    source: Option<String>,
    /// Only shares outside the organisation: anonymous links and people outside the trusted domains.
    #[arg(long)]
    external_only: bool,
    /// Most events to print.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after the last event of a previous page (the token it printed).
    #[arg(long)]
    page_token: Option<String>,
    /// One JSON object per line.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header row.
    #[arg(long)]
    csv: bool,
    /// Print the index reads on standard error.
    #[arg(long)]
    explain: bool,
}

#[derive(Subcommand)]
enum ScopeCommand {
    /// Upload a users or groups CSV (or `--all`) as the connection's scope and print the result.
    ///
    /// A users CSV names people by `Email Address`, `Email`, `OwnerPrincipalName` or
    /// `UserPrincipalName` (or `DisplayName` / `Owner` for rows without an email); a groups CSV
    /// by `Display Name` or `Groups`, or by group mail in `Email` / `Email Address`. At most
    /// 1,000 entries; a rejected file leaves the previous scope in force.
    Upload {
        connection: String,
        /// The CSV file (omit with --all).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        file: Option<PathBuf>,
        /// What the file lists; guessed from its name or header when omitted.
        #[arg(long, value_parser = ["users", "groups"])]
        kind: Option<String>,
        /// Monitor every user of the tenant.
        #[arg(long)]
        all: bool,
        /// Seconds to wait for the result.
        #[arg(long, default_value_t = filetrail_cli::scope::DEFAULT_WAIT.as_secs())]
        wait: u64,
        /// Upload and return at once; `filetrail scope show` prints the result later.
        #[arg(long, conflicts_with_all = ["wait", "json"])]
        no_wait: bool,
        /// Print the result document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the scope in force, entries not found, and the latest upload's result.
    Show {
        connection: String,
        /// List every entry, not the first 50.
        #[arg(long)]
        all: bool,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Create template.yaml's tables, queues and bucket on the local endpoint; print the settings.
    Provision(filetrail_cli::local::ProvisionArgs),
    /// Run the functions as AWS wires them: schedules, SQS event-source mappings, DLQs.
    Run(filetrail_cli::local::run::RunArgs),
}

#[derive(Subcommand)]
enum ConnectionCommand {
    /// Register a tenant. The client secret is read from stdin or a file, never from arguments.
    Add(AddArgs),
    /// Store a new client secret for a connection (read from stdin or a file) and start a
    /// discovery run, which resumes work stopped by a refused secret. The secret is checked as
    /// `connection add` checks it (a token, then each permission); a refused one is not stored
    /// and the connection keeps its old secret.
    SetSecret {
        connection: String,
        /// Read the client secret from this file (`-` or absent: standard input).
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Store the secret without asking Entra ID and Graph first (for a tenant this machine
        /// cannot reach); `filetrail status` reports a refused secret after the next run.
        #[arg(long)]
        skip_checks: bool,
    },
    /// Every connection: id, kind, tenant, state, monitored drives, created, write mode.
    List {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One connection's settings and status (never the secret, only its name).
    Show {
        connection: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop all work for a connection (discovery, indexing, activity, hashing); its history stays
    /// searchable.
    Deauthorize { connection: String },
    /// Restart a deauthorized connection's work from its stored checkpoints.
    Resume { connection: String },
    /// Turn write mode on or off. On: registers a second app of the tenant (its own client id and
    /// secret, read from stdin or a file) holding Files.ReadWrite.All, which only `filetrail
    /// sharing revoke` uses; its secret is stored where no function may read it. Off: deletes
    /// that secret.
    WriteMode {
        connection: String,
        /// Application (client) id of the write-mode app registration.
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        client_id: Option<String>,
        /// Read the write app's client secret from this file (`-` or absent: standard input).
        #[arg(long, conflicts_with = "off")]
        secret_file: Option<PathBuf>,
        /// Turn write mode off and delete the write app's secret.
        #[arg(long)]
        off: bool,
    },
    /// What to register in Entra ID: the app manifest's `requiredResourceAccess` (the
    /// application permissions by their ids) on standard output, ready to paste into the app's
    /// manifest; what each permission is for and the tenant's admin-consent URL on standard error.
    AppManifest {
        /// `cloud` (OneDrive), `email` (Office 365 mail) or `write` (the separate write-mode app).
        #[arg(long, default_value = "cloud", value_parser = ["cloud", "email", "write"])]
        kind: String,
        /// The tenant (directory id or domain), for the admin-consent URL.
        #[arg(long)]
        tenant_id: Option<String>,
        /// The app's application (client) id, for the admin-consent URL.
        #[arg(long)]
        client_id: Option<String>,
        /// Microsoft cloud: worldwide, gcc, gcc-high, dod, china.
        #[arg(long, default_value = "worldwide")]
        cloud: String,
    },
    /// Delete a connection's secret and record; its history stays unless `--purge`.
    Remove {
        connection: String,
        /// Also delete its drives, checkpoints, inventory rows and events.
        #[arg(long)]
        purge: bool,
        /// Do not ask for confirmation (needed for `--purge` when standard input is not a terminal).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct AddArgs {
    /// Connection id: lowercase letters, digits and dashes (`contoso-cloud`).
    id: String,
    /// `cloud` (OneDrive for Business) or `email` (Office 365 mail).
    #[arg(long, default_value = "cloud", value_parser = ["cloud", "email"])]
    kind: String,
    /// Directory (tenant) id of the Microsoft 365 tenant.
    #[arg(long)]
    tenant_id: String,
    /// Application (client) id of the app registration.
    #[arg(long)]
    client_id: String,
    /// Read the client secret from this file (`-` or absent: standard input).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Microsoft cloud: worldwide, gcc, gcc-high, dod, china.
    #[arg(long, default_value = "worldwide")]
    cloud: String,
    /// Entra ID authority to use instead of the cloud's (a simulator or a proxy).
    #[arg(long, requires = "graph_url")]
    login_url: Option<String>,
    /// Microsoft Graph base (with version) to use instead of the cloud's.
    #[arg(long, requires = "login_url")]
    graph_url: Option<String>,
    /// A domain whose users count as inside the organisation (repeatable).
    #[arg(long = "trusted-domain")]
    trusted_domains: Vec<String>,
    /// Most drives this connection may monitor.
    #[arg(long, default_value_t = DEFAULT_DRIVE_CAP)]
    drive_cap: u64,
    /// Register without checking the credentials and permissions against Microsoft: for an admin
    /// preparing a deployment before admin consent is granted, or on a host that cannot reach
    /// Microsoft. The first discovery run then reports any problem in `filetrail status`.
    #[arg(long)]
    skip_checks: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    filetrail_runtime::logging::init_cli("warn");
    let cli = Cli::parse();
    match cli.command {
        Command::Status { connection, json } => {
            let aws = Aws::from_env().await?;
            let mut statuses = status::collect(&aws.state()?, connection.as_deref()).await?;
            if let Some(id) = &connection
                && statuses.is_empty()
            {
                bail!("no connection named {id:?}; `filetrail connection list` lists them all");
            }
            let (sqs, ddb, s3) = (
                aws_sdk_sqs::Client::new(&aws.sdk),
                aws_sdk_dynamodb::Client::new(&aws.sdk),
                aws_sdk_s3::Client::new(&aws.sdk),
            );
            let r = &aws.resources;
            let exports = r
                .require_state_table()
                .ok()
                .map(|table| filetrail_aws::export_store::DynamoExportCheckpoints::new(ddb.clone(), table));
            let deployment = status::Deployment {
                sqs: &sqs,
                ddb: &ddb,
                s3: &s3,
                queue_urls: [
                    r.require_discover_queue_url(),
                    r.require_index_queue_url(),
                    r.require_activity_queue_url(),
                    r.require_hash_queue_url(),
                ]
                .into_iter()
                .filter_map(|u| u.ok().map(str::to_owned))
                .collect(),
                events_table: r.require_events_table().ok(),
                bucket: r.require_bucket().ok(),
                exports: exports
                    .as_ref()
                    .map(|e| e as &dyn filetrail_core::export::ExportCheckpoints),
            };
            for warning in status::add_deployment(&mut statuses, &deployment, chrono::Utc::now()).await {
                eprintln!("warning: {warning}");
            }
            if json {
                outln!("{}", serde_json::to_string_pretty(&statuses)?)?;
            } else {
                out!("{}", status::render(&statuses, chrono::Utc::now()))?;
            }
        }
        Command::Connection(ConnectionCommand::Add(args)) => connection_add(args).await?,
        Command::Connection(ConnectionCommand::List { json }) => {
            let rows = connection::list(&Aws::from_env().await?.state()?).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                out!("{}", connection::render_list(&rows))?;
            }
        }
        Command::Connection(ConnectionCommand::Show { connection: id, json }) => {
            let detail = connection::show(&Aws::from_env().await?.state()?, &id).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&detail)?)?;
            } else {
                out!("{}", connection::render_show(&detail))?;
            }
        }
        Command::Connection(ConnectionCommand::Deauthorize { connection: id }) => {
            connection::deauthorize(&Aws::from_env().await?.state()?, &id).await?;
            outln!(
                "Deauthorized {id:?}: discovery, indexing, activity and hashing stop; its history stays searchable."
            )?;
            outln!("`filetrail connection resume {id}` restarts the work from where it stopped.")?;
        }
        Command::Connection(ConnectionCommand::Resume { connection: id }) => {
            let aws = Aws::from_env().await?;
            let queue = SqsQueue::new(
                aws_sdk_sqs::Client::new(&aws.sdk),
                aws.resources.require_discover_queue_url()?,
            );
            connection::resume(&aws.state()?, &queue, &id).await?;
            outln!(
                "Resumed {id:?} and started a discovery run; indexing and activity continue from their checkpoints."
            )?;
            outln!("`filetrail status {id}` shows progress.")?;
        }
        Command::Connection(ConnectionCommand::Remove {
            connection: id,
            purge,
            yes,
        }) => {
            connection_remove(&id, purge, yes).await?;
        }
        Command::Connection(ConnectionCommand::WriteMode {
            connection,
            client_id,
            secret_file,
            off,
        }) => connection_write_mode(&connection, client_id.filter(|_| !off), secret_file.as_deref()).await?,
        Command::Connection(ConnectionCommand::AppManifest {
            kind,
            tenant_id,
            client_id,
            cloud,
        }) => app_manifest(&kind, tenant_id.as_deref(), client_id.as_deref(), &cloud)?,
        Command::Connection(ConnectionCommand::SetSecret {
            connection,
            secret_file,
            skip_checks,
        }) => {
            let aws = Aws::from_env().await?;
            let state = aws.state()?;
            let Some(stored) = state.connection(&connection).await? else {
                bail!("no connection named {connection:?}; `filetrail status` lists them all");
            };
            let secret = read_secret(secret_file.as_deref())?;
            if skip_checks {
                eprintln!(
                    "Not checking the secret (--skip-checks); `filetrail status` reports a refused secret after the next run."
                );
            } else {
                eprintln!(
                    "Checking the new secret and the app's permissions in tenant {}…",
                    stored.tenant_id
                );
                let report = connection::check_credentials(&NewConnection::of(&stored), &secret)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}\nConnection {connection:?} keeps its old secret."))?;
                for (permission, note) in report.notes() {
                    eprintln!("note: {}: {note}", permission.name());
                }
            }
            // A new version of the secret the connection reads, wherever it was created.
            aws.secrets()?
                .rotate_app_secret(
                    &stored.secret_id,
                    &AppSecret {
                        client_secret: Secret::new(secret),
                    },
                )
                .await?;
            let queue = SqsQueue::new(
                aws_sdk_sqs::Client::new(&aws.sdk),
                aws.resources.require_discover_queue_url()?,
            );
            let job = DiscoverJob::Discover {
                connection: connection.clone(),
                reason: "secret updated".to_owned(),
            };
            queue.enqueue_discover(&[job]).await?;
            outln!("Stored the new secret of {connection:?} and started a discovery run;")?;
            outln!("`filetrail status {connection}` shows when the connection works again.")?;
        }
        Command::Inventory {
            connection,
            drive,
            limit,
            json,
        } => {
            let aws = Aws::from_env().await?;
            let state = aws.state()?;
            if state.connection(&connection).await?.is_none() {
                bail!("no connection named {connection:?}; `filetrail status` lists them all");
            }
            let rows = inventory::sample(&state, &aws.inventory()?, &connection, drive.as_deref(), limit).await?;
            if json {
                for (_, row) in &rows {
                    emit(&format!("{}\n", serde_json::to_string(row)?))?;
                }
            } else if rows.is_empty() {
                outln!(
                    "No indexed files yet for {connection:?}; `filetrail status {connection}` shows indexing progress."
                )?;
            } else {
                emit(&inventory::render(&rows))?;
            }
        }
        Command::Events {
            connection,
            limit,
            json,
        } => {
            let aws = Aws::from_env().await?;
            if aws.state()?.connection(&connection).await?.is_none() {
                bail!("no connection named {connection:?}; `filetrail status` lists them all");
            }
            let found = events::recent(&aws.events()?, &connection, limit, chrono::Utc::now()).await?;
            if json {
                for event in &found {
                    emit(&format!("{}\n", serde_json::to_string(event)?))?;
                }
            } else if found.is_empty() {
                outln!(
                    "No events recorded for {connection:?} today or yesterday; `filetrail status {connection}` \
                     shows when the audit feed was last polled."
                )?;
            } else {
                emit(&events::render(&found))?;
            }
        }
        Command::Search(args) => search_command(args).await?,
        Command::Exposure { connection, csv, json } => {
            let aws = Aws::from_env().await?;
            let state = aws.state()?;
            let all = state.connections().await?;
            let chosen: Vec<_> = match &connection {
                Some(id) => {
                    let c = all.iter().find(|c| c.id == *id).cloned();
                    vec![c.with_context(|| {
                        format!("no connection named {id:?}; `filetrail connection list` lists them")
                    })?]
                }
                None => all.into_iter().filter(|c| c.kind == ConnectionKind::Cloud).collect(),
            };
            let files = filetrail_cli::exposure::report(&state, &aws.inventory()?, &chosen).await?;
            if csv {
                let mut out = Vec::new();
                filetrail_cli::exposure::write_csv(&mut out, &files)?;
                emit(&String::from_utf8_lossy(&out))?;
            } else if json {
                for f in &files {
                    emit(&format!("{}\n", serde_json::to_string(f)?))?;
                }
            } else if files.is_empty() {
                outln!("No file is shared by anonymous link or with people outside the trusted domains.")?;
            } else {
                emit(&filetrail_cli::exposure::render(&files))?;
                let count: std::collections::HashSet<_> = files.iter().map(|f| (&f.drive_id, &f.item_id)).collect();
                // Through emit: a reader that stopped early (`| head`) ends the command quietly.
                emit(&format!(
                    "{} files exposed by {} permissions.\n",
                    count.len(),
                    files.len()
                ))?;
            }
        }
        Command::Sharing(SharingCommand::Revoke {
            drive,
            item,
            permission,
            all_external,
            all_anonymous,
            yes,
        }) => {
            let selection = filetrail_cli::exposure::selection(permission, all_external, all_anonymous)?;
            revoke_command(&drive, &item, &selection, yes).await?;
        }
        Command::File { drive, item, json } => {
            let aws = Aws::from_env().await?;
            let trail = file::trail(&aws.state()?, &aws.inventory()?, &aws.events()?, &drive, &item).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&trail)?)?;
            } else {
                out!("{}", file::render(&trail))?;
            }
        }
        Command::Scope(command) => scope_command(command).await?,
        Command::Export {
            connection,
            since,
            until,
            include_open_hours,
        } => {
            let aws = Aws::from_env().await?;
            let args = filetrail_cli::export::ExportArgs {
                connection,
                since,
                until,
                include_open_hours,
            };
            let summary = filetrail_cli::export::run(&aws.sdk, &aws.resources, &args, chrono::Utc::now(), true).await?;
            outln!("{}", summary.line())?;
        }
        Command::Redrive { queue } => {
            let index = filetrail_cli::redrive::queue_index(&queue)?;
            let aws = Aws::from_env().await?;
            let r = &aws.resources;
            let url = [
                r.require_discover_queue_url(),
                r.require_index_queue_url(),
                r.require_activity_queue_url(),
                r.require_hash_queue_url(),
            ][index]
                .clone()?
                .to_owned();
            let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
            let bar = indicatif::ProgressBar::new_spinner();
            let done = filetrail_cli::redrive::redrive(&sqs, &url, |n| {
                bar.set_message(format!("{n} dead letters moved back"));
                bar.tick();
            })
            .await?;
            bar.finish_and_clear();
            outln!(
                "Moved {} message{} from {} back to {}.",
                done.moved,
                if done.moved == 1 { "" } else { "s" },
                done.dead_letter_queue,
                done.queue
            )?;
        }
        Command::Local(LocalCommand::Provision(args)) => filetrail_cli::local::provision_command(&args).await?,
        Command::Local(LocalCommand::Run(args)) => {
            let report = filetrail_cli::local::run::run_command(&args).await?;
            eprintln!(
                "local run stopped ({:?}): {} invocations, {} messages handled, {} failed and retried",
                report.reason, report.stats.invocations, report.stats.messages_deleted, report.stats.messages_failed
            );
        }
    }
    Ok(())
}

async fn revoke_command(
    drive: &str,
    item: &str,
    selection: &filetrail_core::exposure::RevokeSelection,
    yes: bool,
) -> anyhow::Result<()> {
    use filetrail_cli::exposure::{RevokeRefused, RevokeStores};
    let aws = Aws::from_env().await?;
    let clients = filetrail_runtime::ConnectionClients::new(
        filetrail_m365::http_client(filetrail_m365::HttpTimeouts::default())?,
        aws.secrets()?,
        filetrail_m365::RetryPolicy::default(),
        std::time::Duration::from_secs(300),
    );
    let stores = RevokeStores {
        state: &aws.state()?,
        inventory: &aws.inventory()?,
        events: &aws.events()?,
        clients: &clients,
    };
    let mut confirm = |plan: &str, count: usize| -> anyhow::Result<bool> {
        out!("{plan}")?;
        if yes {
            return Ok(true);
        }
        use std::io::IsTerminal as _;
        if !std::io::stdin().is_terminal() {
            return Err(RevokeRefused::NotConfirmed.into());
        }
        eprint!("Remove {count} permission(s)? Type yes: ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(answer.trim() == "yes")
    };
    // Who runs the removal, as AWS knows them: recorded on every event it writes.
    let operator = aws_sdk_sts::Client::new(&aws.sdk)
        .get_caller_identity()
        .send()
        .await
        .context("asking AWS who runs this command (sts:GetCallerIdentity), to record it on the events")?
        .arn()
        .map(str::to_owned)
        .context("sts:GetCallerIdentity answered without an ARN")?;
    let report = filetrail_cli::exposure::revoke(&stores, &operator, drive, item, selection, &mut confirm).await?;
    outln!(
        "Removed {} permission(s) and recorded {} event(s); the file is {}.",
        report.removed,
        report.events,
        if report.still_exposed {
            "still shared outside the organisation"
        } else {
            "no longer exposed"
        }
    )?;
    Ok(())
}

/// `connection app-manifest`: the permissions a registration of `kind` needs, as manifest JSON on
/// stdout, and how to consent to them on stderr.
fn app_manifest(kind: &str, tenant: Option<&str>, client_id: Option<&str>, cloud: &str) -> anyhow::Result<()> {
    use filetrail_m365::probe::{self, ProbeKind};
    let permissions = probe::required(match kind {
        "cloud" => Some(ProbeKind::Cloud),
        "email" => Some(ProbeKind::Email),
        _ => None,
    });
    let manifest = serde_json::json!({
        "requiredResourceAccess": probe::required_resource_access(permissions),
    });
    outln!("{}", serde_json::to_string_pretty(&manifest)?)?;
    eprintln!("Application permissions for a {kind} app (each needs admin consent):");
    for p in permissions {
        eprintln!("  {} > {}: {}", p.api(), p.name(), p.purpose());
    }
    match (tenant, client_id) {
        (Some(tenant), Some(client_id)) => {
            // "Construct the URL for granting tenant-wide admin consent"
            // (https://learn.microsoft.com/en-us/entra/identity/enterprise-apps/grant-admin-consent).
            let login = filetrail_m365::cloud::Cloud::for_connection(cloud, None)?;
            eprintln!("A Global Administrator consents for the tenant at:");
            eprintln!("  {}/{tenant}/adminconsent?client_id={client_id}", login.login());
        }
        _ => eprintln!("With --tenant-id and --client-id, this also prints the tenant's admin-consent URL."),
    }
    Ok(())
}

/// Writes command output to stdout. A reader that stops early (`| head`) ends the command
/// quietly, as Unix tools do, instead of failing on the closed pipe.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => Ok(other?),
    }
}

async fn search_command(args: SearchArgs) -> anyhow::Result<()> {
    use filetrail_cli::search::{self, Filters};
    let aws = Aws::from_env().await?;
    let connections = aws.state()?.connections().await?;
    let filters = Filters {
        connection: args.connection,
        user: args.user,
        file_name: args.file_name,
        path: args.path,
        md5: args.md5,
        sha256: args.sha256,
        types: args.types,
        since: args.since,
        until: args.until,
        source: args.source,
        external_only: args.external_only,
        limit: args.limit,
        page_token: args.page_token,
    };
    let query = search::build(&filters, &connections, chrono::Utc::now())?;
    let page = search::run(&aws.events()?, &query).await?;
    if args.explain {
        eprintln!("served by the {} index:", query.access().label());
        for read in &page.plan {
            eprintln!("  {read}");
        }
    }
    if args.json {
        for event in &page.events {
            emit(&format!("{}\n", serde_json::to_string(event)?))?;
        }
    } else if args.csv {
        let mut csv = Vec::new();
        search::write_csv(&mut csv, &page.events)?;
        emit(&String::from_utf8_lossy(&csv))?;
    } else if page.events.is_empty() {
        emit("No events match.\n")?;
    } else {
        emit(&events::render(&page.events))?;
    }
    eprintln!("{}", search::coverage(&query));
    // Last, so the token ends the output.
    if let Some(next) = &page.next {
        eprintln!("more events: add --page-token {}", next.token());
    }
    Ok(())
}

/// AWS clients for the deployment named by the `FILETRAIL_*` variables (see README).
async fn scope_command(command: ScopeCommand) -> anyhow::Result<()> {
    use filetrail_core::scope::ScopeKind;
    let aws = Aws::from_env().await?;
    let state = aws.state()?;
    match command {
        ScopeCommand::Upload {
            connection,
            file,
            kind,
            all,
            wait,
            no_wait,
            json,
        } => {
            let (kind, body) = match file {
                None => (ScopeKind::All, b"scope\nall\n".to_vec()),
                Some(path) => {
                    let body = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                    let kind = match kind.as_deref() {
                        Some("groups") => ScopeKind::Groups,
                        Some(_) => ScopeKind::Users,
                        None => filetrail_cli::scope::detect_kind(&path, &body)?,
                    };
                    (kind, body)
                }
            };
            debug_assert!(all || kind != ScopeKind::All);
            let objects =
                filetrail_aws::BucketObjects::new(filetrail_aws::s3_client(&aws.sdk), aws.resources.require_bucket()?);
            let pending = filetrail_cli::scope::put(&objects, &state, &connection, kind, body).await?;
            if no_wait {
                outln!(
                    "Uploaded s3://{}/{}. apply-scope writes its result under scoping/{connection}/results/; \
                     `filetrail scope show {connection}` prints it.",
                    pending.bucket,
                    pending.key
                )?;
                return Ok(());
            }
            eprintln!(
                "uploaded s3://{}/{}; waiting for apply-scope",
                pending.bucket, pending.key
            );
            let result = pending.result(&state, std::time::Duration::from_secs(wait)).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&result)?)?;
            } else {
                out!("{}", filetrail_cli::scope::render_result(&result))?;
            }
            if !result.accepted {
                std::process::exit(2);
            }
        }
        ScopeCommand::Show { connection, all, json } => {
            let Some(c) = state.connection(&connection).await? else {
                bail!("no connection named {connection:?}; `filetrail status` lists them all");
            };
            let scope = state.scope(&connection).await?;
            let last = state.last_scope_upload(&connection).await?;
            let unresolved = c.last_discovery.map(|d| d.unresolved).unwrap_or_default();
            if json {
                let doc = serde_json::json!({
                    "connection": connection,
                    "scope": scope,
                    "unresolved": unresolved,
                    "last_upload": last,
                });
                outln!("{}", serde_json::to_string_pretty(&doc)?)?;
            } else {
                let limit = if all { usize::MAX } else { 50 };
                out!(
                    "{}",
                    filetrail_cli::scope::render_scope(&connection, scope.as_ref(), last.as_ref(), &unresolved, limit)
                )?;
            }
        }
    }
    Ok(())
}

struct Aws {
    sdk: aws_config::SdkConfig,
    resources: AwsResources,
}

impl Aws {
    async fn from_env() -> anyhow::Result<Self> {
        const HOW: &str = "name the deployment with the FILETRAIL_* settings: for the local stack run \
                           `source .local/stack.env`; for AWS, export the stack's outputs";
        let resources = AwsResources::from_env().context(HOW)?;
        resources.require_state_table().context(HOW)?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Self { sdk, resources })
    }

    fn state(&self) -> anyhow::Result<DynamoStateStore> {
        Ok(DynamoStateStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.resources.require_state_table()?,
        ))
    }

    fn inventory(&self) -> anyhow::Result<DynamoInventoryStore> {
        Ok(DynamoInventoryStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.resources.require_inventory_table()?,
        ))
    }

    fn events(&self) -> anyhow::Result<filetrail_aws::events::DynamoEventStore> {
        Ok(filetrail_aws::events::DynamoEventStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.resources.require_events_table()?,
        ))
    }

    fn secrets(&self) -> anyhow::Result<SecretsStore> {
        Ok(SecretsStore::new(
            aws_sdk_secretsmanager::Client::new(&self.sdk),
            self.resources.require_secret_prefix()?,
        )
        .with_kms_key(self.resources.kms_key_id.clone()))
    }
}

async fn connection_add(args: AddArgs) -> anyhow::Result<()> {
    let aws = Aws::from_env().await?;
    let state = aws.state()?;
    let new = NewConnection {
        id: args.id,
        kind: if args.kind == "email" {
            ConnectionKind::Email
        } else {
            ConnectionKind::Cloud
        },
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        cloud: if args.login_url.is_some() {
            "custom".to_owned()
        } else {
            args.cloud
        },
        endpoints: match (args.login_url, args.graph_url) {
            (Some(login), Some(graph)) => Some(Endpoints { login, graph }),
            _ => None,
        },
        trusted_domains: args.trusted_domains,
        drive_cap: args.drive_cap,
    };
    let mut new = new;
    connection::check_unique(&state, &new).await?;
    let secret = read_secret(args.secret_file.as_deref())?;
    if args.skip_checks {
        connection::require_tenant_guid(&new.tenant_id)?;
        eprintln!(
            "Not checking the credentials (--skip-checks); `filetrail status` reports problems after the first discovery run."
        );
    } else {
        eprintln!(
            "Checking the app's credentials and permissions in tenant {}…",
            new.tenant_id
        );
        let report = connection::check_credentials(&new, &secret).await?;
        for (permission, note) in report.notes() {
            eprintln!("note: {}: {note}", permission.name());
        }
        // A tenant named by a domain is stored by its directory id, so the once-per-kind rule
        // sees one tenant however it was named.
        if let Some(tid) = report.tenant_id.filter(|tid| !tid.eq_ignore_ascii_case(&new.tenant_id)) {
            eprintln!("Tenant {} is directory {tid}.", new.tenant_id);
            new.tenant_id = tid;
            connection::check_unique(&state, &new).await?;
        }
    }
    let secret_id = aws
        .secrets()?
        .put_app_secret(
            &new.id,
            &AppSecret {
                client_secret: Secret::new(secret),
            },
        )
        .await?;
    let record = connection::record(&new, secret_id);
    state.put_connection(&record).await?;
    outln!(
        "Registered {} connection {:?} for tenant {}.",
        args.kind,
        record.id,
        record.tenant_id
    )?;
    outln!(
        "Discovery starts with the next scheduled run; `filetrail status {}` shows progress.",
        record.id
    )?;
    Ok(())
}

/// Deletes a secret for good (no recovery window); one already gone is fine.
async fn delete_secret(sdk: &aws_config::SdkConfig, secret_id: &str) -> anyhow::Result<()> {
    match aws_sdk_secretsmanager::Client::new(sdk)
        .delete_secret()
        .secret_id(secret_id)
        .force_delete_without_recovery(true)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("deleting the secret {secret_id}"))),
    }
}

/// `filetrail connection write-mode`: registers the write app (checked, secret stored under the
/// write prefix no function may read) or, with `client_id` `None`, turns write mode off.
async fn connection_write_mode(
    id: &str,
    client_id: Option<String>,
    secret_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let aws = Aws::from_env().await?;
    let state = aws.state()?;
    let Some(mut stored) = state.connection(id).await? else {
        bail!("no connection named {id:?}; `filetrail connection list` lists them all");
    };
    let Some(client_id) = client_id else {
        let Some(app) = stored.write_app.take() else {
            outln!("Write mode of {id:?} is already off.")?;
            return Ok(());
        };
        // The record first: from now on revoke refuses, whatever happens to the secret.
        state.set_write_app(id, None).await?;
        delete_secret(&aws.sdk, &app.secret_id).await?;
        outln!(
            "Write mode of {id:?} is off; the secret of app {} is deleted.",
            app.client_id
        )?;
        outln!("Remove the app registration (or its Files.ReadWrite.All consent) in Entra ID too.")?;
        return Ok(());
    };
    let write_prefix = aws.resources.require_write_secret_prefix()?.to_owned();
    let secret = read_secret(secret_file)?;
    eprintln!("Checking the write app {client_id} in tenant {}…", stored.tenant_id);
    let pipeline = aws.secrets()?.get_app_secret(&stored.secret_id).await?;
    let pipeline_write =
        connection::check_write_app(&stored, &client_id, &secret, pipeline.client_secret.expose()).await?;
    if !pipeline_write.is_empty() {
        eprintln!(
            "warning: the pipeline's app {} holds {}: every function's token can write to the tenant. Remove \
             {} from it in Entra ID (API permissions) so that only the write app can.",
            stored.client_id,
            pipeline_write.join(", "),
            if pipeline_write.len() == 1 {
                "that permission"
            } else {
                "those permissions"
            }
        );
    }
    let secret_id = SecretsStore::new(aws_sdk_secretsmanager::Client::new(&aws.sdk), write_prefix)
        .with_kms_key(aws.resources.kms_key_id.clone())
        .put_app_secret(
            id,
            &AppSecret {
                client_secret: Secret::new(secret),
            },
        )
        .await?;
    let app = filetrail_core::model::WriteApp {
        client_id: client_id.clone(),
        secret_id: secret_id.clone(),
        enabled_at: chrono::Utc::now(),
    };
    // Only the write app changes: a discovery or poll updating the record meanwhile keeps its
    // figures.
    state.set_write_app(id, Some(&app)).await?;
    outln!("Write mode of {id:?} is on: app {client_id}, secret {secret_id}.")?;
    outln!(
        "Only `filetrail sharing revoke` uses it; the functions keep the read-only app {}.",
        stored.client_id
    )?;
    Ok(())
}

async fn connection_remove(id: &str, purge: bool, yes: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    let aws = Aws::from_env().await?;
    let state = aws.state()?;
    let c = connection::find(&state, id).await?;
    if purge && !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "`--purge` deletes every event, inventory row and checkpoint of {id:?} and cannot be undone; \
                 standard input is not a terminal, so confirm with --yes"
            );
        }
        eprint!(
            "This deletes the secret, drives, checkpoints, inventory rows and events of {id:?}; it cannot be undone.\n\
             Type the connection id to confirm: "
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if answer.trim() != id {
            bail!("not confirmed; nothing was deleted");
        }
    }
    if !purge {
        // Marked first: every function drops the connection's work before its secret goes.
        connection::mark_removed(&state, id).await?;
    }
    delete_secret(&aws.sdk, &c.secret_id).await?;
    if let Some(app) = &c.write_app {
        delete_secret(&aws.sdk, &app.secret_id).await?;
    }
    let ddb = aws_sdk_dynamodb::Client::new(&aws.sdk);
    if purge {
        let s3 = aws_sdk_s3::Client::new(&aws.sdk);
        let tables = connection::PurgeTables {
            client: &ddb,
            state: aws.resources.require_state_table()?,
            inventory: aws.resources.require_inventory_table()?,
            events: aws.resources.require_events_table()?,
            bucket: aws.resources.require_bucket().ok().map(|b| (&s3, b)),
        };
        let bar = indicatif::ProgressBar::new_spinner();
        let mut total = 0u64;
        let purged = connection::purge(&tables, &c, |step, n| {
            total += n;
            bar.set_message(format!("{total} items deleted ({step})"));
            bar.tick();
        })
        .await?;
        bar.finish_and_clear();
        outln!(
            "Removed {id:?}: its secret, {} state items, {} inventory rows, {} events and {} objects.",
            purged.state_items,
            purged.inventory_rows,
            purged.events,
            purged.objects
        )?;
    } else {
        outln!("Removed {id:?}: its secret is deleted and no work runs. Its events and inventory stay")?;
        outln!(
            "searchable (`filetrail search --connection {id}`); `filetrail connection remove {id} --purge` deletes them."
        )?;
    }
    Ok(())
}

fn read_secret(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let mut raw = String::new();
    match file {
        Some(p) if p != std::path::Path::new("-") => {
            raw = std::fs::read_to_string(p)
                .with_context(|| format!("reading the client secret from {}", p.display()))?;
        }
        _ => {
            std::io::stdin()
                .read_to_string(&mut raw)
                .context("reading the client secret from standard input")?;
        }
    }
    let secret = raw.trim().to_owned();
    if secret.is_empty() {
        bail!("the client secret is empty: pipe it on standard input or pass --secret-file FILE");
    }
    Ok(secret)
}
