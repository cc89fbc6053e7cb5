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
use filetrail_core::ports::{DiscoverQueue, StateStore};

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
    /// The local stack: provision template.yaml on moto and run the pipeline on one machine.
    #[command(subcommand)]
    Local(LocalCommand),
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
    /// discovery run, which resumes work stopped by a refused secret.
    SetSecret {
        connection: String,
        /// Read the client secret from this file (`-` or absent: standard input).
        #[arg(long)]
        secret_file: Option<PathBuf>,
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    filetrail_runtime::logging::init_cli("warn");
    let cli = Cli::parse();
    match cli.command {
        Command::Status { connection, json } => {
            let aws = Aws::from_env().await?;
            let statuses = status::collect(&aws.state()?, connection.as_deref()).await?;
            if let Some(id) = &connection
                && statuses.is_empty()
            {
                bail!("no connection named {id:?}; `filetrail status` lists them all");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&statuses)?);
            } else {
                print!("{}", status::render(&statuses, chrono::Utc::now()));
            }
        }
        Command::Connection(ConnectionCommand::Add(args)) => connection_add(args).await?,
        Command::Connection(ConnectionCommand::SetSecret {
            connection,
            secret_file,
        }) => {
            let aws = Aws::from_env().await?;
            let state = aws.state()?;
            if state.connection(&connection).await?.is_none() {
                bail!("no connection named {connection:?}; `filetrail status` lists them all");
            }
            let secret = read_secret(secret_file.as_deref())?;
            aws.secrets()
                .put_app_secret(
                    &connection,
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
            println!("Stored the new secret of {connection:?} and started a discovery run;");
            println!("`filetrail status {connection}` shows when the connection works again.");
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
                    println!("{}", serde_json::to_string(row)?);
                }
            } else if rows.is_empty() {
                println!(
                    "No indexed files yet for {connection:?}; `filetrail status {connection}` shows indexing progress."
                );
            } else {
                print!("{}", inventory::render(&rows));
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
                    println!("{}", serde_json::to_string(event)?);
                }
            } else if found.is_empty() {
                println!(
                    "No events recorded for {connection:?} today or yesterday; `filetrail status {connection}` \
                     shows when the audit feed was last polled."
                );
            } else {
                print!("{}", events::render(&found));
            }
        }
        Command::File { drive, item, json } => {
            let aws = Aws::from_env().await?;
            let trail = file::trail(&aws.state()?, &aws.inventory()?, &aws.events()?, &drive, &item).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&trail)?);
            } else {
                print!("{}", file::render(&trail));
            }
        }
        Command::Scope(command) => scope_command(command).await?,
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
                println!(
                    "Uploaded s3://{}/{}. apply-scope writes its result under scoping/{connection}/results/; \
                     `filetrail scope show {connection}` prints it.",
                    pending.bucket, pending.key
                );
                return Ok(());
            }
            eprintln!(
                "uploaded s3://{}/{}; waiting for apply-scope",
                pending.bucket, pending.key
            );
            let result = pending.result(&state, std::time::Duration::from_secs(wait)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                print!("{}", filetrail_cli::scope::render_result(&result));
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
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                let limit = if all { usize::MAX } else { 50 };
                print!(
                    "{}",
                    filetrail_cli::scope::render_scope(&connection, scope.as_ref(), last.as_ref(), &unresolved, limit)
                );
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

    fn secrets(&self) -> SecretsStore {
        SecretsStore::new(
            aws_sdk_secretsmanager::Client::new(&self.sdk),
            self.resources.secret_prefix.clone(),
        )
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
    connection::check_unique(&state, &new).await?;
    let secret = read_secret(args.secret_file.as_deref())?;
    let secret_id = aws
        .secrets()
        .put_app_secret(
            &new.id,
            &AppSecret {
                client_secret: Secret::new(secret),
            },
        )
        .await?;
    let record = connection::record(&new, secret_id);
    state.put_connection(&record).await?;
    println!(
        "Registered {} connection {:?} for tenant {}.",
        args.kind, record.id, record.tenant_id
    );
    println!(
        "Discovery starts with the next scheduled run; `filetrail status {}` shows progress.",
        record.id
    );
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
